//! Patching the last lowering when only a few Mappings changed: the common change (a Mapping
//! added, edited or deleted) then costs what it touches, not a walk over every Mapping.
//!
//! [`delta`] compares the resource set with the last one: everything but the Mappings must be
//! equal, and the Mappings that changed (found by address, both lists being sorted by namespace
//! and name) must be few and *plain*: no shadow, no CORS or IP policy, no error responses of their
//! own, no port in their hostname, no
//! connect timeout, no TLSContext and no endpoint resolver. Those would change what other
//! Mappings, the Listeners or a cluster's settings get; a change that has them is lowered in full.
//! A patch then
//! - lowers the added Mappings on each served Host and moves the Host's route order by the
//!   removed and added ones ([`refresh`], which records those edits), so that
//!   [`super::cache::prepare_patched`] finds the Host's candidates in order; when the Host's
//!   grouping was and stays simple (one precedence, no shadow, every Mapping a canary group of
//!   its own: the Mappings that came match other requests than their neighbours), the last
//!   translation's route list of each security model is edited the same way and nothing walks
//!   the candidates; otherwise canary groups and their diagnostics are computed over all of
//!   them (a walk over pointers) and the routes emitted again;
//! - updates the clusters the changed Mappings use, and their users ([`finish`]); the other
//!   clusters, endpoints, client certificates and cluster diagnostics are the last ones.
//!
//! Must not change output: a patched translation gives exactly what a full one gives (the
//! property tests in `tests/determinism.rs` compare them over random edits).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::ir::{Cluster, SourceRef};
use crate::resource::{Mapping, Meta, ResourceSet};

use super::super::host::EffectiveHost;
use super::super::mapping::{
    addr, cluster_node, lower_one, no_host, route_order, Candidate, ClusterKey, Clusters, Resolvers,
    DEFAULT_CONNECT_TIMEOUT_MS,
};
use super::super::{has_port, source_of, LowerOptions};
use super::cache::{Edit, Entry, HostContext, HostEntries, Last, LowerCache};
use super::clusters::BuiltCluster;

/// Above this many changed Mappings, a translation is done in full.
const MAX_PATCHED: usize = 64;

/// Remembers a full lowering, so that the next one may patch it.
#[allow(clippy::too_many_arguments)]
pub(super) fn remember(
    cache: &mut LowerCache,
    set: &ResourceSet,
    options: &LowerOptions,
    (unknown_resolvers, mapping_port): (Vec<(usize, Diagnostic)>, bool),
    unused: Vec<(usize, Diagnostic)>,
    cluster_diagnostics: Vec<Diagnostic>,
    client_secrets: Vec<crate::ir::Secret>,
    endpoints: Vec<crate::ir::Endpoints>,
) {
    let rest = match cache.last.take() {
        // Usually the same as last time: no copy then.
        Some(last) if set.same_except_mappings(&last.rest) => last.rest,
        _ => set.without_mappings(),
    };
    cache.last = Some(Last {
        options: options.clone(),
        rest,
        mappings: set.mappings.clone(),
        unused,
        unknown_resolvers,
        mapping_port,
        cluster_diagnostics,
        client_secrets,
        endpoints,
    });
}

/// The Mappings that changed since the last translation, which this one patches.
pub(super) struct Delta {
    removed: Vec<Arc<(Meta, Mapping)>>,
    added: Vec<Arc<(Meta, Mapping)>>,
    /// The cache's entries of the served Hosts, by index (found by [`refresh`]).
    hosts: Vec<usize>,
    /// How the changed Mappings use clusters (filled by [`refresh`]).
    uses: Vec<ClusterUse>,
    /// Whether each added Mapping goes to some served Host (filled by [`refresh`]).
    added_used: Vec<bool>,
}

/// A changed Mapping as a user of a cluster.
struct ClusterUse {
    key: Arc<ClusterKey>,
    name: Arc<str>,
    user: SourceRef,
    added: bool,
}

/// Whether a changed Mapping goes to some served Host, and its cluster.
#[derive(Clone, Default)]
struct Found {
    used: bool,
    cluster: Option<(Arc<ClusterKey>, Arc<str>)>,
}

/// A Mapping whose change touches only its own routes and its cluster's users.
fn plain(m: &Mapping, resolvers: &Resolvers) -> bool {
    !m.shadow
        && m.cors.is_none()
        && m.ip_policy.is_none()
        && m.error_responses.is_empty()
        && m.connect_timeout_ms.is_none()
        && m.cluster.tls_context.is_none()
        && !m.hostname.iter().chain(&m.host).any(|h| has_port(h))
        && (m.service.is_ip || !resolvers.endpoint(m.resolver.as_deref()))
}

/// The Mappings that changed since the last translation, if this one can patch it (see the
/// module's documentation); `None` means a full lowering.
pub(super) fn delta(
    set: &ResourceSet,
    options: &LowerOptions,
    resolvers: &Resolvers,
    cache: &LowerCache,
) -> Option<Delta> {
    let last = cache.last.as_ref()?;
    if last.options != *options || !set.same_except_mappings(&last.rest) {
        return None;
    }
    // Both lists are sorted by namespace and name; an unchanged Mapping is the same allocation.
    let (old, new) = (&last.mappings, &set.mappings);
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {
                i += 1;
                j += 1;
                continue;
            }
            (Some(a), Some(b)) => match (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)) {
                std::cmp::Ordering::Less => {
                    removed.push(Arc::clone(a));
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    added.push(Arc::clone(b));
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    removed.push(Arc::clone(a));
                    added.push(Arc::clone(b));
                    i += 1;
                    j += 1;
                }
            },
            (Some(a), None) => {
                removed.push(Arc::clone(a));
                i += 1;
            }
            (None, Some(b)) => {
                added.push(Arc::clone(b));
                j += 1;
            }
            (None, None) => break,
        }
        if removed.len() + added.len() > MAX_PATCHED {
            return None;
        }
    }
    if !removed.iter().chain(&added).all(|e| plain(&e.1, resolvers)) {
        return None;
    }
    Some(Delta {
        removed,
        added,
        hosts: Vec::new(),
        uses: Vec::new(),
        added_used: Vec::new(),
    })
}

/// The `mapping.unknown_resolver` errors (the last translation's, for the Mappings that did not
/// change) and whether some Mapping's hostname has a port (as last time: a plain Mapping has
/// none), without a walk over every Mapping.
pub(super) fn unknown_resolvers_and_ports(
    set: &ResourceSet,
    delta: &Delta,
    resolvers: &Resolvers,
    cache: &mut LowerCache,
) -> (Vec<(usize, Diagnostic)>, bool) {
    let Some(last) = cache.last.as_mut() else {
        return (Vec::new(), false);
    };
    last.unknown_resolvers
        .retain(|(a, _)| !delta.removed.iter().any(|r| addr(r) == *a));
    let domain = super::super::mapping::rate_limit_domain(set);
    last.unknown_resolvers
        .extend(super::super::mapping::per_mapping_diagnostics(
            resolvers,
            &delta.added,
            domain.as_deref(),
        ));
    (last.unknown_resolvers.clone(), last.mapping_port)
}

/// [`super::cache::refresh`] for a patched translation: the removed Mappings leave each served Host's
/// entries and route order, the added ones are lowered and placed.
pub(super) fn refresh(
    delta: &mut Delta,
    served: &[&EffectiveHost],
    options: &LowerOptions,
    clusters: &mut Clusters,
    cache: &mut LowerCache,
) {
    let generation = cache.generation;
    let module = cache.module();
    let mut removed_uses: Vec<Found> = vec![Found::default(); delta.removed.len()];
    let mut added_uses: Vec<Found> = vec![Found::default(); delta.added.len()];
    // A Host that took no Mapping last time has no entries yet.
    delta.hosts = served
        .iter()
        .map(|h| {
            let ctx = HostContext::of(h);
            cache.hosts.iter().position(|e| e.ctx == ctx).unwrap_or_else(|| {
                cache.hosts.push(HostEntries::new(ctx, 0));
                cache.hosts.len() - 1
            })
        })
        .collect();
    // Hosts with the same context (one hostname in two namespaces, each on its own Listener)
    // share their entries and route order: each is brought up to date once.
    let mut done = std::collections::BTreeSet::new();
    for (&index, host) in delta.hosts.iter().zip(served) {
        if !done.insert(index) {
            continue;
        }
        let h = &mut cache.hosts[index];
        h.edits.clear();
        h.edited = generation;
        for (r, used) in delta.removed.iter().zip(&mut removed_uses) {
            let Some(old) = h.entries.remove(&addr(r)) else {
                continue;
            };
            if !old.lowered.associated {
                continue;
            }
            used.cluster.clone_from(&old.lowered.cluster);
            let at = {
                let target = Candidate::of(&old);
                let p = h
                    .order
                    .partition_point(|x| route_order(&Candidate::of(x), &target).is_lt());
                if h.order.get(p).is_some_and(|x| Arc::ptr_eq(x, &old)) {
                    Some(p)
                } else {
                    h.order.iter().position(|x| Arc::ptr_eq(x, &old))
                }
            };
            if let Some(at) = at {
                h.order.remove(at);
                h.edits.push(Edit::Remove(at));
            }
        }
        for (a, used) in delta.added.iter().zip(&mut added_uses) {
            let new = Entry::new(
                lower_one(a, host, options, &clusters.resolvers, &mut clusters.interner, &module),
                generation,
            );
            h.entries.insert(addr(a), Arc::clone(&new));
            if !new.lowered.associated {
                continue;
            }
            used.used = true;
            used.cluster.clone_from(&new.lowered.cluster);
            let p = {
                let target = Candidate::of(&new);
                h.order
                    .partition_point(|x| route_order(&Candidate::of(x), &target).is_lt())
            };
            h.order.insert(p, Arc::clone(&new));
            h.edits.push(Edit::Insert(p, new));
        }
        // The grouping stays simple when every Mapping that came has the others' precedence and
        // matches other requests than its neighbours (one that left cannot join two: they would
        // have matched its requests too, sorted around it).
        if let Some(precedence) = h.simple {
            let alone = h.edits.iter().all(|e| match e {
                Edit::Remove(_) => true,
                Edit::Insert(_, entry) => {
                    Candidate::of(entry).precedence() == precedence && alone_in_order(&h.order, entry)
                }
            });
            if !alone {
                h.simple = None;
            }
        }
    }
    let hosts = delta.hosts.len();
    let unchanged = cache.last.as_ref().map_or(0, |l| l.mappings.len()) - delta.removed.len();
    cache.stats = (unchanged * hosts, delta.added.len() * hosts);
    delta.added_used = added_uses.iter().map(|f| f.used).collect();
    let uses = |list: &[Arc<(Meta, Mapping)>], found: Vec<Found>, added: bool| {
        list.iter()
            .zip(found)
            .filter_map(move |(m, found)| {
                let (key, name) = found.cluster?;
                Some(ClusterUse {
                    key,
                    name,
                    user: source_of(&m.0),
                    added,
                })
            })
            .collect::<Vec<_>>()
    };
    delta.uses = uses(&delta.removed, removed_uses, false);
    delta.uses.extend(uses(&delta.added, added_uses, true));
}

/// Whether `entry`, in `order`, matches other requests than its neighbours.
fn alone_in_order(order: &[Arc<Entry>], entry: &Arc<Entry>) -> bool {
    let target = Candidate::of(entry);
    let p = order.partition_point(|x| route_order(&Candidate::of(x), &target).is_lt());
    let at = if order.get(p).is_some_and(|x| Arc::ptr_eq(x, entry)) {
        Some(p)
    } else {
        order.iter().position(|x| Arc::ptr_eq(x, entry))
    };
    let Some(at) = at else { return false };
    let before = at.checked_sub(1).and_then(|i| order.get(i));
    let after = order.get(at + 1);
    !before
        .into_iter()
        .chain(after)
        .any(|n| Candidate::of(n).same_match(&target))
}

/// [`Clusters::finish`] for a patched translation: the clusters the changed Mappings use are
/// updated (users, and the cluster itself when it is new or has none left); the others, the
/// endpoints, client certificates and cluster diagnostics are the last translation's. Also
/// reports Mappings no Host takes, and remembers this translation for the next one.
pub(super) fn finish(
    delta: Delta,
    set: &ResourceSet,
    clusters: Clusters,
    secrets: &mut BTreeMap<String, crate::ir::Secret>,
    cache: &mut LowerCache,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Vec<Arc<Cluster>>, Vec<crate::ir::Endpoints>) {
    cache.interner = clusters.into_parts().1;
    let Delta {
        removed,
        added,
        uses,
        added_used,
        hosts: _,
    } = delta;
    let mut touched: Vec<(Arc<ClusterKey>, Arc<str>)> = Vec::new();
    for u in &uses {
        if !touched.iter().any(|(k, _)| Arc::ptr_eq(k, &u.key)) {
            touched.push((Arc::clone(&u.key), Arc::clone(&u.name)));
        }
    }
    for (key, name) in &touched {
        let address = Arc::as_ptr(key) as usize;
        let previous = cache.clusters.remove(&address);
        let mut users = previous.as_ref().map_or(Vec::new(), |b| b.users.clone());
        // Removals first: an edited Mapping leaves and comes back.
        for u in uses.iter().filter(|u| Arc::ptr_eq(&u.key, key) && !u.added) {
            users.retain(|x| x.object != u.user.object);
        }
        for u in uses.iter().filter(|u| Arc::ptr_eq(&u.key, key) && u.added) {
            if !users.iter().any(|x| x.object == u.user.object) {
                let p = users.partition_point(|x| x < &u.user);
                users.insert(p, u.user.clone());
            }
        }
        let at = cache
            .cluster_list
            .binary_search_by(|(k, c)| c.name.as_str().cmp(name).then_with(|| (**k).cmp(key)));
        if users.is_empty() {
            // No user left.
            if let (Some(_), Ok(p)) = (&previous, at) {
                cache.cluster_list.remove(p);
            }
            continue;
        }
        let (connect_timeout_ms, upstream_tls) = previous.as_ref().map_or((DEFAULT_CONNECT_TIMEOUT_MS, None), |b| {
            (b.connect_timeout_ms, b.upstream_tls.clone())
        });
        let cluster = match &previous {
            Some(b) if b.users == users => Arc::clone(&b.cluster),
            _ => Arc::new(cluster_node(
                key,
                name,
                connect_timeout_ms,
                upstream_tls.clone(),
                &users,
            )),
        };
        match at {
            Ok(p) => cache.cluster_list[p].1 = Arc::clone(&cluster),
            Err(p) => cache.cluster_list.insert(p, (Arc::clone(key), Arc::clone(&cluster))),
        }
        cache.clusters.insert(
            address,
            BuiltCluster {
                key: Arc::clone(key),
                users,
                connect_timeout_ms,
                upstream_tls,
                cluster,
            },
        );
    }
    drop(uses);
    for (key, _) in touched {
        cache.interner.release(key);
    }
    let Some(last) = cache.last.as_mut() else {
        return (Vec::new(), Vec::new());
    };
    last.unused.retain(|(a, _)| !removed.iter().any(|r| addr(r) == *a));
    for (a, used) in added.iter().zip(&added_used) {
        if !used {
            last.unused.push((addr(a), no_host(&a.0, &a.1)));
        }
    }
    diagnostics.extend(last.unused.iter().map(|(_, d)| d.clone()));
    diagnostics.extend(last.cluster_diagnostics.iter().cloned());
    for s in &last.client_secrets {
        secrets.entry(s.name.clone()).or_insert_with(|| s.clone());
    }
    // The last Mappings become this set's: moved in and out, not copied.
    if !crate::resource::move_mappings(&mut last.mappings, &removed, &added)
        || last.mappings.len() != set.mappings.len()
    {
        last.mappings.clone_from(&set.mappings);
    }
    let clusters = cache.cluster_list.iter().map(|(_, c)| Arc::clone(c)).collect();
    (clusters, last.endpoints.clone())
}
