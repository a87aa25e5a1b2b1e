//! Replays every saved fuzz input (fuzz/corpus and fuzz/artifacts) and every golden input through
//! the fuzz entry points, so CI on a stable toolchain covers them without a fuzz engine.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() && !path.file_name().unwrap().to_string_lossy().starts_with('.') {
                f(&std::fs::read(&path).unwrap());
                n += 1;
            }
        }
    }
    n
}

#[test]
fn lang_service_corpus() {
    assert!(replay("lang_service", attache::fuzzing::lang_service) > 0);
}

#[test]
fn lang_header_format_corpus() {
    assert!(replay("lang_header_format", attache::fuzzing::lang_header_format) > 0);
}

#[test]
fn lang_when_corpus() {
    assert!(replay("lang_when", attache::fuzzing::lang_when) > 0);
}

#[test]
fn lang_patch_path_corpus() {
    assert!(replay("lang_patch_path", attache::fuzzing::lang_patch_path) > 0);
}

#[test]
fn wire_json_corpus() {
    assert!(replay("wire_json", attache::fuzzing::wire_json) > 0);
}

#[test]
fn yaml_corpus() {
    assert!(replay("yaml", attache::fuzzing::yaml) > 0);
}

#[test]
fn translate_corpus_and_golden_inputs() {
    let mut n = replay("translate", attache::fuzzing::translate);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for area in std::fs::read_dir(golden).unwrap() {
        let area = area.unwrap().path();
        if !area.is_dir() {
            continue;
        }
        for case in std::fs::read_dir(area).unwrap() {
            let input = case.unwrap().path().join("input.yaml");
            if input.is_file() {
                let bytes = std::fs::read(&input).unwrap();
                attache::fuzzing::translate(&bytes);
                attache::fuzzing::yaml(&bytes);
                n += 1;
            }
        }
    }
    assert!(n > 5);
}

#[test]
fn template_paths_corpus() {
    assert!(replay("template_paths", attache::fuzzing::template_paths) > 0);
}
