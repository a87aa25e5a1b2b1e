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
    })
}
