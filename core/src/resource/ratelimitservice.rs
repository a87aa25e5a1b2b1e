//! `RateLimitService`: a gRPC rate limit service (Envoy's `envoy.service.ratelimit.v3`) asked
//! about every request whose route has rate limit labels (Mapping `labels`).

use serde::Deserialize;

use super::Reader;
use crate::lang::service::ServiceRef;

#[derive(Clone, Debug, Default, Deserialize)]
struct RateLimitServiceSpec {
    service: Option<String>,
    domain: Option<String>,
    protocol_version: Option<String>,
    timeout_ms: Option<u64>,
    failure_mode_deny: Option<bool>,
    tls: Option<TlsField>,
    stats_name: Option<String>,
    grpc: Option<GrpcSpec>,
    #[allow(dead_code, reason = "read by resource::parse before the spec")]
    ambassador_id: Option<serde_json::Value>,
}

/// `grpc`: the CRD declares `use_resource_exhausted_code`; Emissary's code reads
/// `rate_limited_as_resource_exhausted`. Both are read.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcSpec {
    #[serde(alias = "rate_limited_as_resource_exhausted")]
    use_resource_exhausted_code: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum TlsField {
    On(bool),
    Context(String),
}

/// The field names of its spec (see `resource::fields`).
pub(super) fn spec_fields() -> &'static [&'static str] {
    super::fields::of::<RateLimitServiceSpec>()
}

/// A rate limit service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitService {
    /// Where it listens (gRPC).
    pub service: ServiceRef,
    /// The descriptors' domain; `None`: the Module's `default_label_domain` (`ambassador`).
    pub domain: Option<String>,
    /// How long a request waits for its answer, in milliseconds (Emissary's 20 by default).
    pub timeout_ms: u64,
    /// Requests are refused (500) when the service cannot be asked; else they go through.
    pub failure_mode_deny: bool,
    /// Over-limit answers carry gRPC's RESOURCE_EXHAUSTED instead of UNAVAILABLE (gRPC requests).
    pub resource_exhausted: bool,
    /// Its cluster's settings (HTTP/2, TLS, stats name).
    pub cluster: super::mapping::ClusterSettings,
}

/// Reads and checks a RateLimitService spec.
pub(crate) fn read(r: &mut Reader<'_>) -> Option<RateLimitService> {
    let spec: RateLimitServiceSpec =
        r.spec(&|p| (p == "spec.timeout_ms").then(|| "a whole number of milliseconds".to_string()))?;
    let Some(text) = spec.service.filter(|s| !s.trim().is_empty()) else {
        let d = r
            .error(
                "missing_service",
                "spec.service",
                "a RateLimitService needs `service`: where to ask",
            )
            .hint("e.g. `service: ratelimit.default:8081` (a gRPC server of envoy.service.ratelimit.v3)");
        r.diagnostics.push(d);
        return None;
    };
    let mut service = r.service("spec.service", &text)?;
    match spec.protocol_version.as_deref() {
        None | Some("v3") => {}
        Some(v) => {
            // Emissary's default is v2, which Envoy no longer speaks: Emissary then leaves rate
            // limiting out. attache speaks v3 and says so.
            let d = r
                .notice(
                    "protocol_version",
                    "spec.protocol_version",
                    format!(
                        "protocol_version `{v}` is not what Envoy speaks any more: attache asks the service over v3"
                    ),
                )
                .hint("set `protocol_version: v3` (the service must implement envoy.service.ratelimit.v3)");
            r.diagnostics.push(d);
        }
    }
    if spec.timeout_ms == Some(0) {
        let d = r
            .error(
                "invalid_timeout",
                "spec.timeout_ms",
                "a timeout of 0 ms would fail every request",
            )
            .hint("Emissary's default is 20 ms");
        r.diagnostics.push(d);
        return None;
    }
    if spec.domain.as_deref().is_some_and(|d| d.trim().is_empty()) {
        let d = r
            .error("invalid_domain", "spec.domain", "`domain` is empty")
            .hint("the domain the rate limit service's configuration uses, e.g. `ambassador`");
        r.diagnostics.push(d);
        return None;
    }
    if matches!(spec.tls, Some(TlsField::On(true))) && service.scheme.is_none() {
        service.scheme = Some(crate::lang::service::Scheme::Https);
    }
    let cluster = super::mapping::ClusterSettings {
        http2: true,
        stats_name: spec.stats_name,
        originate_tls: matches!(spec.tls, Some(TlsField::Context(_))),
        tls_context: match spec.tls {
            Some(TlsField::Context(c)) => Some(c),
            _ => None,
        },
        ..super::mapping::ClusterSettings::default()
    };
    Some(RateLimitService {
        service,
        domain: spec.domain,
        timeout_ms: spec.timeout_ms.unwrap_or(20),
        failure_mode_deny: spec.failure_mode_deny.unwrap_or(false),
        resource_exhausted: spec.grpc.and_then(|g| g.use_resource_exhausted_code).unwrap_or(false),
        cluster,
    })
}
