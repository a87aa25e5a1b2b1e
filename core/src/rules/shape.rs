//! Parsing rendered text once per *shape*.
//!
//! Most IR nodes of a kind render to the same YAML around different values: 5,000 clusters differ
//! in their names, hosts and ports, which templates print with `{{json ...}}` (and
//! `{{duration ...}}`). While a template renders, those helpers print a marker instead of the value
//! and record the value's JSON on the side ([`Recording`]). The text with markers is the shape:
//! it is parsed as YAML once, and each node with that shape gets a copy of the parsed tree with
//! the recorded values put where their markers are.
//!
//! That is exact, not a heuristic: a helper's output is one JSON value on one line, which is a
//! complete YAML flow node wherever a marker (a plain scalar) is one; a marker that ends up as part
//! of a larger scalar, or a key that is not a string, makes the node fall back to parsing its
//! real text. The tests below compare both paths; the golden tests pin the built-in pack's output.
//!
//! Owns: the recording hook the helpers call, the shape cache. Must not: know templates or IR.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::memo::Source;
use crate::envoy::plan::{EncodePlan, Markers};

use serde_json::Value;

/// Marker delimiter: a private-use character, valid in YAML plain scalars and never printed by
/// attache's helpers (a context string containing it only costs the fast path).
const MARK: char = '\u{E000}';

/// How many shapes are kept before the cache starts over (a bound on memory when raw `{{x}}`
/// outputs make every node's shape different).
const MAX_SHAPES: usize = 4096;

thread_local! {
    static RECORDED: RefCell<Option<(Vec<String>, Vec<Source>)>> = const { RefCell::new(None) };
}

/// Called by the `json` and `duration` helpers with the JSON they would print: returns what to
/// print instead (a marker while a recording is on this thread, else the JSON itself).
pub(crate) fn emit(json: String) -> String {
    emit_from(json, Source::Fixed)
}

/// [`emit`], saying where the value came from (for the template memo, see `memo`).
pub(crate) fn emit_from(json: String, source: Source) -> String {
    RECORDED.with(|r| match r.borrow_mut().as_mut() {
        Some((values, sources)) => {
            values.push(json);
            sources.push(source);
            format!("{MARK}{}{MARK}", values.len() - 1)
        }
        None => json,
    })
}

/// Records helper output on this thread while alive.
pub(crate) struct Recording(());

impl Recording {
    pub(crate) fn start() -> Recording {
        RECORDED.with(|r| *r.borrow_mut() = Some((Vec::new(), Vec::new())));
        Recording(())
    }

    /// Stops recording: the JSON texts the markers stand for, by marker number, and where each
    /// came from.
    pub(crate) fn finish(self) -> (Vec<String>, Vec<Source>) {
        RECORDED.with(|r| r.borrow_mut().take()).unwrap_or_default()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        RECORDED.with(|r| *r.borrow_mut() = None);
    }
}

/// The real text: markers replaced by the JSON they stand for.
pub(crate) fn real_text(shape: &str, values: &[String]) -> String {
    let mut out = String::with_capacity(shape.len() + values.iter().map(String::len).sum::<usize>());
    let mut parts = shape.split(MARK);
    out.push_str(parts.next().unwrap_or_default());
    while let (Some(index), Some(text)) = (parts.next(), parts.next()) {
        match index.parse::<usize>().ok().and_then(|i| values.get(i)) {
            Some(v) => out.push_str(v),
            None => {
                out.push(MARK);
                out.push_str(index);
                out.push(MARK);
            }
        }
        out.push_str(text);
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Parsed shapes by their text.
#[derive(Debug, Default)]
pub(crate) struct ShapeCache {
    shapes: Mutex<HashMap<Arc<str>, Arc<Shape>>>,
}

/// One shape: its parsed value (`None`: it does not parse, and each node's real text is parsed
/// for the error message), and once a node of it was encoded in full, its encode plan.
#[derive(Debug)]
pub(crate) struct Shape {
    value: Option<Value>,
    plan: OnceLock<Option<EncodePlan>>,
}

/// How `envoy::plan` finds markers.
const MARKERS: Markers = Markers {
    whole: marker,
    within: |s| s.contains(MARK),
};

impl ShapeCache {
    /// The shape of this text, parsed on first sight.
    pub(crate) fn get(&self, shape: &str) -> Arc<Shape> {
        if let Some(s) = lock(&self.shapes).get(shape) {
            return Arc::clone(s);
        }
        let value = match crate::source::yaml::parse_one(shape) {
            Ok(Some(n)) => Some(n.to_json()),
            Ok(None) => Some(Value::Object(serde_json::Map::new())),
            Err(_) => None,
        };
        let parsed = Arc::new(Shape {
            value,
            plan: OnceLock::new(),
        });
        let mut shapes = lock(&self.shapes);
        if shapes.len() >= MAX_SHAPES {
            shapes.clear();
        }
        Arc::clone(shapes.entry(shape.into()).or_insert(parsed))
    }

    /// The shape of a node's rendered text with markers, `None` when the text holds markers the
    /// helpers did not print (a context string with the marker character in it).
    pub(crate) fn of_node(&self, shape: &str, values: &[String]) -> Option<Arc<Shape>> {
        (shape.matches(MARK).count() == 2 * values.len()).then(|| self.get(shape))
    }

    /// How many shapes have an encode plan (for tests).
    #[cfg(test)]
    pub(crate) fn plans_learnt(&self) -> usize {
        lock(&self.shapes)
            .values()
            .filter(|s| matches!(s.plan.get(), Some(Some(_))))
            .count()
    }

    /// The value of `shape` with `values` put in, or `None` when this node needs its real text
    /// parsed (no valid shape, or a marker that is not a whole value).
    #[cfg(test)]
    pub(crate) fn value(&self, shape: &str, values: &[String]) -> Option<Value> {
        self.of_node(shape, values)?.value(values)
    }
}

impl Shape {
    /// The value with `values` put in, or `None` when the node needs its real text parsed (no
    /// valid shape, or a marker that is not a whole value).
    pub(crate) fn value(&self, values: &[String]) -> Option<Value> {
        fill(self.value.as_ref()?, values)
    }

    /// The encode plan of this shape as a message of type `emits`, once one was learnt.
    pub(crate) fn plan(&self, emits: &str) -> Option<&EncodePlan> {
        self.plan.get()?.as_ref().filter(|p| p.emits() == emits)
    }

    /// Learns the encode plan from a node of this shape that was decoded, checked and encoded
    /// in full into `encoded`: kept only if that node encodes through the plan to the same bytes.
    pub(crate) fn learn(&self, emits: &str, values: &[String], encoded: &[u8]) {
        if self.plan.get().is_some() {
            return;
        }
        let Some(plan) = self.value.as_ref().and_then(|v| EncodePlan::build(emits, v, MARKERS)) else {
            let _ = self.plan.set(None);
            return;
        };
        match plan.encode(values) {
            Some((bytes, _)) if bytes == encoded => {
                let _ = self.plan.set(Some(plan));
            }
            // Not the same bytes: the plan is wrong for this shape, which is then always
            // decoded in full.
            Some(_) => {
                tracing::debug!(emits, "an encode plan did not reproduce its node's bytes; not used");
                let _ = self.plan.set(None);
            }
            // This node cannot go through the plan (an empty value): learn from another.
            None => {}
        }
    }
}

/// Marker number of a string that is exactly one marker.
fn marker(s: &str) -> Option<usize> {
    s.strip_prefix(MARK)?.strip_suffix(MARK)?.parse().ok()
}

/// A copy of `shape` with markers replaced by their values; `None` if a marker is not a whole
/// value or key.
fn fill(shape: &Value, values: &[String]) -> Option<Value> {
    Some(match shape {
        Value::String(s) if s.contains(MARK) => serde_json::from_str(values.get(marker(s)?)?).ok()?,
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, values)).collect::<Option<_>>()?),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = if k.contains(MARK) {
                    match serde_json::from_str(values.get(marker(k)?)?).ok()? {
                        Value::String(s) => s,
                        _ => return None,
                    }
                } else {
                    k.clone()
                };
                out.insert(key, fill(v, values)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_of(parts: &[(&str, Option<&str>)]) -> (String, Vec<String>) {
        let rec = Recording::start();
        let mut text = String::new();
        for (literal, json) in parts {
            text.push_str(literal);
            if let Some(j) = json {
                text.push_str(&emit((*j).to_string()));
            }
        }
        (text, rec.finish().0)
    }

    #[test]
    fn shapes_give_what_parsing_the_real_text_gives() {
        let cache = ShapeCache::default();
        for parts in [
            vec![("name: ", Some("\"a: b # c\"")), ("\nport: ", Some("80")), ("\n", None)],
            vec![
                ("m: {prefix: ", Some("\"/x/\"")),
                (", headers: [", Some("{\"k\": [1, null]}")),
                ("]}\n", None),
            ],
            vec![
                ("", Some("\"key\"")),
                (": ", Some("true")),
                ("\nl:\n  - ", Some("\"\\u0001é\\\"\"")),
                ("\n", None),
            ],
        ] {
            let (shape, values) = shape_of(&parts);
            let real = real_text(&shape, &values);
            let expected = crate::source::yaml::parse_one(&real).unwrap().unwrap().to_json();
            assert_eq!(cache.value(&shape, &values), Some(expected.clone()), "{real}");
            // Second time from the cache.
            assert_eq!(cache.value(&shape, &values), Some(expected), "{real}");
        }
    }

    #[test]
    fn markers_inside_larger_scalars_or_as_non_string_keys_fall_back() {
        let cache = ShapeCache::default();
        let (shape, values) = shape_of(&[("a: x", Some("\"y\"")), ("\n", None)]);
        assert_eq!(cache.value(&shape, &values), None);
        let (shape, values) = shape_of(&[("", Some("5")), (": v\n", None)]);
        assert_eq!(cache.value(&shape, &values), None);
        // The real text is what the helpers would have printed.
        assert_eq!(real_text(&shape, &values), "5: v\n");
    }

    #[test]
    fn without_a_recording_helpers_print_json() {
        assert_eq!(emit("\"x\"".into()), "\"x\"");
    }
}
