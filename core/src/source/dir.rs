//! A directory of YAML files: the source that needs no cluster.
//!
//! `load` reads every `*.yaml`, `*.yml` and `*.json` file under a directory (recursively, skipping
//! hidden files and directories) in sorted path order. A [`Loader`] keeps each file's objects, so
//! a reload parses only the files whose text changed (the server's `source::watch` reloads with
//! one whenever the directory changes).

use std::path::{Path, PathBuf};

use super::{parse_text, Loaded};
use crate::diagnostic::{Diagnostic, Origin};

/// Reads a directory (or a single file) of YAML into raw objects.
///
/// Never fails as a whole: unreadable files become diagnostics. File names in origins are relative
/// to `path` when it is a directory, and as given when it is a file.
pub fn load(path: &Path) -> Loaded {
    Loader::default().load(path)
}

/// Loads a directory again and again, parsing only the files whose text changed since the last
/// load (the others give the same objects, shared).
#[derive(Debug, Default)]
pub struct Loader {
    /// By file name: its text and what it gave.
    files: std::collections::HashMap<String, (String, Loaded)>,
}

impl Loader {
    /// [`load`], reusing what the files that did not change gave last time.
    ///
    /// Files are read and parsed on the worker threads when there are several; the result is in
    /// sorted path order whatever the threads did.
    pub fn load(&mut self, path: &Path) -> Loaded {
        use rayon::prelude::*;
        let mut loaded = Loaded::default();
        let files = if path.is_file() {
            vec![(path.to_path_buf(), path.display().to_string())]
        } else {
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
            files
                .into_iter()
                .map(|file| {
                    let name = file.strip_prefix(path).unwrap_or(&file).display().to_string();
                    (file, name)
                })
                .collect()
        };
        // `None`: the file did not change, and what it gave last time is taken below.
        let previous = &self.files;
        let read = |(file, name): &(PathBuf, String)| match std::fs::read_to_string(file) {
            Ok(text) => {
                let one = match previous.get(name) {
                    Some((old, _)) if *old == text => None,
                    _ => Some(parse_text(name, &text)),
                };
                Ok((name.clone(), text, one))
            }
            Err(e) => Err((name.clone(), e)),
        };
        let results: Vec<_> = if files.len() > 1 {
            crate::workers::threads().install(|| files.par_iter().map(read).collect())
        } else {
            files.iter().map(read).collect()
        };
        let mut seen = std::collections::HashMap::with_capacity(results.len());
        for result in results {
            match result {
                Ok((name, text, one)) => {
                    let Some(one) = one.or_else(|| self.files.remove(&name).map(|(_, one)| one)) else {
                        continue;
                    };
                    loaded.objects.extend(one.objects.iter().cloned());
                    loaded.diagnostics.extend(one.diagnostics.iter().cloned());
                    seen.insert(name, (text, one));
                }
                Err((name, e)) => unreadable(&name, &e, &mut loaded),
            }
        }
        // Files that are gone are forgotten.
        self.files = seen;
        loaded
    }
}

fn unreadable(name: &str, e: &std::io::Error, loaded: &mut Loaded) {
    loaded.diagnostics.push(
        Diagnostic::error("source.unreadable", format!("cannot read file: {e}"))
            .at(Origin::new(name, 0, 0))
            .hint("files must be UTF-8 YAML"),
    );
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

#[cfg(test)]
mod tests {
    use super::Loader;

    fn mapping(name: &str, prefix: &str) -> String {
        format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {name}\nspec:\n  hostname: \"*\"\n  prefix: {prefix}\n  service: s\n")
    }

    #[test]
    fn a_reload_parses_only_the_files_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), mapping("a", "/a/")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), mapping("b", "/b/")).unwrap();
        let mut loader = Loader::default();
        let first = loader.load(dir.path());
        std::fs::write(dir.path().join("b.yaml"), mapping("b", "/b2/")).unwrap();
        std::fs::write(dir.path().join("c.yaml"), mapping("c", "/c/")).unwrap();
        let second = loader.load(dir.path());
        // What a fresh load gives, whatever the loader remembered.
        assert_eq!(second, super::load(dir.path()));
        assert_eq!(second.objects.len(), 3);
        // a.yaml did not change: the same object, not parsed again; b.yaml did.
        assert!(std::sync::Arc::ptr_eq(&first.objects[0].root, &second.objects[0].root));
        assert!(!std::sync::Arc::ptr_eq(&first.objects[1].root, &second.objects[1].root));
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        let third = loader.load(dir.path());
        assert_eq!(third, super::load(dir.path()));
        assert_eq!(third.objects.len(), 2);
    }
}
