//! The process's worker threads: one per core, at most 4, shared by the stages that work in
//! parallel (parsing files, rendering leaves).
//!
//! Started once and kept. Owns: the thread pool. Must not: know any stage.

use std::sync::OnceLock;

/// The worker threads (started on first use).
pub(crate) fn threads() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("attache-worker-{i}"))
            .build()
            .expect("cannot start the worker threads")
    })
}
