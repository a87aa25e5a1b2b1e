//! The template contexts rule packs read, as JSON Schema: the IR node of each kind, serialized
//! (its fields are the `schemars` derive of the IR types), plus `rendered`, the children a
//! parent's rules splice in. `VERSION` names this shape; a pack says which version it was
//! written for (`context:` in pack.yaml). Pure: derived from the types, nothing read at run time.

use serde_json::{json, Value};

use crate::ir::NodeKind;

/// The version of the template contexts: changed when a field is renamed or removed (added fields
/// keep it), with what changed said in rules/README.md.
pub const VERSION: &str = "v1";

fn of<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
}

/// `schema` with its `properties` changed by `edit`.
fn with_properties(mut schema: Value, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        edit(props);
    }
    schema
}

/// The JSON Schema of the context a rule of `kind` sees.
pub fn schema(kind: NodeKind) -> Value {
    let list = |items: Value| json!({"type": "array", "items": items});
    let rendered =
        |props: Value| json!({"type": "object", "description": "already rendered children", "properties": props});
    let mut s = match kind {
        NodeKind::Route => with_properties(of::<crate::ir::Route>(), |p| {
            p.insert("rendered".into(), rendered(json!({})));
        }),
        NodeKind::Cluster => with_properties(of::<crate::ir::Cluster>(), |p| {
            p.insert("rendered".into(), rendered(json!({})));
        }),
        NodeKind::Endpoints => with_properties(of::<crate::ir::Endpoints>(), |p| {
            p.insert("rendered".into(), rendered(json!({})));
        }),
        NodeKind::Secret => with_properties(of::<crate::ir::Secret>(), |p| {
            p.insert("rendered".into(), rendered(json!({})));
        }),
        NodeKind::Listener => with_properties(of::<crate::ir::Listener>(), |p| {
            p.insert(
                "rendered".into(),
                rendered(json!({"http_filters": list(json!({"type": "object", "description": "an HttpFilter message as JSON"}))})),
            );
        }),
        NodeKind::HttpFilter => with_properties(of::<crate::ir::Listener>(), |p| {
            p.insert("rendered".into(), rendered(json!({})));
        }),
        NodeKind::VirtualHost => with_properties(of::<crate::ir::VirtualHost>(), |p| {
            p.remove("routes");
            p.insert(
                "rendered".into(),
                rendered(json!({"routes": list(json!({"type": "object", "description": "a Route message as JSON, in match order"}))})),
            );
        }),
        NodeKind::RouteConfig => with_properties(of::<crate::ir::RouteConfig>(), |p| {
            p.remove("virtual_hosts");
            p.insert(
                "rendered".into(),
                rendered(json!({"virtual_hosts": list(json!({"type": "object", "description": "a VirtualHost message as JSON"}))})),
            );
        }),
    };
    // Fields a parent's context leaves out are not required either.
    if let Some(props) = s.get("properties").and_then(Value::as_object).cloned() {
        if let Some(required) = s.get_mut("required").and_then(Value::as_array_mut) {
            required.retain(|r| r.as_str().is_some_and(|r| props.contains_key(r)));
        }
    }
    s["title"] = json!(format!("attache template context {VERSION}: {}", kind.as_str()));
    s
}

/// `schema(kind)`, derived once per process (a pack's load checks hundreds of paths).
fn schema_cached(kind: NodeKind) -> &'static Value {
    static SCHEMAS: std::sync::OnceLock<Vec<(NodeKind, Value)>> = std::sync::OnceLock::new();
    let all = SCHEMAS.get_or_init(|| NodeKind::ALL.iter().map(|&k| (k, schema(k))).collect());
    all.iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, s)| s)
        .expect("NodeKind::ALL lists every kind")
}

/// A schema's `$ref`, and `Option<T>`'s `anyOf: [T, null]`, followed down to the object or list
/// they stand for (`Null` when that cannot be told).
fn resolve_schema<'a>(defs: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix("#/$defs/").and_then(|n| defs.get(n)) {
                Some(d) => s = d,
                None => return &Value::Null,
            }
        } else if let Some(any) = s.get("anyOf").or_else(|| s.get("oneOf")).and_then(Value::as_array) {
            match any
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) != Some("null"))
            {
                Some(a) if any.len() == 2 => s = a,
                _ => return &Value::Null,
            }
        } else {
            return s;
        }
    }
    &Value::Null
}

/// Whether `path` (dotted field names; numbers or `*` for a list's items) names something in the context of
/// `kind`: `Err` with what is wrong (and the closest field) when a step is not there. Through a
/// map, or a part the schema does not describe, the rest is not checked.
pub fn check_path(kind: NodeKind, path: &str) -> Result<(), String> {
    let root = schema_cached(kind);
    let defs = root.get("$defs").unwrap_or(&Value::Null);
    let resolve = |v: &'static Value| resolve_schema(defs, v);
    let mut at = resolve(root);
    let mut walked: Vec<&str> = Vec::new();
    for seg in path.split('.') {
        if seg == "*" || seg.parse::<usize>().is_ok() {
            // A list's items (`*` also a map's values).
            match at
                .get("items")
                .or_else(|| at.get("additionalProperties").filter(|a| a.is_object()))
            {
                Some(items) => at = resolve(items),
                None => return Ok(()),
            }
        } else if let Some(props) = at.get("properties").and_then(Value::as_object) {
            match props.get(seg) {
                Some(next) => at = resolve(next),
                None => {
                    let known: Vec<&str> = props.keys().map(String::as_str).collect();
                    let within = if walked.is_empty() {
                        format!("the `{}` context", kind.as_str())
                    } else {
                        format!("`{}` of the `{}` context", walked.join("."), kind.as_str())
                    };
                    return Err(match crate::diagnostic::closest(seg, known.iter().copied()) {
                        Some(m) => format!("`{path}`: {within} has no field `{seg}` (did you mean `{m}`?)"),
                        None => format!("`{path}`: {within} has no field `{seg}` (it has: {})", known.join(", ")),
                    });
                }
            }
        } else {
            // A map, a scalar, or what the schema leaves open: not checked further.
            return Ok(());
        }
        walked.push(seg);
    }
    Ok(())
}

/// Every kind's schema, by kind.
pub fn all() -> Value {
    let mut out = serde_json::Map::new();
    out.insert("version".into(), json!(VERSION));
    for kind in NodeKind::ALL {
        out.insert(kind.as_str().to_string(), schema(kind));
    }
    Value::Object(out)
}

/// The top-level field names of a kind's context (what rules/README.md's tables list).
pub fn fields(kind: NodeKind) -> Vec<String> {
    schema(kind)
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_schema_with_its_fields_and_rendered() {
        for kind in NodeKind::ALL {
            let f = fields(kind);
            assert!(f.contains(&"rendered".to_string()), "{kind:?}: {f:?}");
            assert!(f.contains(&"name".to_string()), "{kind:?}: {f:?}");
        }
        assert!(fields(NodeKind::Route).contains(&"timeout_ms".to_string()));
        assert!(!fields(NodeKind::VirtualHost).contains(&"routes".to_string()));
        assert_eq!(fields(NodeKind::RouteConfig), ["name", "rendered"]);
    }

    #[test]
    fn paths_are_checked_through_options_references_and_lists() {
        assert_eq!(check_path(NodeKind::Route, "action"), Ok(()));
        assert_eq!(check_path(NodeKind::Route, "retry_policy.num_retries"), Ok(()));
        assert_eq!(check_path(NodeKind::Listener, "http.gzip"), Ok(()));
        assert_eq!(check_path(NodeKind::Listener, "filter_chains.0.name"), Ok(()));
        assert_eq!(check_path(NodeKind::Listener, "rendered.http_filters"), Ok(()));
        let e = check_path(NodeKind::Listener, "protocol").unwrap_err();
        assert!(e.contains("the `listener` context has no field `protocol`"), "{e}");
        let e = check_path(NodeKind::Route, "retry_policy.num_retry").unwrap_err();
        assert!(e.contains("did you mean `num_retries`"), "{e}");
        let e = check_path(NodeKind::Listener, "http.gzp").unwrap_err();
        assert!(e.contains("`http` of the `listener` context"), "{e}");
    }
}

#[cfg(test)]
mod readme {
    use std::collections::BTreeSet;

    use super::*;

    /// The field names rules/README.md lists for each kind (the first column of its table:
    /// every backticked name, up to a dot).
    fn documented() -> Vec<(String, BTreeSet<String>)> {
        let text = include_str!("../../../rules/README.md");
        let mut out: Vec<(String, BTreeSet<String>)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("### `") {
                let kind = rest.split('`').next().unwrap_or_default().to_string();
                out.push((kind, BTreeSet::new()));
            } else if line.starts_with("## ") {
                out.push((String::new(), BTreeSet::new()));
            } else if let (Some((_, names)), Some(cell)) = (out.last_mut(), line.strip_prefix("| ")) {
                let first = cell.split(" |").next().unwrap_or_default();
                for name in first.split('`').skip(1).step_by(2) {
                    names.insert(name.to_string());
                }
            }
        }
        out.retain(|(k, names)| !k.is_empty() && !names.is_empty());
        out
    }

    #[test]
    fn the_readme_context_tables_list_exactly_the_schema_fields() {
        let docs = documented();
        let kinds: Vec<&str> = docs.iter().map(|(k, _)| k.as_str()).collect();
        for kind in NodeKind::ALL.iter().filter(|k| **k != NodeKind::HttpFilter) {
            assert!(
                kinds.contains(&kind.as_str()),
                "rules/README.md has no table for `{}`",
                kind.as_str()
            );
        }
        for (kind, names) in docs {
            let kind = NodeKind::from_key(&kind).unwrap();
            let top: BTreeSet<String> = names
                .iter()
                .map(|n| n.split('.').next().unwrap_or_default().to_string())
                .collect();
            let schema: BTreeSet<String> = fields(kind).into_iter().collect();
            let mut want = schema.clone();
            // Leaves' `rendered` is empty: not listed.
            if !top.contains("rendered") {
                want.remove("rendered");
            }
            assert_eq!(
                top,
                want,
                "rules/README.md's table for `{}` and the context's fields differ",
                kind.as_str()
            );
            // Every rendered child is documented by its full name.
            let children = schema_children(kind);
            for child in children {
                assert!(
                    names.contains(&format!("rendered.{child}")),
                    "{}: rendered.{child} undocumented",
                    kind.as_str()
                );
            }
        }
    }

    fn schema_children(kind: NodeKind) -> Vec<String> {
        schema(kind)["properties"]["rendered"]["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }
}
