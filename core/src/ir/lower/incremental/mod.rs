//! Incremental lowering: [`lower_cached`] gives exactly what [`super::lower`] gives, from what a
//! [`LowerCache`] kept of earlier translations. Two layers:
//! - `cache`: a Mapping whose allocation is unchanged is not lowered again, its routes are the
//!   same allocations, a Host's route order is moved rather than sorted;
//! - `patch`: when only a few plain Mappings changed, what depends on every Mapping (unknown
//!   resolvers, Mappings no Host takes, clusters and their users, and a Host's route list while
//!   its grouping is simple) is patched too, not recomputed.
//!
//! Beside the plain lowering, not inside it: this module calls the stages' functions
//! (`mapping`, `host`, `listener`, `tcp` and the shared [`super::serve_hosts`]) and keeps their
//! results; it decides nothing they do not. The property tests (`tests/determinism.rs`) compare
//! its output with the plain lowering's after random edits of any field of any kind.

mod cache;
mod clusters;
mod patch;

pub use cache::LowerCache;

use crate::diagnostic::Diagnostic;
use crate::ir::Ir;
use crate::resource::ResourceSet;

use super::{any_mapping_port, assemble, mapping, serve_hosts, Closed, Frame, LowerOptions};

/// [`super::lower`], reusing what the cache kept of Mappings that did not change (the same `Arc`
/// in `set`): their matchers, clusters and routes. The output is exactly [`super::lower`]'s.
pub fn lower_cached(set: &ResourceSet, options: &LowerOptions, cache: &mut LowerCache) -> (Ir, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut frame = Frame::new(set, options, std::mem::take(&mut cache.interner), &mut diagnostics);
    cache.begin(cache::Context::new(set, options, frame.clusters.resolvers()));
    let served_hosts: Vec<&super::host::EffectiveHost> = (0..frame.hosts.len())
        .filter(|&i| frame.served(i))
        .map(|i| &frame.hosts[i])
        .collect();
    match patch::delta(set, options, frame.clusters.resolvers(), cache) {
        Some(delta) => {
            cache.patched = true;
            let mut delta = delta;
            let (resolver_diagnostics, mapping_port) =
                patch::unknown_resolvers_and_ports(set, &delta, frame.clusters.resolvers(), cache);
            diagnostics.extend(resolver_diagnostics.into_iter().map(|(_, d)| d));
            patch::refresh(&mut delta, &served_hosts, options, &mut frame.clusters, cache);
            drop(served_hosts);
            let prepared: Vec<_> = (0..frame.hosts.len())
                .map(|i| {
                    frame
                        .served(i)
                        .then(|| cache::prepare_patched(set, &frame.hosts[i], cache, &mut diagnostics))
                })
                .collect();
            let route_configs = serve_prepared(&mut frame, mapping_port, &prepared, cache.generation, &mut diagnostics);
            let simple: Vec<Option<Option<i32>>> = prepared
                .iter()
                .map(|p| p.as_ref().map(cache::HostRoutes::simple))
                .collect();
            drop(prepared);
            for (h, simple) in frame.hosts.iter().zip(simple) {
                if let Some(simple) = simple {
                    cache.keep_simple(h, simple);
                }
            }
            let Closed {
                listeners,
                mut secrets,
                clusters,
            } = frame.close(set, options, &mut diagnostics);
            let (clusters, endpoints) = patch::finish(delta, set, clusters, &mut secrets, cache, &mut diagnostics);
            (
                assemble(listeners, route_configs, clusters, endpoints, secrets),
                diagnostics,
            )
        }
        None => {
            cache.patched = false;
            let resolver_diagnostics = mapping::per_mapping_diagnostics(
                frame.clusters.resolvers(),
                &set.mappings,
                mapping::rate_limit_domain(set).as_deref(),
            );
            let mapping_port = any_mapping_port(set);
            diagnostics.extend(resolver_diagnostics.iter().map(|(_, d)| d.clone()));
            for h in &served_hosts {
                cache::refresh(set, h, options, &mut frame.clusters, cache);
            }
            drop(served_hosts);
            let mut used = vec![false; set.mappings.len()];
            let served: Vec<bool> = (0..frame.hosts.len()).map(|i| frame.served(i)).collect();
            let prepared: Vec<_> = (0..frame.hosts.len())
                .map(|i| {
                    served[i].then(|| {
                        cache::prepare(
                            set,
                            &frame.hosts[i],
                            cache,
                            &mut frame.clusters,
                            &mut used,
                            &mut diagnostics,
                        )
                    })
                })
                .collect();
            let route_configs = serve_prepared(&mut frame, mapping_port, &prepared, cache.generation, &mut diagnostics);
            let kept: Vec<_> = prepared.iter().map(|p| p.as_ref().map(cache::Kept::of)).collect();
            drop(prepared);
            for (h, kept) in frame.hosts.iter().zip(kept) {
                if let Some(kept) = kept {
                    cache.keep_order(h, kept);
                }
            }
            cache.end();
            let unused = mapping::report_unused(set, &used);
            let Closed {
                listeners,
                mut secrets,
                clusters,
            } = frame.close(set, options, &mut diagnostics);
            let mut cluster_diagnostics = Vec::new();
            let (finished, interner) = clusters::finish_reusing(
                clusters,
                set,
                &mut secrets,
                &mut cache.clusters,
                &mut cache.cluster_list,
                &mut cluster_diagnostics,
            );
            cache.interner = interner;
            cache.interner.prune();
            diagnostics.extend(unused.iter().map(|(_, d)| d.clone()));
            diagnostics.extend(cluster_diagnostics.iter().cloned());
            patch::remember(
                cache,
                set,
                options,
                (resolver_diagnostics, mapping_port),
                unused,
                cluster_diagnostics,
                finished.client_secrets,
                finished.endpoints.clone(),
            );
            let ir = assemble(listeners, route_configs, finished.clusters, finished.endpoints, secrets);
            (ir, diagnostics)
        }
    }
}

/// [`serve_hosts`] with the routes of the prepared Hosts, from the cache's entries.
fn serve_prepared(
    frame: &mut Frame<'_>,
    mapping_port: bool,
    prepared: &[Option<cache::HostRoutes<'_>>],
    generation: u64,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<crate::ir::RouteConfig> {
    serve_hosts(
        frame,
        mapping_port,
        |i, host, model| {
            prepared[i]
                .as_ref()
                .map(|p| p.routes(model, host, generation))
                .unwrap_or_default()
        },
        diagnostics,
    )
}
