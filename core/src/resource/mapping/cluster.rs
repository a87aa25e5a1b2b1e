//! A Mapping's upstream cluster settings: health checks, keepalive, circuit breakers, load
//! balancing and DNS (the types and how they are read). Shared with the Module's defaults and
//! the other kinds that have a cluster (TCPMapping, AuthService).

use serde::Deserialize;

use super::super::Reader;
use super::parse_duration_ms;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheckSpec {
    unhealthy_threshold: Option<u32>,
    healthy_threshold: Option<u32>,
    interval: Option<String>,
    timeout: Option<String>,
    health_check: HealthCheckKindSpec,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheckKindSpec {
    http: Option<HttpHealthCheckSpec>,
    grpc: Option<GrpcHealthCheckSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpHealthCheckSpec {
    path: String,
    hostname: Option<String>,
    #[serde(default)]
    expected_statuses: Vec<StatusRangeSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRangeSpec {
    min: u16,
    max: u16,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcHealthCheckSpec {
    upstream_name: Option<String>,
    authority: Option<String>,
}

pub use crate::ir::values::HealthCheck;

pub use crate::ir::values::HttpHealthCheck;

pub use crate::ir::values::GrpcHealthCheck;

/// Reads `spec.health_checks`; `http2`: whether the upstream is reached over HTTP/2 (a gRPC
/// health check needs it: Envoy refuses the whole cluster otherwise).
pub(super) fn read_health_checks(
    r: &mut Reader<'_>,
    spec: &[HealthCheckSpec],
    http2: bool,
    ok: &mut bool,
) -> Vec<HealthCheck> {
    let mut out = Vec::new();
    if spec.len() > 1 {
        let d = r
            .error("too_many_health_checks", "spec.health_checks[1]", "only one health check per Mapping is supported; the others were left out")
            .hint("Envoy wants named health checks when there are several, which the Envoy API attache is built on cannot name yet");
        r.diagnostics.push(d);
    }
    for (i, h) in spec.iter().enumerate().take(1) {
        let base = format!("spec.health_checks[{i}]");
        let mut duration =
            |field: &str, text: Option<&str>, default: u64, ok: &mut bool| match text.map(parse_duration_ms) {
                None => default,
                Some(Ok(ms)) if ms > 0 => ms,
                Some(Ok(_)) | Some(Err(_)) => {
                    let d = r
                        .error(
                            "invalid_duration",
                            &format!("{base}.{field}"),
                            format!("`{}` is not a duration above zero", text.unwrap_or_default()),
                        )
                        .hint("write a duration such as `5s` or `500ms`");
                    r.diagnostics.push(d);
                    *ok = false;
                    default
                }
            };
        let interval_ms = duration("interval", h.interval.as_deref(), 5_000, ok);
        let timeout_ms = duration("timeout", h.timeout.as_deref(), 3_000, ok);
        let kind = &h.health_check;
        if kind.http.is_some() == kind.grpc.is_some() {
            let d = r
                .error(
                    "invalid_health_check",
                    &format!("{base}.health_check"),
                    "a health check is either `http` or `grpc`",
                )
                .hint("e.g. `health_check: {http: {path: /healthz}}`");
            r.diagnostics.push(d);
            *ok = false;
            continue;
        }
        if kind.grpc.is_some() && !http2 {
            // Found by the churn soak: Envoy NACKs such a cluster ("cluster must support HTTP/2
            // for gRPC healthchecking").
            let d = r
                .error(
                    "grpc_health_check_needs_http2",
                    &format!("{base}.health_check.grpc"),
                    "a gRPC health check needs HTTP/2 to the upstream, and this Mapping's service is reached over HTTP/1.1",
                )
                .hint("set `grpc: true` if the service speaks gRPC, or check it with `health_check: {http: {path: /healthz}}`");
            r.diagnostics.push(d);
            *ok = false;
        }
        for (j, s) in kind.http.iter().flat_map(|h| h.expected_statuses.iter()).enumerate() {
            if !(100..=599).contains(&s.min) || !(100..=599).contains(&s.max) || s.min > s.max {
                let d = r
                    .error(
                        "invalid_status_range",
                        &format!("{base}.health_check.http.expected_statuses[{j}]"),
                        format!("{}..{} is not a range of HTTP statuses", s.min, s.max),
                    )
                    .hint("`min` and `max` are statuses from 100 to 599, min <= max");
                r.diagnostics.push(d);
                *ok = false;
            }
        }
        out.push(HealthCheck {
            interval_ms,
            timeout_ms,
            unhealthy_threshold: h.unhealthy_threshold.unwrap_or(2),
            healthy_threshold: h.healthy_threshold.unwrap_or(1),
            http: kind.http.as_ref().map(|x| HttpHealthCheck {
                path: x.path.clone(),
                hostname: x.hostname.clone(),
                // Envoy ranges are half-open: `max` is included as Emissary writes it.
                expected_statuses: x.expected_statuses.iter().map(|s| (s.min, s.max + 1)).collect(),
            }),
            grpc: kind.grpc.as_ref().map(|x| GrpcHealthCheck {
                service_name: x.upstream_name.clone(),
                authority: x.authority.clone(),
            }),
        });
    }
    out
}

pub use crate::ir::values::Keepalive;

/// `keepalive` as written (a Mapping's or the Module's; seconds).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeepaliveSpec {
    /// Emissary's name is `idle_time`; `time` is read too.
    #[serde(alias = "idle_time")]
    time: Option<u32>,
    interval: Option<u32>,
    probes: Option<u32>,
}

impl From<KeepaliveSpec> for Keepalive {
    fn from(s: KeepaliveSpec) -> Self {
        Keepalive {
            time: s.time,
            interval: s.interval,
            probes: s.probes,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CircuitBreakerSpec {
    priority: Option<String>,
    max_connections: Option<u32>,
    max_pending_requests: Option<u32>,
    max_requests: Option<u32>,
    max_retries: Option<u32>,
}

pub use crate::ir::values::CircuitBreaker;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadBalancerSpec {
    policy: String,
    cookie: Option<CookieSpec>,
    header: Option<String>,
    source_ip: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CookieSpec {
    name: String,
    path: Option<String>,
    ttl: Option<String>,
}

pub use crate::ir::values::HashPolicy;

pub use crate::ir::values::ClusterSettings;

/// `outlier_detection` as written (beyond Emissary, whose CRD has a string that it refuses).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutlierDetectionSpec {
    consecutive_5xx: Option<u32>,
    consecutive_gateway_failure: Option<u32>,
    interval_ms: Option<u64>,
    base_ejection_time_ms: Option<u64>,
    max_ejection_percent: Option<u32>,
}

pub use crate::ir::values::OutlierDetection;

/// Reads `spec.outlier_detection`: a map (attache's form); Emissary's string form is refused,
/// as Emissary refuses it.
pub(super) fn read_outlier_detection(
    r: &mut Reader<'_>,
    value: &serde_json::Value,
    ok: &mut bool,
) -> Option<OutlierDetection> {
    let hint = "e.g. `outlier_detection: {consecutive_5xx: 3, interval_ms: 5000, base_ejection_time_ms: 30000, max_ejection_percent: 50}`";
    if value.is_string() {
        let d = r
            .error(
                "invalid_outlier_detection",
                "spec.outlier_detection",
                "a string is not an outlier detection (Emissary's CRD declares one, and Emissary refuses it too): attache reads a map",
            )
            .hint(hint);
        r.diagnostics.push(d);
        *ok = false;
        return None;
    }
    let spec: OutlierDetectionSpec = match serde_json::from_value(value.clone()) {
        Ok(s) => s,
        Err(e) => {
            let d = r
                .error(
                    "invalid_outlier_detection",
                    "spec.outlier_detection",
                    format!("not an outlier detection: {e}"),
                )
                .hint(hint);
            r.diagnostics.push(d);
            *ok = false;
            return None;
        }
    };
    if let Some(p) = spec.max_ejection_percent.filter(|p| *p > 100) {
        let d = r
            .error(
                "invalid_outlier_detection",
                "spec.outlier_detection.max_ejection_percent",
                format!("{p} is more than 100 percent"),
            )
            .hint(hint);
        r.diagnostics.push(d);
        *ok = false;
    }
    for (field, v) in [
        ("interval_ms", spec.interval_ms),
        ("base_ejection_time_ms", spec.base_ejection_time_ms),
    ] {
        if v == Some(0) {
            let d = r
                .error(
                    "invalid_outlier_detection",
                    &format!("spec.outlier_detection.{field}"),
                    "must be more than 0",
                )
                .hint(hint);
            r.diagnostics.push(d);
            *ok = false;
        }
    }
    Some(OutlierDetection {
        consecutive_5xx: spec.consecutive_5xx,
        consecutive_gateway_failure: spec.consecutive_gateway_failure,
        interval_ms: spec.interval_ms,
        base_ejection_time_ms: spec.base_ejection_time_ms,
        max_ejection_percent: spec.max_ejection_percent,
    })
}

impl Default for ClusterSettings {
    /// What a Mapping that sets nothing gets (Emissary's defaults).
    fn default() -> Self {
        ClusterSettings {
            http2: false,
            preserve_header_case: false,
            idle_timeout_ms: None,
            max_connection_lifetime_ms: None,
            keepalive: None,
            circuit_breakers: Vec::new(),
            logical_dns: false,
            respect_dns_ttl: false,
            dns_lookup_family: "V4_ONLY",
            stats_name: None,
            tag: None,
            originate_tls: false,
            tls_context: None,
            lb_policy: "ROUND_ROBIN",
            health_checks: Vec::new(),
            outlier_detection: None,
        }
    }
}

/// Reads `<base>.circuit_breakers`.
pub(crate) fn read_circuit_breakers(
    r: &mut Reader<'_>,
    spec: &[CircuitBreakerSpec],
    base: &str,
    ok: &mut bool,
) -> Vec<CircuitBreaker> {
    let mut out = Vec::new();
    for (i, cb) in spec.iter().enumerate() {
        let priority = match cb.priority.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("default") => "DEFAULT",
            Some("high") => "HIGH",
            Some(other) => {
                let d = r
                    .error(
                        "invalid_priority",
                        &format!("{base}.circuit_breakers[{i}].priority"),
                        format!("`{other}` is not a priority"),
                    )
                    .hint("`default` or `high`");
                r.diagnostics.push(d);
                *ok = false;
                "DEFAULT"
            }
        };
        // Envoy takes the first thresholds of a priority and ignores the others.
        if out.iter().any(|c: &CircuitBreaker| c.priority == priority) {
            let d = r
                .warning(
                    "duplicate_priority",
                    &format!("{base}.circuit_breakers[{i}]"),
                    format!(
                        "a second circuit breaker for priority `{}`; ignored",
                        priority.to_ascii_lowercase()
                    ),
                )
                .hint("one circuit breaker per priority (`default`, `high`): Envoy uses the first one");
            r.diagnostics.push(d);
            continue;
        }
        out.push(CircuitBreaker {
            priority,
            max_connections: cb.max_connections,
            max_pending_requests: cb.max_pending_requests,
            max_requests: cb.max_requests,
            max_retries: cb.max_retries,
        });
    }
    out
}

/// Envoy's `dns_lookup_family` for `enable_ipv4` and `enable_ipv6` (Emissary's defaults: IPv4
/// on, IPv6 off); `None` when both are off.
pub(crate) fn dns_lookup_family(v4: Option<bool>, v6: Option<bool>) -> Option<&'static str> {
    match (v4.unwrap_or(true), v6.unwrap_or(false)) {
        (true, false) => Some("V4_ONLY"),
        (false, true) => Some("V6_ONLY"),
        (true, true) => Some("AUTO"),
        (false, false) => None,
    }
}

/// Reads `<base>.load_balancer`: Envoy's `lb_policy` and the route's hash policy.
pub(crate) fn read_load_balancer(
    r: &mut Reader<'_>,
    spec: Option<&LoadBalancerSpec>,
    base: &str,
    ok: &mut bool,
) -> (&'static str, Option<HashPolicy>) {
    let Some(lb) = spec else {
        return ("ROUND_ROBIN", None);
    };
    let policy = match lb.policy.to_ascii_lowercase().as_str() {
        "round_robin" => "ROUND_ROBIN",
        "least_request" => "LEAST_REQUEST",
        "ring_hash" => "RING_HASH",
        "maglev" => "MAGLEV",
        other => {
            let d = r
                .error(
                    "invalid_lb_policy",
                    &format!("{base}.load_balancer.policy"),
                    format!("`{other}` is not a load balancing policy"),
                )
                .hint("one of round_robin, least_request, ring_hash, maglev");
            r.diagnostics.push(d);
            *ok = false;
            "ROUND_ROBIN"
        }
    };
    let sources =
        usize::from(lb.cookie.is_some()) + usize::from(lb.header.is_some()) + usize::from(lb.source_ip == Some(true));
    let hashed = matches!(policy, "RING_HASH" | "MAGLEV");
    let path = format!("{base}.load_balancer");
    if sources > 1 {
        let d = r
            .error(
                "conflicting_hash",
                &path,
                "only one of `cookie`, `header` and `source_ip` can be set",
            )
            .hint("choose what requests are kept together by");
        r.diagnostics.push(d);
        *ok = false;
    } else if sources == 1 && !hashed {
        let d = r
            .warning(
                "hash_without_hashing_policy",
                &path,
                format!(
                    "`cookie`, `header` and `source_ip` only work with ring_hash or maglev, not {}; ignored",
                    lb.policy
                ),
            )
            .hint("set `policy: ring_hash` for session affinity");
        r.diagnostics.push(d);
    }
    let ttl_ms = match lb.cookie.as_ref().and_then(|c| c.ttl.as_deref()).map(parse_duration_ms) {
        Some(Err(e)) => {
            let d = r
                .error("invalid_duration", &format!("{path}.cookie.ttl"), e)
                .hint("write a duration such as `60s` or `1h`");
            r.diagnostics.push(d);
            *ok = false;
            None
        }
        Some(Ok(ms)) => Some(ms),
        None => None,
    };
    let hash = if !hashed {
        None
    } else if let Some(c) = &lb.cookie {
        Some(HashPolicy::Cookie {
            name: c.name.clone(),
            path: c.path.clone(),
            ttl_ms,
        })
    } else if let Some(h) = &lb.header {
        Some(HashPolicy::Header {
            name: h.to_ascii_lowercase(),
        })
    } else if lb.source_ip == Some(true) {
        Some(HashPolicy::SourceIp)
    } else {
        None
    };
    (policy, hash)
}

/// The cluster settings of a Mapping (and the route's hash policy, which its load balancer
/// decides): circuit breakers, DNS, address families, load balancing, health checks, TLS.
pub(super) fn read_settings(
    r: &mut Reader<'_>,
    spec: &super::MappingSpec,
    ok: &mut bool,
) -> (ClusterSettings, Option<HashPolicy>) {
    let circuit_breakers = read_circuit_breakers(r, &spec.circuit_breakers, "spec", ok);
    let logical_dns = match spec.dns_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("strict_dns") => false,
        Some("logical_dns") => true,
        Some(other) => {
            let d = r
                .error(
                    "invalid_dns_type",
                    "spec.dns_type",
                    format!("`{other}` is not a DNS type"),
                )
                .hint("`strict_dns` (every address the name resolves to) or `logical_dns` (the first one)");
            r.diagnostics.push(d);
            *ok = false;
            false
        }
    };
    let dns_lookup_family = match dns_lookup_family(spec.enable_ipv4, spec.enable_ipv6) {
        Some(family) => family,
        None => {
            let d = r
                .error(
                    "no_ip_family",
                    "spec.enable_ipv4",
                    "IPv4 and IPv6 are both disabled: the service could not be reached",
                )
                .hint("enable at least one of enable_ipv4 and enable_ipv6");
            r.diagnostics.push(d);
            *ok = false;
            "V4_ONLY"
        }
    };
    let (lb_policy, hash_policy) = read_load_balancer(r, spec.load_balancer.as_ref(), "spec", ok);
    let health_checks = read_health_checks(r, &spec.health_checks, spec.grpc, ok);
    let cluster = ClusterSettings {
        health_checks,
        http2: spec.grpc,
        preserve_header_case: false,
        idle_timeout_ms: spec.cluster_idle_timeout_ms,
        max_connection_lifetime_ms: spec.cluster_max_connection_lifetime_ms,
        keepalive: spec.keepalive.clone().map(Into::into),
        circuit_breakers,
        logical_dns,
        respect_dns_ttl: spec.respect_dns_ttl.unwrap_or(false),
        dns_lookup_family,
        stats_name: spec.stats_name.clone(),
        tag: spec.cluster_tag.clone(),
        // `tls: true` reads as an https:// service (below), as Emissary converts it.
        originate_tls: matches!(spec.tls, Some(super::MappingTls::Context(_))),
        tls_context: match &spec.tls {
            Some(super::MappingTls::Context(name)) => Some(name.clone()),
            _ => None,
        },
        lb_policy,
        outlier_detection: spec
            .outlier_detection
            .as_ref()
            .and_then(|v| read_outlier_detection(r, v, ok))
            .map(Box::new),
    };
    (cluster, hash_policy)
}
