//! The lowering cache: what each Host's Mappings lowered to in earlier translations, kept by the
//! address of the Mapping's shared allocation, with their routes and the Host's route order,
//! and the route lists the Host's last translation emitted (which a patch edits, see
//! [`HostRoutes`]). An unchanged Mapping then costs a lookup, and its routes are the same
//! allocations (which rendering recognises). Must not decide anything the plain lowering does
//! not: entries hold what [`mapping::lower_one`] gave, routes what [`Prepared::build_route`]
//! gave, and an edited list is what [`mapping::emit`] would give.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::diagnostic::Diagnostic;
use crate::ir::{Cluster, Route, SecurityModel};
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
    /// How many Hosts' routes (per security model) the last translation edited rather than
    /// emitted (see [`HostRoutes::Edited`]).
    pub(super) edited: std::sync::atomic::AtomicUsize,
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
    /// The precedence of the Mappings in `order` when their grouping is simple (see
    /// [`Prepared::simple`]); then a patch that keeps it so edits `emitted`.
    pub(super) simple: Option<i32>,
    /// The routes `order` gave, per security model, and the translation that emitted them.
    emitted: Mutex<Vec<Emitted>>,
    /// What the patch of translation `edited` changed in `order`, in order (see
    /// `patch::refresh`).
    pub(super) edits: Vec<Edit>,
    pub(super) edited: u64,
}

/// The routes a Host's Mappings gave under a security model in a translation.
type Emitted = (SecurityModel, u64, Vec<Arc<Route>>);

/// A change a patch made to a Host's route order: a Mapping removed at, or inserted at, an
/// index of the order as it was then.
pub(super) enum Edit {
    Remove(usize),
    Insert(usize, Arc<Entry>),
}

impl HostEntries {
    pub(super) fn new(ctx: HostContext, capacity: usize) -> HostEntries {
        HostEntries {
            ctx,
            entries: crate::keyed::AddrMap::with_capacity_and_hasher(capacity, Default::default()),
            order: Vec::new(),
            shadows: Vec::new(),
            needs: Needs::default(),
            simple: None,
            emitted: Mutex::new(Vec::new()),
            edits: Vec::new(),
            edited: 0,
        }
    }

    /// Keeps the routes `model` gave in translation `generation` for the next one to edit
    /// (only when each Mapping gives at most one route under `model` and the grouping is
    /// simple: then route `i` is the `i`th Mapping's).
    fn keep_emitted(
        &self,
        model: SecurityModel,
        host: &EffectiveHost,
        generation: u64,
        simple: bool,
        routes: &[Arc<Route>],
    ) {
        let mut emitted = self.emitted.lock().unwrap_or_else(PoisonError::into_inner);
        // What another security model's routes of the translation before are may still be
        // edited in this one; anything older is stale.
        emitted.retain(|(m, g, _)| *m != model && *g + 1 >= generation);
        if simple && mapping::variants(model, host.insecure_action).1.is_none() {
            emitted.push((model, generation, routes.to_vec()));
        }
    }

    /// The routes of `model` in translation `generation`, from those of the translation before
    /// with this one's edits applied (see [`HostRoutes::Edited`]); `None` when there are none
    /// to edit.
    fn edited_routes(
        &self,
        base: &Prepared<'_, Arc<Entry>>,
        model: SecurityModel,
        host: &EffectiveHost,
        generation: u64,
    ) -> Option<Vec<Arc<Route>>> {
        let (primary, after_group) = mapping::variants(model, host.insecure_action);
        if after_group.is_some() || self.simple.is_none() || self.edited != generation {
            return None;
        }
        let mut emitted = self.emitted.lock().unwrap_or_else(PoisonError::into_inner);
        // Already edited for another Host with the same entries.
        if let Some((_, _, routes)) = emitted.iter().find(|(m, g, _)| *m == model && *g == generation) {
            return Some(routes.clone());
        }
        let at = emitted
            .iter()
            .position(|(m, g, _)| *m == model && *g + 1 == generation)?;
        let (_, _, mut routes) = emitted.swap_remove(at);
        let Some(variant) = primary else {
            emitted.push((model, generation, Vec::new()));
            return Some(Vec::new());
        };
        let (inserted, removed) = self.edits.iter().fold((0, 0), |(i, r), e| match e {
            Edit::Insert(..) => (i + 1, r),
            Edit::Remove(_) => (i, r + 1),
        });
        if routes.len() + inserted != self.order.len() + removed {
            return None;
        }
        for edit in &self.edits {
            match edit {
                Edit::Remove(at) => {
                    routes.remove(*at);
                }
                Edit::Insert(at, entry) => {
                    let route = route_of(base, &Candidate::of(entry), RouteSlot::alone(variant));
                    routes.insert(*at, route);
                }
            }
        }
        emitted.push((model, generation, routes.clone()));
        Some(routes)
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
        self.edited.store(0, AtomicOrdering::Relaxed);
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
            h.simple = kept.simple;
        }
    }

    /// Keeps whether a Host's grouping is simple, as a patch that grouped it again found.
    pub(super) fn keep_simple(&mut self, host: &EffectiveHost, simple: Option<i32>) {
        let ctx = HostContext::of(host);
        if let Some(h) = self.hosts.iter_mut().find(|h| h.ctx == ctx) {
            h.simple = simple;
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

    /// How many route lists (one per Host and security model) the last translation edited from
    /// the one before's instead of emitting them again.
    pub fn last_edited(&self) -> usize {
        self.edited.load(AtomicOrdering::Relaxed)
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
    simple: Option<i32>,
}

impl Kept {
    /// The candidates in route order, and the shadows.
    pub(super) fn of(prepared: &HostRoutes<'_>) -> Kept {
        let (prepared, simple) = match prepared {
            HostRoutes::Prepared { prepared, simple, .. } => (prepared, *simple),
            // Only a patch edits.
            HostRoutes::Edited { base, .. } => (base, None),
        };
        Kept {
            order: prepared.candidates().iter().map(|c| Arc::clone(c.held())).collect(),
            shadows: prepared.shadows().iter().map(|c| Arc::clone(c.held())).collect(),
            needs: prepared.needs(),
            simple,
        }
    }
}

/// A served Host's routes in one translation: from its candidates, prepared and grouped; or, in
/// a patch that kept the Host's grouping simple, the last translation's routes edited as its
/// route order was (`base`, without candidates, holds what building a route reads; `full`
/// is prepared only should a security model have no routes to edit).
pub(super) enum HostRoutes<'a> {
    Prepared {
        prepared: Prepared<'a, Arc<Entry>>,
        entries: Option<&'a HostEntries>,
        simple: Option<i32>,
    },
    Edited {
        base: Prepared<'a, Arc<Entry>>,
        entries: &'a HostEntries,
        full: std::cell::OnceCell<Box<Prepared<'a, Arc<Entry>>>>,
        set: &'a ResourceSet,
        cache: &'a LowerCache,
    },
}

impl<'a> HostRoutes<'a> {
    fn prepared(prepared: Prepared<'a, Arc<Entry>>, entries: Option<&'a HostEntries>) -> HostRoutes<'a> {
        let simple = prepared.simple();
        HostRoutes::Prepared {
            prepared,
            entries,
            simple,
        }
    }

    /// Whether the Host's grouping is simple (see [`Prepared::simple`]).
    pub(super) fn simple(&self) -> Option<i32> {
        match self {
            HostRoutes::Prepared { simple, .. } => *simple,
            HostRoutes::Edited { entries, .. } => entries.simple,
        }
    }

    /// The routes for a security model, and what they need of the listener's filters; kept for
    /// the next translation to edit.
    pub(super) fn routes(
        &self,
        model: SecurityModel,
        host: &EffectiveHost,
        generation: u64,
    ) -> (Vec<Arc<Route>>, Needs) {
        match self {
            HostRoutes::Prepared {
                prepared,
                entries,
                simple,
            } => {
                let (routes, needs) = routes(prepared, model, host);
                if let Some(e) = entries {
                    e.keep_emitted(model, host, generation, simple.is_some(), &routes);
                }
                (routes, needs)
            }
            HostRoutes::Edited {
                base,
                entries,
                full,
                set,
                cache,
            } => {
                if let Some(routes) = entries.edited_routes(base, model, host, generation) {
                    cache.edited.fetch_add(1, AtomicOrdering::Relaxed);
                    let needs = base.route_needs(!routes.is_empty());
                    return (routes, needs);
                }
                let prepared = full.get_or_init(|| {
                    // The grouping is simple: grouping again reports nothing.
                    let mut none = Vec::new();
                    let p = prepare_candidates(set, host, cache, &mut none);
                    debug_assert!(none.is_empty());
                    Box::new(p)
                });
                let (routes, needs) = routes(prepared, model, host);
                entries.keep_emitted(model, host, generation, true, &routes);
                (routes, needs)
            }
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
) -> HostRoutes<'a> {
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
    let prepared = group(
        candidates,
        shadows,
        needs,
        cache.module(),
        mapping::services(set),
        host,
        diagnostics,
    );
    HostRoutes::prepared(prepared, cached)
}

/// [`prepare`] for a translation that patches the last one (`super::patch`): the Host's candidates
/// are the cache's, already in route order; when the patch kept the Host's grouping simple (see
/// `patch::refresh`), they are not even visited: the last routes are edited.
pub(super) fn prepare_patched<'a>(
    set: &'a ResourceSet,
    host: &EffectiveHost,
    cache: &'a LowerCache,
    diagnostics: &mut Vec<Diagnostic>,
) -> HostRoutes<'a> {
    let entries = cache.host(host);
    match entries {
        Some(h) if h.simple.is_some() && h.edited == cache.generation => HostRoutes::Edited {
            base: group(
                Vec::new(),
                Vec::new(),
                h.needs,
                cache.module(),
                mapping::services(set),
                host,
                diagnostics,
            ),
            entries: h,
            full: std::cell::OnceCell::new(),
            set,
            cache,
        },
        _ => HostRoutes::prepared(prepare_candidates(set, host, cache, diagnostics), entries),
    }
}

/// The Host's candidates as the cache has them (in route order), grouped.
fn prepare_candidates<'a>(
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
fn routes(prepared: &Prepared<'_, Arc<Entry>>, model: SecurityModel, host: &EffectiveHost) -> (Vec<Arc<Route>>, Needs) {
    mapping::emit(prepared, model, host, &mut |c, slot| route_of(prepared, c, slot))
}

/// A candidate's route in a slot: the one its entry built before, else built now and kept.
fn route_of(prepared: &Prepared<'_, Arc<Entry>>, c: &Candidate<'_, Arc<Entry>>, slot: RouteSlot) -> Arc<Route> {
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
}
