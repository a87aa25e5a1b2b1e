//! Header values with Envoy `%COMMAND%` substitutions (grammar/header_format.pest).
//!
//! Envoy rejects a whole update when a header value names an unknown command, so unknown commands
//! are errors here, pointing at the command, with the closest known name as a hint.

use pest::Parser as _;

use super::LangError;

#[allow(missing_docs, reason = "pest generates an undocumented `Rule` enum")]
mod grammar {
    use pest_derive::Parser;

    #[derive(Parser)]
    #[grammar = "../grammar/header_format.pest"]
    pub(super) struct HeaderFormatParser;
}

use grammar::{HeaderFormatParser, Rule};

/// Commands Envoy's header formatter knows (custom request/response headers).
pub const COMMANDS: &[&str] = &[
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_REMOTE_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_PORT",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_PORT",
    "DOWNSTREAM_LOCAL_URI_SAN",
    "DOWNSTREAM_PEER_URI_SAN",
    "DOWNSTREAM_LOCAL_SUBJECT",
    "DOWNSTREAM_PEER_SUBJECT",
    "DOWNSTREAM_PEER_ISSUER",
    "DOWNSTREAM_TLS_SESSION_ID",
    "DOWNSTREAM_TLS_CIPHER",
    "DOWNSTREAM_TLS_VERSION",
    "DOWNSTREAM_PEER_FINGERPRINT_256",
    "DOWNSTREAM_PEER_FINGERPRINT_1",
    "DOWNSTREAM_PEER_SERIAL",
    "DOWNSTREAM_PEER_CERT",
    "DOWNSTREAM_PEER_CERT_V_START",
    "DOWNSTREAM_PEER_CERT_V_END",
    "HOSTNAME",
    "PROTOCOL",
    "REQUESTED_SERVER_NAME",
    "REQ",
    "RESP",
    "START_TIME",
    "UPSTREAM_METADATA",
    "DYNAMIC_METADATA",
    "UPSTREAM_REMOTE_ADDRESS",
    "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_LOCAL_ADDRESS",
    "UPSTREAM_HOST",
    "RESPONSE_FLAGS",
    "RESPONSE_CODE",
    "RESPONSE_CODE_DETAILS",
    "FILTER_STATE",
    "ENVIRONMENT",
];

fn describe(rule: &Rule) -> &'static str {
    match rule {
        Rule::name => "a command name in capitals",
        Rule::arg => "an argument",
        Rule::len => "a length",
        Rule::command | Rule::escape => "`%COMMAND%` or `%%`",
        _ => "text or `%COMMAND%`",
    }
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Commands Envoy refuses without an argument in parentheses.
const NEEDS_ARGUMENT: &[&str] = &[
    "REQ",
    "RESP",
    "TRAILER",
    "DYNAMIC_METADATA",
    "CLUSTER_METADATA",
    "UPSTREAM_METADATA",
    "FILTER_STATE",
    "UPSTREAM_FILTER_STATE",
    "ENVIRONMENT",
];

fn example_argument(name: &str) -> &'static str {
    match name {
        "REQ" => ":path",
        "RESP" | "TRAILER" => "content-type",
        "ENVIRONMENT" => "HOSTNAME",
        "FILTER_STATE" | "UPSTREAM_FILTER_STATE" => "key",
        _ => "namespace:key",
    }
}

/// Checks a header value.
///
/// # Errors
/// A [`LangError`] at the first character that does not fit, or at an unknown command (with the
/// closest known command in the message).
pub fn check(input: &str) -> Result<(), LangError> {
    check_with(input, &[])
}

/// Commands a response body format knows beyond a header value's (Envoy's substitution format
/// strings: local replies, custom responses).
pub const BODY_COMMANDS: &[&str] = &[
    "LOCAL_REPLY_BODY",
    "DURATION",
    "REQUEST_DURATION",
    "RESPONSE_DURATION",
    "RESPONSE_TX_DURATION",
    "BYTES_RECEIVED",
    "BYTES_SENT",
    "UPSTREAM_CLUSTER",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "ROUTE_NAME",
    "CONNECTION_ID",
    "GRPC_STATUS",
];

/// Checks a response body format (as [`check`], with [`BODY_COMMANDS`] too).
///
/// # Errors
/// As [`check`].
pub fn check_body(input: &str) -> Result<(), LangError> {
    check_with(input, BODY_COMMANDS)
}

/// Commands an access log format knows beyond a response body format's.
pub const ACCESS_LOG_COMMANDS: &[&str] = &[
    "REQUEST_HEADERS_BYTES",
    "RESPONSE_HEADERS_BYTES",
    "RESPONSE_TRAILERS_BYTES",
    "REQUEST_TX_DURATION",
    "ROUNDTRIP_DURATION",
    "DOWNSTREAM_HANDSHAKE_DURATION",
    "UPSTREAM_PROTOCOL",
    "UPSTREAM_WIRE_BYTES_SENT",
    "UPSTREAM_WIRE_BYTES_RECEIVED",
    "UPSTREAM_HEADER_BYTES_SENT",
    "UPSTREAM_HEADER_BYTES_RECEIVED",
    "DOWNSTREAM_WIRE_BYTES_SENT",
    "DOWNSTREAM_WIRE_BYTES_RECEIVED",
    "DOWNSTREAM_HEADER_BYTES_SENT",
    "DOWNSTREAM_HEADER_BYTES_RECEIVED",
    "RESPONSE_FLAGS_LONG",
    "CONNECTION_TERMINATION_DETAILS",
    "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_LOCAL_PORT",
    "UPSTREAM_REMOTE_PORT",
    "UPSTREAM_REQUEST_ATTEMPT_COUNT",
    "UPSTREAM_TLS_CIPHER",
    "UPSTREAM_TLS_VERSION",
    "UPSTREAM_TLS_SESSION_ID",
    "UPSTREAM_PEER_ISSUER",
    "UPSTREAM_PEER_SUBJECT",
    "UPSTREAM_PEER_CERT",
    "UPSTREAM_CONNECTION_ID",
    "UPSTREAM_FILTER_STATE",
    "DOWNSTREAM_TRANSPORT_FAILURE_REASON",
    "CLUSTER_METADATA",
    "TRAILER",
    "STREAM_ID",
    "GRPC_STATUS_NUMBER",
    "ACCESS_LOG_TYPE",
    "UNIQUE_ID",
    "VIRTUAL_CLUSTER_NAME",
    "TRACE_ID",
];

/// Checks an access log format (as [`check_body`], with [`ACCESS_LOG_COMMANDS`] too).
///
/// # Errors
/// As [`check`].
pub fn check_access_log(input: &str) -> Result<(), LangError> {
    let mut all = BODY_COMMANDS.to_vec();
    all.extend_from_slice(ACCESS_LOG_COMMANDS);
    check_with(input, &all)
}

fn check_with(input: &str, extra: &[&str]) -> Result<(), LangError> {
    let pairs = HeaderFormatParser::parse(Rule::format, input).map_err(|e| {
        let mut err = LangError::from_pest(input, &e, describe);
        // Right after a `%`: the `%` itself is the problem.
        if err.offset > 0 && input.chars().nth(err.offset - 1) == Some('%') {
            err.offset -= 1;
            err.message = "a `%` starts a %COMMAND%; write `%%` for a literal percent sign".to_string();
        }
        err
    })?;
    for command in pairs.flatten().filter(|p| p.as_rule() == Rule::command) {
        let Some(pair) = command.clone().into_inner().find(|p| p.as_rule() == Rule::name) else {
            continue;
        };
        let name = pair.as_str();
        let has_arg = command.into_inner().any(|p| p.as_rule() == Rule::arg);
        if NEEDS_ARGUMENT.contains(&name) && !has_arg {
            return Err(LangError {
                input: input.to_string(),
                offset: input[..pair.as_span().start()].chars().count(),
                message: format!(
                    "`%{name}%` needs an argument, e.g. `%{name}({})%`",
                    example_argument(name)
                ),
            });
        }
        if !COMMANDS.contains(&name) && !extra.contains(&name) {
            let closest = COMMANDS
                .iter()
                .chain(extra)
                .min_by_key(|c| distance(name, c))
                .copied()
                .unwrap_or("");
            return Err(LangError {
                input: input.to_string(),
                offset: input[..pair.as_span().start()].chars().count(),
                message: format!("unknown command `%{name}%` (did you mean `%{closest}%`?)"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_text_commands_and_escapes() {
        for ok in [
            "plain",
            "client=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
            "%REQ(x-id)%",
            "%START_TIME(%s)%",
            "100%%",
            "",
            "%REQ(x-a):10%",
        ] {
            assert!(check(ok).is_ok(), "{ok}: {:?}", check(ok));
        }
    }

    #[test]
    fn commands_that_need_an_argument_say_so() {
        let e = check("id=%REQ%").unwrap_err();
        assert_eq!(e.offset, 4, "{e}");
        assert!(e.message.contains("needs an argument"), "{e}");
        assert!(check("id=%REQ(x-request-id)%").is_ok());
        assert!(super::check_access_log("%ENVIRONMENT%").is_err());
        assert!(super::check_access_log("%ROUNDTRIP_DURATION% %TRACE_ID%").is_ok());
        assert!(
            check("%ROUNDTRIP_DURATION%").is_err(),
            "an access log command is not a header's"
        );
    }

    #[test]
    fn unknown_commands_and_stray_percent_signs_point_at_the_problem() {
        let e = check("ip=%DOWNSTREAM_REMOTE_ADRESS%").unwrap_err();
        assert_eq!(e.offset, 4, "{e}");
        assert!(e.message.contains("DOWNSTREAM_REMOTE_ADDRESS"), "{e}");
        let e = check("50% off").unwrap_err();
        assert_eq!(e.offset, 2, "{e}");
    }
}
