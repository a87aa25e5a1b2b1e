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
    "REQ_WITHOUT_QUERY",
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
    for pair in pairs.flatten().filter(|p| p.as_rule() == Rule::name) {
        let name = pair.as_str();
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
    fn unknown_commands_and_stray_percent_signs_point_at_the_problem() {
        let e = check("ip=%DOWNSTREAM_REMOTE_ADRESS%").unwrap_err();
        assert_eq!(e.offset, 4, "{e}");
        assert!(e.message.contains("DOWNSTREAM_REMOTE_ADDRESS"), "{e}");
        let e = check("50% off").unwrap_err();
        assert_eq!(e.offset, 2, "{e}");
    }
}
