//! Envoy bootstraps: one that points Envoy at attache's ADS server, and a self-contained one with
//! every resource in `static_resources` (for `attache translate --bootstrap` and offline checks).
//! Both are checked against Envoy's Bootstrap schema before they are returned.

use serde_json::{json, Value};

use super::{decode, resources_json, DecodeError};
use crate::snapshot::{ResourceType, Snapshot};

/// The xDS flavour Envoy should use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdsProtocol {
    /// Incremental: only what changed is sent, and nothing Envoy already has on reconnect.
    Delta,
    /// State of the world: every response carries the full set (LDS/CDS) or the requested names.
    Sotw,
}

/// What an ADS bootstrap needs.
#[derive(Clone, Debug)]
pub struct AdsBootstrap {
    /// Envoy's node id (attache keeps per-node state by it).
    pub node_id: String,
    /// Envoy's node cluster.
    pub node_cluster: String,
    /// Host of attache's ADS server (IP or DNS name).
    pub ads_host: String,
    /// Port of attache's ADS server.
    pub ads_port: u16,
    /// Envoy admin address.
    pub admin_host: String,
    /// Envoy admin port.
    pub admin_port: u16,
    /// Which xDS flavour.
    pub protocol: XdsProtocol,
    /// Envoy's own log lines as JSON objects (`application_log_config`) instead of text.
    pub json_logs: bool,
    /// The most downstream connections Envoy accepts at once, over all listeners (its overload
    /// manager's `global_downstream_max_connections`); 0 for no limit.
    pub max_downstream_connections: u64,
    /// mTLS to attache's ADS server (`serve --ads-tls-*`), or plaintext.
    pub tls: Option<AdsTls>,
}

/// The files Envoy reads to reach attache's ADS server over mTLS (paths on Envoy's machine).
#[derive(Clone, Debug)]
pub struct AdsTls {
    /// The CA that signed attache's certificate.
    pub ca: String,
    /// Envoy's client certificate chain.
    pub cert: String,
    /// Its private key.
    pub key: String,
    /// The name attache's certificate must hold (sent as SNI and checked against its SANs);
    /// `None`: the ADS host when it is a DNS name, else only the CA is checked.
    pub server_name: Option<String>,
}

/// The default of [`AdsBootstrap::max_downstream_connections`]: what Envoy's edge-proxy guide
/// suggests, far above what one Envoy serves well, low enough to stop a connection flood before
/// memory runs out.
pub const DEFAULT_MAX_DOWNSTREAM_CONNECTIONS: u64 = 50_000;

fn socket(host: &str, port: u16) -> Value {
    json!({"socket_address": {"address": host, "port_value": port}})
}

fn admin(host: &str, port: u16) -> Value {
    json!({"address": socket(host, port)})
}

/// Envoy's `--log-format` for JSON lines, with the same keys as attache's own JSON lines where
/// they mean the same thing, so one log pipeline parses both processes of the container (`%j` is
/// the message escaped for JSON). The command-line flag, unlike the bootstrap's
/// `application_log_config`, also covers the lines Envoy writes before it reads its bootstrap.
pub const ENVOY_JSON_LOG_FORMAT: &str = r#"{"timestamp":"%Y-%m-%dT%T.%f%z","level":"%l","target":"envoy::%n","source":"%g:%#","thread":"%t","message":"%j"}"#;

/// The name of the static cluster that reaches attache.
pub const ADS_CLUSTER: &str = "attache_ads";

/// A bootstrap that takes everything from attache over ADS.
///
/// # Errors
/// If the result does not decode as an Envoy Bootstrap (a bug, or an invalid host name).
pub fn ads(b: &AdsBootstrap) -> Result<Value, DecodeError> {
    let is_ip = b.ads_host.parse::<std::net::IpAddr>().is_ok();
    let api_type = match b.protocol {
        XdsProtocol::Sotw => "GRPC",
        XdsProtocol::Delta => "DELTA_GRPC",
    };
    let mut value = json!({
        "node": {"id": b.node_id, "cluster": b.node_cluster},
        "admin": admin(&b.admin_host, b.admin_port),
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": ADS_CLUSTER}}]
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {"clusters": [{
            "name": ADS_CLUSTER,
            "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"}
                    }}
                }
            },
            "load_assignment": {
                "cluster_name": ADS_CLUSTER,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(&b.ads_host, b.ads_port)}}]}]
            }
        }]}
    });
    if let Some(tls) = &b.tls {
        let name = tls.server_name.clone().or_else(|| (!is_ip).then(|| b.ads_host.clone()));
        let mut validation = json!({"trusted_ca": {"filename": tls.ca}});
        if let Some(n) = &name {
            validation["match_typed_subject_alt_names"] = json!([{"san_type": "DNS", "matcher": {"exact": n}}]);
        }
        let mut context = json!({"common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [{"certificate_chain": {"filename": tls.cert}, "private_key": {"filename": tls.key}}],
            "validation_context": validation
        }});
        if let Some(n) = &name {
            context["sni"] = json!(n);
        }
        context["@type"] = json!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
        value["static_resources"]["clusters"][0]["transport_socket"] =
            json!({"name": "envoy.transport_sockets.tls", "typed_config": context});
    }
    if b.max_downstream_connections > 0 {
        value["overload_manager"] = json!({"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": b.max_downstream_connections
            }
        }]});
    }
    if b.json_logs {
        value["application_log_config"] = json!({"log_format": {"json_format": {
            "timestamp": "%Y-%m-%dT%T.%f%z",
            "level": "%l",
            "target": "envoy::%n",
            "source": "%g:%#",
            "thread": "%t",
            "message": "%j",
        }}});
    }
    decode("envoy.config.bootstrap.v3.Bootstrap", &value)?;
    Ok(value)
}

/// A self-contained bootstrap: listeners (with their routes inlined, since there is no RDS
/// server), clusters and secrets (with their private keys: the file must be kept like one) in
/// `static_resources`.
///
/// # Errors
/// If the result does not decode as an Envoy Bootstrap.
pub fn static_resources(snapshot: &Snapshot, admin_host: &str, admin_port: u16) -> Result<Value, DecodeError> {
    let mut listeners = resources_json(snapshot, ResourceType::Listener);
    for l in &mut listeners {
        inline_routes(l, snapshot);
        static_secret_refs(l);
    }
    let mut clusters = resources_json(snapshot, ResourceType::Cluster);
    let endpoints = resources_json(snapshot, ResourceType::Endpoint);
    for c in &mut clusters {
        static_endpoints(c, &endpoints);
        static_secret_refs(c);
    }
    let value = json!({
        "node": {"id": "attache-static", "cluster": "attache"},
        "admin": admin(admin_host, admin_port),
        "static_resources": {
            "listeners": listeners,
            "clusters": clusters,
            "secrets": super::resources_json_with_keys(snapshot, ResourceType::Secret),
        }
    });
    decode("envoy.config.bootstrap.v3.Bootstrap", &value)?;
    Ok(value)
}

/// Makes an EDS cluster (JSON, camelCase) a static one holding its endpoints, as there is no EDS
/// server.
fn static_endpoints(cluster: &mut Value, endpoints: &[Value]) {
    if cluster.get("type").and_then(Value::as_str) != Some("EDS") {
        return;
    }
    let name = cluster.get("name").cloned().unwrap_or_default();
    let assignment = endpoints
        .iter()
        .find(|e| e.get("clusterName") == Some(&name))
        .cloned()
        .unwrap_or_else(|| json!({"clusterName": name}));
    if let Some(o) = cluster.as_object_mut() {
        o.remove("edsClusterConfig");
        o.insert("type".into(), json!("STATIC"));
        o.insert("loadAssignment".into(), assignment);
    }
}

/// Makes SDS references to certificates point at `static_resources.secrets` (no `sds_config`).
fn static_secret_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "tlsCertificateSdsSecretConfigs" {
                    for r in v.as_array_mut().into_iter().flatten() {
                        if let Some(o) = r.as_object_mut() {
                            o.remove("sdsConfig");
                        }
                    }
                } else if k == "validationContextSdsSecretConfig" {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("sdsConfig");
                    }
                } else {
                    static_secret_refs(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(static_secret_refs),
        _ => {}
    }
}

/// Replaces `rds` in every HTTP connection manager of a listener (JSON, camelCase) by the route
/// configuration it names.
fn inline_routes(listener: &mut Value, snapshot: &Snapshot) {
    let Some(chains) = listener.get_mut("filterChains").and_then(Value::as_array_mut) else {
        return;
    };
    for chain in chains {
        let Some(filters) = chain.get_mut("filters").and_then(Value::as_array_mut) else {
            continue;
        };
        for filter in filters {
            let Some(Value::Object(hcm)) = filter.get_mut("typedConfig") else {
                continue;
            };
            let Some(rds) = hcm.remove("rds") else { continue };
            let name = rds.get("routeConfigName").and_then(Value::as_str).unwrap_or_default();
            let mut route = snapshot.get(ResourceType::Route, name).map_or_else(
                || json!({"name": name}),
                |r| super::bytes_to_json(ResourceType::Route.message_name(), &r.bytes),
            );
            // As over RDS: a route whose cluster was left out (a diagnostic says why) answers 503
            // instead of the whole bootstrap being refused.
            if let Some(o) = route.as_object_mut() {
                o.insert("validateClusters".to_string(), json!(false));
            }
            hcm.insert("routeConfig".to_string(), route);
        }
    }
}
