//! A directory of YAML files: the source that needs no cluster.
//!
//! `load` reads every `*.yaml`, `*.yml` and `*.json` file under a directory (recursively, skipping
//! hidden files and directories) in sorted path order. `watch` reloads the directory whenever
//! something in it changes, coalescing bursts of changes (an editor's save, a `cp` of many files)
//! into one reload after a short quiet period.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{parse_text, Loaded};
use crate::diagnostic::{Diagnostic, Origin};

/// Reads a directory (or a single file) of YAML into raw objects.
///
/// Never fails as a whole: unreadable files become diagnostics. File names in origins are relative
/// to `path` when it is a directory, and as given when it is a file.
pub fn load(path: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    if path.is_file() {
        read_file(path, &path.display().to_string(), &mut loaded);
        return loaded;
    }
    let mut files = Vec::new();
    if let Err(e) = collect(path, &mut files) {
        loaded.diagnostics.push(
            Diagnostic::error("source.unreadable", format!("cannot read directory: {e}")).at(Origin::new(
                path.display().to_string(),
                0,
                0,
            )),
        );
    }
    files.sort();
    for file in files {
        let name = file.strip_prefix(path).unwrap_or(&file).display().to_string();
        read_file(&file, &name, &mut loaded);
    }
    loaded
}

fn read_file(file: &Path, name: &str, loaded: &mut Loaded) {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let one = parse_text(name, &text);
            loaded.objects.extend(one.objects);
            loaded.diagnostics.extend(one.diagnostics);
        }
        Err(e) => loaded.diagnostics.push(
            Diagnostic::error("source.unreadable", format!("cannot read file: {e}"))
                .at(Origin::new(name, 0, 0))
                .hint("files must be UTF-8 YAML"),
        ),
    }
}

fn is_config_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let ty = entry.file_type()?;
        if ty.is_dir() || (ty.is_symlink() && path.is_dir()) {
            collect(&path, out)?;
        } else if is_config_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Watches `path` and sends a freshly loaded set after every burst of changes, starting with the
/// initial load. Stops when the receiver is dropped.
///
/// # Errors
/// When the operating system refuses to watch the path.
pub fn watch(path: PathBuf, debounce: Duration) -> notify::Result<mpsc::Receiver<Loaded>> {
    let (tx, rx) = mpsc::channel(1);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !ev.kind.is_access() {
                let _ = ev_tx.send(());
            }
        }
    })?;
    watcher.watch(&path, RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        let _watcher = watcher; // dropped (and unwatched) when this task ends
        let initial = {
            let p = path.clone();
            tokio::task::spawn_blocking(move || load(&p)).await
        };
        let Ok(initial) = initial else { return };
        if tx.send(initial).await.is_err() {
            return;
        }
        while ev_rx.recv().await.is_some() {
            // Coalesce: wait until no event arrived for `debounce`.
            loop {
                match tokio::time::timeout(debounce, ev_rx.recv()).await {
                    Ok(Some(())) => {}
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let p = path.clone();
            let Ok(loaded) = tokio::task::spawn_blocking(move || load(&p)).await else {
                return;
            };
            tracing::debug!(objects = loaded.objects.len(), "configuration directory changed");
            if tx.send(loaded).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
