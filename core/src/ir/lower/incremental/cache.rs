//! The lowering cache: what each Host's Mappings lowered to in earlier translations, kept by the
//! address of the Mapping's shared allocation, with their routes and the Host's route order.
//! An unchanged Mapping then costs a lookup, and its routes are the same allocations (which
//! rendering recognises). Must not decide anything the plain lowering does not: entries hold
//! what [`mapping::lower_one`] gave, routes what [`Prepared::build_route`] gave.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::diagnostic::Diagnostic;
use crate::ir::{Cluster, Route};
use crate::resource::host::InsecureAction;
use crate::resource::{AmbassadorModule, LabelSelector, Mapping, Meta, ResourceSet};

use super::super::host::EffectiveHost;
use super::super::mapping::{
    self, addr, group, route_order, split, Candidate, ClusterKey, Clusters, Holds, Interner, Lowered, Needs, Prepared,
    Resolvers, RouteSlot,
};
use super::super::LowerOptions;
use super::clusters::BuiltCluster;

/// What a Mapping's lowering reads besides the Mapping and its Host: anything
/// [`mapping::lower_one`] or [`Prepared::build_route`] reads must be in here. When it changes (a
/// new Module, AuthService, resolver or option), the cache starts over.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Context {
    pub(super) module: AmbassadorModule,
    has_auth: bool,
    rate_limit_domain: Option<String>,
    resolvers: Resolvers,
    options: LowerOptions,
}

impl Context {
    pub(super) fn new(set: &ResourceSet, options: &LowerOptions, resolvers: &Resolvers) -> Context {
        Context {
            module: set.module.as_ref().map(|(_, m)| m.clone()).unwrap_or_default(),
            has_auth: set.auth_service.is_some(),
            rate_limit_domain: mapping::rate_limit_domain(set),
            resolvers: resolvers.clone(),
            options: options.clone(),
        }
    }
}

/// What of a Host a Mapping's lowering reads.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct HostContext {
    hostname: String,
    insecure_action: InsecureAction,
    mapping_selector: Option<LabelSelector>,
}

impl HostContext {
    pub(super) fn of(h: &EffectiveHost) -> HostContext {
        HostContext {
            hostname: h.hostname.clone(),
            insecure_action: h.insecure_action,
            mapping_selector: h.mapping_selector.clone(),
        }
    }
}

/// A Mapping lowered on a Host, as the cache keeps it.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) lowered: Lowered,
    /// The last translation that used this entry.
    generation: AtomicU64,
    /// The translation that made it (an address seen before may name a new Mapping then).
    created: u64,
    /// Routes built so far, by what else they read (usually one or two).
    routes: Mutex<Vec<(RouteSlot, Arc<Route>)>>,
}

impl Holds for Arc<Entry> {
    fn lowered(&self) -> &Lowered {
        &self.lowered
    }
}

impl Entry {
    pub(super) fn new(lowered: Lowered, generation: u64) -> Arc<Entry> {
        Arc::new(Entry {
            lowered,
            generation: AtomicU64::new(generation),
            created: generation,
            routes: Mutex::new(Vec::new()),
        })
    }
}

/// Mappings lowered by earlier translations, per Host and Mapping. Entries a translation does
/// not use are dropped at its end; a change of what every Mapping reads (the Module, the
/// AuthService, resolvers) empties it. Output with the cache is exactly output without it (a
/// property test checks this).
#[derive(Default)]
pub struct LowerCache {
    pub(super) context: Option<Context>,
    pub(super) hosts: Vec<HostEntries>,
    pub(super) generation: u64,
    /// Interned cluster keys.
    pub(super) interner: Interner,
    /// The last translation's clusters by the address of their keys, and in name order.
    pub(super) clusters: crate::keyed::AddrMap<BuiltCluster>,
    pub(super) cluster_list: Vec<(Arc<ClusterKey>, Arc<Cluster>)>,
    /// (Mappings reused, Mappings lowered) per Host, in the last translation.
    pub(super) stats: (usize, usize),
    /// What the next translation needs to patch this one.
    pub(super) last: Option<Last>,
    /// Whether the last translation patched the one before.
    pub(super) patched: bool,
}

/// What the last full or patched lowering saw and produced, beyond the per-Host entries: what
/// the next one needs to patch it (see `super::patch`).
pub(super) struct Last {
    pub(super) options: LowerOptions,
    /// The resource set without its Mappings.
    pub(super) rest: ResourceSet,
    pub(super) mappings: Vec<Arc<(Meta, Mapping)>>,
    /// `mapping.no_host` warnings, by the Mapping's address.
    pub(super) unused: Vec<(usize, Diagnostic)>,
    /// `mapping.unknown_resolver` errors, by the Mapping's address.
    pub(super) unknown_resolvers: Vec<(usize, Diagnostic)>,
    /// Whether some Mapping's hostname has a port.
    pub(super) mapping_port: bool,
    /// What finishing the clusters reported and added.
    pub(super) cluster_diagnostics: Vec<Diagnostic>,
    pub(super) client_secrets: Vec<crate::ir::Secret>,
    pub(super) endpoints: Vec<crate::ir::Endpoints>,
}

/// The cache's entries for one Host.
pub(super) struct HostEntries {
    pub(super) ctx: HostContext,
    pub(super) entries: crate::keyed::AddrMap<Arc<Entry>>,
    /// The Host's Mappings in route order, in the last translation.
    pub(super) order: Vec<Arc<Entry>>,
    /// Its shadow Mappings, and what the policies of the Mappings it takes need of the
    /// listener's filters, in the last translation.
    pub(super) shadows: Vec<Arc<Entry>>,
    pub(super) needs: Needs,
}

impl HostEntries {
    pub(super) fn new(ctx: HostContext, capacity: usize) -> HostEntries {
        HostEntries {
            ctx,
            entries: crate::keyed::AddrMap::with_capacity_and_hasher(capacity, Default::default()),
            order: Vec::new(),
            shadows: Vec::new(),
            needs: Needs::default(),
        }
    }
}

impl std::fmt::Debug for LowerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LowerCache")
            .field("hosts", &self.hosts.len())
            .field("entries", &self.hosts.iter().map(|h| h.entries.len()).sum::<usize>())
            .field("generation", &self.generation)
            .finish()
    }
}

impl LowerCache {
    /// Starts a translation in `context`.
    pub(super) fn begin(&mut self, context: Context) {
        if self.context.as_ref() != Some(&context) {
            self.hosts.clear();
            self.context = Some(context);
        }
        self.generation += 1;
        self.stats = (0, 0);
    }

    /// Ends a translation: drops what it did not use.
    pub(super) fn end(&mut self) {
        let generation = self.generation;
        for h in &mut self.hosts {
            h.entries
                .retain(|_, e| e.generation.load(AtomicOrdering::Relaxed) == generation);
        }
        self.hosts.retain(|h| !h.entries.is_empty());
    }

    /// The Module of this translation's context.
    pub(super) fn module(&self) -> AmbassadorModule {
        self.context.as_ref().map(|c| c.module.clone()).unwrap_or_default()
    }

    /// Keeps a Host's route order (and shadows) for the next translation.
    pub(super) fn keep_order(&mut self, host: &EffectiveHost, kept: Kept) {
        let ctx = HostContext::of(host);
        if let Some(h) = self.hosts.iter_mut().find(|h| h.ctx == ctx) {
            h.order = kept.order;
            h.shadows = kept.shadows;
            h.needs = kept.needs;
        }
    }

    /// (Mapping lowerings reused, Mapping lowerings computed) in the last translation, one per
    /// Mapping and Host.
    pub fn last_stats(&self) -> (usize, usize) {
        self.stats
    }

    /// Whether the last translation patched the one before it (only a few plain Mappings had
    /// changed) rather than lowering every Mapping again.
    pub fn last_patched(&self) -> bool {
        self.patched
    }

    fn host(&self, host: &EffectiveHost) -> Option<&HostEntries> {
        let ctx = HostContext::of(host);
        self.hosts.iter().find(|h| h.ctx == ctx)
    }
}

/// What a Host keeps of its [`Prepared`] Mappings for the next translation (see
/// [`LowerCache::keep_order`]).
pub(super) struct Kept {
    order: Vec<Arc<Entry>>,
    shadows: Vec<Arc<Entry>>,
    needs: Needs,
}

impl Kept {
    /// The candidates in route order, and the shadows.
    pub(super) fn of(prepared: &Prepared<'_, Arc<Entry>>) -> Kept {
        Kept {
            order: prepared.candidates().iter().map(|c| Arc::clone(c.held())).collect(),
            shadows: prepared.shadows().iter().map(|c| Arc::clone(c.held())).collect(),
            needs: prepared.needs(),
        }
    }
}

/// Brings the cache's entries for `host` up to date with `set`: Mappings it has not seen (or
/// seen differently, which is a new allocation) are lowered.
pub(super) fn refresh(
    set: &ResourceSet,
    host: &EffectiveHost,
    options: &LowerOptions,
    clusters: &mut Clusters,
    cache: &mut LowerCache,
) {
    let generation = cache.generation;
    let ctx = HostContext::of(host);
    let index = match cache.hosts.iter().position(|h| h.ctx == ctx) {
        Some(i) => i,
        None => {
            cache.hosts.push(HostEntries::new(ctx, set.mappings.len()));
            cache.hosts.len() - 1
        }
    };
    let module = cache.module();
    let (mut reused, mut lowered) = cache.stats;
    let entries = &mut cache.hosts[index].entries;
    for e in &set.mappings {
        if let Some(hit) = entries.get(&addr(e)) {
            hit.generation.store(generation, AtomicOrdering::Relaxed);
            reused += 1;
            continue;
        }
        lowered += 1;
        let l = mapping::lower_one(e, host, options, &clusters.resolvers, &mut clusters.interner, &module);
        entries.insert(addr(e), Entry::new(l, generation));
    }
    cache.stats = (reused, lowered);
}

/// [`mapping::lower_host`] and [`mapping::prepare`] from the cache's entries for the Host
/// ([`refresh`] first): clusters added, `used` marked, candidates in route order (the last
/// translation's order moved, not sorted again) and grouped.
pub(super) fn prepare<'a, 's: 'a>(
    set: &'s ResourceSet,
    host: &EffectiveHost,
    cache: &'a LowerCache,
    clusters: &mut Clusters<'s>,
    used: &mut [bool],
    diagnostics: &mut Vec<Diagnostic>,
) -> Prepared<'a, Arc<Entry>> {
    let cached = cache.host(host);
    let mut taken = Vec::new();
    for (e, used) in set.mappings.iter().zip(used) {
        let Some(entry) = cached.and_then(|h| h.entries.get(&addr(e))) else {
            continue;
        };
        if !entry.lowered.associated {
            continue;
        }
        *used = true;
        debug_assert!(
            Arc::ptr_eq(&entry.lowered.mapping, e),
            "an address names one allocation while it lives"
        );
        if let Some((key, name)) = &entry.lowered.cluster {
            clusters.add_named(key, name, &e.0, e.1.connect_timeout_ms);
        }
        taken.push(entry);
    }
    let (candidates, shadows, needs) = split(taken);
    let generation = cache.generation;
    let previous: Vec<usize> = cached.map_or(Vec::new(), |h| {
        h.order.iter().map(|l| addr(&l.lowered.mapping)).collect()
    });
    let candidates = crate::keyed::sort_incrementally(
        candidates,
        &previous,
        |c| (c.held().created < generation).then(|| addr(&c.held().lowered.mapping)),
        route_order,
    );
    group(
        candidates,
        shadows,
        needs,
        cache.module(),
        mapping::services(set),
        host,
        diagnostics,
    )
}

/// [`prepare`] for a translation that patches the last one (`super::patch`): the Host's candidates
/// are the cache's, already in route order.
pub(super) fn prepare_patched<'a>(
    set: &ResourceSet,
    host: &EffectiveHost,
    cache: &'a LowerCache,
    diagnostics: &mut Vec<Diagnostic>,
) -> Prepared<'a, Arc<Entry>> {
    let (candidates, shadows, needs) = match cache.host(host) {
        Some(h) => (
            h.order.iter().map(Candidate::of).collect(),
            h.shadows.iter().map(Candidate::of).collect(),
            h.needs,
        ),
        None => (Vec::new(), Vec::new(), Needs::default()),
    };
    group(
        candidates,
        shadows,
        needs,
        cache.module(),
        mapping::services(set),
        host,
        diagnostics,
    )
}

/// The routes of a prepared Host for a security model, each the same allocation as the last
/// translation's when nothing it reads changed.
pub(super) fn routes(
    prepared: &Prepared<'_, Arc<Entry>>,
    model: crate::ir::SecurityModel,
    host: &EffectiveHost,
) -> (Vec<Arc<Route>>, Needs) {
    mapping::emit(prepared, model, host, &mut |c, slot| {
        let mut built = c.held().routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, r)) = built.iter().find(|(s, _)| *s == slot) {
            return Arc::clone(r);
        }
        let r = Arc::new(prepared.build_route(c, slot.clone()));
        if built.len() >= 4 {
            built.clear();
        }
        built.push((slot, Arc::clone(&r)));
        r
    })
}
