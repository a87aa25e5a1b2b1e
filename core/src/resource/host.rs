//! `Host`: a hostname that attache serves, which Mappings it takes, and what to do with
//! cleartext requests.

use serde::Deserialize;

use super::{LabelSelector, Reader};

/// What to do with a request that did not arrive over TLS (`requestPolicy.insecure.action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
pub enum InsecureAction {
    /// Redirect to HTTPS (Emissary's default).
    #[default]
    Redirect,
    /// Serve it like a secure request.
    Route,
    /// Refuse it (404).
    Reject,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Insecure {
    #[serde(default)]
    action: InsecureAction,
    #[serde(rename = "additionalPort")]
    additional_port: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct RequestPolicy {
    #[serde(default)]
    insecure: Insecure,
}

/// `spec.tlsSecret`: the Secret with the Host's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
    /// Its namespace; the Host's when absent.
    pub namespace: Option<String>,
}

/// `{name}`: a reference to an object by name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
struct NameRef {
    name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct HostSpec {
    hostname: Option<String>,
    #[serde(rename = "tlsSecret")]
    tls_secret: Option<SecretRef>,
    #[serde(rename = "tlsContext")]
    tls_context: Option<NameRef>,
    tls: Option<super::tlscontext::TlsSettingsSpec>,
    #[serde(rename = "mappingSelector", alias = "selector")]
    mapping_selector: Option<LabelSelector>,
    #[serde(rename = "requestPolicy", default)]
    request_policy: RequestPolicy,
    #[allow(dead_code, reason = "read by resource::parse before the spec")]
    ambassador_id: Option<serde_json::Value>,
    #[serde(rename = "ambassadorId")]
    #[allow(dead_code, reason = "read by resource::parse before the spec")]
    ambassador_id_alias: Option<serde_json::Value>,
}

/// The field names `spec` accepts (see `resource::fields`).
pub(super) fn spec_fields() -> &'static [&'static str] {
    super::fields::of::<HostSpec>()
}

/// A valid Host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The hostname (a DNS glob); `*` when absent.
    pub hostname: String,
    /// Only Mappings whose labels match are attached; `None` attaches by hostname alone.
    pub mapping_selector: Option<LabelSelector>,
    /// What to do with cleartext requests.
    pub insecure_action: InsecureAction,
    /// The Secret with the certificate served for this hostname (TLS termination).
    pub tls_secret: Option<SecretRef>,
    /// `tlsContext.name`: the TLSContext with the certificate and TLS settings.
    pub tls_context: Option<String>,
    /// Inline `tls` settings (they take precedence over a TLSContext's).
    pub tls: Option<super::tlscontext::TlsSettings>,
}

/// Reads and checks a Host spec.
pub(crate) fn read(r: &mut Reader<'_>) -> Option<Host> {
    let spec: HostSpec = r.spec(&|p| {
        (p == "spec.requestPolicy.insecure.action")
            .then(|| "the action is one of Redirect, Route or Reject".to_string())
    })?;
    if spec.request_policy.insecure.additional_port.is_some() {
        let d = r
            .warning(
                "unsupported_field",
                "spec.requestPolicy.insecure.additionalPort",
                "additionalPort is not used (as in Emissary 2.x and later); ignored",
            )
            .hint("define a Listener for the cleartext port; the Host's insecure action applies to it");
        r.diagnostics.push(d);
    }
    let mut ok = true;
    let tls = spec
        .tls
        .as_ref()
        .map(|t| super::tlscontext::read_settings(r, t, "spec.tls", false, &mut ok));
    if !ok {
        return None;
    }
    // DNS names ignore case (and Envoy matches domains and SNI in lower case): kept lowercase.
    let hostname = spec
        .hostname
        .map_or_else(|| "*".to_string(), |h| h.to_ascii_lowercase());
    if hostname.is_empty() || hostname.contains(char::is_whitespace) {
        let d = r
            .error(
                "invalid_hostname",
                "spec.hostname",
                format!("`{hostname}` is not a hostname"),
            )
            .hint("use a DNS name such as `example.com`, or a glob such as `*.example.com` or `*`");
        r.diagnostics.push(d);
        return None;
    }
    Some(Host {
        hostname,
        mapping_selector: spec.mapping_selector,
        insecure_action: spec.request_policy.insecure.action,
        tls_secret: spec.tls_secret,
        tls_context: spec.tls_context.map(|c| c.name),
        tls,
    })
}
