//! Rendering the IR through the rule table.
//!
//! Children are rendered before the parents that embed them: routes, then virtual hosts (which
//! see their routes' output as `rendered.routes`), then route tables (`rendered.virtual_hosts`).
//! A rule whose output fails (template error, YAML error, or a field Envoy's schema does not have)
//! produces a diagnostic naming the rule, its template, the IR node and the user object behind it,
//! and only that output is left out.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::pack::{Registry, Rule};
use crate::diagnostic::Diagnostic;
use crate::ir::{Ir, NodeKind, SourceRef};
use crate::snapshot::ResourceType;

/// A top-level Envoy resource as rendered JSON, with what produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedResource {
    /// The message in the proto3 JSON mapping (already checked against the schema).
    pub value: Value,
    /// Id of the rule that produced it.
    pub rule: String,
    /// Its protobuf encoding.
    pub encoded: std::sync::Arc<[u8]>,
}

/// The cache key of a node: a 128-bit hash of its kind, its own context (without the rendered
/// children, which are represented by their own keys), its origin, and its children's keys. Built
/// like a Merkle tree, so a route table's key costs as much as its own fields, not its routes.
fn node_key(kind: NodeKind, ctx: &Value, source: Option<&SourceRef>, children: &[u128]) -> u128 {
    let mut h = KeyHasher(xxhash_rust::xxh3::Xxh3::new());
    h.0.update(kind.as_str().as_bytes());
    if let Value::Object(map) = ctx {
        for (k, v) in map.iter().filter(|(k, _)| k.as_str() != "rendered") {
            h.0.update(k.as_bytes());
            h.0.update(&[0]);
            let _ = serde_json::to_writer(&mut h, v);
            h.0.update(&[0]);
        }
    }
    if let Some(s) = source {
        h.0.update(format!("{:?}", s.origin).as_bytes());
    }
    for c in children {
        h.0.update(&c.to_le_bytes());
    }
    h.0.digest128()
}

/// Prefix of the placeholder `{{json rendered.X}}` prints (see the `json` helper).
pub(crate) const PLACEHOLDER: &str = "\u{1}attache-placeholder:";

/// Replaces placeholders left by `{{json rendered.X}}` with the rendered values from the context.
fn fill_placeholders(value: &mut Value, ctx: &Value) {
    match value {
        Value::String(s) => {
            if let Some(path) = s.strip_prefix(PLACEHOLDER) {
                let mut cur = ctx;
                for seg in path.split('.') {
                    cur = cur.get(seg).unwrap_or(&Value::Null);
                }
                *value = cur.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill_placeholders(v, ctx)),
        Value::Object(map) => map.values_mut().for_each(|v| fill_placeholders(v, ctx)),
        _ => {}
    }
}

/// One message a rule produced for a node.
#[derive(Clone, Debug)]
struct Output {
    emits: String,
    value: Value,
    rule: String,
    /// The protobuf encoding (fragments' bytes are appended to their parent's).
    encoded: std::sync::Arc<[u8]>,
}

/// Rendered children handed to a parent: the context key (`routes`) and their encodings.
type Children<'a> = Option<(&'a str, &'a [std::sync::Arc<[u8]>])>;

/// What a parent node knows of its children: their cache keys and their encodings.
#[derive(Clone, Copy, Default)]
struct Kids<'a> {
    keys: &'a [u128],
    bytes: Children<'a>,
}

/// A node's template context, or how to make it.
#[derive(Clone, Copy)]
enum Ctx<'a> {
    /// A parent's context, already built (its key needs it).
    Built(&'a Value),
    /// A leaf: its key comes from the IR node itself, and the context is built only when the
    /// node must be rendered (a cache hit never builds it).
    Leaf(u128, &'a dyn Fn() -> Value),
}

/// The cache key of a leaf node (no children): a hash of its kind, the IR node and its origin.
fn leaf_key<T: Serialize>(kind: NodeKind, node: &T, source: Option<&SourceRef>) -> u128 {
    let mut h = KeyHasher(xxhash_rust::xxh3::Xxh3::new());
    h.0.update(b"leaf\0");
    h.0.update(kind.as_str().as_bytes());
    let _ = serde_json::to_writer(&mut h, node);
    if let Some(s) = source {
        h.0.update(format!("{:?}", s.origin).as_bytes());
    }
    h.0.digest128()
}

struct KeyHasher(xxhash_rust::xxh3::Xxh3);

impl std::io::Write for KeyHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rendered fragments of a node: JSON (for the parent's context) and encoding.
type Fragments = Vec<(Value, std::sync::Arc<[u8]>)>;

/// Everything the rules produced: top-level resources by type and name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rendered {
    /// Resources by type, then name.
    pub resources: BTreeMap<ResourceType, BTreeMap<String, RenderedResource>>,
}

/// What rendering one node produced: (emitted message type, value, rule id) per output, and the
/// diagnostics it raised.
#[derive(Clone, Debug)]
struct NodeOutput {
    outputs: Vec<Output>,
    diagnostics: Vec<Diagnostic>,
    generation: u64,
}

/// Rendered output of IR nodes from the previous translation, keyed by everything rendering a
/// node reads (kind, full context, source origin). With it, a translation re-renders only the
/// nodes whose content changed, and produces exactly what a fresh translation would: a hit
/// returns what the same input rendered before. Entries unused by a translation are dropped at
/// its end, so the cache holds one translation's worth. Valid for one rule registry only.
#[derive(Debug, Default)]
pub struct RenderCache {
    entries: HashMap<u128, NodeOutput>,
    generation: u64,
    hits: usize,
    misses: usize,
}

impl RenderCache {
    /// (nodes reused, nodes rendered) in the last translation.
    pub fn last_stats(&self) -> (usize, usize) {
        (self.hits, self.misses)
    }
}

struct Renderer<'a> {
    registry: &'a Registry,
    out: Rendered,
    diagnostics: Vec<Diagnostic>,
    cache: Option<&'a mut RenderCache>,
}

/// The context a template sees: the node serialized, without its child list, plus `rendered`.
fn context<T: Serialize>(node: &T, child_key: Option<&str>, rendered: Option<(&str, Vec<Value>)>) -> Value {
    let mut v = serde_json::to_value(node).unwrap_or(Value::Null);
    if let (Some(key), Value::Object(map)) = (child_key, &mut v) {
        map.remove(key);
    }
    if let Value::Object(map) = &mut v {
        let mut r = serde_json::Map::new();
        if let Some((key, items)) = rendered {
            r.insert(key.to_string(), Value::Array(items));
        }
        map.insert("rendered".to_string(), Value::Object(r));
    }
    v
}

/// Deep merge for patches: maps merge, lists append, anything else replaces.
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p)) => b.extend(p),
        (b, p) => *b = p,
    }
}

impl Renderer<'_> {
    fn fail(&mut self, rule: &Rule, node: &str, source: Option<&SourceRef>, code: &str, message: String) {
        let mut d = Diagnostic::error(
            code,
            format!("rule `{}` ({}) for {node}: {message}", rule.id, rule.template),
        )
        .hint("this output was left out; if the rule comes from an operator pack, fix the template");
        if let Some(s) = source {
            d = d.on(s.object.clone()).at(s.origin.clone());
        }
        self.diagnostics.push(d);
    }

    fn applies(&mut self, rule: &Rule, ctx: &Value, node: &str, source: Option<&SourceRef>) -> bool {
        match &rule.when {
            None => true,
            Some((text, c)) => match c.eval(ctx) {
                Ok(b) => b,
                Err(path) => {
                    self.fail(
                        rule,
                        node,
                        source,
                        "rules.bad_condition",
                        format!("`when: {text}` reads `{path}`, which this node's context does not have"),
                    );
                    false
                }
            },
        }
    }

    fn render_one(&mut self, rule: &Rule, ctx: &Value, node: &str, source: Option<&SourceRef>) -> Option<Value> {
        let text = match self.registry.hbs.render(&rule.template_key, ctx) {
            Ok(t) => t,
            Err(e) => {
                self.fail(rule, node, source, "rules.template_failed", e.to_string());
                return None;
            }
        };
        match crate::source::yaml::parse_one(&text) {
            Ok(Some(n)) => {
                let mut value = n.to_json();
                if text.contains("attache-placeholder:") {
                    fill_placeholders(&mut value, ctx);
                }
                Some(value)
            }
            Ok(None) => Some(Value::Object(serde_json::Map::new())),
            Err(e) => {
                let line = text.lines().nth(e.line.saturating_sub(1) as usize).unwrap_or("");
                self.fail(
                    rule,
                    node,
                    source,
                    "rules.invalid_yaml",
                    format!(
                        "rendered text is not YAML at line {} ({}): `{}`",
                        e.line,
                        e.message,
                        line.trim()
                    ),
                );
                None
            }
        }
    }

    /// Renders one node: every applicable non-patch rule gives one message, into which the
    /// applicable patches for the same message type are merged. Returns (emitted type, value).
    fn node(
        &mut self,
        kind: NodeKind,
        ctx: &Value,
        node: &str,
        source: Option<&SourceRef>,
        children: Children<'_>,
    ) -> Vec<Output> {
        let registry = self.registry;
        let mut outputs = Vec::new();
        for rule in registry.rules.iter().filter(|r| r.kind == kind && !r.patch) {
            if !self.applies(rule, ctx, node, source) {
                continue;
            }
            let Some(mut value) = self.render_one(rule, ctx, node, source) else {
                continue;
            };
            let mut applied = rule;
            for patch in registry
                .rules
                .iter()
                .filter(|r| r.kind == kind && r.patch && r.emits == rule.emits)
            {
                if self.applies(patch, ctx, node, source) {
                    if let Some(p) = self.render_one(patch, ctx, node, source) {
                        merge(&mut value, p);
                        applied = patch;
                    }
                }
            }
            // Children already checked and encoded are appended as bytes, when the output holds
            // them as rendered (a patch that changed them means decoding everything).
            let rendered = ctx.get("rendered");
            let spliced = children
                .filter(|(key, _)| value.get(*key).is_some() && value.get(*key) == rendered.and_then(|r| r.get(*key)));
            let encoded = match spliced {
                Some(child) => crate::envoy::encode_with_children(&rule.emits, &value, &[child]),
                None => crate::envoy::decode_checked(&rule.emits, &value).map(|m| crate::envoy::encode(&m)),
            };
            let encoded = match encoded {
                Ok(m) => m,
                Err(e) => {
                    let blame = if std::ptr::eq(applied, rule) { rule } else { applied };
                    self.fail(
                        blame,
                        node,
                        source,
                        "rules.invalid_output",
                        format!("output is not a valid {}: {e}", rule.emits),
                    );
                    continue;
                }
            };
            let encoded = encoded.into();
            outputs.push(Output {
                emits: rule.emits.clone(),
                value,
                rule: rule.id.clone(),
                encoded,
            });
        }
        outputs
    }

    /// [`Self::node`] through the cache, when there is one.
    fn cached_node(
        &mut self,
        kind: NodeKind,
        ctx: Ctx<'_>,
        node: &str,
        source: Option<&SourceRef>,
        kids: Kids<'_>,
    ) -> (u128, Vec<Output>) {
        let built;
        let Some(cache) = self.cache.as_deref_mut() else {
            let ctx = match ctx {
                Ctx::Built(v) => v,
                Ctx::Leaf(_, make) => {
                    built = make();
                    &built
                }
            };
            return (0, self.node(kind, ctx, node, source, kids.bytes));
        };
        let key = match ctx {
            Ctx::Built(v) => node_key(kind, v, source, kids.keys),
            Ctx::Leaf(key, _) => key,
        };
        let generation = cache.generation;
        if let Some(hit) = cache.entries.get_mut(&key) {
            hit.generation = generation;
            cache.hits += 1;
            self.diagnostics.extend(hit.diagnostics.iter().cloned());
            return (key, hit.outputs.clone());
        }
        cache.misses += 1;
        let before = self.diagnostics.len();
        let ctx = match ctx {
            Ctx::Built(v) => v,
            Ctx::Leaf(_, make) => {
                built = make();
                &built
            }
        };
        let outputs = self.node(kind, ctx, node, source, kids.bytes);
        let diagnostics = self.diagnostics[before..].to_vec();
        if let Some(cache) = self.cache.as_deref_mut() {
            cache.entries.insert(
                key,
                NodeOutput {
                    outputs: outputs.clone(),
                    diagnostics,
                    generation,
                },
            );
        }
        (key, outputs)
    }

    /// Renders a node and files top-level resources; returns the fragments of `fragment_type`.
    fn node_into(
        &mut self,
        kind: NodeKind,
        ctx: Ctx<'_>,
        node: &str,
        source: Option<&SourceRef>,
        fragment_type: Option<&str>,
        kids: Kids<'_>,
    ) -> (u128, Fragments) {
        let mut fragments = Vec::new();
        let (key, outputs) = self.cached_node(kind, ctx, node, source, kids);
        for Output {
            emits,
            value,
            rule,
            encoded,
        } in outputs
        {
            if let Some(ty) = ResourceType::from_message_name(&emits) {
                let name = value
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let by_name = self.out.resources.entry(ty).or_default();
                if let Some(existing) = by_name.get(&name) {
                    let mut d = Diagnostic::error(
                        "rules.duplicate_resource",
                        format!("rule `{rule}` for {node} emits {} `{name}`, which rule `{}` already emitted; the first one is kept", ty.label(), existing.rule),
                    );
                    if let Some(s) = source {
                        d = d.on(s.object.clone()).at(s.origin.clone());
                    }
                    self.diagnostics.push(d);
                    continue;
                }
                by_name.insert(name, RenderedResource { value, rule, encoded });
            } else if fragment_type == Some(emits.as_str()) {
                fragments.push((value, encoded));
            }
        }
        (key, fragments)
    }
}

/// Renders the IR through the registry's rules.
pub fn render(ir: &Ir, registry: &Registry) -> (Rendered, Vec<Diagnostic>) {
    render_cached(ir, registry, None)
}

/// Renders the IR, reusing the output of nodes that did not change since the cache was last used.
pub fn render_cached(ir: &Ir, registry: &Registry, mut cache: Option<&mut RenderCache>) -> (Rendered, Vec<Diagnostic>) {
    if let Some(c) = cache.as_deref_mut() {
        c.generation += 1;
        c.hits = 0;
        c.misses = 0;
    }
    let mut r = Renderer {
        registry,
        out: Rendered::default(),
        diagnostics: Vec::new(),
        cache,
    };
    for c in &ir.clusters {
        let make = || context(c, None, None);
        r.node_into(
            NodeKind::Cluster,
            Ctx::Leaf(leaf_key(NodeKind::Cluster, c, c.source.as_ref()), &make),
            &format!("cluster `{}`", c.name),
            c.source.as_ref(),
            None,
            Kids::default(),
        );
    }
    for rc in &ir.route_configs {
        let (mut vhosts, mut vhost_bytes, mut vhost_keys) = (Vec::new(), Vec::new(), Vec::new());
        for vh in &rc.virtual_hosts {
            let (mut routes, mut route_bytes, mut route_keys) = (Vec::new(), Vec::new(), Vec::new());
            for route in &vh.routes {
                let make = || context(route, None, None);
                let node = format!("route `{}`", route.name);
                let (key, fragments) = r.node_into(
                    NodeKind::Route,
                    Ctx::Leaf(leaf_key(NodeKind::Route, route, route.source.as_ref()), &make),
                    &node,
                    route.source.as_ref(),
                    Some("envoy.config.route.v3.Route"),
                    Kids::default(),
                );
                route_keys.push(key);
                for (value, bytes) in fragments {
                    routes.push(value);
                    route_bytes.push(bytes);
                }
            }
            let ctx = context(vh, Some("routes"), Some(("routes", routes)));
            let node = format!("virtual host `{}` of `{}`", vh.name, rc.name);
            let (key, fragments) = r.node_into(
                NodeKind::VirtualHost,
                Ctx::Built(&ctx),
                &node,
                vh.source.as_ref(),
                Some("envoy.config.route.v3.VirtualHost"),
                Kids {
                    keys: &route_keys,
                    bytes: Some(("routes", route_bytes.as_slice())),
                },
            );
            vhost_keys.push(key);
            for (value, bytes) in fragments {
                vhosts.push(value);
                vhost_bytes.push(bytes);
            }
        }
        let ctx = context(rc, Some("virtual_hosts"), Some(("virtual_hosts", vhosts)));
        r.node_into(
            NodeKind::RouteConfig,
            Ctx::Built(&ctx),
            &format!("route table `{}`", rc.name),
            None,
            None,
            Kids {
                keys: &vhost_keys,
                bytes: Some(("virtual_hosts", vhost_bytes.as_slice())),
            },
        );
    }
    for l in &ir.listeners {
        let make = || context(l, None, None);
        r.node_into(
            NodeKind::Listener,
            Ctx::Leaf(leaf_key(NodeKind::Listener, l, l.source.as_ref()), &make),
            &format!("listener `{}`", l.name),
            l.source.as_ref(),
            None,
            Kids::default(),
        );
    }
    if let Some(c) = r.cache.as_deref_mut() {
        let generation = c.generation;
        c.entries.retain(|_, e| e.generation == generation);
    }
    (r.out, r.diagnostics)
}

#[cfg(test)]
mod tests {
    use super::merge;
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
        let input = "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: q\nspec:\n  prefix: /q/\n  service: q\n---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: r\nspec:\n  prefix: /r/\n  service: r\n";
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
    fn a_misspelled_context_field_is_a_strict_mode_error() {
        let t = translate_with_route_template("name: {{json nmae}}\n");
        let e = t
            .diagnostics
            .iter()
            .find(|d| d.code == "rules.template_failed")
            .expect("template error");
        assert!(e.message.contains("nmae"), "{e}");
    }

    #[test]
    fn merge_appends_lists_and_merges_maps() {
        let mut a = json!({"a": {"x": 1}, "l": [1], "s": "old"});
        merge(&mut a, json!({"a": {"y": 2}, "l": [2], "s": "new"}));
        assert_eq!(a, json!({"a": {"x": 1, "y": 2}, "l": [1, 2], "s": "new"}));
    }
}
