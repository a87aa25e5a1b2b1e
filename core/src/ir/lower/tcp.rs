//! TCPMappings → TCP listeners: one listener per port, one TCP proxy chain per TCPMapping, chosen
//! by TLS server name when the TCPMapping has a `host` (TLS terminated with the certificate of the
//! Host or TLSContext for that name, else passed through untouched).

use std::collections::BTreeMap;

use crate::diagnostic::Diagnostic;
use crate::ir::{Listener, PrivateKey, Secret, SecurityModel, TcpChain, TcpWeight};
use crate::resource::{Meta, ResourceSet, TcpMapping};

use super::host::EffectiveHost;
use super::mapping::{tcp_cluster, Clusters};
use super::{source_of, LowerOptions};

/// The TCP listeners, in port order.
pub(super) fn listeners<'a>(
    set: &'a ResourceSet,
    http_ports: &[u16],
    hosts: &[EffectiveHost],
    options: &LowerOptions,
    clusters: &mut Clusters<'a>,
    secrets: &mut BTreeMap<String, Secret>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Listener> {
    let no_module = crate::resource::AmbassadorModule::default();
    let module = set.module.as_ref().map_or(&no_module, |(_, m)| m);
    let mut by_port: BTreeMap<u16, Vec<(&Meta, &TcpMapping)>> = BTreeMap::new();
    for (meta, t) in &set.tcp_mappings {
        if http_ports.contains(&t.port) {
            diagnostics.push(
                Diagnostic::error(
                    "tcpmapping.port_conflict",
                    format!("port {} serves HTTP (a Listener); this TCPMapping was left out", t.port),
                )
                .at(meta.origin.clone())
                .on(meta.object_ref())
                .path("spec.port")
                .hint("give TCPMappings ports of their own (a Listener with protocol TCP or TLS, or none)"),
            );
            continue;
        }
        by_port.entry(t.port).or_default().push((meta, t));
    }
    let mut out = Vec::new();
    for (port, mut mappings) in by_port {
        // Server-name chains first (by name), then the catch-all.
        mappings.sort_by(|(am, a), (bm, b)| {
            (a.host.is_none(), &a.host, &am.namespace, &am.name).cmp(&(
                b.host.is_none(),
                &b.host,
                &bm.namespace,
                &bm.name,
            ))
        });
        let mut chains: Vec<TcpChain> = Vec::new();
        for (meta, t) in mappings {
            let name = match &t.host {
                Some(h) => format!("tcp-{h}"),
                None => "tcp".to_string(),
            };
            // TCPMappings taking the same connections share them by weight (a TCP canary).
            if let Some(chain) = chains.iter_mut().find(|c| c.name == name) {
                chain.weighted.push(TcpWeight {
                    cluster: tcp_cluster(clusters, meta, t, options, module),
                    weight: t.weight,
                });
                continue;
            }
            let secret = t.host.as_ref().and_then(|h| certificate_for(set, hosts, h, secrets));
            if let (Some(h), None) = (&t.host, &secret) {
                diagnostics.push(
                    Diagnostic::notice(
                        "tcpmapping.tls_passthrough",
                        format!("no certificate for `{h}` (no Host or TLSContext with it): TLS is passed through to the service"),
                    )
                    .at(meta.origin.clone())
                    .on(meta.object_ref())
                    .path("spec.host"),
                );
            }
            chains.push(TcpChain {
                stat_prefix: format!("ingress_tcp_{port}"),
                name,
                server_names: t.host.iter().filter(|h| h.as_str() != "*").cloned().collect(),
                secret,
                weighted: vec![TcpWeight {
                    cluster: tcp_cluster(clusters, meta, t, options, module),
                    weight: t.weight,
                }],
                cluster: String::new(),
                idle_timeout_ms: t.idle_timeout_ms,
                source: Some(source_of(meta)),
            });
        }
        // One TCPMapping: its cluster. Several: weights as Emissary gives them (weighted ones
        // as written, unweighted ones sharing what is left of 100).
        for c in &mut chains {
            if c.weighted.len() == 1 {
                c.cluster = c.weighted.remove(0).cluster;
                continue;
            }
            let explicit: u32 = c.weighted.iter().filter_map(|w| w.weight).sum();
            let unweighted = u32::try_from(c.weighted.iter().filter(|w| w.weight.is_none()).count()).unwrap_or(1);
            let share = 100u32.saturating_sub(explicit) / unweighted.max(1);
            for w in &mut c.weighted {
                w.weight = Some(w.weight.unwrap_or(share));
            }
            if c.weighted.iter().all(|w| w.weight == Some(0)) {
                if let Some(w) = c.weighted.first_mut() {
                    w.weight = Some(1);
                }
            }
        }
        let Some(first) = chains.first() else { continue };
        let address = set
            .tcp_mappings
            .iter()
            .find(|(_, t)| t.port == port)
            .map_or_else(|| "0.0.0.0".to_string(), |(_, t)| t.address.clone());
        out.push(Listener {
            name: format!("listener-{port}"),
            address,
            port,
            stat_prefix: format!("ingress_tcp_{port}"),
            route_config: String::new(),
            filter_chains: Vec::new(),
            tls: chains.iter().any(|c| !c.server_names.is_empty()),
            strip_host_port: true,
            security_model: SecurityModel::Insecure,
            proxy_protocol: false,
            xff_num_trusted_hops: 0,
            http: super::http_settings(&crate::resource::AmbassadorModule::default()),
            auth: None,
            cors: false,
            ip_policy: None,
            rbac: false,
            ratelimit: None,
            tracing: None,
            log_services: Vec::new(),
            error_responses: false,
            source: first.source.clone(),
            tcp: chains,
        });
    }
    out
}

/// The IR secret with a certificate for server name `host`: a Host's, else a TLSContext's.
fn certificate_for(
    set: &ResourceSet,
    hosts: &[EffectiveHost],
    host: &str,
    secrets: &mut BTreeMap<String, Secret>,
) -> Option<String> {
    if let Some(t) = hosts
        .iter()
        .find(|h| h.hostname.eq_ignore_ascii_case(host))
        .and_then(|h| h.tls.as_ref())
    {
        return Some(t.secret.clone());
    }
    let (ns, name) = set
        .tls_contexts
        .iter()
        .find(|(_, c)| c.hosts.iter().any(|x| x.eq_ignore_ascii_case(host)))?
        .1
        .secret
        .clone()?;
    let (meta, s) = set.secrets.iter().find(|(m, _)| m.namespace == ns && m.name == name)?;
    let key = s.private_key.clone()?;
    let full = format!("{ns}/{name}");
    secrets.entry(full.clone()).or_insert_with(|| Secret {
        name: full.clone(),
        certificate_chain: s.certificate_chain.clone(),
        private_key: Some(PrivateKey(key)),
        source: Some(source_of(meta)),
    });
    Some(full)
}
