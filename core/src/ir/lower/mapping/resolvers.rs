//! Resolvers: the built-in ones, the declared KubernetesServiceResolvers and
//! KubernetesEndpointResolvers, and the Module's default; which one a Mapping's service goes
//! through (DNS, or EDS from EndpointSlices). Reports names that do not exist, once.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::resource::{Mapping, Meta, ResourceSet};

use super::super::LowerOptions;
use super::addr;
use crate::resource::resolver::{Resolver, BUILT_IN};

/// Resolver names in effect: the built-in ones, the declared ones, and the Module's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub(in crate::ir::lower) struct Resolvers {
    pub(in crate::ir::lower) declared: BTreeMap<String, Resolver>,
    pub(in crate::ir::lower) default: Option<String>,
    pub(in crate::ir::lower) ambassador_namespace: String,
}

impl Resolvers {
    /// The resolvers of `set`; a Mapping or Module naming one that does not exist is reported
    /// (once, here) and resolves by DNS.
    pub(in crate::ir::lower) fn new(
        set: &ResourceSet,
        options: &LowerOptions,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Resolvers {
        let mut declared = BTreeMap::new();
        for (meta, r) in &set.resolvers {
            declared.entry(meta.name.clone()).or_insert(*r);
        }
        let resolvers = Resolvers {
            declared,
            default: set.module.as_ref().and_then(|(_, m)| m.resolver.clone()),
            ambassador_namespace: options.ambassador_namespace.clone(),
        };
        let unknown = |name: &str| resolvers.kind(name).is_none();
        let hint = "declare a KubernetesEndpointResolver or KubernetesServiceResolver with this name, or use the built-in `kubernetes-endpoint` or `kubernetes-service`";
        if let (Some((meta, _)), Some(name)) = (&set.module, &resolvers.default) {
            if unknown(name) {
                diagnostics.push(
                    Diagnostic::error(
                        "module.unknown_resolver",
                        format!("resolver `{name}` does not exist: Mappings resolve their services by DNS"),
                    )
                    .at(meta.origin.clone())
                    .on(meta.object_ref())
                    .path("spec.config.resolver")
                    .hint(hint),
                );
            }
        }
        resolvers
    }

    /// Reports the Mappings that name a resolver that does not exist, with each Mapping's
    /// address.
    pub(in crate::ir::lower) fn unknown<'m>(
        &self,
        mappings: impl IntoIterator<Item = &'m Arc<(Meta, Mapping)>>,
    ) -> Vec<(usize, Diagnostic)> {
        let hint = "declare a KubernetesEndpointResolver or KubernetesServiceResolver with this name, or use the built-in `kubernetes-endpoint` or `kubernetes-service`";
        mappings
            .into_iter()
            .filter_map(|e| {
                let (meta, m) = &**e;
                let name = m.resolver.as_deref().filter(|n| self.kind(n).is_none())?;
                Some((
                    addr(e),
                    Diagnostic::error(
                        "mapping.unknown_resolver",
                        format!(
                            "resolver `{name}` does not exist: `{}` is resolved by DNS",
                            m.service_text
                        ),
                    )
                    .at(meta.origin.clone())
                    .on(meta.object_ref())
                    .path("spec.resolver")
                    .hint(hint),
                ))
            })
            .collect()
    }

    pub(in crate::ir::lower) fn kind(&self, name: &str) -> Option<Resolver> {
        self.declared
            .get(name)
            .copied()
            .or_else(|| BUILT_IN.iter().find(|(n, _)| *n == name).map(|(_, r)| *r))
    }

    /// Whether a Mapping naming `resolver` (or none) gets its addresses over EDS.
    pub(in crate::ir::lower) fn endpoint(&self, resolver: Option<&str>) -> bool {
        resolver.or(self.default.as_deref()).and_then(|name| self.kind(name)) == Some(Resolver::Endpoint)
    }
}
