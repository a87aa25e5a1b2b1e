//! `Listener`: a port Envoy listens on, its protocol, how it decides whether a request is secure,
//! and which Hosts it serves.

use serde::Deserialize;

use super::{LabelSelector, Reader};

/// `spec.protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// Cleartext HTTP.
    Http,
    /// HTTP, with TLS terminated for Hosts that have a certificate (cleartext accepted too).
    Https,
    /// HTTP behind a PROXY-protocol load balancer.
    Httpproxy,
    /// HTTPS behind a PROXY-protocol load balancer.
    Httpsproxy,
    /// Raw TCP: a port for TCPMappings.
    Tcp,
    /// TLS: a port for TCPMappings chosen by server name.
    Tls,
    /// UDP (not supported).
    Udp,
}

/// `spec.securityModel`: how a request is judged secure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SecurityModel {
    /// Secure when `X-Forwarded-Proto: https`.
    Xfp,
    /// Every request is secure.
    Secure,
    /// Every request is insecure.
    Insecure,
}

/// `spec.hostBinding.namespace.from`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum NamespaceFrom {
    /// Hosts in any namespace.
    #[default]
    All,
    /// Hosts in the Listener's own namespace.
    #[serde(rename = "SELF")]
    SelfNamespace,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct NamespaceBinding {
    #[serde(default)]
    from: NamespaceFrom,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct HostBinding {
    #[serde(default)]
    namespace: NamespaceBinding,
    selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ListenerSpec {
    port: Option<i64>,
    protocol: Option<Protocol>,
    #[serde(rename = "securityModel")]
    security_model: Option<SecurityModel>,
    #[serde(rename = "hostBinding")]
    host_binding: Option<HostBinding>,
    #[serde(rename = "statsPrefix")]
    stats_prefix: Option<String>,
    #[serde(rename = "l7Depth", default)]
    l7_depth: u32,
    #[allow(dead_code, reason = "read by resource::parse before the spec")]
    ambassador_id: Option<serde_json::Value>,
}

/// The field names `spec` accepts (see `resource::fields`).
pub(super) fn spec_fields() -> &'static [&'static str] {
    super::fields::of::<ListenerSpec>()
}

/// A valid Listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// TCP port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// How requests are judged secure.
    pub security_model: SecurityModel,
    /// Which namespaces' Hosts are served.
    pub host_namespace: NamespaceFrom,
    /// Which Hosts (by label) are served; `None` means all.
    pub host_selector: Option<LabelSelector>,
    /// Prefix of the listener's HTTP stats.
    pub stats_prefix: Option<String>,
    /// Number of trusted proxies in front of Envoy (`xff_num_trusted_hops`).
    pub l7_depth: u32,
}

/// Reads and checks a Listener spec.
pub(crate) fn read(r: &mut Reader<'_>) -> Option<Listener> {
    let spec: ListenerSpec = r.spec(&|p| {
        Some(
            match p {
                "spec.port" => "port is a number between 1 and 65535",
                "spec.protocol" => "protocol is one of HTTP, HTTPS, HTTPPROXY, HTTPSPROXY, TCP, TLS",
                "spec.securityModel" => "securityModel is one of XFP, SECURE, INSECURE",
                "spec.hostBinding.namespace.from" => "from is ALL or SELF",
                _ => return None,
            }
            .to_string(),
        )
    })?;
    // Every missing or wrong required field at once, not one per edit.
    let port = match spec.port.map(u16::try_from) {
        Some(Ok(p)) if p > 0 => Some(p),
        Some(_) => {
            let d = r.error("invalid_port", "spec.port", "port must be between 1 and 65535");
            r.diagnostics.push(d);
            None
        }
        None => {
            let d = r
                .error("missing_port", "spec", "a Listener needs a `port`")
                .hint("add e.g. `port: 8080`");
            r.diagnostics.push(d);
            None
        }
    };
    if spec.protocol.is_none() {
        let d = r
            .error("missing_protocol", "spec", "a Listener needs a `protocol`")
            .hint("add e.g. `protocol: HTTP`");
        r.diagnostics.push(d);
    }
    if spec.security_model.is_none() {
        let d = r
            .error("missing_security_model", "spec", "a Listener needs a `securityModel`")
            .hint("add `securityModel: XFP` (secure when X-Forwarded-Proto is https), SECURE or INSECURE");
        r.diagnostics.push(d);
    }
    let (Some(port), Some(protocol), Some(security_model)) = (port, spec.protocol, spec.security_model) else {
        return None;
    };
    match protocol {
        Protocol::Udp => {
            let d = r
                .error(
                    "unsupported_protocol",
                    "spec.protocol",
                    format!("{protocol:?} Listeners are not supported by attache yet"),
                )
                .hint("HTTP, HTTPS, TCP and TLS Listeners are supported");
            r.diagnostics.push(d);
            return None;
        }
        Protocol::Https
        | Protocol::Httpsproxy
        | Protocol::Http
        | Protocol::Httpproxy
        | Protocol::Tcp
        | Protocol::Tls => {}
    }
    let binding = spec.host_binding.unwrap_or_else(|| {
        // TCP and TLS Listeners serve TCPMappings, not Hosts.
        if matches!(protocol, Protocol::Tcp | Protocol::Tls) {
            return HostBinding::default();
        }
        let d = r
            .warning(
                "missing_host_binding",
                "spec",
                "no hostBinding: Hosts from all namespaces are served",
            )
            .hint("add `hostBinding: {namespace: {from: ALL}}` to say so explicitly");
        r.diagnostics.push(d);
        HostBinding::default()
    });
    Some(Listener {
        port,
        protocol,
        security_model,
        host_namespace: binding.namespace.from,
        host_selector: binding.selector,
        stats_prefix: spec.stats_prefix,
        l7_depth: spec.l7_depth,
    })
}
