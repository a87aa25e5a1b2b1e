//! The IR's value types: what IR nodes carry beyond plain strings and numbers (route policies,
//! cluster settings, the `ambassador` Module's connection manager settings, TLS settings), shaped
//! as the template context shows them (a public API of rule packs). The readers in `resource`
//! produce them from what users wrote; this module imports nothing from `resource`.

use serde::Serialize;

/// Envoy's access log of HTTP requests (the Module's `envoy_log_type`, `envoy_log_path` and
/// `envoy_log_format`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AccessLog {
    /// A file on the Envoy host; `null`: Envoy's standard output.
    pub path: Option<String>,
    /// A line format (`%COMMAND%`s, ending in a newline), or `null`.
    pub text: Option<String>,
    /// A JSON format: keys to format strings (numbers, booleans and nested maps kept), or `null`.
    /// Neither: Envoy's default line.
    pub json: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A header to add, checked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct AddedHeader {
    /// Header name.
    pub name: String,
    /// Value (may use Envoy `%COMMAND%`s).
    pub value: String,
    /// Append to an existing header rather than replace it.
    pub append: bool,
}

/// How attache talks to the authorization service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthProto {
    /// The request (headers, no body) is sent to `path_prefix` + its path; 2xx allows.
    Http,
    /// Envoy's `envoy.service.auth.v3.Authorization` gRPC service.
    Grpc,
}

/// `brotli` (beyond Emissary): response compression with brotli, for clients that accept it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Brotli {
    /// 0 to 11 (Envoy: 3).
    pub quality: Option<u32>,
    /// 10 to 24 (Envoy: 18).
    pub window_bits: Option<u32>,
    /// Smallest response compressed, in bytes.
    pub min_content_length: Option<u32>,
    /// Media types compressed (Envoy's list when empty).
    pub content_type: Vec<String>,
}

/// One circuit breaker threshold set (Envoy `CircuitBreakers.Thresholds`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct CircuitBreaker {
    /// `DEFAULT` or `HIGH` (the thresholds of routes with `priority: HIGH`).
    pub priority: &'static str,
    /// Most connections, or `null` for Envoy's default.
    pub max_connections: Option<u32>,
    /// Most requests waiting for a connection, or `null` for Envoy's default.
    pub max_pending_requests: Option<u32>,
    /// Most requests in flight, or `null` for Envoy's default.
    pub max_requests: Option<u32>,
    /// Most retries in flight, or `null` for Envoy's default.
    pub max_retries: Option<u32>,
}

/// `set_current_client_cert_details`: what of a client certificate goes upstream in
/// `x-forwarded-client-cert` (Envoy's field of the same name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ClientCertDetails {
    /// The subject.
    pub subject: bool,
    /// The certificate, URL-encoded PEM.
    pub cert: bool,
    /// The whole chain, URL-encoded PEM.
    pub chain: bool,
    /// DNS subject alternative names.
    pub dns: bool,
    /// URI subject alternative names.
    pub uri: bool,
}

/// The cluster settings a Mapping asks for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct ClusterSettings {
    /// HTTP/2 to the upstream (the Mapping's `grpc: true`).
    pub http2: bool,
    /// Idle timeout of upstream connections in milliseconds (the Mapping's
    /// `cluster_idle_timeout_ms`, else the Module's), or `null` for Envoy's.
    pub idle_timeout_ms: Option<u64>,
    /// Longest life of an upstream connection in milliseconds (the Mapping's
    /// `cluster_max_connection_lifetime_ms`, else the Module's), or `null` for no limit.
    pub max_connection_lifetime_ms: Option<u64>,
    /// TCP keepalive of upstream connections (the Mapping's `keepalive`, else the Module's), or
    /// `null`; each value in it may be `null` (the system's default).
    pub keepalive: Option<Keepalive>,
    /// Circuit breakers (the Mapping's `circuit_breakers`, else the Module's), one threshold set
    /// per priority; `priority` is `DEFAULT` or `HIGH`, and limits not given are `null`.
    pub circuit_breakers: Vec<CircuitBreaker>,
    /// `LOGICAL_DNS` instead of `STRICT_DNS` for DNS names (`dns_type: logical_dns`); then
    /// `discovery` is `logical_dns`.
    pub logical_dns: bool,
    /// Use the DNS record's TTL to refresh (`respect_dns_ttl`).
    pub respect_dns_ttl: bool,
    /// Envoy's `dns_lookup_family`: `V4_ONLY` (default), `V6_ONLY` or `AUTO` (from the
    /// Mapping's `enable_ipv4` / `enable_ipv6`, else the Module's).
    pub dns_lookup_family: &'static str,
    /// Stats name of the cluster (the Mapping's `stats_name`, else the Module's `defaults`;
    /// Envoy `alt_stat_name`), or `null`.
    pub stats_name: Option<String>,
    /// `cluster_tag`, or `null`: only makes a cluster of its own (Envoy has no such field).
    pub tag: Option<String>,
    /// Whether the Mapping originates TLS with a TLSContext (`tls: <TLSContext>`): the setting
    /// behind `tls` and `upstream_tls` (an `https://` service or `tls: true` shows only in `tls`).
    pub originate_tls: bool,
    /// The name of the TLSContext whose client certificate, SNI and ALPN are used upstream
    /// (the setting behind `upstream_tls`), or `null`.
    pub tls_context: Option<String>,
    /// Envoy `lb_policy`: `ROUND_ROBIN` (default), `LEAST_REQUEST`, `RING_HASH` or `MAGLEV`
    /// (the Mapping's `load_balancer`, else the Module's).
    pub lb_policy: &'static str,
    /// Active health checks (`health_checks`); each has either `http` or `grpc`, the other is
    /// `null`.
    pub health_checks: Vec<HealthCheck>,
    /// Passive health checking (`outlier_detection`): hosts that fail are ejected for a while.
    /// `null` when not set; values not given are `null` (Envoy's defaults).
    // Boxed: rarely set, and the settings are held by every Mapping, cluster key and cluster.
    pub outlier_detection: Option<Box<OutlierDetection>>,
    /// HTTP/1 header names keep the case they came with (the Module's
    /// `header_case_overrides`); never with `http2`.
    pub preserve_header_case: bool,
}

/// Cross-origin resource sharing (Envoy's CORS filter, per route).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct Cors {
    /// Allowed origins (`*` for any).
    pub origins: Vec<String>,
    /// Allowed methods.
    pub methods: Vec<String>,
    /// Allowed request headers.
    pub headers: Vec<String>,
    /// Response headers exposed to scripts.
    pub exposed_headers: Vec<String>,
    /// `Access-Control-Allow-Credentials`.
    pub credentials: bool,
    /// `Access-Control-Max-Age`, in seconds, as text.
    pub max_age: Option<String>,
}

/// A span tag: a literal, an environment variable of Envoy's, or a request header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct CustomTag {
    /// The tag's name.
    pub tag: String,
    /// `literal`, `environment` or `request_header`.
    pub kind: &'static str,
    /// The literal's value, or the variable's or header's name.
    pub value: String,
    /// For a variable or header: the value when it is absent.
    pub default_value: Option<String>,
}

/// The tracer Envoy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// Zipkin over HTTP (JSON or protobuf).
    Zipkin,
    /// OpenTelemetry over gRPC (OTLP).
    Opentelemetry,
    /// Datadog's agent.
    Datadog,
}

/// A custom error response: the body that replaces a response with this status.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct ErrorResponse {
    /// The status it replaces the body of (400 to 599).
    pub status: u16,
    /// A text body (Envoy `%COMMAND%`s substituted), or `null`.
    pub text: Option<String>,
    /// A JSON body: keys to format strings, or `null`.
    pub json: Option<std::collections::BTreeMap<String, String>>,
    /// The body's `Content-Type` (Envoy's default for the format when `null`).
    pub content_type: Option<String>,
}

/// A gRPC health check (`grpc.health.v1.Health`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct GrpcHealthCheck {
    /// Service name asked about, or `null` for the server as a whole.
    pub service_name: Option<String>,
    /// `:authority` sent, or `null`.
    pub authority: Option<String>,
}

/// `grpc_stats`: Envoy's gRPC statistics filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct GrpcStats {
    /// Upstream request time statistics.
    pub upstream_stats: bool,
    /// Statistics per method for these services only (`null`: see `all_methods`).
    pub services: Option<Vec<GrpcStatsService>>,
    /// Without `services`: statistics for every method (else one bucket for unknown ones).
    pub all_methods: bool,
}

/// A gRPC service whose methods get stats of their own (`grpc_stats.services`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct GrpcStatsService {
    /// The fully qualified service name.
    pub name: String,
    /// Its methods (all of them when empty).
    pub method_names: Vec<String>,
}

/// `gzip`: response compression (Envoy's compressor filter with the gzip library). Unset values
/// are Envoy's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Gzip {
    /// zlib memory level, 1 to 9.
    pub memory_level: Option<u32>,
    /// Smallest response compressed, in bytes.
    pub min_content_length: Option<u32>,
    /// Envoy's name of the level (`BEST_COMPRESSION`, `BEST_SPEED`, `COMPRESSION_LEVEL_1`..9,
    /// `DEFAULT_COMPRESSION`).
    pub compression_level: Option<&'static str>,
    /// Envoy's name of the strategy (`DEFAULT_STRATEGY`, `FILTERED`, `HUFFMAN_ONLY`, `RLE`,
    /// `FIXED`).
    pub compression_strategy: Option<&'static str>,
    /// zlib window bits, 9 to 15.
    pub window_bits: Option<u32>,
    /// Media types compressed (Envoy's list when empty).
    pub content_type: Vec<String>,
    /// Leave responses with an `ETag` alone.
    pub disable_on_etag_header: bool,
    /// Drop `Accept-Encoding` before the request goes upstream.
    pub remove_accept_encoding_header: bool,
}

/// What a request is hashed on for `ring_hash` / `maglev` (Envoy `RouteAction.HashPolicy`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashPolicy {
    /// A cookie (Envoy creates it when `ttl_ms` is set and the request has none).
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Lifetime in milliseconds.
        ttl_ms: Option<u64>,
    },
    /// A request header.
    Header {
        /// Header name.
        name: String,
    },
    /// The client's address.
    SourceIp,
}

/// How header names are written to HTTP/1 peers (Envoy keeps them lowercase by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HeaderCase {
    /// `proper_case`: `Proper-Case` names to clients, as in Emissary.
    ProperCase,
    /// `header_case_overrides`: names keep the case they came with, both ways (Envoy's
    /// preserve-case formatter; Emissary's exact per-name rewriting needs its own Envoy build).
    Preserve,
}

/// Active health checking of an upstream (Envoy `HealthCheck`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct HealthCheck {
    /// Time between checks, in milliseconds (Emissary's default 5 s).
    pub interval_ms: u64,
    /// Time to wait for an answer, in milliseconds (Emissary's default 3 s).
    pub timeout_ms: u64,
    /// Failed checks before an endpoint is unhealthy (default 2).
    pub unhealthy_threshold: u32,
    /// Passed checks before it is healthy again (default 1).
    pub healthy_threshold: u32,
    /// HTTP check: `{path, hostname, expected_statuses: [[start, end)]}`, or `null`.
    pub http: Option<HttpHealthCheck>,
    /// gRPC check: `{service_name, authority}`, or `null`.
    pub grpc: Option<GrpcHealthCheck>,
}

/// An HTTP health check.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct HttpHealthCheck {
    /// Path requested.
    pub path: String,
    /// `Host` sent, or `null` for the cluster name.
    pub hostname: Option<String>,
    /// Healthy status ranges, `[start, end)` (Envoy's 200 only when empty).
    pub expected_statuses: Vec<(u16, u16)>,
}

/// An IP allow or deny list (Module or Mapping `ip_allow` / `ip_deny`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct IpPolicy {
    /// `ALLOW` (`ip_allow`: only requests from these addresses) or `DENY` (`ip_deny`: every
    /// request but those).
    pub action: &'static str,
    /// The addresses, in the order written.
    pub principals: Vec<IpPrincipal>,
}

/// One address range of an [`IpPolicy`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct IpPrincipal {
    /// `remote`: the client's address as the connection manager sees it (after
    /// `X-Forwarded-For` and the trusted hops); `peer`: the address of the connection itself.
    pub source: &'static str,
    /// The address (of a CIDR range: its address part).
    pub address: String,
    /// The prefix length (32 or 128 for a single address).
    pub prefix_len: u8,
}

/// TCP keepalive of upstream connections (`keepalive`; seconds).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct Keepalive {
    /// Idle seconds before probes start (the Mapping's `idle_time`), or `null` for the
    /// system's default.
    pub time: Option<u32>,
    /// Seconds between probes, or `null` for the system's default.
    pub interval: Option<u32>,
    /// Unanswered probes before the connection is dropped, or `null` for the system's default.
    pub probes: Option<u32>,
}

/// Envoy's outlier detection of a cluster; unset values are Envoy's defaults.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct OutlierDetection {
    /// Consecutive 5xx answers that eject a host (Envoy: 5).
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502, 503 or 504 that eject a host (Envoy: off).
    pub consecutive_gateway_failure: Option<u32>,
    /// Time between analyses, in milliseconds (Envoy: 10 s).
    pub interval_ms: Option<u64>,
    /// Base time a host stays ejected, in milliseconds (Envoy: 30 s).
    pub base_ejection_time_ms: Option<u64>,
    /// Most hosts ejected at once, in percent (Envoy: 10).
    pub max_ejection_percent: Option<u32>,
}

/// How a Mapping's `prefix` matches the request path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// The path starts with it.
    #[default]
    Prefix,
    /// The path is exactly it (`prefix_exact: true`).
    Exact,
    /// The whole path matches it as an RE2 regular expression (`prefix_regex: true`).
    Regex,
}

/// A percentage from 0 to 100, kept as its text (exact, hashable).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Percent(pub serde_json::Number);

/// One rate limit action of a label group: what the route puts into a descriptor for the rate
/// limit service (Envoy's `RateLimit.Action`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct RateLimitAction {
    /// `source_cluster`, `destination_cluster`, `remote_address`, `generic_key` or
    /// `request_headers`.
    pub kind: &'static str,
    /// The descriptor key of a `generic_key` (`generic_key` when unset) or `request_headers`.
    pub key: Option<String>,
    /// The value of a `generic_key`.
    pub value: Option<String>,
    /// The header of `request_headers`.
    pub header_name: Option<String>,
    /// `request_headers`: the descriptor is skipped, not the whole rate limit, when the header
    /// is absent.
    pub omit_if_not_present: bool,
}

/// Where a `host_redirect` Mapping sends clients.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct Redirect {
    /// Host (and port) to redirect to: the Mapping's `service`.
    pub host: String,
    /// `path_redirect`: replaces the whole path, or `null`.
    pub path: Option<String>,
    /// `prefix_redirect`: replaces the matched prefix, or `null`.
    pub prefix: Option<String>,
    /// `regex_redirect`: rewrites the path by regular expression, or `null`.
    pub regex: Option<RegexRewrite>,
    /// Envoy's name of the response code (`MOVED_PERMANENTLY` for 301, the default).
    pub response_code: &'static str,
}

/// `{pattern, substitution}`: an RE2 pattern and what replaces its matches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct RegexRewrite {
    /// RE2 regular expression.
    pub pattern: String,
    /// Replacement (`\1` for groups).
    pub substitution: String,
}

/// Retries (Envoy `RetryPolicy`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct RetryPolicy {
    /// Envoy's comma-separated retry conditions (`5xx,reset`).
    pub retry_on: String,
    /// How many retries (Envoy's default 1 when absent).
    pub num_retries: Option<u32>,
    /// Timeout of each try in milliseconds, or `null` (Envoy: the route's timeout).
    pub per_try_timeout_ms: Option<u64>,
}

/// A route's priority other than Envoy's default (one byte, where a name would take sixteen in
/// every Mapping and route).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub enum RoutePriority {
    /// The cluster's high-priority circuit breakers.
    #[serde(rename = "HIGH")]
    High,
}

/// How TLS is spoken (Envoy `CommonTlsContext.tls_params`, ALPN, client certificates).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct TlsSettings {
    /// ALPN protocols offered, in order.
    pub alpn_protocols: Vec<String>,
    /// Lowest version (`TLSv1_0` to `TLSv1_3`), or `null` for Envoy's default.
    pub min_version: Option<&'static str>,
    /// Highest version (`TLSv1_0` to `TLSv1_3`), or `null` for Envoy's default.
    pub max_version: Option<&'static str>,
    /// Cipher suites (OpenSSL names), or Envoy's defaults when empty.
    pub cipher_suites: Vec<String>,
    /// ECDH curves, or Envoy's defaults when empty.
    pub ecdh_curves: Vec<String>,
    /// Clients must present a certificate signed by the CA.
    pub cert_required: bool,
    /// The Secret with the CA certificate that client certificates are checked against:
    /// `[namespace, name]` as the Host or TLSContext names it, or `null` (the chain's
    /// `ca_secret` is its SDS name).
    pub ca_secret: Option<(String, String)>,
}
