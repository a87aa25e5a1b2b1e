//! Kubernetes `Secret` objects (core `v1`) holding a TLS certificate and key, as Hosts and
//! TLSContexts reference them: `type: kubernetes.io/tls` (or any type with the same keys) with
//! `data.tls.crt` and `data.tls.key` in base64, or `stringData` in clear. A Secret with a
//! certificate but no key (`tls.crt` or `ca.crt` alone) is a CA certificate, for checking client
//! certificates; using it as a server certificate is an error where it is used.
//!
//! Secrets that hold no certificate are not attache's business and are skipped without a word.
//! The key never appears in a diagnostic.

use base64::Engine as _;

use super::Reader;
use crate::source::yaml::Node;

/// A certificate chain and its private key, both PEM; or a CA certificate alone.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsSecret {
    /// PEM certificate chain (`tls.crt`, or `ca.crt` in a CA Secret).
    pub certificate_chain: String,
    /// PEM private key (`tls.key`); `None` in a Secret that only holds a CA certificate.
    pub private_key: Option<String>,
}

impl std::fmt::Debug for TlsSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSecret")
            .field(
                "certificate_chain",
                &format!("<{} bytes>", self.certificate_chain.len()),
            )
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Whether a raw object is a core v1 Secret.
pub(crate) fn is_secret(api_version: &str, kind: &str) -> bool {
    api_version == "v1" && kind == "Secret"
}

/// One entry of `stringData` (clear) or `data` (base64), decoded, with its field path; `Err`
/// (path, problem) when `data` is not base64 or not text.
fn entry(root: &Node, key: &str) -> Result<Option<(String, String)>, (String, &'static str)> {
    if let Some(text) = root.get("stringData").and_then(|d| d.get(key)).and_then(Node::as_str) {
        return Ok(Some((text.to_string(), format!("stringData[\"{key}\"]"))));
    }
    let Some(encoded) = root.get("data").and_then(|d| d.get(key)).and_then(Node::as_str) else {
        return Ok(None);
    };
    let path = format!("data[\"{key}\"]");
    let compact: String = encoded.split_whitespace().collect();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(compact) else {
        return Err((path, "is not valid base64"));
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some((text, path))),
        Err(_) => Err((path, "is not PEM text once decoded")),
    }
}

/// Reads a Secret; `None` when it holds no certificate (quietly) or a broken one (with an
/// error).
pub(crate) fn read(r: &mut Reader<'_>) -> Option<TlsSecret> {
    let crt = match entry(r.root, "tls.crt") {
        Ok(None) => entry(r.root, "ca.crt"),
        other => other,
    };
    let (crt, key) = match (crt, entry(r.root, "tls.key")) {
        (Ok(c), Ok(k)) => (c, k),
        (Err((path, what)), _) | (_, Err((path, what))) => {
            let d = r
                .error("invalid_data", &path, format!("`{path}` {what}"))
                .hint("`data` values are base64 of the PEM file (`base64 -w0 tls.crt`), or put the PEM text under `stringData`");
            r.diagnostics.push(d);
            return None;
        }
    };
    let (crt, crt_path) = crt?;
    if !crt.contains("-----BEGIN CERTIFICATE-----") {
        let d = r
            .error(
                "invalid_certificate",
                &crt_path,
                "the certificate holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
            )
            .hint("put the PEM certificate chain here, leaf certificate first");
        r.diagnostics.push(d);
        return None;
    }
    if let Some((key, key_path)) = &key {
        if !(key.contains("-----BEGIN") && key.contains("PRIVATE KEY-----")) {
            let d = r
                .error(
                    "invalid_private_key",
                    key_path,
                    "`tls.key` holds no PEM private key (`-----BEGIN ... PRIVATE KEY-----`)",
                )
                .hint("put the PEM private key of the certificate here");
            r.diagnostics.push(d);
            return None;
        }
    }
    Some(TlsSecret {
        certificate_chain: crt,
        private_key: key.map(|(k, _)| k),
    })
}
