//! YAML text → documents of position-carrying nodes.
//!
//! Every node keeps the line and column where it starts, so later stages can point a diagnostic at
//! the exact field. Documents are split at `---` lines before parsing, so a syntax error in one
//! document costs only that document. Scalars are resolved with the YAML 1.2 core schema (what
//! `kubectl` users expect for `true`, `3000`, `null`), duplicate keys are errors (the last one would
//! win silently elsewhere), and aliases are expanded within a budget so a "billion laughs" input
//! cannot exhaust memory. Knows nothing about Kubernetes or Ambassador.

use std::collections::BTreeMap;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::Value;

/// Deepest nesting accepted; deeper input is an error instead of a stack overflow later.
const MAX_DEPTH: usize = 128;
/// Most nodes one document may expand to through aliases.
const MAX_NODES: usize = 1_000_000;

/// A YAML node with the 1-based line and column where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// The content.
    pub value: NodeValue,
}

/// The content of a node.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string (quoted, or plain and not a number, bool or null).
    String(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, keys in document order; keys are always strings.
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key's text.
    pub name: String,
    /// 1-based line of the key.
    pub line: u32,
    /// 1-based column of the key.
    pub column: u32,
}

/// One YAML document.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The root node.
    pub root: Node,
}

/// A YAML syntax error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// What the parser said.
    pub message: String,
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

impl Node {
    /// Converts to a JSON value (the form serde and protobuf decoding work on).
    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            NodeValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or_else(|| Value::String(f.to_string()), Value::Number)
            }
            NodeValue::String(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    map.insert(k.name.clone(), v.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// Converts a JSON value (an object from the Kubernetes API) to a node; every node gets the
    /// same position, as JSON from an API has none worth pointing at.
    pub fn from_json(value: &Value, line: u32, column: u32) -> Node {
        let value = match value {
            Value::Null => NodeValue::Null,
            Value::Bool(b) => NodeValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => NodeValue::Int(i),
                None => NodeValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => NodeValue::String(s.clone()),
            Value::Array(items) => NodeValue::Seq(items.iter().map(|v| Node::from_json(v, line, column)).collect()),
            Value::Object(map) => NodeValue::Map(
                map.iter()
                    .map(|(k, v)| {
                        (
                            Key {
                                name: k.clone(),
                                line,
                                column,
                            },
                            Node::from_json(v, line, column),
                        )
                    })
                    .collect(),
            ),
        };
        Node { line, column, value }
    }

    /// The child at `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string content, if this is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The position of the deepest node along `path` that exists: for a missing field, its parent;
    /// for a mapping key, the key itself (where editors put the cursor).
    pub fn locate(&self, path: &[Segment]) -> (u32, u32) {
        let mut node = self;
        let mut pos = (self.line, self.column);
        for seg in path {
            let next = match (&node.value, seg) {
                (NodeValue::Map(entries), Segment::Key(k)) => entries
                    .iter()
                    .find(|(key, _)| &key.name == k)
                    .map(|(key, v)| (v, (key.line, key.column))),
                (NodeValue::Seq(items), Segment::Index(i)) => items.get(*i).map(|v| (v, (v.line, v.column))),
                _ => None,
            };
            match next {
                Some((child, p)) => {
                    node = child;
                    pos = p;
                }
                None => break,
            }
        }
        pos
    }
}

/// Splits a YAML stream into documents and parses each one.
///
/// Returns every document that parsed, and one error per document that did not; empty documents
/// (only comments, or `---` with nothing after it) are skipped.
pub fn parse_stream(text: &str) -> (Vec<Document>, Vec<SyntaxError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (first_line, chunk) in split_documents(text) {
        match parse_document(&chunk) {
            Ok(Some(mut root)) => {
                shift_lines(&mut root, first_line);
                docs.push(Document { root });
            }
            Ok(None) => {}
            Err(mut e) => {
                e.line += first_line;
                errors.push(e);
            }
        }
    }
    (docs, errors)
}

/// Parses one document of YAML (no `---` separators expected, but tolerated).
pub fn parse_one(text: &str) -> Result<Option<Node>, SyntaxError> {
    parse_document(text)
}

/// Splits at lines that are a document start (`---`) or end (`...`) marker at column 0.
/// Returns (number of lines before the chunk, chunk text). Marker lines are kept blank inside the
/// chunk so that line numbers stay right; a `--- value` line keeps its content.
fn split_documents(text: &str) -> Vec<(u32, String)> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut start = 0u32;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let is_marker =
            |m: &str| trimmed == m || (trimmed.starts_with(m) && trimmed[m.len()..].starts_with([' ', '\t']));
        if is_marker("---") || is_marker("...") {
            if !current.trim().is_empty() {
                chunks.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = u32::try_from(i).unwrap_or(u32::MAX);
            // Keep what follows `--- ` on the marker line (`--- !tag` or `--- {a: 1}`).
            if let Some(rest) = trimmed.strip_prefix("---") {
                current.push_str("   ");
                current.push_str(rest);
            }
            current.push('\n');
        } else {
            current.push_str(line);
        }
    }
    if !current.trim().is_empty() {
        chunks.push((start, current));
    }
    chunks
}

fn shift_lines(node: &mut Node, by: u32) {
    node.line += by;
    match &mut node.value {
        NodeValue::Seq(items) => items.iter_mut().for_each(|n| shift_lines(n, by)),
        NodeValue::Map(entries) => {
            for (k, v) in entries {
                k.line += by;
                shift_lines(v, by);
            }
        }
        _ => {}
    }
}

enum Frame {
    Seq(Node, usize),
    Map(Node, usize, Option<Key>),
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn parse_document(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: BTreeMap<usize, Node> = BTreeMap::new();
    let mut root: Option<Node> = None;
    let mut budget = MAX_NODES;
    let mut docs_seen = 0;
    let err = |line: usize, col: usize, message: String| SyntaxError {
        line: u32_of(line),
        column: u32_of(col + 1),
        message,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| err(e.marker().line(), e.marker().col(), e.info().to_string()))?;
        let (line, col) = (span.start.line(), span.start.col());
        let node_at = |value| Node {
            line: u32_of(line),
            column: u32_of(col + 1),
            value,
        };
        let (node, anchor) = match event {
            Event::DocumentStart(_) => {
                docs_seen += 1;
                if docs_seen > 1 {
                    return Err(err(line, col, "more than one document in a chunk".into()));
                }
                continue;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !is_str_tag {
                    resolve_plain(&text)
                } else {
                    NodeValue::String(text.into_owned())
                };
                (node_at(value), anchor)
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => {
                    let size = count_nodes(n);
                    if size > budget {
                        return Err(err(line, col, "aliases expand to too many nodes".into()));
                    }
                    budget -= size;
                    let mut copy = n.clone();
                    copy.line = u32_of(line);
                    copy.column = u32_of(col + 1);
                    (copy, 0)
                }
                None => return Err(err(line, col, "alias to an unknown anchor".into())),
            },
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(err(line, col, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                let is_seq = matches!(event, Event::SequenceStart(..));
                if is_seq {
                    stack.push(Frame::Seq(node_at(NodeValue::Seq(Vec::new())), anchor));
                } else {
                    stack.push(Frame::Map(node_at(NodeValue::Map(Vec::new())), anchor, None));
                }
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(n, a) | Frame::Map(n, a, _)) => (n, a),
                None => return Err(err(line, col, "unbalanced collection end".into())),
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
        };
        budget = budget.saturating_sub(1);
        if budget == 0 {
            return Err(err(line, col, "document has too many nodes".into()));
        }
        if anchor > 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(parent, _)) => {
                if let NodeValue::Seq(items) = &mut parent.value {
                    items.push(node);
                }
            }
            Some(Frame::Map(parent, _, pending)) => match pending.take() {
                None => {
                    let name = match node.value {
                        NodeValue::String(s) => s,
                        NodeValue::Null => "null".to_string(),
                        NodeValue::Bool(b) => b.to_string(),
                        NodeValue::Int(i) => i.to_string(),
                        NodeValue::Float(f) => f.to_string(),
                        NodeValue::Seq(_) | NodeValue::Map(_) => {
                            return Err(SyntaxError {
                                line: node.line,
                                column: node.column,
                                message: "a mapping key must be a scalar".into(),
                            })
                        }
                    };
                    if let NodeValue::Map(entries) = &parent.value {
                        if entries.iter().any(|(k, _)| k.name == name) {
                            return Err(SyntaxError {
                                line: node.line,
                                column: node.column,
                                message: format!("duplicate key `{name}`"),
                            });
                        }
                    }
                    *pending = Some(Key {
                        name,
                        line: node.line,
                        column: node.column,
                    });
                }
                Some(key) => {
                    if let NodeValue::Map(entries) = &mut parent.value {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
    Ok(root.filter(|n| n.value != NodeValue::Null))
}

fn count_nodes(n: &Node) -> usize {
    1 + match &n.value {
        NodeValue::Seq(items) => items.iter().map(count_nodes).sum(),
        NodeValue::Map(entries) => entries.iter().map(|(_, v)| 1 + count_nodes(v)).sum(),
        _ => 0,
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(s: &str) -> NodeValue {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return NodeValue::Null,
        "true" | "True" | "TRUE" => return NodeValue::Bool(true),
        "false" | "False" | "FALSE" => return NodeValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return NodeValue::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return NodeValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return NodeValue::Float(f64::NAN),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return NodeValue::Int(i);
        }
        if let Ok(f) = s.parse::<f64>() {
            return NodeValue::Float(f);
        }
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return NodeValue::Int(i);
        }
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return NodeValue::Int(i);
        }
    }
    if is_core_float(s) {
        if let Ok(f) = s.parse::<f64>() {
            return NodeValue::Float(f);
        }
    }
    NodeValue::String(s.to_string())
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(s: &str) -> bool {
    let b = s.strip_prefix(['-', '+']).unwrap_or(s).as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_lines() {
        let (docs, errors) = parse_stream("a: 1\n---\n# c\nb:\n  c: true\n---\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 2);
        let b = docs[1].root.get("b").expect("b");
        assert_eq!((b.line, b.column), (5, 3));
        assert_eq!(docs[1].root.locate(&[Segment::Key("b".into())]), (4, 1));
    }

    #[test]
    fn a_broken_document_costs_only_itself() {
        let (docs, errors) = parse_stream("a: 1\n---\nb: [\n---\nc: 3\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].line >= 3, "{errors:?}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let (_, errors) = parse_stream("a: 1\na: 2\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("duplicate key `a`"));
        assert_eq!(errors[0].line, 2);
    }

    #[test]
    fn core_schema_scalars() {
        let (docs, _) = parse_stream("a: 3000\nb: '3000'\nc: 1.5\nd: yes\ne: ~\nf: 1e3\ng: 0x1f\n");
        let j = docs[0].root.to_json();
        assert_eq!(j["a"], 3000);
        assert_eq!(j["b"], "3000");
        assert_eq!(j["c"], 1.5);
        assert_eq!(j["d"], "yes");
        assert!(j["e"].is_null());
        assert_eq!(j["f"], 1000.0);
        assert_eq!(j["g"], 31);
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let (docs, errors) = parse_stream(&s);
        assert!(docs.is_empty());
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let s = "[".repeat(10_000);
        let (_, errors) = parse_stream(&s);
        assert_eq!(errors.len(), 1);
    }
}
