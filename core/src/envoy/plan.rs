//! Encode plans: a rendered message's encoding, worked out once per shape.
//!
//! Thousands of clusters or routes render to the same YAML around different values (see
//! `rules::shape`): the same fields, with only names, hosts and timeouts changing. Decoding each
//! one from JSON into a `DynamicMessage`, checking it and encoding it again redoes the same work
//! around those few values. A plan does it once: fields that hold no value of the node are
//! encoded once, as bytes; a field whose value is a node's is a *slot*, encoded per node; messages
//! that hold slots are nested plans.
//!
//! Exactness rests on three things:
//! - Fields are laid out in field-number order, as prost-reflect encodes them, and every field's
//!   bytes come from prost-reflect itself (constant fields at build time, generic slots per node),
//!   but for strings, ports and durations, whose encoding the protobuf wire format fixes, and
//!   which are read only in the form attache's helpers print them.
//! - A plan is only built from a node whose full decode, check and encode succeeded, and only kept
//!   if encoding that node through the plan gives the very same bytes.
//! - Per node, each slot's value is checked against its field's rules (and everything inside
//!   it); everything else is what the first node had, which passed. A slot that would encode to
//!   nothing (an empty string, a `null`) would change which fields are present, so the node is
//!   not planned: the caller decodes it in full, which also gives the error message of a node
//!   that breaks a rule.
//!
//! Owns: building and running plans. Must not: know templates, markers' text or IR nodes.

use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use super::validate::FieldCheck;

/// How the shape marks the places of a node's values: `whole` gives the value number of a string
/// that is exactly one marker, `within` says whether a string holds a marker anywhere.
#[derive(Clone, Copy)]
pub struct Markers {
    /// The value number of a string that is exactly one marker.
    pub whole: fn(&str) -> Option<usize>,
    /// Whether a string holds a marker.
    pub within: fn(&str) -> bool,
}

/// The encoding of one message type for one shape.
pub struct EncodePlan {
    emits: String,
    root: MessagePlan,
    name: Name,
    markers: Markers,
}

impl std::fmt::Debug for EncodePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodePlan")
            .field("emits", &self.emits)
            .finish_non_exhaustive()
    }
}

/// Where a resource's name comes from (`name`, or `cluster_name` of a ClusterLoadAssignment).
enum Name {
    Const(String),
    Slot(usize),
}

/// The values a plan writes itself, as the protobuf wire format fixes their encoding.
#[derive(Clone, Copy)]
enum Scalar {
    /// A `string`.
    Str,
    /// A `uint32` (a port), as the `json` helper prints a number.
    Uint32,
    /// A `google.protobuf.Duration`, as the `duration` helper prints it (`"1.500s"`).
    Duration,
}

struct MessagePlan {
    pieces: Vec<Piece>,
}

enum Piece {
    /// Fields that hold no slot, encoded once.
    Const(Vec<u8>),
    /// A singular field whose whole value is a slot, written directly.
    Scalar {
        number: u32,
        slot: usize,
        scalar: Scalar,
        check: Option<FieldCheck>,
    },
    /// A message field (or one element of a repeated message field) whose object holds slots.
    Nested { number: u32, plan: MessagePlan },
    /// An `Any` of a fixed type whose value holds slots: its type URL (field 1, encoded once) and
    /// its value's plan (field 2, left out when empty, as for any `bytes`).
    Any {
        number: u32,
        type_url: Vec<u8>,
        plan: MessagePlan,
    },
    /// Any other field that holds slots: its JSON gets the node's values, then is decoded into
    /// the parent type alone, checked and encoded.
    Field {
        parent: MessageDescriptor,
        field: FieldDescriptor,
        key: String,
        template: Value,
        check: Option<FieldCheck>,
    },
}

fn deserialize(desc: &MessageDescriptor, value: &Value) -> Option<DynamicMessage> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(desc.clone(), value, &options).ok()
}

/// The bytes of a message of type `desc` holding only `key: value`.
fn encode_alone(desc: &MessageDescriptor, key: &str, value: &Value) -> Option<(Vec<u8>, DynamicMessage)> {
    let mut object = Map::new();
    object.insert(key.to_string(), value.clone());
    let m = deserialize(desc, &Value::Object(object))?;
    Some((super::encode(&m), m))
}

fn holds_marker(value: &Value, m: Markers) -> bool {
    match value {
        Value::String(s) => (m.within)(s),
        Value::Array(items) => items.iter().any(|v| holds_marker(v, m)),
        Value::Object(map) => map.iter().any(|(k, v)| (m.within)(k) || holds_marker(v, m)),
        _ => false,
    }
}

const ANY: &str = "google.protobuf.Any";

/// A message type whose JSON is its fields (not one of the well-known types with a JSON form of
/// their own, such as `Duration` or `Any`).
fn plain(desc: &MessageDescriptor) -> bool {
    !desc.full_name().starts_with("google.protobuf.")
}

impl EncodePlan {
    /// The plan of `shape` (the JSON of a rendered message with markers in place of a node's
    /// values) as a message of type `emits`, if every marker sits where a plan can put a value.
    pub fn build(emits: &str, shape: &Value, markers: Markers) -> Option<EncodePlan> {
        let desc = super::message(emits)?;
        let object = shape.as_object()?;
        let name = match object.get("name").or_else(|| object.get("cluster_name")) {
            Some(Value::String(s)) if (markers.within)(s) => Name::Slot((markers.whole)(s)?),
            Some(Value::String(s)) => Name::Const(s.clone()),
            _ => Name::Const(String::new()),
        };
        Some(EncodePlan {
            emits: emits.to_string(),
            root: message_plan(&desc, object, markers, 0)?,
            name,
            markers,
        })
    }

    /// The message type this plan encodes.
    pub fn emits(&self) -> &str {
        &self.emits
    }

    /// Encodes a node's values (`values[i]` is the JSON text of marker `i`): the bytes and the
    /// resource's name, or `None` when this node must be decoded in full.
    pub fn encode(&self, values: &[String]) -> Option<(Vec<u8>, String)> {
        let mut out = Vec::with_capacity(256);
        self.root.encode(values, self.markers, &mut out)?;
        let name = match &self.name {
            Name::Const(s) => s.clone(),
            Name::Slot(i) => serde_json::from_str::<String>(values.get(*i)?).unwrap_or_default(),
        };
        Some((out, name))
    }
}

fn message_plan(
    desc: &MessageDescriptor,
    object: &Map<String, Value>,
    m: Markers,
    depth: usize,
) -> Option<MessagePlan> {
    if depth > 32 {
        return None;
    }
    let mut fields: Vec<(u32, Vec<Piece>)> = Vec::with_capacity(object.len());
    let mut oneofs = Vec::new();
    for (key, value) in object {
        if (m.within)(key) {
            return None;
        }
        let field = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key))?;
        let number = field.number();
        if fields.iter().any(|(n, _)| *n == number) {
            return None;
        }
        if let Some(oneof) = field.containing_oneof() {
            if oneofs.contains(&oneof) {
                return None;
            }
            oneofs.push(oneof);
        }
        let pieces = if holds_marker(value, m) {
            slot_pieces(desc, &field, key, value, m, depth)?
        } else {
            vec![Piece::Const(encode_alone(desc, key, value)?.0)]
        };
        fields.push((number, pieces));
    }
    fields.sort_by_key(|(n, _)| *n);
    let mut pieces: Vec<Piece> = Vec::new();
    for piece in fields.into_iter().flat_map(|(_, p)| p) {
        match (pieces.last_mut(), piece) {
            (Some(Piece::Const(a)), Piece::Const(b)) => a.extend_from_slice(&b),
            (_, Piece::Const(b)) if b.is_empty() => {}
            (_, piece) => pieces.push(piece),
        }
    }
    Some(MessagePlan { pieces })
}

/// The pieces of a field whose value holds markers.
fn slot_pieces(
    desc: &MessageDescriptor,
    field: &FieldDescriptor,
    key: &str,
    value: &Value,
    m: Markers,
    depth: usize,
) -> Option<Vec<Piece>> {
    let number = field.number();
    let kind = field.kind();
    // A value written directly: a string, a port, a duration.
    let scalar = match &kind {
        Kind::String => Some(Scalar::Str),
        Kind::Uint32 => Some(Scalar::Uint32),
        Kind::Message(inner) if inner.full_name() == "google.protobuf.Duration" => Some(Scalar::Duration),
        _ => None,
    };
    if let (Some(scalar), Value::String(s), false, false) = (scalar, value, field.is_list(), field.is_map()) {
        if let Some(slot) = (m.whole)(s) {
            return Some(vec![Piece::Scalar {
                number,
                slot,
                scalar,
                check: FieldCheck::of(desc, field),
            }]);
        }
    }
    if let Kind::Message(inner) = &kind {
        let planned = if field.is_map() {
            map_pieces(desc, number, inner, key, value, m, depth)
        } else if field.is_list() {
            match value {
                Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        if holds_marker(item, m) {
                            message_piece(number, inner, item, m, depth)
                        } else {
                            Some(Piece::Const(
                                encode_alone(desc, key, &Value::Array(vec![item.clone()]))?.0,
                            ))
                        }
                    })
                    .collect(),
                _ => None,
            }
        } else {
            // The field's own rules can only ask for its presence (or an `Any`'s type, which
            // the plan keeps); the slots inside are checked by their own fields' rules.
            message_piece(number, inner, value, m, depth).map(|p| vec![p])
        };
        if let Some(p) = planned {
            return Some(p);
        }
    }
    Some(vec![Piece::Field {
        parent: desc.clone(),
        field: field.clone(),
        key: key.to_string(),
        template: value.clone(),
        check: FieldCheck::of(desc, field),
    }])
}

/// The piece of one message (a singular field's, or one element of a list) that holds slots: a
/// nested plan, or for an `Any` whose type is fixed, the type and a nested plan of its value.
fn message_piece(number: u32, desc: &MessageDescriptor, value: &Value, m: Markers, depth: usize) -> Option<Piece> {
    let object = value.as_object()?;
    if plain(desc) {
        return Some(Piece::Nested {
            number,
            plan: message_plan(desc, object, m, depth + 1)?,
        });
    }
    if desc.full_name() != ANY {
        return None;
    }
    // `{"@type": "type.googleapis.com/<name>", ...the message's fields}`.
    let type_url = object.get("@type")?.as_str().filter(|t| !(m.within)(t))?;
    let inner = super::message(type_url.rsplit('/').next()?).filter(plain)?;
    let mut fields = object.clone();
    fields.remove("@type");
    let mut head = Vec::new();
    prost::encoding::string::encode(1, &type_url.to_string(), &mut head);
    Some(Piece::Any {
        number,
        type_url: head,
        plan: message_plan(&inner, &fields, m, depth + 1)?,
    })
}

/// The pieces of a map field (string keys) whose values hold slots: one entry message per key,
/// in key order (as `super::encode` writes a map), each a nested plan of `key` and `value`.
fn map_pieces(
    desc: &MessageDescriptor,
    number: u32,
    entry: &MessageDescriptor,
    key: &str,
    value: &Value,
    m: Markers,
    depth: usize,
) -> Option<Vec<Piece>> {
    if entry.map_entry_key_field().kind() != Kind::String {
        return None;
    }
    let mut entries: Vec<(&String, &Value)> = value.as_object()?.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
        .into_iter()
        .map(|(k, v)| {
            if (m.within)(k) {
                return None;
            }
            if !holds_marker(v, m) {
                let mut one = Map::new();
                one.insert(k.clone(), v.clone());
                return Some(Piece::Const(encode_alone(desc, key, &Value::Object(one))?.0));
            }
            let mut object = Map::new();
            object.insert("key".to_string(), Value::String(k.clone()));
            object.insert("value".to_string(), v.clone());
            Some(Piece::Nested {
                number,
                plan: message_plan(entry, &object, m, depth + 1)?,
            })
        })
        .collect()
}

/// `template` with each marker replaced by the JSON value it stands for; `None` if a marker is
/// not a whole value or a value is not JSON.
fn fill(template: &Value, values: &[String], m: Markers) -> Option<Value> {
    Some(match template {
        Value::String(s) if (m.within)(s) => serde_json::from_str(values.get((m.whole)(s)?)?).ok()?,
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, values, m)).collect::<Option<_>>()?),
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                if (m.within)(k) {
                    return None;
                }
                out.insert(k.clone(), fill(v, values, m)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Seconds and nanoseconds of a JSON duration in the form the `duration` helper prints
/// (`"3s"`, `"1.500s"`: no sign, at most 9 decimals, within protobuf's range); `None` for
/// anything else, which is then decoded in full.
fn duration(json: &str) -> Option<(i64, i32)> {
    let text = json.strip_prefix('"')?.strip_suffix("s\"")?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || whole.len() > 12 || (text.contains('.') && (!digits(fraction) || fraction.len() > 9)) {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    if seconds > 315_576_000_000 {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    Some((seconds, nanos))
}

fn put_len_delimited(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

impl Scalar {
    /// Writes field `number` holding the value of JSON text `json`, checked against the field's
    /// rules; `None` when the node must be decoded in full (another form of value, a broken
    /// rule, or a value that would leave the field out: empty, zero).
    fn encode(self, number: u32, json: &str, check: Option<&FieldCheck>, out: &mut Vec<u8>) -> Option<()> {
        match self {
            Scalar::Str => {
                let v = prost_reflect::Value::String(serde_json::from_str(json).ok()?);
                let prost_reflect::Value::String(s) = &v else {
                    return None;
                };
                if s.is_empty() || check.is_some_and(|c| !c.passes(&v)) {
                    return None;
                }
                put_len_delimited(number, s.as_bytes(), out);
            }
            Scalar::Uint32 => {
                // Plain decimal digits only (what the `json` helper prints for a number).
                if json.is_empty() || json.starts_with('0') || !json.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let v: u32 = json.parse().ok()?;
                if check.is_some_and(|c| !c.passes(&prost_reflect::Value::U32(v))) {
                    return None;
                }
                prost::encoding::encode_key(number, prost::encoding::WireType::Varint, out);
                prost::encoding::encode_varint(u64::from(v), out);
            }
            Scalar::Duration => {
                let (seconds, nanos) = duration(json)?;
                if check.is_some_and(|c| !c.passes_duration(seconds, nanos)) {
                    return None;
                }
                // A `Duration` message: seconds (1) and nanos (2), each left out when zero.
                let mut inner = Vec::with_capacity(12);
                if seconds != 0 {
                    prost::encoding::int64::encode(1, &seconds, &mut inner);
                }
                if nanos != 0 {
                    prost::encoding::int32::encode(2, &nanos, &mut inner);
                }
                put_len_delimited(number, &inner, out);
            }
        }
        Some(())
    }
}

impl MessagePlan {
    /// How many fields this plan decodes in full per node (for tests).
    #[cfg(test)]
    fn decoded_fields(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Field { .. } => 1,
                Piece::Nested { plan, .. } | Piece::Any { plan, .. } => plan.decoded_fields(),
                _ => 0,
            })
            .sum()
    }

    fn encode(&self, values: &[String], m: Markers, out: &mut Vec<u8>) -> Option<()> {
        for piece in &self.pieces {
            match piece {
                Piece::Const(bytes) => out.extend_from_slice(bytes),
                Piece::Scalar {
                    number,
                    slot,
                    scalar,
                    check,
                } => scalar.encode(*number, values.get(*slot)?, check.as_ref(), out)?,
                Piece::Nested { number, plan } => {
                    let mut inner = Vec::with_capacity(64);
                    plan.encode(values, m, &mut inner)?;
                    put_len_delimited(*number, &inner, out);
                }
                Piece::Any { number, type_url, plan } => {
                    let mut inner = Vec::with_capacity(64);
                    plan.encode(values, m, &mut inner)?;
                    let mut any = Vec::with_capacity(type_url.len() + inner.len() + 4);
                    any.extend_from_slice(type_url);
                    if !inner.is_empty() {
                        put_len_delimited(2, &inner, &mut any);
                    }
                    put_len_delimited(*number, &any, out);
                }
                Piece::Field {
                    parent,
                    field,
                    key,
                    template,
                    check,
                } => {
                    let value = fill(template, values, m)?;
                    let (bytes, message) = encode_alone(parent, key, &value)?;
                    if bytes.is_empty() {
                        return None;
                    }
                    if let Some(check) = check {
                        if !check.passes(&message.get_field(field)) {
                            return None;
                        }
                    }
                    out.extend_from_slice(&bytes);
                }
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Markers for the tests: `$0`, `$1`, ...
    const DOLLARS: Markers = Markers {
        whole: |s| s.strip_prefix('$')?.parse().ok(),
        within: |s| s.starts_with('$'),
    };

    const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";

    fn shape() -> Value {
        json!({
            "name": "$0",
            "type": "STRICT_DNS",
            "connect_timeout": "$1",
            "load_assignment": {
                "cluster_name": "$0",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": "$2", "port_value": "$3"
                }}}}]}]
            },
            "dns_lookup_family": "V4_ONLY"
        })
    }

    fn full(values: &[&str]) -> Result<Vec<u8>, super::super::DecodeError> {
        let owned: Vec<String> = values.iter().map(|v| (*v).to_string()).collect();
        let value = fill(&shape(), &owned, DOLLARS).unwrap();
        super::super::decode_checked(CLUSTER, &value).map(|m| super::super::encode(&m))
    }

    fn planned(plan: &EncodePlan, values: &[&str]) -> Option<(Vec<u8>, String)> {
        let owned: Vec<String> = values.iter().map(|v| (*v).to_string()).collect();
        plan.encode(&owned)
    }

    #[test]
    fn a_plan_encodes_what_a_full_decode_encodes() {
        let plan = EncodePlan::build(CLUSTER, &shape(), DOLLARS).expect("a plan");
        for values in [
            [r#""a""#, r#""5s""#, r#""a.example""#, "80"],
            [r#""b-long-name.ns""#, r#""0.250s""#, r#""10.0.0.1""#, "65535"],
            [r#""é\"x""#, r#""3600s""#, r#""h""#, "1"],
        ] {
            let (bytes, name) = planned(&plan, &values).expect("planned");
            assert_eq!(bytes, full(&values).unwrap(), "{values:?}");
            assert_eq!(name, serde_json::from_str::<String>(values[0]).unwrap());
        }
    }

    #[test]
    fn values_that_break_a_rule_or_change_presence_are_not_planned() {
        let plan = EncodePlan::build(CLUSTER, &shape(), DOLLARS).expect("a plan");
        // `connect_timeout` must be greater than zero: the full decode says so, the plan declines.
        let zero = [r#""a""#, r#""0s""#, r#""h""#, "80"];
        assert!(full(&zero).is_err());
        assert_eq!(planned(&plan, &zero), None);
        // An empty string would leave the field out of the encoding.
        assert_eq!(planned(&plan, &[r#""a""#, r#""1s""#, r#""""#, "80"]), None);
        // A port above 65535 breaks the field's rule; zero would leave the field out.
        let big = [r#""a""#, r#""1s""#, r#""h""#, "65536"];
        assert!(full(&big).is_err());
        assert_eq!(planned(&plan, &big), None);
        assert_eq!(planned(&plan, &[r#""a""#, r#""1s""#, r#""h""#, "0"]), None);
        // Not the JSON type of the field.
        assert_eq!(planned(&plan, &[r#""a""#, r#""1s""#, "5", "80"]), None);
        assert_eq!(planned(&plan, &[r#""a""#, "true", r#""h""#, "80"]), None);
        assert_eq!(planned(&plan, &[r#""a""#, r#""1s""#, r#""h""#, r#""80""#]), None);
    }

    #[test]
    fn durations_are_read_as_the_duration_helper_prints_them() {
        assert_eq!(duration(r#""3s""#), Some((3, 0)));
        assert_eq!(duration(r#""1.500s""#), Some((1, 500_000_000)));
        assert_eq!(duration(r#""0.000000001s""#), Some((0, 1)));
        for other in [
            r#""-1s""#,
            r#""1.s""#,
            r#""1.0000000001s""#,
            r#""s""#,
            "3",
            r#""3m""#,
            r#""1e3s""#,
        ] {
            assert_eq!(duration(other), None, "{other}");
        }
        // Whatever is read, the plan writes what a full decode writes.
        let plan = EncodePlan::build(CLUSTER, &shape(), DOLLARS).expect("a plan");
        for d in [r#""1s""#, r#""0.001s""#, r#""86400.250s""#, r#""12.000000007s""#] {
            let values = [r#""a""#, d, r#""h""#, "80"];
            assert_eq!(
                planned(&plan, &values).map(|p| p.0),
                Some(full(&values).unwrap()),
                "{d}"
            );
        }
    }

    const ROUTE: &str = "envoy.config.route.v3.Route";

    /// A route with per-filter configs: a map of `Any`s, one of them holding slots.
    fn route_shape() -> Value {
        json!({
            "name": "$0",
            "match": {"prefix": "$1"},
            "route": {"cluster": "$2", "timeout": "$4"},
            "typed_per_filter_config": {
                "z.cors": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
                    "allow_origin_string_match": [{"exact": "$3"}, {"prefix": "https://fixed."}],
                    "allow_methods": "GET, POST"
                },
                "a.off": {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true},
                "m.status": {
                    "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput"
                }
            }
        })
    }

    #[test]
    fn maps_of_anys_are_planned_entry_by_entry_in_key_order() {
        let plan = EncodePlan::build(ROUTE, &route_shape(), DOLLARS).expect("a plan");
        assert_eq!(plan.root.decoded_fields(), 0, "every slot is written by the plan");
        let full = |values: &[&str]| {
            let owned: Vec<String> = values.iter().map(|v| (*v).to_string()).collect();
            let value = fill(&route_shape(), &owned, DOLLARS).unwrap();
            super::super::decode_checked(ROUTE, &value).map(|m| super::super::encode(&m))
        };
        for values in [
            [r#""r1""#, r#""/a/""#, r#""c1""#, r#""https://a.example""#, r#""3s""#],
            [r#""r-2""#, r#""/""#, r#""c_2""#, r#""x""#, r#""0.500s""#],
        ] {
            let (bytes, name) = planned(&plan, &values).expect("planned");
            assert_eq!(bytes, full(&values).unwrap(), "{values:?}");
            assert_eq!(name, serde_json::from_str::<String>(values[0]).unwrap());
        }
        // Inside an `Any`, a value of another JSON type or one that would be left out is not
        // planned (the full decode decides).
        assert_eq!(planned(&plan, &["\"r\"", "\"/\"", "\"c\"", "7", "\"1s\""]), None);
        assert_eq!(planned(&plan, &["\"r\"", "\"/\"", "\"c\"", "\"\"", "\"1s\""]), None);
        // A type the pool does not know, or a marker as the type: no plan for that entry.
        let mut unknown = route_shape();
        unknown["typed_per_filter_config"]["z.cors"]["@type"] = json!("type.googleapis.com/no.Such");
        assert!(EncodePlan::build(ROUTE, &unknown, DOLLARS).is_none_or(|p| p.root.decoded_fields() == 1));
        let mut marker_type = route_shape();
        marker_type["typed_per_filter_config"]["z.cors"]["@type"] = json!("$5");
        assert!(EncodePlan::build(ROUTE, &marker_type, DOLLARS).is_none_or(|p| p.root.decoded_fields() == 1));
    }

    #[test]
    fn markers_where_no_plan_can_put_a_value_give_no_plan() {
        // A marker as a key.
        let mut bad = shape();
        bad["$4"] = json!(1);
        assert!(EncodePlan::build(CLUSTER, &bad, DOLLARS).is_none());
        // Two members of one oneof.
        let mut bad = shape();
        bad["type"] = json!("EDS");
        bad["cluster_type"] = json!({"name": "$4"});
        assert!(EncodePlan::build(CLUSTER, &bad, DOLLARS).is_none());
        // A field the type does not have.
        let mut bad = shape();
        bad["no_such_field"] = json!("$4");
        assert!(EncodePlan::build(CLUSTER, &bad, DOLLARS).is_none());
    }
}
