//! A directory of YAML files, watched: reloads the directory whenever something in it changes,
//! coalescing bursts of changes (an editor's save, a `cp` of many files) into one reload after a
//! short quiet period, and under a constant stream of changes at least every ten quiet periods
//! (as the Kubernetes source does). The reading itself is the core's `source::dir::Loader`, which parses only
//! the files whose text changed.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::dir::Loader;
use super::Loaded;

/// Bursts of changes under `paths`: the receiver gets one `()` per burst, once no change has
/// arrived for `debounce`, or `10 × debounce` after the burst's first change when changes keep
/// coming (a directory that never rests is still reloaded). The watcher lives as long as the
/// returned task's receiver is read.
///
/// # Errors
/// When the operating system refuses to watch a path.
pub fn bursts(paths: &[PathBuf], debounce: Duration) -> notify::Result<mpsc::Receiver<()>> {
    let (tx, rx) = mpsc::channel(1);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !ev.kind.is_access() {
                let _ = ev_tx.send(());
            }
        }
    })?;
    for path in paths {
        watcher.watch(path, RecursiveMode::Recursive)?;
    }
    tokio::spawn(async move {
        let _watcher = watcher; // dropped (and unwatched) when this task ends
        let longest = debounce * 10;
        while ev_rx.recv().await.is_some() {
            // Coalesce: wait until no event arrived for `debounce`, and no longer than `longest`.
            let first = tokio::time::Instant::now();
            loop {
                let wait = debounce.min(longest.saturating_sub(first.elapsed()));
                if wait.is_zero() {
                    break;
                }
                match tokio::time::timeout(wait, ev_rx.recv()).await {
                    Ok(Some(())) => {}
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Watches `path` and sends a freshly loaded set after every burst of changes, starting with the
/// initial load. Stops when the receiver is dropped.
///
/// # Errors
/// When the operating system refuses to watch the path.
pub fn watch(path: PathBuf, debounce: Duration) -> notify::Result<mpsc::Receiver<Loaded>> {
    let (tx, rx) = mpsc::channel(1);
    let mut changes = bursts(std::slice::from_ref(&path), debounce)?;
    tokio::spawn(async move {
        let loader = std::sync::Arc::new(std::sync::Mutex::new(Loader::default()));
        let reload = move |p: PathBuf| {
            let loader = std::sync::Arc::clone(&loader);
            tokio::task::spawn_blocking(move || {
                loader
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .load(&p)
            })
        };
        let initial = reload(path.clone()).await;
        let Ok(initial) = initial else { return };
        if tx.send(initial).await.is_err() {
            return;
        }
        while changes.recv().await.is_some() {
            let Ok(loaded) = reload(path.clone()).await else {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file rewritten every 10 ms for two seconds never leaves the 50 ms quiet period a
    /// burst waits for; the directory is reloaded anyway, at the latest 500 ms after the first
    /// change (before the fix: only once the writes stopped).
    #[tokio::test]
    async fn a_directory_that_never_rests_is_still_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let mut bursts = bursts(&[dir.path().to_path_buf()], Duration::from_millis(50)).unwrap();
        let file = dir.path().join("m.yaml");
        let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let writer = {
            let (file, writing) = (file.clone(), std::sync::Arc::clone(&writing));
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let mut n = 0;
                while started.elapsed() < Duration::from_secs(2) {
                    std::fs::write(&file, format!("n: {n}\n")).unwrap();
                    n += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                writing.store(false, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let got = tokio::time::timeout(Duration::from_secs(10), bursts.recv()).await;
        let still_writing = writing.load(std::sync::atomic::Ordering::SeqCst);
        writer.join().unwrap();
        assert!(matches!(got, Ok(Some(()))), "no burst at all");
        assert!(still_writing, "the directory was reloaded only once the writes stopped");
    }
}
