//! Stage 1: where objects come from.
//!
//! A source yields the complete current set of raw objects, each a parsed YAML document with its
//! [`Origin`], plus diagnostics for what could not be read. `dir` reads (and watches) a directory
//! of YAML files. This stage knows nothing about Ambassador kinds: it does not look inside the
//! documents it yields.

pub mod annotation;
pub mod dir;
pub mod kube;
pub mod yaml;

use crate::diagnostic::{Diagnostic, Origin};

/// One document as read from a source.
#[derive(Clone, Debug, PartialEq)]
pub struct RawObject {
    /// Where the document starts.
    pub origin: Origin,
    /// The document, with positions.
    pub root: yaml::Node,
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
        .map(|root| RawObject {
            origin: Origin::new(file, root.line, root.column),
            root,
        })
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
