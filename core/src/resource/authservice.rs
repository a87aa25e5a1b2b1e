//! `AuthService`: an external authorization service asked about every request (Envoy's
//! `ext_authz`), over HTTP or gRPC. Mappings opt out with `bypass_auth` and pass context with
//! `auth_context_extensions`.

use serde::Deserialize;

use super::Reader;
use crate::lang::service::ServiceRef;

#[derive(Clone, Debug, Default, Deserialize)]
struct AuthServiceSpec {
    auth_service: Option<String>,
    path_prefix: Option<String>,
    proto: Option<String>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    allowed_request_headers: Vec<String>,
    #[serde(default)]
    allowed_authorization_headers: Vec<String>,
    failure_mode_allow: Option<bool>,
    status_on_error: Option<StatusOnError>,
    include_body: Option<IncludeBody>,
    allow_request_body: Option<bool>,
    #[serde(default)]
    add_auth_headers: std::collections::BTreeMap<String, String>,
    stats_name: Option<String>,
    #[serde(default)]
    circuit_breakers: Vec<super::mapping::CircuitBreakerSpec>,
    tls: Option<TlsField>,
    protocol_version: Option<String>,
    #[allow(dead_code, reason = "read by resource::parse before the spec")]
    ambassador_id: Option<serde_json::Value>,
}

/// The field names `spec` accepts (see `resource::fields`).
pub(super) fn spec_fields() -> &'static [&'static str] {
    super::fields::of::<AuthServiceSpec>()
}

#[derive(Clone, Debug, Default, Deserialize)]
struct StatusOnError {
    code: Option<u16>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncludeBody {
    max_bytes: u32,
    #[serde(default)]
    allow_partial: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum TlsField {
    On(bool),
    Context(String),
}

pub use crate::ir::values::AuthProto;

/// A valid AuthService.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthService {
    /// Where the service is.
    pub service: ServiceRef,
    /// Prefix added to the request path when asking (HTTP).
    pub path_prefix: String,
    /// HTTP or gRPC.
    pub proto: AuthProto,
    /// How long to wait for an answer, in milliseconds (Emissary's default 5000).
    pub timeout_ms: u64,
    /// Request headers sent to the service, beyond Envoy's and Emissary's defaults.
    pub allowed_request_headers: Vec<String>,
    /// Headers of the service's answer that go upstream with an allowed request.
    pub allowed_authorization_headers: Vec<String>,
    /// Allow requests when the service cannot be reached.
    pub failure_mode_allow: bool,
    /// Status sent when the service cannot be reached (Envoy's 403 when unset).
    pub status_on_error: Option<u16>,
    /// Send up to this many bytes of the request body, and whether a partial body is fine.
    pub include_body: Option<(u32, bool)>,
    /// Headers added to the check request (HTTP).
    pub add_auth_headers: Vec<(String, String)>,
    /// Settings of the service's cluster (stats name, circuit breakers, TLS).
    pub cluster: super::mapping::ClusterSettings,
}

/// Reads and checks an AuthService spec.
pub(crate) fn read(r: &mut Reader<'_>) -> Option<AuthService> {
    let spec: AuthServiceSpec =
        r.spec(&|p| (p == "spec.timeout_ms").then(|| "a whole number of milliseconds".to_string()))?;
    let Some(text) = spec.auth_service.filter(|s| !s.trim().is_empty()) else {
        let d = r
            .error(
                "missing_service",
                "spec.auth_service",
                "an AuthService needs `auth_service`: where to ask",
            )
            .hint("e.g. `auth_service: auth.default:3000`");
        r.diagnostics.push(d);
        return None;
    };
    let service = r.service("spec.auth_service", &text)?;
    let proto = match spec.proto.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("http") => AuthProto::Http,
        Some("grpc") => AuthProto::Grpc,
        Some(other) => {
            let d = r
                .error(
                    "invalid_proto",
                    "spec.proto",
                    format!("`{other}` is not an AuthService protocol"),
                )
                .hint("`http` or `grpc`");
            r.diagnostics.push(d);
            return None;
        }
    };
    let path_prefix = spec.path_prefix.unwrap_or_default();
    if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
        let d = r
            .error(
                "invalid_path_prefix",
                "spec.path_prefix",
                format!("`{path_prefix}` does not start with `/`"),
            )
            .hint("e.g. `path_prefix: /extauth`");
        r.diagnostics.push(d);
        return None;
    }
    let status_on_error = spec.status_on_error.and_then(|s| s.code);
    if let Some(code) = status_on_error.filter(|c| !(100..=599).contains(c)) {
        let d = r
            .error(
                "invalid_status",
                "spec.status_on_error.code",
                format!("{code} is not an HTTP status"),
            )
            .hint("e.g. 403 or 503");
        r.diagnostics.push(d);
        return None;
    }
    if let Some(v) = spec.protocol_version.as_deref().filter(|v| *v != "v3") {
        let d = r
            .warning(
                "unsupported_protocol_version",
                "spec.protocol_version",
                format!("protocol_version `{v}` is not used: attache speaks ext_authz v3"),
            )
            .hint("remove it or set `v3`");
        r.diagnostics.push(d);
    }
    let mut ok = true;
    let circuit_breakers = super::mapping::read_circuit_breakers(r, &spec.circuit_breakers, "spec", &mut ok);
    if !ok {
        return None;
    }
    // Emissary's `allow_request_body` is the old spelling of a 4 KiB `include_body`.
    let include_body = spec
        .include_body
        .map(|b| (b.max_bytes, b.allow_partial))
        .or_else(|| (spec.allow_request_body == Some(true)).then_some((4096, true)));
    let mut service = service;
    if matches!(spec.tls, Some(TlsField::On(true))) && service.scheme.is_none() {
        service.scheme = Some(crate::lang::service::Scheme::Https);
    }
    let cluster = super::mapping::ClusterSettings {
        stats_name: spec.stats_name,
        circuit_breakers,
        originate_tls: matches!(spec.tls, Some(TlsField::Context(_))),
        tls_context: match spec.tls {
            Some(TlsField::Context(c)) => Some(c),
            _ => None,
        },
        ..super::mapping::ClusterSettings::default()
    };
    let lower = |v: Vec<String>| v.into_iter().map(|h| h.to_ascii_lowercase()).collect();
    Some(AuthService {
        service,
        path_prefix,
        proto,
        timeout_ms: spec.timeout_ms.unwrap_or(5000),
        allowed_request_headers: lower(spec.allowed_request_headers),
        allowed_authorization_headers: lower(spec.allowed_authorization_headers),
        failure_mode_allow: spec.failure_mode_allow.unwrap_or(false),
        status_on_error,
        include_body,
        add_auth_headers: spec.add_auth_headers.into_iter().collect(),
        cluster,
    })
}
