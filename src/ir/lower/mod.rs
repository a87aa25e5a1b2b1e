//! Lowering: typed resources → IR, one file per resource kind.
//!
//! Never fails as a whole: conflicts (two Listeners on one port, two Hosts with one hostname) and
//! dangling associations (a Mapping no Host takes) are diagnostics, and the rest is lowered.
//! Output order depends only on content (names, ports, precedence), never on input order.

mod host;
mod listener;
mod mapping;

use crate::diagnostic::Diagnostic;
use crate::resource::ResourceSet;

use super::{FilterChain, Ir, RouteConfig, SourceRef};

/// Options that change lowering.
#[derive(Clone, Debug)]
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

/// Lowers a resource set into the IR.
pub fn lower(set: &ResourceSet, options: &LowerOptions) -> (Ir, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut listeners = listener::lower(set, &mut diagnostics);
    let mut secrets = std::collections::BTreeMap::new();
    let hosts = host::effective_hosts(set, &mut secrets, &mut diagnostics);
    let mut clusters = mapping::Clusters::default();
    let mut used_mappings = std::collections::BTreeSet::new();
    let mut route_configs = Vec::new();
    for l in &mut listeners {
        let bound = host::bound_to(l, &hosts, &mut diagnostics);
        let mut virtual_hosts = Vec::new();
        let mut chains = vec![FilterChain {
            name: "cleartext".to_string(),
            server_names: Vec::new(),
            secret: None,
            route_config: l.ir.route_config.clone(),
        }];
        for h in bound {
            let routes = mapping::routes_for(
                set,
                l.ir.security_model,
                h,
                options,
                &mut clusters,
                &mut used_mappings,
                &mut diagnostics,
            );
            let vh = host::virtual_host(h, routes);
            // A Host with a certificate gets its own TLS chain, selected by SNI, whose route
            // table holds only that Host (as Emissary does: no other hostname over its
            // certificate).
            if let (true, Some(secret)) = (l.terminates_tls, &h.secret) {
                let route_config = format!("{}-{}", l.ir.route_config, h.hostname);
                chains.push(FilterChain {
                    name: format!("tls-{}", h.hostname),
                    server_names: if h.hostname == "*" {
                        Vec::new()
                    } else {
                        vec![h.hostname.clone()]
                    },
                    secret: Some(secret.clone()),
                    route_config: route_config.clone(),
                });
                route_configs.push(RouteConfig {
                    name: route_config,
                    virtual_hosts: vec![vh.clone()],
                });
            }
            virtual_hosts.push(vh);
        }
        l.ir.tls = chains.len() > 1;
        l.ir.filter_chains = chains;
        virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
        route_configs.push(RouteConfig {
            name: l.ir.route_config.clone(),
            virtual_hosts,
        });
    }
    mapping::report_unused(set, &used_mappings, &mut diagnostics);
    route_configs.sort_by(|a, b| a.name.cmp(&b.name));
    let ir = Ir {
        listeners: listeners.into_iter().map(|l| l.ir).collect(),
        route_configs,
        clusters: clusters.finish(&mut diagnostics),
        secrets: secrets.into_values().collect(),
    };
    (ir, diagnostics)
}
