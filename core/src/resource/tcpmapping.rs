//! `TCPMapping`: connections to a port proxied to a service at layer 4, optionally chosen by the
//! TLS server name (`host`), with TLS terminated when attache has a certificate for it.

use serde::Deserialize;

use super::mapping::{read_circuit_breakers, CircuitBreakerSpec, ClusterSettings};
use super::Reader;
use crate::lang::service::{self, ServiceRef};

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum TlsField {
    On(bool),
    Context(String),
}

#[derive(Clone, Debug, Default, Deserialize)]
struct TcpMappingSpec {
    port: Option<u32>,
    service: Option<String>,
    host: Option<String>,
    address: Option<String>,
    tls: Option<TlsField>,
    /// A number, or a string of digits (Emissary's CRD types it as a string).
    idle_timeout_ms: Option<serde_json::Value>,
    stats_name: Option<String>,
    #[serde(default)]
    circuit_breakers: Vec<CircuitBreakerSpec>,
    enable_ipv4: Option<bool>,
    enable_ipv6: Option<bool>,
    cluster_tag: Option<String>,
    weight: Option<u32>,
    #[allow(dead_code, reason = "read by resource::parse before the spec")]
    ambassador_id: Option<serde_json::Value>,
}

/// The field names `spec` accepts (see `resource::fields`).
pub(super) fn spec_fields() -> &'static [&'static str] {
    super::fields::of::<TcpMappingSpec>()
}

/// A valid TCPMapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpMapping {
    /// Port Envoy listens on.
    pub port: u16,
    /// Address Envoy binds (default `0.0.0.0`).
    pub address: String,
    /// TLS server name (a DNS glob) this mapping takes; `None` takes every connection.
    pub host: Option<String>,
    /// Where connections go.
    pub service: ServiceRef,
    /// Idle timeout of a connection in milliseconds (Envoy's one hour when unset).
    pub idle_timeout_ms: Option<u64>,
    /// Share of the connections of the TCPMappings with the same port and host, in percent.
    pub weight: Option<u32>,
    /// Upstream cluster settings (TLS origination, circuit breakers, IP families, tag).
    pub cluster: ClusterSettings,
    /// Whether `enable_ipv4` or `enable_ipv6` was set (else the Module's IP families apply).
    pub ip_families_set: bool,
}

/// Reads and checks a TCPMapping spec.
pub(crate) fn read(r: &mut Reader<'_>) -> Option<TcpMapping> {
    let spec: TcpMappingSpec =
        r.spec(&|p| (p == "spec.port").then(|| "the port is a number from 1 to 65535".to_string()))?;
    let Some(port) = spec.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
        let d = r
            .error(
                "invalid_port",
                "spec.port",
                "a TCPMapping needs a `port` from 1 to 65535",
            )
            .hint("the port Envoy listens on for these connections, e.g. `port: 2222`");
        r.diagnostics.push(d);
        return None;
    };
    let Some(text) = spec.service.filter(|s| !s.trim().is_empty()) else {
        let d = r
            .error(
                "missing_service",
                "spec.service",
                "a TCPMapping needs a `service` to send connections to",
            )
            .hint("e.g. `service: db.default:5432`");
        r.diagnostics.push(d);
        return None;
    };
    let mut service = r.service("spec.service", &text)?;
    // `tls: true` reads as an https:// service, as Emissary converts it.
    if matches!(spec.tls, Some(TlsField::On(true))) && service.scheme.is_none() {
        service.scheme = Some(service::Scheme::Https);
    }
    if let Some(w) = spec.weight.filter(|w| *w > 100) {
        let d = r
            .error("invalid_weight", "spec.weight", format!("weight {w} is more than 100"))
            .hint("weight is a percentage of the connections of the TCPMappings with the same port and host");
        r.diagnostics.push(d);
        return None;
    }
    let mut ok = true;
    let idle_timeout_ms = match &spec.idle_timeout_ms {
        None => None,
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(serde_json::Value::String(s)) if s.parse::<u64>().is_ok() => s.parse().ok(),
        Some(other) => {
            let d = r
                .error(
                    "invalid_field",
                    "spec.idle_timeout_ms",
                    format!("`{other}` is not a whole number of milliseconds"),
                )
                .hint("e.g. `idle_timeout_ms: 600000`");
            r.diagnostics.push(d);
            return None;
        }
    };
    let circuit_breakers = read_circuit_breakers(r, &spec.circuit_breakers, "spec", &mut ok);
    if !ok {
        return None;
    }
    let dns_lookup_family = match (spec.enable_ipv4.unwrap_or(true), spec.enable_ipv6.unwrap_or(false)) {
        (_, false) => "V4_ONLY",
        (false, true) => "V6_ONLY",
        (true, true) => "AUTO",
    };
    Some(TcpMapping {
        port,
        address: spec.address.unwrap_or_else(|| "0.0.0.0".to_string()),
        // A TLS server name: DNS ignores case, Envoy matches SNI in lower case.
        host: spec.host.filter(|h| !h.is_empty()).map(|h| h.to_ascii_lowercase()),
        service,
        idle_timeout_ms,
        weight: spec.weight,
        ip_families_set: spec.enable_ipv4.is_some() || spec.enable_ipv6.is_some(),
        cluster: ClusterSettings {
            circuit_breakers,
            dns_lookup_family,
            tag: spec.cluster_tag,
            stats_name: spec.stats_name,
            originate_tls: matches!(spec.tls, Some(TlsField::Context(_))),
            tls_context: match spec.tls {
                Some(TlsField::Context(name)) => Some(name),
                _ => None,
            },
            ..ClusterSettings::default()
        },
    })
}
