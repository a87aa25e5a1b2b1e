//! Rendering a template once per *signature* instead of once per node.
//!
//! A leaf's rendered text with markers (its shape, see `shape`) depends only on the parts of its
//! context the template reads to decide what to print: conditions (`{{#if x}}` reads whether `x`
//! is truthy; `(eq x "y")` reads `x`), loops, and values printed raw (`{{x}}`). Values printed
//! through `{{json x}}` and `{{duration x}}` only become markers, whose text is recorded apart.
//! So 5,000 clusters that differ only in names and hosts render one shape.
//!
//! [`analyze`] reads a template (and its partials) once and lists those *reads*: root-context
//! paths, each either truthiness or whole value. A node's *signature* hashes what its context
//! holds at each read. The first node of a signature is rendered by handlebars, which records
//! where each marker's value came from (a context path, or a value fixed by the signature); the
//! next nodes of that signature take the shape as is and look their own values up. A template
//! whose reads cannot be listed for sure (a helper or block this module does not know, a path
//! that climbs out of a loop, a partial with arguments) is always rendered by handlebars.
//!
//! A signature's first reuse with other values is checked: handlebars renders that node too and
//! must give the same shape and values, or the template is never memoized again (a guard against
//! a template construct that reads more than the analysis found).
//!
//! Owns: template analysis, signatures, the memo. Must not: parse, decode or encode output.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Handlebars, JsonTruthy, Path, PathSeg, Template};
use serde_json::Value;

use crate::keyed::KeyMap;

/// How many signatures are kept before the memo starts over (a bound on memory).
const MAX_ENTRIES: usize = 4096;

/// Helpers that read only their parameters and write only their output.
const PURE_HELPERS: &[&str] = &[
    "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not", "len", "lookup", "join",
];

/// Every helper the registry has: handlebars' own and attache's (`json`, `duration`, `join`);
/// packs cannot add helpers.
pub(crate) const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not",
    "len", "json", "duration", "join",
];

/// What a template reads of a node's root context to decide its shape.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Reads {
    /// Root-context paths and how each is read, sorted, without duplicates.
    paths: Vec<(Vec<String>, Use)>,
    /// `json`/`duration` parameters inside partials, by their text: handlebars gives no context
    /// path for values read in a partial. Included at the root, the text is a root-context path
    /// (`Some`); inside a loop, it is relative to the loop's item, which the signature holds
    /// whole (`None`: the value is fixed by the signature).
    partial_markers: HashMap<String, Option<Vec<String>>>,
    /// The same paths as a tree, so that a signature looks each step up once.
    tree: ReadNode,
}

/// One step of the read paths: how the value here is read, and the steps below.
#[derive(Debug, Default, PartialEq)]
struct ReadNode {
    uses: Vec<Read>,
    children: Vec<(Step, ReadNode)>,
}

/// A use, its literal parsed once.
#[derive(Debug, PartialEq)]
enum Read {
    Truthy,
    Equals(Option<Value>),
    Len,
    Value,
}

#[derive(Debug, PartialEq)]
enum Step {
    /// An object's member, or a list's item when the name is a number.
    Key(String, Option<usize>),
    /// Every item of a list, in order (`*`).
    Each,
}

impl ReadNode {
    fn of(paths: &[(Vec<String>, Use)]) -> ReadNode {
        let mut root = ReadNode::default();
        for (path, how) in paths {
            let mut node = &mut root;
            for seg in path {
                let step = if seg == "*" {
                    Step::Each
                } else {
                    Step::Key(seg.clone(), seg.parse().ok())
                };
                let at = match node.children.iter().position(|(s, _)| *s == step) {
                    Some(at) => at,
                    None => {
                        node.children.push((step, ReadNode::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at].1;
            }
            node.uses.push(match how {
                Use::Truthy => Read::Truthy,
                Use::Equals(lit) => Read::Equals(serde_json::from_str(lit).ok()),
                Use::Len => Read::Len,
                Use::Value => Read::Value,
            });
        }
        root
    }

    /// Writes what the context holds at every read below this step (`value`: what it holds
    /// here), each variable part marked or counted, so that different reads write different
    /// bytes.
    fn write(&self, value: Option<&Value>, buf: &mut Vec<u8>) {
        let Some(v) = value else {
            buf.push(b'M');
            return;
        };
        buf.push(b'P');
        for read in &self.uses {
            write_read(buf, v, read);
        }
        for (step, child) in &self.children {
            match step {
                Step::Each => match v {
                    Value::Array(items) => {
                        buf.push(b'[');
                        buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
                        for item in items {
                            child.write(Some(item), buf);
                        }
                    }
                    // Not a list here: the loop's own read tells the nodes apart.
                    _ => buf.push(b'x'),
                },
                Step::Key(name, index) => {
                    let at = match v {
                        Value::Object(m) => m.get(name),
                        Value::Array(items) => index.and_then(|i| items.get(i)),
                        _ => None,
                    };
                    child.write(at, buf);
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Use {
    /// Only whether the value is truthy (`{{#if x}}`, `{{#unless x}}`).
    Truthy,
    /// Only whether the value is this literal (JSON text): `(eq x "lit")`, `(ne x "lit")`.
    Equals(String),
    /// A list looped over by a body that reads its items apart (see [`Walker::scopes`]): only its
    /// length (other values whole).
    Len,
    /// The value itself.
    Value,
}

/// Where a marker's value came from, when a node was rendered by handlebars.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Source {
    /// Not from a path (a literal, a sub-expression of values the signature holds).
    Fixed,
    /// `{{json x}}` of the value at this root-context path.
    Json(Vec<String>),
    /// `{{duration x}}` of the value at this root-context path.
    Duration(Vec<String>),
    /// A path without a context path (read inside a partial): resolved through
    /// [`Reads::partial_markers`] when the memo learns.
    InPartial { duration: bool, text: String },
}

/// A whole number of milliseconds as a quoted protobuf JSON duration (`"1.500s"`).
pub(crate) fn duration_json(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("\"{}s\"", ms / 1000)
    } else {
        format!("\"{}.{:03}s\"", ms / 1000, ms % 1000)
    }
}

/// Lists what `template` reads; `None` when that cannot be known for sure.
pub(crate) fn analyze(template: &Template, hbs: &Handlebars<'_>) -> Option<Reads> {
    let mut walker = Walker {
        hbs,
        paths: Vec::new(),
        partial_markers: HashMap::new(),
        scopes: Vec::new(),
    };
    walker.walk(template, 0, None)?;
    let mut paths = walker.paths;
    paths.sort();
    paths.dedup();
    Some(Reads {
        tree: ReadNode::of(&paths),
        paths,
        partial_markers: walker.partial_markers,
    })
}

struct Walker<'a, 'h> {
    hbs: &'a Handlebars<'h>,
    paths: Vec<(Vec<String>, Use)>,
    partial_markers: HashMap<String, Option<Vec<String>>>,
    /// The context of each block the walk is in: the root-context path of a loop's items, with
    /// `*` for the index (`{{#each routes}}`: `routes.*`), when the loop's body reads its items
    /// apart (it has no partial: handlebars gives no context path for a value printed in one);
    /// `None` when the block's whole value is read instead (its body's reads are then covered).
    scopes: Vec<Option<Vec<String>>>,
}

/// Whether a template (or a block's body) includes a partial, at any depth.
fn has_partial(t: &Template) -> bool {
    t.elements.iter().any(|e| match e {
        TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => true,
        TemplateElement::HelperBlock(h) => {
            h.template.as_ref().is_some_and(has_partial) || h.inverse.as_ref().is_some_and(has_partial)
        }
        _ => false,
    })
}

impl Walker<'_, '_> {
    /// Walks a template in a scope `depth` blocks below the root context (inside `each`/`with`);
    /// `partial` is how many partials deep it is, if in one.
    fn walk(&mut self, t: &Template, depth: usize, partial: Option<usize>) -> Option<()> {
        if partial.is_some_and(|n| n > 16) {
            return None;
        }
        for element in &t.elements {
            match element {
                TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                    self.expression(h, depth, partial)?;
                }
                TemplateElement::HelperBlock(h) => {
                    let Parameter::Name(name) = &h.name else { return None };
                    if h.block_param.is_some() || h.params.len() != 1 {
                        return None;
                    }
                    let inner = match name.as_str() {
                        "if" | "unless" => {
                            match &h.params[0] {
                                // `includeZero` and such change truthiness: read the value.
                                Parameter::Path(p) if h.hash.is_empty() => self.read(p, Use::Truthy, depth)?,
                                other => self.param(other, depth, partial)?,
                            }
                            for v in h.hash.values() {
                                self.param(v, depth, partial)?;
                            }
                            depth
                        }
                        "each" | "with" if h.hash.is_empty() => {
                            // A loop whose body reads its items apart: the list's length, and each
                            // item's reads (see `scopes`). Otherwise the value whole.
                            let items = match (&h.params[0], name.as_str(), &h.template) {
                                (Parameter::Path(p), "each", Some(body)) if partial.is_none() && !has_partial(body) => {
                                    self.resolve(p, depth).ok()?
                                }
                                _ => None,
                            };
                            match &items {
                                Some(path) => self.paths.push((path.clone(), Use::Len)),
                                None => self.param(&h.params[0], depth, partial)?,
                            }
                            self.scopes.push(items.map(|mut path| {
                                path.push("*".to_string());
                                path
                            }));
                            depth + 1
                        }
                        _ => return None,
                    };
                    let body = match &h.template {
                        Some(body) => self.walk(body, inner, partial),
                        None => Some(()),
                    };
                    if inner > depth {
                        self.scopes.pop();
                    }
                    body?;
                    // `else` renders in the enclosing context.
                    if let Some(inverse) = &h.inverse {
                        self.walk(inverse, depth, partial)?;
                    }
                }
                TemplateElement::PartialExpression(d) => {
                    let Parameter::Name(name) = &d.name else { return None };
                    if !d.params.is_empty() || !d.hash.is_empty() || d.template.is_some() {
                        return None;
                    }
                    let hbs = self.hbs;
                    self.walk(hbs.get_template(name)?, depth, Some(partial.map_or(0, |n| n + 1)))?;
                }
                // Partial blocks, decorators, and anything a later handlebars adds.
                _ => return None,
            }
        }
        Some(())
    }

    /// `{{x}}`, `{{helper args}}`.
    fn expression(
        &mut self,
        h: &handlebars::template::HelperTemplate,
        depth: usize,
        partial: Option<usize>,
    ) -> Option<()> {
        if h.block_param.is_some() || h.template.is_some() {
            return None;
        }
        let helper = match &h.name {
            Parameter::Name(n) => n.as_str(),
            // A one-segment path names a helper if there is one by that name.
            Parameter::Path(Path::Relative((segs, raw))) if segs.len() == 1 && HELPERS.contains(&raw.as_str()) => {
                raw.as_str()
            }
            Parameter::Path(p) if h.params.is_empty() && h.hash.is_empty() => return self.read(p, Use::Value, depth),
            _ => return None,
        };
        match helper {
            // The value becomes a marker: only a path's value is looked up again per node.
            "json" | "duration" if h.params.len() == 1 && h.hash.is_empty() => match &h.params[0] {
                Parameter::Path(p) => self.marker(p, depth, partial),
                other => self.param(other, depth, partial),
            },
            // `and`, `or` and `not` give a boolean from their arguments' truthiness alone: a CORS
            // policy or a list tested by `(or cors rate_limits)` must not make every node a case
            // of its own.
            "and" | "or" | "not" if h.hash.is_empty() => {
                for p in &h.params {
                    match p {
                        Parameter::Path(path) => self.read(path, Use::Truthy, depth)?,
                        other => self.param(other, depth, partial)?,
                    }
                }
                Some(())
            }
            // `(eq x "lit")`: only whether `x` is the literal.
            "eq" | "ne" if h.hash.is_empty() && h.params.len() == 2 => match (&h.params[0], &h.params[1]) {
                (Parameter::Path(path), Parameter::Literal(lit)) | (Parameter::Literal(lit), Parameter::Path(path)) => {
                    self.read(path, Use::Equals(lit.to_string()), depth)
                }
                _ => {
                    for p in &h.params {
                        self.param(p, depth, partial)?;
                    }
                    Some(())
                }
            },
            n if PURE_HELPERS.contains(&n) => {
                for p in h.params.iter().chain(h.hash.values()) {
                    self.param(p, depth, partial)?;
                }
                Some(())
            }
            _ => None,
        }
    }

    /// A helper parameter, read as a value.
    fn param(&mut self, p: &Parameter, depth: usize, partial: Option<usize>) -> Option<()> {
        match p {
            Parameter::Literal(_) => Some(()),
            Parameter::Path(path) => self.read(path, Use::Value, depth),
            Parameter::Subexpression(s) => match s.element.as_ref() {
                TemplateElement::Expression(h) => self.expression(h, depth, partial),
                _ => None,
            },
            _ => None,
        }
    }

    fn read(&mut self, p: &Path, how: Use, depth: usize) -> Option<()> {
        match self.resolve(p, depth) {
            Ok(Some(path)) => {
                self.paths.push((path, how));
                Some(())
            }
            Ok(None) => Some(()),
            Err(()) => None,
        }
    }

    /// The root-context path (with `*` for loop indexes) a path names in the current block, if
    /// it names one (see [`root_path`]; inside a loop that reads its items apart, a relative path
    /// is the item's).
    fn resolve(&self, p: &Path, depth: usize) -> Result<Option<Vec<String>>, ()> {
        match (root_path(p, depth)?, self.scopes.last(), p) {
            (Some(path), _, _) => Ok(Some(path)),
            (None, Some(Some(scope)), Path::Relative((segs, raw))) if !raw.starts_with("@root") => {
                let mut path = scope.clone();
                for seg in segs {
                    match seg {
                        PathSeg::Named(n) => path.push(n.clone()),
                        _ => return Err(()),
                    }
                }
                Ok(Some(path))
            }
            _ => Ok(None),
        }
    }

    /// A `json`/`duration` parameter: nothing to read for the shape, but inside a partial, what
    /// its text stands for must be known (and the same wherever the partial is).
    fn marker(&mut self, p: &Path, depth: usize, partial: Option<usize>) -> Option<()> {
        let root = root_path(p, depth).ok()?;
        if partial.is_none() {
            return Some(());
        }
        let Path::Relative((_, text)) = p else {
            // `@index` and such inside a loop: fixed by the loop's read.
            return Some(());
        };
        match self.partial_markers.get(text) {
            Some(known) if *known != root => None,
            Some(_) => Some(()),
            None => {
                self.partial_markers.insert(text.clone(), root);
                Some(())
            }
        }
    }
}

/// The root-context path a path names, if it names one (`None` inside a loop: the path is
/// relative to the loop's item, which the loop's own read covers); `Err` for a path this module
/// does not follow (`../x`: which context it climbs to depends on the blocks around it).
fn root_path(p: &Path, depth: usize) -> Result<Option<Vec<String>>, ()> {
    let (segs, raw) = match p {
        // `@index`, `@first`, ...: the loop's own data.
        Path::Local(_) => return Ok(None),
        Path::Relative((segs, raw)) => (segs, raw),
    };
    let mut names = Vec::with_capacity(segs.len());
    let mut rooted = false;
    for seg in segs {
        match seg {
            PathSeg::Named(n) => names.push(n.clone()),
            // `@root` (`this` is dropped by the parser); told apart from `..` by its text.
            PathSeg::Ruled(_) if names.is_empty() && !rooted && raw.starts_with("@root") => rooted = true,
            _ => return Err(()),
        }
    }
    Ok((rooted || depth == 0).then_some(names))
}

/// The value at a root-context path (array items by index).
fn lookup<'v>(root: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(root, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(items) => items.get(seg.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A node's signature for a template: what its context holds at each read.
fn signature(template_key: &str, reads: &Reads, ctx: &Value) -> u128 {
    let mut buf = Vec::with_capacity(512);
    buf.extend_from_slice(template_key.as_bytes());
    buf.push(0);
    reads.tree.write(Some(ctx), &mut buf);
    xxhash_rust::xxh3::xxh3_128(&buf)
}

/// What a read found, into a signature.
fn write_read(buf: &mut Vec<u8>, v: &Value, how: &Read) {
    match how {
        Read::Truthy => buf.push(if v.is_truthy(false) { b't' } else { b'f' }),
        Read::Equals(lit) => buf.push(if lit.as_ref() == Some(v) { b'e' } else { b'n' }),
        Read::Len if v.is_array() => {
            buf.push(b'l');
            buf.extend_from_slice(&(v.as_array().map_or(0, Vec::len) as u64).to_le_bytes());
        }
        Read::Value | Read::Len => {
            buf.push(b'v');
            // Length-prefixed, so that values cannot run into one another.
            let at = buf.len();
            buf.extend_from_slice(&[0; 8]);
            if serde_json::to_writer(&mut *buf, v).is_err() {
                buf.truncate(at + 8);
            }
            let len = (buf.len() - at - 8) as u64;
            buf[at..at + 8].copy_from_slice(&len.to_le_bytes());
        }
    }
}

/// The shape a signature renders, and where each marker's value comes from.
#[derive(Debug)]
struct Entry {
    shape: Arc<str>,
    sources: Vec<(Source, String)>,
    checked: AtomicBool,
}

impl Entry {
    /// This node's marker values, or `None` when one cannot be looked up (handlebars then renders
    /// the node, and says what is wrong).
    fn values(&self, ctx: &Value) -> Option<Vec<String>> {
        self.sources
            .iter()
            .map(|(source, fixed)| match source {
                Source::Fixed => Some(fixed.clone()),
                Source::Json(path) => serde_json::to_string(lookup(ctx, path)?).ok(),
                Source::Duration(path) => Some(duration_json(lookup(ctx, path)?.as_u64()?)),
                Source::InPartial { .. } => None,
            })
            .collect()
    }
}

/// Templates' reads and the shapes of signatures seen.
#[derive(Debug, Default)]
pub(crate) struct TemplateMemo {
    /// By template: its reads, `None` when it cannot be memoized (the analysis could not list
    /// them, or its memo failed a check).
    reads: Mutex<HashMap<String, Option<Arc<Reads>>>>,
    entries: Mutex<KeyMap<Arc<Entry>>>,
    /// Leaves rendered by handlebars to learn or check an entry.
    #[cfg(test)]
    renders: std::sync::atomic::AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the memo has for a node.
pub(crate) enum Lookup {
    /// The shape and this node's values: no rendering needed.
    Hit(Arc<str>, Vec<String>),
    /// Render with handlebars, recording marker sources, then [`TemplateMemo::learn`] (which
    /// checks the entry instead, for its first reuses).
    Render(Option<Pending>),
}

/// A node to learn from or check against, once handlebars rendered it.
pub(crate) struct Pending {
    signature: u128,
    first_reuse: Option<(Arc<Entry>, Vec<String>)>,
}

impl TemplateMemo {
    /// How many signatures are memoized, and how many leaves handlebars rendered to learn or
    /// check them (for tests).
    #[cfg(test)]
    pub(crate) fn handlebars_renders(&self) -> (usize, usize) {
        (lock(&self.entries).len(), self.renders.load(Ordering::Relaxed))
    }

    fn reads_of(&self, template_key: &str, hbs: &Handlebars<'_>) -> Option<Arc<Reads>> {
        if let Some(r) = lock(&self.reads).get(template_key) {
            return r.clone();
        }
        let r = hbs
            .get_template(template_key)
            .and_then(|t| analyze(t, hbs))
            .map(Arc::new);
        lock(&self.reads).insert(template_key.to_string(), r.clone());
        r
    }

    /// Looks a node up by its template and context.
    pub(crate) fn lookup(&self, template_key: &str, hbs: &Handlebars<'_>, ctx: &Value) -> Lookup {
        let Some(reads) = self.reads_of(template_key, hbs) else {
            return Lookup::Render(None);
        };
        let signature = signature(template_key, &reads, ctx);
        let entry = lock(&self.entries).get(&signature).cloned();
        let Some(entry) = entry else {
            return Lookup::Render(Some(Pending {
                signature,
                first_reuse: None,
            }));
        };
        let Some(values) = entry.values(ctx) else {
            return Lookup::Render(None);
        };
        if entry.checked.load(Ordering::Relaxed) {
            return Lookup::Hit(Arc::clone(&entry.shape), values);
        }
        Lookup::Render(Some(Pending {
            signature,
            first_reuse: Some((entry, values)),
        }))
    }

    /// Learns (or checks) from a node handlebars rendered: its shape, values and their sources.
    pub(crate) fn learn(
        &self,
        template_key: &str,
        pending: Pending,
        shape: &str,
        values: &[String],
        sources: Vec<Source>,
    ) {
        #[cfg(test)]
        self.renders.fetch_add(1, Ordering::Relaxed);
        if let Some((entry, looked_up)) = pending.first_reuse {
            if &*entry.shape == shape && looked_up == values {
                // Checked only by a node whose values differ from the first node's: the same
                // values would hide a value taken from the wrong place.
                if entry.sources.iter().map(|(_, v)| v).ne(looked_up.iter()) {
                    entry.checked.store(true, Ordering::Relaxed);
                }
            } else {
                tracing::warn!(
                    template = template_key,
                    "a memoized template rendered differently for the same signature; it is always rendered in full from now on"
                );
                lock(&self.reads).insert(template_key.to_string(), None);
            }
            return;
        }
        if sources.len() != values.len() {
            return;
        }
        let Some(reads) = lock(&self.reads).get(template_key).cloned().flatten() else {
            return;
        };
        // A value read in a partial: a root-context path, or fixed by the signature (inside a
        // loop); a text the analysis did not see cannot be memoized.
        let sources: Option<Vec<Source>> = sources
            .into_iter()
            .map(|source| match source {
                Source::InPartial { duration, text } => match reads.partial_markers.get(&text)? {
                    Some(path) if duration => Some(Source::Duration(path.clone())),
                    Some(path) => Some(Source::Json(path.clone())),
                    None => Some(Source::Fixed),
                },
                other => Some(other),
            })
            .collect();
        let Some(sources) = sources else { return };
        let entry = Arc::new(Entry {
            shape: shape.into(),
            sources: sources.into_iter().zip(values.iter().cloned()).collect(),
            checked: AtomicBool::new(false),
        });
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.entry(pending.signature).or_insert(entry);
    }
}

/// Where a helper's value came from: its parameter's context path, or its text when handlebars
/// gives no context path (inside a partial), or neither (a literal, a sub-expression).
pub(crate) fn source_of(param: &handlebars::PathAndJson<'_>, duration: bool) -> Source {
    match (param.context_path(), param.relative_path()) {
        (Some(p), _) if duration => Source::Duration(p.clone()),
        (Some(p), _) => Source::Json(p.clone()),
        (None, Some(text)) => Source::InPartial {
            duration,
            text: text.clone(),
        },
        (None, None) => Source::Fixed,
    }
}

#[cfg(test)]
fn hbs_with(templates: &[(&str, &str)]) -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    for (name, text) in templates {
        h.register_template_string(name, *text).unwrap();
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(text: &str) -> Option<Vec<(String, Use)>> {
        let h = hbs_with(&[("t", text), ("p", "{{#if inner}}{{json deep.x}}{{/if}}")]);
        let r = analyze(h.get_template("t").unwrap(), &h)?;
        Some(r.paths.into_iter().map(|(p, u)| (p.join("."), u)).collect())
    }

    #[test]
    fn json_values_are_not_read_conditions_are() {
        assert_eq!(
            reads("name: {{json name}}\n{{#if tls}}sni: {{json host}}{{/if}}{{#if (eq kind \"a\")}}x{{/if}}{{lb}}"),
            Some(vec![
                ("kind".into(), Use::Equals("\"a\"".into())),
                ("lb".into(), Use::Value),
                ("tls".into(), Use::Truthy),
            ])
        );
    }

    #[test]
    fn loops_are_read_whole_or_item_by_item_and_partials_are_followed() {
        assert_eq!(
            reads("{{#each items}}{{json this}}{{@index}}{{/each}}{{> p}}{{json ../x}}"),
            None,
            "`..` at the root climbs out of the context"
        );
        assert_eq!(
            reads("{{#each items}}{{json this}}{{#if @first}}{{/if}}{{@root.flag}}{{/each}}{{> p}}"),
            Some(vec![
                ("flag".into(), Use::Value),
                ("inner".into(), Use::Truthy),
                ("items".into(), Use::Len),
            ])
        );
        assert_eq!(reads("{{#each items}}{{../flag}}{{/each}}"), None);
        // A loop with a partial in its body is read whole; without one, item by item.
        assert_eq!(
            reads("{{#each items}}{{> p}}{{/each}}"),
            Some(vec![("items".into(), Use::Value)])
        );
        assert_eq!(
            reads("{{#each items}}{{#if (eq kind \"a\")}}{{#each subs}}{{#if on}}{{json v}}{{/if}}{{/each}}{{/if}}{{/each}}"),
            Some(vec![
                ("items".into(), Use::Len),
                ("items.*.kind".into(), Use::Equals("\"a\"".into())),
                ("items.*.subs".into(), Use::Len),
                ("items.*.subs.*.on".into(), Use::Truthy),
            ])
        );
        assert_eq!(reads("{{#each items}}{{@root.top}}{{/each}}").unwrap()[1].0, "top");
    }

    #[test]
    fn values_in_partials_are_root_paths_at_the_root_and_fixed_in_loops() {
        let h = hbs_with(&[
            ("t", "{{> m}}{{#each hs}}{{> h}}{{/each}}"),
            ("m", "{{json prefix}}{{json rf.key}}"),
            ("h", "{{json name}}"),
        ]);
        let r = analyze(h.get_template("t").unwrap(), &h).unwrap();
        assert_eq!(r.partial_markers.get("prefix"), Some(&Some(vec!["prefix".to_string()])));
        assert_eq!(
            r.partial_markers.get("rf.key"),
            Some(&Some(vec!["rf".to_string(), "key".to_string()]))
        );
        assert_eq!(r.partial_markers.get("name"), Some(&None));
        // The same text at the root and in a loop cannot be told apart.
        let h = hbs_with(&[("t", "{{> h}}{{#each hs}}{{> h}}{{/each}}"), ("h", "{{json name}}")]);
        assert!(analyze(h.get_template("t").unwrap(), &h).is_none());
    }

    #[test]
    fn unknown_helpers_and_block_params_are_not_memoized() {
        assert_eq!(reads("{{#each items as |i|}}{{i}}{{/each}}"), None);
        assert_eq!(
            reads("{{#if a includeZero=true}}{{/if}}"),
            Some(vec![("a".into(), Use::Value)])
        );
        assert_eq!(reads("{{log x}}"), None);
    }

    #[test]
    fn loops_read_item_by_item_tell_nodes_apart_by_what_the_body_tests() {
        let h = hbs_with(&[("t", "{{#each xs}}{{#if (eq k \"a\")}}A{{/if}}{{json v}}{{/each}}")]);
        let r = analyze(h.get_template("t").unwrap(), &h).unwrap();
        let sig = |v: Value| signature("t", &r, &v);
        let base = sig(serde_json::json!({"xs": [{"k": "a", "v": 1}, {"k": "b", "v": 2}]}));
        // Other printed values: the same signature.
        assert_eq!(
            base,
            sig(serde_json::json!({"xs": [{"k": "a", "v": 7}, {"k": "c", "v": 8}]}))
        );
        // Another length, or another outcome of a test: another one.
        assert_ne!(base, sig(serde_json::json!({"xs": [{"k": "a", "v": 1}]})));
        assert_ne!(
            base,
            sig(serde_json::json!({"xs": [{"k": "b", "v": 1}, {"k": "b", "v": 2}]}))
        );
        assert_ne!(
            base,
            sig(serde_json::json!({"xs": [{"k": "b", "v": 2}, {"k": "a", "v": 1}]}))
        );
    }

    #[test]
    fn signatures_differ_exactly_where_reads_differ() {
        let h = hbs_with(&[("t", "{{#if tls}}t{{/if}}{{json name}}{{#if (eq kind \"a\")}}x{{/if}}")]);
        let r = analyze(h.get_template("t").unwrap(), &h).unwrap();
        let sig = |v: Value| signature("t", &r, &v);
        let base = sig(serde_json::json!({"tls": true, "name": "a", "kind": "a"}));
        assert_eq!(
            base,
            sig(serde_json::json!({"tls": {"x": 1}, "name": "b", "kind": "a"}))
        );
        assert_ne!(base, sig(serde_json::json!({"tls": false, "name": "a", "kind": "a"})));
        assert_ne!(base, sig(serde_json::json!({"tls": true, "name": "a", "kind": "b"})));
        assert_ne!(
            base,
            sig(serde_json::json!({"name": "a", "kind": "a"})),
            "missing is not false"
        );
    }
}
