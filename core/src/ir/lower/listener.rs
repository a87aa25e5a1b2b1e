//! Listener resources → IR listeners (one per port; a default when there are none).

use crate::diagnostic::Diagnostic;
use crate::resource::listener::{NamespaceFrom, Protocol};
use crate::resource::{LabelSelector, ResourceSet};

use super::source_of;
use crate::ir::{Listener, SecurityModel};

/// An IR listener with what host binding needs to know.
pub(super) struct Lowered {
    pub ir: Listener,
    pub namespace: String,
    pub host_namespace: NamespaceFrom,
    pub host_selector: Option<LabelSelector>,
    /// Whether Hosts with a certificate get a TLS filter chain here (HTTPS, HTTPSPROXY).
    pub terminates_tls: bool,
}

/// The port Emissary listens on when no Listener exists.
const DEFAULT_PORT: u16 = 8080;

pub(super) fn lower(set: &ResourceSet, diagnostics: &mut Vec<Diagnostic>) -> Vec<Lowered> {
    let module = set.module.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
    let mut out: Vec<Lowered> = Vec::new();
    for (meta, l) in &set.listeners {
        // TCP and TLS Listeners are ports for TCPMappings (see `tcp`).
        if matches!(l.protocol, Protocol::Tcp | Protocol::Tls) {
            continue;
        }
        if let Some(first) = out.iter().find(|o| o.ir.port == l.port) {
            let owner = first
                .ir
                .source
                .as_ref()
                .map(|s| s.object.to_string())
                .unwrap_or_default();
            diagnostics.push(
                Diagnostic::error(
                    "listener.port_conflict",
                    format!("port {} is already used by {owner}; this Listener was left out", l.port),
                )
                .at(meta.origin.clone())
                .on(meta.object_ref())
                .path("spec.port")
                .hint("give each Listener its own port"),
            );
            continue;
        }
        let stat_prefix = l.stats_prefix.clone().unwrap_or_else(|| {
            match l.protocol {
                Protocol::Https | Protocol::Httpsproxy => "ingress_https",
                _ => "ingress_http",
            }
            .to_string()
        });
        out.push(Lowered {
            ir: Listener {
                name: format!("listener-{}", l.port),
                address: "0.0.0.0".to_string(),
                port: l.port,
                stat_prefix,
                route_config: format!("routes-{}", l.port),
                filter_chains: Vec::new(),
                tls: false,
                strip_host_port: true,
                security_model: match l.security_model {
                    crate::resource::listener::SecurityModel::Xfp => SecurityModel::Xfp,
                    crate::resource::listener::SecurityModel::Secure => SecurityModel::Secure,
                    crate::resource::listener::SecurityModel::Insecure => SecurityModel::Insecure,
                },
                proxy_protocol: matches!(l.protocol, Protocol::Httpproxy | Protocol::Httpsproxy),
                xff_num_trusted_hops: if l.l7_depth > 0 {
                    l.l7_depth
                } else {
                    module.xff_num_trusted_hops
                },
                http: super::http_settings(&module),
                auth: None,
                cors: false,
                ip_policy: module.ip_policy.clone(),
                rbac: false,
                ratelimit: None,
                tracing: None,
                log_services: Vec::new(),
                error_responses: false,
                tcp: Vec::new(),
                source: Some(source_of(meta)),
            },
            namespace: meta.namespace.clone(),
            host_namespace: l.host_namespace,
            host_selector: l.host_selector.clone(),
            terminates_tls: matches!(l.protocol, Protocol::Https | Protocol::Httpsproxy),
        });
    }
    if set.listeners.is_empty() {
        diagnostics.push(Diagnostic::notice(
            "listener.default",
            format!("no Listener defined: serving HTTP on port {DEFAULT_PORT} (securityModel XFP, Hosts from all namespaces)"),
        ).hint("define a Listener to choose ports and protocols"));
        out.push(Lowered {
            ir: Listener {
                name: format!("listener-{DEFAULT_PORT}"),
                address: "0.0.0.0".to_string(),
                port: DEFAULT_PORT,
                stat_prefix: "ingress_http".to_string(),
                route_config: format!("routes-{DEFAULT_PORT}"),
                filter_chains: Vec::new(),
                tls: false,
                strip_host_port: true,
                security_model: SecurityModel::Xfp,
                proxy_protocol: false,
                xff_num_trusted_hops: module.xff_num_trusted_hops,
                http: super::http_settings(&module),
                auth: None,
                cors: false,
                ip_policy: module.ip_policy.clone(),
                rbac: false,
                ratelimit: None,
                tracing: None,
                log_services: Vec::new(),
                error_responses: false,
                tcp: Vec::new(),
                source: None,
            },
            namespace: String::new(),
            host_namespace: NamespaceFrom::All,
            host_selector: None,
            terminates_tls: false,
        });
    }
    out.sort_by_key(|l| l.ir.port);
    out
}
