//! Finishing the clusters when the last translation's are at hand: a cluster whose key, users
//! and settings did not change is the same allocation again (rendering recognises it by
//! address), and the order of the last translation's clusters is kept, only new ones placed.
//! Gives exactly what [`Clusters::finish`] gives.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::ir::{Cluster, SourceRef};
use crate::resource::ResourceSet;

use super::super::mapping::{cluster_node, name_order, same_users, settle, ClusterKey, Clusters, Finished, Interner};
use super::super::source_of;

/// A cluster of the last translation, with what it was built from.
#[derive(Debug)]
pub(super) struct BuiltCluster {
    pub(super) key: Arc<ClusterKey>,
    /// Its users, in the order of their [`SourceRef`]s.
    pub(super) users: Vec<SourceRef>,
    pub(super) connect_timeout_ms: u64,
    pub(super) upstream_tls: Option<crate::ir::UpstreamTls>,
    pub(super) cluster: Arc<Cluster>,
}

/// [`Clusters::finish`], reusing `built` (the last translation's clusters by the address of
/// their interned keys) and `list` (them in name order); both are updated to this translation's.
/// Returns the interner too.
pub(super) fn finish_reusing(
    clusters: Clusters<'_>,
    set: &ResourceSet,
    secrets: &mut BTreeMap<String, crate::ir::Secret>,
    built: &mut crate::keyed::AddrMap<BuiltCluster>,
    list: &mut Vec<(Arc<ClusterKey>, Arc<Cluster>)>,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Finished, Interner) {
    let (uses, interner, resolvers) = clusters.into_parts();
    let mut previous = std::mem::take(built);
    // The last translation's clusters keep their order (a key it had is still the same
    // allocation, as `previous` holds it), only new ones are placed.
    let order: Vec<usize> = list.iter().map(|(k, _)| Arc::as_ptr(k) as usize).collect();
    let uses = crate::keyed::sort_incrementally(
        uses,
        &order,
        |u| Some(Arc::as_ptr(&u.key) as usize).filter(|a| previous.contains_key(a)),
        name_order,
    );
    let mut finished = Finished::default();
    let mut keys = Vec::with_capacity(uses.len());
    for u in uses {
        let s = settle(
            u,
            set,
            &resolvers.ambassador_namespace,
            secrets,
            &mut finished,
            diagnostics,
        );
        let address = Arc::as_ptr(&s.key) as usize;
        keys.push(Arc::clone(&s.key));
        let reused = previous.remove(&address).filter(|b| {
            Arc::ptr_eq(&b.key, &s.key)
                && same_users(&b.users, &s.users)
                && b.connect_timeout_ms == s.connect_timeout_ms
                && b.upstream_tls == s.upstream_tls
        });
        let cluster = match reused {
            Some(b) => {
                let cluster = Arc::clone(&b.cluster);
                built.insert(address, b);
                cluster
            }
            None => {
                let users: Vec<SourceRef> = s.users.iter().map(|m| source_of(m)).collect();
                let cluster = Arc::new(cluster_node(
                    &s.key,
                    &s.name,
                    s.connect_timeout_ms,
                    s.upstream_tls.clone(),
                    &users,
                ));
                built.insert(
                    address,
                    BuiltCluster {
                        key: s.key,
                        users,
                        connect_timeout_ms: s.connect_timeout_ms,
                        upstream_tls: s.upstream_tls,
                        cluster: Arc::clone(&cluster),
                    },
                );
                cluster
            }
        };
        finished.clusters.push(cluster);
    }
    *list = keys.into_iter().zip(finished.clusters.iter().cloned()).collect();
    finished.endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    (finished, interner)
}
