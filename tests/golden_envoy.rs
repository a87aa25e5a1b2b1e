//! Every golden case's configuration, as a static bootstrap, passes a real Envoy's
//! `--mode validate`: what the goldens pin is also what Envoy accepts (including the outputs of
//! the cases' operator rule packs).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{attache, envoy_bin};

fn cases(root: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.join("input.yaml").is_file() {
            out.push(p);
        } else if p.is_dir() {
            cases(&p, out);
        }
    }
}

/// Translates one case to a bootstrap and has Envoy validate it; the failure, if any.
fn check(root: &Path, case: &Path, file: &Path) -> Option<String> {
    let mut cmd = attache();
    cmd.args(["translate", "--bootstrap", "-o", "yaml"])
        .arg(case.join("input.yaml"));
    if let Ok(packs) = std::fs::read_dir(case.join("rules")) {
        let mut packs: Vec<PathBuf> = packs.map(|e| e.unwrap().path()).collect();
        packs.sort();
        for p in packs {
            cmd.arg("--rules").arg(p);
        }
    }
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Some(format!(
            "{}: attache: {}",
            case.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(file, &out.stdout).unwrap();
    let v = Command::new(envoy_bin())
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(file)
        .output()
        .unwrap();
    (!v.status.success()).then(|| {
        format!(
            "{}: {}{}",
            case.strip_prefix(root).unwrap_or(case).display(),
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        )
    })
}

#[test]
fn every_golden_case_is_accepted_by_envoy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut all = Vec::new();
    cases(&root, &mut all);
    assert!(all.len() >= 20, "{} golden cases", all.len());
    let dir = tempfile::tempdir().unwrap();
    // Two workers: each case is an attache and an Envoy process start-up, mostly waiting.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for worker in 0..2 {
            let (all, root, next, failures, dir) = (&all, &root, &next, &failures, dir.path());
            s.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(case) = all.get(i) else { break };
                if let Some(failure) = check(root, case, &dir.join(format!("bootstrap-{worker}.yaml"))) {
                    failures.lock().unwrap().push(failure);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
