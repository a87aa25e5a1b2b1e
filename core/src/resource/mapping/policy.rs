//! A Mapping's route policies: CORS, retries, redirects and regex rewrites (the types and how
//! they are read). Shared with the Module, which sets defaults for CORS and retries.

use serde::Deserialize;

use super::super::Reader;
use super::parse_duration_ms;

/// `cors` as written: lists may be comma-separated strings (v2 style) or lists.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CorsSpec {
    #[serde(default)]
    origins: crate::resource::tlscontext::StringOrList,
    #[serde(default)]
    methods: crate::resource::tlscontext::StringOrList,
    #[serde(default)]
    headers: crate::resource::tlscontext::StringOrList,
    #[serde(default)]
    exposed_headers: crate::resource::tlscontext::StringOrList,
    credentials: Option<bool>,
    max_age: Option<serde_json::Value>,
}

/// Cross-origin resource sharing (Envoy's CORS filter, per route).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
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

/// Reads `<base>.cors`.
pub(crate) fn read_cors(r: &mut Reader<'_>, spec: Option<&CorsSpec>, base: &str, ok: &mut bool) -> Option<Cors> {
    let c = spec?;
    let max_age = match &c.max_age {
        None => None,
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => Some(n.to_string()),
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Some(s.clone()),
        Some(other) => {
            let d = r
                .error(
                    "invalid_max_age",
                    &format!("{base}.cors.max_age"),
                    format!("`{other}` is not a number of seconds"),
                )
                .hint("e.g. `max_age: \"86400\"`");
            r.diagnostics.push(d);
            *ok = false;
            None
        }
    };
    let origins = c.origins.items();
    if origins.is_empty() {
        let d = r
            .warning(
                "cors_without_origins",
                &format!("{base}.cors.origins"),
                "no origins: no cross-origin request is allowed",
            )
            .hint("list the origins allowed, e.g. `origins: https://app.example.com`, or `*`");
        r.diagnostics.push(d);
    }
    Some(Cors {
        origins,
        methods: c.methods.items(),
        headers: c.headers.items(),
        exposed_headers: c.exposed_headers.items(),
        credentials: c.credentials.unwrap_or(false),
        max_age,
    })
}

/// `{pattern, substitution}`: an RE2 pattern and what replaces its matches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 regular expression.
    pub pattern: String,
    /// Replacement (`\1` for groups).
    #[serde(default)]
    pub substitution: String,
}

/// Where a `host_redirect` Mapping sends clients.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Redirect {
    /// Host (and port) to redirect to: the Mapping's `service`.
    pub host: String,
    /// `path_redirect`: replaces the whole path.
    pub path: Option<String>,
    /// `prefix_redirect`: replaces the matched prefix.
    pub prefix: Option<String>,
    /// `regex_redirect`.
    pub regex: Option<RegexRewrite>,
    /// Envoy's name of the response code (`MOVED_PERMANENTLY` for 301, the default).
    pub response_code: &'static str,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryPolicySpec {
    retry_on: Option<String>,
    num_retries: Option<u32>,
    per_try_timeout: Option<String>,
}

/// Retries (Envoy `RetryPolicy`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct RetryPolicy {
    /// Envoy's comma-separated retry conditions (`5xx,reset`).
    pub retry_on: String,
    /// How many retries (Envoy's default 1 when absent).
    pub num_retries: Option<u32>,
    /// Timeout of each try in milliseconds.
    pub per_try_timeout_ms: Option<u64>,
}

/// Envoy's retry conditions (HTTP and gRPC).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Reads `<base>.retry_policy`.
pub(crate) fn read_retry_policy(
    r: &mut Reader<'_>,
    spec: Option<&RetryPolicySpec>,
    base: &str,
    ok: &mut bool,
) -> Option<RetryPolicy> {
    let p = spec?;
    let retry_on = p.retry_on.clone().unwrap_or_else(|| "5xx".to_string());
    for cond in retry_on.split(',').map(str::trim) {
        if !RETRY_ON.contains(&cond) {
            let d = r
                .error(
                    "invalid_retry_on",
                    &format!("{base}.retry_policy.retry_on"),
                    format!("`{cond}` is not a retry condition Envoy knows"),
                )
                .hint(format!("one or more, comma-separated, of: {}", RETRY_ON.join(", ")));
            r.diagnostics.push(d);
            *ok = false;
        }
    }
    let per_try_timeout_ms = match p.per_try_timeout.as_deref().map(parse_duration_ms) {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => {
            let d = r
                .error("invalid_duration", &format!("{base}.retry_policy.per_try_timeout"), e)
                .hint("write a duration such as `500ms`, `1.5s` or `1m`");
            r.diagnostics.push(d);
            *ok = false;
            None
        }
    };
    Some(RetryPolicy {
        retry_on,
        num_retries: p.num_retries,
        per_try_timeout_ms,
    })
}
