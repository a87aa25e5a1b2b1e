//! `attache rules test PACK`: runs a rule pack's fixtures, for operators' CI. Each case is a
//! directory under `PACK/tests/` with an `input.yaml` (or an `input/` directory) and an
//! `expected.yaml`: the Envoy resources the case must produce, by type, as `attache translate`
//! prints them, and optionally the `diagnostics` it must report. The comparison is by resource:
//! every resource the expected file lists must be in the output, equal to the byte; resources it
//! does not list are not compared, so a fixture pins what the pack is about and survives
//! unrelated changes to the built-in pack. `--update` writes each case's whole output.
//!
//! Also the diff behind `attache translate --diff`. Reads and writes files; the translation is
//! the library's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::snapshot::ResourceType;

/// The outcome of one case.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything expected is there.
    Passed,
    /// `expected.yaml` was written (`--update`, or a new case).
    Written,
    /// What differs, for a human.
    Failed(String),
}

/// One case's name and outcome.
#[derive(Debug)]
pub struct CaseResult {
    /// The case directory's name.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
}

/// A pack's fixtures, run.
#[derive(Debug)]
pub struct Report {
    /// Each case, in name order.
    pub cases: Vec<CaseResult>,
    /// The ids of the pack's rules that no case's configuration selects (see
    /// `rules::coverage`): untested, or a `select`/`when` that matches nothing.
    pub unexercised: Vec<String>,
}

/// The output of a translation as `attache translate` prints it: resources by type label, plus
/// `diagnostics` (one line each, files relative to `base`) when there are any.
pub fn output_value(t: &crate::Translation, base: &Path) -> Value {
    let mut map = resources_value(&t.snapshot);
    let lines: Vec<Value> = t
        .diagnostics
        .iter()
        .map(|d| Value::String(relative(d, base).to_string()))
        .collect();
    if !lines.is_empty() {
        map.insert("diagnostics".into(), Value::Array(lines));
    }
    Value::Object(map)
}

/// A snapshot's resources by type label (types without resources left out): what `attache
/// translate` prints.
pub fn resources_value(snapshot: &crate::snapshot::Snapshot) -> Map<String, Value> {
    let mut map = Map::new();
    for ty in ResourceType::ALL {
        let items = crate::envoy::resources_json(snapshot, ty);
        if !items.is_empty() {
            map.insert(ty.label().to_string(), Value::Array(items));
        }
    }
    map
}

/// A diagnostic with its file relative to the case directory, so that fixtures do not depend on
/// where the pack is checked out.
fn relative(d: &crate::diagnostic::Diagnostic, base: &Path) -> crate::diagnostic::Diagnostic {
    let mut d = d.clone();
    if let Some(o) = d.origin.as_mut() {
        if let Ok(rel) = Path::new(&o.file).strip_prefix(base) {
            o.file = rel.display().to_string();
        }
    }
    d
}

/// The name a resource is found by: `name`, or a ClusterLoadAssignment's `clusterName`.
fn resource_name(v: &Value) -> Option<&str> {
    v.get("name")
        .or_else(|| v.get("clusterName"))
        .or_else(|| v.get("cluster_name"))
        .and_then(Value::as_str)
}

/// A unified diff of two texts, labelled.
pub fn diff(old_label: &str, new_label: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}

/// What of `actual` differs from `expected` (see the module doc): `None` when nothing does.
pub fn compare(expected: &Value, actual: &Value) -> Option<String> {
    let mut out = String::new();
    let Some(expected) = expected.as_object() else {
        return Some(
            "expected.yaml must be a map of resource types (clusters, listeners, routes, ...) and `diagnostics`\n"
                .into(),
        );
    };
    for (key, want) in expected {
        let have = actual.get(key).cloned().unwrap_or(Value::Array(Vec::new()));
        if key == "diagnostics" {
            if *want != have {
                let text = |v: &Value| {
                    v.as_array()
                        .map(|l| {
                            l.iter()
                                .filter_map(Value::as_str)
                                .map(|s| format!("{s}\n"))
                                .collect::<String>()
                        })
                        .unwrap_or_default()
                };
                let _ = write!(
                    out,
                    "diagnostics differ:\n{}",
                    diff("expected", "actual", &text(want), &text(&have))
                );
            }
            continue;
        }
        let Some(items) = want.as_array() else {
            let _ = writeln!(out, "`{key}` must be a list of resources");
            continue;
        };
        if !ResourceType::ALL.iter().any(|t| t.label() == key) {
            let labels: Vec<&str> = ResourceType::ALL.iter().map(|t| t.label()).collect();
            let _ = writeln!(
                out,
                "unknown key `{key}` (resource types: {}, and `diagnostics`)",
                labels.join(", ")
            );
            continue;
        }
        for item in items {
            let Some(name) = resource_name(item) else {
                let _ = writeln!(out, "an expected resource in `{key}` has no `name`");
                continue;
            };
            let found = have
                .as_array()
                .and_then(|list| list.iter().find(|r| resource_name(r) == Some(name)));
            match found {
                None => {
                    let _ = writeln!(out, "{key}: no resource named `{name}` in the output");
                }
                Some(r) if r != item => {
                    let _ = write!(
                        out,
                        "{key} `{name}` differs:\n{}",
                        diff(
                            "expected",
                            "actual",
                            &crate::output::to_yaml(item),
                            &crate::output::to_yaml(r)
                        )
                    );
                }
                Some(_) => {}
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The case directories of a pack, sorted.
pub fn cases(pack: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = pack.join("tests");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("input.yaml").is_file() || p.join("input").is_dir())
        .collect();
    out.sort();
    Ok(out)
}

/// Runs every case of `pack` with `registry` (the built-in pack, the packs it builds on, then it)
/// and `options`; writes `expected.yaml` where `update` says so or where it is missing.
///
/// # Errors
/// When the pack has no `tests/` directory or a file cannot be read or written.
pub fn run(
    pack: &Path,
    registry: &std::sync::Arc<crate::rules::Registry>,
    options: &crate::Options,
    update: bool,
) -> anyhow::Result<Report> {
    use anyhow::Context as _;
    // The pack under test's own rules (not those of the packs applied before it).
    let name = std::fs::read_to_string(pack.join("pack.yaml"))
        .ok()
        .and_then(|text| crate::source::yaml::parse_one(&text).ok().flatten())
        .and_then(|doc| doc.to_json().get("name").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let mut unexercised: Option<std::collections::BTreeSet<String>> = None;
    let cases = cases(pack).with_context(|| {
        format!(
            "{}: no tests/ directory (a case is tests/NAME/input.yaml with tests/NAME/expected.yaml)",
            pack.display()
        )
    })?;
    let mut results = Vec::new();
    for case in cases {
        let case_name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let input = if case.join("input").is_dir() {
            case.join("input")
        } else {
            case.join("input.yaml")
        };
        let loaded = crate::source::dir::load(&input);
        let t = crate::Translator::new(std::sync::Arc::clone(registry), options.clone()).translate(&loaded);
        let unapplied: std::collections::BTreeSet<String> = crate::rules::coverage::unapplied(&t.ir, registry)
            .into_iter()
            .filter(|r| r.pack == name)
            .map(|r| r.id.clone())
            .collect();
        unexercised = Some(match unexercised {
            None => unapplied,
            Some(before) => before.intersection(&unapplied).cloned().collect(),
        });
        let actual = output_value(&t, &case);
        let expected_path = case.join("expected.yaml");
        let outcome = if update || !expected_path.exists() {
            std::fs::write(&expected_path, crate::output::to_yaml(&actual))
                .with_context(|| format!("writing {}", expected_path.display()))?;
            Outcome::Written
        } else {
            let text = std::fs::read_to_string(&expected_path)
                .with_context(|| format!("reading {}", expected_path.display()))?;
            match crate::source::yaml::parse_one(&text) {
                Ok(Some(doc)) => match compare(&doc.to_json(), &actual) {
                    None => Outcome::Passed,
                    Some(why) => Outcome::Failed(why),
                },
                Ok(None) => Outcome::Failed("expected.yaml is empty\n".into()),
                Err(e) => Outcome::Failed(format!("expected.yaml:{}: {}\n", e.line, e.message)),
            }
        };
        results.push(CaseResult {
            name: case_name,
            outcome,
        });
    }
    Ok(Report {
        cases: results,
        unexercised: unexercised.unwrap_or_default().into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn listed_resources_must_match_and_others_are_not_compared() {
        let actual = json!({"clusters": [{"name": "a", "connectTimeout": "3s"}, {"name": "b"}],
                            "diagnostics": ["x"]});
        assert_eq!(
            compare(&json!({"clusters": [{"name": "a", "connectTimeout": "3s"}]}), &actual),
            None
        );
        let why = compare(&json!({"clusters": [{"name": "a", "connectTimeout": "1s"}]}), &actual).unwrap();
        assert!(
            why.contains("clusters `a` differs") && why.contains("-connectTimeout: 1s"),
            "{why}"
        );
        assert!(why.contains("+connectTimeout: 3s"), "{why}");
        let why = compare(&json!({"routes": [{"name": "r"}]}), &actual).unwrap();
        assert!(why.contains("no resource named `r`"), "{why}");
        let why = compare(&json!({"diagnostics": []}), &actual).unwrap();
        assert!(why.contains("+x"), "{why}");
        let why = compare(&json!({"clusterz": []}), &actual).unwrap();
        assert!(why.contains("unknown key `clusterz`"), "{why}");
    }
}
