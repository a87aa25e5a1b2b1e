//! Golden tests: `tests/golden/<area>/<case>/input.yaml` → expected IR, diagnostics and one YAML
//! file per Envoy resource type, next to the input.
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the expected files (and deletes the ones a
//! case no longer produces). Without it, a mismatch, a missing file or an orphaned file fails.
//! A case may hold rule packs in `<case>/rules/<pack>/`, applied in name order.
//!
//! Each case is a test of its own, named `<area>/<case>`: `cargo test --test golden --
//! mapping/cors` runs one (this file has its own harness, `libtest-mimic`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attache::output::to_yaml;
use attache::snapshot::ResourceType;

fn cases(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for area in std::fs::read_dir(root).expect("tests/golden exists") {
        let area = area.unwrap().path();
        if !area.is_dir() {
            continue;
        }
        for case in std::fs::read_dir(&area).unwrap() {
            let case = case.unwrap().path();
            if case.join("input.yaml").is_file() {
                out.push(case);
            }
        }
    }
    out.sort();
    out
}

/// What a case produces: file name → content.
fn produce(case: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(case.join("input.yaml")).unwrap();
    let loaded = attache::source::parse_text("input.yaml", &text);
    let mut packs: Vec<PathBuf> = std::fs::read_dir(case.join("rules"))
        .map(|rd| rd.map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    packs.sort();
    let registry = attache::rules::Registry::with_packs(&packs).expect("case rule packs load");
    let t = attache::translate(&loaded, &registry, &attache::Options::default());
    let mut files = BTreeMap::new();
    files.insert("ir.yaml".to_string(), to_yaml(&serde_json::to_value(&t.ir).unwrap()));
    if !t.diagnostics.is_empty() {
        let lines: Vec<serde_json::Value> = t
            .diagnostics
            .iter()
            .map(|d| serde_json::Value::String(d.to_string()))
            .collect();
        files.insert(
            "diagnostics.yaml".to_string(),
            to_yaml(&serde_json::Value::Array(lines)),
        );
    }
    for ty in ResourceType::ALL {
        let items = attache::envoy::resources_json(&t.snapshot, ty);
        if !items.is_empty() {
            files.insert(
                format!("{}.yaml", ty.label()),
                to_yaml(&serde_json::Value::Array(items)),
            );
        }
    }
    files
}

const PRODUCED: &[&str] = &[
    "ir.yaml",
    "diagnostics.yaml",
    "clusters.yaml",
    "endpoints.yaml",
    "listeners.yaml",
    "routes.yaml",
    "secrets.yaml",
];

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    assert!(
        !(update && std::env::var_os("CI").is_some()),
        "UPDATE_GOLDEN is refused when CI is set"
    );
    let cases = cases(&root);
    assert!(cases.len() >= 5, "expected golden cases under {}", root.display());
    let mut trials: Vec<libtest_mimic::Trial> = cases
        .into_iter()
        .map(|case| {
            let name = case.strip_prefix(&root).unwrap().display().to_string();
            libtest_mimic::Trial::test(name.clone(), move || check(&name, &case, update))
        })
        .collect();
    trials.push(libtest_mimic::Trial::test(
        "the_fast_path_gives_what_the_reference_gives",
        || {
            the_fast_path_gives_what_the_reference_gives();
            Ok(())
        },
    ));
    trials.push(libtest_mimic::Trial::test(
        "the_wire_reader_prints_what_prost_reflect_prints",
        || {
            the_wire_reader_prints_what_prost_reflect_prints();
            Ok(())
        },
    ));
    trials.push(libtest_mimic::Trial::test(
        "resources_written_one_at_a_time_are_the_whole_value_printed",
        || {
            resources_written_one_at_a_time_are_the_whole_value_printed();
            Ok(())
        },
    ));
    libtest_mimic::run(&args, trials).exit();
}

/// `translate`'s output, written resource by resource (`output::write_resources`), is the text of
/// the whole `{type: [resource, ...]}` value rendered at once, in YAML and JSON, for every golden
/// case and for an empty configuration.
fn resources_written_one_at_a_time_are_the_whole_value_printed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let registry = attache::rules::Registry::core().unwrap();
    let mut inputs: Vec<String> = cases(&root)
        .into_iter()
        .filter(|case| !case.join("rules").exists())
        .map(|case| std::fs::read_to_string(case.join("input.yaml")).unwrap())
        .collect();
    inputs.push(String::new());
    assert!(inputs.len() > 20);
    for text in inputs {
        let t = attache::translate(
            &attache::source::parse_text("input.yaml", &text),
            &registry,
            &attache::Options::default(),
        );
        let whole = serde_json::Value::Object(attache::pack_test::resources_value(&t.snapshot));
        for (yaml, expected) in [
            (true, to_yaml(&whole)),
            (false, serde_json::to_string_pretty(&whole).unwrap() + "\n"),
        ] {
            let mut written = Vec::new();
            attache::output::write_resources(&t.snapshot, yaml, &mut written).unwrap();
            assert_eq!(String::from_utf8(written).unwrap(), expected, "yaml: {yaml}\n{text}");
        }
    }
}

/// Every resource of every golden case, read straight from the wire (`envoy::json`, what
/// `translate -o json` and the goldens print), is the JSON prost-reflect gives through a
/// `DynamicMessage`, in both field-name styles, and without falling back to it.
fn the_wire_reader_prints_what_prost_reflect_prints() {
    use attache::envoy::json::{to_json, Names};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut checked = 0;
    for case in cases(&root) {
        let text = std::fs::read_to_string(case.join("input.yaml")).unwrap();
        let mut packs: Vec<PathBuf> = std::fs::read_dir(case.join("rules"))
            .map(|rd| rd.map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        packs.sort();
        let registry = attache::rules::Registry::with_packs(&packs).unwrap();
        let t = attache::translate(
            &attache::source::parse_text("input.yaml", &text),
            &registry,
            &attache::Options::default(),
        );
        for (ty, name, bytes) in resources(&t) {
            let desc = attache::envoy::message(ty.message_name()).unwrap();
            for names in [Names::Json, Names::Proto] {
                let wire = to_json(&desc, &bytes, names)
                    .unwrap_or_else(|_| panic!("{}: {name} ({names:?}) not read from the wire", case.display()));
                let reflect = attache::envoy::reflect_to_json(desc.clone(), &bytes, names);
                assert_eq!(wire, reflect, "{}: {name} ({names:?})", case.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "expected the golden cases' resources, checked {checked}");
}

/// One case: what it produces against its expected files (rewritten with `update`).
fn check(name: &str, case: &Path, update: bool) -> Result<(), libtest_mimic::Failed> {
    let produced = produce(case);
    let mut failures = Vec::new();
    for file in PRODUCED {
        let path = case.join(file);
        let expected = std::fs::read_to_string(&path).ok();
        match (produced.get(*file), expected) {
            (Some(got), Some(want)) if *got == want => {}
            (Some(got), want) => {
                if update {
                    std::fs::write(&path, got).unwrap();
                } else {
                    let diff = similar::TextDiff::from_lines(want.as_deref().unwrap_or(""), got.as_str())
                        .unified_diff()
                        .header("expected", "actual")
                        .to_string();
                    failures.push(format!(
                        "{name}/{file}: {}\n{diff}",
                        if want.is_none() { "missing" } else { "differs" }
                    ));
                }
            }
            (None, Some(_)) => {
                if update {
                    std::fs::remove_file(&path).unwrap();
                } else {
                    failures.push(format!("{name}/{file}: orphaned (the case no longer produces it)"));
                }
            }
            (None, None) => {}
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} golden mismatch(es); review, then run `UPDATE_GOLDEN=1 cargo test --test golden`:\n\n{}",
            failures.len(),
            failures.join("\n")
        )
        .into())
    }
}

/// Every resource's bytes, by type and name.
fn resources(t: &attache::Translation) -> Vec<(ResourceType, String, Vec<u8>)> {
    ResourceType::ALL
        .iter()
        .flat_map(|ty| {
            t.snapshot
                .of_type(*ty)
                .map(|(n, r)| (*ty, n.to_string(), r.bytes.to_vec()))
        })
        .collect()
}

/// The fast path (`attache::Translator`: render cache, template memo, shapes, encode plans,
/// spliced children) gives exactly what the reference translation gives, for every golden case:
/// bytes, versions and diagnostics. One registry serves all the cases that use the core pack,
/// twice over, so nodes of every case also go through memo entries, shapes and plans learnt from
/// other cases' nodes; cases with their own packs get their own registry.
fn the_fast_path_gives_what_the_reference_gives() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let shared = std::sync::Arc::new(attache::rules::Registry::core().unwrap());
    let opts = attache::Options::default();
    let inputs: Vec<_> = cases(&root)
        .into_iter()
        .map(|case| {
            let text = std::fs::read_to_string(case.join("input.yaml")).unwrap();
            let mut packs: Vec<PathBuf> = std::fs::read_dir(case.join("rules"))
                .map(|rd| rd.map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect())
                .unwrap_or_default();
            packs.sort();
            let registry = if packs.is_empty() {
                std::sync::Arc::clone(&shared)
            } else {
                std::sync::Arc::new(attache::rules::Registry::with_packs(&packs).unwrap())
            };
            (case, registry, attache::source::parse_text("input.yaml", &text))
        })
        .collect();
    assert!(inputs.len() >= 20, "expected the golden cases");
    for round in 0..2 {
        for (case, registry, loaded) in &inputs {
            let reference = attache::translate(loaded, registry, &opts);
            let fast = attache::Translator::new(std::sync::Arc::clone(registry), opts.clone()).translate(loaded);
            assert_eq!(
                resources(&fast),
                resources(&reference),
                "{} (round {round})",
                case.display()
            );
            assert_eq!(
                fast.snapshot.version(),
                reference.snapshot.version(),
                "{}",
                case.display()
            );
            assert_eq!(
                fast.diagnostics,
                reference.diagnostics,
                "{} (round {round})",
                case.display()
            );
            assert_eq!(
                serde_json::to_value(&fast.ir).unwrap(),
                serde_json::to_value(&reference.ir).unwrap(),
                "{}",
                case.display()
            );
        }
    }
}
