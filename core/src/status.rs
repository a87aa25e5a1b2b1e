//! What attache would write into the `status` of the Kubernetes objects it read: a Host's
//! `state` (`Ready`, or `Error` with the reason, as Emissary writes it), and for Mappings,
//! TCPMappings and Listeners an `Accepted` condition (beyond Emissary: the error with its field
//! path, or the warnings), with Emissary's `state` (`Running`/`Inactive`) on Mappings. Pure: the
//! writer (`serve --write-status`) decides when and whether to write, and adds the times.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::diagnostic::{Diagnostic, ObjectRef, Severity};
use crate::source::RawObject;

/// The kinds whose status attache writes, with their plurals.
pub const KINDS: &[(&str, &str)] = &[
    ("Host", "hosts"),
    ("Mapping", "mappings"),
    ("TCPMapping", "tcpmappings"),
    ("Listener", "listeners"),
];

/// The condition type attache writes.
pub const ACCEPTED: &str = "Accepted";

/// Longest condition message written (the API server has no limit, `kubectl describe` does).
const MAX_MESSAGE: usize = 1024;

/// An object whose status attache writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// Kind, namespace and name.
    pub object: ObjectRef,
    /// The plural of its kind, for its `/status` path.
    pub plural: &'static str,
    /// For a Host: whether it names a TLS Secret (Emissary's `tlsCertificateSource: Other`).
    pub tls_secret: bool,
}

use crate::resource::str_text as text;

/// The objects among `objects` whose status attache writes: getambassador.io Hosts, Mappings,
/// TCPMappings and Listeners that are Kubernetes objects of their own (not the contents of a
/// Service's annotation, which has no status to write, nor files).
pub fn targets(objects: &[RawObject]) -> Vec<Target> {
    let mut out: Vec<Target> = objects
        .iter()
        .filter(|o| o.origin.file.starts_with("kubernetes resourceVersion"))
        .filter(|o| text(&o.root, &["apiVersion"]).is_some_and(|v| v.starts_with("getambassador.io/")))
        .filter_map(|o| {
            let kind = text(&o.root, &["kind"])?;
            let (_, plural) = KINDS.iter().find(|(k, _)| *k == kind)?;
            Some(Target {
                object: ObjectRef {
                    kind: kind.to_string(),
                    namespace: text(&o.root, &["metadata", "namespace"])
                        .unwrap_or(crate::source::DEFAULT_NAMESPACE)
                        .to_string(),
                    name: text(&o.root, &["metadata", "name"])?.to_string(),
                },
                plural,
                tls_secret: o.root.get("spec").and_then(|s| s.get("tlsSecret")).is_some(),
            })
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.object == b.object);
    out
}

fn line(d: &Diagnostic) -> String {
    let mut s = if d.path.is_empty() {
        d.message.clone()
    } else {
        format!("{}: {}", d.path, d.message)
    };
    if let Some(origin) = d.origin.as_ref().filter(|o| o.line > 0) {
        s.push_str(&format!(" ({}:{})", origin.file, origin.line));
    }
    s
}

fn joined(list: &[&Diagnostic]) -> String {
    let mut s = list.iter().map(|d| line(d)).collect::<Vec<_>>().join("; ");
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The `status` of each target, from the translation's diagnostics. Conditions have no
/// `lastTransitionTime` yet: the writer keeps the last one while the condition stays the same.
pub fn desired(targets: &[Target], diagnostics: &[Diagnostic]) -> BTreeMap<ObjectRef, Value> {
    let mut by_object: BTreeMap<&ObjectRef, Vec<&Diagnostic>> = BTreeMap::new();
    for d in diagnostics {
        if let Some(o) = &d.object {
            by_object.entry(o).or_default().push(d);
        }
    }
    // Objects for another instance (`ambassador_id`) are that instance's to write.
    let other_instance = |t: &&Target| {
        by_object
            .get(&t.object)
            .is_some_and(|ds| ds.iter().any(|d| d.code == "resource.other_ambassador_id"))
    };
    targets
        .iter()
        .filter(|t| !other_instance(t))
        .map(|t| {
            let found = by_object.get(&t.object).map(Vec::as_slice).unwrap_or_default();
            let errors: Vec<&Diagnostic> = found
                .iter()
                .copied()
                .filter(|d| d.severity == Severity::Error)
                .collect();
            let warnings: Vec<&Diagnostic> = found
                .iter()
                .copied()
                .filter(|d| d.severity == Severity::Warning)
                .collect();
            let status = if t.object.kind == "Host" {
                if errors.is_empty() {
                    json!({"state": "Ready", "tlsCertificateSource": if t.tls_secret { "Other" } else { "None" }})
                } else {
                    json!({"state": "Error", "errorReason": joined(&errors)})
                }
            } else {
                let (status, reason, message) = if !errors.is_empty() {
                    ("False", "Invalid", joined(&errors))
                } else if !warnings.is_empty() {
                    ("True", "AcceptedWithWarnings", joined(&warnings))
                } else {
                    ("True", "Accepted", String::new())
                };
                let mut value = json!({"conditions": [{
                    "type": ACCEPTED,
                    "status": status,
                    "reason": reason,
                    "message": message,
                }]});
                if t.object.kind == "Mapping" {
                    value["state"] = json!(if errors.is_empty() { "Running" } else { "Inactive" });
                    if !errors.is_empty() {
                        value["reason"] = json!(joined(&errors));
                    }
                }
                value
            };
            (t.object.clone(), status)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Origin;
    use crate::source::yaml::Node;
    use crate::source::RawObject;

    fn object(kind: &str, name: &str, origin: &str) -> RawObject {
        let root = Node::from_json(
            &json!({"apiVersion": "getambassador.io/v3alpha1", "kind": kind, "metadata": {"name": name, "namespace": "shop"}, "spec": {"tlsSecret": {"name": "x"}}}),
            0,
            0,
        );
        RawObject::new(Origin::new(origin, 0, 0), root)
    }

    #[test]
    fn errors_and_warnings_become_conditions_and_host_states() {
        let objects = [
            object("Mapping", "bad", "kubernetes resourceVersion 7"),
            object("Mapping", "warned", "kubernetes resourceVersion 8"),
            object("Host", "h", "kubernetes resourceVersion 9"),
            object(
                "Mapping",
                "from-annotation",
                "kubernetes Service shop/s resourceVersion 3",
            ),
            object("Mapping", "in-a-file", "mappings.yaml"),
            object("Module", "ambassador", "kubernetes resourceVersion 10"),
        ];
        let targets = targets(&objects);
        let names: Vec<&str> = targets.iter().map(|t| t.object.name.as_str()).collect();
        assert_eq!(names, ["h", "bad", "warned"]);
        let on = |name: &str, kind: &str| ObjectRef {
            kind: kind.into(),
            namespace: "shop".into(),
            name: name.into(),
        };
        let diagnostics = [
            Diagnostic::error("mapping.invalid_field", "expected a number")
                .on(on("bad", "Mapping"))
                .path("spec.timeout_ms"),
            Diagnostic::warning("mapping.no_host", "no Host serves this Mapping").on(on("warned", "Mapping")),
            Diagnostic::notice(
                "resource.other_ambassador_id",
                "ambassador_id does not include `default`; ignored",
            )
            .on(on("h", "Host")),
        ];
        let status = desired(&targets, &diagnostics);
        let bad = &status[&on("bad", "Mapping")];
        assert_eq!(bad["state"], "Inactive");
        assert_eq!(bad["conditions"][0]["status"], "False");
        assert_eq!(bad["conditions"][0]["message"], "spec.timeout_ms: expected a number");
        let warned = &status[&on("warned", "Mapping")];
        assert_eq!(
            (&warned["state"], &warned["conditions"][0]["reason"]),
            (&json!("Running"), &json!("AcceptedWithWarnings"))
        );
        // Another instance's Host is left to it.
        assert!(!status.contains_key(&on("h", "Host")));
        let status = desired(&targets, &diagnostics[..2]);
        assert_eq!(
            status[&on("h", "Host")],
            json!({"state": "Ready", "tlsCertificateSource": "Other"})
        );
    }
}
