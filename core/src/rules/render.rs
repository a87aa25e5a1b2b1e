//! The fast rendering of the IR through the rule table: [`render_cached`] gives exactly what the
//! reference rendering (`reference`) gives, remembering nodes between translations
//! ([`RenderCache`]) and taking shortcuts for thousands of similar nodes (the template memo,
//! shapes and their encode plans, children's bytes spliced into their parent's).
//!
//! Children are rendered before the parents that embed them: routes, then virtual hosts (which
//! see their routes' output as `rendered.routes`), then route tables (`rendered.virtual_hosts`).
//! A rule whose output fails (template error, YAML error, or a field Envoy's schema does not have)
//! produces a diagnostic naming the rule, its template, the IR node and the user object behind it,
//! and only that output is left out. What one node's rendering shares with the reference is in
//! `node`.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::Value;

use super::filing::Filer;
pub use super::node::Rendered;
use super::node::{
    duplicate_resource, envoy_override, fill_placeholders, fill_placeholders_except, finish_patched, is_placeholder,
    output, resource_name, route_config_head, virtual_host_head, with_rendered, Leaf, NodeRenderer, Output, PatchValue,
    ROUTE, VIRTUAL_HOST,
};
use super::pack::{Registry, Rule};
use crate::diagnostic::Diagnostic;
use crate::ir::{Ir, NodeKind, SourceRef};

/// The cache key of a node: a 128-bit hash of its kind, its own context (without the rendered
/// children, which are represented by their own keys), its origin, and its children's keys. Built
/// like a Merkle tree, so a route table's key costs as much as its own fields, not its routes.
fn node_key(kind: NodeKind, ctx: &Value, source: Option<&SourceRef>, children: &[u128]) -> u128 {
    /// The context without `rendered`.
    struct Own<'a>(&'a Value);
    impl Serialize for Own<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap as _;
            let Value::Object(map) = self.0 else {
                return self.0.serialize(s);
            };
            let mut m = s.serialize_map(None)?;
            for (k, v) in map.iter().filter(|(k, _)| k.as_str() != "rendered") {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
    super::key::key(
        &[kind.as_str().as_bytes()],
        &Own(ctx),
        source.map(|s| &s.origin),
        children,
    )
}

/// Rendered children handed to a parent.
#[derive(Clone, Copy)]
struct Children<'a> {
    /// The context key under `rendered` (`routes`) and the parent's field they are spliced into.
    key: &'a str,
    /// The children's message type.
    emits: &'a str,
    /// Their encodings, in order (borrowed: a route table's routes are not reference-counted
    /// once more to be spliced).
    bytes: &'a [&'a [u8]],
}

impl Children<'_> {
    /// `rendered` for a template that reads the children: their messages as JSON, decoded from
    /// their encodings (proto field names, defaults left out).
    fn rendered(&self) -> Value {
        let items = self
            .bytes
            .iter()
            .map(|b| crate::envoy::bytes_to_json_proto_names(self.emits, b))
            .collect();
        let mut r = serde_json::Map::new();
        r.insert(self.key.to_string(), Value::Array(items));
        Value::Object(r)
    }
}

/// What a parent node knows of its children: their cache keys and their encodings.
#[derive(Clone, Copy, Default)]
struct Kids<'a> {
    keys: &'a [u128],
    bytes: Option<Children<'a>>,
}

/// Rendered fragments of a node: their encodings.
type Fragments = smallvec::SmallVec<[bytes::Bytes; 1]>;

/// What rendering one node produced: (emitted message type, value, rule id) per output, and the
/// diagnostics it raised.
#[derive(Clone, Debug, Default)]
struct NodeOutput {
    outputs: Vec<Output>,
    diagnostics: Vec<Diagnostic>,
}

/// What the fast path learns of the templates while it renders (valid for one registry, and kept
/// with the [`RenderCache`], never in the registry): the template memo (see `memo`) and the
/// parsed shapes of rendered text with their encode plans (see `shape`).
#[derive(Debug, Default)]
pub(super) struct Shortcuts {
    shapes: super::shape::ShapeCache,
    memo: super::memo::TemplateMemo,
}

/// Rendered output of IR nodes from the previous translation, keyed by everything rendering a
/// node reads (kind, full context, source origin). With it, a translation re-renders only the
/// nodes whose content changed, and produces exactly what a fresh translation would: a hit
/// returns what the same input rendered before. What a translation neither used nor still
/// lists is dropped once it makes up half of the cache, so the cache holds about one
/// translation's worth, at most two. Valid for one rule registry only.
#[derive(Debug, Default)]
pub struct RenderCache {
    /// What rendering learnt of the templates: memo and shapes with their encode plans.
    shortcuts: Arc<Shortcuts>,
    /// Outputs by node key, with the last translation that looked each up (shared: a hit is a
    /// reference count, not a copy).
    entries: crate::keyed::KeyMap<(u64, Arc<NodeOutput>)>,
    /// The last translation's routes and clusters in IR order, with their keys and outputs:
    /// lowering hands an unchanged node over as the same allocation at about the same place,
    /// so it is found by address in a walk along this list, without hashing or a lookup.
    routes: Vec<Aligned<crate::ir::Route>>,
    clusters: Vec<Aligned<crate::ir::Cluster>>,
    /// The last translation's top-level resources, for the next one to patch.
    filed: Option<super::filing::Base>,
    /// Whether the last translation's resources were filed as a patch of the one before.
    patched: bool,
    generation: u64,
    hits: usize,
    misses: usize,
}

/// A shared IR node of the last translation (held, so its address stays its own), its cache
/// key, its output and the fragments its parent splices in.
#[derive(Debug)]
struct Aligned<T> {
    node: Arc<T>,
    key: u128,
    output: Arc<NodeOutput>,
    fragments: Fragments,
    /// Whether `output` has no diagnostics (known without following the pointer: a
    /// translation lists every node's diagnostics, and most nodes have none).
    quiet: bool,
}

/// How far ahead along the last translation's list a node is looked for (nodes removed since
/// then are skipped this way).
const LOOKAHEAD: usize = 8;

impl RenderCache {
    /// (nodes reused, nodes rendered) in the last translation.
    pub fn last_stats(&self) -> (usize, usize) {
        (self.hits, self.misses)
    }

    /// Whether the last translation filed its resources as a patch of the one before's (the
    /// resources of unchanged routes and clusters not filed again).
    pub fn last_patched(&self) -> bool {
        self.patched
    }
}

struct Renderer<'a> {
    registry: &'a Registry,
    shortcuts: &'a Shortcuts,
    /// Whether leaves render on the render threads (large inputs only).
    parallel: bool,
    filer: Filer,
    diagnostics: Vec<Diagnostic>,
    cache: Option<&'a mut RenderCache>,
}

impl NodeRenderer<'_> {
    /// Renders one rule's template with the helpers' values recorded apart: the text with
    /// markers, and the values. A leaf's context may be found in the template memo instead
    /// (see `memo`).
    fn render_shape(
        &mut self,
        sc: &Shortcuts,
        rule: &Rule,
        ctx: &handlebars::Context,
        leaf: bool,
    ) -> Option<(Arc<str>, Vec<String>)> {
        let memo = &sc.memo;
        let pending = if leaf {
            match memo.lookup(&rule.template_key, &self.registry.hbs, ctx.data()) {
                super::memo::Lookup::Hit(shape, values) => return Some((shape, values)),
                super::memo::Lookup::Render(pending) => pending,
            }
        } else {
            None
        };
        let recording = super::shape::Recording::start();
        match self.registry.hbs.render_with_context(&rule.template_key, ctx) {
            Ok(t) => {
                let (values, sources) = recording.finish();
                if let Some(p) = pending {
                    memo.learn(&rule.template_key, p, &t, &values, sources);
                }
                Some((t.into(), values))
            }
            Err(e) => {
                self.fail(rule, "rules.template_failed", e.to_string());
                None
            }
        }
    }

    /// Renders one rule's template and parses the text: the value, placeholders still in, and
    /// how many it has.
    fn render_one(
        &mut self,
        sc: &Shortcuts,
        rule: &Rule,
        ctx: &handlebars::Context,
        leaf: bool,
    ) -> Option<(Value, usize)> {
        let (shape, values) = self.render_shape(sc, rule, ctx, leaf)?;
        let parsed = sc.shapes.of_node(&shape, &values);
        self.parse_rendered(rule, &shape, &values, parsed.as_deref())
    }

    /// The value of a rendered text (its shape parsed once, or the real text), and how many
    /// placeholders it has.
    fn parse_rendered(
        &mut self,
        rule: &Rule,
        shape: &str,
        values: &[String],
        parsed: Option<&super::shape::Shape>,
    ) -> Option<(Value, usize)> {
        let placeholders = values.iter().filter(|v| v.contains("attache-placeholder:")).count();
        if let Some(value) = parsed.and_then(|p| p.value(values)) {
            return Some((value, placeholders));
        }
        let text = super::shape::real_text(shape, values);
        self.parse_text(rule, &text).map(|v| (v, placeholders))
    }

    /// Every applicable non-patch rule gives one message, into which the applicable patches for
    /// the same message type are merged.
    fn render(mut self, sc: &Shortcuts, kind: NodeKind, ctx: Value, children: Option<Children<'_>>) -> NodeOutput {
        let registry = self.registry;
        // Children as JSON only when a rule reads them; `{{json rendered.routes}}` needs just
        // the field to exist.
        let reads = registry.reads_rendered(kind);
        let ctx = match children {
            Some(c) if reads => with_rendered(ctx, c.rendered()),
            Some(c) => with_rendered(ctx, serde_json::json!({ c.key: [] })),
            None => ctx,
        };
        let hctx = handlebars::Context::from(ctx);
        let data = hctx.data();
        let decoded = OnceLock::new();
        let rendered = || match children {
            Some(_) if reads => data.get("rendered").unwrap_or(&Value::Null),
            Some(c) => decoded.get_or_init(|| c.rendered()),
            // A leaf's own `rendered` (a listener's HTTP filters).
            None => data.get("rendered").unwrap_or(&Value::Null),
        };
        let mut outputs = Vec::new();
        for rule in registry.rules.iter().filter(|r| r.kind == kind && !r.patch) {
            if !self.applies(rule, data) {
                continue;
            }
            let Some((shape, values)) = self.render_shape(sc, rule, &hctx, children.is_none()) else {
                continue;
            };
            let parsed = sc.shapes.of_node(&shape, &values);
            // A leaf with no patch rules for its message can go through its shape's encode plan
            // (see `envoy::plan`), learnt from the first node of the shape encoded in full.
            let plannable = children.is_none()
                && !registry
                    .rules
                    .iter()
                    .any(|r| r.kind == kind && r.patch && r.emits == rule.emits)
                && !values.iter().any(|v| v.contains("attache-placeholder:"))
                && data.get("envoy_override").is_none();
            let plan = parsed
                .as_deref()
                .filter(|_| plannable)
                .and_then(|p| p.plan(&rule.emits));
            if let Some((encoded, name)) = plan.and_then(|p| p.encode(&values)) {
                outputs.push(output(rule, encoded, name));
                continue;
            }
            let Some((value, mut placeholders)) = self.parse_rendered(rule, &shape, &values, parsed.as_deref()) else {
                continue;
            };
            let mut patches = Vec::new();
            for patch in registry
                .rules
                .iter()
                .filter(|r| r.kind == kind && r.patch && r.emits == rule.emits)
            {
                if self.applies(patch, data) {
                    if !patch.edits.is_empty() {
                        if let Some(p) = self.render_edits(patch, &hctx) {
                            // Edit values are plain JSON: a placeholder in them is filled too.
                            placeholders += 1;
                            patches.push((patch, p));
                        }
                    } else if let Some((p, ph)) = self.render_one(sc, patch, &hctx, children.is_none()) {
                        patches.push((patch, PatchValue::Merge(p)));
                        placeholders += ph;
                    }
                }
            }
            if let Some(o) = envoy_override(kind, rule, data) {
                patches.push((rule, o));
            }
            // Children printed as `{{json rendered.routes}}` were checked and encoded on their
            // own: their bytes are appended to the parent's. Anything else is decoded in full.
            let check = |value: &mut Value| {
                let spliced = children.filter(|c| is_placeholder(value.get(c.key), c.key));
                let mut left = placeholders;
                if let (Some(c), Some(map)) = (spliced, value.as_object_mut()) {
                    map.remove(c.key);
                    left = left.saturating_sub(1);
                }
                if left > 0 {
                    fill_placeholders(value, rendered());
                }
                match spliced {
                    Some(c) => crate::envoy::encode_with_children(&rule.emits, value, &[(c.key, c.bytes)]),
                    None => crate::envoy::decode_checked(&rule.emits, value).map(|m| crate::envoy::encode(&m)),
                }
            };
            let child_key = children.map(|c| c.key);
            let prepare = |value: &mut Value| fill_placeholders_except(value, rendered(), child_key);
            let Some((value, encoded)) = finish_patched(&mut self, rule, value, patches, prepare, check) else {
                continue;
            };
            if plannable {
                if let Some(p) = &parsed {
                    p.learn(&rule.emits, &values, &encoded);
                }
            }
            outputs.push(output(rule, encoded, resource_name(&value)));
        }
        NodeOutput {
            outputs,
            diagnostics: self.diagnostics,
        }
    }
}

impl Renderer<'_> {
    /// Renders leaves: cache lookups first, then every miss in parallel, then results filed in
    /// input order (so output and diagnostics do not depend on scheduling). Returns each leaf's
    /// cache key and fragments of `fragment_type`.
    fn leaves<T: Leaf>(&mut self, items: &[&T], fragment_type: Option<&str>) -> Vec<(u128, Fragments)> {
        let keys = self.keys(items);
        let resolved = self.resolve(items, keys);
        let mut out = Vec::with_capacity(items.len());
        for (n, (key, result)) in items.iter().zip(resolved) {
            self.diagnostics.extend(result.diagnostics.iter().cloned());
            out.push((
                key,
                self.file(&result.outputs, &|| n.label(), n.source(), fragment_type, false),
            ));
        }
        out
    }

    /// Cache keys of leaves (zeros without a cache).
    fn keys<T: Leaf>(&self, items: &[&T]) -> Vec<u128> {
        use rayon::prelude::*;
        match self.cache {
            Some(_) if self.parallel && items.len() >= PARALLEL_BATCH => {
                crate::workers::threads().install(|| items.par_iter().map(|n| n.key()).collect())
            }
            Some(_) => items.iter().map(|n| n.key()).collect(),
            None => vec![0; items.len()],
        }
    }

    /// Renders shared nodes (routes, clusters): one that is the same allocation as a node near
    /// the same place in the last translation's list (`memo` picks the cache's list for the
    /// kind) reuses its key, output and fragments; the others go through [`Renderer::resolve`].
    /// Returns the nodes' entries in order: the caller splices their fragments, then gives the
    /// list back to the cache ([`Renderer::remember`]).
    fn shared_leaves<T: Leaf>(
        &mut self,
        nodes: &[&Arc<T>],
        memo: fn(&mut RenderCache) -> &mut Vec<Aligned<T>>,
        fragment_type: Option<&str>,
    ) -> Vec<Aligned<T>> {
        // Moved out one by one (an unchanged node costs no reference counting).
        let mut last: Vec<Option<Aligned<T>>> = match self.cache.as_deref_mut() {
            Some(cache) => std::mem::take(memo(cache)).into_iter().map(Some).collect(),
            None => Vec::new(),
        };
        let mut at = 0;
        let found: Vec<Option<usize>> = nodes
            .iter()
            .map(|n| {
                let end = (at + LOOKAHEAD).min(last.len());
                let k = (at..end).find(|&k| last[k].as_ref().is_some_and(|l| Arc::ptr_eq(&l.node, n)))?;
                at = k + 1;
                Some(k)
            })
            .collect();
        let missing: Vec<&T> = nodes
            .iter()
            .zip(&found)
            .filter(|(_, k)| k.is_none())
            .map(|(n, _)| &***n)
            .collect();
        let keys = self.keys(&missing);
        let mut resolved = self.resolve(&missing, keys).into_iter();
        if let Some(c) = self.cache.as_deref_mut() {
            c.hits += found.iter().filter(|k| k.is_some()).count();
        }
        let patch = self.filer.is_patch();
        if patch {
            // What the nodes that left emitted goes, before what new nodes emit comes in (a
            // changed cluster keeps its name).
            let mut kept = vec![false; last.len()];
            for k in found.iter().flatten() {
                kept[*k] = true;
            }
            for (entry, _) in last.iter().zip(kept).filter(|(_, kept)| !kept) {
                for o in entry.iter().flat_map(|e| &e.output.outputs) {
                    if let Some(ty) = o.ty {
                        self.filer.remove(ty, &o.name);
                    }
                }
            }
        }
        let mut aligned = Vec::with_capacity(nodes.len());
        for (n, k) in nodes.iter().zip(found) {
            let entry = match k.and_then(|k| last[k].take()) {
                // Patching, what an unchanged node emitted is already filed.
                Some(entry) if patch => entry,
                taken => {
                    let (key, output) = match taken {
                        Some(Aligned { key, output, .. }) => (key, output),
                        None => resolved.next().unwrap_or_else(|| (0, Arc::new(NodeOutput::default()))),
                    };
                    let fragments = self.file(&output.outputs, &|| n.label(), n.source(), fragment_type, true);
                    Aligned {
                        node: Arc::clone(n),
                        key,
                        quiet: output.diagnostics.is_empty(),
                        output,
                        fragments,
                    }
                }
            };
            if !entry.quiet {
                self.diagnostics.extend(entry.output.diagnostics.iter().cloned());
            }
            aligned.push(entry);
        }
        aligned
    }

    /// Gives the cache the entries of this translation's shared nodes, for the next one.
    fn remember(&mut self, routes: Vec<Aligned<crate::ir::Route>>, clusters: Vec<Aligned<crate::ir::Cluster>>) {
        if let Some(c) = self.cache.as_deref_mut() {
            c.routes = routes;
            c.clusters = clusters;
        }
    }

    /// The outputs of leaves with known keys: cache lookups first, then every miss rendered (in
    /// parallel for large inputs), in input order.
    fn resolve<T: Leaf>(&mut self, items: &[&T], keys: Vec<u128>) -> Vec<(u128, Arc<NodeOutput>)> {
        use rayon::prelude::*;
        let (registry, shortcuts) = (self.registry, self.shortcuts);
        let hits: Vec<Option<Arc<NodeOutput>>> = match self.cache.as_deref_mut() {
            Some(cache) => {
                let generation = cache.generation;
                keys.iter()
                    .map(|k| {
                        let (used, hit) = cache.entries.get_mut(k)?;
                        *used = generation;
                        Some(Arc::clone(hit))
                    })
                    .collect()
            }
            None => vec![None; items.len()],
        };
        // Equal leaves (a route served on two listeners) are rendered once: later ones are hits.
        let mut seen = std::collections::HashSet::new();
        let render_here: Vec<bool> = keys
            .iter()
            .zip(&hits)
            .map(|(k, hit)| hit.is_none() && (self.cache.is_none() || seen.insert(*k)))
            .collect();
        let render = |n: &T| {
            let label = n.label();
            let (ctx, mut diagnostics) = n.full_context(registry);
            let r = NodeRenderer::new(registry, &label, n.source());
            let mut output = r.render(shortcuts, T::KIND, ctx, None);
            if !diagnostics.is_empty() {
                diagnostics.append(&mut output.diagnostics);
                output.diagnostics = diagnostics;
            }
            Arc::new(output)
        };
        let to_render = render_here.iter().filter(|here| **here).count();
        let fresh: Vec<Option<Arc<NodeOutput>>> = if to_render == 0 {
            vec![None; items.len()]
        } else if self.parallel && to_render >= PARALLEL_BATCH {
            crate::workers::threads().install(|| {
                items
                    .par_iter()
                    .zip(&render_here)
                    .map(|(n, here)| here.then(|| render(n)))
                    .collect()
            })
        } else {
            items
                .iter()
                .zip(&render_here)
                .map(|(n, here)| here.then(|| render(n)))
                .collect()
        };
        let mut out = Vec::with_capacity(items.len());
        for (((n, key), hit), fresh) in items.iter().zip(keys).zip(hits).zip(fresh) {
            let result = match (hit, fresh) {
                (Some(hit), _) => {
                    if let Some(c) = self.cache.as_deref_mut() {
                        c.hits += 1;
                    }
                    hit
                }
                (None, Some(fresh)) => {
                    if let Some(c) = self.cache.as_deref_mut() {
                        c.misses += 1;
                        c.entries.insert(key, (c.generation, Arc::clone(&fresh)));
                    }
                    fresh
                }
                // A leaf equal to one rendered earlier in this batch, now in the cache.
                (None, None) => match self.cache.as_deref_mut().and_then(|c| {
                    c.hits += 1;
                    c.entries.get(&key).map(|(_, e)| Arc::clone(e))
                }) {
                    Some(earlier) => earlier,
                    None => render(n),
                },
            };
            out.push((key, result));
        }
        out
    }

    /// Renders a parent node (virtual host, route table) through the cache, when there is one.
    fn parent(
        &mut self,
        kind: NodeKind,
        ctx: Value,
        node: &str,
        source: Option<&SourceRef>,
        fragment_type: Option<&str>,
        kids: Kids<'_>,
    ) -> (u128, Fragments) {
        let key = self.cache.as_ref().map(|_| node_key(kind, &ctx, source, kids.keys));
        if let (Some(key), Some(cache)) = (key, self.cache.as_deref_mut()) {
            let generation = cache.generation;
            if let Some((used, hit)) = cache.entries.get_mut(&key) {
                *used = generation;
                cache.hits += 1;
                let hit = Arc::clone(hit);
                self.diagnostics.extend(hit.diagnostics.iter().cloned());
                return (
                    key,
                    self.file(&hit.outputs, &|| node.to_string(), source, fragment_type, false),
                );
            }
            cache.misses += 1;
        }
        let r = NodeRenderer::new(self.registry, node, source);
        let result = Arc::new(r.render(self.shortcuts, kind, ctx, kids.bytes));
        if let (Some(key), Some(cache)) = (key, self.cache.as_deref_mut()) {
            cache.entries.insert(key, (cache.generation, Arc::clone(&result)));
        }
        self.diagnostics.extend(result.diagnostics.iter().cloned());
        (
            key.unwrap_or_default(),
            self.file(&result.outputs, &|| node.to_string(), source, fragment_type, false),
        )
    }

    /// Files top-level resources; returns the fragments of `fragment_type`. `node` names the IR
    /// node for a diagnostic (built only if one is needed: this runs for every leaf).
    /// `shared`: the node is a route or a cluster (see [`Filer::add`]).
    fn file(
        &mut self,
        outputs: &[Output],
        node: &dyn Fn() -> String,
        source: Option<&SourceRef>,
        fragment_type: Option<&str>,
        shared: bool,
    ) -> Fragments {
        let mut fragments = Fragments::new();
        for Output {
            emits,
            name,
            rule,
            encoded,
            version,
            ty,
        } in outputs
        {
            if let Some(ty) = *ty {
                let resource = crate::snapshot::Resource {
                    bytes: encoded.clone(),
                    version: *version,
                };
                if let Err(existing) = self.filer.add(ty, name, resource, rule, shared) {
                    let d = duplicate_resource(rule, &node(), ty, name, &existing, source);
                    self.diagnostics.push(d);
                }
            } else if fragment_type == Some(emits.as_str()) {
                fragments.push(encoded.clone());
            }
        }
        fragments
    }
}

/// Below this many leaves, rendering stays on the calling thread (small configurations render in
/// a few milliseconds anyway).
const PARALLEL_FROM_LEAVES: usize = 2_000;

/// Below this many leaves to hash or render in one batch, the batch stays on the calling thread:
/// handing it to the worker threads costs more (one change renders a handful).
const PARALLEL_BATCH: usize = 64;

/// Renders the IR, reusing the output of nodes that did not change since the cache was last used.
pub fn render_cached(ir: &Ir, registry: &Registry, cache: Option<&mut RenderCache>) -> (Rendered, Vec<Diagnostic>) {
    let leaves = ir.clusters.len()
        + ir.route_configs
            .iter()
            .flat_map(|rc| &rc.virtual_hosts)
            .map(|vh| vh.routes.len())
            .sum::<usize>();
    // On the calling thread: only batches of leaves to hash or render go to the worker threads.
    render_with(ir, registry, cache, leaves >= PARALLEL_FROM_LEAVES)
}

fn render_with(
    ir: &Ir,
    registry: &Registry,
    cache: Option<&mut RenderCache>,
    parallel: bool,
) -> (Rendered, Vec<Diagnostic>) {
    // Without a cache the filing is in full, which always finishes; what the shortcuts learn is
    // kept for this pass only.
    let Some(cache) = cache else {
        return render_pass(ir, registry, &Shortcuts::default(), None, parallel).unwrap_or_default();
    };
    let patch = cache.filed.is_some();
    let shortcuts = Arc::clone(&cache.shortcuts);
    if let Some(r) = render_pass(ir, registry, &shortcuts, Some(&mut *cache), parallel) {
        cache.patched = patch;
        return r;
    }
    // A patch met a resource name twice: filed in full, the duplicate is reported. Rendering
    // again costs cache hits only; the counts stay those of the first pass.
    let stats = (cache.hits, cache.misses);
    cache.filed = None;
    let r = render_pass(ir, registry, &shortcuts, Some(&mut *cache), parallel).unwrap_or_default();
    (cache.hits, cache.misses) = stats;
    cache.patched = false;
    r
}

/// One rendering pass, filed as a patch of the cache's last filing when there is one; `None` when
/// that patch met a name twice.
fn render_pass(
    ir: &Ir,
    registry: &Registry,
    shortcuts: &Shortcuts,
    mut cache: Option<&mut RenderCache>,
    parallel: bool,
) -> Option<(Rendered, Vec<Diagnostic>)> {
    let mut filer = Filer::full();
    if let Some(c) = cache.as_deref_mut() {
        c.generation += 1;
        c.hits = 0;
        c.misses = 0;
        if let Some(base) = c.filed.take() {
            filer = Filer::patch(base);
        }
    }
    let mut r = Renderer {
        registry,
        shortcuts,
        parallel,
        filer,
        diagnostics: Vec::new(),
        cache,
    };
    r.leaves(&ir.secrets.iter().collect::<Vec<_>>(), None);
    let clusters: Vec<&Arc<crate::ir::Cluster>> = ir.clusters.iter().collect();
    let clusters = r.shared_leaves(&clusters, |c| &mut c.clusters, None);
    r.leaves(&ir.endpoints.iter().collect::<Vec<_>>(), None);
    // Every route of every table at once (the parallel part), then each table from its routes.
    let shared_routes: Vec<&Arc<crate::ir::Route>> = ir
        .route_configs
        .iter()
        .flat_map(|rc| &rc.virtual_hosts)
        .flat_map(|vh| &vh.routes)
        .collect();
    let routes = r.shared_leaves(&shared_routes, |c| &mut c.routes, Some(ROUTE));
    let mut next = routes.iter();
    for rc in &ir.route_configs {
        let (mut vhost_bytes, mut vhost_keys) = (Vec::new(), Vec::new());
        for vh in &rc.virtual_hosts {
            let (mut route_bytes, mut route_keys) =
                (Vec::with_capacity(vh.routes.len()), Vec::with_capacity(vh.routes.len()));
            for entry in next.by_ref().take(vh.routes.len()) {
                route_keys.push(entry.key);
                route_bytes.extend(entry.fragments.iter().map(|b| &b[..]));
            }
            // Not named after its table: a virtual host in several tables renders once.
            let node = format!("virtual host `{}`", vh.name);
            let (key, fragments) = r.parent(
                NodeKind::VirtualHost,
                virtual_host_head(vh),
                &node,
                vh.source.as_ref(),
                Some(VIRTUAL_HOST),
                Kids {
                    keys: &route_keys,
                    bytes: Some(Children {
                        key: "routes",
                        emits: ROUTE,
                        bytes: &route_bytes,
                    }),
                },
            );
            vhost_keys.push(key);
            vhost_bytes.extend(fragments);
        }
        let vhost_bytes: Vec<&[u8]> = vhost_bytes.iter().map(|b| &b[..]).collect();
        r.parent(
            NodeKind::RouteConfig,
            route_config_head(rc),
            &format!("route table `{}`", rc.name),
            None,
            None,
            Kids {
                keys: &vhost_keys,
                bytes: Some(Children {
                    key: "virtual_hosts",
                    emits: VIRTUAL_HOST,
                    bytes: &vhost_bytes,
                }),
            },
        );
    }
    r.remember(routes, clusters);
    r.leaves(&ir.listeners.iter().collect::<Vec<_>>(), None);
    if let Some(c) = r.cache.as_deref_mut() {
        // What this translation neither looked up nor lists (as a route or cluster) is dropped,
        // once it could make up half of the cache: a walk over the cache only every so often.
        let listed = c.routes.len() + c.clusters.len();
        if c.entries.len() > 2 * listed + 1024 {
            let generation = c.generation;
            c.entries
                .retain(|_, (used, output)| *used == generation || Arc::strong_count(output) > 1);
        }
    }
    let (resources, base) = r.filer.finish()?;
    if let Some(c) = r.cache {
        c.filed = base;
    }
    Some((Rendered { resources }, r.diagnostics))
}

#[cfg(test)]
mod tests {
    use crate::ir::NodeKind;
    use crate::rules::node::merge;
    use serde_json::json;

    fn translate_with_route_template(template: &str) -> crate::Translation {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pack.yaml"),
            "name: typo\nrules:\n  - id: core.route\n    kind: route\n    when: action == \"route\"\n    emits: envoy.config.route.v3.Route\n    template: route.yaml.hbs\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("route.yaml.hbs"), template).unwrap();
        let registry = crate::rules::Registry::with_packs(&[dir.path().to_path_buf()]).unwrap();
        let input = "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: q\nspec:\n  hostname: \"*\"\n  prefix: /q/\n  service: q\n---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: r\nspec:\n  hostname: \"*\"\n  prefix: /r/\n  service: r\n";
        crate::translate(
            &crate::source::parse_text("in.yaml", input),
            &registry,
            &crate::Options::default(),
        )
    }

    #[test]
    fn a_field_typo_in_a_template_names_rule_template_node_and_path() {
        let t = translate_with_route_template(
            "name: {{json name}}\nmatch: {prefix: {{json prefix}}}\nroute:\n  cluster: {{json cluster}}\n  timeoutt: 1s\n",
        );
        let errors: Vec<String> = t
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        let e = &errors[0];
        for needle in [
            "in.yaml:1:1: Mapping default/q",
            "rule `core.route`",
            "route.yaml.hbs",
            "route `default/q`",
            "at `route`",
            "timeoutt",
        ] {
            assert!(e.contains(needle), "{needle} not in {e}");
        }
        // The routes are left out; the rest of the configuration is still there.
        assert_eq!(t.snapshot.count(crate::snapshot::ResourceType::Cluster), 2);
        assert_eq!(t.snapshot.count(crate::snapshot::ResourceType::Listener), 1);
    }

    #[test]
    fn a_misspelled_context_field_is_refused_when_the_pack_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pack.yaml"),
            "name: typo\nrules:\n  - id: core.route\n    kind: route\n    emits: envoy.config.route.v3.Route\n    template: route.yaml.hbs\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("route.yaml.hbs"),
            "name: {{json name}}\n{{#if cors}}\nx: {{json nmae}}\n{{/if}}\n",
        )
        .unwrap();
        let e = crate::rules::Registry::with_packs(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        for needle in [
            "route.yaml.hbs",
            "line 3",
            "`nmae`",
            "did you mean `name`",
            "rule `core.route`",
        ] {
            assert!(e.contains(needle), "{needle} not in {e}");
        }
    }

    #[test]
    fn a_misspelled_context_field_the_load_check_cannot_follow_is_a_strict_mode_error() {
        // A block parameter's fields are not checked at load (see `template_paths`).
        let t = translate_with_route_template("name: {{#with this as |n|}}{{json n.nmae}}{{/with}}\n");
        let e = t
            .diagnostics
            .iter()
            .find(|d| d.code == "rules.template_failed")
            .expect("template error");
        assert!(e.message.contains("nmae"), "{e}");
    }

    #[test]
    fn a_template_may_read_its_rendered_children_as_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pack.yaml"),
            "name: each\nrules:\n  - id: core.virtual_host\n    kind: virtual_host\n    emits: envoy.config.route.v3.VirtualHost\n    template: vh.yaml.hbs\n",
        )
        .unwrap();
        // Rebuilds the route list from the children's JSON, reading one of their fields.
        std::fs::write(
            dir.path().join("vh.yaml.hbs"),
            "name: {{json name}}\ndomains: {{json domains}}\nroutes:\n{{#each rendered.routes}}\n  - {{json this}}\n{{/each}}\nrequest_headers_to_add:\n  - header: {key: x-first-route, value: {{json rendered.routes.[0].name}}}\n",
        )
        .unwrap();
        let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/golden/mapping/headers-and-rewrites/input.yaml");
        let loaded = crate::source::dir::load(&input);
        let core = crate::rules::Registry::core().unwrap();
        let each = crate::rules::Registry::with_packs(&[dir.path().to_path_buf()]).unwrap();
        assert!(each.reads_rendered(NodeKind::VirtualHost) && !core.reads_rendered(NodeKind::VirtualHost));
        let a = crate::translate(&loaded, &core, &crate::Options::default());
        let b = crate::translate(&loaded, &each, &crate::Options::default());
        assert_eq!(a.diagnostics, b.diagnostics);
        let ty = crate::snapshot::ResourceType::Route;
        let (mut ja, jb) = (
            crate::envoy::resources_json(&a.snapshot, ty),
            crate::envoy::resources_json(&b.snapshot, ty),
        );
        let first_route = ja[0]["virtualHosts"][0]["routes"][0]["name"].clone();
        assert!(first_route.is_string());
        ja[0]["virtualHosts"][0]["requestHeadersToAdd"] =
            serde_json::json!([{"header": {"key": "x-first-route", "value": first_route}}]);
        assert_eq!(ja, jb);
    }

    #[test]
    fn parallel_rendering_gives_exactly_what_sequential_rendering_gives() {
        let mut text = String::new();
        for i in 0..1_500 {
            // Some invalid, so diagnostics are compared too.
            let service = if i % 97 == 0 {
                "bad service!".to_string()
            } else {
                format!("svc-{}:80", i % 700)
            };
            text.push_str(&format!(
                "---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: m{i}\nspec:\n  hostname: \"*\"\n  prefix: /m{i}/\n  service: {service}\n"
            ));
        }
        let loaded = crate::source::parse_text("many.yaml", &text);
        let options = crate::Options::default();
        let (set, _) = crate::resource::parse(&loaded.objects, &options.parse);
        let (ir, _) = crate::ir::lower(&set, &options.lower);
        let leaves: usize = ir.clusters.len()
            + ir.route_configs
                .iter()
                .flat_map(|rc| &rc.virtual_hosts)
                .map(|vh| vh.routes.len())
                .sum::<usize>();
        assert!(leaves >= super::PARALLEL_FROM_LEAVES, "{leaves}");
        let registry = crate::rules::Registry::core().unwrap();
        let sequential = super::render_with(&ir, &registry, None, false);
        let parallel = super::render_cached(&ir, &registry, None);
        assert_eq!(sequential.0, parallel.0);
        assert_eq!(sequential.1, parallel.1);
        let mut cache = super::RenderCache::default();
        let cached = super::render_cached(&ir, &registry, Some(&mut cache));
        assert_eq!(sequential.0, cached.0);
    }

    /// Renders `text` through a fresh render cache, checks that it gives what the reference gives
    /// without a diagnostic, and returns the cache (what its memo and shapes learnt).
    fn rendered_as_the_reference_does(text: &str) -> super::RenderCache {
        let loaded = crate::source::parse_text("many.yaml", text);
        let options = crate::Options::default();
        let (set, _) = crate::resource::parse(&loaded.objects, &options.parse);
        let (ir, _) = crate::ir::lower(&set, &options.lower);
        let registry = crate::rules::Registry::core().unwrap();
        let mut cache = super::RenderCache::default();
        let (rendered, diagnostics) = super::render_cached(&ir, &registry, Some(&mut cache));
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(rendered, crate::rules::render(&ir, &registry).0);
        cache
    }

    #[test]
    fn nodes_that_differ_only_in_values_are_rendered_by_handlebars_once_or_twice() {
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!(
                "---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: m{i}\nspec:\n  hostname: \"*\"\n  prefix: /m{i}/\n  service: svc-{i}:{}\n",
                8000 + i
            ));
        }
        let cache = rendered_as_the_reference_does(&text);
        // One signature for the 200 clusters and one for the 200 routes: each rendered by
        // handlebars for its first node and for the check of its first reuse only.
        assert_eq!(cache.shortcuts.memo.handlebars_renders(), (2, 4));
        // Their shapes are planned; the listener's is not (it embeds its HTTP filters, rendered
        // apart: a placeholder filled after parsing).
        assert_eq!(cache.shortcuts.shapes.plans_learnt(), 2);
    }

    #[test]
    fn routes_that_differ_only_in_their_policies_values_share_a_shape() {
        // Rate limit labels, CORS origins, error texts and added headers differ per Mapping; the
        // loops over them read item by item, so the routes still share one signature.
        let mut text = String::from("apiVersion: getambassador.io/v3alpha1\nkind: RateLimitService\nmetadata:\n  name: rl\nspec:\n  service: rl:8081\n");
        for i in 0..200 {
            text.push_str(&format!(
                "---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: m{i}\nspec:\n  hostname: \"*\"\n  prefix: /m{i}/\n  service: svc-{i}:80\n  labels:\n    ambassador:\n      - per_user:\n          - request_headers:\n              key: user\n              header_name: x-user\n          - generic_key:\n              value: svc-{i}\n      - by_address:\n          - remote_address\n  cors:\n    origins: [https://app-{i}.example.com]\n  error_response_overrides:\n    - on_status_code: 503\n      body:\n        text_format: \"svc-{i} is down\"\n  add_request_headers:\n    x-team: {{value: t{i}}}\n    x-zone: z{i}\n  add_response_headers:\n    x-served-by: {{value: m{i}, append: true}}\n"
            ));
        }
        let cache = rendered_as_the_reference_does(&text);
        // Clusters (the services' and the rate limit service's) and routes: a handful of
        // signatures, not one per route.
        let (signatures, renders) = cache.shortcuts.memo.handlebars_renders();
        assert!(
            signatures <= 4 && renders <= 8,
            "{signatures} signatures, {renders} renders"
        );
    }

    #[test]
    fn parent_contexts_are_the_nodes_without_their_children() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/golden/mapping/headers-and-rewrites/input.yaml");
        let loaded = crate::source::dir::load(&dir);
        let ir = crate::translate(
            &loaded,
            &crate::rules::Registry::core().unwrap(),
            &crate::Options::default(),
        )
        .ir;
        let rc = &ir.route_configs[0];
        let mut full = serde_json::to_value(rc).unwrap();
        full.as_object_mut().unwrap().remove("virtual_hosts");
        assert_eq!(super::route_config_head(rc), full);
        let vh = &rc.virtual_hosts[0];
        let mut full = serde_json::to_value(vh).unwrap();
        full.as_object_mut().unwrap().remove("routes");
        assert_eq!(
            super::virtual_host_head(vh),
            full,
            "virtual_host_head is missing a field of VirtualHost"
        );
    }

    #[test]
    fn merge_appends_lists_and_merges_maps() {
        let mut a = json!({"a": {"x": 1}, "l": [1], "s": "old"});
        merge(&mut a, json!({"a": {"y": 2}, "l": [2], "s": "new"}));
        assert_eq!(a, json!({"a": {"x": 1, "y": 2}, "l": [1, 2], "s": "new"}));
    }
}
