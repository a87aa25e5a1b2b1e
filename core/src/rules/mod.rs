//! Stage 4: the table-driven translator from IR nodes to Envoy messages.
//!
//! A rule pack (`rules/<pack>/pack.yaml` plus handlebars templates) is a table of rules: which IR
//! node kind a rule applies to, an optional `when` condition, the Envoy message it emits, and the
//! template that renders that message as YAML from the node's context. The built-in pack `core`
//! is compiled into the binary; operators add packs with `--rules DIR`, which add rules or replace
//! a built-in rule by id. See `rules/README.md` for the pack format and the template contexts.
//! Rules see only the template context (the serialized IR), never raw resources.
//!
//! Two renderings give the same bytes: [`render()`] (`reference`), the plain one, and
//! [`render_cached`] (`render`), which remembers nodes between translations and takes shortcuts
//! (template memo, shapes, encode plans, splicing children's bytes) for thousands of similar
//! nodes. Tests compare the second with the first.

pub mod context;
pub mod coverage;
pub mod edit;
mod filing;
mod key;
mod memo;
mod node;
pub mod pack;
mod reference;
pub mod render;
mod shape;
pub(crate) mod template_paths;

pub use pack::{PackError, Registry, Rule};
// `render` is the reference rendering (plain, the oracle); `render_cached` the fast one.
pub use reference::render;
pub use render::{render_cached, RenderCache, Rendered};
