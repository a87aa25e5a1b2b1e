//! `serve --rules DIR`: the operator packs, watched. When a pack's files change (after a quiet
//! period), all packs are loaded again, in order, as at start; a pack that loads replaces the
//! registry in use, a broken one is refused with its error, and the packs in use stay. Loading is
//! the core's (`rules::Registry::with_packs`); this module only watches and reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::rules::Registry;

/// What a reload gave.
pub enum Reload {
    /// Every pack loaded: the registry to use from now on.
    Loaded(Arc<Registry>),
    /// A pack is broken (the error names it): keep the registry in use.
    Failed(String),
}

/// Watches `dirs` and sends a [`Reload`] after every burst of changes. Stops when the receiver
/// is dropped.
///
/// # Errors
/// When the operating system refuses to watch a directory.
pub fn watch(dirs: Vec<PathBuf>, debounce: Duration) -> notify::Result<mpsc::Receiver<Reload>> {
    let (tx, rx) = mpsc::channel(1);
    let mut changes = crate::source::watch::bursts(&dirs, debounce)?;
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            let dirs = dirs.clone();
            let Ok(result) = tokio::task::spawn_blocking(move || Registry::with_packs(&dirs)).await else {
                return;
            };
            let reload = match result {
                Ok(registry) => Reload::Loaded(Arc::new(registry)),
                Err(e) => Reload::Failed(e.to_string()),
            };
            if tx.send(reload).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
