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
    let list = |description: &str, items: Value| json!({"type": "array", "description": description, "items": items});
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
                rendered(json!({"http_filters": list(
                    "The HTTP filter table's output for this listener, in chain order: HttpFilter messages as JSON (not in an `http_filter` rule's own context).",
                    json!({"type": "object", "description": "an HttpFilter message as JSON"}),
                )})),
            );
        }),
        NodeKind::HttpFilter => with_properties(of::<crate::ir::Listener>(), |p| {
            p.insert("rendered".into(), rendered(json!({})));
        }),
        NodeKind::VirtualHost => with_properties(of::<crate::ir::VirtualHost>(), |p| {
            p.remove("routes");
            p.insert(
                "rendered".into(),
                rendered(json!({"routes": list(
                    "The rendered routes, in match order: Route messages as JSON.",
                    json!({"type": "object", "description": "a Route message as JSON"}),
                )})),
            );
        }),
        NodeKind::RouteConfig => with_properties(of::<crate::ir::RouteConfig>(), |p| {
            p.remove("virtual_hosts");
            p.insert(
                "rendered".into(),
                rendered(json!({"virtual_hosts": list(
                    "The rendered virtual hosts: VirtualHost messages as JSON.",
                    json!({"type": "object", "description": "a VirtualHost message as JSON"}),
                )})),
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

/// The Envoy message the core pack's rules of `kind` emit (what its context is rendered into).
pub fn message(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Cluster => "envoy.config.cluster.v3.Cluster",
        NodeKind::Route => "envoy.config.route.v3.Route",
        NodeKind::VirtualHost => "envoy.config.route.v3.VirtualHost",
        NodeKind::RouteConfig => "envoy.config.route.v3.RouteConfiguration",
        NodeKind::Listener => "envoy.config.listener.v3.Listener",
        NodeKind::HttpFilter => "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
        NodeKind::Endpoints => "envoy.config.endpoint.v3.ClusterLoadAssignment",
        NodeKind::Secret => "envoy.extensions.transport_sockets.tls.v3.Secret",
    }
}

/// A schema's description as one line of a Markdown table cell.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A short, readable summary of a schema's type: `integer`, `string or null`, `list of {a, b}`,
/// `` `x`, `y` or `z` `` for an enum, `{a, b: {c, d}}` for an object (fields two levels deep).
fn summary(defs: &Value, s: &Value, depth: usize) -> String {
    let mut s = s;
    for _ in 0..16 {
        match s
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
        {
            Some(name) => match defs.get(name) {
                Some(d) => s = d,
                None => return "object".into(),
            },
            None => break,
        }
    }
    let or = |mut parts: Vec<String>| -> String {
        parts.dedup();
        match parts.len() {
            0 => "any".into(),
            1 => parts.remove(0),
            n => format!("{} or {}", parts[..n - 1].join(", "), parts[n - 1]),
        }
    };
    if let Some(c) = s.get("const") {
        return format!("`{}`", c.as_str().map_or_else(|| c.to_string(), str::to_string));
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return or(values
            .iter()
            .map(|v| format!("`{}`", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect());
    }
    if let Some(any) = s.get("anyOf").or_else(|| s.get("oneOf")).and_then(Value::as_array) {
        let null = any
            .iter()
            .any(|a| a.get("type").and_then(Value::as_str) == Some("null"));
        let mut parts: Vec<String> = any
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
            .map(|a| summary(defs, a, depth))
            .collect();
        if null {
            parts.push("null".into());
        }
        return or(parts);
    }
    let (ty, null) = match s.get("type") {
        Some(Value::String(t)) => (t.as_str(), false),
        Some(Value::Array(ts)) => (
            ts.iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or("null"),
            ts.iter().any(|t| t == "null"),
        ),
        _ => ("any", false),
    };
    let base = match ty {
        "array" => format!(
            "list of {}",
            s.get("items").map_or_else(|| "any".into(), |i| summary(defs, i, depth))
        ),
        "object" => match (
            s.get("properties").and_then(Value::as_object),
            s.get("additionalProperties"),
        ) {
            (Some(props), _) if !props.is_empty() => {
                let fields: Vec<String> = props
                    .iter()
                    .map(|(k, v)| {
                        let inner = summary(defs, v, depth + 1);
                        if depth == 0 && inner.starts_with('{') {
                            format!("{k}: {inner}")
                        } else {
                            k.clone()
                        }
                    })
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }
            (_, Some(v)) if v.is_object() => format!("map of {}", summary(defs, v, depth)),
            _ => "object".into(),
        },
        other => other.to_string(),
    };
    if null {
        format!("{base} or null")
    } else {
        base
    }
}

/// rules/README.md's section on a kind's context: a heading naming the kind and the message it
/// renders, the context's own description, and a table of its fields (name, type, description),
/// all from the schema (`attache rules schema --markdown`; a test keeps the README in step).
pub fn markdown(kind: NodeKind) -> String {
    let s = schema_cached(kind);
    let defs = s.get("$defs").unwrap_or(&Value::Null);
    let mut out = format!("### `{}` → `{}`\n\n", kind.as_str(), message(kind));
    if kind == NodeKind::HttpFilter {
        out.push_str("The `listener` context: an `http_filter` rule renders one filter of a listener's chain.\n");
        return out;
    }
    if let Some(d) = s.get("description").and_then(Value::as_str) {
        for paragraph in d.split("\n\n") {
            out.push_str(&cell(paragraph).replace("\\|", "|"));
            out.push_str("\n\n");
        }
    }
    out.push_str("| field | type | |\n|---|---|---|\n");
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        return out;
    };
    for (name, field) in props {
        if name == "rendered" {
            continue;
        }
        let description = field.get("description").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!(
            "| `{name}` | {} | {} |\n",
            cell(&summary(defs, field, 0)),
            cell(description)
        ));
    }
    for (name, field) in props
        .get("rendered")
        .and_then(|r| r.get("properties"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let description = field.get("description").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!(
            "| `rendered.{name}` | {} | {} |\n",
            cell(&summary(defs, field, 0)),
            cell(description)
        ));
    }
    out
}

/// Every kind's section (see [`markdown`]): the route table's kinds, then the listener's, then
/// what the clusters use.
pub fn markdown_all() -> String {
    use NodeKind::*;
    [
        Cluster,
        Route,
        VirtualHost,
        RouteConfig,
        Listener,
        HttpFilter,
        Endpoints,
        Secret,
    ]
    .iter()
    .map(|&k| markdown(k))
    .collect::<Vec<_>>()
    .join("\n")
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
    use super::*;

    const BEGIN: &str = "<!-- BEGIN generated by `attache rules schema --markdown`: edit the IR's doc comments, then `UPDATE_GOLDEN=1 cargo test -p attache-core readme` -->\n";
    const END: &str = "<!-- END generated -->\n";

    /// rules/README.md's context sections are the schema's, generated: a field added, renamed or
    /// documented differently in the IR fails here until the README is regenerated.
    #[test]
    fn the_readme_context_tables_are_the_generated_ones() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/README.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
            panic!("rules/README.md lacks the generated section's markers");
        };
        let current = &text[b + BEGIN.len()..e];
        let generated = format!("\n{}\n", markdown_all());
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            let updated = format!("{}{BEGIN}{generated}{}", &text[..b], &text[e..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        if current != generated {
            let diff = similar::TextDiff::from_lines(current, generated.as_str())
                .unified_diff()
                .header("rules/README.md", "generated")
                .to_string();
            panic!(
                "rules/README.md's context tables differ from the schema (regenerate with UPDATE_GOLDEN=1):\n{diff}"
            );
        }
        // Every kind has its section.
        for kind in NodeKind::ALL {
            assert!(current.contains(&format!("### `{}`", kind.as_str())), "{kind:?}");
        }
    }

    #[test]
    fn type_summaries_read_as_operators_write_them() {
        let route = markdown(NodeKind::Route);
        for row in [
            "| `action` | `route`, `https_redirect` or `redirect` |",
            "| `timeout_ms` | integer |",
            "| `retry_policy` | {num_retries, per_try_timeout_ms, retry_on} or null |",
            "| `upgrades` | list of string |",
        ] {
            assert!(route.contains(row), "{row} not in\n{route}");
        }
        assert!(markdown(NodeKind::VirtualHost).contains("| `rendered.routes` | list of object |"));
    }
}
