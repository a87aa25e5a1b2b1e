//! Mapping resources → routes (in Emissary's match order) and deduplicated clusters: which Host
//! serves a Mapping ([`associated`]), its matchers and cluster ([`lower_one`]), a Host's
//! candidates in route order with canary groups and shadows ([`prepare`], [`group`]), and their
//! routes for a Listener's security model ([`emit`]).
//!
//! Plain functions of their inputs: what the incremental lowering keeps between translations
//! lives in `super::incremental`, which calls these (over its own entries, see [`Holds`]) and
//! must give what they give. Clusters (`clusters`), resolvers (`resolvers`) and the AuthService
//! (`auth`) have modules of their own.

use std::collections::BTreeMap;
use std::sync::Arc;

mod auth;
mod clusters;
mod resolvers;

pub(super) use auth::{auth_filter, log_sink, rate_limit_domain, ratelimit_filter, services, tracing};
pub(super) use clusters::{
    cluster_name, cluster_node, name_order, same_users, settle, tcp_cluster, ClusterKey, Clusters, Finished, Interner,
    DEFAULT_CONNECT_TIMEOUT_MS,
};
pub(super) use resolvers::Resolvers;

use crate::diagnostic::Diagnostic;
use crate::resource::host::InsecureAction;
use crate::resource::mapping::HeaderValue;
use crate::resource::{AmbassadorModule, Mapping, Meta, ResourceSet};

use super::host::{globs_intersect, EffectiveHost};
use super::{source_of, LowerOptions};
use crate::ir::{HeaderMatch, MatchKind, Mirror, Route, RouteAction, RuntimeFraction, SecurityModel};

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
            ignore_case: !m.host_regex,
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
            ignore_case: true,
        }
    } else if let Some(prefix) = glob.strip_suffix('*') {
        HeaderMatch {
            name: ":authority".into(),
            kind: MatchKind::Prefix,
            value: prefix.to_string(),
            ignore_case: true,
        }
    } else {
        HeaderMatch {
            name: ":authority".into(),
            kind: MatchKind::Exact,
            value: glob.to_string(),
            ignore_case: true,
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

/// Which route of a Mapping: its primary route, the primary restricted to
/// `X-Forwarded-Proto: https`, or its cleartext variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::ir::lower) enum Variant {
    Base,
    Secure,
    Insecure(RouteAction),
}

/// What a route reads besides its Mapping, Host, the Module and whether there is an AuthService.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::ir::lower) struct RouteSlot {
    variant: Variant,
    threshold: Option<u32>,
    mirrors: Vec<Mirror>,
}

impl RouteSlot {
    /// The slot of a Mapping alone in its canary group, with no shadow mirroring it.
    pub(in crate::ir::lower) fn alone(variant: Variant) -> RouteSlot {
        RouteSlot {
            variant,
            threshold: None,
            mirrors: Vec::new(),
        }
    }
}

/// The routes each Mapping gives under a security model and a Host's insecure action: its
/// primary route, and a variant that goes after its canary group's primaries (a cleartext
/// redirect beside a secure route).
pub(in crate::ir::lower) fn variants(
    model: SecurityModel,
    action: InsecureAction,
) -> (Option<Variant>, Option<Variant>) {
    match (model, action) {
        (SecurityModel::Secure, _) | (SecurityModel::Xfp | SecurityModel::Insecure, InsecureAction::Route) => {
            (Some(Variant::Base), None)
        }
        (SecurityModel::Xfp, InsecureAction::Redirect) => (
            Some(Variant::Secure),
            Some(Variant::Insecure(RouteAction::HttpsRedirect)),
        ),
        (SecurityModel::Xfp, InsecureAction::Reject) => (Some(Variant::Secure), None),
        (SecurityModel::Insecure, InsecureAction::Redirect) => {
            (Some(Variant::Insecure(RouteAction::HttpsRedirect)), None)
        }
        (SecurityModel::Insecure, InsecureAction::Reject) => (None, None),
    }
}

/// What one Mapping lowers to on one Host before routes are ordered: whether the Host takes
/// it, its matchers and its upstream cluster.
#[derive(Debug)]
pub(in crate::ir::lower) struct Lowered {
    /// The Mapping (held: the incremental lowering identifies it by this allocation).
    pub(in crate::ir::lower) mapping: Arc<(Meta, Mapping)>,
    /// Whether the Host takes the Mapping; nothing below is set when not.
    pub(in crate::ir::lower) associated: bool,
    headers: Vec<HeaderMatch>,
    query: Vec<HeaderMatch>,
    /// The upstream and its name (none for a host redirect).
    pub(in crate::ir::lower) cluster: Option<(Arc<ClusterKey>, Arc<str>)>,
}

/// How a stage holds a [`Lowered`] Mapping: the plain lowering as it is, the incremental one in
/// its cache's entries (which also keep the Mapping's routes).
pub(in crate::ir::lower) trait Holds {
    fn lowered(&self) -> &Lowered;
}

impl Holds for Lowered {
    fn lowered(&self) -> &Lowered {
        self
    }
}

/// The address of a Mapping's allocation, which identifies it while it lives.
pub(in crate::ir::lower) fn addr(e: &Arc<(Meta, Mapping)>) -> usize {
    Arc::as_ptr(e) as usize
}

/// What a Host's Mapping needs before routes are ordered: whether the Host takes it, its
/// matchers and its cluster (interned, the Module's defaults applied).
pub(in crate::ir::lower) fn lower_one(
    e: &Arc<(Meta, Mapping)>,
    host: &EffectiveHost,
    options: &LowerOptions,
    resolvers: &Resolvers,
    interner: &mut Interner,
    module: &AmbassadorModule,
) -> Lowered {
    let (meta, m) = &**e;
    let mut lowered = Lowered {
        mapping: Arc::clone(e),
        associated: associated(meta, m, host),
        headers: Vec::new(),
        query: Vec::new(),
        cluster: None,
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
        ignore_case: false,
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
            ignore_case: false,
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
            ignore_case: false,
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
                if s.keepalive.is_none() {
                    s.keepalive.clone_from(&module.keepalive);
                }
                s.max_connection_lifetime_ms = s
                    .max_connection_lifetime_ms
                    .or(module.cluster_max_connection_lifetime_ms);
                if let (false, Some((policy, _))) = (m.load_balancer_set, &module.load_balancer) {
                    s.lb_policy = policy;
                }
                if let (false, Some(family)) = (m.ip_families_set, module.dns_lookup_family) {
                    s.dns_lookup_family = family;
                }
                if s.stats_name.is_none() {
                    s.stats_name.clone_from(&module.mapping_defaults.stats_name);
                }
                s.preserve_header_case =
                    !s.http2 && module.header_case == Some(crate::resource::module::HeaderCase::Preserve);
                s
            },
            meta,
            options,
            module,
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
            ignore_case: false,
        },
        HeaderValue::Present(_) => HeaderMatch {
            name,
            kind: MatchKind::Present,
            value: String::new(),
            ignore_case: false,
        },
    }
}

/// A Mapping taken by a Host, with what its routes need; `L` is how the stage holds it.
pub(in crate::ir::lower) struct Candidate<'a, L> {
    meta: &'a Meta,
    m: &'a Mapping,
    held: &'a L,
}

impl<'a, L: Holds> Candidate<'a, L> {
    /// A lowered Mapping, seen as a candidate.
    pub(in crate::ir::lower) fn of(held: &'a L) -> Candidate<'a, L> {
        let (meta, m) = &*held.lowered().mapping;
        Candidate { meta, m, held }
    }

    /// How the stage holds it.
    pub(in crate::ir::lower) fn held(&self) -> &'a L {
        self.held
    }

    fn headers(&self) -> &'a [HeaderMatch] {
        &self.held.lowered().headers
    }

    fn query(&self) -> &'a [HeaderMatch] {
        &self.held.lowered().query
    }

    /// The Mapping's precedence.
    pub(in crate::ir::lower) fn precedence(&self) -> i32 {
        self.m.precedence
    }

    /// Whether two candidates match the same requests (then they form a canary group).
    pub(in crate::ir::lower) fn same_match(&self, other: &Candidate<'_, L>) -> bool {
        self.m.precedence == other.m.precedence
            && self.m.prefix == other.m.prefix
            && self.m.path_kind == other.m.path_kind
            && self.m.case_sensitive == other.m.case_sensitive
            && self.headers() == other.headers()
            && self.query() == other.query()
    }

    /// The cluster's name; empty for a host redirect.
    fn cluster(&self) -> &'a str {
        self.held.lowered().cluster.as_ref().map_or("", |(_, name)| name)
    }
}

/// A Host's Mappings, in route order and grouped: what every Listener serving the Host shares
/// (only the security model differs between Listeners, see [`emit`]).
pub(in crate::ir::lower) struct Prepared<'a, L> {
    candidates: Vec<Candidate<'a, L>>,
    shadows: Vec<Candidate<'a, L>>,
    thresholds: Vec<Option<u32>>,
    group_of: Vec<usize>,
    module: AmbassadorModule,
    has_auth: bool,
    /// The domain of rate limit descriptors, with a RateLimitService.
    rate_limit_domain: Option<String>,
    /// What some candidate's own policies need of the listener's filters.
    needs: Needs,
}

/// What a Host's routes need of the HTTP filters of the listeners that serve them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(in crate::ir::lower) struct Needs {
    /// Some route has a CORS policy (the CORS filter).
    pub(in crate::ir::lower) cors: bool,
    /// Some route has its own IP policy (the RBAC filter).
    pub(in crate::ir::lower) rbac: bool,
    /// Some route has its own custom error responses (the custom response filter).
    pub(in crate::ir::lower) error_responses: bool,
}

impl Needs {
    /// What a Mapping's own policies need.
    fn of(m: &Mapping) -> Needs {
        Needs {
            cors: m.cors.is_some(),
            rbac: m.ip_policy.is_some(),
            error_responses: !m.error_responses.is_empty(),
        }
    }

    /// Both needs.
    pub(in crate::ir::lower) fn or(self, other: Needs) -> Needs {
        Needs {
            cors: self.cors || other.cors,
            rbac: self.rbac || other.rbac,
            error_responses: self.error_responses || other.error_responses,
        }
    }
}

impl<'a, L: Holds> Prepared<'a, L> {
    /// The candidates in route order.
    pub(in crate::ir::lower) fn candidates(&self) -> &[Candidate<'a, L>] {
        &self.candidates
    }

    /// The shadow Mappings.
    pub(in crate::ir::lower) fn shadows(&self) -> &[Candidate<'a, L>] {
        &self.shadows
    }

    /// What some candidate's own policies need of the listener's filters.
    pub(in crate::ir::lower) fn needs(&self) -> Needs {
        self.needs
    }

    /// One route of a candidate.
    pub(in crate::ir::lower) fn build_route(&self, c: &Candidate<'_, L>, slot: RouteSlot) -> Route {
        build_route(c, slot, &self.module, self.has_auth, self.rate_limit_domain.as_deref())
    }

    /// What the Host's routes need of the listener's filters (`any`: whether it has routes). A
    /// route's CORS policy is its Mapping's, else the Module's (see `build_route`); the Module's
    /// IP policy is the listener's.
    pub(in crate::ir::lower) fn route_needs(&self, any: bool) -> Needs {
        Needs {
            cors: any && (self.module.cors.is_some() || self.needs.cors),
            rbac: any && self.needs.rbac,
            error_responses: any && self.needs.error_responses,
        }
    }

    /// The candidates' precedence when the grouping is simple: no shadow, every candidate a
    /// canary group of its own, one precedence (then no threshold, mirror or grouping
    /// diagnostic, and each candidate's routes are its own).
    pub(in crate::ir::lower) fn simple(&self) -> Option<i32> {
        let first = self.candidates.first()?.m.precedence;
        (self.shadows.is_empty()
            && self.group_of.iter().enumerate().all(|(i, g)| *g == i)
            && self.candidates.iter().all(|c| c.m.precedence == first))
        .then_some(first)
    }
}

/// Emissary's route order: precedence, then longer prefix, then more header and query matchers;
/// inside a canary group, Mappings with a weight first. A total order (namespace and name last).
pub(in crate::ir::lower) fn route_order<L: Holds>(a: &Candidate<'_, L>, b: &Candidate<'_, L>) -> std::cmp::Ordering {
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

/// Lowers every Mapping of `set` on `host`: the ones the Host takes, in input order, their
/// clusters added to `clusters`; `used[i]` is set when it takes `set.mappings[i]`.
pub(super) fn lower_host<'s>(
    set: &'s ResourceSet,
    host: &EffectiveHost,
    options: &LowerOptions,
    module: &AmbassadorModule,
    clusters: &mut Clusters<'s>,
    used: &mut [bool],
) -> Vec<Lowered> {
    let mut taken = Vec::new();
    for (e, used) in set.mappings.iter().zip(used) {
        let l = lower_one(e, host, options, &clusters.resolvers, &mut clusters.interner, module);
        if !l.associated {
            continue;
        }
        *used = true;
        if let Some((key, name)) = &l.cluster {
            clusters.add_named(key, name, &e.0, e.1.connect_timeout_ms);
        }
        taken.push(l);
    }
    taken
}

/// Orders and groups the Mappings a Host takes ([`lower_host`]).
pub(super) fn prepare<'a>(
    taken: &'a [Lowered],
    module: &AmbassadorModule,
    services: (bool, Option<String>),
    host: &EffectiveHost,
    diagnostics: &mut Vec<Diagnostic>,
) -> Prepared<'a, Lowered> {
    let (mut candidates, shadows, needs) = split(taken);
    candidates.sort_by(route_order);
    group(candidates, shadows, needs, module.clone(), services, host, diagnostics)
}

/// A Host's Mappings as route candidates and shadows, in the given order; and what the
/// candidates' own policies need of the listener's filters.
pub(in crate::ir::lower) fn split<'a, L: Holds + 'a>(
    taken: impl IntoIterator<Item = &'a L>,
) -> (Vec<Candidate<'a, L>>, Vec<Candidate<'a, L>>, Needs) {
    let (mut candidates, mut shadows, mut needs) = (Vec::new(), Vec::new(), Needs::default());
    for held in taken {
        let c = Candidate::of(held);
        if c.m.shadow {
            shadows.push(c);
        } else {
            needs = needs.or(Needs::of(c.m));
            candidates.push(c);
        }
    }
    (candidates, shadows, needs)
}

/// Groups a Host's candidates (in route order): canary groups, their thresholds, and what a
/// higher precedence shadows.
pub(in crate::ir::lower) fn group<'a, L: Holds>(
    candidates: Vec<Candidate<'a, L>>,
    shadows: Vec<Candidate<'a, L>>,
    needs: Needs,
    module: AmbassadorModule,
    (has_auth, rate_limit_domain): (bool, Option<String>),
    host: &EffectiveHost,
    diagnostics: &mut Vec<Diagnostic>,
) -> Prepared<'a, L> {
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
        while end < candidates.len() && candidates[start].same_match(&candidates[end]) {
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
        needs,
        candidates,
        shadows,
        thresholds,
        group_of,
        module,
        has_auth,
        rate_limit_domain,
    }
}

/// Emits a prepared Host's routes for one security model; `route` builds one (the plain
/// lowering: [`Prepared::build_route`]; the incremental one also keeps it for next time).
/// Also says what the routes need of the listener's filters (known without visiting every
/// route).
pub(in crate::ir::lower) fn emit<'a, L: Holds>(
    p: &Prepared<'a, L>,
    model: SecurityModel,
    host: &EffectiveHost,
    route: &mut impl FnMut(&Candidate<'a, L>, RouteSlot) -> Arc<Route>,
) -> (Vec<Arc<Route>>, Needs) {
    let Prepared {
        candidates,
        shadows,
        thresholds,
        group_of,
        ..
    } = p;
    // Each Mapping gives a primary route (secure, or for every request) and maybe a cleartext
    // variant; in a canary group all primaries come first, then the variants, so that each kind
    // of request meets the group's thresholds in order.
    let (primary, after_group) = variants(model, host.insecure_action);
    let mut routes = Vec::with_capacity(candidates.len() * 2);
    let mut after: Vec<Arc<Route>> = Vec::new();
    for (i, (c, threshold)) in candidates.iter().zip(thresholds.iter().copied()).enumerate() {
        if i > 0 && group_of[i] != group_of[i - 1] {
            routes.append(&mut after);
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
        let mut slot = |variant: Variant| {
            route(
                c,
                RouteSlot {
                    variant,
                    threshold,
                    mirrors: mirrors.clone(),
                },
            )
        };
        if let Some(v) = primary {
            routes.push(slot(v));
        }
        if let Some(v) = after_group {
            after.push(slot(v));
        }
    }
    routes.append(&mut after);
    let needs = p.route_needs(!routes.is_empty());
    (routes, needs)
}

/// One route of a Mapping.
fn build_route<L: Holds>(
    c: &Candidate<'_, L>,
    slot: RouteSlot,
    module: &AmbassadorModule,
    has_auth: bool,
    rate_limit_domain: Option<&str>,
) -> Route {
    let RouteSlot {
        variant,
        threshold,
        mirrors,
    } = slot;
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
        redirect: c.m.redirect.clone(),
        regex_rewrite: c.m.regex_rewrite.clone(),
        auto_host_rewrite: c.m.auto_host_rewrite,
        upgrades: c.m.allow_upgrade.clone(),
        retry_policy: c
            .m
            .retry_policy
            .clone()
            .or_else(|| module.retry_policy.clone().map(Box::new)),
        mirrors,
        cors: c.m.cors.clone().or_else(|| module.cors.clone().map(Box::new)),
        ip_policy: c.m.ip_policy.clone(),
        rate_limits: rate_limit_domain.map_or_else(Vec::new, |domain| rate_limits(c.m, module, domain)),
        error_responses: c.m.error_responses.clone(),
        bypass_error_responses: c.m.bypass_error_responses,
        priority: c.m.priority,
        envoy_override: c.m.envoy_override.clone(),
        auth: (has_auth && (c.m.bypass_auth || !c.m.auth_context_extensions.is_empty())).then(|| {
            crate::ir::RouteAuth {
                bypass: c.m.bypass_auth,
                context_extensions: c.m.auth_context_extensions.clone(),
            }
        }),
        hash_policy: if c.m.load_balancer_set {
            c.m.hash_policy.clone()
        } else {
            module.load_balancer.as_ref().and_then(|(_, h)| h.clone().map(Box::new))
        },
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
            let mut h = match (
                &module.mapping_defaults.add_request_headers,
                c.m.own_headers.add_request,
            ) {
                (Some(d), false) => d.clone(),
                _ => c.m.add_request_headers.clone(),
            };
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
        // The Module's `defaults` for the lists the Mapping does not set.
        response_headers_to_add: match (
            &module.mapping_defaults.add_response_headers,
            c.m.own_headers.add_response,
        ) {
            (Some(d), false) => d.clone(),
            _ => c.m.add_response_headers.clone(),
        },
        request_headers_to_remove: match (
            &module.mapping_defaults.remove_request_headers,
            c.m.own_headers.remove_request,
        ) {
            (Some(d), false) => d.clone(),
            _ => c.m.remove_request_headers.clone(),
        },
        response_headers_to_remove: match (
            &module.mapping_defaults.remove_response_headers,
            c.m.own_headers.remove_response,
        ) {
            (Some(d), false) => d.clone(),
            _ => c.m.remove_response_headers.clone(),
        },
        source: Some(source_of(c.meta)),
    };
    match variant {
        Variant::Base => {}
        Variant::Secure => {
            r.headers.push(HeaderMatch {
                name: "x-forwarded-proto".into(),
                kind: MatchKind::Exact,
                value: "https".into(),
                ignore_case: false,
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

/// A route's rate limits: the Mapping's label groups of the service's `domain`, each after the
/// Module's default labels of that domain; a Mapping without labels gets the Module's default
/// labels alone when `domain` is the Module's default domain (Emissary's rules). Groups without
/// actions are left out.
fn rate_limits(
    m: &Mapping,
    module: &AmbassadorModule,
    domain: &str,
) -> Vec<Vec<crate::resource::mapping::RateLimitAction>> {
    let defaults = module.default_labels.get(domain).map(Vec::as_slice).unwrap_or_default();
    let groups: Vec<Vec<_>> = if m.labels.is_empty() {
        if domain == module.default_label_domain {
            vec![defaults.to_vec()]
        } else {
            Vec::new()
        }
    } else {
        m.labels
            .get(domain)
            .map(|groups| {
                groups
                    .iter()
                    .map(|g| defaults.iter().chain(g).cloned().collect())
                    .collect()
            })
            .unwrap_or_default()
    };
    groups.into_iter().filter(|g| !g.is_empty()).collect()
}

/// What lowering reports about single Mappings, with each Mapping's address: unknown resolvers,
/// and rate limit labels of domains the RateLimitService does not ask (Envoy's filter asks one
/// domain; Emissary ignores them silently).
pub(in crate::ir::lower) fn per_mapping_diagnostics(
    resolvers: &Resolvers,
    mappings: &[Arc<(Meta, Mapping)>],
    rate_limit_domain: Option<&str>,
) -> Vec<(usize, Diagnostic)> {
    let mut out = resolvers.unknown(mappings);
    if let Some(domain) = rate_limit_domain {
        for e in mappings {
            let (meta, m) = &**e;
            for other in m.labels.keys().filter(|d| d.as_str() != domain) {
                out.push((
                    addr(e),
                    Diagnostic::warning(
                        "mapping.ignored_labels",
                        format!("rate limit labels of domain `{other}` are not used: the RateLimitService's domain is `{domain}`"),
                    )
                    .at(meta.origin.clone())
                    .on(meta.object_ref())
                    .path(format!("spec.labels.{other}"))
                    .hint("Envoy's rate limit filter asks one domain: put the labels under the RateLimitService's domain, or change its `domain`"),
                ));
            }
        }
    }
    out
}

/// Warns about Mappings that no Host serves, with each Mapping's address.
/// `used[i]`: whether `set.mappings[i]` went to some Host.
pub(in crate::ir::lower) fn report_unused(set: &ResourceSet, used: &[bool]) -> Vec<(usize, Diagnostic)> {
    set.mappings
        .iter()
        .zip(used)
        .filter(|(_, used)| !**used)
        .map(|(e, _)| (addr(e), no_host(&e.0, &e.1)))
        .collect()
}

/// The warning for a Mapping no Host serves.
pub(in crate::ir::lower) fn no_host(meta: &Meta, m: &Mapping) -> Diagnostic {
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
