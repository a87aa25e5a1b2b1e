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
            Diagnostic::error("yaml.syntax", format!("YAML syntax error: {}", e.message))
                .at(Origin::new(file, e.line, e.column))
                .hint("this document was skipped; the other documents in the file were read")
        }))
        .collect();
    Loaded { objects, diagnostics }
}
