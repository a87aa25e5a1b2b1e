//! `Module`: global settings. Only the Module named `ambassador` is read (as in Emissary); its
//! `spec.config` holds listener-wide settings and defaults for every Mapping.

use serde::Deserialize;

use super::mapping::{
    read_circuit_breakers, read_load_balancer, read_retry_policy, CircuitBreaker, CircuitBreakerSpec, HashPolicy,
    LoadBalancerSpec, RetryPolicy, RetryPolicySpec,
};
use super::Reader;

#[derive(Clone, Debug, Default, Deserialize)]
struct ModuleSpec {
    #[serde(default)]
    config: ConfigSpec,
    #[allow(dead_code, reason = "read by resource::parse before the spec")]
    ambassador_id: Option<serde_json::Value>,
}

/// One object or a list (Emissary's Module has one `circuit_breakers` object; Mappings a list).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl<T: Clone> OneOrMany<T> {
    fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ConfigSpec {
    use_remote_address: Option<bool>,
    xff_num_trusted_hops: Option<u32>,
    server_name: Option<String>,
    max_request_headers_kb: Option<u32>,
    listener_idle_timeout_ms: Option<u64>,
    merge_slashes: Option<bool>,
    reject_requests_with_escaped_slashes: Option<bool>,
    strip_matching_host_port: Option<bool>,
    suppress_envoy_headers: Option<bool>,
    cluster_request_timeout_ms: Option<u64>,
    retry_policy: Option<RetryPolicySpec>,
    #[serde(default)]
    circuit_breakers: OneOrMany<CircuitBreakerSpec>,
    cluster_idle_timeout_ms: Option<u64>,
    cluster_max_connection_lifetime_ms: Option<u64>,
    load_balancer: Option<LoadBalancerSpec>,
    add_linkerd_headers: Option<bool>,
    resolver: Option<String>,
    cors: Option<super::mapping::CorsSpec>,
    ip_allow: Option<Vec<super::mapping::IpEntrySpec>>,
    ip_deny: Option<Vec<super::mapping::IpEntrySpec>>,
    enable_grpc_web: Option<bool>,
    enable_grpc_http11_bridge: Option<bool>,
    grpc_stats: Option<GrpcStatsSpec>,
    lua_scripts: Option<String>,
    gzip: Option<GzipSpec>,
    buffer: Option<BufferSpec>,
    enable_http10: Option<bool>,
    allow_chunked_length: Option<bool>,
    preserve_external_request_id: Option<bool>,
    headers_with_underscores_action: Option<String>,
    default_label_domain: Option<String>,
    default_labels: Option<serde_json::Value>,
    error_response_overrides: Option<Vec<super::mapping::ErrorResponseSpec>>,
    keepalive: Option<super::mapping::KeepaliveSpec>,
    brotli: Option<BrotliSpec>,
    proper_case: Option<bool>,
    header_case_overrides: Option<serde_json::Value>,
    forward_client_cert_details: Option<String>,
    set_current_client_cert_details: Option<ClientCertDetailsSpec>,
    buffer_limit_bytes: Option<u32>,
    enable_ipv4: Option<bool>,
    enable_ipv6: Option<bool>,
    use_ambassador_namespace_for_service_resolution: Option<bool>,
    defaults: Option<serde_json::Value>,
    envoy_log_type: Option<String>,
    envoy_log_path: Option<String>,
    envoy_log_format: Option<serde_json::Value>,
    // Read only to say what attache does instead (see `unsupported`).
    regex_type: Option<serde_json::Value>,
    regex_max_size: Option<serde_json::Value>,
    use_proxy_proto: Option<serde_json::Value>,
    x_forwarded_proto_redirect: Option<serde_json::Value>,
    envoy_validation_timeout: Option<serde_json::Value>,
    debug_mode: Option<serde_json::Value>,
    prune_unreachable_routes: Option<serde_json::Value>,
    runtime_flags: Option<serde_json::Value>,
    auth_enabled: Option<serde_json::Value>,
    statsd: Option<serde_json::Value>,
    diagnostics: Option<serde_json::Value>,
    liveness_probe: Option<serde_json::Value>,
    readiness_probe: Option<serde_json::Value>,
    admin_port: Option<serde_json::Value>,
    diag_port: Option<serde_json::Value>,
    service_port: Option<serde_json::Value>,
}

pub use crate::ir::values::ClientCertDetails;

/// `set_current_client_cert_details` as written.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientCertDetailsSpec {
    #[serde(default)]
    subject: bool,
    #[serde(default)]
    cert: bool,
    #[serde(default)]
    chain: bool,
    #[serde(default)]
    dns: bool,
    #[serde(default)]
    uri: bool,
}

impl From<ClientCertDetailsSpec> for ClientCertDetails {
    fn from(s: ClientCertDetailsSpec) -> Self {
        ClientCertDetails {
            subject: s.subject,
            cert: s.cert,
            chain: s.chain,
            dns: s.dns,
            uri: s.uri,
        }
    }
}

pub use crate::ir::values::AccessLog;

pub use crate::ir::values::HeaderCase;

/// The Module's `defaults` for Mappings (Emissary's `defaults` element, class `httpmapping`
/// first, then the top level): used by Mappings that do not set the field themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappingDefaults {
    /// `add_request_headers`.
    pub add_request_headers: Option<Vec<super::mapping::AddedHeader>>,
    /// `add_response_headers`.
    pub add_response_headers: Option<Vec<super::mapping::AddedHeader>>,
    /// `remove_request_headers`.
    pub remove_request_headers: Option<Vec<String>>,
    /// `remove_response_headers`.
    pub remove_response_headers: Option<Vec<String>>,
    /// `stats_name`.
    pub stats_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BrotliSpec {
    quality: Option<u32>,
    window_bits: Option<u32>,
    min_content_length: Option<u32>,
    #[serde(default)]
    content_type: Vec<String>,
}

pub use crate::ir::values::Brotli;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcStatsSpec {
    upstream_stats: Option<bool>,
    all_methods: Option<bool>,
    services: Option<Vec<GrpcStatsServiceSpec>>,
}

/// A `grpc_stats.services` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcStatsServiceSpec {
    name: String,
    #[serde(default)]
    method_names: Vec<String>,
}

pub use crate::ir::values::GrpcStatsService;

pub use crate::ir::values::GrpcStats;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GzipSpec {
    memory_level: Option<u32>,
    min_content_length: Option<u32>,
    compression_level: Option<String>,
    compression_strategy: Option<String>,
    window_bits: Option<u32>,
    #[serde(default)]
    content_type: Vec<String>,
    disable_on_etag_header: Option<bool>,
    remove_accept_encoding_header: Option<bool>,
}

pub use crate::ir::values::Gzip;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BufferSpec {
    max_request_bytes: u32,
}

/// The field names of the Module's `spec.config` (see `resource::fields`).
pub(super) fn config_fields() -> &'static [&'static str] {
    super::fields::of::<ConfigSpec>()
}

/// The `ambassador` Module's settings, with Emissary's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmbassadorModule {
    /// Envoy trusts the connection's address for `X-Forwarded-For` and sets
    /// `X-Forwarded-Proto` itself (Emissary's default: true).
    pub use_remote_address: bool,
    /// Trusted `X-Forwarded-For` hops when a Listener does not set `l7Depth`.
    pub xff_num_trusted_hops: u32,
    /// The `Server` response header (Envoy's `envoy` when unset).
    pub server_name: Option<String>,
    /// Largest request headers, in KiB.
    pub max_request_headers_kb: Option<u32>,
    /// Idle timeout of downstream connections, in milliseconds.
    pub listener_idle_timeout_ms: Option<u64>,
    /// Merge adjacent slashes in paths.
    pub merge_slashes: bool,
    /// Answer 400 to requests whose path holds an escaped slash (`%2F`, `%2f`, `%5C`, `%5c`).
    pub reject_requests_with_escaped_slashes: bool,
    /// Drop the port from `Host:` only when it is the listener's port.
    pub strip_matching_host_port: bool,
    /// No `x-envoy-*` headers on requests and responses.
    pub suppress_envoy_headers: bool,
    /// Default upstream request timeout of Mappings (Emissary's 3000 ms when unset).
    pub cluster_request_timeout_ms: Option<u64>,
    /// Retry policy of Mappings without one.
    pub retry_policy: Option<RetryPolicy>,
    /// Circuit breakers of Mappings without any.
    pub circuit_breakers: Vec<CircuitBreaker>,
    /// Upstream connection idle timeout of Mappings without one, in milliseconds.
    pub cluster_idle_timeout_ms: Option<u64>,
    /// Upstream connection lifetime of Mappings without one, in milliseconds.
    pub cluster_max_connection_lifetime_ms: Option<u64>,
    /// Load balancing of Mappings without `load_balancer`: `lb_policy` and hash policy.
    pub load_balancer: Option<(&'static str, Option<HashPolicy>)>,
    /// Add `l5d-dst-override` to requests (for Linkerd), unless a Mapping says otherwise.
    pub add_linkerd_headers: bool,
    /// The resolver of Mappings that name none.
    pub resolver: Option<String>,
    /// CORS of Mappings without their own.
    pub cors: Option<super::mapping::Cors>,
    /// `ip_allow` / `ip_deny`: who may send requests (the RBAC filter), unless a Mapping has its
    /// own.
    pub ip_policy: Option<super::mapping::IpPolicy>,
    /// gRPC-Web requests are translated to gRPC (`enable_grpc_web`).
    pub grpc_web: bool,
    /// HTTP/1.1 gRPC requests are bridged to HTTP/2 (`enable_grpc_http11_bridge`).
    pub grpc_http1_bridge: bool,
    /// gRPC statistics.
    pub grpc_stats: Option<GrpcStats>,
    /// Lua code run on every request and response (`lua_scripts`).
    pub lua_scripts: Option<String>,
    /// Response compression.
    pub gzip: Option<Gzip>,
    /// Requests are buffered up to this many bytes; larger ones get 413 (`buffer`).
    pub buffer_max_request_bytes: Option<u32>,
    /// HTTP/1.0 requests are accepted (`enable_http10`).
    pub enable_http10: bool,
    /// HTTP/1 requests with both `Content-Length` and chunked encoding are accepted.
    pub allow_chunked_length: bool,
    /// A client's `X-Request-Id` is kept.
    pub preserve_external_request_id: bool,
    /// What happens to request headers with `_` in their name: `ALLOW`, `REJECT_REQUEST` or
    /// `DROP_HEADER`; `null` for Envoy's default (allow).
    pub headers_with_underscores_action: Option<&'static str>,
    /// The domain of Mappings' rate limit labels when the RateLimitService names none
    /// (`default_label_domain`; `ambassador`).
    pub default_label_domain: String,
    /// Rate limit actions put before every label group of a domain, and the only group of
    /// routes without labels (`default_labels: {<domain>: {defaults: [...]}}`).
    pub default_labels: std::collections::BTreeMap<String, Vec<super::mapping::RateLimitAction>>,
    /// Custom error responses (`error_response_overrides`), unless a Mapping has its own.
    pub error_responses: Vec<super::mapping::ErrorResponse>,
    /// TCP keepalive of Mappings' upstream connections, unless a Mapping sets its own.
    pub keepalive: Option<super::mapping::Keepalive>,
    /// Brotli response compression (beyond Emissary).
    pub brotli: Option<Brotli>,
    /// How header names are written to HTTP/1 peers, `None` for Envoy's lowercase.
    pub header_case: Option<HeaderCase>,
    /// `forward_client_cert_details`: Envoy's `SANITIZE` (default), `FORWARD_ONLY`,
    /// `APPEND_FORWARD`, `SANITIZE_SET` or `ALWAYS_FORWARD_ONLY`.
    pub forward_client_cert_details: Option<&'static str>,
    /// `set_current_client_cert_details`.
    pub set_current_client_cert_details: Option<ClientCertDetails>,
    /// Listeners' `per_connection_buffer_limit_bytes` (`buffer_limit_bytes`).
    pub buffer_limit_bytes: Option<u32>,
    /// The DNS lookup family of Mappings that set neither `enable_ipv4` nor `enable_ipv6`.
    pub dns_lookup_family: Option<&'static str>,
    /// Bare service names resolve in attache's namespace, whatever the Mapping's
    /// (`use_ambassador_namespace_for_service_resolution`).
    pub services_in_ambassador_namespace: bool,
    /// `defaults` for Mappings.
    pub mapping_defaults: MappingDefaults,
    /// The access log of HTTP requests.
    pub access_log: AccessLog,
}

impl Default for AmbassadorModule {
    fn default() -> Self {
        AmbassadorModule {
            use_remote_address: true,
            xff_num_trusted_hops: 0,
            server_name: None,
            max_request_headers_kb: None,
            listener_idle_timeout_ms: None,
            merge_slashes: false,
            reject_requests_with_escaped_slashes: false,
            strip_matching_host_port: false,
            suppress_envoy_headers: false,
            cluster_request_timeout_ms: None,
            retry_policy: None,
            circuit_breakers: Vec::new(),
            cluster_idle_timeout_ms: None,
            cluster_max_connection_lifetime_ms: None,
            load_balancer: None,
            add_linkerd_headers: false,
            resolver: None,
            cors: None,
            ip_policy: None,
            grpc_web: false,
            grpc_http1_bridge: false,
            grpc_stats: None,
            lua_scripts: None,
            gzip: None,
            buffer_max_request_bytes: None,
            enable_http10: false,
            allow_chunked_length: false,
            preserve_external_request_id: false,
            headers_with_underscores_action: None,
            default_label_domain: "ambassador".to_string(),
            default_labels: std::collections::BTreeMap::new(),
            error_responses: Vec::new(),
            keepalive: None,
            brotli: None,
            header_case: None,
            forward_client_cert_details: None,
            set_current_client_cert_details: None,
            buffer_limit_bytes: None,
            dns_lookup_family: None,
            services_in_ambassador_namespace: false,
            mapping_defaults: MappingDefaults::default(),
            access_log: AccessLog::default(),
        }
    }
}

/// Reads a Module; `None` for Modules other than `ambassador` (with a notice) or bad ones.
pub(crate) fn read(r: &mut Reader<'_>) -> Option<AmbassadorModule> {
    if r.meta.name != "ambassador" {
        let d = super::Diagnostic::notice(
            "module.ignored",
            format!(
                "Module `{}` is not read by attache (only the Module named `ambassador` is); ignored",
                r.meta.name
            ),
        )
        .at(r.meta.origin.clone())
        .on(r.meta.object_ref());
        r.diagnostics.push(d);
        return None;
    }
    let spec: ModuleSpec = r.spec(&|p| {
        (p.starts_with("spec.config.") && p.ends_with("_ms")).then(|| "a whole number of milliseconds".to_string())
    })?;
    let c = spec.config;
    let mut ok = true;
    let retry_policy = read_retry_policy(r, c.retry_policy.as_ref(), "spec.config", &mut ok);
    let cors = super::mapping::read_cors(r, c.cors.as_ref(), "spec.config", &mut ok);
    let ip_policy =
        super::mapping::read_ip_policy(r, c.ip_allow.as_deref(), c.ip_deny.as_deref(), "spec.config", &mut ok);
    let circuit_breakers = read_circuit_breakers(r, &c.circuit_breakers.to_vec(), "spec.config", &mut ok);
    let load_balancer = c
        .load_balancer
        .as_ref()
        .map(|lb| read_load_balancer(r, Some(lb), "spec.config", &mut ok));
    let gzip = c.gzip.as_ref().map(|g| read_gzip(r, g, &mut ok));
    let headers_with_underscores_action = match c.headers_with_underscores_action.as_deref() {
        None => None,
        Some(a) => match a.to_ascii_uppercase().as_str() {
            "ALLOW" => Some("ALLOW"),
            "REJECT_REQUEST" => Some("REJECT_REQUEST"),
            "DROP_HEADER" => Some("DROP_HEADER"),
            _ => {
                let d = r
                    .error(
                        "invalid_value",
                        "spec.config.headers_with_underscores_action",
                        format!("`{a}` is not an action for headers with underscores"),
                    )
                    .hint("one of ALLOW, REJECT_REQUEST (400), DROP_HEADER");
                r.diagnostics.push(d);
                ok = false;
                None
            }
        },
    };
    if c.lua_scripts.as_deref().is_some_and(|l| l.trim().is_empty()) {
        let d = r
            .warning(
                "empty_lua_scripts",
                "spec.config.lua_scripts",
                "`lua_scripts` is empty; ignored",
            )
            .hint("write Lua functions `envoy_on_request(handle)` and/or `envoy_on_response(handle)`");
        r.diagnostics.push(d);
    }
    if c.buffer.as_ref().is_some_and(|b| b.max_request_bytes == 0) {
        let d = r
            .error(
                "invalid_value",
                "spec.config.buffer.max_request_bytes",
                "`max_request_bytes` must be more than 0",
            )
            .hint("the largest request body buffered, in bytes; larger requests are answered 413");
        r.diagnostics.push(d);
        ok = false;
    }
    let default_labels = c
        .default_labels
        .as_ref()
        .map(|l| read_default_labels(r, l, &mut ok))
        .unwrap_or_default();
    let error_responses = super::mapping::read_error_responses(
        r,
        c.error_response_overrides.as_deref().unwrap_or_default(),
        "spec.config",
        &mut ok,
    );
    unsupported(r, &c);
    let brotli = c.brotli.as_ref().map(|b| {
        for (field, v, range) in [("quality", b.quality, 0..=11), ("window_bits", b.window_bits, 10..=24)] {
            if let Some(v) = v.filter(|v| !range.contains(v)) {
                let d = r
                    .error(
                        "invalid_value",
                        &format!("spec.config.brotli.{field}"),
                        format!("{v} is not from {} to {}", range.start(), range.end()),
                    )
                    .hint("brotli's quality is 0 to 11, its window bits 10 to 24");
                r.diagnostics.push(d);
                ok = false;
            }
        }
        Brotli {
            quality: b.quality,
            window_bits: b.window_bits,
            min_content_length: b.min_content_length,
            content_type: b.content_type.clone(),
        }
    });
    let header_case = read_header_case(r, &c);
    let forward_client_cert_details = match c.forward_client_cert_details.as_deref() {
        None => None,
        Some(v) => match FORWARD_CLIENT_CERT.iter().find(|f| f.eq_ignore_ascii_case(v)) {
            Some(f) => Some(*f),
            None => {
                let d = r
                    .error(
                        "invalid_value",
                        "spec.config.forward_client_cert_details",
                        format!("`{v}` is not a way to handle `x-forwarded-client-cert`"),
                    )
                    .hint(format!("one of {}", FORWARD_CLIENT_CERT.join(", ")));
                r.diagnostics.push(d);
                ok = false;
                None
            }
        },
    };
    let dns_lookup_family = if c.enable_ipv4.is_some() || c.enable_ipv6.is_some() {
        match super::mapping::dns_lookup_family(c.enable_ipv4, c.enable_ipv6) {
            Some(family) => Some(family),
            None => {
                let d = r
                    .error(
                        "invalid_value",
                        "spec.config.enable_ipv4",
                        "`enable_ipv4` and `enable_ipv6` are both false: no address could be used",
                    )
                    .hint("enable at least one of enable_ipv4 and enable_ipv6");
                r.diagnostics.push(d);
                ok = false;
                None
            }
        }
    } else {
        None
    };
    if c.buffer_limit_bytes == Some(0) {
        let d = r
            .error(
                "invalid_value",
                "spec.config.buffer_limit_bytes",
                "`buffer_limit_bytes` must be more than 0",
            )
            .hint("the bytes Envoy buffers per connection (Envoy's default is 1 MiB)");
        r.diagnostics.push(d);
        ok = false;
    }
    let access_log = read_access_log(r, &c, &mut ok);
    let mapping_defaults = c
        .defaults
        .as_ref()
        .map(|d| read_mapping_defaults(r, d, &mut ok))
        .unwrap_or_default();
    if !ok {
        return None;
    }
    Some(AmbassadorModule {
        use_remote_address: c.use_remote_address.unwrap_or(true),
        xff_num_trusted_hops: c.xff_num_trusted_hops.unwrap_or(0),
        server_name: c.server_name,
        max_request_headers_kb: c.max_request_headers_kb,
        listener_idle_timeout_ms: c.listener_idle_timeout_ms,
        merge_slashes: c.merge_slashes.unwrap_or(false),
        reject_requests_with_escaped_slashes: c.reject_requests_with_escaped_slashes.unwrap_or(false),
        strip_matching_host_port: c.strip_matching_host_port.unwrap_or(false),
        suppress_envoy_headers: c.suppress_envoy_headers.unwrap_or(false),
        cluster_request_timeout_ms: c.cluster_request_timeout_ms,
        retry_policy,
        circuit_breakers,
        cluster_idle_timeout_ms: c.cluster_idle_timeout_ms,
        cluster_max_connection_lifetime_ms: c.cluster_max_connection_lifetime_ms,
        load_balancer,
        add_linkerd_headers: c.add_linkerd_headers.unwrap_or(false),
        resolver: c.resolver,
        cors,
        ip_policy,
        grpc_web: c.enable_grpc_web.unwrap_or(false),
        grpc_http1_bridge: c.enable_grpc_http11_bridge.unwrap_or(false),
        grpc_stats: c.grpc_stats.map(|g| GrpcStats {
            upstream_stats: g.upstream_stats.unwrap_or(false),
            all_methods: g.all_methods.unwrap_or(false),
            services: g.services.map(|list| {
                list.into_iter()
                    .map(|s| GrpcStatsService {
                        name: s.name,
                        method_names: s.method_names,
                    })
                    .collect()
            }),
        }),
        lua_scripts: c.lua_scripts.filter(|l| !l.trim().is_empty()),
        gzip: gzip.flatten(),
        buffer_max_request_bytes: c.buffer.map(|b| b.max_request_bytes),
        enable_http10: c.enable_http10.unwrap_or(false),
        allow_chunked_length: c.allow_chunked_length.unwrap_or(false),
        preserve_external_request_id: c.preserve_external_request_id.unwrap_or(false),
        headers_with_underscores_action,
        default_label_domain: c
            .default_label_domain
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| "ambassador".to_string()),
        default_labels,
        error_responses,
        keepalive: c.keepalive.map(Into::into),
        brotli,
        header_case,
        forward_client_cert_details,
        set_current_client_cert_details: c.set_current_client_cert_details.map(Into::into),
        buffer_limit_bytes: c.buffer_limit_bytes,
        dns_lookup_family,
        services_in_ambassador_namespace: c.use_ambassador_namespace_for_service_resolution.unwrap_or(false),
        mapping_defaults,
        access_log,
    })
}

/// The JSON access log format of `envoy_log_type: json` without `envoy_log_format`: Emissary's
/// key names, so that log pipelines built for Emissary read it.
fn default_json_log() -> serde_json::Map<String, serde_json::Value> {
    [
        ("start_time", "%START_TIME%"),
        ("method", "%REQ(:METHOD)%"),
        ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
        ("protocol", "%PROTOCOL%"),
        ("response_code", "%RESPONSE_CODE%"),
        ("response_flags", "%RESPONSE_FLAGS%"),
        ("bytes_received", "%BYTES_RECEIVED%"),
        ("bytes_sent", "%BYTES_SENT%"),
        ("duration", "%DURATION%"),
        ("upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"),
        ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
        ("user_agent", "%REQ(USER-AGENT)%"),
        ("request_id", "%REQ(X-REQUEST-ID)%"),
        ("authority", "%REQ(:AUTHORITY)%"),
        ("upstream_host", "%UPSTREAM_HOST%"),
        ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
        ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
        ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
        ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
        ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
        (
            "upstream_transport_failure_reason",
            "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
    .collect()
}

/// Reads `envoy_log_type` (`text`, the default; `json`; `typed_json`), `envoy_log_path` (an
/// absolute path on the Envoy host; standard output when unset) and `envoy_log_format` (a line
/// for `text`, a map for the JSON types), every `%COMMAND%` checked.
fn read_access_log(r: &mut Reader<'_>, c: &ConfigSpec, ok: &mut bool) -> AccessLog {
    let mut fail = |r: &mut Reader<'_>, path: String, message: String, hint: &str| {
        let d = r.error("invalid_access_log", &path, message).hint(hint);
        r.diagnostics.push(d);
        *ok = false;
    };
    let json = match c.envoy_log_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("text") => false,
        Some("json" | "typed_json") => true,
        Some(other) => {
            fail(
                r,
                "spec.config.envoy_log_type".into(),
                format!("`{other}` is not an access log type"),
                "`text` (the default), `json` or `typed_json`",
            );
            false
        }
    };
    let path = match c.envoy_log_path.as_deref() {
        // Standard output, as Emissary's default `/dev/fd/1` is.
        None | Some("/dev/fd/1" | "/dev/stdout") => None,
        Some(p) if p.starts_with('/') => Some(p.to_string()),
        Some(p) => {
            fail(
                r,
                "spec.config.envoy_log_path".into(),
                format!("`{p}` is not an absolute path"),
                "a file on the Envoy host such as /var/log/envoy/access.log (Envoy must be able to write it, or it refuses the listener), or /dev/stdout",
            );
            None
        }
    };
    let hint = "Envoy's access log %COMMAND%s such as %START_TIME%, %REQ(:PATH)%, %RESPONSE_CODE% or %DURATION%; `%%` for a literal percent sign";
    let mut log = AccessLog {
        path,
        ..AccessLog::default()
    };
    match (&c.envoy_log_format, json) {
        (None | Some(serde_json::Value::Null), false) => {}
        (None | Some(serde_json::Value::Null), true) => log.json = Some(default_json_log()),
        (Some(serde_json::Value::String(text)), false) => match crate::lang::header_format::check_access_log(text) {
            // Envoy writes the line as it is: one entry per line.
            Ok(()) => log.text = Some(if text.ends_with('\n') { text.clone() } else { format!("{text}\n") }),
            Err(e) => fail(
                r,
                "spec.config.envoy_log_format".into(),
                format!("`{text}`: {} (column {})", e.message, e.offset + 1),
                hint,
            ),
        },
        (Some(serde_json::Value::Object(map)), true) => {
            let mut bad = Vec::new();
            check_json_log(map, "spec.config.envoy_log_format", &mut bad);
            for (path, message) in bad {
                fail(r, path, message, hint);
            }
            log.json = Some(map.clone());
        }
        (Some(_), false) => fail(
            r,
            "spec.config.envoy_log_format".into(),
            "with `envoy_log_type: text`, `envoy_log_format` is one line of text".into(),
            "e.g. `envoy_log_format: \"%START_TIME% %REQ(:PATH)% %RESPONSE_CODE%\"`, or `envoy_log_type: json` for a map",
        ),
        (Some(_), true) => fail(
            r,
            "spec.config.envoy_log_format".into(),
            "with a JSON `envoy_log_type`, `envoy_log_format` is a map of keys to formats".into(),
            "e.g. `envoy_log_format: {status: \"%RESPONSE_CODE%\", path: \"%REQ(:PATH)%\"}`",
        ),
    }
    log
}

/// Checks a JSON access log format: strings are formats, numbers and booleans constants, maps
/// nested formats; lists and nulls are refused (Envoy's `json_format` has no use for them).
fn check_json_log(map: &serde_json::Map<String, serde_json::Value>, at: &str, bad: &mut Vec<(String, String)>) {
    for (k, v) in map {
        let path = format!("{at}.{k}");
        match v {
            serde_json::Value::String(text) => {
                if let Err(e) = crate::lang::header_format::check_access_log(text) {
                    bad.push((path, format!("`{text}`: {} (column {})", e.message, e.offset + 1)));
                }
            }
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {}
            serde_json::Value::Object(inner) => check_json_log(inner, &path, bad),
            _ => bad.push((path, "a value is a format string, a number, a boolean or a map".into())),
        }
    }
}

/// Envoy's ways to handle `x-forwarded-client-cert`.
const FORWARD_CLIENT_CERT: [&str; 5] = [
    "SANITIZE",
    "FORWARD_ONLY",
    "APPEND_FORWARD",
    "SANITIZE_SET",
    "ALWAYS_FORWARD_ONLY",
];

/// `proper_case` and `header_case_overrides` (a list of header names). Both set: `proper_case`
/// wins, as in Emissary, with a warning.
fn read_header_case(r: &mut Reader<'_>, c: &ConfigSpec) -> Option<HeaderCase> {
    let overrides = c.header_case_overrides.as_ref().filter(|v| !v.is_null());
    if let Some(v) = overrides {
        let names = v.as_array().filter(|l| l.iter().all(serde_json::Value::is_string));
        if names.is_none() {
            let d = r
                .warning(
                    "invalid_value",
                    "spec.config.header_case_overrides",
                    "`header_case_overrides` is a list of header names; ignored",
                )
                .hint("e.g. `header_case_overrides: [X-Legacy-Token]`");
            r.diagnostics.push(d);
        } else if c.proper_case == Some(true) {
            let d = r
                .warning(
                    "conflicting_keys",
                    "spec.config.header_case_overrides",
                    "`proper_case` and `header_case_overrides` are both set: `proper_case` is used, as in Emissary",
                )
                .hint("keep one of them");
            r.diagnostics.push(d);
        } else if names.is_some_and(|l| !l.is_empty()) {
            let d = r
                .notice(
                    "header_case_preserved",
                    "spec.config.header_case_overrides",
                    "header names keep the case they arrive with, in both directions, for every header: stock Envoy has no per-name case rules (Emissary's needed its own Envoy build)",
                )
                .hint("a client or service that sends a name in the case its peer expects is served as with Emissary; names Envoy adds itself stay lowercase");
            r.diagnostics.push(d);
            return Some(HeaderCase::Preserve);
        }
    }
    (c.proper_case == Some(true)).then_some(HeaderCase::ProperCase)
}

/// The keys Emissary's `defaults` gives Mappings (`httpmapping` first, then the top level).
const MAPPING_DEFAULTS: [&str; 5] = [
    "add_request_headers",
    "add_response_headers",
    "remove_request_headers",
    "remove_response_headers",
    "stats_name",
];

/// Reads `defaults`: `{httpmapping: {<key>: ...}, <key>: ...}` for [`MAPPING_DEFAULTS`].
fn read_mapping_defaults(r: &mut Reader<'_>, defaults: &serde_json::Value, ok: &mut bool) -> MappingDefaults {
    let mut out = MappingDefaults::default();
    let Some(top) = defaults.as_object() else {
        let d = r
            .error("invalid_value", "spec.config.defaults", "`defaults` is a map")
            .hint("e.g. `defaults: {httpmapping: {add_response_headers: {x-served-by: edge}}}`");
        r.diagnostics.push(d);
        *ok = false;
        return out;
    };
    let class = top.get("httpmapping").and_then(serde_json::Value::as_object);
    // Keys Emissary's defaults do not give Mappings, at the top level and in `httpmapping`.
    let unknown = top
        .keys()
        .filter(|k| *k != "httpmapping")
        .map(|k| ("spec.config.defaults", k))
        .chain(
            class
                .into_iter()
                .flat_map(|c| c.keys())
                .map(|k| ("spec.config.defaults.httpmapping", k)),
        )
        .filter(|(_, k)| !MAPPING_DEFAULTS.contains(&k.as_str()));
    for (at, key) in unknown {
        let d = r
            .warning(
                "unknown_field",
                &format!("{at}.{key}"),
                format!("`{key}` is not a default attache (or Emissary) gives Mappings; ignored"),
            )
            .hint(format!("defaults are {}", MAPPING_DEFAULTS.join(", ")));
        r.diagnostics.push(d);
    }
    for key in MAPPING_DEFAULTS {
        let (value, path) = match class.and_then(|c| c.get(key)) {
            Some(v) => (v, format!("spec.config.defaults.httpmapping.{key}")),
            None => match top.get(key) {
                Some(v) => (v, format!("spec.config.defaults.{key}")),
                None => continue,
            },
        };
        let mut bad = |r: &mut Reader<'_>, what: &str| {
            let d = r
                .error("invalid_value", &path, format!("`{key}` is {what}"))
                .hint("the same form as on a Mapping");
            r.diagnostics.push(d);
            *ok = false;
        };
        match key {
            "add_request_headers" | "add_response_headers" => {
                match serde_json::from_value::<std::collections::BTreeMap<String, super::mapping::HeaderAdd>>(
                    value.clone(),
                ) {
                    Ok(h) => {
                        let added = super::mapping::read_added(r, &path, &h, ok);
                        if key == "add_request_headers" {
                            out.add_request_headers = Some(added);
                        } else {
                            out.add_response_headers = Some(added);
                        }
                    }
                    Err(_) => bad(r, "a map of header names to values (or `{value, append}`)"),
                }
            }
            "remove_request_headers" | "remove_response_headers" => {
                match serde_json::from_value::<super::mapping::Names>(value.clone()) {
                    Ok(n) => {
                        let names = Some(n.into_vec());
                        if key == "remove_request_headers" {
                            out.remove_request_headers = names;
                        } else {
                            out.remove_response_headers = names;
                        }
                    }
                    Err(_) => bad(r, "a header name or a list of them"),
                }
            }
            _ => match value.as_str().filter(|s| !s.is_empty()) {
                Some(s) => out.stats_name = Some(s.to_string()),
                None => bad(r, "a non-empty string"),
            },
        }
    }
    out
}

/// Warns about Module keys attache does not use on purpose, saying what to use instead.
fn unsupported(r: &mut Reader<'_>, c: &ConfigSpec) {
    let keys: [(&str, bool, &str); 16] = [
        (
            "regex_type",
            c.regex_type.is_some(),
            "Envoy's v3 API has RE2 regular expressions only (Emissary's `unsafe` is gone too): every regex is RE2",
        ),
        (
            "regex_max_size",
            c.regex_max_size.is_some(),
            "Envoy limits RE2 program sizes through its runtime (`re2.max_program_size.error_level`), not per regex",
        ),
        (
            "use_proxy_proto",
            c.use_proxy_proto.is_some(),
            "give the Listener `protocol: HTTPPROXY` (or `HTTPSPROXY`) to expect a PROXY protocol header",
        ),
        (
            "x_forwarded_proto_redirect",
            c.x_forwarded_proto_redirect.is_some(),
            "a Host's `requestPolicy.insecure.action: Redirect` under an XFP Listener redirects cleartext requests",
        ),
        (
            "envoy_validation_timeout",
            c.envoy_validation_timeout.is_some(),
            "attache checks every resource against Envoy's schema and validation rules itself, without running `envoy --mode validate`",
        ),
        (
            "debug_mode",
            c.debug_mode.is_some(),
            "attache's log level is `RUST_LOG` (e.g. `RUST_LOG=attache=debug`), Envoy's `--envoy-arg=--log-level --envoy-arg=debug`",
        ),
        (
            "prune_unreachable_routes",
            c.prune_unreachable_routes.is_some(),
            "attache always puts a Mapping's routes only on the Hosts whose names it matches",
        ),
        (
            "runtime_flags",
            c.runtime_flags.is_some(),
            "Envoy's runtime is part of its bootstrap, which attache does not write from resources",
        ),
        (
            "auth_enabled",
            c.auth_enabled.is_some(),
            "an AuthService turns external authorization on (Emissary does not read this key either)",
        ),
        (
            "statsd",
            c.statsd.is_some(),
            "stats sinks are part of Envoy's bootstrap (Emissary configures StatsD through environment variables, not this key); scrape Envoy's Prometheus statistics instead",
        ),
        (
            "diagnostics",
            c.diagnostics.is_some(),
            "attache serves its diagnostics on its own admin port (`/debug/*`), not through Envoy",
        ),
        (
            "liveness_probe",
            c.liveness_probe.is_some(),
            "attache answers `/alive` on its own admin port",
        ),
        (
            "readiness_probe",
            c.readiness_probe.is_some(),
            "attache answers `/ready` on its own admin port",
        ),
        (
            "admin_port",
            c.admin_port.is_some(),
            "Envoy's admin port is a command-line flag (`--envoy-admin`)",
        ),
        (
            "diag_port",
            c.diag_port.is_some(),
            "attache's admin port is a command-line flag (`--admin-listen`)",
        ),
        (
            "service_port",
            c.service_port.is_some(),
            "ports come from Listeners",
        ),
    ];
    for (key, set, what) in keys {
        if set {
            r.not_used(&format!("spec.config.{key}"), key, what);
        }
    }
}

/// Reads `default_labels`: `{<domain>: {defaults: [specifier, ...]}}` (specifiers as in
/// Mapping `labels`).
fn read_default_labels(
    r: &mut Reader<'_>,
    labels: &serde_json::Value,
    ok: &mut bool,
) -> std::collections::BTreeMap<String, Vec<super::mapping::RateLimitAction>> {
    let mut out = std::collections::BTreeMap::new();
    let Some(domains) = labels.as_object() else {
        let d = r
            .error(
                "invalid_label",
                "spec.config.default_labels",
                "`default_labels` is a map of domains",
            )
            .hint("e.g. `default_labels: {ambassador: {defaults: [remote_address]}}`");
        r.diagnostics.push(d);
        *ok = false;
        return out;
    };
    for (domain, v) in domains {
        let path = format!("spec.config.default_labels.{domain}");
        let Some(defaults) = v
            .get("defaults")
            .filter(|_| v.as_object().is_some_and(|m| m.len() == 1))
        else {
            let d = r
                .error(
                    "invalid_label",
                    &path,
                    "a domain's default labels are `{defaults: [specifier, ...]}`",
                )
                .hint("e.g. `ambassador: {defaults: [remote_address]}`");
            r.diagnostics.push(d);
            *ok = false;
            continue;
        };
        // The same reader as a Mapping's labels: one group, named `defaults`.
        let wrapped = serde_json::json!({ domain.clone(): [{ "defaults": defaults }] });
        let read = super::mapping::read_labels(r, &wrapped, "spec.config.default_labels", ok);
        let actions = read
            .into_values()
            .next()
            .and_then(|g| g.into_iter().next())
            .unwrap_or_default();
        out.insert(domain.clone(), actions);
    }
    out
}

/// Reads `gzip`: Emissary's short level and strategy names (`BEST`, `SPEED`, `DEFAULT`,
/// `HUFFMAN`) and Envoy's own, and the ranges zlib accepts.
fn read_gzip(r: &mut Reader<'_>, g: &GzipSpec, ok: &mut bool) -> Option<Gzip> {
    let mut bad = |r: &mut Reader<'_>, field: &str, message: String, hint: &str| {
        let d = r
            .error("invalid_value", &format!("spec.config.gzip.{field}"), message)
            .hint(hint);
        r.diagnostics.push(d);
        *ok = false;
    };
    let level = match g.compression_level.as_deref().map(str::to_ascii_uppercase) {
        None => None,
        Some(l) => match l.as_str() {
            "BEST" | "BEST_COMPRESSION" => Some("BEST_COMPRESSION"),
            "SPEED" | "BEST_SPEED" => Some("BEST_SPEED"),
            "DEFAULT" | "DEFAULT_COMPRESSION" => Some("DEFAULT_COMPRESSION"),
            "COMPRESSION_LEVEL_1" => Some("COMPRESSION_LEVEL_1"),
            "COMPRESSION_LEVEL_2" => Some("COMPRESSION_LEVEL_2"),
            "COMPRESSION_LEVEL_3" => Some("COMPRESSION_LEVEL_3"),
            "COMPRESSION_LEVEL_4" => Some("COMPRESSION_LEVEL_4"),
            "COMPRESSION_LEVEL_5" => Some("COMPRESSION_LEVEL_5"),
            "COMPRESSION_LEVEL_6" => Some("COMPRESSION_LEVEL_6"),
            "COMPRESSION_LEVEL_7" => Some("COMPRESSION_LEVEL_7"),
            "COMPRESSION_LEVEL_8" => Some("COMPRESSION_LEVEL_8"),
            "COMPRESSION_LEVEL_9" => Some("COMPRESSION_LEVEL_9"),
            other => {
                bad(
                    r,
                    "compression_level",
                    format!("`{other}` is not a compression level"),
                    "BEST, SPEED or DEFAULT (or Envoy's COMPRESSION_LEVEL_1 to _9)",
                );
                None
            }
        },
    };
    let strategy = match g.compression_strategy.as_deref().map(str::to_ascii_uppercase) {
        None => None,
        Some(s) => match s.as_str() {
            "DEFAULT" | "DEFAULT_STRATEGY" => Some("DEFAULT_STRATEGY"),
            "FILTERED" => Some("FILTERED"),
            "HUFFMAN" | "HUFFMAN_ONLY" => Some("HUFFMAN_ONLY"),
            "RLE" => Some("RLE"),
            "FIXED" => Some("FIXED"),
            other => {
                bad(
                    r,
                    "compression_strategy",
                    format!("`{other}` is not a compression strategy"),
                    "DEFAULT, FILTERED, HUFFMAN, RLE or FIXED",
                );
                None
            }
        },
    };
    if let Some(m) = g.memory_level.filter(|m| !(1..=9).contains(m)) {
        bad(
            r,
            "memory_level",
            format!("{m} is not from 1 to 9"),
            "zlib's memory level: 1 (least) to 9 (most)",
        );
    }
    if let Some(w) = g.window_bits.filter(|w| !(9..=15).contains(w)) {
        bad(
            r,
            "window_bits",
            format!("{w} is not from 9 to 15"),
            "zlib's window size as a power of two: 9 to 15",
        );
    }
    Some(Gzip {
        memory_level: g.memory_level,
        min_content_length: g.min_content_length,
        compression_level: level,
        compression_strategy: strategy,
        window_bits: g.window_bits,
        content_type: g.content_type.clone(),
        disable_on_etag_header: g.disable_on_etag_header.unwrap_or(false),
        remove_accept_encoding_header: g.remove_accept_encoding_header.unwrap_or(false),
    })
}
