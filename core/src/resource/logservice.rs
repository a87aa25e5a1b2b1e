//! `LogService`: a gRPC access log service (Envoy's `envoy.service.accesslog.v3`) that receives
//! an entry for every HTTP request (`driver: http`) or connection (`driver: tcp`). Several may
//! coexist, each an access logger of its own, as in Emissary.

use serde::Deserialize;

use super::Reader;
use crate::lang::service::ServiceRef;

#[derive(Clone, Debug, Default, Deserialize)]
struct LogServiceSpec {
    service: Option<String>,
    driver: Option<String>,
    protocol_version: Option<String>,
    grpc: Option<bool>,
    flush_interval_byte_size: Option<u32>,
    flush_interval_time: Option<u32>,
    driver_config: Option<DriverConfigSpec>,
    stats_name: Option<String>,
    #[allow(dead_code, reason = "read by resource::parse before the spec")]
    ambassador_id: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DriverConfigSpec {
    #[serde(default)]
    additional_log_headers: Vec<HeaderSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderSpec {
    header_name: Option<String>,
    during_request: Option<bool>,
    during_response: Option<bool>,
    during_trailer: Option<bool>,
}

/// The field names of its spec (see `resource::fields`).
pub(super) fn spec_fields() -> &'static [&'static str] {
    super::fields::of::<LogServiceSpec>()
}

/// An access log service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogService {
    /// Where it listens (gRPC).
    pub service: ServiceRef,
    /// `http` (an entry per request) or `tcp` (per connection).
    pub http: bool,
    /// Entries are sent when this many bytes are buffered (Emissary's 16384 by default).
    pub buffer_size_bytes: u32,
    /// ... or after this many seconds (1 by default).
    pub flush_interval_s: u32,
    /// Request headers written into entries (`http` only).
    pub request_headers: Vec<String>,
    /// Response headers written into entries.
    pub response_headers: Vec<String>,
    /// Response trailers written into entries.
    pub response_trailers: Vec<String>,
    /// Its cluster's settings (HTTP/2: the service is gRPC; stats name).
    pub cluster: super::mapping::ClusterSettings,
}

/// Reads and checks a LogService spec.
pub(crate) fn read(r: &mut Reader<'_>) -> Option<LogService> {
    let spec: LogServiceSpec = r.spec(&|p| {
        p.starts_with("spec.flush_interval")
            .then(|| "a whole number (bytes, or seconds)".to_string())
    })?;
    let mut ok = true;
    let mut fail = |r: &mut Reader<'_>, path: &str, message: String, hint: &str| {
        let d = r.error("invalid_log_service", path, message).hint(hint);
        r.diagnostics.push(d);
        ok = false;
    };
    let http = match spec.driver.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => true,
        Some("tcp") => false,
        Some(other) => {
            fail(
                r,
                "spec.driver",
                format!("`{other}` is not a LogService driver"),
                "`http` (an entry per request) or `tcp` (per connection)",
            );
            true
        }
        None => {
            fail(
                r,
                "spec.driver",
                "a LogService needs `driver`".into(),
                "`http` (an entry per request) or `tcp` (per connection)",
            );
            true
        }
    };
    let service = match spec.service.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(text) => r.service("spec.service", text),
        None => {
            fail(
                r,
                "spec.service",
                "a LogService needs `service`: where to send entries".into(),
                "e.g. `service: als.monitoring:9001` (a gRPC server of envoy.service.accesslog.v3)",
            );
            None
        }
    };
    if let Some(v) = spec.protocol_version.as_deref().filter(|v| *v != "v3") {
        // Emissary's default is v2, which it then refuses; attache speaks v3 and says so.
        let d = r
            .notice(
                "protocol_version",
                "spec.protocol_version",
                format!("protocol_version `{v}` is not what Envoy speaks any more: entries are sent over v3"),
            )
            .hint("set `protocol_version: v3` (the service must implement envoy.service.accesslog.v3)");
        r.diagnostics.push(d);
    }
    if spec.grpc == Some(false) {
        let d = r
            .notice(
                "grpc",
                "spec.grpc",
                "an access log service is always spoken to over gRPC (HTTP/2): `grpc: false` is ignored",
            )
            .hint("remove `grpc: false`");
        r.diagnostics.push(d);
    }
    if spec.flush_interval_time == Some(0) {
        fail(
            r,
            "spec.flush_interval_time",
            "a flush interval of 0 s is not one".into(),
            "seconds between sends, e.g. 1 (the default)",
        );
    }
    let (mut request_headers, mut response_headers, mut response_trailers) = (Vec::new(), Vec::new(), Vec::new());
    let headers = spec.driver_config.map(|d| d.additional_log_headers).unwrap_or_default();
    if !http && !headers.is_empty() {
        fail(
            r,
            "spec.driver_config.additional_log_headers",
            "a `tcp` LogService logs connections, which have no headers".into(),
            "use `driver: http` to log headers",
        );
    }
    for (i, h) in headers.iter().enumerate() {
        let Some(name) = h.header_name.as_deref().filter(|n| !n.is_empty()) else {
            fail(
                r,
                &format!("spec.driver_config.additional_log_headers[{i}]"),
                "an additional log header needs `header_name`".into(),
                "e.g. `{header_name: x-request-id}`",
            );
            continue;
        };
        // Each defaults to true, as in Emissary.
        for (on, list) in [
            (h.during_request, &mut request_headers),
            (h.during_response, &mut response_headers),
            (h.during_trailer, &mut response_trailers),
        ] {
            if on.unwrap_or(true) && !list.iter().any(|n: &String| n.eq_ignore_ascii_case(name)) {
                list.push(name.to_ascii_lowercase());
            }
        }
    }
    let (Some(service), true) = (service, ok) else {
        return None;
    };
    Some(LogService {
        service,
        http,
        buffer_size_bytes: spec.flush_interval_byte_size.unwrap_or(16384),
        flush_interval_s: spec.flush_interval_time.unwrap_or(1),
        request_headers,
        response_headers,
        response_trailers,
        cluster: super::mapping::ClusterSettings {
            http2: true,
            stats_name: spec.stats_name,
            ..super::mapping::ClusterSettings::default()
        },
    })
}
