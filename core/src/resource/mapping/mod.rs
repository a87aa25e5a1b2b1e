//! `Mapping`: route requests with a path prefix (and optional headers, method, host) to a service.

use std::collections::BTreeMap;

use serde::Deserialize;

mod cluster;
mod policy;

pub use cluster::*;
pub use policy::*;

use super::Reader;
use crate::lang::service::ServiceRef;

/// A header to match: a value for an exact match, `true` for "present" (v2 shorthand).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HeaderValue {
    /// The header must have exactly this value.
    Exact(String),
    /// `true`: the header must be present; `false` is rejected.
    Present(bool),
}

/// A header to add: a value, or `{value, append}` (append defaults to true, as in Emissary).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HeaderAdd {
    /// Just the value.
    Value(String),
    /// Value and whether to append to an existing header.
    Full {
        /// The value (may use Envoy `%COMMAND%`s).
        value: String,
        /// Append to an existing header (true) or replace it (false).
        append: Option<bool>,
    },
}

/// Which header lists a Mapping sets itself (`add_request_headers: {}` included: an empty one
/// keeps the Module's `defaults` off the Mapping, as in Emissary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OwnHeaders {
    /// `add_request_headers` is set.
    pub add_request: bool,
    /// `add_response_headers` is set.
    pub add_response: bool,
    /// `remove_request_headers` is set.
    pub remove_request: bool,
    /// `remove_response_headers` is set.
    pub remove_response: bool,
}

/// One name or a list of names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Names {
    /// None.
    #[default]
    None,
    /// One name.
    One(String),
    /// Several names.
    Many(Vec<String>),
}

impl Names {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            Names::None => Vec::new(),
            Names::One(s) => vec![s],
            Names::Many(v) => v,
        }
    }
}

pub use crate::ir::values::AddedHeader;

/// The spec as written (CRD spelling).
#[derive(Clone, Debug, Default, Deserialize)]
struct MappingSpec {
    prefix: Option<String>,
    service: Option<String>,
    rewrite: Option<String>,
    hostname: Option<String>,
    host: Option<String>,
    #[serde(default)]
    precedence: i32,
    timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    host_rewrite: Option<String>,
    add_request_headers: Option<BTreeMap<String, HeaderAdd>>,
    add_response_headers: Option<BTreeMap<String, HeaderAdd>>,
    remove_request_headers: Option<Names>,
    remove_response_headers: Option<Names>,
    #[serde(default)]
    headers: BTreeMap<String, HeaderValue>,
    #[serde(default)]
    regex_headers: BTreeMap<String, String>,
    #[serde(default)]
    query_parameters: BTreeMap<String, HeaderValue>,
    #[serde(default)]
    regex_query_parameters: BTreeMap<String, String>,
    #[serde(default)]
    prefix_regex: bool,
    #[serde(default)]
    prefix_exact: bool,
    case_sensitive: Option<bool>,
    weight: Option<u32>,
    #[serde(default)]
    host_redirect: bool,
    path_redirect: Option<String>,
    prefix_redirect: Option<String>,
    regex_redirect: Option<policy::RegexRewriteSpec>,
    redirect_response_code: Option<u16>,
    regex_rewrite: Option<policy::RegexRewriteSpec>,
    #[serde(default)]
    auto_host_rewrite: bool,
    #[serde(default)]
    allow_upgrade: Vec<String>,
    use_websocket: Option<bool>,
    // Merged into the routes with --allow-envoy-override (see `read_envoy_override`).
    envoy_override: Option<serde_json::Value>,
    // Read only to say why they are not used (see `not_used`).
    modules: Option<serde_json::Value>,
    docs: Option<serde_json::Value>,
    host_regex: Option<bool>,
    method_regex: Option<bool>,
    retry_policy: Option<RetryPolicySpec>,
    #[serde(default)]
    shadow: bool,
    #[serde(default)]
    grpc: bool,
    add_linkerd_headers: Option<bool>,
    tls: Option<MappingTls>,
    cors: Option<CorsSpec>,
    ip_allow: Option<Vec<IpEntrySpec>>,
    ip_deny: Option<Vec<IpEntrySpec>>,
    labels: Option<serde_json::Value>,
    outlier_detection: Option<serde_json::Value>,
    priority: Option<String>,
    error_response_overrides: Option<Vec<ErrorResponseSpec>>,
    bypass_error_response_overrides: Option<bool>,
    #[serde(default)]
    bypass_auth: bool,
    #[serde(default)]
    auth_context_extensions: BTreeMap<String, String>,
    cluster_idle_timeout_ms: Option<u64>,
    cluster_max_connection_lifetime_ms: Option<u64>,
    keepalive: Option<cluster::KeepaliveSpec>,
    #[serde(default)]
    circuit_breakers: Vec<CircuitBreakerSpec>,
    dns_type: Option<String>,
    respect_dns_ttl: Option<bool>,
    enable_ipv4: Option<bool>,
    enable_ipv6: Option<bool>,
    stats_name: Option<String>,
    cluster_tag: Option<String>,
    resolver: Option<String>,
    load_balancer: Option<LoadBalancerSpec>,
    #[serde(default)]
    health_checks: Vec<HealthCheckSpec>,
    method: Option<String>,
    #[allow(
        dead_code,
        reason = "read by resource::parse before the spec; declared so it is not reported as unknown"
    )]
    ambassador_id: Option<serde_json::Value>,
}

/// The field names `spec` accepts (see `resource::fields`).
pub(super) fn spec_fields() -> &'static [&'static str] {
    super::fields::of::<MappingSpec>()
}

/// A valid Mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Path prefix to match (`spec.prefix`).
    pub prefix: String,
    /// Where to send matching requests (`spec.service`), parsed.
    pub service: ServiceRef,
    /// `spec.service` as written, for messages.
    pub service_text: String,
    /// Prefix rewrite; Emissary's default is `/`, and `""` turns rewriting off.
    pub rewrite: String,
    /// The DNS glob of the hosts this Mapping serves (`spec.hostname`; a v2 Mapping's `host`,
    /// or `*` without one). Wins over `host`.
    pub hostname: Option<String>,
    /// `spec.host` when there is no `hostname`: an exact `:authority` (or a regex with
    /// `host_regex`); also an exact `:authority` entry of `headers`.
    pub host: Option<String>,
    /// Higher precedence routes are matched first.
    pub precedence: i32,
    /// Upstream request timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Upstream connect timeout in milliseconds (a setting of the service's cluster).
    pub connect_timeout_ms: Option<u64>,
    /// Idle timeout of the route's streams in milliseconds.
    pub idle_timeout_ms: Option<u64>,
    /// `Host` header sent upstream.
    pub host_rewrite: Option<String>,
    /// Headers added to requests, sorted by name.
    pub add_request_headers: Vec<AddedHeader>,
    /// Headers added to responses, sorted by name.
    pub add_response_headers: Vec<AddedHeader>,
    /// Headers removed from requests.
    pub remove_request_headers: Vec<String>,
    /// Headers removed from responses.
    pub remove_response_headers: Vec<String>,
    /// Which of the four header lists above the Mapping sets itself (even empty): the Module's
    /// `defaults` fill only the others.
    pub own_headers: OwnHeaders,
    /// Headers that must match (name → value or presence).
    pub headers: BTreeMap<String, HeaderValue>,
    /// HTTP method to match.
    pub method: Option<String>,
    /// Headers whose value must match a regular expression (RE2), by name.
    pub regex_headers: BTreeMap<String, String>,
    /// Query parameters that must match (value or presence), by name.
    pub query_parameters: BTreeMap<String, HeaderValue>,
    /// Query parameters whose value must match a regular expression, by name.
    pub regex_query_parameters: BTreeMap<String, String>,
    /// How `prefix` matches the path.
    pub path_kind: PathKind,
    /// Whether the path match is case sensitive (default true).
    pub case_sensitive: bool,
    /// `host` is a regular expression for `:authority` (`host_regex: true`, and no `hostname`).
    pub host_regex: bool,
    /// `method` is a regular expression (`method_regex: true`).
    pub method_regex: bool,
    /// Share of the traffic of its canary group, in percent (of a shadow: the share mirrored).
    pub weight: Option<u32>,
    /// `host_redirect: true`: redirect to the `service` host instead of proxying.
    pub redirect: Option<Box<Redirect>>,
    /// Path rewrite by regular expression (replaces `rewrite`, as in Emissary).
    pub regex_rewrite: Option<Box<RegexRewrite>>,
    /// Send the upstream host name as `Host`.
    pub auto_host_rewrite: bool,
    /// Upgrades allowed (`websocket`, ...).
    pub allow_upgrade: Vec<String>,
    /// Retries.
    pub retry_policy: Option<Box<RetryPolicy>>,
    /// A shadow: requests matching it are mirrored to its service; it serves none itself.
    pub shadow: bool,
    /// Settings of the upstream cluster (Mappings with different settings get different
    /// clusters, as in Emissary).
    pub cluster: ClusterSettings,
    /// `resolver`: the name of the resolver that finds the service's addresses (the Module's,
    /// else `kubernetes-service`, when unset).
    pub resolver: Option<String>,
    /// Session affinity for `ring_hash` / `maglev` load balancing (Envoy route `hash_policy`).
    pub hash_policy: Option<Box<HashPolicy>>,
    /// Whether `load_balancer` was set (else the Module's applies).
    pub load_balancer_set: bool,
    /// Whether `enable_ipv4` or `enable_ipv6` was set (else the Module's IP families apply).
    pub ip_families_set: bool,
    /// `add_linkerd_headers`, when set (else the Module's applies).
    pub add_linkerd_headers: Option<bool>,
    /// CORS.
    pub cors: Option<Box<Cors>>,
    /// `ip_allow` / `ip_deny`: replaces the Module's for this Mapping's routes (beyond Emissary,
    /// which has them on the Module only).
    pub ip_policy: Option<Box<IpPolicy>>,
    /// Rate limit labels (`labels`): by domain, label groups of actions.
    pub labels: RateLimitLabels,
    /// `error_response_overrides`: replace the Module's for this Mapping's routes.
    pub error_responses: Vec<ErrorResponse>,
    /// `bypass_error_response_overrides`: no custom error responses on its routes.
    pub bypass_error_responses: bool,
    /// The route's priority (`priority`): `HIGH` uses the cluster's high-priority circuit
    /// breakers; `None` is Envoy's default.
    pub priority: Option<RoutePriority>,
    /// `envoy_override`, as JSON text (keys sorted): fields merged into each of the Mapping's
    /// Envoy routes. Only with `--allow-envoy-override`; `None` otherwise.
    pub envoy_override: Option<String>,
    /// Requests are not checked by the AuthService.
    pub bypass_auth: bool,
    /// Context sent to the AuthService with each request (gRPC `context_extensions`).
    pub auth_context_extensions: BTreeMap<String, String>,
}

/// `tls`: a TLSContext name (TLS to the upstream with its client certificate and settings), or
/// v2's `true` (TLS, like an `https://` service).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum MappingTls {
    On(bool),
    Context(String),
}

/// A duration like `500ms`, `1.5s`, `2m` in milliseconds (Go's `time.ParseDuration` units).
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    let factor = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "" => return Err(format!("`{text}` has no unit")),
        other => return Err(format!("unknown unit `{other}` in `{text}`")),
    };
    let ms = n * factor;
    if !ms.is_finite() || !(0.0..1e12).contains(&ms) {
        return Err(format!("`{text}` is out of range"));
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "range checked above"
    )]
    Ok(ms.round() as u64)
}

pub use crate::ir::values::PathKind;

/// Checks an RE2 regular expression (Envoy's `safe_regex`), with what is wrong and where.
fn check_regex(re: &str) -> Result<(), String> {
    regex_syntax::ParserBuilder::new()
        .build()
        .parse(re)
        .map(|_| ())
        .map_err(|e| match e {
            regex_syntax::Error::Parse(p) => format!("{} (column {})", p.kind(), p.span().start.column),
            regex_syntax::Error::Translate(t) => format!("{} (column {})", t.kind(), t.span().start.column),
            other => other.to_string(),
        })
}

fn hint(path: &str) -> Option<String> {
    Some(
        match path {
            "spec.timeout_ms" => "timeout_ms is a whole number of milliseconds, e.g. `timeout_ms: 5000`",
            "spec.connect_timeout_ms" => {
                "connect_timeout_ms is a whole number of milliseconds, e.g. `connect_timeout_ms: 3000`"
            }
            "spec.precedence" => "precedence is an integer; higher values are matched first",
            p if p.starts_with("spec.headers") => {
                "headers maps a header name to the exact value to match (or `true` for presence)"
            }
            "spec.prefix" | "spec.service" | "spec.rewrite" | "spec.hostname" | "spec.host" => "this field is a string",
            "spec.weight" => "weight is a whole percentage of the canary group's traffic, 0 to 100",
            "spec.prefix_regex" | "spec.prefix_exact" | "spec.case_sensitive" => "this field is `true` or `false`",
            p if p.starts_with("spec.add_request_headers") || p.starts_with("spec.add_response_headers") => {
                "a header to add is `name: value` or `name: {value: ..., append: true|false}`"
            }
            p if p.starts_with("spec.query_parameters") => {
                "query_parameters maps a parameter name to the exact value to match (or `true` for presence)"
            }
            _ => return None,
        }
        .to_string(),
    )
}

/// v2 (and v1) `headers` and `query_parameters` entries set to `false` match nothing: Emissary's
/// conversion to v3alpha1 drops them, so the Mapping serves as if they were not written. Each is
/// dropped with a warning naming it.
fn drop_false_matches(r: &mut Reader<'_>, spec: &mut MappingSpec) {
    for (field, map) in [
        ("headers", &mut spec.headers),
        ("query_parameters", &mut spec.query_parameters),
    ] {
        let dropped: Vec<String> = map
            .iter()
            .filter(|(_, v)| **v == HeaderValue::Present(false))
            .map(|(k, _)| k.clone())
            .collect();
        for name in dropped {
            map.remove(&name);
            let d = r
                .warning(
                    "ignored_false_match",
                    &format!("spec.{field}.{name}"),
                    format!("`{name}: false` matches nothing and is ignored (as Emissary's conversion of {} Mappings ignores it): the Mapping matches with or without it", r.meta.api_version),
                )
                .hint("remove the entry; to require a value, write it as a string");
            r.diagnostics.push(d);
        }
    }
}

/// Which hosts a Mapping matches, in Emissary's v3alpha1 terms: `(hostname, host, host_regex)`.
///
/// - v3alpha1: `hostname` (a DNS glob) wins over `host` (an exact `:authority`, or a regex with
///   `host_regex`), which wins over an exact `:authority` in `headers`; a Mapping with none of
///   them has no hostname at all (only a Host's `mappingSelector` can select it).
/// - v2 and v1, as Emissary converts them: `host` is the hostname glob unless `host_regex`;
///   without `host` the hostname is `*` (with `host_regex` and no `host`, there is no hostname
///   at all, as Emissary's conversion leaves it).
///
/// The `:authority` header entry used (or overridden) is taken out of `headers`, as in Emissary.
fn host_match(
    r: &mut Reader<'_>,
    spec: &mut MappingSpec,
    legacy: bool,
    ok: &mut bool,
) -> (Option<String>, Option<String>, bool) {
    let regex = spec.host_regex.unwrap_or(false);
    let (mut hostname, mut host) = (spec.hostname.clone(), spec.host.clone());
    if legacy && !regex && hostname.is_none() {
        hostname = Some(host.take().unwrap_or_else(|| "*".to_string()));
    }
    let authority = spec
        .headers
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case(":authority") && matches!(v, HeaderValue::Exact(_)))
        .map(|(k, _)| k.clone());
    if let Some((key, HeaderValue::Exact(value))) = authority.and_then(|k| spec.headers.remove_entry(&k)) {
        let path = format!("spec.headers.{key}");
        if value.contains('*') {
            let d = r
                .error(
                    "invalid_host",
                    &path,
                    format!("the exact `:authority` match `{value}` contains `*`, which cannot match anything"),
                )
                .hint("use `hostname` for a DNS glob such as `*.example.com`");
            r.diagnostics.push(d);
            *ok = false;
        } else if let Some(over) = hostname.as_ref().or(host.as_ref()) {
            let d = r
                .warning(
                    "overridden_authority",
                    &path,
                    format!(
                        "the `:authority` match `{value}` is overridden by the host match `{over}`, as in Emissary"
                    ),
                )
                .hint(if legacy {
                    "a v2 Mapping without `host` matches every hostname (`*`): write the hostname as `host` instead"
                } else {
                    "remove the `:authority` entry, or the `hostname`/`host` that overrides it"
                });
            r.diagnostics.push(d);
        } else {
            host = Some(value);
        }
    }
    if let (Some(name), Some(h)) = (&hostname, &spec.host) {
        if !legacy {
            let d = r
                .warning("host_and_hostname", "spec.host", format!("both `host` and `hostname` are set: `hostname` (`{name}`) is used and `host` (`{h}`) is ignored, as in Emissary"))
                .hint("keep only `hostname`");
            r.diagnostics.push(d);
        }
        host = None;
    }
    // Only `host` itself is a regex: an exact `:authority` taken as the host stays exact.
    let host_regex = regex && spec.host.is_some() && host == spec.host;
    if let Some(h) = host.as_ref().filter(|h| !host_regex && h.contains('*')) {
        let d = r
            .error(
                "invalid_host",
                "spec.host",
                format!("`host` is an exact match, and `{h}` contains `*`, which cannot match anything"),
            )
            .hint("use `hostname` for a DNS glob such as `*.example.com`");
        r.diagnostics.push(d);
        *ok = false;
    }
    // DNS names ignore case: globs and exact hosts are kept lowercase (their `:authority`
    // conditions ignore case too); a regex is the user's.
    let hostname = hostname.map(|h| h.to_ascii_lowercase());
    let host = if host_regex {
        host
    } else {
        host.map(|h| h.to_ascii_lowercase())
    };
    (hostname, host, host_regex)
}

pub use crate::ir::values::RoutePriority;

/// Reads and checks a Mapping spec.
pub(crate) fn read(r: &mut Reader<'_>) -> Option<Mapping> {
    let mut spec: MappingSpec = r.spec(&hint)?;
    let mut ok = true;
    let legacy = !r.meta.api_version.ends_with("/v3alpha1");
    if legacy {
        drop_false_matches(r, &mut spec);
    }
    let (hostname, host, host_regex) = host_match(r, &mut spec, legacy, &mut ok);
    // Every missing required field at once, not one per edit.
    let prefix = spec.prefix.take().filter(|p| !p.is_empty());
    let service_text = spec.service.take().filter(|s| !s.trim().is_empty());
    if prefix.is_none() {
        let d = r
            .error("missing_prefix", "spec.prefix", "a Mapping needs a `prefix`")
            .hint("add e.g. `prefix: /backend/`; this Mapping was left out of the configuration");
        r.diagnostics.push(d);
    }
    if service_text.is_none() {
        let d = r
            .error("missing_service", "spec.service", "a Mapping needs a `service` to send requests to")
            .hint("add e.g. `service: quote:80` (or `name.namespace:port`); this Mapping was left out of the configuration");
        r.diagnostics.push(d);
    }
    let (Some(prefix), Some(service_text)) = (prefix, service_text) else {
        return None;
    };
    if !prefix.starts_with('/') {
        let d = r
            .error(
                "invalid_prefix",
                "spec.prefix",
                format!("prefix `{prefix}` does not start with `/`"),
            )
            .hint("write the path prefix as it appears in the URL, e.g. `/backend/`");
        r.diagnostics.push(d);
        ok = false;
    }
    let service = r.service("spec.service", &service_text);
    check_matches(r, &spec, &mut ok);
    not_used(r, &spec);
    let envoy_override = read_envoy_override(r, spec.envoy_override.take(), &mut ok);
    let [add_request_headers, add_response_headers] = read_added_headers(r, &spec, &mut ok);
    check_regexes(r, &spec, &prefix, host.as_deref().filter(|_| host_regex), &mut ok);
    let response_code = check_redirect(r, &spec, &mut ok);
    let retry_policy = read_retry_policy(r, spec.retry_policy.as_ref(), "spec", &mut ok);
    let cors = read_cors(r, spec.cors.as_ref(), "spec", &mut ok);
    let ip_policy = read_ip_policy(r, spec.ip_allow.as_deref(), spec.ip_deny.as_deref(), "spec", &mut ok);
    let labels = spec
        .labels
        .as_ref()
        .map(|l| read_labels(r, l, "spec.labels", &mut ok))
        .unwrap_or_default();
    let error_responses = read_error_responses(
        r,
        spec.error_response_overrides.as_deref().unwrap_or_default(),
        "spec",
        &mut ok,
    );
    let priority = match spec.priority.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("DEFAULT") => None,
        Some("HIGH") => Some(RoutePriority::High),
        Some(other) => {
            let d = r
                .error(
                    "invalid_priority",
                    "spec.priority",
                    format!("`{other}` is not a routing priority"),
                )
                .hint("`default` or `high` (high uses the cluster's HIGH circuit breakers)");
            r.diagnostics.push(d);
            ok = false;
            None
        }
    };
    for (i, u) in spec.allow_upgrade.iter().enumerate() {
        if u.trim().is_empty() {
            let d = r
                .error(
                    "invalid_upgrade",
                    &format!("spec.allow_upgrade[{i}]"),
                    "an empty upgrade type",
                )
                .hint("e.g. `allow_upgrade: [websocket]`");
            r.diagnostics.push(d);
            ok = false;
        }
    }
    let (cluster, hash_policy) = cluster::read_settings(r, &spec, &mut ok);
    if let Some(w) = spec.weight.filter(|w| *w > 100) {
        let d = r
            .error("invalid_weight", "spec.weight", format!("weight {w} is more than 100"))
            .hint("weight is a percentage of the traffic of the Mappings with the same match (a canary group)");
        r.diagnostics.push(d);
        ok = false;
    }
    let mut service = service?;
    if matches!(spec.tls, Some(MappingTls::On(true))) && service.scheme.is_none() {
        service.scheme = Some(crate::lang::service::Scheme::Https);
    }
    if !ok {
        return None;
    }
    let redirect = spec.host_redirect.then(|| Redirect {
        host: service_text.trim().to_string(),
        path: spec.path_redirect,
        prefix: spec.prefix_redirect,
        regex: spec.regex_redirect.map(Into::into),
        response_code,
    });
    Some(Mapping {
        envoy_override,
        prefix,
        service,
        service_text,
        rewrite: spec.rewrite.unwrap_or_else(|| "/".to_string()),
        hostname,
        host,
        precedence: spec.precedence,
        timeout_ms: spec.timeout_ms,
        connect_timeout_ms: spec.connect_timeout_ms,
        idle_timeout_ms: spec.idle_timeout_ms,
        host_rewrite: spec.host_rewrite,
        add_request_headers,
        add_response_headers,
        own_headers: OwnHeaders {
            add_request: spec.add_request_headers.is_some(),
            add_response: spec.add_response_headers.is_some(),
            remove_request: spec.remove_request_headers.is_some(),
            remove_response: spec.remove_response_headers.is_some(),
        },
        remove_request_headers: spec.remove_request_headers.unwrap_or_default().into_vec(),
        remove_response_headers: spec.remove_response_headers.unwrap_or_default().into_vec(),
        headers: spec.headers,
        method: spec.method,
        regex_headers: spec.regex_headers,
        query_parameters: spec.query_parameters,
        regex_query_parameters: spec.regex_query_parameters,
        path_kind: if spec.prefix_regex {
            PathKind::Regex
        } else if spec.prefix_exact {
            PathKind::Exact
        } else {
            PathKind::Prefix
        },
        case_sensitive: spec.case_sensitive.unwrap_or(true),
        weight: spec.weight,
        host_regex,
        method_regex: spec.method_regex.unwrap_or(false),
        redirect: redirect.map(Box::new),
        regex_rewrite: spec.regex_rewrite.map(|r| Box::new(r.into())),
        auto_host_rewrite: spec.auto_host_rewrite,
        allow_upgrade: {
            let mut u: Vec<String> = spec
                .allow_upgrade
                .iter()
                .map(|u| u.trim().to_ascii_lowercase())
                .collect();
            // `use_websocket: true` is the old spelling of `allow_upgrade: [websocket]`.
            if spec.use_websocket == Some(true) && !u.iter().any(|x| x == "websocket") {
                u.push("websocket".to_string());
            }
            u
        },
        retry_policy: retry_policy.map(Box::new),
        shadow: spec.shadow,
        cluster,
        resolver: spec.resolver.clone(),
        hash_policy: hash_policy.map(Box::new),
        load_balancer_set: spec.load_balancer.is_some(),
        ip_families_set: spec.enable_ipv4.is_some() || spec.enable_ipv6.is_some(),
        add_linkerd_headers: spec.add_linkerd_headers,
        cors: cors.map(Box::new),
        ip_policy: ip_policy.map(Box::new),
        labels,
        error_responses,
        bypass_error_responses: spec.bypass_error_response_overrides.unwrap_or(false),
        priority,
        bypass_auth: spec.bypass_auth,
        auth_context_extensions: spec.auth_context_extensions,
    })
}

/// Checks the header matches: `false` is not one.
fn check_matches(r: &mut Reader<'_>, spec: &MappingSpec, ok: &mut bool) {
    for (name, value) in &spec.headers {
        if *value == HeaderValue::Present(false) {
            let d = r
                .error(
                    "invalid_header",
                    &format!("spec.headers.{name}"),
                    "`false` is not a header match",
                )
                .hint("use `true` to require the header, or a string to match its value");
            r.diagnostics.push(d);
            *ok = false;
        }
    }
}

/// `envoy_override`: a map of Envoy Route fields merged into each route of the Mapping, when the
/// operator allows it (`--allow-envoy-override`); a warning saying so otherwise. Its fields are
/// checked with the route, when it is rendered.
fn read_envoy_override(r: &mut Reader<'_>, value: Option<serde_json::Value>, ok: &mut bool) -> Option<String> {
    let value = value?;
    if !r.options.allow_envoy_override {
        let d = r
            .warning(
                "envoy_override_disabled",
                "spec.envoy_override",
                "`envoy_override` is ignored: attache runs without --allow-envoy-override",
            )
            .hint("an operator turns it on with `--allow-envoy-override` (it lets a Mapping's author change anything on its Envoy routes); or ask for a rule pack (rules/README.md)");
        r.diagnostics.push(d);
        return None;
    }
    if !value.is_object() {
        let d = r
            .error(
                "invalid_field",
                "spec.envoy_override",
                "`envoy_override` must be a map of Envoy Route fields (e.g. `route: {idle_timeout: 30s}`)",
            )
            .hint("fix the field; this Mapping was left out of the configuration");
        r.diagnostics.push(d);
        *ok = false;
        return None;
    }
    Some(value.to_string())
}

/// Keys Emissary 3 accepts that attache does not use: a warning each, with why.
fn not_used(r: &mut Reader<'_>, spec: &MappingSpec) {
    for (key, set, why) in [
        (
            "modules",
            spec.modules.is_some(),
            "Emissary 3 does not read it either; Module settings go in the `ambassador` Module",
        ),
        (
            "docs",
            spec.docs.is_some(),
            "it describes the service for Emissary's developer portal, which attache does not serve",
        ),
    ] {
        if set {
            r.not_used(&format!("spec.{key}"), key, why);
        }
    }
}

/// `add_request_headers` and `add_response_headers`, their values checked as Envoy header
/// formats.
fn read_added_headers(r: &mut Reader<'_>, spec: &MappingSpec, ok: &mut bool) -> [Vec<AddedHeader>; 2] {
    let empty = BTreeMap::new();
    [
        read_added(
            r,
            "spec.add_request_headers",
            spec.add_request_headers.as_ref().unwrap_or(&empty),
            ok,
        ),
        read_added(
            r,
            "spec.add_response_headers",
            spec.add_response_headers.as_ref().unwrap_or(&empty),
            ok,
        ),
    ]
}

/// Headers to add, written at `path`, their values checked as Envoy header formats.
pub(crate) fn read_added(
    r: &mut Reader<'_>,
    path: &str,
    headers: &BTreeMap<String, HeaderAdd>,
    ok: &mut bool,
) -> Vec<AddedHeader> {
    let mut added = Vec::new();
    for (name, add) in headers {
        let (value, append) = match add {
            HeaderAdd::Value(v) => (v.clone(), true),
            HeaderAdd::Full { value, append } => (value.clone(), append.unwrap_or(true)),
        };
        if let Err(e) = crate::lang::header_format::check(&value) {
            let mut d = r
                .error("invalid_header_value", &format!("{path}.{name}"), format!("header value `{value}`: {} (column {})", e.message, e.offset + 1))
                .hint("values are text with Envoy %COMMAND%s such as %DOWNSTREAM_REMOTE_ADDRESS% or %REQ(x-request-id)%; write %% for a literal percent sign");
            if let Some(origin) = &mut d.origin {
                origin.column += u32::try_from(e.offset).unwrap_or(0);
            }
            r.diagnostics.push(d);
            *ok = false;
        }
        added.push(AddedHeader {
            name: name.clone(),
            value,
            append,
        });
    }
    added
}

/// Checks the regular expressions (of the prefix, a regex host, method, headers, query
/// parameters, rewrite and redirect), the query parameter matches (`false` is not one) and that
/// the path is not both a regex and exact.
fn check_regexes(r: &mut Reader<'_>, spec: &MappingSpec, prefix: &str, host_regex: Option<&str>, ok: &mut bool) {
    let mut regexes: Vec<(String, &str)> = Vec::new();
    if spec.prefix_regex {
        regexes.push(("spec.prefix".to_string(), prefix));
    }
    if let Some(h) = host_regex {
        regexes.push(("spec.host".to_string(), h));
    }
    if let (Some(true), Some(m)) = (spec.method_regex, &spec.method) {
        regexes.push(("spec.method".to_string(), m.as_str()));
    }
    for (field, map) in [
        ("regex_headers", &spec.regex_headers),
        ("regex_query_parameters", &spec.regex_query_parameters),
    ] {
        regexes.extend(
            map.iter()
                .map(|(name, re)| (format!("spec.{field}.{name}"), re.as_str())),
        );
    }
    for (path, re) in regexes {
        if let Err(e) = check_regex(re) {
            let d = r
                .error(
                    "invalid_regex",
                    &path,
                    format!("`{re}` is not a valid regular expression: {e}"),
                )
                .hint("Envoy uses RE2 syntax (no lookaround or backreferences); the whole value must match");
            r.diagnostics.push(d);
            *ok = false;
        }
    }
    for (name, value) in &spec.query_parameters {
        if *value == HeaderValue::Present(false) {
            let d = r
                .error(
                    "invalid_query_parameter",
                    &format!("spec.query_parameters.{name}"),
                    "`false` is not a query parameter match",
                )
                .hint("use `true` to require the parameter, or a string to match its value");
            r.diagnostics.push(d);
            *ok = false;
        }
    }
    if spec.prefix_regex && spec.prefix_exact {
        let d = r
            .error(
                "conflicting_match",
                "spec.prefix_exact",
                "`prefix_regex` and `prefix_exact` cannot both be true",
            )
            .hint("choose a regular expression or an exact path");
        r.diagnostics.push(d);
        *ok = false;
    }
    let mut regex_fields: Vec<(&str, &policy::RegexRewriteSpec)> = Vec::new();
    if let Some(r) = &spec.regex_rewrite {
        regex_fields.push(("spec.regex_rewrite.pattern", r));
    }
    if let Some(r) = &spec.regex_redirect {
        regex_fields.push(("spec.regex_redirect.pattern", r));
    }
    for (path, rr) in regex_fields {
        if let Err(e) = check_regex(&rr.pattern) {
            let d = r
                .error(
                    "invalid_regex",
                    path,
                    format!("`{}` is not a valid regular expression: {e}", rr.pattern),
                )
                .hint("Envoy uses RE2 syntax (no lookaround or backreferences)");
            r.diagnostics.push(d);
            *ok = false;
        }
    }
}

/// Checks the redirect fields; Envoy's name of the redirect's response code.
fn check_redirect(r: &mut Reader<'_>, spec: &MappingSpec, ok: &mut bool) -> &'static str {
    let response_code = match spec.redirect_response_code.filter(|_| spec.host_redirect) {
        None | Some(301) => "MOVED_PERMANENTLY",
        Some(302) => "FOUND",
        Some(303) => "SEE_OTHER",
        Some(307) => "TEMPORARY_REDIRECT",
        Some(308) => "PERMANENT_REDIRECT",
        Some(other) => {
            let d = r
                .error(
                    "invalid_redirect_code",
                    "spec.redirect_response_code",
                    format!("{other} is not a redirect code Envoy can send"),
                )
                .hint("use 301, 302, 303, 307 or 308");
            r.diagnostics.push(d);
            *ok = false;
            "MOVED_PERMANENTLY"
        }
    };
    let redirect_fields = [
        ("spec.path_redirect", spec.path_redirect.is_some()),
        ("spec.prefix_redirect", spec.prefix_redirect.is_some()),
        ("spec.regex_redirect", spec.regex_redirect.is_some()),
        ("spec.redirect_response_code", spec.redirect_response_code.is_some()),
    ];
    if !spec.host_redirect {
        if let Some((path, _)) = redirect_fields.iter().find(|(_, set)| *set) {
            let d = r
                .warning(
                    "redirect_without_host_redirect",
                    path,
                    "only used with `host_redirect: true`; ignored",
                )
                .hint("set `host_redirect: true` (the service is then the host to redirect to)");
            r.diagnostics.push(d);
        }
    } else if redirect_fields[..3].iter().filter(|(_, set)| *set).count() > 1 {
        let d = r
            .error(
                "conflicting_redirect",
                "spec",
                "only one of `path_redirect`, `prefix_redirect` and `regex_redirect` can be set",
            )
            .hint("keep the one you mean");
        r.diagnostics.push(d);
        *ok = false;
    }
    response_code
}
