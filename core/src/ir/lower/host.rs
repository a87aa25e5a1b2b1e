//! Host resources → virtual hosts, and which Hosts each Listener serves (`hostBinding`).

use std::collections::BTreeMap;

use crate::diagnostic::Diagnostic;
use crate::resource::host::InsecureAction;
use crate::resource::listener::NamespaceFrom;
use crate::resource::{LabelSelector, ResourceSet};

use super::listener::Lowered;
use super::source_of;
use crate::ir::{PrivateKey, Route, Secret, SourceRef, VirtualHost};

/// A Host's TLS termination: its certificate's IR secret, its settings, its CA's IR secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HostTls {
    pub secret: String,
    pub settings: crate::resource::tlscontext::TlsSettings,
    pub ca_secret: Option<String>,
}

/// A Host as lowering uses it.
pub(super) struct EffectiveHost {
    pub hostname: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub mapping_selector: Option<LabelSelector>,
    pub insecure_action: InsecureAction,
    /// How the Host terminates TLS, when it has a usable certificate.
    pub tls: Option<HostTls>,
    pub source: Option<SourceRef>,
}

/// The Hosts in effect: the defined ones, or Emissary-like default `*` when there are none. Their
/// certificates are resolved here (a missing Secret is reported once per Host) and added to
/// `secrets`.
pub(super) fn effective_hosts(
    set: &ResourceSet,
    secrets: &mut BTreeMap<String, Secret>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<EffectiveHost> {
    if set.hosts.is_empty() {
        diagnostics.push(
            Diagnostic::notice(
                "host.default",
                "no Host defined: every Mapping is served for any hostname (`*`), cleartext requests included",
            )
            .hint("define a Host to choose hostnames and what happens to cleartext requests"),
        );
        return vec![EffectiveHost {
            hostname: "*".to_string(),
            namespace: String::new(),
            labels: BTreeMap::new(),
            mapping_selector: None,
            insecure_action: InsecureAction::Route,
            tls: None,
            source: None,
        }];
    }
    set.hosts
        .iter()
        .map(|(meta, h)| {
            let fail = |diagnostics: &mut Vec<Diagnostic>, path: &str, message: String, hint: &str| {
                diagnostics.push(
                    Diagnostic::error("host.missing_secret", message)
                        .at(meta.origin.clone())
                        .on(meta.object_ref())
                        .path(path)
                        .hint(hint),
                );
            };
            // The TLSContext: named by the Host, or one whose `hosts` lists its hostname.
            let context = match &h.tls_context {
                Some(name) => {
                    let found = set
                        .tls_contexts
                        .iter()
                        .find(|(m, _)| &m.name == name && m.namespace == meta.namespace)
                        .or_else(|| set.tls_contexts.iter().find(|(m, _)| &m.name == name));
                    if found.is_none() {
                        fail(
                            diagnostics,
                            "spec.tlsContext",
                            format!("TLSContext `{name}` not found: `{}` is served over cleartext only", h.hostname),
                            "create the TLSContext, or use tlsSecret (and tls) on the Host",
                        );
                    }
                    found
                }
                None => set
                    .tls_contexts
                    .iter()
                    .find(|(_, c)| c.hosts.iter().any(|x| x.eq_ignore_ascii_case(&h.hostname))),
            };
            let secret_ref = match (&h.tls_secret, context) {
                (Some(r), _) => Some((
                    "spec.tlsSecret",
                    r.namespace.clone().unwrap_or_else(|| meta.namespace.clone()),
                    r.name.clone(),
                )),
                (None, Some((_, c))) => c.secret.clone().map(|(ns, name)| ("spec.tlsContext", ns, name)),
                (None, None) => None,
            };
            let mut secret = None;
            let mut tls = None;
            let mut ca_secret = None;
            if let Some((path, namespace, name)) = secret_ref {
                let full = format!("{namespace}/{name}");
                match resolve(set, &namespace, &name) {
                    Ok((secret_meta, s)) if s.private_key.is_some() => {
                        secrets.entry(full.clone()).or_insert_with(|| Secret {
                            name: full.clone(),
                            certificate_chain: s.certificate_chain.clone(),
                            private_key: s.private_key.clone().map(PrivateKey),
                            source: Some(source_of(secret_meta)),
                        });
                        secret = Some(full.clone());
                    }
                    Ok(_) => fail(
                        diagnostics,
                        path,
                        format!("Secret `{full}` has no tls.key, so it cannot be the certificate of `{}`, which is served over cleartext only", h.hostname),
                        "a server certificate Secret needs tls.crt and tls.key (a Secret with a certificate alone is a CA, for ca_secret)",
                    ),
                    Err(what) => fail(
                        diagnostics,
                        path,
                        format!("tlsSecret `{full}` {what}: `{}` is served over cleartext only", h.hostname),
                        "create a Secret of type kubernetes.io/tls with tls.crt and tls.key, in the Host's namespace unless tlsSecret names another",
                    ),
                }
                // How TLS is spoken: the Host's inline `tls`, else its TLSContext's settings.
                let settings = h.tls.clone().or_else(|| context.map(|(_, c)| c.settings.clone())).unwrap_or_default();
                if let Some((ca_ns, ca_name)) = &settings.ca_secret {
                    let ca_full = format!("{ca_ns}/{ca_name}#ca");
                    match resolve(set, ca_ns, ca_name) {
                        Ok((ca_meta, s)) => {
                            secrets.entry(ca_full.clone()).or_insert_with(|| Secret {
                                name: ca_full.clone(),
                                certificate_chain: s.certificate_chain.clone(),
                                private_key: None,
                                source: Some(source_of(ca_meta)),
                            });
                            ca_secret = Some(ca_full);
                        }
                        Err(what) => {
                            fail(
                                diagnostics,
                                "spec.tls.ca_secret",
                                format!("ca_secret `{ca_ns}/{ca_name}` {what}: `{}` is served over cleartext only", h.hostname),
                                "create a Secret whose tls.crt (or ca.crt) holds the CA certificate",
                            );
                            secret = None;
                        }
                    }
                }
                tls = Some(settings);
            }
            EffectiveHost {
                hostname: h.hostname.clone(),
                namespace: meta.namespace.clone(),
                labels: meta.labels.clone(),
                mapping_selector: h.mapping_selector.clone(),
                insecure_action: h.insecure_action,
                tls: secret.map(|secret| HostTls {
                    secret,
                    settings: tls.unwrap_or_default(),
                    ca_secret,
                }),
                source: Some(source_of(meta)),
            }
        })
        .collect()
}

/// A Secret by namespace and name, or why it cannot be used.
fn resolve<'s>(
    set: &'s ResourceSet,
    namespace: &str,
    name: &str,
) -> Result<(&'s crate::resource::Meta, &'s crate::resource::TlsSecret), &'static str> {
    match set
        .secrets
        .iter()
        .find(|(m, _)| m.namespace == namespace && m.name == name)
    {
        Some((m, s)) => Ok((m, s)),
        None if set.broken_secrets.contains(&(namespace.to_string(), name.to_string())) => {
            Err("cannot be used (see the error on that Secret)")
        }
        None => Err("not found"),
    }
}

/// The Hosts a Listener serves, one per hostname (the first by namespace/name wins a tie).
pub(super) fn bound_to<'h>(
    l: &Lowered,
    hosts: &'h [EffectiveHost],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<&'h EffectiveHost> {
    let mut by_name: BTreeMap<&str, &EffectiveHost> = BTreeMap::new();
    for h in hosts {
        let namespace_ok = h.source.is_none()
            || l.ir.source.is_none()
            || match l.host_namespace {
                NamespaceFrom::All => true,
                NamespaceFrom::SelfNamespace => h.namespace == l.namespace,
            };
        let selector_ok = h.source.is_none() || l.host_selector.as_ref().is_none_or(|s| s.matches(&h.labels));
        if !(namespace_ok && selector_ok) {
            continue;
        }
        if let Some(first) = by_name.get(h.hostname.as_str()) {
            if let Some(src) = &h.source {
                let owner = first.source.as_ref().map(|s| s.object.to_string()).unwrap_or_default();
                diagnostics.push(
                    Diagnostic::error(
                        "host.hostname_conflict",
                        format!(
                            "hostname `{}` is already served by {owner} on {}; this Host is not used there",
                            h.hostname, l.ir.name
                        ),
                    )
                    .at(src.origin.clone())
                    .on(src.object.clone())
                    .path("spec.hostname")
                    .hint("merge the two Hosts, or bind them to different Listeners with hostBinding"),
                );
            }
            continue;
        }
        by_name.insert(&h.hostname, h);
    }
    by_name.into_values().collect()
}

/// The virtual host for a Host with its routes.
pub(super) fn virtual_host(h: &EffectiveHost, routes: Vec<std::sync::Arc<Route>>) -> VirtualHost {
    VirtualHost {
        name: h.hostname.clone(),
        hostname: h.hostname.clone(),
        domains: vec![h.hostname.clone()],
        routes,
        source: h.source.clone(),
    }
}

/// Whether some hostname could match both DNS globs (Emissary's `hostglob_matches`, the rule
/// that associates Mappings with Hosts): a `*` stands for at least one character and only at the
/// start or the end; `*` alone matches everything; a glob starting with `.` matches only itself;
/// a glob with `*` at both ends only itself. Unlike Emissary, case is ignored (DNS names, and
/// Envoy's domain matching, ignore it).
pub(super) fn globs_intersect(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if a == b || a == "*" || b == "*" {
        return true;
    }
    if a.is_empty() || b.is_empty() || a.starts_with('.') || b.starts_with('.') {
        return false;
    }
    let ends = |g: &str| (g.starts_with('*'), g.ends_with('*'));
    let ((a_start, a_end), (b_start, b_end)) = (ends(&a), ends(&b));
    if (a_start && a_end) || (b_start && b_end) {
        return false;
    }
    // `*.example.com` and `api.*`: `api.example.com` matches both.
    if (a_start && b_end) || (a_end && b_start) {
        return true;
    }
    if a_start {
        return wildcard_overlaps(&a[1..], &b, b_start, Side::Start);
    }
    if b_start {
        return wildcard_overlaps(&b[1..], &a, a_start, Side::Start);
    }
    if a_end {
        return wildcard_overlaps(&a[..a.len() - 1], &b, b_end, Side::End);
    }
    if b_end {
        return wildcard_overlaps(&b[..b.len() - 1], &a, a_end, Side::End);
    }
    false
}

/// Which end of a glob its `*` is at.
#[derive(Clone, Copy)]
enum Side {
    Start,
    End,
}

/// `fixed` is a glob's text beside its `*` (at `side`); `other` a glob with a `*` at the same
/// side when `other_wild`.
fn wildcard_overlaps(fixed: &str, other: &str, other_wild: bool, side: Side) -> bool {
    // `x` extends `y` beyond the wildcard's side.
    let extends = |x: &str, y: &str| match side {
        Side::Start => x.ends_with(y),
        Side::End => x.starts_with(y),
    };
    if other_wild {
        // Both open on the same side: one's fixed text must extend the other's.
        let other_fixed = match side {
            Side::Start => &other[1..],
            Side::End => &other[..other.len() - 1],
        };
        extends(other_fixed, fixed) || extends(fixed, other_fixed)
    } else {
        // The `*` stands for at least one character.
        other.len() > fixed.len() && extends(other, fixed)
    }
}

#[cfg(test)]
mod tests {
    use super::globs_intersect;

    #[test]
    fn globs() {
        assert!(globs_intersect("*", "foo.com"));
        assert!(globs_intersect("*.foo.com", "a.foo.com"));
        assert!(globs_intersect("a.foo.com", "*.foo.com"));
        assert!(globs_intersect("foo.*", "foo.org"));
        assert!(!globs_intersect("a.foo.com", "b.foo.com"));
        assert!(!globs_intersect("*.foo.com", "foo.org"));
        // Emissary's finer points: `*` is at least one character, a leading `.` or `*` at both
        // ends matches only itself, a leading and a trailing `*` always overlap.
        assert!(!globs_intersect("*foo.com", "foo.com"));
        assert!(globs_intersect("*oo.com", "foo.com"));
        assert!(globs_intersect("*.com", "foo.*"));
        assert!(globs_intersect("*.foo.com", "*.bar.foo.com"));
        assert!(globs_intersect("*.bar.foo.com", "*.foo.com"));
        assert!(!globs_intersect("*.bar.com", "*.foo.com"));
        assert!(globs_intersect("foo.*", "foo.bar.*"));
        assert!(!globs_intersect("foo.*", "bar.*"));
        assert!(!globs_intersect("foo*", "foo"));
        assert!(!globs_intersect(".foo.com", "x.foo.com"));
        assert!(globs_intersect(".foo.com", ".foo.com"));
        assert!(!globs_intersect("*foo*", "afoob"));
        assert!(globs_intersect("*foo*", "*foo*"));
        assert!(globs_intersect("Foo.COM", "foo.com"));
        assert!(!globs_intersect("", "foo.com"));
    }
}
