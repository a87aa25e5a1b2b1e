//! A small, deterministic YAML emitter for JSON values (Envoy resources, IR, diagnostics), and
//! the writer of a snapshot's resources as `attache translate` prints them.
//!
//! Block style, keys in the order the value has them, strings quoted whenever a plain scalar
//! could be misread (numbers, booleans, null, special characters), so the output reads back to
//! the same value.

use serde_json::Value;

/// Writes a snapshot's resources as `{type label: [resource, ...]}` (labels sorted, types
/// without resources left out, private keys redacted), in YAML ([`to_yaml`]) or as pretty JSON,
/// one resource at a time: the JSON of the whole set never exists at once (at 100,000 Mappings
/// it took more memory than the translation). The text is exactly [`to_yaml`] or
/// `serde_json::to_string_pretty` (plus a newline) of that value, built whole.
///
/// # Errors
/// What writing to `out` returns.
pub fn write_resources(
    snapshot: &crate::snapshot::Snapshot,
    yaml: bool,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let mut types: Vec<crate::snapshot::ResourceType> = crate::snapshot::ResourceType::ALL
        .into_iter()
        .filter(|ty| snapshot.count(*ty) > 0)
        .collect();
    types.sort_by_key(|ty| ty.label());
    if types.is_empty() {
        return out.write_all(b"{}\n");
    }
    if !yaml {
        out.write_all(b"{\n")?;
    }
    let mut text = String::new();
    for (i, ty) in types.iter().enumerate() {
        let label = Value::String(ty.label().to_string());
        if yaml {
            writeln!(out, "{}:", scalar(&label))?;
        } else {
            writeln!(out, "  {label}: [")?;
        }
        let count = snapshot.count(*ty);
        for (j, (_, r)) in snapshot.of_type(*ty).enumerate() {
            let mut v = crate::envoy::bytes_to_json(ty.message_name(), &r.bytes);
            crate::envoy::redact_private_keys(&mut v);
            text.clear();
            if yaml {
                write_seq(std::slice::from_ref(&v), 2, &mut text);
            } else {
                // Inside the outer object and array: every line four spaces in (a JSON string
                // holds no raw newline, so lines are the pretty printer's own).
                for line in serde_json::to_string_pretty(&v).unwrap_or_default().lines() {
                    text.push_str("    ");
                    text.push_str(line);
                    text.push('\n');
                }
                if j + 1 < count {
                    text.insert(text.len() - 1, ',');
                }
            }
            out.write_all(text.as_bytes())?;
        }
        if !yaml {
            out.write_all(if i + 1 < types.len() { b"  ],\n" } else { b"  ]\n" })?;
        }
    }
    if !yaml {
        out.write_all(b"}\n")?;
    }
    Ok(())
}

/// Renders a value as a YAML document (ending with a newline).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => write_seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn plain_ok(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return false;
    }
    let reserved = [
        "true", "false", "True", "False", "TRUE", "FALSE", "null", "Null", "NULL", "~", "yes", "no", "Yes", "No",
        "YES", "NO", "on", "off", "On", "Off", "ON", "OFF", "y", "n", "Y", "N",
    ];
    if reserved.contains(&s)
        || s.parse::<f64>().is_ok()
        || s.starts_with(['.', '-', '+']) && s[1..].parse::<f64>().is_ok()
    {
        return false;
    }
    let first = s.chars().next().unwrap_or(' ');
    if !(first.is_ascii_alphanumeric() || first == '/' || first == '_') {
        return false;
    }
    s.chars().all(|c| c.is_ascii_alphanumeric() || "/_.-@:".contains(c))
        && !s.contains(": ")
        && !s.ends_with(':')
        && !s.starts_with("0x")
        && !s.starts_with("0o")
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if plain_ok(s) => s.clone(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn write_map(m: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar(&Value::String(k.clone())));
        out.push(':');
        write_value(v, indent, out);
    }
}

fn write_seq(a: &[Value], indent: usize, out: &mut String) {
    for v in a {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                // First key on the dash line, the rest aligned under it.
                let mut first = true;
                for (k, val) in m {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        out.push_str(&" ".repeat(indent + 2));
                    }
                    out.push_str(&scalar(&Value::String(k.clone())));
                    out.push(':');
                    write_value(val, indent + 2, out);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(inner, indent + 2, out);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn write_value(v: &Value, indent: usize, out: &mut String) {
    if is_block(v) {
        out.push('\n');
        match v {
            Value::Object(m) => write_map(m, indent + 2, out),
            Value::Array(a) => write_seq(a, indent + 2, out),
            _ => {}
        }
    } else {
        out.push(' ');
        out.push_str(&scalar(v));
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_the_yaml_reader() {
        let v = json!({"a": [{"b": 1, "c": ["x", "true", "3", ""]}, [1, 2], {}], "d": {"e": null, "f": "a: b", "@type": "t/x"}, "g": []});
        let text = to_yaml(&v);
        let back = crate::source::yaml::parse_one(&text).unwrap().unwrap().to_json();
        assert_eq!(back, v, "{text}");
    }
}
