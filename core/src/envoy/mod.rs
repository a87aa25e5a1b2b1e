//! Stage 5: the only module that names Envoy protobuf types.
//!
//! Rendered rule output (JSON values in the proto3 JSON mapping) is decoded against a descriptor
//! pool of the Envoy v3 API, the one shipped by `envoy-types`, so a misspelled field or a wrong
//! type is an error with a field path instead of a silently dropped setting; `validate` checks
//! Envoy's own validation rules. The rules stage calls these and keeps the encoded bytes;
//! `bootstrap` renders
//! Envoy bootstraps.

pub mod bootstrap;
pub mod json;
pub mod plan;
pub mod validate;

use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, ReflectMessage as _, SerializeOptions,
};
use serde_json::Value;

/// Envoy's descriptors, without source comments (written by `build.rs`).
static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// The descriptor pool of the Envoy v3 API, decoded once on first use and shared by every thread.
///
/// Every descriptor prost-reflect hands out holds a reference count on its pool, so threads that
/// decode messages in parallel bounce that counter's cache line between cores: two threads
/// decoding everything were slower than one. Rendering keeps that off its hot path (most nodes go
/// through an encode plan, see [`plan`], which touches no descriptor for string and number
/// values), so one pool (~18 MiB resident) serves all threads.
pub fn pool() -> DescriptorPool {
    static SHARED: OnceLock<DescriptorPool> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            DescriptorPool::decode(DESCRIPTORS).expect("the descriptor set built into attache is valid; this is a bug")
        })
        .clone()
}

/// The descriptor of a message type, if the pool has it.
pub fn message(name: &str) -> Option<MessageDescriptor> {
    pool().get_message_by_name(name)
}

/// Why rendered output is not a valid Envoy message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at `{path}`: {message}")]
pub struct DecodeError {
    /// Field path inside the message (`filter_chains[0].filters[0].typed_config`).
    pub path: String,
    /// What was wrong.
    pub message: String,
}

/// Decodes a JSON value into a message of type `name` (unknown fields are errors).
///
/// # Errors
/// A [`DecodeError`] with the field path.
pub fn decode(name: &str, value: &Value) -> Result<DynamicMessage, DecodeError> {
    let desc = message(name).ok_or_else(|| DecodeError {
        path: String::new(),
        message: format!("unknown Envoy message type `{name}`"),
    })?;
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    // Tracking the field path costs on every field: decode without it, and again with it only
    // to say where an error is.
    if let Ok(m) = DynamicMessage::deserialize_with_options(desc.clone(), value, &options) {
        return Ok(m);
    }
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    DynamicMessage::deserialize_with_options(desc, de, &options).map_err(|e| {
        let path = track.path().to_string();
        DecodeError {
            path: if path == "." { String::new() } else { path },
            message: e.to_string(),
        }
    })
}

/// Decodes like [`decode`], then checks Envoy's protoc-gen-validate rules, so that what passes is
/// what Envoy accepts (as far as those rules go).
///
/// # Errors
/// A [`DecodeError`] with the field path of the first problem (all violations are listed).
pub fn decode_checked(name: &str, value: &Value) -> Result<DynamicMessage, DecodeError> {
    let message = decode(name, value)?;
    match violations_error(&validate::check(&message)) {
        None => Ok(message),
        Some(e) => Err(e),
    }
}

/// Decodes, checks and encodes `value`, whose top-level list fields named in `children` hold
/// messages that were already decoded, checked and encoded on their own: those fields are left
/// out of the decode, and the children's bytes are appended as the field's elements (protobuf
/// allows a repeated field's elements anywhere in the encoding). So a route table of 10,000
/// routes is not decoded and checked a second time. Falls back to a full decode when a field is
/// not a repeated message field.
///
/// # Errors
/// A [`DecodeError`] as [`decode_checked`] gives.
pub fn encode_with_children(name: &str, value: &Value, children: &[(&str, &[&[u8]])]) -> Result<Vec<u8>, DecodeError> {
    let full = || decode_checked(name, value).map(|m| encode(&m));
    let Some(desc) = message(name) else { return full() };
    let mut shell = value.clone();
    let mut fields = Vec::new();
    for (key, items) in children {
        let field = desc.get_field_by_name(key).or_else(|| desc.get_field_by_json_name(key));
        let Some(field) = field.filter(|f| f.is_list() && f.kind().as_message().is_some()) else {
            return full();
        };
        if let Some(obj) = shell.as_object_mut() {
            obj.remove(*key);
        }
        fields.push((field, *items));
    }
    let m = decode(name, &shell)?;
    let mut violations = validate::check(&m);
    for (field, items) in &fields {
        violations.extend(validate::check_list_len(&desc, field, items.len()));
    }
    if let Some(e) = violations_error(&violations) {
        return Err(e);
    }
    let shell_bytes = encode(&m);
    // Children can be large (a route table's routes): one allocation, no copying as it grows.
    let mut bytes = Vec::with_capacity(
        shell_bytes.len()
            + fields
                .iter()
                .map(|(field, items)| {
                    let tag = prost::encoding::encoded_len_varint((u64::from(field.number()) << 3) | 2);
                    items
                        .iter()
                        .map(|i| tag + prost::encoding::encoded_len_varint(i.len() as u64) + i.len())
                        .sum::<usize>()
                })
                .sum::<usize>(),
    );
    // Each children field goes where a full encoding puts it, in field-number order (after the
    // shell's fields with smaller numbers), so the bytes are exactly a full encoding's.
    fields.sort_by_key(|(field, _)| field.number());
    let mut rest = &shell_bytes[..];
    for (field, items) in &fields {
        let at = fields_below(rest, field.number());
        bytes.extend_from_slice(&rest[..at]);
        rest = &rest[at..];
        let tag = (u64::from(field.number()) << 3) | 2;
        for item in *items {
            prost::encoding::encode_varint(tag, &mut bytes);
            prost::encoding::encode_varint(item.len() as u64, &mut bytes);
            bytes.extend_from_slice(item);
        }
    }
    bytes.extend_from_slice(rest);
    Ok(bytes)
}

/// The length of the leading top-level fields of an encoded message whose numbers are below
/// `number` (an encoding in field-number order, as `encode` writes it). Stops at anything it
/// cannot walk (then the children go after what it could).
fn fields_below(bytes: &[u8], number: u32) -> usize {
    let mut at = 0;
    while at < bytes.len() {
        let mut cur = &bytes[at..];
        let Ok(tag) = prost::encoding::decode_varint(&mut cur) else {
            return at;
        };
        if (tag >> 3) >= u64::from(number) {
            return at;
        }
        // What follows the tag (and, for varints and lengths, what `cur` has not read yet).
        let remaining = match tag & 7 {
            0 => match prost::encoding::decode_varint(&mut cur) {
                Ok(_) => 0,
                Err(_) => return at,
            },
            1 => 8,
            2 => match prost::encoding::decode_varint(&mut cur).map(usize::try_from) {
                Ok(Ok(len)) => len,
                _ => return at,
            },
            5 => 4,
            _ => return at,
        };
        let next = bytes.len() - cur.len() + remaining;
        if next > bytes.len() {
            return at;
        }
        at = next;
    }
    at
}

/// All violations as one error, with the path of the first.
fn violations_error(violations: &[validate::Violation]) -> Option<DecodeError> {
    let first = violations.first()?;
    Some(DecodeError {
        path: first.path.clone(),
        message: violations
            .iter()
            .map(|v| format!("`{}` {}", v.path, v.message))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// The protobuf encoding of a message, canonical: fields in number order and map entries in key
/// order, also inside `Any` values. prost-reflect writes a map's entries in the order of its hash
/// map, which differs from one map to the next: the same message (a route with two per-filter
/// configurations) would get other bytes, and so another version, in another process or
/// translation.
pub fn encode(message: &DynamicMessage) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_canonical(message, &mut buf);
    buf
}

const ANY: &str = "google.protobuf.Any";

fn encode_canonical(message: &DynamicMessage, buf: &mut Vec<u8>) {
    use prost_reflect::Value as V;
    let mut fields: Vec<(prost_reflect::FieldDescriptor, &V)> = message.fields().collect();
    fields.sort_by_key(|(f, _)| f.number());
    let nested = |tag: u32, m: &DynamicMessage, buf: &mut Vec<u8>| {
        let mut inner = Vec::new();
        encode_message_value(m, &mut inner);
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
        prost::encoding::encode_varint(inner.len() as u64, buf);
        buf.extend_from_slice(&inner);
    };
    for (field, value) in fields {
        match value {
            V::Map(map) => {
                let Some(entry) = field.kind().as_message().cloned() else {
                    continue;
                };
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (k, v) in entries {
                    let mut e = DynamicMessage::new(entry.clone());
                    e.set_field_by_number(1, V::from(k.clone()));
                    e.set_field_by_number(2, v.clone());
                    nested(field.number(), &e, buf);
                }
            }
            V::Message(m) => nested(field.number(), m, buf),
            V::List(items) if items.iter().all(|i| matches!(i, V::Message(_))) => {
                for item in items {
                    if let V::Message(m) = item {
                        nested(field.number(), m, buf);
                    }
                }
            }
            other => {
                // A scalar (or a list of scalars, packed as prost-reflect packs it): encoded on
                // its own, in a message holding only this field.
                let mut alone = DynamicMessage::new(message.descriptor());
                alone.set_field(&field, other.clone());
                alone.encode_raw(buf);
            }
        }
    }
}

/// A nested message's bytes: an `Any`'s value is itself encoded canonically.
fn encode_message_value(m: &DynamicMessage, buf: &mut Vec<u8>) {
    if m.descriptor().full_name() == ANY {
        let type_url = m.get_field_by_number(1).and_then(|v| v.as_str().map(str::to_string));
        let value = m.get_field_by_number(2).and_then(|v| v.as_bytes().cloned());
        if let (Some(type_url), Some(value)) = (type_url, value) {
            let inner = type_url
                .rsplit('/')
                .next()
                .and_then(message)
                .and_then(|desc| DynamicMessage::decode(desc, value.clone()).ok());
            if let Some(inner) = inner {
                let mut bytes = Vec::new();
                encode_canonical(&inner, &mut bytes);
                let mut any = DynamicMessage::new(m.descriptor());
                any.set_field_by_number(1, prost_reflect::Value::String(type_url));
                any.set_field_by_number(2, prost_reflect::Value::Bytes(bytes.into()));
                any.encode_raw(buf);
                return;
            }
        }
    }
    encode_canonical(m, buf);
}

/// A message in the proto3 JSON mapping (defaults omitted), with `names` as field names:
/// prost-reflect's serialization, which [`json`] reads the wire like and falls back to.
///
/// # Errors
/// What prost-reflect's serializer returns.
pub(crate) fn serialize(message: &DynamicMessage, names: json::Names) -> Result<Value, serde_json::Error> {
    let options = SerializeOptions::new()
        .skip_default_fields(true)
        .use_proto_field_name(names == json::Names::Proto);
    message.serialize_with_options(serde_json::value::Serializer, &options)
}

/// Decodes encoded bytes of type `name` back into JSON (admin dumps, `translate` output).
pub fn bytes_to_json(name: &str, bytes: &[u8]) -> Value {
    bytes_to_json_with(name, bytes, json::Names::Json)
}

/// Decodes encoded bytes of type `name` into JSON with proto field names (`prefix_rewrite`, as
/// templates write them), defaults left out: what a parent template sees of its children.
pub fn bytes_to_json_proto_names(name: &str, bytes: &[u8]) -> Value {
    bytes_to_json_with(name, bytes, json::Names::Proto)
}

/// Straight from the wire ([`json`]); what it cannot read goes through prost-reflect, which
/// says what is wrong with it.
fn bytes_to_json_with(name: &str, bytes: &[u8], names: json::Names) -> Value {
    let Some(desc) = message(name) else {
        return Value::String(format!("<unknown type {name}>"));
    };
    if let Ok(v) = json::to_json(&desc, bytes, names) {
        return v;
    }
    reflect_to_json(desc, bytes, names)
}

/// What `bytes_to_json` gives, through a prost-reflect `DynamicMessage` (the reference the
/// wire reader is tested against, and its fallback).
pub fn reflect_to_json(desc: MessageDescriptor, bytes: &[u8], names: json::Names) -> Value {
    match DynamicMessage::decode(desc, bytes) {
        Ok(m) => serialize(&m, names).unwrap_or_else(|e| Value::String(format!("<cannot serialize: {e}>"))),
        Err(e) => Value::String(format!("<cannot decode: {e}>")),
    }
}

/// A snapshot's resources of one type as JSON (proto3 JSON mapping), sorted by name, with the
/// private keys of Secrets replaced by `<redacted>`: this is what humans and files get.
pub fn resources_json(snapshot: &crate::snapshot::Snapshot, ty: crate::snapshot::ResourceType) -> Vec<Value> {
    let mut out = resources_json_with_keys(snapshot, ty);
    out.iter_mut().for_each(redact_private_keys);
    out
}

/// [`resources_json`] with private keys left in (a static bootstrap must carry them).
pub fn resources_json_with_keys(snapshot: &crate::snapshot::Snapshot, ty: crate::snapshot::ResourceType) -> Vec<Value> {
    snapshot
        .of_type(ty)
        .map(|(_, r)| bytes_to_json(ty.message_name(), &r.bytes))
        .collect()
}

/// Replaces every `privateKey` in a message's JSON by `{"inlineString": "<redacted>"}`.
pub fn redact_private_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "privateKey" || k == "private_key" {
                    *v = serde_json::json!({"inlineString": "<redacted>"});
                } else {
                    redact_private_keys(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_private_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodings_are_canonical_whatever_order_a_map_holds_its_entries_in() {
        // Two per-filter configurations (a map), one of them holding an `Any` with a map inside
        // (the route's `typed_per_filter_config`): each decode builds new hash maps, which
        // prost-reflect would write in their own order.
        let route = json!({
            "name": "r",
            "match": {"prefix": "/"},
            "route": {"cluster": "c"},
            "typed_per_filter_config": {
                "envoy.filters.http.ext_authz": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                    "check_settings": {"context_extensions": {"a": "1", "b": "2", "c": "3", "d": "4"}}
                },
                "envoy.filters.http.cors": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
                    "allow_methods": "GET"
                }
            }
        });
        let first = encode(&decode_checked("envoy.config.route.v3.Route", &route).unwrap());
        for _ in 0..20 {
            let again = encode(&decode_checked("envoy.config.route.v3.Route", &route).unwrap());
            assert_eq!(again, first);
        }
        // And it is the same message.
        let back = DynamicMessage::decode(message("envoy.config.route.v3.Route").unwrap(), &first[..]).unwrap();
        let back = serialize(&back, json::Names::Json).unwrap();
        assert_eq!(back["typedPerFilterConfig"].as_object().unwrap().len(), 2);
    }

    #[test]
    fn decodes_with_any_and_durations() {
        let v = json!({
            "name": "c", "connect_timeout": "3s", "type": "STRICT_DNS",
        });
        let m = decode("envoy.config.cluster.v3.Cluster", &v).unwrap();
        assert_eq!(serialize(&m, json::Names::Json).unwrap()["connectTimeout"], "3s");
    }

    #[test]
    fn unknown_fields_have_paths() {
        let v = json!({"name": "l", "filter_chains": [{"filters": [{"name": "x", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefx": "a"}}]}]});
        let e = decode("envoy.config.listener.v3.Listener", &v).unwrap_err();
        assert!(e.path.starts_with("filter_chains[0].filters[0].typed_config"), "{e}");
        assert!(e.message.contains("stat_prefx"), "{e}");
    }
}
