//! `TLSContext`, and the TLS settings it shares with a Host's inline `tls`: which certificate
//! (`secret`), for which hostnames (`hosts`), and how TLS is spoken (ALPN, versions, ciphers,
//! client certificates). A TLSContext also names the client certificate a Mapping presents when it
//! originates TLS (`Mapping.tls`).

use serde::Deserialize;

use super::Reader;

/// One string or a list (`alpn_protocols: "h2,http/1.1"` or `[h2, http/1.1]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(untagged)]
pub(crate) enum StringOrList {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    /// The items; a single string is split at commas, as Emissary does.
    pub(crate) fn items(&self) -> Vec<String> {
        match self {
            StringOrList::None => Vec::new(),
            StringOrList::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            StringOrList::Many(v) => v.iter().map(|s| s.trim().to_string()).collect(),
        }
    }
}

/// The TLS settings of a TLSContext or of a Host's inline `tls`, as written.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct TlsSettingsSpec {
    #[serde(default)]
    alpn_protocols: StringOrList,
    min_tls_version: Option<String>,
    max_tls_version: Option<String>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    ecdh_curves: Vec<String>,
    cert_required: Option<bool>,
    ca_secret: Option<String>,
    redirect_cleartext_from: Option<serde_json::Value>,
}

pub use crate::ir::values::TlsSettings;

fn version(r: &mut Reader<'_>, path: &str, v: Option<&str>, ok: &mut bool) -> Option<&'static str> {
    let v = v?;
    let out = match v
        .trim()
        .to_ascii_lowercase()
        .trim_start_matches('v')
        .trim_start_matches("tls")
    {
        "1.0" => "TLSv1_0",
        "1.1" => "TLSv1_1",
        "1.2" => "TLSv1_2",
        "1.3" => "TLSv1_3",
        _ => {
            let d = r
                .error("invalid_tls_version", path, format!("`{v}` is not a TLS version"))
                .hint("one of v1.0, v1.1, v1.2, v1.3");
            r.diagnostics.push(d);
            *ok = false;
            return None;
        }
    };
    Some(out)
}

/// Checks TLS settings written at `base` (`spec.tls` of a Host, `spec` of a TLSContext); a
/// `ca_secret` is in the object's namespace unless `namespacing` and it says `name.namespace`.
pub(crate) fn read_settings(
    r: &mut Reader<'_>,
    spec: &TlsSettingsSpec,
    base: &str,
    namespacing: bool,
    ok: &mut bool,
) -> TlsSettings {
    let min_version = version(
        r,
        &format!("{base}.min_tls_version"),
        spec.min_tls_version.as_deref(),
        ok,
    );
    let max_version = version(
        r,
        &format!("{base}.max_tls_version"),
        spec.max_tls_version.as_deref(),
        ok,
    );
    if let (Some(lo), Some(hi)) = (min_version, max_version) {
        if lo > hi {
            let d = r
                .error(
                    "invalid_tls_versions",
                    &format!("{base}.max_tls_version"),
                    format!("max_tls_version is below min_tls_version ({hi} < {lo})"),
                )
                .hint("raise max_tls_version or lower min_tls_version");
            r.diagnostics.push(d);
            *ok = false;
        }
    }
    if spec.redirect_cleartext_from.is_some() {
        let d = r
            .warning(
                "unsupported_field",
                &format!("{base}.redirect_cleartext_from"),
                "redirect_cleartext_from is not used by attache; ignored",
            )
            .hint("a Host's requestPolicy.insecure.action decides what happens to cleartext requests");
        r.diagnostics.push(d);
    }
    let cert_required = spec.cert_required.unwrap_or(false);
    if cert_required && spec.ca_secret.is_none() {
        let d = r
            .error(
                "missing_ca_secret",
                &format!("{base}.cert_required"),
                "cert_required needs a ca_secret to check client certificates against",
            )
            .hint("add `ca_secret:` naming a Secret whose tls.crt (or ca.crt) holds the CA certificate");
        r.diagnostics.push(d);
        *ok = false;
    }
    TlsSettings {
        alpn_protocols: spec.alpn_protocols.items(),
        min_version,
        max_version,
        cipher_suites: spec.cipher_suites.clone(),
        ecdh_curves: spec.ecdh_curves.clone(),
        cert_required,
        ca_secret: spec
            .ca_secret
            .as_deref()
            .map(|s| secret_ref(s, namespacing, &r.meta.namespace)),
    }
}

/// The TLS settings' fields are repeated here rather than `#[serde(flatten)]`ed from
/// [`TlsSettingsSpec`]: flattening hides unknown fields from `serde_ignored`, and a misspelled
/// field must be reported.
#[derive(Clone, Debug, Default, Deserialize)]
struct TlsContextSpec {
    #[serde(default)]
    hosts: Vec<String>,
    secret: Option<String>,
    secret_namespacing: Option<bool>,
    sni: Option<String>,
    #[serde(default)]
    alpn_protocols: StringOrList,
    min_tls_version: Option<String>,
    max_tls_version: Option<String>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    ecdh_curves: Vec<String>,
    cert_required: Option<bool>,
    ca_secret: Option<String>,
    redirect_cleartext_from: Option<serde_json::Value>,
    #[allow(dead_code, reason = "read by resource::parse before the spec")]
    ambassador_id: Option<serde_json::Value>,
}

/// The field names `spec` accepts (see `resource::fields`).
pub(super) fn spec_fields() -> &'static [&'static str] {
    super::fields::of::<TlsContextSpec>()
}

/// A valid TLSContext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsContext {
    /// Hostnames it terminates TLS for (Hosts with these hostnames use it).
    pub hosts: Vec<String>,
    /// The certificate's Secret: `(namespace, name)`.
    pub secret: Option<(String, String)>,
    /// SNI sent when a Mapping originates TLS with this context.
    pub sni: Option<String>,
    /// How TLS is spoken.
    pub settings: TlsSettings,
}

/// `name` or, with secret namespacing (the default), `name.namespace`.
pub(crate) fn secret_ref(text: &str, namespacing: bool, default_namespace: &str) -> (String, String) {
    match text.rsplit_once('.') {
        Some((name, ns)) if namespacing && !ns.is_empty() && !name.is_empty() => (ns.to_string(), name.to_string()),
        _ => (default_namespace.to_string(), text.to_string()),
    }
}

/// Reads and checks a TLSContext spec.
pub(crate) fn read(r: &mut Reader<'_>) -> Option<TlsContext> {
    let spec: TlsContextSpec = r.spec(&|p| {
        (p == "spec.alpn_protocols").then(|| "a comma-separated string or a list, e.g. `h2,http/1.1`".to_string())
    })?;
    let mut ok = true;
    let namespacing = spec.secret_namespacing.unwrap_or(true);
    let settings_spec = TlsSettingsSpec {
        alpn_protocols: spec.alpn_protocols,
        min_tls_version: spec.min_tls_version,
        max_tls_version: spec.max_tls_version,
        cipher_suites: spec.cipher_suites,
        ecdh_curves: spec.ecdh_curves,
        cert_required: spec.cert_required,
        ca_secret: spec.ca_secret,
        redirect_cleartext_from: spec.redirect_cleartext_from,
    };
    let settings = read_settings(r, &settings_spec, "spec", namespacing, &mut ok);
    if !ok {
        return None;
    }
    let namespace = r.meta.namespace.clone();
    Some(TlsContext {
        // DNS names ignore case: kept lowercase, as Hosts' hostnames are.
        hosts: spec.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        secret: spec.secret.as_deref().map(|s| secret_ref(s, namespacing, &namespace)),
        sni: spec.sni,
        settings,
    })
}
