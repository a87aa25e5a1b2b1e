//! Loading and checking rule packs.
//!
//! Everything about a pack is checked when it is loaded, before any input is translated: the table
//! parses, every `kind` is an IR node kind, every `emits` is a message in Envoy's descriptor pool,
//! every `when` parses, every template exists and compiles, and no template file is left unused.
//! A bad pack stops attache at startup with an error naming the pack, rule and file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde::Deserialize;

use crate::ir::NodeKind;
use crate::lang::when::{self, Condition};

/// Prefix of the placeholder that `{{json rendered.X}}` prints (the `json` helper): the
/// renderer swaps it for the children's rendered values after the parent's YAML is parsed.
pub(crate) const PLACEHOLDER: &str = "\u{1}attache-placeholder:";

/// The built-in pack's files, compiled into the binary (a test checks this list against
/// `rules/core/` so that it cannot go stale).
pub const CORE_FILES: &[(&str, &str)] = &[
    ("pack.yaml", include_str!("../../../rules/core/pack.yaml")),
    (
        "cluster/cluster.yaml.hbs",
        include_str!("../../../rules/core/cluster/cluster.yaml.hbs"),
    ),
    (
        "endpoints/cluster_load_assignment.yaml.hbs",
        include_str!("../../../rules/core/endpoints/cluster_load_assignment.yaml.hbs"),
    ),
    (
        "secret/secret.yaml.hbs",
        include_str!("../../../rules/core/secret/secret.yaml.hbs"),
    ),
    (
        "http_filter/grpc_http1_bridge.yaml.hbs",
        include_str!("../../../rules/core/http_filter/grpc_http1_bridge.yaml.hbs"),
    ),
    (
        "http_filter/grpc_web.yaml.hbs",
        include_str!("../../../rules/core/http_filter/grpc_web.yaml.hbs"),
    ),
    (
        "http_filter/grpc_stats.yaml.hbs",
        include_str!("../../../rules/core/http_filter/grpc_stats.yaml.hbs"),
    ),
    (
        "http_filter/lua.yaml.hbs",
        include_str!("../../../rules/core/http_filter/lua.yaml.hbs"),
    ),
    (
        "http_filter/compression.yaml.hbs",
        include_str!("../../../rules/core/http_filter/compression.yaml.hbs"),
    ),
    (
        "http_filter/brotli.yaml.hbs",
        include_str!("../../../rules/core/http_filter/brotli.yaml.hbs"),
    ),
    (
        "http_filter/buffer.yaml.hbs",
        include_str!("../../../rules/core/http_filter/buffer.yaml.hbs"),
    ),
    (
        "http_filter/rbac.yaml.hbs",
        include_str!("../../../rules/core/http_filter/rbac.yaml.hbs"),
    ),
    (
        "http_filter/cors.yaml.hbs",
        include_str!("../../../rules/core/http_filter/cors.yaml.hbs"),
    ),
    (
        "http_filter/ext_authz.yaml.hbs",
        include_str!("../../../rules/core/http_filter/ext_authz.yaml.hbs"),
    ),
    (
        "http_filter/ratelimit.yaml.hbs",
        include_str!("../../../rules/core/http_filter/ratelimit.yaml.hbs"),
    ),
    (
        "http_filter/error_responses.yaml.hbs",
        include_str!("../../../rules/core/http_filter/error_responses.yaml.hbs"),
    ),
    (
        "http_filter/route_error_responses.yaml.hbs",
        include_str!("../../../rules/core/http_filter/route_error_responses.yaml.hbs"),
    ),
    (
        "http_filter/router.yaml.hbs",
        include_str!("../../../rules/core/http_filter/router.yaml.hbs"),
    ),
    (
        "listener/listener.yaml.hbs",
        include_str!("../../../rules/core/listener/listener.yaml.hbs"),
    ),
    (
        "route_config/route_configuration.yaml.hbs",
        include_str!("../../../rules/core/route_config/route_configuration.yaml.hbs"),
    ),
    (
        "virtual_host/virtual_host.yaml.hbs",
        include_str!("../../../rules/core/virtual_host/virtual_host.yaml.hbs"),
    ),
    (
        "route/route.yaml.hbs",
        include_str!("../../../rules/core/route/route.yaml.hbs"),
    ),
    (
        "route/redirect.yaml.hbs",
        include_str!("../../../rules/core/route/redirect.yaml.hbs"),
    ),
    (
        "route/https_redirect.yaml.hbs",
        include_str!("../../../rules/core/route/https_redirect.yaml.hbs"),
    ),
    (
        "_partials/header_matcher.hbs",
        include_str!("../../../rules/core/_partials/header_matcher.hbs"),
    ),
    (
        "_partials/route_match.hbs",
        include_str!("../../../rules/core/_partials/route_match.hbs"),
    ),
    (
        "_partials/query_matcher.hbs",
        include_str!("../../../rules/core/_partials/query_matcher.hbs"),
    ),
    (
        "_partials/error_body.hbs",
        include_str!("../../../rules/core/_partials/error_body.hbs"),
    ),
    (
        "_partials/error_matcher.hbs",
        include_str!("../../../rules/core/_partials/error_matcher.hbs"),
    ),
    (
        "_partials/ip_policy_rules.hbs",
        include_str!("../../../rules/core/_partials/ip_policy_rules.hbs"),
    ),
    (
        "_partials/header_value_option.hbs",
        include_str!("../../../rules/core/_partials/header_value_option.hbs"),
    ),
];

/// A rule pack could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// A file of the pack could not be read.
    #[error("rule pack {pack}: cannot read {file}: {source}")]
    Io {
        /// Pack name or directory.
        pack: String,
        /// File concerned.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The pack is inconsistent.
    #[error("rule pack {pack}: {file}: {message}")]
    Invalid {
        /// Pack name or directory.
        pack: String,
        /// File concerned.
        file: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    name: String,
    #[serde(default)]
    #[allow(dead_code, reason = "documentation for humans; shown by nothing yet")]
    description: String,
    /// The template context version the pack was written for (`context::VERSION`).
    context: Option<String>,
    rules: Vec<RuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    id: String,
    kind: String,
    emits: String,
    /// Required, except for a rule with `edits` (whose templates are in its edits).
    template: Option<String>,
    when: Option<String>,
    #[serde(default)]
    patch: bool,
    /// Which nodes, by their source object.
    select: Option<super::edit::Select>,
    /// Edits at paths of the other rules' output (makes the rule a patch rule).
    edits: Option<Vec<EditEntry>>,
    /// `http_filter` rules: a named place in the chain ([`SLOTS`]) ...
    slot: Option<String>,
    /// ... or a number (the slots' numbers show where it falls).
    order: Option<i32>,
}

/// One edit as written: exactly one operation key with its path, and a `template` or a `value`
/// (none for `remove`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditEntry {
    add: Option<String>,
    replace: Option<String>,
    remove: Option<String>,
    insert_before: Option<String>,
    insert_after: Option<String>,
    template: Option<String>,
    value: Option<serde_json::Value>,
}

/// The named places of the HTTP filter chain, in Emissary's order (`ir.py` and
/// `irambassador.py` add its filters in this order), with the number that sorts each. An
/// `http_filter` rule takes a slot or an `order` number; rules with equal numbers run in the
/// order of their ids, so the chain never depends on the order packs were given in.
pub const SLOTS: &[(&str, i32)] = &[
    ("grpc_http1_bridge", 100),
    ("grpc_web", 200),
    ("grpc_stats", 300),
    ("lua", 400),
    ("compression", 500),
    ("buffer", 600),
    ("rbac", 700),
    ("cors", 800),
    ("ext_authz", 1000),
    ("ratelimit", 1100),
    ("error_responses", 1200),
    ("router", 10_000),
];

/// The message an `http_filter` rule emits.
pub(crate) const HTTP_FILTER: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter";

/// One rule of the effective table.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique id (`core.route`); a later pack's rule with the same id replaces this one.
    pub id: String,
    /// The pack that defined it.
    pub pack: String,
    /// IR node kind it applies to.
    pub kind: NodeKind,
    /// Full name of the Envoy message it emits.
    pub emits: String,
    /// `<pack name>/<template path inside the pack>`, for messages.
    pub template: String,
    /// The condition, as written and parsed.
    pub when: Option<(String, Condition)>,
    /// Whether the output is merged into the output of the other rules for the same node and
    /// message instead of being a message of its own (also true for a rule with `edits`).
    pub patch: bool,
    /// Which nodes it applies to, by their source object (besides `when`).
    pub select: Option<super::edit::Select>,
    /// Its edits, in order (empty for a plain rule or a merge patch).
    pub edits: Vec<super::edit::Edit>,
    /// For an `http_filter` rule: its place in the chain (a slot's number, or its `order`).
    pub order: Option<i32>,
    /// Name the template is registered under.
    pub(crate) template_key: String,
    /// Whether the template or condition reads `rendered` other than as `{{json rendered.X}}`
    /// (which only prints a placeholder for the renderer to splice).
    pub(crate) reads_rendered: bool,
    /// `id`, shared by everything the rule renders.
    pub(crate) shared_id: std::sync::Arc<str>,
}

/// The effective rule table and its compiled templates. Immutable once loaded: what rendering
/// learns (memo, shapes, caches) is kept by the caller's `RenderCache`.
#[derive(Debug)]
pub struct Registry {
    pub(crate) rules: Vec<Rule>,
    pub(crate) hbs: Handlebars<'static>,
    /// Whether some partial reads `rendered` (then every rule may, through it).
    partials_read_rendered: bool,
}

fn invalid(pack: &str, file: &str, message: impl Into<String>) -> PackError {
    PackError::Invalid {
        pack: pack.to_string(),
        file: file.to_string(),
        message: message.into(),
    }
}

impl Registry {
    /// The built-in `core` pack alone.
    ///
    /// # Errors
    /// Only if the built-in pack is broken (a test keeps it from being).
    pub fn core() -> Result<Registry, PackError> {
        let mut registry = Registry {
            rules: Vec::new(),
            hbs: new_handlebars(),
            partials_read_rendered: false,
        };
        registry.add_pack(
            "core",
            &|file| {
                CORE_FILES
                    .iter()
                    .find(|(p, _)| *p == file)
                    .map(|(_, text)| (*text).to_string())
                    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not in the built-in pack"))
            },
            &CORE_FILES.iter().map(|(p, _)| (*p).to_string()).collect::<Vec<_>>(),
        )?;
        Ok(registry)
    }

    /// The built-in pack plus operator packs, applied in order.
    ///
    /// # Errors
    /// A [`PackError`] naming the pack and file that is wrong.
    pub fn with_packs(dirs: &[PathBuf]) -> Result<Registry, PackError> {
        let mut registry = Self::core()?;
        for dir in dirs {
            registry.add_dir(dir)?;
        }
        Ok(registry)
    }

    /// Whether a rule for `kind` reads its node's rendered children (so they must be given to it
    /// as JSON).
    pub(crate) fn reads_rendered(&self, kind: NodeKind) -> bool {
        self.partials_read_rendered || self.rules.iter().any(|r| r.kind == kind && r.reads_rendered)
    }

    /// The effective rules, in table order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The HTTP filter table: the `http_filter` rules in chain order (by number, then id).
    pub fn http_filters(&self) -> Vec<&Rule> {
        let mut rules: Vec<&Rule> = self.rules.iter().filter(|r| r.kind == NodeKind::HttpFilter).collect();
        rules.sort_by(|a, b| (a.order, &a.id).cmp(&(b.order, &b.id)));
        rules
    }

    /// Adds a pack from a directory.
    ///
    /// # Errors
    /// A [`PackError`] naming the pack and file that is wrong.
    pub fn add_dir(&mut self, dir: &Path) -> Result<(), PackError> {
        let pack_label = dir.display().to_string();
        let mut files = Vec::new();
        list_files(dir, dir, &mut files).map_err(|source| PackError::Io {
            pack: pack_label.clone(),
            file: dir.display().to_string(),
            source,
        })?;
        let read = |file: &str| std::fs::read_to_string(dir.join(file));
        self.add_pack(&pack_label, &read, &files)
    }

    fn add_pack(
        &mut self,
        label: &str,
        read: &dyn Fn(&str) -> std::io::Result<String>,
        files: &[String],
    ) -> Result<(), PackError> {
        let io = |file: &str, source| PackError::Io {
            pack: label.to_string(),
            file: file.to_string(),
            source,
        };
        let text = read("pack.yaml").map_err(|e| io("pack.yaml", e))?;
        // `when: !x` is a YAML tag, not a negation: the condition would silently vanish.
        if let Some((n, _)) = text.lines().enumerate().find(|(_, l)| {
            l.trim_start()
                .trim_start_matches("- ")
                .strip_prefix("when:")
                .is_some_and(|rest| rest.trim_start().starts_with('!'))
        }) {
            return Err(invalid(
                label,
                "pack.yaml",
                format!(
                    "line {}: quote a `when` that starts with `!` (`when: \"!tcp\"`): YAML reads an unquoted `!` as a tag",
                    n + 1
                ),
            ));
        }
        let doc = crate::source::yaml::parse_one(&text)
            .map_err(|e| invalid(label, "pack.yaml", format!("line {}: {}", e.line, e.message)))?
            .ok_or_else(|| invalid(label, "pack.yaml", "empty file"))?;
        let pack: PackFile = serde_path_to_error::deserialize(doc.to_json())
            .map_err(|e| invalid(label, "pack.yaml", format!("at `{}`: {}", e.path(), e.inner())))?;
        if let Some(v) = pack.context.as_deref().filter(|v| *v != super::context::VERSION) {
            return Err(invalid(
                label,
                "pack.yaml",
                format!(
                    "`context: {v}`: this attache gives templates the context {} (rules/README.md says what changed; `attache rules schema` prints it)",
                    super::context::VERSION
                ),
            ));
        }
        let name = pack.name;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(invalid(
                label,
                "pack.yaml",
                format!("pack name `{name}` must be non-empty and use only letters, digits, `-` and `_`"),
            ));
        }
        // Partials first: templates may include them.
        for file in files.iter().filter(|f| f.starts_with("_partials/")) {
            let text = read(file).map_err(|e| io(file, e))?;
            let partial = file.trim_start_matches("_partials/").trim_end_matches(".hbs");
            self.partials_read_rendered |= reads_rendered(&text);
            self.hbs
                .register_partial(partial, text.trim_end())
                .map_err(|e| invalid(label, file, e.to_string()))?;
        }
        let mut ids = BTreeSet::new();
        let mut used_templates = BTreeSet::new();
        for entry in pack.rules {
            let at = format!("pack.yaml: rule `{}`", entry.id);
            if !ids.insert(entry.id.clone()) {
                return Err(invalid(label, &at, "rule id used twice in this pack"));
            }
            let kind = NodeKind::from_key(&entry.kind).ok_or_else(|| {
                let kinds: Vec<_> = NodeKind::ALL.iter().map(|k| k.as_str()).collect();
                invalid(
                    label,
                    &at,
                    format!("unknown kind `{}` (one of: {})", entry.kind, kinds.join(", ")),
                )
            })?;
            if crate::envoy::message(&entry.emits).is_none() {
                return Err(invalid(
                    label,
                    &at,
                    format!("`emits: {}` is not an Envoy message type known to attache", entry.emits),
                ));
            }
            let order = filter_order(&entry, label, &at)?;
            let when = match entry.when {
                Some(text) => {
                    let c = when::parse(&text).map_err(|e| invalid(label, &at, format!("`when`: {e}")))?;
                    // Every path it reads, against the kind's context: a misspelling is found
                    // here, not on the first node that takes the branch.
                    for path in c.paths() {
                        super::context::check_path(kind, &path)
                            .map_err(|e| invalid(label, &at, format!("`when: {text}`: {e}")))?;
                    }
                    Some((text, c))
                }
                None => None,
            };
            let mut reads = when.as_ref().is_some_and(|(text, _)| text.contains("rendered"));
            let mut register = |file: &str, hbs: &mut Handlebars<'static>| -> Result<String, PackError> {
                let text = read(file).map_err(|e| io(&format!("{file} (the template of rule `{}`)", entry.id), e))?;
                reads |= reads_rendered(&text);
                let key = format!("{name}:{file}");
                hbs.register_template_string(&key, text)
                    .map_err(|e| invalid(label, file, e.to_string()))?;
                used_templates.insert(file.to_string());
                Ok(key)
            };
            let (template, template_key, edits) = match (&entry.template, entry.edits) {
                (Some(file), None) => (format!("{name}/{file}"), register(file, &mut self.hbs)?, Vec::new()),
                (None, Some(list)) => {
                    if entry.patch {
                        return Err(invalid(
                            label,
                            &at,
                            "a rule with `edits` is a patch already: drop `patch: true`",
                        ));
                    }
                    let message =
                        crate::envoy::message(&entry.emits).ok_or_else(|| invalid(label, &at, "unknown message"))?;
                    let mut edits = Vec::new();
                    for (n, e) in list.into_iter().enumerate() {
                        let at = format!("{at}: edits[{n}]");
                        edits.push(edit_of(e, &message, kind, &at, label, &mut |f| {
                            register(f, &mut self.hbs)
                        })?);
                    }
                    if edits.is_empty() {
                        return Err(invalid(label, &at, "`edits` is empty"));
                    }
                    (format!("{name}/pack.yaml"), String::new(), edits)
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        label,
                        &at,
                        "a rule has a `template` or `edits`, not both (each edit names its own template)",
                    ))
                }
                (None, None) => return Err(invalid(
                    label,
                    &at,
                    "a rule needs a `template` (a message, or with `patch: true` one merged into others) or `edits`",
                )),
            };
            let rule = Rule {
                shared_id: entry.id.as_str().into(),
                id: entry.id,
                pack: name.clone(),
                kind,
                emits: entry.emits,
                template,
                when,
                patch: entry.patch || !edits.is_empty(),
                select: entry.select,
                edits,
                order,
                template_key,
                reads_rendered: reads,
            };
            if let Some(existing) = self.rules.iter_mut().find(|r| r.id == rule.id) {
                tracing::info!(rule = %rule.id, pack = %name, "rule pack overrides a rule");
                *existing = rule;
            } else {
                self.rules.push(rule);
            }
        }
        // Every path this pack's templates read, against their kind's context (partials
        // followed): a misspelling is refused here, not found on the first node that takes its
        // branch.
        let prefix = format!("{name}:");
        for rule in &self.rules {
            let edit_templates = rule.edits.iter().filter_map(|e| match &e.value {
                super::edit::EditValue::Template(key) => Some(key),
                _ => None,
            });
            for key in std::iter::once(&rule.template_key).chain(edit_templates) {
                let (Some(file), Some(template)) = (key.strip_prefix(&prefix), self.hbs.get_template(key)) else {
                    continue;
                };
                super::template_paths::check(rule.kind, file, template, &self.hbs).map_err(|m| {
                    invalid(
                        label,
                        &m.file,
                        format!(
                            "line {}: {} (rule `{}`, a `{}` rule: `attache rules schema {}` lists its context){}",
                            m.line,
                            m.message,
                            rule.id,
                            rule.kind.as_str(),
                            rule.kind.as_str(),
                            if m.included_from.is_empty() {
                                String::new()
                            } else {
                                format!("; the partial is included from {}", m.included_from.join(", then "))
                            }
                        ),
                    )
                })?;
            }
        }
        if let Some(orphan) = files
            .iter()
            .find(|f| f.ends_with(".hbs") && !f.starts_with("_partials/") && !used_templates.contains(*f))
        {
            return Err(invalid(
                label,
                orphan,
                "template is not used by any rule in pack.yaml (put shared snippets in _partials/)",
            ));
        }
        Ok(())
    }
}

/// One edit, checked: one operation, a path that parses and fits the emitted message (see
/// `edit::check_path`), a value where the operation needs one.
fn edit_of(
    e: EditEntry,
    message: &prost_reflect::MessageDescriptor,
    kind: NodeKind,
    at: &str,
    label: &str,
    register: &mut dyn FnMut(&str) -> Result<String, PackError>,
) -> Result<super::edit::Edit, PackError> {
    use super::edit::{Edit, EditValue, Op};
    let ops: Vec<(Op, String)> = [
        (Op::Add, e.add),
        (Op::Replace, e.replace),
        (Op::Remove, e.remove),
        (Op::InsertBefore, e.insert_before),
        (Op::InsertAfter, e.insert_after),
    ]
    .into_iter()
    .filter_map(|(op, path)| Some((op, path?)))
    .collect();
    let [(op, text)] = <[(Op, String); 1]>::try_from(ops).map_err(|_| {
        invalid(
            label,
            at,
            "an edit has exactly one of `add`, `replace`, `remove`, `insert_before`, `insert_after` (with its path)",
        )
    })?;
    let path = crate::lang::patch_path::parse(&text)
        .map_err(|err| invalid(label, at, format!("`{}: {text}`: {err}", op.as_str())))?;
    let children = match kind {
        NodeKind::RouteConfig => Some("virtual_hosts"),
        NodeKind::VirtualHost => Some("routes"),
        _ => None,
    };
    super::edit::check_path(message, &path, children)
        .map_err(|err| invalid(label, at, format!("`{}: {text}`: {err}", op.as_str())))?;
    if matches!(op, Op::InsertBefore | Op::InsertAfter)
        && !matches!(
            path.steps.last().and_then(|s| s.selectors.last()),
            Some(crate::lang::patch_path::Selector::Element(..) | crate::lang::patch_path::Selector::All)
        )
    {
        return Err(invalid(
            label,
            at,
            format!(
                "`{}: {text}`: the path must end in a list element chosen by content, e.g. `http_filters[name=\"envoy.filters.http.router\"]`",
                op.as_str()
            ),
        ));
    }
    let value = match (op, e.template, e.value) {
        (Op::Remove, None, None) => EditValue::None,
        (Op::Remove, _, _) => return Err(invalid(label, at, "`remove` takes no `template` or `value`")),
        (_, Some(file), None) => EditValue::Template(register(&file)?),
        (_, None, Some(v)) => EditValue::Literal(v),
        (_, Some(_), Some(_)) => return Err(invalid(label, at, "an edit has a `template` or a `value`, not both")),
        (_, None, None) => {
            return Err(invalid(
                label,
                at,
                format!(
                    "`{}` needs a `template` (rendered with the node's context) or a `value`",
                    op.as_str()
                ),
            ))
        }
    };
    Ok(Edit { op, path, value })
}

/// The place of an `http_filter` rule in the chain, checked: exactly one of `slot` (a known one)
/// and `order`, the HttpFilter message, no `patch`; neither for other kinds.
fn filter_order(entry: &RuleEntry, label: &str, at: &str) -> Result<Option<i32>, PackError> {
    let slots = || SLOTS.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ");
    if entry.kind != NodeKind::HttpFilter.as_str() {
        if entry.slot.is_some() || entry.order.is_some() {
            return Err(invalid(
                label,
                at,
                format!(
                    "`slot` and `order` place an `http_filter` rule in the chain; this rule's kind is `{}`",
                    entry.kind
                ),
            ));
        }
        return Ok(None);
    }
    if entry.emits != HTTP_FILTER {
        return Err(invalid(
            label,
            at,
            format!(
                "an `http_filter` rule emits `{HTTP_FILTER}` (one filter: `name` and `typed_config`), not `{}`",
                entry.emits
            ),
        ));
    }
    if entry.patch || entry.edits.is_some() {
        return Err(invalid(
            label,
            at,
            "an `http_filter` rule cannot be a patch: replace the filter's rule by its id, or add a filter of your own",
        ));
    }
    match (&entry.slot, entry.order) {
        (Some(slot), None) => SLOTS
            .iter()
            .find(|(s, _)| s == slot)
            .map(|(_, n)| Some(*n))
            .ok_or_else(|| invalid(label, at, format!("unknown slot `{slot}` (one of: {})", slots()))),
        (None, Some(n)) => Ok(Some(n)),
        (Some(_), Some(_)) => Err(invalid(label, at, "give `slot` or `order`, not both")),
        (None, None) => Err(invalid(
            label,
            at,
            format!(
                "an `http_filter` rule needs its place in the chain: `slot` (one of: {}) or `order` (a number; the slots' numbers are in rules/README.md)",
                slots()
            ),
        )),
    }
}

/// Whether a template mentions `rendered` anywhere but in `{{json rendered.<field>}}`.
fn reads_rendered(template: &str) -> bool {
    let mut rest = template;
    while let Some(at) = rest.find("rendered") {
        let before = rest[..at].trim_end();
        let after = &rest[at + "rendered".len()..];
        let field_len = after.strip_prefix('.').map(|f| {
            f.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(f.len())
        });
        let closes = field_len.is_some_and(|n| {
            n > 0 && {
                let tail = after[1 + n..].trim_start();
                tail.starts_with("}}") || tail.starts_with("~}}")
            }
        });
        let before = before.strip_suffix("@root.").unwrap_or(before).trim_end();
        let opens = before
            .strip_suffix("json")
            .is_some_and(|b| b.ends_with("{{") || b.ends_with("{{~"));
        if !(opens && closes) {
            return true;
        }
        rest = after;
    }
    false
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let p = e.path();
        if e.file_type()?.is_dir() {
            list_files(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

fn new_handlebars() -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    h.register_escape_fn(handlebars::no_escape);
    h.register_helper("json", Box::new(json_helper));
    h.register_helper("duration", Box::new(duration_helper));
    h.register_helper("join", Box::new(join_helper));
    h
}

/// `(join list ", ")`.
mod join {
    handlebars::handlebars_helper!(join_helper: |items: array, separator: str| {
        items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(separator)
    });
}
use join::join_helper;

/// Strict mode does not cover helper parameters: a misspelled `{{json nmae}}` would render
/// `null`. Make it the same error a misspelled `{{nmae}}` is.
fn missing_is_an_error(helper: &str, param: &handlebars::PathAndJson<'_>) -> Result<(), handlebars::RenderError> {
    if param.is_value_missing() {
        let path = param.relative_path().cloned().unwrap_or_default();
        return Err(handlebars::RenderErrorReason::Other(format!(
            "`{path}` (in `{{{{{helper} {path}}}}}`) is not a field of this node's context"
        ))
        .into());
    }
    Ok(())
}

/// `{{json value}}`: the value as JSON (strings quoted and escaped), which is valid YAML too.
fn json_helper(
    h: &handlebars::Helper<'_>,
    _: &Handlebars<'_>,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext<'_, '_>,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let param = h
        .param(0)
        .ok_or_else(|| handlebars::RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
    missing_is_an_error("json", param)?;
    // Rendered children (`{{json rendered.routes}}`) can be large: instead of printing and parsing
    // them again, print a placeholder that the renderer swaps for the value after parsing.
    // (`@root.rendered.X` inside a loop: the node's own rendered children too.)
    let own = |p: &String| p.strip_prefix("@root.").unwrap_or(p).starts_with("rendered.");
    if let Some(path) = param
        .relative_path()
        .filter(|p| own(p))
        .map(|p| p.strip_prefix("@root.").unwrap_or(p))
    {
        let placeholder = serde_json::to_string(&format!("{}{path}", PLACEHOLDER));
        out.write(&super::shape::emit(placeholder.unwrap_or_default()))?;
        return Ok(());
    }
    out.write(&super::shape::emit_from(
        serde_json::to_string(param.value()).unwrap_or_default(),
        super::memo::source_of(param, false),
    ))?;
    Ok(())
}

/// `{{duration ms}}`: milliseconds as a quoted protobuf JSON duration (`"1.500s"`).
fn duration_helper(
    h: &handlebars::Helper<'_>,
    _: &Handlebars<'_>,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext<'_, '_>,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let param = h
        .param(0)
        .ok_or_else(|| handlebars::RenderErrorReason::ParamNotFoundForIndex("duration", 0))?;
    missing_is_an_error("duration", param)?;
    let ms = param
        .value()
        .as_u64()
        .ok_or_else(|| handlebars::RenderErrorReason::InvalidParamType("duration: a whole number of milliseconds"))?;
    out.write(&super::shape::emit_from(
        super::memo::duration_json(ms),
        super::memo::source_of(param, true),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_pack_loads_and_its_file_list_is_complete() {
        let registry = Registry::core().expect("core pack loads");
        assert!(!registry.rules().is_empty());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/core");
        let mut on_disk = Vec::new();
        list_files(&dir, &dir, &mut on_disk).unwrap();
        let mut built_in: Vec<String> = CORE_FILES.iter().map(|(p, _)| (*p).to_string()).collect();
        built_in.sort();
        on_disk.retain(|f| f != "README.md");
        on_disk.sort();
        assert_eq!(
            built_in, on_disk,
            "CORE_FILES must list exactly the files in rules/core"
        );
    }

    #[test]
    fn only_templates_that_use_rendered_children_as_data_read_them() {
        assert!(!reads_rendered("routes: {{json rendered.routes}}\n"));
        assert!(!reads_rendered("a: {{~json  rendered.virtual_hosts ~}}"));
        assert!(!reads_rendered("f: {{json @root.rendered.http_filters}}"));
        assert!(!reads_rendered("name: {{json name}}"));
        assert!(reads_rendered("{{#each rendered.routes}}- {{json this}}{{/each}}"));
        assert!(reads_rendered("n: {{len rendered.routes}}"));
        assert!(reads_rendered("r: {{json rendered.routes.[0]}}"));
        assert!(reads_rendered("r: {{json rendered}}"));
        let core = Registry::core().unwrap();
        assert!(NodeKind::ALL.iter().all(|k| !core.reads_rendered(*k)));
    }

    #[test]
    fn edits_are_checked_when_the_pack_loads() {
        let load = |edits: &str| {
            let dir = tempfile::tempdir().unwrap();
            if edits.contains("v.yaml.hbs") {
                std::fs::write(dir.path().join("v.yaml.hbs"), "x: 1").unwrap();
            }
            std::fs::write(
                dir.path().join("pack.yaml"),
                format!("name: ops\nrules:\n  - id: ops.r\n    kind: route\n    emits: envoy.config.route.v3.Route\n    edits:\n{edits}"),
            )
            .unwrap();
            Registry::with_packs(&[dir.path().to_path_buf()])
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            load("      - add: response_headers_to_add\n        template: v.yaml.hbs\n"),
            Ok(())
        );
        assert_eq!(load("      - replace: route.timeout\n        value: 5s\n"), Ok(()));
        for (edits, expected) in [
            (
                "      - add: route.timout\n        value: 5s\n",
                "did you mean `timeout`",
            ),
            ("      - remove: request_headers_to_add[0]\n", "never by index"),
            (
                "      - insert_before: response_headers_to_add\n        value: {}\n",
                "must end in a list element",
            ),
            (
                "      - remove: route.timeout\n        value: 1s\n",
                "`remove` takes no",
            ),
            ("      - add: route.timeout\n", "needs a `template`"),
            (
                "      - add: a\n        replace: b\n        value: 1\n",
                "exactly one of",
            ),
            (
                "      - add: route.timeout\n        template: missing.hbs\n",
                "missing.hbs",
            ),
        ] {
            let e = load(edits).unwrap_err();
            assert!(e.contains(expected), "{edits}: {e}");
            assert!(e.contains("rule `ops.r`"), "{e}");
        }
        // A `when` path the kind's context does not have is refused at load.
        let e = load("      - remove: route.timeout\n    when: timeout_m != null || action == \"route\"\n");
        assert!(e.is_err_and(|e| e.contains("has no field `timeout_m` (did you mean `timeout_ms`?)")));
        // A context version this attache does not give.
        let dir2 = tempfile::tempdir().unwrap();
        std::fs::write(dir2.path().join("pack.yaml"), "name: ops\ncontext: v0\nrules: []\n").unwrap();
        let e = Registry::with_packs(&[dir2.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`context: v0`") && e.contains("v1"), "{e}");
        std::fs::write(dir2.path().join("pack.yaml"), "name: ops\ncontext: v1\nrules: []\n").unwrap();
        assert!(Registry::with_packs(&[dir2.path().to_path_buf()]).is_ok());
        // An unquoted `!` in a `when` is a YAML tag.
        assert!(load("      - remove: route.timeout\n    when: !tcp\n")
            .unwrap_err()
            .contains("quote a `when`"));
        // Both a template and edits, or neither.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pack.yaml"),
            "name: ops\nrules:\n  - id: ops.r\n    kind: route\n    emits: envoy.config.route.v3.Route\n",
        )
        .unwrap();
        let e = Registry::with_packs(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a `template`"), "{e}");
        // A virtual host's routes are edited through the route kind.
        std::fs::write(
            dir.path().join("pack.yaml"),
            "name: ops\nrules:\n  - id: ops.r\n    kind: virtual_host\n    emits: envoy.config.route.v3.VirtualHost\n    edits:\n      - remove: routes[name=x]\n",
        )
        .unwrap();
        let e = Registry::with_packs(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rules of their own kind"), "{e}");
    }

    #[test]
    fn every_core_rule_targets_a_node_kind_and_a_known_message() {
        let registry = Registry::core().unwrap();
        for rule in registry.rules() {
            assert!(crate::envoy::message(&rule.emits).is_some(), "{}", rule.id);
            assert!(NodeKind::from_key(rule.kind.as_str()).is_some());
        }
    }

    #[test]
    fn http_filters_are_placed_by_slot_or_number_then_id() {
        let core = Registry::core().unwrap();
        let ids: Vec<&str> = core.http_filters().iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "core.http_filter.grpc_http1_bridge",
                "core.http_filter.grpc_web",
                "core.http_filter.grpc_stats",
                "core.http_filter.lua",
                "core.http_filter.compression",
                "core.http_filter.brotli",
                "core.http_filter.buffer",
                "core.http_filter.rbac",
                "core.http_filter.cors",
                "core.http_filter.ext_authz",
                "core.http_filter.ratelimit",
                "core.http_filter.error_responses",
                "core.http_filter.route_error_responses",
                "core.http_filter.router"
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let rule = |id: &str, place: &str| {
            format!("  - id: {id}\n    kind: http_filter\n    {place}\n    emits: {HTTP_FILTER}\n    template: f.yaml.hbs\n")
        };
        std::fs::write(dir.path().join("f.yaml.hbs"), "name: x").unwrap();
        std::fs::write(
            dir.path().join("pack.yaml"),
            format!(
                "name: ops\nrules:\n{}{}{}",
                rule("ops.z", "order: 800"),
                rule("ops.a", "order: 800"),
                rule("ops.lua", "slot: lua")
            ),
        )
        .unwrap();
        let registry = Registry::with_packs(&[dir.path().to_path_buf()]).unwrap();
        let ids: Vec<&str> = registry.http_filters().iter().map(|r| r.id.as_str()).collect();
        // Equal numbers (ops.a, ops.z and the cors slot's 800) sort by id.
        assert_eq!(
            ids,
            [
                "core.http_filter.grpc_http1_bridge",
                "core.http_filter.grpc_web",
                "core.http_filter.grpc_stats",
                "core.http_filter.lua",
                "ops.lua",
                "core.http_filter.compression",
                "core.http_filter.brotli",
                "core.http_filter.buffer",
                "core.http_filter.rbac",
                "core.http_filter.cors",
                "ops.a",
                "ops.z",
                "core.http_filter.ext_authz",
                "core.http_filter.ratelimit",
                "core.http_filter.error_responses",
                "core.http_filter.route_error_responses",
                "core.http_filter.router"
            ]
        );
        // What loading a pack.yaml says is wrong.
        let refused = |pack: String| {
            std::fs::write(dir.path().join("pack.yaml"), pack).unwrap();
            Registry::with_packs(&[dir.path().to_path_buf()])
                .unwrap_err()
                .to_string()
        };
        for (place, expect) in [
            ("slot: luah", "unknown slot `luah` (one of: grpc_http1_bridge"),
            ("slot: lua\n    order: 3", "not both"),
            ("when: cors", "needs its place in the chain"),
            ("slot: lua\n    patch: true", "cannot be a patch"),
        ] {
            let e = refused(format!("name: ops\nrules:\n{}", rule("ops.x", place)));
            assert!(e.contains("rule `ops.x`") && e.contains(expect), "{place}: {e}");
        }
        let e = refused("name: ops\nrules:\n  - id: ops.x\n    kind: http_filter\n    slot: lua\n    emits: envoy.config.route.v3.Route\n    template: f.yaml.hbs\n".into());
        assert!(e.contains("emits `envoy.extensions.filters.network"), "{e}");
        let e = refused("name: ops\nrules:\n  - id: ops.x\n    kind: route\n    slot: lua\n    emits: envoy.config.route.v3.Route\n    template: f.yaml.hbs\n".into());
        assert!(e.contains("place an `http_filter` rule"), "{e}");
    }

    #[test]
    fn bad_packs_are_refused_with_the_rule_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pack.yaml"), "name: bad\nrules:\n  - id: x\n    kind: routez\n    emits: envoy.config.route.v3.Route\n    template: t.yaml.hbs\n").unwrap();
        std::fs::write(dir.path().join("t.yaml.hbs"), "name: x").unwrap();
        let e = Registry::with_packs(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rule `x`") && e.contains("routez"), "{e}");
        std::fs::write(dir.path().join("pack.yaml"), "name: bad\nrules:\n  - id: x\n    kind: route\n    emits: envoy.config.route.v3.Routez\n    template: t.yaml.hbs\n").unwrap();
        let e = Registry::with_packs(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("Routez"), "{e}");
        std::fs::write(dir.path().join("pack.yaml"), "name: bad\nrules:\n  - id: x\n    kind: route\n    when: 'a =='\n    emits: envoy.config.route.v3.Route\n    template: t.yaml.hbs\n").unwrap();
        let e = Registry::with_packs(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("when"), "{e}");
        std::fs::write(dir.path().join("pack.yaml"), "name: bad\nrules:\n  - id: x\n    kind: route\n    emits: envoy.config.route.v3.Route\n    template: t.yaml.hbs\n").unwrap();
        std::fs::write(dir.path().join("t.yaml.hbs"), "name: {{#if}").unwrap();
        let e = Registry::with_packs(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.yaml.hbs"), "{e}");
    }
}
