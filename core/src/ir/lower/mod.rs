//! Lowering: typed resources → IR, one file per resource kind.
//!
//! Never fails as a whole: conflicts (two Listeners on one port, two Hosts with one hostname) and
//! dangling associations (a Mapping no Host takes) are diagnostics, and the rest is lowered.
//! Output order depends only on content (names, ports, precedence), never on input order.
//!
//! [`lower`] is the plain lowering, the one to read first: every Mapping lowered on every Host
//! that serves it, every route and cluster built. `incremental` gives exactly its output from
//! what a [`LowerCache`] kept of the last translation; both share the listener, Host and TCP
//! stages and the `serve_hosts` assembly, and call `mapping`'s functions.

mod host;
mod incremental;
mod listener;
mod mapping;
mod tcp;

use crate::diagnostic::Diagnostic;
use crate::resource::ResourceSet;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{FilterChain, Ir, Route, RouteConfig, SecurityModel, SourceRef, VirtualHost};

pub use incremental::{lower_cached, LowerCache};

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
        labels: meta.labels.clone(),
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

/// Lowers a resource set into the IR: the plain lowering.
pub fn lower(set: &ResourceSet, options: &LowerOptions) -> (Ir, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut frame = Frame::new(set, options, mapping::Interner::default(), &mut diagnostics);
    let module = set.module.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
    // What routes read of the AuthService and the RateLimitService.
    let services = mapping::services(set);
    let per_mapping =
        mapping::per_mapping_diagnostics(frame.clusters.resolvers(), &set.mappings, services.1.as_deref());
    diagnostics.extend(per_mapping.into_iter().map(|(_, d)| d));
    // Each served Host's Mappings: lowered (their clusters added), then ordered and grouped.
    let mut used = vec![false; set.mappings.len()];
    let served: Vec<bool> = (0..frame.hosts.len()).map(|i| frame.served(i)).collect();
    let taken: Vec<Option<Vec<mapping::Lowered>>> = (0..frame.hosts.len())
        .map(|i| {
            served[i].then(|| {
                let host = &frame.hosts[i];
                mapping::lower_host(set, host, options, &module, &mut frame.clusters, &mut used)
            })
        })
        .collect();
    let prepared: Vec<Option<mapping::Prepared<'_, mapping::Lowered>>> = taken
        .iter()
        .zip(&frame.hosts)
        .map(|(taken, host)| {
            taken
                .as_ref()
                .map(|t| mapping::prepare(t, &module, services.clone(), host, &mut diagnostics))
        })
        .collect();
    let route_configs = serve_hosts(
        &mut frame,
        any_mapping_port(set),
        |index, host, model| match &prepared[index] {
            Some(p) => mapping::emit(p, model, host, &mut |c, slot| Arc::new(p.build_route(c, slot))),
            None => (Vec::new(), mapping::Needs::default()),
        },
        &mut diagnostics,
    );
    let unused = mapping::report_unused(set, &used);
    let Closed {
        listeners,
        mut secrets,
        clusters,
    } = frame.close(set, options, &mut diagnostics);
    diagnostics.extend(unused.into_iter().map(|(_, d)| d));
    let finished = clusters.finish(set, &mut secrets, &mut diagnostics);
    let ir = assemble(listeners, route_configs, finished.clusters, finished.endpoints, secrets);
    (ir, diagnostics)
}

/// What every lowering starts from: the HTTP Listeners, the effective Hosts and which Listener
/// serves which, the AuthService's and RateLimitService's filters, the secrets and clusters so
/// far.
struct Frame<'s> {
    listeners: Vec<listener::Lowered>,
    secrets: BTreeMap<String, crate::ir::Secret>,
    hosts: Vec<host::EffectiveHost>,
    clusters: mapping::Clusters<'s>,
    auth: Option<crate::ir::AuthFilter>,
    ratelimit: Option<crate::ir::RateLimitFilter>,
    tracing: Option<crate::ir::Tracing>,
    log_services: Vec<crate::ir::LogSink>,
    /// Which Hosts each Listener serves, as indices into `hosts`.
    bound: Vec<Vec<usize>>,
}

impl<'s> Frame<'s> {
    fn new(
        set: &'s ResourceSet,
        options: &LowerOptions,
        interner: mapping::Interner,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Frame<'s> {
        let listeners = listener::lower(set, diagnostics);
        let mut secrets = BTreeMap::new();
        let hosts = host::effective_hosts(set, &mut secrets, diagnostics);
        let mut clusters = mapping::Clusters::new(mapping::Resolvers::new(set, options, diagnostics), interner);
        let no_module = crate::resource::AmbassadorModule::default();
        let module = set.module.as_ref().map_or(&no_module, |(_, m)| m);
        let auth = set
            .auth_service
            .as_ref()
            .map(|(meta, a)| mapping::auth_filter(&mut clusters, meta, a, options, module));
        let ratelimit = set
            .rate_limit_service
            .as_ref()
            .zip(mapping::rate_limit_domain(set))
            .map(|((meta, r), domain)| mapping::ratelimit_filter(&mut clusters, meta, r, domain, options, module));
        let tracing = set
            .tracing_service
            .as_ref()
            .map(|(meta, t)| mapping::tracing(&mut clusters, meta, t, options, module));
        let log_services = set
            .log_services
            .iter()
            .map(|(meta, l)| mapping::log_sink(&mut clusters, meta, l, options, module))
            .collect();
        let bound = listeners
            .iter()
            .map(|l| {
                host::bound_to(l, &hosts, diagnostics)
                    .into_iter()
                    .map(|h| hosts.iter().position(|x| std::ptr::eq(x, h)).unwrap_or(0))
                    .collect()
            })
            .collect();
        Frame {
            listeners,
            secrets,
            hosts,
            clusters,
            auth,
            ratelimit,
            tracing,
            log_services,
            bound,
        }
    }

    /// Whether some Listener serves `hosts[i]`.
    fn served(&self, i: usize) -> bool {
        self.bound.iter().any(|b| b.contains(&i))
    }

    /// Closes the frame once the HTTP routes are served: the TCPMappings' listeners join the
    /// HTTP ones (their clusters and secrets added), and what is left to finish is handed over.
    fn close(mut self, set: &'s ResourceSet, options: &LowerOptions, diagnostics: &mut Vec<Diagnostic>) -> Closed<'s> {
        let http_ports: Vec<u16> = self.listeners.iter().map(|l| l.ir.port).collect();
        let tcp = tcp::listeners(
            set,
            &http_ports,
            &self.hosts,
            options,
            &mut self.clusters,
            &mut self.secrets,
            diagnostics,
        );
        let mut listeners: Vec<_> = self.listeners.into_iter().map(|l| l.ir).chain(tcp).collect();
        listeners.sort_by_key(|l| l.port);
        Closed {
            listeners,
            secrets: self.secrets,
            clusters: self.clusters,
        }
    }
}

/// What is left of a [`Frame`] once routes are served: every listener in port order, the
/// secrets so far, and the clusters to finish.
struct Closed<'s> {
    listeners: Vec<crate::ir::Listener>,
    secrets: BTreeMap<String, crate::ir::Secret>,
    clusters: mapping::Clusters<'s>,
}

/// Whether some Mapping's hostname (or host) has a port.
fn any_mapping_port(set: &ResourceSet) -> bool {
    set.mappings
        .iter()
        .any(|e| e.1.hostname.iter().chain(&e.1.host).any(|h| has_port(h)))
}

/// Fills each HTTP Listener's filter chains and builds the route tables: `routes(i, host,
/// model)` gives the routes of `frame.hosts[i]` for a security model, and whether one has a
/// CORS policy. `mapping_port`: whether some Mapping's hostname has a port.
fn serve_hosts(
    frame: &mut Frame<'_>,
    mapping_port: bool,
    mut routes: impl FnMut(usize, &host::EffectiveHost, SecurityModel) -> (Vec<Arc<Route>>, mapping::Needs),
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<RouteConfig> {
    let mut route_configs = Vec::new();
    // Listeners serving the same Hosts under the same security model get the same cleartext
    // route table, so that it is built, rendered and sent once: `routes-<port>` when one
    // Listener has it, `routes-<port>+<port>…` (in port order) when several share it. A name
    // never changes what it means: a table named after one Listener alone would, when another
    // Listener that shared it leaves the group, change its Hosts under the connections the
    // other Listener's previous version still drains (which read the table by name), and their
    // requests would meet the wrong routes. (model, Hosts, table, what its routes need.)
    let mut tables: Vec<(SecurityModel, &Vec<usize>, String, mapping::Needs)> = Vec::new();
    let group_names: Vec<String> = frame
        .listeners
        .iter()
        .zip(&frame.bound)
        .map(|(l, bound)| {
            let ports: Vec<String> = frame
                .listeners
                .iter()
                .zip(&frame.bound)
                .filter(|(o, o_bound)| o.ir.security_model == l.ir.security_model && *o_bound == bound)
                .map(|(o, _)| o.ir.port.to_string())
                .collect();
            if ports.len() > 1 {
                format!("routes-{}", ports.join("+"))
            } else {
                l.ir.route_config.clone()
            }
        })
        .collect();
    for ((l, bound), group_name) in frame.listeners.iter_mut().zip(&frame.bound).zip(group_names) {
        let shared = tables
            .iter()
            .find(|(model, hosts, _, _)| *model == l.ir.security_model && *hosts == bound)
            .map(|(_, _, name, needs)| (name.clone(), *needs));
        // TLS chains' tables stay the listener's own (`routes-<port>-<sni>`).
        let own_tables = l.ir.route_config.clone();
        l.ir.route_config = group_name;
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
        l.ir.strip_host_port = !bound.iter().any(|&i| has_port(&frame.hosts[i].hostname)) && !mapping_port;
        let mut needs = mapping::Needs::default();
        for &index in bound {
            let h = &frame.hosts[index];
            if shared.is_some() && !(l.terminates_tls && h.tls.is_some()) {
                // Only its TLS chain is this listener's own.
                continue;
            }
            let (routes, host_needs) = routes(index, h, l.ir.security_model);
            needs = needs.or(host_needs);
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
        let needs = shared.as_ref().map_or(needs, |(_, needs)| *needs);
        l.ir.cors = needs.cors;
        l.ir.rbac = needs.rbac || l.ir.ip_policy.is_some();
        l.ir.error_responses = needs.error_responses;
        l.ir.auth.clone_from(&frame.auth);
        l.ir.ratelimit.clone_from(&frame.ratelimit);
        l.ir.tracing.clone_from(&frame.tracing);
        l.ir.log_services.clone_from(&frame.log_services);
        l.ir.filter_chains = chains;
        if shared.is_none() {
            tables.push((l.ir.security_model, bound, l.ir.route_config.clone(), needs));
            virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
            route_configs.push(RouteConfig {
                name: l.ir.route_config.clone(),
                virtual_hosts,
            });
        }
    }
    route_configs.sort_by(|a, b| a.name.cmp(&b.name));
    route_configs
}

/// The IR from what the stages gave.
fn assemble(
    listeners: Vec<crate::ir::Listener>,
    route_configs: Vec<RouteConfig>,
    clusters: Vec<Arc<crate::ir::Cluster>>,
    endpoints: Vec<crate::ir::Endpoints>,
    secrets: BTreeMap<String, crate::ir::Secret>,
) -> Ir {
    Ir {
        listeners,
        route_configs,
        clusters,
        endpoints,
        secrets: secrets.into_values().collect(),
    }
}

/// A listener's connection manager settings, from the Module (or its defaults).
pub(crate) fn http_settings(m: &crate::resource::AmbassadorModule) -> crate::ir::HttpSettings {
    crate::ir::HttpSettings {
        use_remote_address: m.use_remote_address,
        server_name: m.server_name.clone(),
        max_request_headers_kb: m.max_request_headers_kb,
        idle_timeout_ms: m.listener_idle_timeout_ms,
        merge_slashes: m.merge_slashes,
        reject_escaped_slashes: m.reject_requests_with_escaped_slashes,
        strip_matching_host_port: m.strip_matching_host_port,
        suppress_envoy_headers: m.suppress_envoy_headers,
        grpc_web: m.grpc_web,
        grpc_http1_bridge: m.grpc_http1_bridge,
        grpc_stats: m.grpc_stats.clone(),
        lua_scripts: m.lua_scripts.clone(),
        gzip: m.gzip.clone(),
        buffer_max_request_bytes: m.buffer_max_request_bytes,
        enable_http10: m.enable_http10,
        allow_chunked_length: m.allow_chunked_length,
        preserve_external_request_id: m.preserve_external_request_id,
        headers_with_underscores_action: m.headers_with_underscores_action,
        error_responses: m.error_responses.clone(),
        brotli: m.brotli.clone(),
        header_case: m.header_case,
        forward_client_cert_details: m.forward_client_cert_details,
        set_current_client_cert_details: m.set_current_client_cert_details,
        buffer_limit_bytes: m.buffer_limit_bytes,
        access_log: m.access_log.clone(),
    }
}
