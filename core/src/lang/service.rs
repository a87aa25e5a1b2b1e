//! `service` references: `[scheme://]name[.namespace][:port]` (grammar/service.pest).
//!
//! Only the syntax lives here; what a bare name means (which namespace, which port) is decided in
//! `ir::lower`, which knows the Mapping's namespace.

use super::LangError;
use pest::Parser as _;

#[allow(missing_docs, reason = "pest generates an undocumented `Rule` enum")]
mod grammar {
    use pest_derive::Parser;

    #[derive(Parser)]
    #[grammar = "../grammar/service.pest"]
    pub(super) struct ServiceParser;
}

use grammar::{Rule, ServiceParser};

/// The scheme of a service reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP to the upstream.
    Http,
    /// TLS to the upstream.
    Https,
}

/// A parsed service reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    /// Scheme if given.
    pub scheme: Option<Scheme>,
    /// Host as written: a DNS name (possibly `name.namespace`), an IPv4 address, or `[IPv6]`
    /// without the brackets.
    pub host: String,
    /// Whether `host` is an IP address (so no DNS and no namespace qualification apply).
    pub is_ip: bool,
    /// Port if given.
    pub port: Option<u16>,
}

fn describe(rule: &Rule) -> &'static str {
    match rule {
        Rule::service | Rule::host | Rule::dns_name | Rule::label | Rule::ipv6 => "a host name",
        Rule::scheme => "a scheme",
        Rule::port => "a port number",
        Rule::EOI => "end of input (or `:port`)",
    }
}

/// Parses a service reference.
///
/// ```
/// use attache_core::lang::service::{parse, Scheme};
///
/// let s = parse("https://quote.prod:8443").unwrap();
/// assert_eq!((s.scheme, s.host.as_str(), s.port), (Some(Scheme::Https), "quote.prod", Some(8443)));
///
/// let e = parse("quote::80").unwrap_err();
/// assert_eq!(e.offset, 6); // points at the second `:`
/// ```
///
/// # Errors
/// A [`LangError`] pointing at the first character that does not fit, or at the scheme or port
/// when they are not acceptable.
pub fn parse(input: &str) -> Result<ServiceRef, LangError> {
    let pairs = ServiceParser::parse(Rule::service, input).map_err(|e| LangError::from_pest(input, &e, describe))?;
    let mut out = ServiceRef {
        scheme: None,
        host: String::new(),
        is_ip: false,
        port: None,
    };
    let err = |offset: usize, message: String| LangError {
        input: input.to_string(),
        offset,
        message,
    };
    for pair in pairs.flatten() {
        let offset = input[..pair.as_span().start()].chars().count();
        match pair.as_rule() {
            Rule::scheme => {
                out.scheme = Some(match pair.as_str().to_ascii_lowercase().as_str() {
                    "http" => Scheme::Http,
                    "https" => Scheme::Https,
                    other => return Err(err(offset, format!("unsupported scheme `{other}` (use http or https)"))),
                });
            }
            Rule::ipv6 => {
                let inner = pair.as_str().trim_start_matches('[').trim_end_matches(']');
                if inner.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(err(offset, format!("`{inner}` is not an IPv6 address")));
                }
                out.host = inner.to_string();
                out.is_ip = true;
            }
            Rule::dns_name => {
                out.host = pair.as_str().to_string();
                out.is_ip = out.host.parse::<std::net::Ipv4Addr>().is_ok();
                if out.host.len() > 253 {
                    return Err(err(offset, "host name longer than 253 characters".into()));
                }
            }
            Rule::port => {
                out.port = match pair.as_str().parse::<u16>() {
                    Ok(p) if p > 0 => Some(p),
                    _ => {
                        return Err(err(
                            offset,
                            format!("port `{}` is not between 1 and 65535", pair.as_str()),
                        ))
                    }
                };
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_forms() {
        let s = parse("quote").unwrap();
        assert_eq!((s.scheme, s.host.as_str(), s.port), (None, "quote", None));
        let s = parse("https://quote.prod:8443").unwrap();
        assert_eq!(
            (s.scheme, s.host.as_str(), s.port),
            (Some(Scheme::Https), "quote.prod", Some(8443))
        );
        let s = parse("127.0.0.1:9000").unwrap();
        assert!(s.is_ip);
        let s = parse("[::1]:80").unwrap();
        assert_eq!((s.host.as_str(), s.is_ip), ("::1", true));
    }

    #[test]
    fn errors_point_into_the_string() {
        let e = parse("quote::80").unwrap_err();
        assert_eq!(e.offset, 6, "{e}");
        assert!(e.message.contains("port"), "{e}");
        let e = parse("quote:99999").unwrap_err();
        assert_eq!(e.offset, 6);
        let e = parse("ftp://quote").unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(e.message.contains("ftp"));
        let e = parse("quote/path").unwrap_err();
        assert_eq!(e.offset, 5, "{e}");
        let e = parse("").unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(e.pointer().ends_with('^'));
    }
}
