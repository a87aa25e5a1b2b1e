//! Edits of rule packs: `add`, `replace`, `remove`, `insert_before` and `insert_after` at a path
//! (`lang::patch_path`) inside a rule's rendered output, and which nodes they apply to
//! (`select`: the source object's namespace and name globs, and its labels). List elements are
//! found by content, never by index. Pure functions of the value they edit; loading checks what
//! can be checked before any input (`check_path` against the emitted message's schema).

use prost_reflect::{Kind, MessageDescriptor};
use serde::Deserialize;
use serde_json::Value;

use crate::ir::SourceRef;
use crate::lang::patch_path::{Path, Selector, Step};

/// What an edit does at its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set a field that is absent, append to a list (a list value's items), merge into a map or
    /// into the chosen list elements.
    Add,
    /// Replace what the path finds.
    Replace,
    /// Remove what the path finds.
    Remove,
    /// Insert before the first list element the path chooses.
    InsertBefore,
    /// Insert after the last list element the path chooses.
    InsertAfter,
}

impl Op {
    /// The key that names it in `pack.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Replace => "replace",
            Op::Remove => "remove",
            Op::InsertBefore => "insert_before",
            Op::InsertAfter => "insert_after",
        }
    }
}

/// Where an edit's value comes from.
#[derive(Clone, Debug)]
pub enum EditValue {
    /// `remove` has none.
    None,
    /// A value written in `pack.yaml`.
    Literal(Value),
    /// A template rendered with the node's context (`<pack>:<file>`).
    Template(String),
}

/// One edit of a rule.
#[derive(Clone, Debug)]
pub struct Edit {
    /// What it does.
    pub op: Op,
    /// Where.
    pub path: Path,
    /// With what.
    pub value: EditValue,
}

/// Which nodes a rule applies to, by the object they came from. Every given part must hold; a
/// node made up by attache (no source object) is never selected.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Select {
    /// Glob (`*`, `?`) on the object's namespace.
    pub namespace: Option<String>,
    /// Glob on the object's name.
    pub name: Option<String>,
    /// Labels the object must have, with these values.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Select {
    /// Whether the node made from `source` is selected.
    pub fn matches(&self, source: Option<&SourceRef>) -> bool {
        let Some(s) = source else {
            return false;
        };
        self.namespace.as_deref().is_none_or(|g| glob(g, &s.object.namespace))
            && self.name.as_deref().is_none_or(|g| glob(g, &s.object.name))
            && self.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
    }
}

/// `*` matches any run of characters, `?` one character, anything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Classic two-pointer wildcard matching with backtracking to the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// `camelCase` and `snake_case` spellings of a field compare equal (templates may write either).
fn same_field(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 4);
        for c in s.chars() {
            if c.is_ascii_uppercase() {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
    a == b || norm(a) == norm(b)
}

/// The key of `object` that is the field `field`.
fn member_key(object: &serde_json::Map<String, Value>, field: &str) -> Option<String> {
    object.keys().find(|k| same_field(k, field)).cloned()
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn element_matches(element: &Value, field: &str, value: &str) -> bool {
    element
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| same_field(k, field)))
        .and_then(|(_, v)| scalar_text(v))
        .is_some_and(|v| v == value)
}

/// Applies one edit to `target`. `Ok(true)`: something changed; `Ok(false)`: the path found
/// nothing; `Err`: the edit cannot apply here (what it says).
pub fn apply(target: &mut Value, edit: &Edit, value: Option<&Value>) -> Result<bool, String> {
    let steps = &edit.path.steps;
    let Some((last, parents)) = steps.split_last() else {
        return Ok(false);
    };
    walk(target, parents, &mut |holder| at_last(holder, last, edit.op, value))
}

/// Calls `f` with every value `steps` lead to from `v` (objects holding the last field).
fn walk(v: &mut Value, steps: &[Step], f: &mut dyn FnMut(&mut Value) -> Result<bool, String>) -> Result<bool, String> {
    let Some((step, rest)) = steps.split_first() else {
        return f(v);
    };
    let Some(object) = v.as_object_mut() else {
        return Ok(false);
    };
    let Some(key) = member_key(object, &step.field) else {
        return Ok(false);
    };
    let Some(member) = object.get_mut(&key) else {
        return Ok(false);
    };
    through(member, &step.selectors, &mut |reached| walk(reached, rest, f))
}

/// Calls `f` with every value `selectors` choose in `v`.
fn through(
    v: &mut Value,
    selectors: &[Selector],
    f: &mut dyn FnMut(&mut Value) -> Result<bool, String>,
) -> Result<bool, String> {
    let Some((sel, rest)) = selectors.split_first() else {
        return f(v);
    };
    let mut changed = false;
    match (sel, v) {
        (Selector::All, Value::Array(items)) => {
            for item in items.iter_mut() {
                changed |= through(item, rest, f)?;
            }
        }
        (Selector::Element(field, value), Value::Array(items)) => {
            for item in items.iter_mut().filter(|i| element_matches(i, field, value)) {
                changed |= through(item, rest, f)?;
            }
        }
        (Selector::Key(key), Value::Object(map)) => {
            if let Some(entry) = map.get_mut(key) {
                changed |= through(entry, rest, f)?;
            }
        }
        _ => {}
    }
    Ok(changed)
}

/// `add` onto a value that is there (not null): a list grows, a map merges.
fn add_into(existing: &mut Value, value: &Value, what: &str) -> Result<(), String> {
    match (existing, value) {
        (Value::Array(list), Value::Array(items)) => list.extend(items.iter().cloned()),
        (Value::Array(list), item) => list.push(item.clone()),
        (existing @ Value::Object(_), Value::Object(_)) => super::node::merge(existing, value.clone()),
        _ => return Err(format!("{what} is already set; use `replace` to change it")),
    }
    Ok(())
}

/// The edit at the last step, in `holder` (the object that has, or gets, the field).
fn at_last(holder: &mut Value, step: &Step, op: Op, value: Option<&Value>) -> Result<bool, String> {
    let Some(object) = holder.as_object_mut() else {
        return Ok(false);
    };
    let key = member_key(object, &step.field);
    let what = format!("`{}`", step.field);
    let Some((last_sel, nav)) = step.selectors.split_last() else {
        // The field itself.
        return match (op, key) {
            (Op::Add, None) => {
                object.insert(step.field.clone(), value.cloned().unwrap_or(Value::Null));
                Ok(true)
            }
            (Op::Add, Some(k)) => {
                let existing = object.get_mut(&k).ok_or("vanished")?;
                if existing.is_null() {
                    *existing = value.cloned().unwrap_or(Value::Null);
                } else {
                    add_into(existing, value.unwrap_or(&Value::Null), &what)?;
                }
                Ok(true)
            }
            (Op::Replace, Some(k)) => {
                object.insert(k, value.cloned().unwrap_or(Value::Null));
                Ok(true)
            }
            (Op::Remove, Some(k)) => Ok(object.remove(&k).is_some()),
            (Op::Replace | Op::Remove, None) => Ok(false),
            (Op::InsertBefore | Op::InsertAfter, _) => Err(format!(
                "`{}` needs a path that ends in a list element chosen by content",
                op.as_str()
            )),
        };
    };
    let Some(key) = key else {
        return Ok(false);
    };
    let Some(member) = object.get_mut(&key) else {
        return Ok(false);
    };
    through(member, nav, &mut |container| match (last_sel, &mut *container) {
        (Selector::Element(..) | Selector::All, Value::Array(items)) => {
            let hits: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, i)| match last_sel {
                    Selector::Element(field, wanted) => element_matches(i, field, wanted),
                    _ => true,
                })
                .map(|(n, _)| n)
                .collect();
            let (Some(&first), Some(&last)) = (hits.first(), hits.last()) else {
                return Ok(false);
            };
            let new_items = || match value {
                Some(Value::Array(v)) => v.clone(),
                Some(v) => vec![v.clone()],
                None => Vec::new(),
            };
            match op {
                Op::Add => {
                    for n in &hits {
                        add_into(&mut items[*n], value.unwrap_or(&Value::Null), &what)?;
                    }
                }
                Op::Replace => {
                    for n in &hits {
                        items[*n] = value.cloned().unwrap_or(Value::Null);
                    }
                }
                Op::Remove => {
                    for n in hits.iter().rev() {
                        items.remove(*n);
                    }
                }
                Op::InsertBefore => {
                    items.splice(first..first, new_items());
                }
                Op::InsertAfter => {
                    items.splice(last + 1..last + 1, new_items());
                }
            }
            Ok(true)
        }
        (Selector::Key(k), Value::Object(map)) => match op {
            Op::Add => match map.get_mut(k) {
                None => {
                    map.insert(k.clone(), value.cloned().unwrap_or(Value::Null));
                    Ok(true)
                }
                Some(existing) if existing.is_null() => {
                    *existing = value.cloned().unwrap_or(Value::Null);
                    Ok(true)
                }
                Some(existing) => add_into(existing, value.unwrap_or(&Value::Null), &format!("`{k}`")).map(|()| true),
            },
            Op::Replace => match map.get_mut(k) {
                Some(existing) => {
                    *existing = value.cloned().unwrap_or(Value::Null);
                    Ok(true)
                }
                None => Ok(false),
            },
            Op::Remove => Ok(map.remove(k).is_some()),
            Op::InsertBefore | Op::InsertAfter => Err(format!(
                "`{}` needs a list element chosen by content, not a map key",
                op.as_str()
            )),
        },
        _ => Ok(false),
    })
}

/// Checks a path against the message a rule emits: every field exists (either spelling), a
/// `[field=value]` follows a list of messages that have `field`, a `["key"]` follows a map.
/// Inside an `Any` (`typed_config`) the type is not known until rendering: the rest is not
/// checked. `children` is the field a parent's template splices its children into, which edits
/// cannot reach (they have rules of their own kind).
pub fn check_path(message: &MessageDescriptor, path: &Path, children: Option<&str>) -> Result<(), String> {
    let mut desc = message.clone();
    for (n, step) in path.steps.iter().enumerate() {
        if n == 0 && children.is_some_and(|c| same_field(c, &step.field)) {
            return Err(format!(
                "`{}` holds this node's children, which are rendered by rules of their own kind: edit them there",
                step.field
            ));
        }
        let field = desc
            .fields()
            .find(|f| same_field(f.name(), &step.field) || f.json_name() == step.field)
            .ok_or_else(|| {
                let known: Vec<String> = desc.fields().map(|f| f.name().to_string()).collect();
                match crate::diagnostic::closest(&step.field, known.iter().map(String::as_str)) {
                    Some(m) => format!(
                        "`{}` has no field `{}` (did you mean `{m}`?)",
                        desc.full_name(),
                        step.field
                    ),
                    None => format!("`{}` has no field `{}`", desc.full_name(), step.field),
                }
            })?;
        let mut kind = field.kind();
        let mut list = field.is_list();
        let mut map = field.is_map();
        for sel in &step.selectors {
            match sel {
                Selector::All => {
                    if !list {
                        return Err(format!(
                            "`{}[*]` chooses list elements, but `{}` is not a list",
                            step.field, step.field
                        ));
                    }
                    list = false;
                }
                Selector::Element(name, _) => {
                    if !list {
                        return Err(format!(
                            "`{}[{name}=...]` chooses a list element, but `{}` is not a list",
                            step.field, step.field
                        ));
                    }
                    if let Kind::Message(m) = &kind {
                        if m.full_name() != "google.protobuf.Any" && !m.fields().any(|f| same_field(f.name(), name)) {
                            return Err(format!(
                                "the elements of `{}` ({}) have no field `{name}`",
                                step.field,
                                m.full_name()
                            ));
                        }
                    }
                    list = false;
                }
                Selector::Key(_) => {
                    if !map {
                        return Err(format!(
                            "`{}[\"...\"]` chooses a map entry, but `{}` is not a map",
                            step.field, step.field
                        ));
                    }
                    if let Kind::Message(entry) = &kind {
                        kind = entry.map_entry_value_field().kind();
                    }
                    map = false;
                }
            }
        }
        match kind {
            Kind::Message(m) if m.full_name() == "google.protobuf.Any" || m.full_name() == "google.protobuf.Struct" => {
                return Ok(());
            }
            Kind::Message(m) => desc = m,
            _ if n + 1 < path.steps.len() => {
                return Err(format!("`{}` is not a message: nothing is inside it", step.field));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::lang::patch_path::parse;

    fn edit(op: Op, path: &str) -> Edit {
        Edit {
            op,
            path: parse(path).unwrap(),
            value: EditValue::None,
        }
    }

    fn listener() -> Value {
        json!({"name": "l", "filter_chains": [
            {"name": "cleartext", "filters": [{"name": "hcm", "typed_config": {"httpFilters": [
                {"name": "cors"}, {"name": "router"}]}}]},
            {"name": "tls", "filters": [{"name": "hcm", "typed_config": {"httpFilters": [{"name": "router"}]}}]}]})
    }

    #[test]
    fn insert_before_an_element_chosen_by_content_in_every_chain() {
        let mut v = listener();
        let e = edit(
            Op::InsertBefore,
            "filter_chains.filters[name=hcm].typed_config.http_filters[name=router]",
        );
        // `filter_chains` without a selector goes nowhere: it is a list (`[*]` is every element).
        assert_eq!(apply(&mut v, &e, Some(&json!({"name": "lua"}))), Ok(false));
        let e = edit(
            Op::InsertBefore,
            "filter_chains[name=cleartext].filters[name=hcm].typed_config.http_filters[name=router]",
        );
        assert_eq!(apply(&mut v, &e, Some(&json!({"name": "lua"}))), Ok(true));
        let names: Vec<&str> = v["filter_chains"][0]["filters"][0]["typed_config"]["httpFilters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["cors", "lua", "router"]);
        let e = edit(Op::Add, "filter_chains[*].filters[name=hcm].typed_config.access_log");
        assert_eq!(apply(&mut v, &e, Some(&json!([{"name": "log"}]))), Ok(true));
        assert_eq!(
            v["filter_chains"][1]["filters"][0]["typed_config"]["access_log"][0]["name"],
            "log"
        );
        assert_eq!(
            v["filter_chains"][1]["filters"][0]["typed_config"]["httpFilters"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn add_replace_remove() {
        let mut v = json!({"route": {"timeout": "3s"}, "response_headers_to_add": [{"a": 1}]});
        assert_eq!(
            apply(
                &mut v,
                &edit(Op::Add, "response_headers_to_add"),
                Some(&json!([{"b": 2}]))
            ),
            Ok(true)
        );
        assert_eq!(v["response_headers_to_add"], json!([{"a": 1}, {"b": 2}]));
        assert!(apply(&mut v, &edit(Op::Add, "route.timeout"), Some(&json!("5s"))).is_err());
        assert_eq!(
            apply(&mut v, &edit(Op::Replace, "route.timeout"), Some(&json!("5s"))),
            Ok(true)
        );
        assert_eq!(v["route"]["timeout"], "5s");
        assert_eq!(
            apply(&mut v, &edit(Op::Add, "route.idleTimeout"), Some(&json!("1s"))),
            Ok(true)
        );
        assert_eq!(v["route"]["idleTimeout"], "1s");
        assert_eq!(apply(&mut v, &edit(Op::Remove, "route.idle_timeout"), None), Ok(true));
        assert_eq!(apply(&mut v, &edit(Op::Remove, "route.idle_timeout"), None), Ok(false));
        let mut m = json!({"typed_per_filter_config": {"cors": {"x": 1}}});
        assert_eq!(
            apply(&mut m, &edit(Op::Remove, "typed_per_filter_config[\"cors\"]"), None),
            Ok(true)
        );
        assert_eq!(m, json!({"typed_per_filter_config": {}}));
    }

    #[test]
    fn globs() {
        assert!(glob("shop-*", "shop-eu"));
        assert!(glob("*", ""));
        assert!(glob("a?c*", "abcdef"));
        assert!(!glob("shop-*", "shopping"));
        assert!(glob("*-prod", "eu-west-prod"));
        assert!(!glob("*-prod", "eu-west-prod2"));
    }

    #[test]
    fn paths_are_checked_against_the_schema() {
        let route = crate::envoy::message("envoy.config.route.v3.Route").unwrap();
        assert!(check_path(&route, &parse("route.timeout").unwrap(), None).is_ok());
        assert!(check_path(&route, &parse("response_headers_to_add").unwrap(), None).is_ok());
        assert!(check_path(&route, &parse("typed_per_filter_config[\"x\"].anything").unwrap(), None).is_ok());
        let e = check_path(&route, &parse("route.timout").unwrap(), None).unwrap_err();
        assert!(e.contains("did you mean `timeout`"), "{e}");
        let e = check_path(&route, &parse("route[name=x]").unwrap(), None).unwrap_err();
        assert!(e.contains("not a list"), "{e}");
        let listener = crate::envoy::message("envoy.config.listener.v3.Listener").unwrap();
        let p =
            parse("filter_chains[name=cleartext].filters[name=hcm].typed_config.http_filters[name=router]").unwrap();
        assert!(check_path(&listener, &p, None).is_ok());
        let e = check_path(&listener, &parse("filter_chains[nme=x]").unwrap(), None).unwrap_err();
        assert!(e.contains("no field `nme`"), "{e}");
        let vh = crate::envoy::message("envoy.config.route.v3.VirtualHost").unwrap();
        assert!(check_path(&vh, &parse("routes[name=x]").unwrap(), Some("routes")).is_err());
    }
}
