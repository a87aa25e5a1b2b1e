//! Host resources → virtual hosts, and which Hosts each Listener serves (`hostBinding`).

use std::collections::BTreeMap;

use crate::diagnostic::Diagnostic;
use crate::resource::host::InsecureAction;
use crate::resource::listener::NamespaceFrom;
use crate::resource::{LabelSelector, ResourceSet};

use super::listener::Lowered;
use super::source_of;
use crate::ir::{PrivateKey, Route, Secret, SourceRef, VirtualHost};

/// A Host as lowering uses it.
pub(super) struct EffectiveHost {
    pub hostname: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub mapping_selector: Option<LabelSelector>,
    pub insecure_action: InsecureAction,
    /// Name of the IR secret with the Host's certificate, when it has one that exists.
    pub secret: Option<String>,
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
            secret: None,
            source: None,
        }];
    }
    set.hosts
        .iter()
        .map(|(meta, h)| EffectiveHost {
            hostname: h.hostname.clone(),
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone(),
            mapping_selector: h.mapping_selector.clone(),
            insecure_action: h.insecure_action,
            secret: h.tls_secret.as_ref().and_then(|r| {
                let namespace = r.namespace.as_deref().unwrap_or(&meta.namespace);
                let name = format!("{namespace}/{}", r.name);
                if let Some((secret_meta, s)) = set
                    .secrets
                    .iter()
                    .find(|(m, _)| m.namespace == namespace && m.name == r.name)
                {
                    secrets.entry(name.clone()).or_insert_with(|| Secret {
                        name: name.clone(),
                        certificate_chain: s.certificate_chain.clone(),
                        private_key: PrivateKey(s.private_key.clone()),
                        source: Some(source_of(secret_meta)),
                    });
                    Some(name)
                } else {
                    let broken = set.broken_secrets.contains(&(namespace.to_string(), r.name.clone()));
                    let what = if broken {
                        "cannot be used (see the error on that Secret)"
                    } else {
                        "not found"
                    };
                    diagnostics.push(
                        Diagnostic::error(
                            "host.missing_secret",
                            format!("tlsSecret `{name}` {what}: `{}` is served over cleartext only", h.hostname),
                        )
                        .at(meta.origin.clone())
                        .on(meta.object_ref())
                        .path("spec.tlsSecret")
                        .hint("create a Secret of type kubernetes.io/tls with tls.crt and tls.key, in the Host's namespace unless tlsSecret names another"),
                    );
                    None
                }
            }),
            source: Some(source_of(meta)),
        })
        .collect()
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
pub(super) fn virtual_host(h: &EffectiveHost, routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: h.hostname.clone(),
        hostname: h.hostname.clone(),
        domains: vec![h.hostname.clone()],
        routes,
        source: h.source.clone(),
    }
}

/// Whether DNS glob `pattern` (at most one `*`, at the start or the end) matches `name`.
fn glob_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return name.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return name.starts_with(prefix);
    }
    pattern.eq_ignore_ascii_case(name)
}

/// Emissary's host association: two globs go together when either matches the other.
pub(super) fn globs_intersect(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || glob_matches(a, b) || glob_matches(b, a)
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
    }
}
