//! Stage 1: where objects come from.
//!
//! A source yields the complete current set of raw objects, each a parsed YAML document with its
//! [`Origin`], plus diagnostics for what could not be read. `dir` reads a directory of YAML
//! files (the server crate watches it, and reads Kubernetes). This stage knows nothing about Ambassador kinds: it does not look inside the
//! documents it yields.

pub mod annotation;
pub mod dir;
pub mod yaml;

use crate::diagnostic::{Diagnostic, Origin};

/// The API group attache reads (`getambassador.io/v3alpha1`).
pub const GROUP: &str = "getambassador.io";
/// Namespace of objects that do not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One document as read from a source. Built with [`RawObject::new`], which computes its
/// [`key`](RawObject::key) once; treat the fields as read-only (the key would go stale).
#[derive(Clone, Debug, PartialEq)]
pub struct RawObject {
    /// Where the document starts.
    pub origin: Origin,
    /// The document, with positions (shared: sets of objects are copied often, the objects
    /// never change).
    pub root: std::sync::Arc<yaml::Node>,
    key: u128,
}

impl RawObject {
    /// An object and its content key.
    pub fn new(origin: Origin, root: yaml::Node) -> RawObject {
        let key = content_key(&origin, &root);
        RawObject {
            origin,
            root: std::sync::Arc::new(root),
            key,
        }
    }

    /// A hash of everything reading the object depends on: its origin, and its node values,
    /// keys and positions. Computed once, when the source reads the object, so that a
    /// translation finds an unchanged object in its caches without walking it again.
    pub fn key(&self) -> u128 {
        self.key
    }
}

fn content_key(origin: &Origin, root: &yaml::Node) -> u128 {
    use yaml::{Node, NodeValue};
    fn walk(node: &Node, h: &mut xxhash_rust::xxh3::Xxh3) {
        h.update(&node.line.to_le_bytes());
        h.update(&node.column.to_le_bytes());
        match &node.value {
            NodeValue::Null => h.update(b"n"),
            NodeValue::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
            NodeValue::Int(i) => {
                h.update(b"i");
                h.update(&i.to_le_bytes());
            }
            NodeValue::Float(f) => {
                h.update(b"d");
                h.update(&f.to_le_bytes());
            }
            NodeValue::String(s) => {
                h.update(b"s");
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            NodeValue::Seq(items) => {
                h.update(b"[");
                h.update(&(items.len() as u64).to_le_bytes());
                items.iter().for_each(|n| walk(n, h));
            }
            NodeValue::Map(entries) => {
                h.update(b"{");
                h.update(&(entries.len() as u64).to_le_bytes());
                for (k, v) in entries {
                    h.update(&(k.name.len() as u64).to_le_bytes());
                    h.update(k.name.as_bytes());
                    h.update(&k.line.to_le_bytes());
                    h.update(&k.column.to_le_bytes());
                    walk(v, h);
                }
            }
        }
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(origin.file.len() as u64).to_le_bytes());
    h.update(origin.file.as_bytes());
    h.update(&origin.line.to_le_bytes());
    h.update(&origin.column.to_le_bytes());
    walk(root, &mut h);
    h.digest128()
}

/// The complete set of objects a source holds at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    /// Every document that parsed, in a deterministic order (by file, then position).
    pub objects: Vec<RawObject>,
    /// Files or documents that could not be read.
    pub diagnostics: Vec<Diagnostic>,
    /// The last valid version of objects, where the source keeps them (Kubernetes: beside each
    /// object, in `status.lastValid`, written by `serve --write-status`); see `lastgood`.
    pub previous: Vec<RawObject>,
}

/// What a configuration needs from outside the getambassador.io group: the Secrets its Hosts and
/// TLSContexts name, and the Kubernetes Services whose Service object and EndpointSlices endpoint
/// resolution may read. A source that cannot hold everything (Kubernetes) reads exactly these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    /// `(namespace, name)` of Secrets.
    pub secrets: std::collections::BTreeSet<(String, String)>,
    /// `(namespace, name)` of Services.
    pub services: std::collections::BTreeSet<(String, String)>,
}

/// The objects of one document: itself, or the items of a YAML list of objects or of a
/// Kubernetes `kind: List` (what `kubectl get -o yaml` writes).
pub(crate) fn unfold_lists(root: yaml::Node) -> Vec<yaml::Node> {
    let is_list_kind = root.get("kind").and_then(yaml::Node::as_str) == Some("List")
        && matches!(root.get("items").map(|i| &i.value), Some(yaml::NodeValue::Seq(_)));
    let root = if is_list_kind {
        match root.get("items") {
            Some(items) => items.clone(),
            None => root,
        }
    } else {
        root
    };
    match root.value {
        yaml::NodeValue::Seq(items) => items,
        _ => vec![root],
    }
}

/// A YAML syntax error in users' words: the line to look at (the parser sometimes stops a line
/// after the slip), what is wrong and how to fix it. The usual slips: a tab in the indentation,
/// a line indented unlike its neighbours, a key without `:`, an unquoted value with `: ` in it.
fn explain_syntax_error(text: &str, e: &yaml::SyntaxError) -> (u32, String, String) {
    let lines: Vec<&str> = text.lines().collect();
    let at = e.line.max(1);
    let line_text = |n: u32| lines.get(n as usize - 1).copied().unwrap_or("");
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    // A tab before the text, on this line or the one before.
    for n in [at, at.saturating_sub(1)].into_iter().filter(|n| *n >= 1) {
        let l = line_text(n);
        if l[..l.len() - l.trim_start().len()].contains('\t') {
            return (
                n,
                "a tab in the indentation".into(),
                "indent with spaces only (YAML does not allow tabs there)".into(),
            );
        }
    }
    let message = e.message.as_str();
    // The nearest line above with text, and its indentation.
    let previous = (1..at)
        .rev()
        .map(|n| (n, line_text(n)))
        .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    if message.contains("did not find expected key") || message.contains("did not find expected '-'") {
        // The parser stops where the block ended: the slip is the line with other indentation.
        let here = line_text(at);
        let culprit = if here.trim().is_empty() {
            previous.map_or(at, |(n, _)| n)
        } else {
            at
        };
        let siblings = previous.map(|(_, l)| indent(l)).unwrap_or(0);
        return (
            culprit,
            "this line is not indented like the keys around it".into(),
            format!(
                "line its key up with its siblings ({siblings} spaces before the key above), or indent it further under a key that ends with `:`"
            ),
        );
    }
    if message.contains("could not find expected ':'") {
        let culprit = previous.map_or(at, |(n, _)| n).max(1);
        return (
            culprit,
            "a key without `:`".into(),
            "write `key: value` (a space after the colon), or quote the text".into(),
        );
    }
    if message.contains("mapping values are not allowed") {
        let here = line_text(at);
        if let Some((n, above)) = previous {
            // `prefix /a/` above `service: a`: the line above lost its colon.
            if !above.contains(':') && !above.trim_start().starts_with('-') && indent(above) == indent(here) {
                return (
                    n,
                    "a key without `:`".into(),
                    "write `key: value` (a colon and a space after the key)".into(),
                );
            }
            // `  prefix: /a/` above `   service: a`: a key indented under a key with a value.
            if indent(here) > indent(above)
                && above
                    .trim_end()
                    .rsplit_once(':')
                    .is_some_and(|(_, v)| !v.trim().is_empty())
            {
                return (
                    at,
                    "this line is indented more than the key above, which already has a value".into(),
                    format!("line it up with the key above ({} spaces)", indent(above)),
                );
            }
        }
        return (
            at,
            "a `: ` where a plain value goes, or a key indented under a value".into(),
            "quote the value if it contains `: ` (e.g. `\"a: b\"`), or put the key on its own line at its parent's indentation plus two spaces".into(),
        );
    }
    if message.contains("found character that cannot start any token") {
        return (
            at,
            "a character YAML cannot start a value with here".into(),
            "quote the value (`@`, `` ` `` and `%` start no plain value)".into(),
        );
    }
    // `prefix: [/a/` : a flow list or map left open swallows the lines after it.
    let unclosed =
        |l: &str| l.matches('[').count() > l.matches(']').count() || l.matches('{').count() > l.matches('}').count();
    if let Some(n) = [Some(at), previous.map(|(n, _)| n)]
        .into_iter()
        .flatten()
        .find(|n| unclosed(line_text(*n)))
    {
        return (
            n,
            "a `[` or `{` that is not closed".into(),
            "close it, or quote the value if the bracket is part of the text (`\"[a\"`)".into(),
        );
    }
    if let Some(key) = message.strip_prefix("duplicate key ") {
        return (
            at,
            format!("the key {key} appears twice in one map"),
            "keep one of them (which one would win is not defined, so neither is read)".into(),
        );
    }
    (
        at,
        String::new(),
        "check the indentation and the quoting around this line".into(),
    )
}

/// Parses one YAML text (a file's content) into raw objects; syntax errors become diagnostics.
pub fn parse_text(file: &str, text: &str) -> Loaded {
    let (docs, errors) = yaml::parse_stream(text);
    let mut annotation_diagnostics = Vec::new();
    let objects = docs
        .into_iter()
        .flat_map(|d| unfold_lists(d.root))
        // A Service with a getambassador.io/config annotation also stands for the objects in it.
        .flat_map(|root| match annotation::objects(file, text, &root) {
            Some((mut objects, diagnostics)) => {
                annotation_diagnostics.extend(diagnostics);
                objects.push(root);
                objects
            }
            None => vec![root],
        })
        .map(|root| RawObject::new(Origin::new(file, root.line, root.column), root))
        .collect();
    let diagnostics = annotation_diagnostics
        .into_iter()
        .chain(errors.into_iter().map(|e| {
            let (line, what, fix) = explain_syntax_error(text, &e);
            // The parser's column on its line; on another line, where that line's text starts.
            let column = if line == e.line {
                e.column
            } else {
                text.lines()
                    .nth(line as usize - 1)
                    .map_or(1, |l| u32::try_from(l.len() - l.trim_start().len() + 1).unwrap_or(1))
            };
            let message = if what.is_empty() {
                format!("YAML syntax error: {}", e.message)
            } else {
                format!("YAML syntax error: {what} (the parser says: {})", e.message)
            };
            Diagnostic::error("yaml.syntax", message)
                .at(Origin::new(file, line, column))
                .hint(format!(
                    "{fix}; this document was skipped, the other documents in the file were read"
                ))
        }))
        .collect();
    Loaded {
        objects,
        diagnostics,
        previous: Vec::new(),
    }
}
