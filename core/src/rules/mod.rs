//! Stage 4: the table-driven translator from IR nodes to Envoy messages.
//!
//! A rule pack (`rules/<pack>/pack.yaml` plus handlebars templates) is a table of rules: which IR
//! node kind a rule applies to, an optional `when` condition, the Envoy message it emits, and the
//! template that renders that message as YAML from the node's context. The built-in pack `core`
//! is compiled into the binary; operators add packs with `--rules DIR`, which add rules or replace
//! a built-in rule by id. See `rules/README.md` for the pack format and the template contexts.
//! Rules see only the template context (the serialized IR), never raw resources.

mod filing;
mod key;
mod memo;
pub mod pack;
pub mod render;
mod shape;

pub use pack::{PackError, Registry, Rule};
pub use render::{render, render_cached, RenderCache, Rendered};
