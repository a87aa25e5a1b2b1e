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

use super::{Ir, RouteConfig, SourceRef};

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
    let listeners = listener::lower(set, &mut diagnostics);
    let hosts = host::effective_hosts(set, &mut diagnostics);
    let mut clusters = mapping::Clusters::default();
    let mut used_mappings = std::collections::BTreeSet::new();
    let mut route_configs = Vec::new();
    for l in &listeners {
        let bound = host::bound_to(l, &hosts, &mut diagnostics);
        let mut virtual_hosts = Vec::new();
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
            virtual_hosts.push(host::virtual_host(h, routes));
        }
        virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
        route_configs.push(RouteConfig {
            name: l.ir.route_config.clone(),
            virtual_hosts,
        });
    }
    mapping::report_unused(set, &used_mappings, &mut diagnostics);
    let ir = Ir {
        listeners: listeners.into_iter().map(|l| l.ir).collect(),
        route_configs,
        clusters: clusters.finish(&mut diagnostics),
    };
    (ir, diagnostics)
}
