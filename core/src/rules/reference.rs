//! The reference rendering: the plain, obvious way from IR to Envoy resources, and the oracle the
//! fast path ([`super::render_cached`]) is compared with, byte for byte, by the golden, property
//! and fuzz tests.
//!
//! Every IR node goes through the rules of its kind, one node after the other: handlebars renders
//! the template (the `json` and `duration` helpers print JSON), the text is parsed as YAML, the
//! patch rules for the same message are merged in, the children a parent printed with
//! `{{json rendered.X}}` are put in as JSON, and the message is decoded against Envoy's schema,
//! checked against its validation rules and encoded. Children come before their parents (routes,
//! then virtual hosts, then route tables) and see each other as their encodings decoded back to
//! JSON, the `rendered` contract of rules/README.md.
//!
//! Must not use anything of the fast path: no render cache, template memo, shapes, encode plans or
//! splicing of children's bytes, and no incremental filing. Nothing is remembered between calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::node::{
    duplicate_resource, envoy_override, fill_placeholders, fill_placeholders_except, finish_patched, output,
    resource_name, route_config_head, virtual_host_head, with_rendered, Leaf, NodeRenderer, Output, PatchValue,
    Rendered, ROUTE, VIRTUAL_HOST,
};
use super::pack::Registry;
use crate::diagnostic::Diagnostic;
use crate::ir::{Ir, NodeKind, SourceRef};
use crate::snapshot::{Name, Resource, ResourceType};

/// Renders the IR through the registry's rules, the plain way (see the module's documentation).
pub fn render(ir: &Ir, registry: &Registry) -> (Rendered, Vec<Diagnostic>) {
    let mut r = Reference {
        registry,
        filed: BTreeMap::new(),
        diagnostics: Vec::new(),
    };
    // Resources are filed in this order, the first of two with one name kept: secrets, clusters,
    // endpoints, every route of every table, each table's virtual hosts and then the table, and
    // the listeners (the fast path files in the same order).
    for s in &ir.secrets {
        r.leaf(s, None);
    }
    for c in &ir.clusters {
        r.leaf(&**c, None);
    }
    for e in &ir.endpoints {
        r.leaf(e, None);
    }
    let mut routes = ir
        .route_configs
        .iter()
        .flat_map(|rc| &rc.virtual_hosts)
        .flat_map(|vh| &vh.routes)
        .map(|route| r.leaf(&**route, Some(ROUTE)))
        .collect::<Vec<_>>()
        .into_iter();
    for rc in &ir.route_configs {
        let mut virtual_hosts = Vec::new();
        for vh in &rc.virtual_hosts {
            let routes: Vec<Value> = routes.by_ref().take(vh.routes.len()).flatten().collect();
            let ctx = with_rendered(virtual_host_head(vh), json!({ "routes": routes }));
            let label = format!("virtual host `{}`", vh.name);
            virtual_hosts.extend(r.node(
                NodeKind::VirtualHost,
                ctx,
                &label,
                vh.source.as_ref(),
                Some(VIRTUAL_HOST),
            ));
        }
        let ctx = with_rendered(route_config_head(rc), json!({ "virtual_hosts": virtual_hosts }));
        r.node(
            NodeKind::RouteConfig,
            ctx,
            &format!("route table `{}`", rc.name),
            None,
            None,
        );
    }
    for l in &ir.listeners {
        r.leaf(l, None);
    }
    let resources = r
        .filed
        .into_iter()
        .map(|(ty, by_name)| (ty, by_name.into_iter().map(|(name, (res, _))| (name, res)).collect()))
        .collect();
    (Rendered { resources }, r.diagnostics)
}

struct Reference<'a> {
    registry: &'a Registry,
    /// Top-level resources by type and name, with the rule that emitted each.
    filed: BTreeMap<ResourceType, BTreeMap<Name, (Resource, Arc<str>)>>,
    diagnostics: Vec<Diagnostic>,
}

impl Reference<'_> {
    /// Renders a leaf; returns its fragments of `fragment_type` as JSON.
    fn leaf<T: Leaf>(&mut self, node: &T, fragment_type: Option<&str>) -> Vec<Value> {
        let (ctx, diagnostics) = node.full_context(self.registry);
        self.diagnostics.extend(diagnostics);
        self.node(T::KIND, ctx, &node.label(), node.source(), fragment_type)
    }

    /// Renders one node through every rule of its kind that applies, files its top-level
    /// resources, and returns its fragments of `fragment_type` (decoded back to JSON, as a
    /// parent's `rendered` shows them).
    fn node(
        &mut self,
        kind: NodeKind,
        ctx: Value,
        label: &str,
        source: Option<&SourceRef>,
        fragment_type: Option<&str>,
    ) -> Vec<Value> {
        let rendered = ctx.get("rendered").cloned().unwrap_or(Value::Null);
        let hctx = handlebars::Context::from(ctx);
        let mut node = NodeRenderer::new(self.registry, label, source);
        let mut outputs: Vec<Output> = Vec::new();
        let rules = self.registry.rules();
        for rule in rules.iter().filter(|r| r.kind == kind && !r.patch) {
            if !node.applies(rule, hctx.data()) {
                continue;
            }
            let Some(value) = node.render_plain(rule, &hctx) else {
                continue;
            };
            let mut patches = Vec::new();
            for patch in rules
                .iter()
                .filter(|r| r.kind == kind && r.patch && r.emits == rule.emits)
            {
                if node.applies(patch, hctx.data()) {
                    let p = if patch.edits.is_empty() {
                        node.render_plain(patch, &hctx).map(PatchValue::Merge)
                    } else {
                        node.render_edits(patch, &hctx)
                    };
                    if let Some(p) = p {
                        patches.push((patch, p));
                    }
                }
            }
            if let Some(o) = envoy_override(kind, rule, hctx.data()) {
                patches.push((rule, o));
            }
            // What edits may reach: everything but the children (edited through their own kind).
            let children = match kind {
                NodeKind::RouteConfig => Some("virtual_hosts"),
                NodeKind::VirtualHost => Some("routes"),
                _ => None,
            };
            let checked = finish_patched(
                &mut node,
                rule,
                value,
                patches,
                |value| fill_placeholders_except(value, &rendered, children),
                |value| {
                    fill_placeholders(value, &rendered);
                    crate::envoy::decode_checked(&rule.emits, value).map(|m| crate::envoy::encode(&m))
                },
            );
            if let Some((value, encoded)) = checked {
                outputs.push(output(rule, encoded, resource_name(&value)));
            }
        }
        self.diagnostics.extend(node.into_diagnostics());
        let mut fragments = Vec::new();
        for o in outputs {
            match o.ty {
                Some(ty) => self.file(ty, o, label, source),
                None if fragment_type == Some(o.emits.as_str()) => {
                    fragments.push(crate::envoy::bytes_to_json_proto_names(&o.emits, &o.encoded));
                }
                None => {}
            }
        }
        fragments
    }

    /// Files a top-level resource; a name already filed keeps the first and is reported.
    fn file(&mut self, ty: ResourceType, o: Output, label: &str, source: Option<&SourceRef>) {
        let by_name = self.filed.entry(ty).or_default();
        if let Some((_, existing)) = by_name.get(&o.name) {
            let d = duplicate_resource(&o.rule, label, ty, &o.name, existing, source);
            self.diagnostics.push(d);
            return;
        }
        let resource = Resource {
            bytes: o.encoded,
            version: o.version,
        };
        by_name.insert(o.name, (resource, o.rule));
    }
}
