//! Mapping resources → routes (in Emissary's match order) and deduplicated clusters: which Host
//! serves a Mapping, its matchers, canary groups and shadows, the routes of each Host, and the
//! lowering cache. Clusters (`clusters`), resolvers (`resolvers`) and the AuthService (`auth`)
//! have modules of their own; `patch` patches the last translation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};

mod auth;
mod clusters;
pub(super) mod patch;
mod resolvers;

pub(super) use auth::auth_filter;
use clusters::{cluster_name, cluster_node, DEFAULT_CONNECT_TIMEOUT_MS};
pub(super) use clusters::{tcp_cluster, BuiltCluster, ClusterKey, Clusters, Finished, Interner};
pub(super) use resolvers::Resolvers;

use crate::diagnostic::Diagnostic;
use crate::resource::host::InsecureAction;
use crate::resource::mapping::HeaderValue;
use crate::resource::{LabelSelector, Mapping, Meta, ResourceSet};

use super::host::{globs_intersect, EffectiveHost};
use super::{source_of, LowerOptions};
use crate::ir::{Cluster, HeaderMatch, MatchKind, Mirror, Route, RouteAction, RuntimeFraction, SecurityModel};

/// Emissary's default upstream timeout (`cluster_request_timeout_ms`).
const DEFAULT_TIMEOUT_MS: u64 = 3000;

/// The `:authority` condition a Mapping adds inside a virtual host, if any.
fn authority_match(m: &Mapping, vhost_hostname: &str) -> Option<HeaderMatch> {
    if let Some(host) = &m.host {
        return Some(HeaderMatch {
            name: ":authority".into(),
            kind: if m.host_regex {
                MatchKind::Regex
            } else {
                MatchKind::Exact
            },
            value: host.clone(),
        });
    }
    let glob = m.hostname.as_deref().unwrap_or("*");
    if glob == "*" || glob.eq_ignore_ascii_case(vhost_hostname) {
        return None;
    }
    Some(if let Some(suffix) = glob.strip_prefix('*') {
        HeaderMatch {
            name: ":authority".into(),
            kind: MatchKind::Suffix,
            value: suffix.to_string(),
        }
    } else if let Some(prefix) = glob.strip_suffix('*') {
        HeaderMatch {
            name: ":authority".into(),
            kind: MatchKind::Prefix,
            value: prefix.to_string(),
        }
    } else {
        HeaderMatch {
            name: ":authority".into(),
            kind: MatchKind::Exact,
            value: glob.to_string(),
        }
    })
}

/// Whether a Mapping is served by a Host: Emissary's rule (`IRHost.matches_httpgroup`, strict
/// selectors as since Emissary 2.5 and 3.2).
/// - The Mapping's host match: a `host_regex` matches every Host (its `:authority` condition
///   decides); a `hostname` glob or exact `host` matches the Hosts whose glob it intersects.
/// - A Host with a `mappingSelector` (with at least one label) takes the Mappings whose labels
///   have all of its labels *and* whose host match (if any) matches.
/// - A Host without one takes the Mappings whose host match matches.
/// - So a Mapping with neither `hostname` nor `host` is served only by Hosts that select it by
///   label: "a Mapping that specifies no host can never match a Host that specifies no
///   mappingSelector".
fn associated(meta: &Meta, m: &Mapping, h: &EffectiveHost) -> bool {
    let host_match = if m.host_regex {
        Some(true)
    } else {
        m.hostname
            .as_deref()
            .or(m.host.as_deref())
            .map(|glob| globs_intersect(glob, &h.hostname))
    };
    let selector = h.mapping_selector.as_ref().filter(|s| !s.match_labels.is_empty());
    match (selector, host_match) {
        (Some(s), host_match) => host_match != Some(false) && s.matches(&meta.labels),
        (None, host_match) => host_match == Some(true),
    }
}

/// What a Mapping's lowering reads besides the Mapping and its Host: anything read there must be in
/// here. When it changes (a new Module, AuthService, resolver or option), [`LowerCache`] starts
/// over.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Context {
    module: crate::resource::AmbassadorModule,
    has_auth: bool,
    resolvers: Resolvers,
    options: LowerOptions,
}

impl Context {
    pub(super) fn new(set: &ResourceSet, options: &LowerOptions, resolvers: &Resolvers) -> Context {
        Context {
            module: set.module.as_ref().map(|(_, m)| m.clone()).unwrap_or_default(),
            has_auth: set.auth_service.is_some(),
            resolvers: resolvers.clone(),
            options: options.clone(),
        }
    }
}

/// What of a Host a Mapping's lowering reads.
#[derive(Clone, Debug, PartialEq)]
struct HostContext {
    hostname: String,
    insecure_action: InsecureAction,
    mapping_selector: Option<LabelSelector>,
}

impl HostContext {
    fn of(h: &EffectiveHost) -> HostContext {
        HostContext {
            hostname: h.hostname.clone(),
            insecure_action: h.insecure_action,
            mapping_selector: h.mapping_selector.clone(),
        }
    }
}

/// Which route of a Mapping: its primary route, the primary restricted to
/// `X-Forwarded-Proto: https`, or its cleartext variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Base,
    Secure,
    Insecure(RouteAction),
}

/// What a route reads besides its Mapping, Host and [`Context`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct RouteSlot {
    variant: Variant,
    threshold: Option<u32>,
    mirrors: Vec<Mirror>,
}

/// What one Mapping lowers to on one Host: kept between translations, so an unchanged Mapping
/// costs a lookup (and its routes are the same allocations, which rendering recognises).
#[derive(Debug)]
struct Lowered {
    /// The Mapping (held, so that its address identifies it while this entry lives).
    mapping: Arc<(Meta, Mapping)>,
    /// The last translation that used this entry.
    generation: AtomicU64,
    /// The translation that made it (an address seen before may name a new Mapping then).
    created: u64,
    /// Whether the Host takes the Mapping; nothing below is set when not.
    associated: bool,
    headers: Vec<HeaderMatch>,
    query: Vec<HeaderMatch>,
    /// The upstream and its name (none for a host redirect).
    cluster: Option<(Arc<ClusterKey>, Arc<str>)>,
    /// Routes built so far, by what else they read (usually one or two).
    routes: Mutex<Vec<(RouteSlot, Arc<Route>)>>,
}

/// Mappings lowered by earlier translations, per Host and Mapping. Entries a translation does
/// not use are dropped at its end; a change of what every Mapping reads (the Module, the
/// AuthService, resolvers) empties it. Output with the cache is exactly output without it (a
/// property test checks this).
#[derive(Default)]
pub struct LowerCache {
    context: Option<Context>,
    hosts: Vec<HostEntries>,
    generation: u64,
    /// Interned cluster keys.
    pub(super) interner: Interner,
    /// The last translation's clusters by the address of their keys, and in name order.
    pub(super) clusters: crate::keyed::AddrMap<BuiltCluster>,
    pub(super) cluster_list: Vec<(Arc<ClusterKey>, Arc<Cluster>)>,
    /// (Mappings reused, Mappings lowered) per Host, in the last translation.
    stats: (usize, usize),
    /// What the next translation needs to patch this one.
    pub(super) last: Option<patch::Last>,
    /// Whether the last translation patched the one before.
    pub(super) patched: bool,
}

/// The cache's entries for one Host.
struct HostEntries {
    ctx: HostContext,
    entries: crate::keyed::AddrMap<Arc<Lowered>>,
    /// The Host's Mappings in route order, in the last translation.
    order: Vec<Arc<Lowered>>,
    /// Its shadow Mappings, and whether some Mapping it takes has a CORS policy, in the last
    /// translation.
    shadows: Vec<Arc<Lowered>>,
    any_cors: bool,
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

    /// Keeps a Host's route order (and shadows) for the next translation.
    pub(super) fn keep_order(&mut self, host: &EffectiveHost, kept: Kept) {
        let ctx = HostContext::of(host);
        if let Some(h) = self.hosts.iter_mut().find(|h| h.ctx == ctx) {
            h.order = kept.order;
            h.shadows = kept.shadows;
            h.any_cors = kept.any_cors;
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

fn addr(e: &Arc<(Meta, Mapping)>) -> usize {
    Arc::as_ptr(e) as usize
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
            cache.hosts.push(HostEntries {
                ctx,
                entries: crate::keyed::AddrMap::with_capacity_and_hasher(set.mappings.len(), Default::default()),
                order: Vec::new(),
                shadows: Vec::new(),
                any_cors: false,
            });
            cache.hosts.len() - 1
        }
    };
    let module = cache.context.as_ref().map(|c| c.module.clone()).unwrap_or_default();
    let (mut reused, mut lowered) = cache.stats;
    let entries = &mut cache.hosts[index].entries;
    for e in &set.mappings {
        if let Some(hit) = entries.get(&addr(e)) {
            hit.generation.store(generation, AtomicOrdering::Relaxed);
            reused += 1;
            continue;
        }
        lowered += 1;
        let l = lower_one(
            e,
            host,
            options,
            &clusters.resolvers,
            &mut clusters.interner,
            &module,
            generation,
        );
        entries.insert(addr(e), Arc::new(l));
    }
    cache.stats = (reused, lowered);
}

/// What a Host's Mapping needs before routes are ordered: its matchers and its cluster.
fn lower_one(
    e: &Arc<(Meta, Mapping)>,
    host: &EffectiveHost,
    options: &LowerOptions,
    resolvers: &Resolvers,
    interner: &mut Interner,
    module: &crate::resource::AmbassadorModule,
    generation: u64,
) -> Lowered {
    let (meta, m) = &**e;
    let mut lowered = Lowered {
        mapping: Arc::clone(e),
        generation: AtomicU64::new(generation),
        created: generation,
        associated: associated(meta, m, host),
        headers: Vec::new(),
        query: Vec::new(),
        cluster: None,
        routes: Mutex::new(Vec::new()),
    };
    if !lowered.associated {
        return lowered;
    }
    let mut headers: Vec<HeaderMatch> = m
        .headers
        .iter()
        .map(|(name, v)| matcher(name.to_ascii_lowercase(), v))
        .collect();
    headers.extend(m.regex_headers.iter().map(|(name, re)| HeaderMatch {
        name: name.to_ascii_lowercase(),
        kind: MatchKind::Regex,
        value: re.clone(),
    }));
    if let Some(a) = authority_match(m, &host.hostname) {
        headers.push(a);
    }
    let mut query: Vec<HeaderMatch> = m
        .query_parameters
        .iter()
        .map(|(name, v)| matcher(name.clone(), v))
        .chain(m.regex_query_parameters.iter().map(|(name, re)| HeaderMatch {
            name: name.clone(),
            kind: MatchKind::Regex,
            value: re.clone(),
        }))
        .collect();
    query.sort();
    if let Some(method) = &m.method {
        headers.push(HeaderMatch {
            name: ":method".into(),
            kind: if m.method_regex {
                MatchKind::Regex
            } else {
                MatchKind::Exact
            },
            value: if m.method_regex {
                method.clone()
            } else {
                method.to_ascii_uppercase()
            },
        });
    }
    headers.sort();
    lowered.headers = headers;
    lowered.query = query;
    // A host redirect sends clients elsewhere: no cluster.
    if m.redirect.is_none() {
        let eds = !m.service.is_ip && resolvers.endpoint(m.resolver.as_deref());
        let key = ClusterKey::for_service(
            &m.service,
            {
                // The Module's defaults for what the Mapping leaves unset.
                let mut s = m.cluster.clone();
                if s.circuit_breakers.is_empty() {
                    s.circuit_breakers.clone_from(&module.circuit_breakers);
                }
                s.idle_timeout_ms = s.idle_timeout_ms.or(module.cluster_idle_timeout_ms);
                s.max_connection_lifetime_ms = s
                    .max_connection_lifetime_ms
                    .or(module.cluster_max_connection_lifetime_ms);
                if let (false, Some((policy, _))) = (m.load_balancer_set, &module.load_balancer) {
                    s.lb_policy = policy;
                }
                s
            },
            meta,
            options,
        );
        let key = ClusterKey { eds, ..key };
        let name = cluster_name(&key);
        lowered.cluster = Some((interner.intern(key), name.into()));
    }
    lowered
}

/// A header or query parameter condition of a Mapping.
fn matcher(name: String, v: &HeaderValue) -> HeaderMatch {
    match v {
        HeaderValue::Exact(value) => HeaderMatch {
            name,
            kind: MatchKind::Exact,
            value: value.clone(),
        },
        HeaderValue::Present(_) => HeaderMatch {
            name,
            kind: MatchKind::Present,
            value: String::new(),
        },
    }
}

/// A Mapping taken by a Host, with what its routes need.
pub(super) struct Candidate<'a> {
    meta: &'a Meta,
    m: &'a Mapping,
    lowered: &'a Arc<Lowered>,
}

impl<'a> Candidate<'a> {
    /// A Mapping the cache lowered, seen as a candidate.
    fn of(lowered: &'a Arc<Lowered>) -> Candidate<'a> {
        let (meta, m) = &*lowered.mapping;
        Candidate { meta, m, lowered }
    }
}

impl Candidate<'_> {
    fn headers(&self) -> &[HeaderMatch] {
        &self.lowered.headers
    }

    fn query(&self) -> &[HeaderMatch] {
        &self.lowered.query
    }

    /// The cluster's name; empty for a host redirect.
    fn cluster(&self) -> &str {
        self.lowered.cluster.as_ref().map_or("", |(_, name)| name)
    }
}

/// A Host's Mappings, in route order and grouped: what every Listener serving the Host shares
/// (only the security model differs between Listeners, see [`emit`]).
pub(super) struct Prepared<'a> {
    candidates: Vec<Candidate<'a>>,
    shadows: Vec<Candidate<'a>>,
    thresholds: Vec<Option<u32>>,
    group_of: Vec<usize>,
    module: crate::resource::AmbassadorModule,
    has_auth: bool,
    /// Whether some candidate has its own CORS policy.
    any_cors: bool,
}

/// What a Host keeps of its [`Prepared`] Mappings for the next translation (see
/// [`LowerCache::keep_order`]).
pub(super) struct Kept {
    order: Vec<Arc<Lowered>>,
    shadows: Vec<Arc<Lowered>>,
    any_cors: bool,
}

impl Prepared<'_> {
    /// The candidates in route order, and the shadows.
    pub(super) fn kept(&self) -> Kept {
        Kept {
            order: self.candidates.iter().map(|c| Arc::clone(c.lowered)).collect(),
            shadows: self.shadows.iter().map(|c| Arc::clone(c.lowered)).collect(),
            any_cors: self.any_cors,
        }
    }
}

/// Emissary's route order: precedence, then longer prefix, then more header and query matchers;
/// inside a canary group, Mappings with a weight first. A total order (namespace and name last).
fn route_order(a: &Candidate<'_>, b: &Candidate<'_>) -> std::cmp::Ordering {
    b.m.precedence
        .cmp(&a.m.precedence)
        .then(b.m.prefix.len().cmp(&a.m.prefix.len()))
        .then((b.headers().len() + b.query().len()).cmp(&(a.headers().len() + a.query().len())))
        .then(a.m.prefix.cmp(&b.m.prefix))
        .then(a.m.path_kind.cmp(&b.m.path_kind))
        .then(b.m.case_sensitive.cmp(&a.m.case_sensitive))
        .then(a.headers().cmp(b.headers()))
        .then(a.query().cmp(b.query()))
        .then(b.m.weight.is_some().cmp(&a.m.weight.is_some()))
        .then((&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)))
}

/// The routes of a Host for a Listener's security model.
/// Also says whether some route has a CORS policy (known without visiting every route).
pub(super) fn routes_for(
    prepared: &Prepared<'_>,
    model: SecurityModel,
    host: &EffectiveHost,
) -> (Vec<Arc<Route>>, bool) {
    emit(prepared, model, host)
}

/// Collects, orders and groups the Mappings a Host takes (clusters are added here, once per
/// Host), from the cache's entries for the Host ([`refresh`] first).
pub(super) fn prepare<'a, 's: 'a>(
    set: &'s ResourceSet,
    host: &EffectiveHost,
    cache: &'a LowerCache,
    clusters: &mut Clusters<'s>,
    used: &mut [bool],
    diagnostics: &mut Vec<Diagnostic>,
) -> Prepared<'a> {
    let module = cache.context.as_ref().map(|c| c.module.clone()).unwrap_or_default();
    let mut candidates = Vec::new();
    let mut shadows = Vec::new();
    let mut any_cors = false;
    let cached = cache.host(host);
    for (i, e) in set.mappings.iter().enumerate() {
        let Some(lowered) = cached.and_then(|h| h.entries.get(&addr(e))) else {
            continue;
        };
        if !lowered.associated {
            continue;
        }
        if let Some(u) = used.get_mut(i) {
            *u = true;
        }
        debug_assert!(
            Arc::ptr_eq(&lowered.mapping, e),
            "an address names one allocation while it lives"
        );
        let (meta, m) = &**e;
        if let Some((key, name)) = &lowered.cluster {
            clusters.add_named(key, name, meta, m.connect_timeout_ms);
        }
        let c = Candidate { meta, m, lowered };
        if m.shadow {
            shadows.push(c);
        } else {
            any_cors |= m.cors.is_some();
            candidates.push(c);
        }
    }
    let generation = cache.generation;
    let previous: Vec<usize> = cached.map_or(Vec::new(), |h| h.order.iter().map(|l| addr(&l.mapping)).collect());
    let candidates = crate::keyed::sort_incrementally(
        candidates,
        &previous,
        |c| (c.lowered.created < generation).then(|| addr(&c.lowered.mapping)),
        route_order,
    );
    group(
        candidates,
        shadows,
        any_cors,
        module,
        set.auth_service.is_some(),
        host,
        diagnostics,
    )
}

/// [`prepare`] for a translation that patches the last one ([`patch`]): the Host's candidates
/// are the cache's, already in route order.
pub(super) fn prepare_patched<'a>(
    set: &ResourceSet,
    host: &EffectiveHost,
    cache: &'a LowerCache,
    diagnostics: &mut Vec<Diagnostic>,
) -> Prepared<'a> {
    let module = cache.context.as_ref().map(|c| c.module.clone()).unwrap_or_default();
    let (candidates, shadows, any_cors) = match cache.host(host) {
        Some(h) => (
            h.order.iter().map(Candidate::of).collect(),
            h.shadows.iter().map(Candidate::of).collect(),
            h.any_cors,
        ),
        None => (Vec::new(), Vec::new(), false),
    };
    group(
        candidates,
        shadows,
        any_cors,
        module,
        set.auth_service.is_some(),
        host,
        diagnostics,
    )
}

/// Groups a Host's candidates (in route order): canary groups, their thresholds, and what a
/// higher precedence shadows.
fn group<'a>(
    candidates: Vec<Candidate<'a>>,
    shadows: Vec<Candidate<'a>>,
    any_cors: bool,
    module: crate::resource::AmbassadorModule,
    has_auth: bool,
    host: &EffectiveHost,
    diagnostics: &mut Vec<Diagnostic>,
) -> Prepared<'a> {
    // What makes two Mappings match the same requests (then they form a canary group).
    let same_match = |a: &Candidate<'_>, b: &Candidate<'_>| {
        a.m.precedence == b.m.precedence
            && a.m.prefix == b.m.prefix
            && a.m.path_kind == b.m.path_kind
            && a.m.case_sensitive == b.m.case_sensitive
            && a.headers() == b.headers()
            && a.query() == b.query()
    };
    // Canary groups: runs of candidates with the same match. Each member's threshold is the
    // running sum of the group's weights (unweighted members share what the weighted ones leave);
    // the last member takes whatever is left, so every request of the group is routed.
    let mut thresholds: Vec<Option<u32>> = vec![None; candidates.len()];
    let mut group_of: Vec<usize> = vec![0; candidates.len()];
    // First group (index) of each match, to find matches shadowed by a higher precedence.
    type MatchKey<'k> = (
        &'k str,
        crate::resource::mapping::PathKind,
        bool,
        &'k [HeaderMatch],
        &'k [HeaderMatch],
    );
    let mut earlier_matches: BTreeMap<MatchKey<'_>, usize> = BTreeMap::new();
    // With one precedence, equal matches sort next to each other (one group): nothing can be
    // shadowed, and the map is not needed (it costs a string comparison per Mapping and step).
    let one_precedence = candidates.windows(2).all(|w| w[0].m.precedence == w[1].m.precedence);
    let mut start = 0;
    while start < candidates.len() {
        let mut end = start + 1;
        while end < candidates.len() && same_match(&candidates[start], &candidates[end]) {
            end += 1;
        }
        let group = &candidates[start..end];
        // The same match at a higher precedence takes every request first.
        let g = &group[0];
        let match_key = (
            g.m.prefix.as_str(),
            g.m.path_kind,
            g.m.case_sensitive,
            g.headers(),
            g.query(),
        );
        let shadowing = if one_precedence {
            None
        } else {
            let earlier = earlier_matches.get(&match_key).copied();
            earlier_matches.entry(match_key).or_insert(start);
            earlier
        };
        if let Some(earlier) = shadowing.map(|i| &candidates[i]) {
            for c in group {
                diagnostics.push(
                    Diagnostic::warning(
                        "mapping.shadowed",
                        format!(
                            "{} matches the same requests as {}, which has a higher precedence, and is never used on host `{}`",
                            c.meta.object_ref(),
                            earlier.meta.object_ref(),
                            host.hostname
                        ),
                    )
                    .at(c.meta.origin.clone())
                    .on(c.meta.object_ref())
                    .path("spec.precedence")
                    .hint("give it a different prefix, headers or query parameters, or the same precedence to share the traffic (a canary group)"),
                );
            }
        }
        if group.len() > 1 {
            let explicit: u32 = group.iter().filter_map(|c| c.m.weight).sum();
            let unweighted = u32::try_from(group.iter().filter(|c| c.m.weight.is_none()).count()).unwrap_or(u32::MAX);
            if explicit > 100 || (unweighted == 0 && explicit != 100) {
                let last = &group[group.len() - 1];
                diagnostics.push(
                    Diagnostic::warning(
                        "mapping.canary_weights",
                        format!(
                            "the weights of the {} Mappings matching `{}` on host `{}` add up to {explicit}, not 100; {} gets what the others leave",
                            group.len(), last.m.prefix, host.hostname, last.meta.object_ref()
                        ),
                    )
                    .at(last.meta.origin.clone())
                    .on(last.meta.object_ref())
                    .path("spec.weight")
                    .hint("give the Mappings of a canary group weights that add up to 100, or leave one without a weight"),
                );
            }
            let share = 100u32.saturating_sub(explicit) / unweighted.max(1);
            let mut sum = 0u32;
            for (i, c) in group.iter().enumerate() {
                sum = (sum + c.m.weight.unwrap_or(share)).min(100);
                if i + 1 < group.len() {
                    thresholds[start + i] = Some(sum);
                }
            }
        }
        group_of[start..end].fill(start);
        start = end;
    }
    Prepared {
        any_cors,
        candidates,
        shadows,
        thresholds,
        group_of,
        module,
        has_auth,
    }
}

/// Emits a prepared Host's routes for one security model.
fn emit(p: &Prepared<'_>, model: SecurityModel, host: &EffectiveHost) -> (Vec<Arc<Route>>, bool) {
    let Prepared {
        candidates,
        shadows,
        thresholds,
        group_of,
        module,
        has_auth,
        any_cors,
    } = p;
    // Each Mapping gives a primary route (secure, or for every request) and maybe a cleartext
    // variant; in a canary group all primaries come first, then the variants, so that each kind
    // of request meets the group's thresholds in order.
    let mut routes = Vec::with_capacity(candidates.len() * 2);
    let mut variants: Vec<Arc<Route>> = Vec::new();
    for (i, (c, threshold)) in candidates.iter().zip(thresholds.iter().copied()).enumerate() {
        if i > 0 && group_of[i] != group_of[i - 1] {
            routes.append(&mut variants);
        }
        let mut mirrors: Vec<Mirror> = shadows
            .iter()
            .filter(|s| {
                s.m.prefix == c.m.prefix
                    && s.m.path_kind == c.m.path_kind
                    && s.headers() == c.headers()
                    && s.query() == c.query()
            })
            .map(|s| Mirror {
                cluster: s.cluster().to_string(),
                percent: s.m.weight.unwrap_or(100),
            })
            .collect();
        mirrors.sort();
        mirrors.dedup();
        // The same route as the last translation's when nothing it reads changed.
        let route = |variant: Variant| {
            let slot = RouteSlot {
                variant,
                threshold,
                mirrors: mirrors.clone(),
            };
            let mut built = c.lowered.routes.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, r)) = built.iter().find(|(s, _)| *s == slot) {
                return Arc::clone(r);
            }
            let r = Arc::new(build_route(c, variant, threshold, mirrors.clone(), module, *has_auth));
            if built.len() >= 4 {
                built.clear();
            }
            built.push((slot, Arc::clone(&r)));
            r
        };
        match (model, host.insecure_action) {
            (SecurityModel::Secure, _) | (SecurityModel::Xfp | SecurityModel::Insecure, InsecureAction::Route) => {
                routes.push(route(Variant::Base));
            }
            (SecurityModel::Xfp, InsecureAction::Redirect) => {
                routes.push(route(Variant::Secure));
                variants.push(route(Variant::Insecure(RouteAction::HttpsRedirect)));
            }
            (SecurityModel::Xfp, InsecureAction::Reject) => routes.push(route(Variant::Secure)),
            (SecurityModel::Insecure, InsecureAction::Redirect) => {
                routes.push(route(Variant::Insecure(RouteAction::HttpsRedirect)));
            }
            (SecurityModel::Insecure, InsecureAction::Reject) => {}
        }
    }
    routes.append(&mut variants);
    // A route's policy is its Mapping's, else the Module's (see `build_route`).
    let cors = !routes.is_empty() && (module.cors.is_some() || *any_cors);
    (routes, cors)
}

/// One route of a Mapping.
fn build_route(
    c: &Candidate<'_>,
    variant: Variant,
    threshold: Option<u32>,
    mirrors: Vec<Mirror>,
    module: &crate::resource::AmbassadorModule,
    has_auth: bool,
) -> Route {
    let mut r = Route {
        name: format!("{}/{}", c.meta.namespace, c.meta.name),
        action: if c.m.redirect.is_some() {
            RouteAction::Redirect
        } else {
            RouteAction::Route
        },
        prefix: c.m.prefix.clone(),
        path_kind: c.m.path_kind,
        case_sensitive: c.m.case_sensitive,
        headers: c.headers().to_vec(),
        query_parameters: c.query().to_vec(),
        runtime_fraction: threshold.map(|numerator| RuntimeFraction {
            numerator,
            runtime_key: format!("routing.traffic_shift.{}", c.cluster()),
        }),
        redirect: c.m.redirect.clone().map(Box::new),
        regex_rewrite: c.m.regex_rewrite.clone().map(Box::new),
        auto_host_rewrite: c.m.auto_host_rewrite,
        upgrades: c.m.allow_upgrade.clone(),
        retry_policy: c
            .m
            .retry_policy
            .clone()
            .or_else(|| module.retry_policy.clone())
            .map(Box::new),
        mirrors,
        cors: c.m.cors.clone().or_else(|| module.cors.clone()).map(Box::new),
        auth: (has_auth && (c.m.bypass_auth || !c.m.auth_context_extensions.is_empty())).then(|| {
            crate::ir::RouteAuth {
                bypass: c.m.bypass_auth,
                context_extensions: c.m.auth_context_extensions.clone(),
            }
        }),
        hash_policy: if c.m.load_balancer_set {
            c.m.hash_policy.clone()
        } else {
            module.load_balancer.as_ref().and_then(|(_, h)| h.clone())
        }
        .map(Box::new),
        cluster: c.cluster().to_string(),
        prefix_rewrite: (!c.m.rewrite.is_empty() && c.m.regex_rewrite.is_none()).then(|| c.m.rewrite.clone()),
        timeout_ms: c
            .m
            .timeout_ms
            .or(module.cluster_request_timeout_ms)
            .unwrap_or(DEFAULT_TIMEOUT_MS),
        precedence: c.m.precedence,
        host_rewrite: c.m.host_rewrite.clone(),
        idle_timeout_ms: c.m.idle_timeout_ms,
        request_headers_to_add: {
            let mut h = c.m.add_request_headers.clone();
            // Linkerd routes by this header: the service as the Mapping names it.
            if c.m.add_linkerd_headers.unwrap_or(module.add_linkerd_headers) && c.m.redirect.is_none() {
                let port = c.m.service.port.map_or(String::new(), |p| format!(":{p}"));
                h.push(crate::resource::mapping::AddedHeader {
                    name: "l5d-dst-override".to_string(),
                    value: format!("{}{port}", c.m.service.host),
                    append: false,
                });
            }
            h
        },
        response_headers_to_add: c.m.add_response_headers.clone(),
        request_headers_to_remove: c.m.remove_request_headers.clone(),
        response_headers_to_remove: c.m.remove_response_headers.clone(),
        source: Some(source_of(c.meta)),
    };
    match variant {
        Variant::Base => {}
        Variant::Secure => {
            r.headers.push(HeaderMatch {
                name: "x-forwarded-proto".into(),
                kind: MatchKind::Exact,
                value: "https".into(),
            });
            r.headers.sort();
        }
        Variant::Insecure(action) => {
            r.name.push_str("/insecure");
            r.action = action;
        }
    }
    r
}

/// Warns about Mappings that no Host serves, with each Mapping's address.
/// `used[i]`: whether `set.mappings[i]` went to some Host.
pub(super) fn report_unused(set: &ResourceSet, used: &[bool]) -> Vec<(usize, Diagnostic)> {
    set.mappings
        .iter()
        .zip(used)
        .filter(|(_, used)| !**used)
        .map(|(e, _)| (addr(e), no_host(&e.0, &e.1)))
        .collect()
}

/// The warning for a Mapping no Host serves.
fn no_host(meta: &Meta, m: &Mapping) -> Diagnostic {
    let d = match m.hostname.as_deref().or(m.host.as_deref()) {
        Some(glob) => Diagnostic::warning(
            "mapping.no_host",
            format!("no Host serves this Mapping (hostname `{glob}`); it is not routed"),
        )
        .hint("check the Mapping's hostname and labels against the Hosts' hostname and mappingSelector"),
        None => Diagnostic::warning(
            "mapping.no_host",
            "this Mapping has neither `hostname` nor `host`, and no Host's mappingSelector selects it by label; it is not routed (Emissary's rule for v3alpha1 Mappings)",
        )
        .hint("add `hostname: \"*\"` to serve it on every Host, or a hostname glob, or labels that a Host's mappingSelector selects"),
    };
    d.at(meta.origin.clone()).on(meta.object_ref())
}
