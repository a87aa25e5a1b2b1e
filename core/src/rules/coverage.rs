//! Which operator rules apply to no node of a configuration. A `select` or `when` that matches
//! nothing (a misspelled namespace glob, a label no object carries) otherwise changes nothing
//! and says nothing. For the command line (`translate --rules`, `rules test`), not a
//! translation's diagnostics: in a running configuration a rule for objects that do not exist
//! yet is normal, and would warn forever.
//!
//! Owns: evaluating rules' `select` and `when` over every IR node. Must not: render.

use serde_json::Value;

use super::pack::{Registry, Rule};
use crate::ir::{Ir, NodeKind, SourceRef};

/// The rules of packs other than `core` that no node of `ir` selects (by kind, `select` and
/// `when`), in table order. A `when` that reads what a node's context lacks (a parent's
/// `rendered` children, not in the context here) counts as applying: no false alarms.
pub fn unapplied<'r>(ir: &Ir, registry: &'r Registry) -> Vec<&'r Rule> {
    let mut pending: Vec<&Rule> = registry.rules().iter().filter(|r| r.pack != "core").collect();
    let mut visit = |kinds: &[NodeKind], ctx: Value, source: Option<&SourceRef>| {
        pending.retain(|rule| {
            let applies = kinds.contains(&rule.kind)
                && rule.select.as_ref().is_none_or(|s| s.matches(source))
                && rule.when.as_ref().is_none_or(|(_, c)| c.eval(&ctx).unwrap_or(true));
            !applies
        });
    };
    let json = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
    for s in &ir.secrets {
        visit(&[NodeKind::Secret], json(serde_json::to_value(s)), s.source.as_ref());
    }
    for c in &ir.clusters {
        visit(
            &[NodeKind::Cluster],
            json(serde_json::to_value(&**c)),
            c.source.as_ref(),
        );
    }
    for e in &ir.endpoints {
        visit(&[NodeKind::Endpoints], json(serde_json::to_value(e)), e.source.as_ref());
    }
    for rc in &ir.route_configs {
        visit(&[NodeKind::RouteConfig], json(serde_json::to_value(rc)), None);
        for vh in &rc.virtual_hosts {
            visit(
                &[NodeKind::VirtualHost],
                json(serde_json::to_value(vh)),
                vh.source.as_ref(),
            );
            for r in &vh.routes {
                visit(&[NodeKind::Route], json(serde_json::to_value(&**r)), r.source.as_ref());
            }
        }
    }
    for l in &ir.listeners {
        visit(
            &[NodeKind::Listener, NodeKind::HttpFilter],
            json(serde_json::to_value(l)),
            l.source.as_ref(),
        );
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_whose_select_or_when_matches_nothing_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pack.yaml"),
            "name: p\nrules:\n\
             - id: p.payments\n  kind: route\n  emits: envoy.config.route.v3.Route\n  patch: true\n  template: t.hbs\n  select: {namespace: paymets}\n\
             - id: p.all\n  kind: route\n  emits: envoy.config.route.v3.Route\n  patch: true\n  template: t.hbs\n\
             - id: p.redirects\n  kind: route\n  emits: envoy.config.route.v3.Route\n  patch: true\n  template: t.hbs\n  when: action == \"redirect\"\n\
             - id: p.filter\n  kind: http_filter\n  slot: lua\n  emits: envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter\n  template: f.hbs\n  when: cors\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("t.hbs"), "{}\n").unwrap();
        std::fs::write(dir.path().join("f.hbs"), "name: x\n").unwrap();
        let registry = Registry::with_packs(&[dir.path().to_path_buf()]).unwrap();
        let input = "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: q\n  namespace: payments\nspec:\n  hostname: \"*\"\n  prefix: /q/\n  service: q\n";
        let loaded = crate::source::parse_text("in.yaml", input);
        let t = crate::translate(&loaded, &registry, &crate::Options::default());
        let ids: Vec<&str> = unapplied(&t.ir, &registry).iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["p.payments", "p.redirects", "p.filter"]);
    }
}
