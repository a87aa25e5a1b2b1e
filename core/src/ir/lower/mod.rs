//! Lowering: typed resources → IR, one file per resource kind.
//!
//! Never fails as a whole: conflicts (two Listeners on one port, two Hosts with one hostname) and
//! dangling associations (a Mapping no Host takes) are diagnostics, and the rest is lowered.
//! Output order depends only on content (names, ports, precedence), never on input order.
//! [`lower_cached`] reuses what a [`LowerCache`] kept of unchanged Mappings (recognised by the
//! address of their shared `Arc`); [`lower`] is the same with an empty cache.

mod host;
mod listener;
mod mapping;
mod tcp;

use crate::diagnostic::Diagnostic;
use crate::resource::ResourceSet;

use std::collections::BTreeMap;

use super::{FilterChain, Ir, RouteConfig, SourceRef, VirtualHost};

pub use mapping::LowerCache;

/// Options that change lowering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerOptions {
    /// The namespace attache runs in: bare service names of Mappings in *other* namespaces are
    /// qualified with the Mapping's namespace (as Emissary does).
    pub ambassador_namespace: String,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            ambassador_namespace: "default".to_string(),
        }
    }
}

fn source_of(meta: &crate::resource::Meta) -> SourceRef {
    SourceRef {
        object: meta.object_ref(),
        origin: meta.origin.clone(),
    }
}

/// Whether a hostname ends with `:port`.
fn has_port(hostname: &str) -> bool {
    hostname
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The TLS server name of a hostname: without its port (SNI never carries one).
fn sni_name(hostname: &str) -> String {
    if has_port(hostname) {
        hostname.rsplit_once(':').map_or(hostname, |(h, _)| h).to_string()
    } else {
        hostname.to_string()
    }
}

/// Lowers a resource set into the IR.
pub fn lower(set: &ResourceSet, options: &LowerOptions) -> (Ir, Vec<Diagnostic>) {
    lower_cached(set, options, &mut LowerCache::default())
}

/// [`lower`], reusing what the cache kept of Mappings that did not change (the same `Arc` in
/// `set`): their matchers, clusters and routes. The output is exactly [`lower`]'s.
pub fn lower_cached(set: &ResourceSet, options: &LowerOptions, cache: &mut LowerCache) -> (Ir, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut listeners = listener::lower(set, &mut diagnostics);
    let mut secrets = BTreeMap::new();
    let hosts = host::effective_hosts(set, &mut secrets, &mut diagnostics);
    let mut clusters = mapping::Clusters::new(
        mapping::Resolvers::new(set, options, &mut diagnostics),
        std::mem::take(&mut cache.interner),
    );
    let auth = set
        .auth_service
        .as_ref()
        .map(|(meta, a)| mapping::auth_filter(&mut clusters, meta, a, options));
    // Which Hosts each Listener serves, as indices into `hosts`.
    let bound: Vec<Vec<usize>> = listeners
        .iter()
        .map(|l| {
            host::bound_to(l, &hosts, &mut diagnostics)
                .into_iter()
                .map(|h| hosts.iter().position(|x| std::ptr::eq(x, h)).unwrap_or(0))
                .collect()
        })
        .collect();
    // A Host's Mappings are gathered and grouped once, whatever the number of Listeners.
    cache.begin(mapping::Context::new(set, options, clusters.resolvers()));
    let served = |i: usize| bound.iter().any(|b| b.contains(&i));
    let served_hosts: Vec<&host::EffectiveHost> = hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| served(*i))
        .map(|(_, h)| h)
        .collect();
    // When only a few plain Mappings changed, the last translation is patched.
    let mut delta = mapping::patch::delta(set, options, clusters.resolvers(), cache);
    cache.patched = delta.is_some();
    // What depends on every Mapping: in a patch, the last translation's, brought up to date.
    let (resolver_diagnostics, mapping_port) = match &delta {
        Some(delta) => mapping::patch::unknown_resolvers_and_ports(delta, clusters.resolvers(), cache),
        None => (
            clusters.resolvers().unknown(&set.mappings),
            set.mappings
                .iter()
                .any(|e| e.1.hostname.iter().chain(&e.1.host).any(|h| has_port(h))),
        ),
    };
    diagnostics.extend(resolver_diagnostics.iter().map(|(_, d)| d.clone()));
    match &mut delta {
        Some(delta) => mapping::patch::refresh(delta, &served_hosts, options, &mut clusters, cache),
        None => {
            for h in &served_hosts {
                mapping::refresh(set, h, options, &mut clusters, cache);
            }
        }
    }
    let mut used_mappings = vec![false; if delta.is_some() { 0 } else { set.mappings.len() }];
    let prepared: Vec<Option<mapping::Prepared<'_>>> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            served(i).then(|| match delta {
                Some(_) => mapping::prepare_patched(set, h, cache, &mut diagnostics),
                None => mapping::prepare(set, h, cache, &mut clusters, &mut used_mappings, &mut diagnostics),
            })
        })
        .collect();
    let mut route_configs = Vec::new();
    // Listeners serving the same Hosts under the same security model get the same cleartext
    // route table: the first (lowest port) names it and the others share it, so that it is
    // built, rendered and sent once. (model, Hosts, table, whether it has CORS.)
    let mut tables: Vec<(super::SecurityModel, &Vec<usize>, String, bool)> = Vec::new();
    for (l, bound) in listeners.iter_mut().zip(&bound) {
        let shared = tables
            .iter()
            .find(|(model, hosts, _, _)| *model == l.ir.security_model && *hosts == bound)
            .map(|(_, _, name, cors)| (name.clone(), *cors));
        // TLS chains' tables stay the listener's own (`routes-<port>-<sni>`).
        let own_tables = l.ir.route_config.clone();
        if let Some((name, _)) = &shared {
            l.ir.route_config.clone_from(name);
        }
        let mut virtual_hosts = Vec::new();
        let mut chains = vec![FilterChain {
            name: "cleartext".to_string(),
            server_names: Vec::new(),
            secret: None,
            tls: None,
            ca_secret: None,
            route_config: l.ir.route_config.clone(),
        }];
        // TLS chains by SNI name (a hostname without its port): Hosts sharing one share the chain.
        let mut tls: BTreeMap<String, (host::HostTls, Vec<VirtualHost>)> = BTreeMap::new();
        // Envoy strips the port from `Host:` before matching, unless a Host's or Mapping's
        // hostname has a port (then hostnames are matched with it, as Emissary does).
        l.ir.strip_host_port = !bound.iter().any(|&i| has_port(&hosts[i].hostname)) && !mapping_port;
        let mut cors = false;
        for &index in bound {
            let h = &hosts[index];
            if shared.is_some() && !(l.terminates_tls && h.tls.is_some()) {
                // Only its TLS chain is this listener's own.
                continue;
            }
            let (routes, has_cors) = prepared[index]
                .as_ref()
                .map(|p| mapping::routes_for(p, l.ir.security_model, h))
                .unwrap_or_default();
            cors |= has_cors;
            let vh = host::virtual_host(h, routes);
            // A Host with a certificate gets its own TLS chain, selected by SNI, whose route
            // table holds only that Host (as Emissary does: no other hostname over its
            // certificate).
            if let (true, Some(host_tls)) = (l.terminates_tls, &h.tls) {
                let sni = sni_name(&h.hostname);
                match tls.get_mut(&sni) {
                    None => {
                        tls.insert(sni, (host_tls.clone(), vec![vh.clone()]));
                    }
                    Some((first, vhosts)) if first == host_tls => vhosts.push(vh.clone()),
                    Some((first, _)) => {
                        if let Some(src) = &h.source {
                            diagnostics.push(
                                Diagnostic::error(
                                    "host.sni_conflict",
                                    format!(
                                        "`{}` has the TLS server name `{sni}`, which another Host on {} serves with certificate `{}` or other TLS settings; this Host is served over cleartext only there",
                                        h.hostname, l.ir.name, first.secret
                                    ),
                                )
                                .at(src.origin.clone())
                                .on(src.object.clone())
                                .path("spec.tlsSecret")
                                .hint("Hosts whose hostnames differ only by port share one TLS server name: give them the same tlsSecret and TLS settings"),
                            );
                        }
                    }
                }
            }
            virtual_hosts.push(vh);
        }
        for (sni, (host_tls, mut vhosts)) in tls {
            let route_config = format!("{own_tables}-{sni}");
            vhosts.sort_by(|a, b| a.name.cmp(&b.name));
            chains.push(FilterChain {
                name: format!("tls-{sni}"),
                server_names: if sni == "*" { Vec::new() } else { vec![sni] },
                secret: Some(host_tls.secret),
                tls: Some(host_tls.settings),
                ca_secret: host_tls.ca_secret,
                route_config: route_config.clone(),
            });
            route_configs.push(RouteConfig {
                name: route_config,
                virtual_hosts: vhosts,
            });
        }
        l.ir.tls = chains.len() > 1;
        l.ir.cors = shared.as_ref().map_or(cors, |(_, cors)| *cors);
        l.ir.auth.clone_from(&auth);
        l.ir.filter_chains = chains;
        if shared.is_none() {
            tables.push((l.ir.security_model, bound, l.ir.route_config.clone(), cors));
            virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
            route_configs.push(RouteConfig {
                name: l.ir.route_config.clone(),
                virtual_hosts,
            });
        }
    }
    // A patch has moved the route orders already.
    let kept: Vec<Option<mapping::Kept>> = match delta {
        Some(_) => Vec::new(),
        None => prepared
            .iter()
            .map(|p| p.as_ref().map(mapping::Prepared::kept))
            .collect(),
    };
    drop(prepared);
    for (h, kept) in hosts.iter().zip(kept) {
        if let Some(kept) = kept {
            cache.keep_order(h, kept);
        }
    }
    let unused = match delta {
        Some(_) => Vec::new(),
        None => {
            cache.end();
            mapping::report_unused(set, &used_mappings)
        }
    };
    let http_ports: Vec<u16> = listeners.iter().map(|l| l.ir.port).collect();
    let tcp_listeners = tcp::listeners(
        set,
        &http_ports,
        &hosts,
        options,
        &mut clusters,
        &mut secrets,
        &mut diagnostics,
    );
    route_configs.sort_by(|a, b| a.name.cmp(&b.name));
    let (clusters, endpoints) = match delta {
        Some(delta) => mapping::patch::finish(delta, set, clusters, &mut secrets, cache, &mut diagnostics),
        None => {
            let mut cluster_diagnostics = Vec::new();
            let mapping::Finished {
                clusters,
                endpoints,
                client_secrets,
                interner,
            } = clusters.finish(
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
            mapping::patch::remember(
                cache,
                set,
                options,
                (resolver_diagnostics, mapping_port),
                unused,
                cluster_diagnostics,
                client_secrets,
                endpoints.clone(),
            );
            (clusters, endpoints)
        }
    };
    let ir = Ir {
        listeners: {
            let mut all: Vec<_> = listeners.into_iter().map(|l| l.ir).chain(tcp_listeners).collect();
            all.sort_by_key(|l| l.port);
            all
        },
        route_configs,
        clusters,
        endpoints,
        secrets: secrets.into_values().collect(),
    };
    (ir, diagnostics)
}
