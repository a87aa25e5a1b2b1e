//! One IR node through the rules of its kind, and what both renderings share: the rendered
//! output ([`Rendered`], [`Output`]), template contexts, the plain rendering of one template
//! ([`NodeRenderer::render_plain`]), `when` conditions, patch merging and placeholders, and the
//! diagnostics of a failed rule. Must not remember anything between nodes or translations (the
//! fast path's caches and shortcuts are `render`'s).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::pack::{Registry, Rule};
use crate::diagnostic::Diagnostic;
use crate::ir::{NodeKind, SourceRef};
use crate::snapshot::{Name, ResourceType};

// Prefix of the placeholder `{{json rendered.X}}` prints (see the `json` helper).
use super::pack::PLACEHOLDER;

/// Replaces placeholders left by `{{json rendered.X}}` with the rendered values (`rendered` is
/// the context's `rendered` object).
pub(super) fn fill_placeholders(value: &mut Value, rendered: &Value) {
    match value {
        Value::String(s) => {
            if let Some(path) = s.strip_prefix(PLACEHOLDER) {
                let mut cur = rendered;
                for seg in path.split('.').skip(1) {
                    let seg = seg.trim_start_matches('[').trim_end_matches(']');
                    let next = match cur {
                        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                        _ => cur.get(seg),
                    };
                    cur = next.unwrap_or(&Value::Null);
                }
                *value = cur.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill_placeholders(v, rendered)),
        Value::Object(map) => map.values_mut().for_each(|v| fill_placeholders(v, rendered)),
        _ => {}
    }
}

/// One message a rule produced for a node. Only the encoding is kept: what a parent or a human
/// needs as JSON is decoded from it on demand.
#[derive(Clone, Debug)]
pub(super) struct Output {
    pub(super) emits: String,
    /// The message's `name` (the resource name of top-level resources).
    pub(super) name: Name,
    pub(super) rule: Arc<str>,
    /// The protobuf encoding (fragments' bytes are appended to their parent's).
    pub(super) encoded: bytes::Bytes,
    /// The version of a top-level resource (zeros for fragments).
    pub(super) version: crate::snapshot::Version,
    /// The type of a top-level resource (none for fragments).
    pub(super) ty: Option<ResourceType>,
}

/// Everything the rules produced: top-level resources by type and name, each with its protobuf
/// encoding (already checked against the schema and Envoy's validation rules) and its version
/// (computed once, when its node was rendered).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rendered {
    /// Resources by type, then name (no type without resources).
    pub resources: BTreeMap<ResourceType, crate::snapshot::ResourceMap>,
}

impl Rendered {
    /// The snapshot of these resources (already decoded, checked and encoded). The maps are
    /// taken over: persistent, they share what did not change with the last translation's
    /// snapshot.
    pub fn into_snapshot(self) -> crate::snapshot::Snapshot {
        crate::snapshot::Snapshot::from_maps(self.resources)
    }
}

/// The context a leaf's template sees: the node serialized, plus an empty `rendered`.
pub(super) fn context<T: Serialize>(node: &T) -> Value {
    let mut v = serde_json::to_value(node).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("rendered".to_string(), Value::Object(serde_json::Map::new()));
    }
    v
}

/// The context of a virtual host without its routes (which would be serialized only to be
/// dropped). A test keeps this in step with [`crate::ir::VirtualHost`].
pub(super) fn virtual_host_head(vh: &crate::ir::VirtualHost) -> Value {
    serde_json::json!({
        "name": vh.name,
        "hostname": vh.hostname,
        "domains": vh.domains,
        "source": vh.source,
    })
}

/// The context of a route table without its virtual hosts (see [`virtual_host_head`]).
pub(super) fn route_config_head(rc: &crate::ir::RouteConfig) -> Value {
    serde_json::json!({ "name": rc.name })
}

/// Adds `rendered`: the children as JSON when a rule of this kind reads them, else the names
/// alone with empty lists (`{{json rendered.routes}}` only prints a placeholder).
pub(super) fn with_rendered(mut ctx: Value, rendered: Value) -> Value {
    if let Value::Object(map) = &mut ctx {
        map.insert("rendered".to_string(), rendered);
    }
    ctx
}

/// Deep merge for patches: maps merge, lists append, anything else replaces.
pub(super) fn merge(base: &mut Value, patch: Value) {
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

/// What a patch rule gives for one node: a value merged into the output (`patch: true` with a
/// template), or the values of its edits (`edits`), in order.
pub(super) enum PatchValue {
    Merge(Value),
    Edits(Vec<Option<Value>>),
    /// A Mapping's `envoy_override`, merged last into its routes.
    Override(Value),
}

/// The `envoy_override` of a route node (its context's), to merge into the output of `rule`.
pub(super) fn envoy_override(kind: crate::ir::NodeKind, rule: &Rule, ctx: &Value) -> Option<PatchValue> {
    if kind != crate::ir::NodeKind::Route || rule.emits != ROUTE {
        return None;
    }
    let text = ctx.get("envoy_override")?.as_str()?;
    serde_json::from_str(text).ok().map(PatchValue::Override)
}

/// Applies one patch rule's value to `value`: the paths of its edits that found nothing, or why
/// it cannot apply.
fn apply_patch(value: &mut Value, rule: &Rule, patch: &PatchValue) -> Result<Vec<String>, String> {
    match patch {
        PatchValue::Merge(p) | PatchValue::Override(p) => {
            merge(value, p.clone());
            Ok(Vec::new())
        }
        PatchValue::Edits(values) => {
            let mut unmatched = Vec::new();
            for (edit, v) in rule.edits.iter().zip(values) {
                match super::edit::apply(value, edit, v.as_ref()) {
                    Ok(true) => {}
                    Ok(false) => unmatched.push(format!("{}: {}", edit.op.as_str(), edit.path)),
                    Err(e) => return Err(format!("`{}: {}`: {e}", edit.op.as_str(), edit.path)),
                }
            }
            Ok(unmatched)
        }
    }
}

/// Finishes one plain rule's output: `base` with the `patches` (in table order) applied,
/// checked and encoded by `check` (which may edit the value: fill placeholders, take spliced
/// children out). `prepare` runs on `base` first when there are edits (it fills the placeholders
/// edits may reach into). When the patched output fails and there were patches, a patch that
/// cannot apply or whose result fails is dropped alone (a `rules.patch_dropped` warning naming
/// it) and the output is sent with the others, unpatched at worst: an operator's mistake never
/// takes the output away. Only the rule's own output failing leaves it out
/// (`rules.invalid_output`). An edit whose path finds nothing is a `rules.edit_unmatched`
/// warning.
pub(super) fn finish_patched<E: std::fmt::Display>(
    node: &mut NodeRenderer<'_>,
    rule: &Rule,
    mut base: Value,
    patches: Vec<(&Rule, PatchValue)>,
    prepare: impl FnOnce(&mut Value),
    mut check: impl FnMut(&mut Value) -> Result<Vec<u8>, E>,
) -> Option<(Value, Vec<u8>)> {
    let invalid = |node: &mut NodeRenderer<'_>, e: E| {
        node.fail(
            rule,
            "rules.invalid_output",
            format!("output is not a valid {}: {e}", rule.emits),
        );
    };
    if patches.is_empty() {
        let mut value = base;
        return match check(&mut value) {
            Ok(encoded) => Some((value, encoded)),
            Err(e) => {
                invalid(node, e);
                None
            }
        };
    }
    if patches.iter().any(|(_, p)| matches!(p, PatchValue::Edits(_))) {
        prepare(&mut base);
    }
    let unmatched = |node: &mut NodeRenderer<'_>, patch: &Rule, paths: Vec<String>| {
        for path in paths {
            node.warn(
                patch,
                "rules.edit_unmatched",
                format!("`{path}` found nothing in the output of rule `{}`", rule.id),
            );
        }
    };
    let mut all = base.clone();
    let mut found = Vec::new();
    let applied = patches.iter().all(|(r, p)| match apply_patch(&mut all, r, p) {
        Ok(u) => {
            found.push((*r, u));
            true
        }
        Err(_) => false,
    });
    if applied {
        if let Ok(encoded) = check(&mut all) {
            for (r, u) in found {
                unmatched(node, r, u);
            }
            return Some((all, encoded));
        }
    }
    // Slow path, only when something failed: the rule alone, then each patch on top.
    let mut trial = base.clone();
    let mut done = match check(&mut trial) {
        Ok(encoded) => (trial, encoded),
        Err(e) => {
            invalid(node, e);
            return None;
        }
    };
    let mut current = base;
    for (patch, p) in patches {
        let mut next = current.clone();
        let outcome = apply_patch(&mut next, patch, &p).and_then(|u| {
            let mut trial = next.clone();
            check(&mut trial)
                .map(|encoded| (u, trial, encoded))
                .map_err(|e| e.to_string())
        });
        match outcome {
            Ok((u, trial, encoded)) => {
                unmatched(node, patch, u);
                current = next;
                done = (trial, encoded);
            }
            Err(e) if matches!(p, PatchValue::Override(_)) => node.override_failed(&e),
            Err(e) => node.warn(
                patch,
                "rules.patch_dropped",
                format!(
                    "patch makes the output of rule `{}` invalid ({e}); it is sent without this patch",
                    rule.id
                ),
            ),
        }
    }
    Some(done)
}

/// [`fill_placeholders`] everywhere but in the field `except` (children spliced as bytes).
pub(super) fn fill_placeholders_except(value: &mut Value, rendered: &Value, except: Option<&str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if Some(k.as_str()) != except {
                    fill_placeholders(v, rendered);
                }
            }
        }
        other => fill_placeholders(other, rendered),
    }
}

/// Whether `value` is the placeholder `{{json rendered.<key>}}` prints.
pub(super) fn is_placeholder(value: Option<&Value>, key: &str) -> bool {
    value
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix(PLACEHOLDER))
        .and_then(|s| s.strip_prefix("rendered."))
        == Some(key)
}

/// Renders one node through the rules; pure (reads only the registry), so leaves render in
/// parallel.
pub(super) struct NodeRenderer<'a> {
    pub(super) registry: &'a Registry,
    node: &'a str,
    source: Option<&'a SourceRef>,
    pub(super) diagnostics: Vec<Diagnostic>,
}

impl<'a> NodeRenderer<'a> {
    /// A renderer for the node `node` (its label in diagnostics), made from `source`.
    pub(super) fn new(registry: &'a Registry, node: &'a str, source: Option<&'a SourceRef>) -> Self {
        NodeRenderer {
            registry,
            node,
            source,
            diagnostics: Vec::new(),
        }
    }

    /// What rendering the node reported.
    pub(super) fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }

    /// Renders one rule's template and parses the text, the plain way: the helpers print JSON,
    /// nothing is recorded or looked up. Placeholders of `{{json rendered.X}}` are still in.
    pub(super) fn render_plain(&mut self, rule: &Rule, ctx: &handlebars::Context) -> Option<Value> {
        match self.registry.hbs.render_with_context(&rule.template_key, ctx) {
            Ok(text) => self.parse_text(rule, &text),
            Err(e) => {
                self.fail(rule, "rules.template_failed", e.to_string());
                None
            }
        }
    }

    /// The value of a rendered text, or a diagnostic.
    pub(super) fn parse_text(&mut self, rule: &Rule, text: &str) -> Option<Value> {
        match crate::source::yaml::parse_one(text) {
            Ok(Some(n)) => Some(n.to_json()),
            Ok(None) => Some(Value::Object(serde_json::Map::new())),
            Err(e) => {
                let line = text.lines().nth(e.line.saturating_sub(1) as usize).unwrap_or("");
                self.fail(
                    rule,
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

    pub(super) fn fail(&mut self, rule: &Rule, code: &str, message: String) {
        let hint = if code == "rules.bad_condition" {
            "the rule was skipped on this node (the other rules' output is sent); fix its `when`"
        } else if rule.patch {
            "this patch was left out on this node; if the rule comes from an operator pack, fix its template"
        } else {
            "this output was left out; if the rule comes from an operator pack, fix the template"
        };
        self.report(Diagnostic::error, rule, code, message, hint);
    }

    /// A warning about a rule's output that was sent anyway (without the part named).
    pub(super) fn warn(&mut self, rule: &Rule, code: &str, message: String) {
        let hint = if code == "rules.edit_unmatched" {
            "narrow the rule with `when` or `select` to the nodes where the path exists"
        } else {
            "fix the patch, or narrow its `when` or `select` to the nodes it fits"
        };
        self.report(Diagnostic::warning, rule, code, message, hint);
    }

    /// A Mapping's `envoy_override` that Envoy would refuse: an error on the Mapping, the route
    /// sent without it.
    fn override_failed(&mut self, why: &str) {
        let mut d = Diagnostic::error(
            "mapping.envoy_override_invalid",
            format!("`envoy_override` makes {} invalid ({why}); the route is sent without it", self.node),
        )
        .path("spec.envoy_override")
        .hint("write fields of envoy.config.route.v3.Route as Envoy's JSON mapping has them, e.g. `route: {idle_timeout: 30s}`");
        if let Some(s) = self.source {
            d = d.on(s.object.clone()).at(s.origin.clone());
        }
        self.diagnostics.push(d);
    }

    /// A diagnostic about a rule on this node, on the node's source object.
    fn report(
        &mut self,
        severity: fn(&str, String) -> Diagnostic,
        rule: &Rule,
        code: &str,
        message: String,
        hint: &str,
    ) {
        let mut d = severity(
            code,
            format!("rule `{}` ({}) for {}: {message}", rule.id, rule.template, self.node),
        )
        .hint(hint);
        if let Some(s) = self.source {
            d = d.on(s.object.clone()).at(s.origin.clone());
        }
        self.diagnostics.push(d);
    }

    /// The values of a patch rule with edits: literals as written, templates rendered the plain
    /// way with the node's context; `None` when a template fails (reported).
    pub(super) fn render_edits(&mut self, rule: &Rule, ctx: &handlebars::Context) -> Option<PatchValue> {
        let mut values = Vec::with_capacity(rule.edits.len());
        for edit in &rule.edits {
            values.push(match &edit.value {
                super::edit::EditValue::None => None,
                super::edit::EditValue::Literal(v) => Some(v.clone()),
                super::edit::EditValue::Template(key) => match self.registry.hbs.render_with_context(key, ctx) {
                    Ok(text) => Some(self.parse_text(rule, &text)?),
                    Err(e) => {
                        self.fail(rule, "rules.template_failed", e.to_string());
                        return None;
                    }
                },
            });
        }
        Some(PatchValue::Edits(values))
    }

    pub(super) fn applies(&mut self, rule: &Rule, ctx: &Value) -> bool {
        if rule.select.as_ref().is_some_and(|s| !s.matches(self.source)) {
            return false;
        }
        match &rule.when {
            None => true,
            Some((text, c)) => match c.eval(ctx) {
                Ok(b) => b,
                Err(path) => {
                    self.fail(
                        rule,
                        "rules.bad_condition",
                        format!("`when: {text}` reads `{path}`, which this node's context does not have"),
                    );
                    false
                }
            },
        }
    }
}

/// The error for a resource name emitted twice (the first one is kept).
pub(super) fn duplicate_resource(
    rule: &str,
    node: &str,
    ty: ResourceType,
    name: &str,
    existing: &str,
    source: Option<&SourceRef>,
) -> Diagnostic {
    let mut d = Diagnostic::error(
        "rules.duplicate_resource",
        format!(
            "rule `{rule}` for {node} emits {} `{name}`, which rule `{existing}` already emitted; the first one is kept",
            ty.label()
        ),
    );
    if let Some(s) = source {
        d = d.on(s.object.clone()).at(s.origin.clone());
    }
    d
}

/// A rendered message's xDS name: `name`, but `cluster_name` for a ClusterLoadAssignment.
pub(super) fn resource_name(value: &Value) -> String {
    value
        .get("name")
        .or_else(|| value.get("cluster_name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// One rule's output: its encoded message, named and (for xDS resources) versioned.
pub(super) fn output(rule: &Rule, mut encoded: Vec<u8>, name: String) -> Output {
    let name = Name::from(name);
    // Taken over, not copied (a route table's encoding is hundreds of kilobytes, sized exactly);
    // a buffer that grew as it was written gives back what it did not use.
    encoded.shrink_to_fit();
    let encoded = bytes::Bytes::from(encoded);
    let ty = ResourceType::from_message_name(&rule.emits);
    let version = if ty.is_some() {
        crate::snapshot::version_of_bytes(&encoded)
    } else {
        crate::snapshot::Version::default()
    };
    Output {
        version,
        ty,
        emits: rule.emits.clone(),
        name,
        rule: Arc::clone(&rule.shared_id),
        encoded,
    }
}

/// A leaf IR node (cluster, route, listener, secret): what the renderer needs to know of it.
pub(super) trait Leaf: Serialize + Sync + Sized {
    const KIND: NodeKind;
    fn label(&self) -> String;
    fn source(&self) -> Option<&SourceRef>;
    /// The template context.
    fn context(&self) -> Value {
        context(self)
    }
    /// The cache key: everything the context holds.
    fn key(&self) -> u128 {
        leaf_key(Self::KIND, self, self.source())
    }
    /// The context with what rules render from it before the node itself (a listener's HTTP
    /// filters), and what rendering that reported. It depends on the node and the registry
    /// only, so the cache key stays the node's.
    fn full_context(&self, registry: &Registry) -> (Value, Vec<Diagnostic>) {
        let _ = registry;
        (self.context(), Vec::new())
    }
}

/// Secrets serialize their key as `<redacted>` (so the IR can be shown): the template context and
/// the cache key get the key itself.
impl Leaf for crate::ir::Secret {
    const KIND: NodeKind = NodeKind::Secret;
    fn label(&self) -> String {
        format!("secret `{}`", self.name)
    }
    fn source(&self) -> Option<&SourceRef> {
        self.source.as_ref()
    }
    fn context(&self) -> Value {
        let mut v = context(self);
        v["private_key"] = self
            .private_key
            .as_ref()
            .map_or(Value::Null, |k| Value::String(k.0.clone()));
        v
    }
    fn key(&self) -> u128 {
        let without_key = leaf_key(Self::KIND, self, self.source());
        let private_key = self.private_key.as_ref().map_or(&b""[..], |k| k.0.as_bytes());
        super::key::key(&[b"secret", private_key], &(), None, &[without_key])
    }
}

impl Leaf for crate::ir::Cluster {
    const KIND: NodeKind = NodeKind::Cluster;
    fn label(&self) -> String {
        format!("cluster `{}`", self.name)
    }
    fn source(&self) -> Option<&SourceRef> {
        self.source.as_ref()
    }
}

impl Leaf for crate::ir::Endpoints {
    const KIND: NodeKind = NodeKind::Endpoints;
    fn label(&self) -> String {
        format!("endpoints of `{}`", self.name)
    }
    fn source(&self) -> Option<&SourceRef> {
        self.source.as_ref()
    }
}

impl Leaf for crate::ir::Route {
    const KIND: NodeKind = NodeKind::Route;
    fn label(&self) -> String {
        format!("route `{}`", self.name)
    }
    fn source(&self) -> Option<&SourceRef> {
        self.source.as_ref()
    }
}

impl Leaf for crate::ir::Listener {
    const KIND: NodeKind = NodeKind::Listener;
    fn label(&self) -> String {
        format!("listener `{}`", self.name)
    }
    fn source(&self) -> Option<&SourceRef> {
        self.source.as_ref()
    }
    /// The listener's context, and under `rendered.http_filters` the HTTP filters the pack's
    /// filter table gives it, in chain order (`Registry::http_filters`): each rendered with the
    /// listener's context, checked and encoded on its own, then shown decoded back to JSON as
    /// other rendered children are. A filter whose output is not a valid HttpFilter (its typed
    /// config included) is left out and reported; the listener keeps the others, so Envoy is
    /// never sent a filter it would refuse.
    fn full_context(&self, registry: &Registry) -> (Value, Vec<Diagnostic>) {
        let mut ctx = self.context();
        let label = self.label();
        let mut node = NodeRenderer::new(registry, &label, self.source());
        let hctx = handlebars::Context::from(ctx.clone());
        let mut filters = Vec::new();
        for rule in registry.http_filters() {
            if !node.applies(rule, hctx.data()) {
                continue;
            }
            let Some(value) = node.render_plain(rule, &hctx) else {
                continue;
            };
            match crate::envoy::decode_checked(&rule.emits, &value) {
                Ok(message) => filters.push(crate::envoy::bytes_to_json_proto_names(
                    &rule.emits,
                    &crate::envoy::encode(&message),
                )),
                Err(e) => node.fail(
                    rule,
                    "rules.invalid_output",
                    format!("output is not a valid {}: {e}", rule.emits),
                ),
            }
        }
        ctx["rendered"]["http_filters"] = Value::Array(filters);
        (ctx, node.into_diagnostics())
    }
}

/// The cache key of a leaf node (no children): a hash of its kind, the IR node and its origin.
pub(super) fn leaf_key<T: Serialize>(kind: NodeKind, node: &T, source: Option<&SourceRef>) -> u128 {
    super::key::key(
        &[b"leaf", kind.as_str().as_bytes()],
        node,
        source.map(|s| &s.origin),
        &[],
    )
}

pub(super) const ROUTE: &str = "envoy.config.route.v3.Route";
pub(super) const VIRTUAL_HOST: &str = "envoy.config.route.v3.VirtualHost";
