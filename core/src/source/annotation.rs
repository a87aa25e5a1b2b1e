//! `getambassador.io/config` annotations on Kubernetes Services: Ambassador objects written as a
//! YAML string inside a `v1` `Service` (the oldest way to configure Emissary, still common).
//!
//! The annotation's documents become objects of their own, positioned in the file (a block scalar
//! `|` maps each annotation line to its file line; other string styles point at the annotation),
//! and in the `metadata`/`spec` form: Emissary reads annotation objects *flat* (`name`, `prefix`,
//! `service` at the top), with the Service's namespace unless they name one, and the Service's
//! labels unless they carry their own (`metadata_labels`), so a Host's `mappingSelector` selects
//! them as in Emissary. The legacy `apiVersion: ambassador/vN` is read as `getambassador.io/vN`,
//! as Emissary does. Knows nothing of the kinds inside.

use super::yaml::{self, Key, Node, NodeValue};
use crate::diagnostic::{Diagnostic, ObjectRef, Origin};

/// The annotation holding Ambassador objects.
pub const ANNOTATION: &str = "getambassador.io/config";

/// Keys that stay at the top of an unfolded object; everything else (but the [`META`] keys) goes
/// under `spec`.
const TOP: &[&str] = &["apiVersion", "kind", "metadata", "spec"];

/// Keys of a flat object that go under `metadata` (`metadata_labels` as `labels`).
const META: &[&str] = &["name", "namespace", "generation", "metadata_labels"];

/// The group prefix of the oldest annotations (`ambassador/v1`), read as `getambassador.io/`.
const LEGACY_GROUP: &str = "ambassador/";

/// The objects in a Service's annotation, or `None` when `node` is not a Service with one.
pub fn objects(file: &str, text: &str, node: &Node) -> Option<(Vec<Node>, Vec<Diagnostic>)> {
    if node.get("apiVersion").and_then(Node::as_str) != Some("v1")
        || node.get("kind").and_then(Node::as_str) != Some("Service")
    {
        return None;
    }
    let metadata = node.get("metadata")?;
    let NodeValue::Map(annotations) = &metadata.get("annotations")?.value else {
        return None;
    };
    let (key, value) = annotations.iter().find(|(k, _)| k.name == ANNOTATION)?;
    let service = ObjectRef {
        kind: "Service".to_string(),
        namespace: metadata
            .get("namespace")
            .and_then(Node::as_str)
            .unwrap_or(super::DEFAULT_NAMESPACE)
            .to_string(),
        name: metadata
            .get("name")
            .and_then(Node::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    let Some(annotation) = value.as_str() else {
        let d = Diagnostic::error(
            "annotation.not_a_string",
            format!("the {ANNOTATION} annotation must be a string of YAML"),
        )
        .at(Origin::new(file, value.line, value.column))
        .on(service)
        .hint("write it as a block: `getambassador.io/config: |` followed by the indented objects");
        return Some((Vec::new(), vec![d]));
    };
    // A block scalar (`key: |`) starts on the line after its key: annotation line n is file line
    // key + n, indented like the first line with text. Other styles: point at the value.
    let line_text = |n: u32| text.lines().nth(n.saturating_sub(1) as usize).unwrap_or("");
    let block = line_text(key.line)
        .split_once(':')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with(['|', '>']));
    let indent = (key.line + 1..key.line + 1000)
        .map(line_text)
        .find(|l| !l.trim().is_empty())
        .map_or(0, |l| l.len() - l.trim_start().len());
    let place = |line: u32, column: u32| {
        if block {
            (key.line + line, column + u32::try_from(indent).unwrap_or(0))
        } else {
            (value.line, value.column)
        }
    };
    let (docs, errors) = yaml::parse_stream(annotation);
    let mut diagnostics: Vec<Diagnostic> = errors
        .into_iter()
        .map(|e| {
            let (line, column) = place(e.line, e.column);
            Diagnostic::error(
                "yaml.syntax",
                format!("YAML syntax error in the {ANNOTATION} annotation: {}", e.message),
            )
            .at(Origin::new(file, line, column))
            .on(service.clone())
            .hint("this document of the annotation was skipped; the others were read")
        })
        .collect();
    let labels = metadata.get("labels").filter(|l| matches!(l.value, NodeValue::Map(_)));
    let mut out = Vec::new();
    for doc in docs {
        let mut root = doc.root;
        reposition(&mut root, &place);
        for item in super::unfold_lists(root) {
            match unfold(item, &service.namespace, labels) {
                Ok(n) => out.push(n),
                Err(n) => diagnostics.push(
                    Diagnostic::error(
                        "resource.not_an_object",
                        format!("a document of the {ANNOTATION} annotation is not an object"),
                    )
                    .at(Origin::new(file, n.line, n.column))
                    .on(service.clone()),
                ),
            }
        }
    }
    Some((out, diagnostics))
}

fn reposition(node: &mut Node, place: &dyn Fn(u32, u32) -> (u32, u32)) {
    (node.line, node.column) = place(node.line, node.column);
    match &mut node.value {
        NodeValue::Seq(items) => items.iter_mut().for_each(|n| reposition(n, place)),
        NodeValue::Map(entries) => {
            for (k, v) in entries {
                (k.line, k.column) = place(k.line, k.column);
                reposition(v, place);
            }
        }
        _ => {}
    }
}

/// The `metadata`/`spec` form of an annotation object, in the Service's namespace unless it
/// names one, with the Service's `labels` unless it has its own.
fn unfold(node: Node, namespace: &str, labels: Option<&Node>) -> Result<Node, Node> {
    let NodeValue::Map(entries) = node.value else {
        return Err(node);
    };
    let (line, column) = (node.line, node.column);
    let key = |name: &str, at: &Node| Key {
        name: name.to_string(),
        line: at.line,
        column: at.column,
    };
    let mut top: Vec<(Key, Node)> = Vec::new();
    let mut meta: Vec<(Key, Node)> = Vec::new();
    let mut spec: Vec<(Key, Node)> = Vec::new();
    for (k, v) in entries {
        match k.name.as_str() {
            "metadata_labels" => meta.push((
                Key {
                    name: "labels".to_string(),
                    ..k
                },
                v,
            )),
            n if META.contains(&n) => meta.push((k, v)),
            "apiVersion" => top.push((k, legacy_api_version(v))),
            n if TOP.contains(&n) => top.push((k, v)),
            _ => spec.push((k, v)),
        }
    }
    let at = Node {
        line,
        column,
        value: NodeValue::Null,
    };
    let has = |entries: &[(Key, Node)], name: &str| entries.iter().any(|(k, _)| k.name == name);
    // The Service's labels (positioned in the Service), for an object with none of its own.
    let inherited = || labels.map(|l| (key("labels", &at), l.clone()));
    // Flat keys go into `metadata` and `spec`, also when the object has them: as Emissary does,
    // a flat key is set in the map (replacing the same key there), and a `metadata` or `spec`
    // that is not a map is replaced by one.
    for (name, flat) in [("metadata", meta), ("spec", spec)] {
        match top.iter_mut().find(|(k, _)| k.name == name) {
            Some((_, existing)) => {
                if !matches!(existing.value, NodeValue::Map(_)) {
                    existing.value = NodeValue::Map(Vec::new());
                }
                if let NodeValue::Map(m) = &mut existing.value {
                    for (k, v) in flat {
                        m.retain(|(old, _)| old.name != k.name);
                        m.push((k, v));
                    }
                }
            }
            None if name == "metadata" || !flat.is_empty() => {
                let first = flat.first().map_or_else(
                    || at.clone(),
                    |(k, _)| Node {
                        line: k.line,
                        column: k.column,
                        value: NodeValue::Null,
                    },
                );
                top.push((
                    key(name, &first),
                    Node {
                        line: first.line,
                        column: first.column,
                        value: NodeValue::Map(flat),
                    },
                ));
            }
            None => {}
        }
    }
    // The Service's namespace and labels, for an object without its own.
    if let Some((_, metadata)) = top.iter_mut().find(|(k, _)| k.name == "metadata") {
        if let NodeValue::Map(m) = &mut metadata.value {
            if !has(m, "namespace") {
                m.push((key("namespace", &at), string_node(namespace, &at)));
            }
            if !has(m, "labels") {
                m.extend(inherited());
            }
        }
    }
    Ok(Node {
        line,
        column,
        value: NodeValue::Map(top),
    })
}

/// `ambassador/v2` → `getambassador.io/v2`; any other value as it is.
fn legacy_api_version(mut v: Node) -> Node {
    if let NodeValue::String(s) = &mut v.value {
        if let Some(version) = s.strip_prefix(LEGACY_GROUP) {
            *s = format!("{}/{version}", super::GROUP);
        }
    }
    v
}

fn string_node(s: &str, at: &Node) -> Node {
    Node {
        line: at.line,
        column: at.column,
        value: NodeValue::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_annotation_objects_are_unfolded_and_positioned_in_the_file() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: quote\n  namespace: shop\n  annotations:\n    getambassador.io/config: |\n      ---\n      apiVersion: getambassador.io/v2\n      kind: Mapping\n      name: quote\n      prefix: /quote/\n      service: quote\n      ---\n      apiVersion: getambassador.io/v3alpha1\n      kind: Host\n      metadata:\n        name: h\n      spec:\n        hostname: a.example.com\nspec:\n  ports: [{port: 80}]\n";
        let root = yaml::parse_one(text).unwrap().unwrap();
        let (objects, diagnostics) = objects("svc.yaml", text, &root).unwrap();
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(objects.len(), 2);
        let m = objects[0].to_json();
        assert_eq!(m["metadata"]["name"], "quote");
        assert_eq!(m["metadata"]["namespace"], "shop");
        assert_eq!(m["spec"]["prefix"], "/quote/");
        // `prefix` is on line 12, column 7 of the file.
        let prefix = objects[0].get("spec").unwrap().get("prefix").unwrap();
        assert_eq!((prefix.line, prefix.column), (12, 15));
        let h = objects[1].to_json();
        assert_eq!(h["metadata"]["namespace"], "shop");
        assert_eq!(h["spec"]["hostname"], "a.example.com");
    }

    #[test]
    fn syntax_errors_point_into_the_annotation() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: quote\n  annotations:\n    getambassador.io/config: |\n      kind: Mapping\n      prefix: [unclosed\n";
        let root = yaml::parse_one(text).unwrap().unwrap();
        let (objects, diagnostics) = objects("svc.yaml", text, &root).unwrap();
        assert!(objects.is_empty());
        assert_eq!(diagnostics.len(), 1);
        let d = diagnostics[0].to_string();
        assert!(d.starts_with("svc.yaml:8:") || d.starts_with("svc.yaml:9:"), "{d}");
        assert!(d.contains("Service default/quote") && d.contains("annotation"), "{d}");
    }

    #[test]
    fn legacy_api_versions_and_service_labels_are_read_as_emissary_reads_them() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: quote\n  labels:\n    team: shop\n  annotations:\n    getambassador.io/config: |\n      ---\n      apiVersion: ambassador/v1\n      kind: Mapping\n      name: inherits\n      prefix: /a/\n      service: quote\n      ---\n      apiVersion: ambassador/v2\n      kind: Mapping\n      name: own\n      metadata_labels:\n        team: other\n      generation: 3\n      prefix: /b/\n      service: quote\n      ---\n      apiVersion: getambassador.io/v3alpha1\n      kind: Host\n      metadata:\n        name: h\n      spec:\n        hostname: a.example.com\n";
        let root = yaml::parse_one(text).unwrap().unwrap();
        let (objects, diagnostics) = objects("svc.yaml", text, &root).unwrap();
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let [a, b, h] = [0, 1, 2].map(|i| objects[i].to_json());
        assert_eq!(a["apiVersion"], "getambassador.io/v1");
        assert_eq!(a["metadata"]["labels"], serde_json::json!({"team": "shop"}));
        assert_eq!(b["apiVersion"], "getambassador.io/v2");
        assert_eq!(b["metadata"]["labels"], serde_json::json!({"team": "other"}));
        assert_eq!(b["metadata"]["generation"], 3);
        assert!(b["spec"].get("metadata_labels").is_none() && b["spec"].get("generation").is_none());
        // The usual form inherits too.
        assert_eq!(h["metadata"]["labels"], serde_json::json!({"team": "shop"}));
    }

    #[test]
    fn flat_keys_beside_metadata_and_spec_are_merged_into_them_as_emissary_does() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: quote\n  annotations:\n    getambassador.io/config: |\n      apiVersion: getambassador.io/v3alpha1\n      kind: Mapping\n      namespace: shop\n      metadata:\n        name: m\n      spec:\n        prefix: /a/\n      service: quote\n";
        let root = yaml::parse_one(text).unwrap().unwrap();
        let (objects, diagnostics) = objects("svc.yaml", text, &root).unwrap();
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let m = objects[0].to_json();
        assert_eq!(m["metadata"]["name"], "m");
        assert_eq!(m["metadata"]["namespace"], "shop");
        assert_eq!(m["spec"]["prefix"], "/a/");
        assert_eq!(m["spec"]["service"], "quote");
    }
}
