//! What attache would write into the `status` of the Kubernetes objects it read: a Host's
//! `state` (`Ready`, or `Error` with the reason, as Emissary writes it), and for Mappings,
//! TCPMappings and Listeners an `Accepted` condition (beyond Emissary: the error with its field
//! path, or the warnings), with Emissary's `state` (`Running`/`Inactive`) on Mappings. Pure: the
//! writer (`serve --write-status`) decides when and whether to write, and adds the times.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::diagnostic::{Diagnostic, ObjectRef, Severity};
use crate::lastgood::Kept;
use crate::source::RawObject;

/// The kinds whose status says whether attache accepted them (a Host's `state`, an `Accepted`
/// condition), with their plurals. Every getambassador.io kind may also get `lastValid`.
pub const KINDS: &[(&str, &str)] = &[
    ("Host", "hosts"),
    ("Mapping", "mappings"),
    ("TCPMapping", "tcpmappings"),
    ("Listener", "listeners"),
];

/// The condition type attache writes.
pub const ACCEPTED: &str = "Accepted";

/// The status key that holds an object's last valid version (see `lastgood`): `apiVersion`,
/// `labels` and `spec`, as attache read them. The Kubernetes source reads it back, so that every
/// replica serves the same version.
pub const LAST_VALID: &str = "lastValid";

/// The status keys attache writes: a patch removes these when they are no longer wanted, and
/// leaves any other key alone.
pub const OWNED_KEYS: &[&str] = &[
    "state",
    "errorReason",
    "tlsCertificateSource",
    "reason",
    "conditions",
    LAST_VALID,
];

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

/// The objects among `objects` whose status attache writes: getambassador.io objects of the kinds
/// `plural` knows that are Kubernetes objects of their own (not the contents of a Service's
/// annotation, which has no status to write, nor files).
pub fn targets(objects: &[RawObject], plural: impl Fn(&str) -> Option<&'static str>) -> Vec<Target> {
    let mut out: Vec<Target> = objects
        .iter()
        .filter(|o| o.origin.file.starts_with("kubernetes resourceVersion"))
        .filter(|o| text(&o.root, &["apiVersion"]).is_some_and(|v| v.starts_with("getambassador.io/")))
        .filter_map(|o| {
            let kind = text(&o.root, &["kind"])?;
            let plural = plural(kind)?;
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

/// What `status.lastValid` holds for a version of an object.
pub fn last_valid(served: &RawObject) -> Value {
    let root = &served.root;
    let mut out = serde_json::Map::new();
    if let Some(v) = text(root, &["apiVersion"]) {
        out.insert("apiVersion".into(), json!(v));
    }
    if let Some(labels) = root.get("metadata").and_then(|m| m.get("labels")) {
        out.insert("labels".into(), labels.to_json());
    }
    out.insert("spec".into(), root.get("spec").map_or(Value::Null, |s| s.to_json()));
    Value::Object(out)
}

/// The object a `status.lastValid` describes: `current` (its kind, name and namespace) with the
/// stored `apiVersion`, labels and spec; `None` when `stored` is not such a record.
pub fn from_last_valid(current: &Value, stored: &Value) -> Option<Value> {
    let stored = stored.as_object()?;
    let spec = stored.get("spec").filter(|s| s.is_object())?;
    let mut object = serde_json::Map::new();
    object.insert(
        "apiVersion".into(),
        stored.get("apiVersion").filter(|v| v.is_string())?.clone(),
    );
    object.insert("kind".into(), current.get("kind")?.clone());
    let mut metadata = serde_json::Map::new();
    for key in ["name", "namespace"] {
        if let Some(v) = current.get("metadata").and_then(|m| m.get(key)) {
            metadata.insert(key.into(), v.clone());
        }
    }
    if let Some(labels) = stored.get("labels").filter(|l| l.is_object()) {
        metadata.insert("labels".into(), labels.clone());
    }
    object.insert("metadata".into(), Value::Object(metadata));
    object.insert("spec".into(), spec.clone());
    Some(Value::Object(object))
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

/// The `status` of each target, from the translation's diagnostics and the objects it served from
/// their previous version (`kept`, which get `lastValid`). Conditions have no
/// `lastTransitionTime` yet: the writer keeps the last one while the condition stays the same.
pub fn desired(targets: &[Target], diagnostics: &[Diagnostic], kept: &[Kept]) -> BTreeMap<ObjectRef, Value> {
    let kept: BTreeMap<&ObjectRef, &RawObject> = kept.iter().map(|k| (&k.object, &k.served)).collect();
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
            let served_previous = kept.get(&t.object);
            let mut status = if !KINDS.iter().any(|(k, _)| *k == t.object.kind) {
                json!({})
            } else if t.object.kind == "Host" {
                if errors.is_empty() {
                    json!({"state": "Ready", "tlsCertificateSource": if t.tls_secret { "Other" } else { "None" }})
                } else {
                    json!({"state": "Error", "errorReason": joined(&errors)})
                }
            } else {
                let (status, reason, message) = if served_previous.is_some() {
                    ("False", "ServingLastValid", joined(&errors))
                } else if !errors.is_empty() {
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
                    let running = errors.is_empty() || served_previous.is_some();
                    value["state"] = json!(if running { "Running" } else { "Inactive" });
                    if !errors.is_empty() {
                        value["reason"] = json!(joined(&errors));
                    }
                }
                value
            };
            if let Some(served) = served_previous {
                status[LAST_VALID] = last_valid(served);
            }
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
        let targets = targets(&objects, |k| KINDS.iter().find(|(kind, _)| *kind == k).map(|(_, p)| *p));
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
        let status = desired(&targets, &diagnostics, &[]);
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
        let status = desired(&targets, &diagnostics[..2], &[]);
        assert_eq!(
            status[&on("h", "Host")],
            json!({"state": "Ready", "tlsCertificateSource": "Other"})
        );
    }

    #[test]
    fn a_kept_object_gets_its_served_version_in_last_valid_and_it_reads_back() {
        let current = object("Module", "ambassador", "kubernetes resourceVersion 10");
        let targets = targets(std::slice::from_ref(&current), |k| (k == "Module").then_some("modules"));
        assert_eq!(targets.len(), 1);
        let on = ObjectRef {
            kind: "Module".into(),
            namespace: "shop".into(),
            name: "ambassador".into(),
        };
        // Not kept: nothing to say about a Module.
        assert_eq!(desired(&targets, &[], &[])[&on], json!({}));
        let served = RawObject::new(
            Origin::new("kubernetes resourceVersion 4", 0, 0),
            Node::from_json(
                &json!({"apiVersion": "getambassador.io/v2", "kind": "Module", "metadata": {"name": "ambassador", "namespace": "shop", "labels": {"a": "b"}}, "spec": {"config": {"x": 1}}}),
                0,
                0,
            ),
        );
        let kept = [Kept {
            object: on.clone(),
            served: served.clone(),
        }];
        let status = desired(&targets, &[], &kept);
        let stored = &status[&on][LAST_VALID];
        assert_eq!(
            *stored,
            json!({"apiVersion": "getambassador.io/v2", "labels": {"a": "b"}, "spec": {"config": {"x": 1}}})
        );
        let back = from_last_valid(&current.root.to_json(), stored).unwrap();
        assert_eq!(back, served.root.to_json());
        assert_eq!(from_last_valid(&current.root.to_json(), &json!({"spec": 1})), None);
    }
}
