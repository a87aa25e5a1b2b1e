//! attache: a control plane for Envoy that reads Ambassador / Emissary-ingress resources.
//!
//! This crate is the server around the pure pipeline of `attache-core` (re-exported here under
//! the same module names): where objects come from (a watched directory, Kubernetes), the ADS
//! server, the admin endpoints and `attache serve`. See ARCHITECTURE.md.

pub use attache_core::{
    diagnostic, envoy, fuzzing, ir, keyed, lang, lastgood, output, resource, rules, snapshot, status,
};
pub use attache_core::{translate, Options, Translation, Translator};

/// Stage 1, where objects come from. The pure parts (YAML, raw objects, loading a directory)
/// are the core's; watching a directory and Kubernetes are here.
pub mod source {
    pub use attache_core::source::*;
    // A directory, watched.
    pub mod watch;
    // Kubernetes: watches on the API server.
    pub mod kube;
}
// Live state shared by the server parts (snapshot, connected Envoys, metrics).
pub mod state;
pub mod status_writer;
// 7. The ADS server (the only module that knows tonic).
pub mod xds;
// 8. Admin HTTP endpoints.
pub mod admin;
// Running it all: `attache serve` and the Envoy child process.
/// Kubernetes CustomResourceDefinitions of the kinds attache reads (`attache crds`).
pub mod crd;
pub mod serve;
// Operators' tooling for rule packs: `attache rules test`, `attache translate --diff`.
pub mod pack_test;
