//! Every context path a template reads, checked against its kind's context schema when the pack
//! loads: a misspelled path in a branch few nodes take is refused at start, with the template's
//! file and line, instead of rendering as nothing on the first node that takes the branch.
//!
//! The walk follows what handlebars does with the context: `each` and `with` enter a block whose
//! context is the list's item or the value (`../` climbs back out of it, `@root` starts over),
//! `if` and `unless` keep it, a partial without arguments sees the context it is included in.
//! A part whose context cannot be told (a block with block parameters, a partial given
//! arguments, `each` over something that is not a path) is not checked, never refused.
//!
//! Owns: the walk over a template's blocks, helper arguments and partials. Must not: render, or
//! know any field of a context (the schema in `context` does).

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Handlebars, Path, PathSeg, Template};

use crate::ir::NodeKind;

/// A path a template reads that its context does not have.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Misread {
    /// The template file (or partial) the path is in, and its line there.
    pub(crate) file: String,
    pub(crate) line: usize,
    /// Where the partial it is in was included from, outermost first (`file:line`).
    pub(crate) included_from: Vec<String>,
    /// What is wrong, with the closest field when there is one.
    pub(crate) message: String,
}

impl std::fmt::Display for Misread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}: {}", self.file, self.line, self.message)?;
        if !self.included_from.is_empty() {
            write!(f, " (a partial, included from {})", self.included_from.join(", then "))?;
        }
        Ok(())
    }
}

/// The context a block sees: a root-context path (`*` for a list's items or a map's values),
/// or `None` when it cannot be told.
type Scope = Option<Vec<String>>;

/// Checks every path `template` (named `file`, rendered with the context of `kind`) and the
/// partials it includes read; the first one the context does not have.
pub(crate) fn check(kind: NodeKind, file: &str, template: &Template, hbs: &Handlebars<'_>) -> Result<(), Misread> {
    let mut walk = Walk {
        kind,
        hbs,
        scopes: vec![Some(Vec::new())],
        included_from: Vec::new(),
        partials_walked: 0,
    };
    walk.template(template, file)
}

struct Walk<'a, 'h> {
    kind: NodeKind,
    hbs: &'a Handlebars<'h>,
    scopes: Vec<Scope>,
    included_from: Vec<String>,
    /// Partial inclusions followed so far (bounded: a partial that includes itself several
    /// times would otherwise take exponential time).
    partials_walked: usize,
}

/// How deep partials may include partials before the walk stops following them (handlebars
/// itself refuses a partial that includes itself without end, at render), and how many
/// inclusions in all.
const MAX_PARTIAL_DEPTH: usize = 16;
const MAX_PARTIALS_WALKED: usize = 10_000;

impl Walk<'_, '_> {
    fn template(&mut self, t: &Template, file: &str) -> Result<(), Misread> {
        for (i, element) in t.elements.iter().enumerate() {
            let line = t.mapping.get(i).map_or(0, |m| m.0);
            let at = |message: String, walk: &Self| Misread {
                file: file.to_string(),
                line,
                included_from: walk.included_from.clone(),
                message,
            };
            match element {
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                    self.expression(&h.name, &h.params, h.hash.values())
                        .map_err(|m| at(m, self))?;
                }
                TemplateElement::HelperBlock(h) => {
                    for p in h.params.iter().chain(h.hash.values()) {
                        self.param(p).map_err(|m| at(m, self))?;
                    }
                    let name = match &h.name {
                        Parameter::Name(n) => n.as_str(),
                        Parameter::Path(Path::Relative((_, raw))) => raw.as_str(),
                        _ => "",
                    };
                    let first = h.params.first();
                    let inner: Option<Scope> = match (name, first) {
                        _ if h.block_param.is_some() => Some(None),
                        ("if" | "unless", _) => None,
                        ("each", Some(Parameter::Path(p))) => Some(self.resolve(p).ok().flatten().map(|mut s| {
                            s.push("*".to_string());
                            s
                        })),
                        ("with", Some(Parameter::Path(p))) => Some(self.resolve(p).ok().flatten()),
                        _ => Some(None),
                    };
                    let entered = inner.is_some();
                    if let Some(scope) = inner {
                        self.scopes.push(scope);
                    }
                    let body = h.template.as_ref().map_or(Ok(()), |body| self.template(body, file));
                    if entered {
                        self.scopes.pop();
                    }
                    body?;
                    // `else` renders in the enclosing context.
                    if let Some(inverse) = &h.inverse {
                        self.template(inverse, file)?;
                    }
                }
                TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                    for p in d.params.iter().chain(d.hash.values()) {
                        self.param(p).map_err(|m| at(m, self))?;
                    }
                    let Parameter::Name(name) = &d.name else { continue };
                    let Some(partial) = self.hbs.get_template(name) else {
                        continue;
                    };
                    if self.included_from.len() >= MAX_PARTIAL_DEPTH || self.partials_walked >= MAX_PARTIALS_WALKED {
                        continue;
                    }
                    self.partials_walked += 1;
                    // Arguments change what the partial's paths name: not followed.
                    let opaque = !d.params.is_empty() || !d.hash.is_empty();
                    if opaque {
                        self.scopes.push(None);
                    }
                    self.included_from.push(format!("{file}:{line}"));
                    let result = self.template(partial, &format!("_partials/{name}.hbs"));
                    self.included_from.pop();
                    if opaque {
                        self.scopes.pop();
                    }
                    result?;
                    if let Some(block) = &d.template {
                        self.template(block, file)?;
                    }
                }
                // Text, comments, decorators, and what a later handlebars adds.
                _ => {}
            }
        }
        Ok(())
    }

    /// `{{x}}` or `{{helper args}}`: the path, or the helper's arguments.
    fn expression<'p>(
        &self,
        name: &Parameter,
        params: &'p [Parameter],
        hash: impl Iterator<Item = &'p Parameter>,
    ) -> Result<(), String> {
        match name {
            // A one-segment path names a helper when there is one by that name.
            Parameter::Path(Path::Relative((segs, raw)))
                if segs.len() == 1 && super::memo::HELPERS.contains(&raw.as_str()) => {}
            Parameter::Path(p) => self.read(p)?,
            _ => {}
        }
        for p in params.iter().chain(hash) {
            self.param(p)?;
        }
        Ok(())
    }

    fn param(&self, p: &Parameter) -> Result<(), String> {
        match p {
            Parameter::Path(path) => self.read(path),
            Parameter::Subexpression(s) => match s.element.as_ref() {
                TemplateElement::Expression(h) => self.expression(&h.name, &h.params, h.hash.values()),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn read(&self, p: &Path) -> Result<(), String> {
        let Path::Relative((_, raw)) = p else { return Ok(()) };
        match self.resolve(p)? {
            Some(path) if !path.is_empty() => super::context::check_path(self.kind, &path.join(".")).map_err(|e| {
                if raw.contains('.') || raw.contains('/') || self.scopes.len() > 1 {
                    format!("`{raw}` reads {e}")
                } else {
                    e
                }
            }),
            _ => Ok(()),
        }
    }

    /// The root-context path `p` names in the current block: `None` when the block's context
    /// cannot be told (or `p` is a loop's own data, `@index` and such); `Err` when `p` climbs
    /// above the template's context.
    fn resolve(&self, p: &Path) -> Result<Scope, String> {
        let (segs, raw) = match p {
            Path::Local(_) => return Ok(None),
            Path::Relative((segs, raw)) => (segs, raw),
        };
        let names: Vec<String> = segs
            .iter()
            .filter_map(|s| match s {
                PathSeg::Named(n) => Some(n.trim_start_matches('[').trim_end_matches(']').to_string()),
                _ => None,
            })
            .collect();
        let base = if raw.starts_with("@root") {
            Some(Vec::new())
        } else if raw.starts_with('@') {
            // `@index`, `@key`, `@first`, `@last` (and `@../index`).
            return Ok(None);
        } else {
            let ups = raw.matches("../").count();
            match self.scopes.len().checked_sub(1 + ups) {
                Some(i) => self.scopes[i].clone(),
                None => {
                    return Err(format!(
                        "`{raw}` climbs {ups} block(s) up, above the template's own context (it is {} deep here)",
                        self.scopes.len() - 1
                    ))
                }
            }
        };
        Ok(base.map(|mut b| {
            b.extend(names);
            b
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_text(kind: NodeKind, text: &str, partials: &[(&str, &str)]) -> Result<(), Misread> {
        let mut hbs = Handlebars::new();
        for (name, p) in partials {
            hbs.register_partial(name, *p).unwrap();
        }
        hbs.register_template_string("t", text).unwrap();
        check(kind, "t.yaml.hbs", hbs.get_template("t").unwrap(), &hbs)
    }

    #[test]
    fn fields_of_the_context_pass_and_a_misspelling_names_line_and_closest_field() {
        let ok = "name: {{json name}}\n{{#if timeout_ms}}\ntimeout: {{duration timeout_ms}}\n{{/if}}\n";
        assert_eq!(check_text(NodeKind::Route, ok, &[]), Ok(()));
        let bad =
            "name: {{json name}}\n{{#if retry_policy}}\n{{#if (eq retry_policy.num_retrys 3)}}x{{/if}}\n{{/if}}\n";
        let e = check_text(NodeKind::Route, bad, &[]).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("t.yaml.hbs", 3), "{e}");
        assert!(
            e.message.contains("num_retrys") && e.message.contains("num_retries"),
            "{e}"
        );
    }

    #[test]
    fn loops_enter_the_items_and_dotdot_climbs_back() {
        let ok = "{{#each filter_chains}}{{json server_names}}{{json ../stat_prefix}}{{#if @first}}{{@index}}{{/if}}{{/each}}";
        assert_eq!(check_text(NodeKind::Listener, ok, &[]), Ok(()));
        let bad = "{{#each filter_chains}}\n{{#if ../stat_prefx}}{{/if}}\n{{/each}}";
        let e = check_text(NodeKind::Listener, bad, &[]).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("stat_prefix"), "{e}");
        let bad_item = "{{#each filter_chains}}{{json server_nmes}}{{/each}}";
        let e = check_text(NodeKind::Listener, bad_item, &[]).unwrap_err();
        assert!(
            e.message.contains("filter_chains") && e.message.contains("server_names"),
            "{e}"
        );
        let climbs = "{{#each filter_chains}}{{../../name}}{{/each}}";
        assert!(check_text(NodeKind::Listener, climbs, &[]).is_err());
        // `else` of a loop is in the enclosing context.
        let inverse = "{{#each filter_chains}}{{else}}{{json stat_prefix}}{{/each}}";
        assert_eq!(check_text(NodeKind::Listener, inverse, &[]), Ok(()));
    }

    #[test]
    fn partials_see_the_context_they_are_included_in() {
        let partial = [("stat", "{{json stat_prefx}}")];
        let e = check_text(NodeKind::Listener, "a\n{{> stat}}\n", &partial).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("_partials/stat.hbs", 1), "{e}");
        assert_eq!(e.included_from, ["t.yaml.hbs:2"]);
        // With arguments, what its paths name is not followed.
        assert_eq!(check_text(NodeKind::Listener, "{{> stat x=name}}", &partial), Ok(()));
        // Included in a loop, a partial reads the loop's item.
        let partial = [("names", "{{json server_names}}")];
        assert_eq!(
            check_text(
                NodeKind::Listener,
                "{{#each filter_chains}}{{> names}}{{/each}}",
                &partial
            ),
            Ok(())
        );
        assert!(check_text(NodeKind::Listener, "{{> names}}", &partial).is_err());
        // A partial that includes itself, several times over: the walk ends.
        let selfish = [("p", "{{> p}}{{> p}}{{> p}}{{> p}}{{json name}}")];
        assert_eq!(check_text(NodeKind::Listener, "{{> p}}", &selfish), Ok(()));
    }

    #[test]
    fn what_cannot_be_told_is_not_refused() {
        for text in [
            "{{#each filter_chains as |c|}}{{c.anything}}{{/each}}",
            "{{#each (lookup rendered \"http_filters\")}}{{anything}}{{/each}}",
            "{{#with rendered.http_filters}}{{json anything}}{{/with}}",
            "{{json rendered.http_filters.0.anything}}",
            "{{@root.name}}{{this}}",
        ] {
            assert_eq!(check_text(NodeKind::Listener, text, &[]), Ok(()), "{text}");
        }
        let e = check_text(NodeKind::Listener, "{{@root.nme}}", &[]).unwrap_err();
        assert!(e.message.contains("name"), "{e}");
    }
}
