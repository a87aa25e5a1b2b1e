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

pub use crate::ir::values::Cors;

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

pub use crate::ir::values::RegexRewrite;

/// `regex_rewrite` / `regex_redirect` as written: `{pattern, substitution}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegexRewriteSpec {
    pub(crate) pattern: String,
    #[serde(default)]
    pub(crate) substitution: String,
}

impl From<RegexRewriteSpec> for RegexRewrite {
    fn from(s: RegexRewriteSpec) -> Self {
        RegexRewrite {
            pattern: s.pattern,
            substitution: s.substitution,
        }
    }
}

pub use crate::ir::values::Redirect;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryPolicySpec {
    retry_on: Option<String>,
    num_retries: Option<u32>,
    per_try_timeout: Option<String>,
}

pub use crate::ir::values::RetryPolicy;

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

/// One entry of `ip_allow` / `ip_deny` as written: `{peer: "<address or CIDR>"}` or
/// `{remote: ...}`.
pub(crate) type IpEntrySpec = std::collections::BTreeMap<String, String>;

pub use crate::ir::values::IpPolicy;

pub use crate::ir::values::IpPrincipal;

/// Reads `<base>.ip_allow` and `<base>.ip_deny`: at most one of them, each entry one of `peer`
/// and `remote` with an IP address or CIDR range. A bad entry fails the object (skipping it
/// would let through requests an `ip_deny` was meant to stop).
pub(crate) fn read_ip_policy(
    r: &mut Reader<'_>,
    allow: Option<&[IpEntrySpec]>,
    deny: Option<&[IpEntrySpec]>,
    base: &str,
    ok: &mut bool,
) -> Option<IpPolicy> {
    let (field, action, entries) = match (allow, deny) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            let d = r
                .error(
                    "conflicting_ip_policy",
                    &format!("{base}.ip_deny"),
                    "`ip_allow` and `ip_deny` cannot both be set",
                )
                .hint("keep `ip_allow` (only these addresses) or `ip_deny` (all but these)");
            r.diagnostics.push(d);
            *ok = false;
            return None;
        }
        (Some(a), None) => ("ip_allow", "ALLOW", a),
        (None, Some(d)) => ("ip_deny", "DENY", d),
    };
    if entries.is_empty() {
        let d = r
            .warning(
                "empty_ip_policy",
                &format!("{base}.{field}"),
                format!("an empty `{field}` lists no address; ignored"),
            )
            .hint("list entries such as `- peer: 127.0.0.1` or `- remote: 10.0.0.0/8`, or remove the field");
        r.diagnostics.push(d);
        return None;
    }
    let mut principals = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("{base}.{field}[{i}]");
        let mut keys = entry.iter();
        let (Some((key, value)), None) = (keys.next(), keys.next()) else {
            let d = r
                .error("invalid_ip_entry", &path, "each entry has exactly one key, `peer` or `remote`")
                .hint("e.g. `- peer: 127.0.0.1` (the connection's address) or `- remote: 10.0.0.0/8` (the client's, after X-Forwarded-For)");
            r.diagnostics.push(d);
            *ok = false;
            continue;
        };
        let source = match key.as_str() {
            "peer" => "peer",
            "remote" => "remote",
            other => {
                let d = r
                    .error("invalid_ip_entry", &format!("{path}.{other}"), format!("`{other}` is not `peer` or `remote`"))
                    .hint("`peer`: the address of the connection; `remote`: the client's address after X-Forwarded-For and the trusted hops");
                r.diagnostics.push(d);
                *ok = false;
                continue;
            }
        };
        match parse_cidr(value) {
            Ok((address, prefix_len)) => principals.push(IpPrincipal {
                source,
                address,
                prefix_len,
            }),
            Err(e) => {
                let d = r
                    .error("invalid_ip_entry", &format!("{path}.{key}"), format!("`{value}`: {e}"))
                    .hint("an IPv4 or IPv6 address, optionally with a prefix length: `10.0.0.0/8`, `::1`");
                r.diagnostics.push(d);
                *ok = false;
            }
        }
    }
    Some(IpPolicy { action, principals })
}

/// An address or CIDR range: its address and prefix length (the full length for an address).
fn parse_cidr(text: &str) -> Result<(String, u8), String> {
    let (address, len) = match text.trim().split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text.trim(), None),
    };
    let ip: std::net::IpAddr = address
        .parse()
        .map_err(|_| format!("`{address}` is not an IP address"))?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("the prefix length `{l}` is not a number from 0 to {max}"))?,
    };
    Ok((ip.to_string(), prefix_len))
}

pub use crate::ir::values::RateLimitAction;

/// Rate limit labels: by domain, label groups, each a list of actions (the group's name is not
/// used, as in Emissary).
pub type RateLimitLabels = std::collections::BTreeMap<String, Vec<Vec<RateLimitAction>>>;

/// Reads `<path>` as Mapping `labels`: `{domain: [{group: [specifier, ...]}, ...]}`. A
/// specifier is v3alpha1's one-key map (`source_cluster`, `destination_cluster`,
/// `remote_address`, `generic_key: {key, value}`, `request_headers: {key, header_name,
/// omit_if_not_present}`) or one of v2's forms: a bare string (`source_cluster`,
/// `destination_cluster`, `remote_address`, or any other string as a generic key's value),
/// `{generic_key: "value"}`, or `{<key>: {header: <name>, omit_if_not_present}}`.
pub(crate) fn read_labels(
    r: &mut Reader<'_>,
    labels: &serde_json::Value,
    path: &str,
    ok: &mut bool,
) -> RateLimitLabels {
    let mut out = RateLimitLabels::new();
    let mut fail = |r: &mut Reader<'_>, at: &str, message: String, hint: &str| {
        let d = r.error("invalid_label", at, message).hint(hint);
        r.diagnostics.push(d);
        *ok = false;
    };
    let Some(domains) = labels.as_object() else {
        fail(
            r,
            path,
            "`labels` is a map of domains to label groups".into(),
            "e.g. `labels: {ambassador: [{per_user: [{request_headers: {key: user, header_name: x-user}}]}]}`",
        );
        return out;
    };
    // Field paths are only written out for an error: a Mapping's labels are read on every
    // translation of its object.
    for (domain, groups) in domains {
        let Some(groups) = groups.as_array() else {
            fail(
                r,
                &format!("{path}.{domain}"),
                format!("the label groups of domain `{domain}` are a list"),
                "e.g. `- per_user: [remote_address]`",
            );
            continue;
        };
        let mut read = Vec::new();
        for (i, group) in groups.iter().enumerate() {
            let entries = group.as_object().filter(|g| g.len() == 1);
            let Some((name, specifiers)) = entries.and_then(|g| g.iter().next()) else {
                fail(
                    r,
                    &format!("{path}.{domain}[{i}]"),
                    "a label group is a map with one key, its name, holding a list of specifiers".into(),
                    "e.g. `- per_user: [remote_address, {request_headers: {key: user, header_name: x-user}}]`",
                );
                continue;
            };
            let Some(specifiers) = specifiers.as_array() else {
                fail(
                    r,
                    &format!("{path}.{domain}[{i}].{name}"),
                    format!("the specifiers of label group `{name}` are a list"),
                    "e.g. `- per_user: [remote_address]`",
                );
                continue;
            };
            let mut actions = Vec::new();
            for (j, s) in specifiers.iter().enumerate() {
                match specifier(s) {
                    Ok(a) => actions.push(a),
                    Err(e) => fail(r, &format!("{path}.{domain}[{i}].{name}[{j}]"), e, "source_cluster, destination_cluster, remote_address, `generic_key: {value: v}` or `request_headers: {key: k, header_name: h}` (or v2's `{k: {header: h}}`)"),
                }
            }
            read.push(actions);
        }
        out.insert(domain.clone(), read);
    }
    out
}

/// One label specifier (see [`read_labels`]).
fn specifier(s: &serde_json::Value) -> Result<RateLimitAction, String> {
    let plain = |kind| RateLimitAction {
        kind,
        key: None,
        value: None,
        header_name: None,
        omit_if_not_present: false,
    };
    let text = |v: &serde_json::Value, what: &str| {
        v.as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("`{what}` is a non-empty string"))
    };
    match s {
        serde_json::Value::String(t) => Ok(match t.as_str() {
            "source_cluster" => plain("source_cluster"),
            "destination_cluster" => plain("destination_cluster"),
            "remote_address" => plain("remote_address"),
            "" => return Err("an empty specifier".into()),
            // v2: any other string is a generic key's value.
            other => RateLimitAction {
                value: Some(other.to_string()),
                ..plain("generic_key")
            },
        }),
        serde_json::Value::Object(map) if map.len() == 1 => {
            let (k, v) = map.iter().next().ok_or("an empty specifier")?;
            match k.as_str() {
                "source_cluster" => Ok(plain("source_cluster")),
                "destination_cluster" => Ok(plain("destination_cluster")),
                "remote_address" => Ok(plain("remote_address")),
                "generic_key" => match v {
                    // v2 longhand.
                    serde_json::Value::String(_) => Ok(RateLimitAction {
                        value: Some(text(v, "generic_key")?),
                        ..plain("generic_key")
                    }),
                    serde_json::Value::Object(g) => Ok(RateLimitAction {
                        key: g.get("key").map(|k| text(k, "generic_key.key")).transpose()?,
                        value: Some(text(
                            g.get("value").unwrap_or(&serde_json::Value::Null),
                            "generic_key.value",
                        )?),
                        ..plain("generic_key")
                    }),
                    _ => Err("`generic_key` is `{key, value}` (or v2's string value)".into()),
                },
                "request_headers" => {
                    let h = v
                        .as_object()
                        .ok_or("`request_headers` is `{key, header_name, omit_if_not_present}`")?;
                    Ok(RateLimitAction {
                        key: Some(text(
                            h.get("key").unwrap_or(&serde_json::Value::Null),
                            "request_headers.key",
                        )?),
                        header_name: Some(text(
                            h.get("header_name").unwrap_or(&serde_json::Value::Null),
                            "request_headers.header_name",
                        )?),
                        omit_if_not_present: h
                            .get("omit_if_not_present")
                            .and_then(serde_json::Value::as_bool)
                            .unwrap_or(false),
                        ..plain("request_headers")
                    })
                }
                // v2: `{<descriptor key>: {header: <name>, omit_if_not_present}}`.
                key => {
                    let h = v
                        .as_object()
                        .filter(|h| h.contains_key("header"))
                        .ok_or_else(|| format!("`{key}` is not a specifier"))?;
                    Ok(RateLimitAction {
                        key: Some(key.to_string()),
                        header_name: Some(text(&h["header"], &format!("{key}.header"))?),
                        omit_if_not_present: h
                            .get("omit_if_not_present")
                            .and_then(serde_json::Value::as_bool)
                            .unwrap_or(false),
                        ..plain("request_headers")
                    })
                }
            }
        }
        _ => Err("a specifier is a string or a map with one key".into()),
    }
}

/// One `error_response_overrides` rule as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorResponseSpec {
    on_status_code: Option<i64>,
    body: Option<ErrorBodySpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorBodySpec {
    text_format: Option<String>,
    json_format: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    text_format_source: Option<serde_json::Value>,
    content_type: Option<String>,
}

pub use crate::ir::values::ErrorResponse;

/// Reads `<base>.error_response_overrides`: each rule a status from 400 to 599 and a body with
/// exactly one of `text_format` and `json_format`, whose `%COMMAND%`s are checked. A bad rule
/// fails the object. `text_format_source` (a file on the Envoy host) is refused: attache cannot
/// see that file, and a missing one would make Envoy refuse the whole listener.
pub(crate) fn read_error_responses(
    r: &mut Reader<'_>,
    rules: &[ErrorResponseSpec],
    base: &str,
    ok: &mut bool,
) -> Vec<ErrorResponse> {
    let mut out: Vec<ErrorResponse> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{base}.error_response_overrides[{i}]");
        let mut fail = |r: &mut Reader<'_>, path: String, message: String, hint: &str| {
            let d = r.error("invalid_error_response", &path, message).hint(hint);
            r.diagnostics.push(d);
            *ok = false;
        };
        let status = match rule.on_status_code {
            Some(code @ 400..=599) => u16::try_from(code).unwrap_or(500),
            Some(code) => {
                fail(
                    r,
                    format!("{at}.on_status_code"),
                    format!("{code} is not an error status (400 to 599)"),
                    "e.g. `on_status_code: 503`",
                );
                continue;
            }
            None => {
                fail(
                    r,
                    format!("{at}.on_status_code"),
                    "a rule needs `on_status_code`".into(),
                    "e.g. `on_status_code: 503`",
                );
                continue;
            }
        };
        let Some(body) = &rule.body else {
            fail(
                r,
                format!("{at}.body"),
                "a rule needs a `body`".into(),
                "e.g. `body: {text_format: \"the service is down\"}`",
            );
            continue;
        };
        if body.text_format_source.is_some() {
            fail(
                r,
                format!("{at}.body.text_format_source"),
                "`text_format_source` (a file on the Envoy host) is not supported".into(),
                "put the text in `text_format` (or `json_format`): attache cannot check a file on the Envoy host, and Envoy refuses the whole listener when it is missing",
            );
            continue;
        }
        let check = |text: &str| crate::lang::header_format::check_body(text);
        let (text, json) = match (&body.text_format, &body.json_format) {
            (Some(t), None) => match check(t) {
                Ok(()) => (Some(t.clone()), None),
                Err(e) => {
                    fail(r, format!("{at}.body.text_format"), format!("`{t}`: {} (column {})", e.message, e.offset + 1), "Envoy's %COMMAND%s such as %RESPONSE_CODE% or %LOCAL_REPLY_BODY%; `%%` for a literal percent sign");
                    continue;
                }
            },
            (None, Some(map)) => {
                let mut strings = std::collections::BTreeMap::new();
                let mut good = true;
                for (k, v) in map {
                    // Values are strings in Envoy's JSON format: numbers and booleans as text.
                    let text = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => v.to_string(),
                        _ => {
                            fail(
                                r,
                                format!("{at}.body.json_format.{k}"),
                                "a value is a string, number or boolean".into(),
                                "nested objects and lists are not supported",
                            );
                            good = false;
                            continue;
                        }
                    };
                    if let Err(e) = check(&text) {
                        fail(
                            r,
                            format!("{at}.body.json_format.{k}"),
                            format!("`{text}`: {} (column {})", e.message, e.offset + 1),
                            "Envoy's %COMMAND%s such as %RESPONSE_CODE%; `%%` for a literal percent sign",
                        );
                        good = false;
                        continue;
                    }
                    strings.insert(k.clone(), text);
                }
                if !good {
                    continue;
                }
                (None, Some(strings))
            }
            _ => {
                fail(
                    r,
                    format!("{at}.body"),
                    "a body has exactly one of `text_format` and `json_format`".into(),
                    "e.g. `body: {json_format: {error: \"%RESPONSE_CODE%\"}}`",
                );
                continue;
            }
        };
        if out.iter().any(|e| e.status == status) {
            let d = r
                .warning(
                    "duplicate_error_response",
                    &format!("{at}.on_status_code"),
                    format!("another rule already replaces status {status}; this one is not used"),
                )
                .hint("keep one rule per status");
            r.diagnostics.push(d);
            continue;
        }
        out.push(ErrorResponse {
            status,
            text,
            json,
            content_type: body.content_type.clone(),
        });
    }
    out
}
