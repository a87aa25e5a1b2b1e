//! Stage 5: the only module that names Envoy protobuf types.
//!
//! Rendered rule output (JSON values in the proto3 JSON mapping) is decoded against a descriptor
//! pool of the Envoy v3 API, the one shipped by `envoy-types`, so a misspelled field or a wrong
//! type is an error with a field path instead of a silently dropped setting; `validate` checks
//! Envoy's own validation rules. The rules stage calls these and keeps the encoded bytes;
//! `bootstrap` renders
//! Envoy bootstraps.

pub mod bootstrap;
pub mod plan;
pub mod validate;

use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
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
    let mut bytes = encode(&m);
    // Children can be large (a route table's routes): one allocation, no copying as it grows.
    bytes.reserve_exact(
        fields
            .iter()
            .map(|(field, items)| {
                let tag = prost::encoding::encoded_len_varint((u64::from(field.number()) << 3) | 2);
                items
                    .iter()
                    .map(|i| tag + prost::encoding::encoded_len_varint(i.len() as u64) + i.len())
                    .sum::<usize>()
            })
            .sum(),
    );
    for (field, items) in &fields {
        let tag = (u64::from(field.number()) << 3) | 2;
        for item in *items {
            prost::encoding::encode_varint(tag, &mut bytes);
            prost::encoding::encode_varint(item.len() as u64, &mut bytes);
            bytes.extend_from_slice(item);
        }
    }
    Ok(bytes)
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

/// The protobuf encoding of a message.
pub fn encode(message: &DynamicMessage) -> Vec<u8> {
    message.encode_to_vec()
}

/// A message in the proto3 JSON mapping (camelCase names, defaults omitted), for humans and goldens.
pub fn to_json(message: &DynamicMessage) -> Value {
    let options = SerializeOptions::new().skip_default_fields(true);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or_else(|e| Value::String(format!("<cannot serialize: {e}>")))
}

/// Decodes encoded bytes of type `name` back into JSON (admin dumps, `translate` output).
pub fn bytes_to_json(name: &str, bytes: &[u8]) -> Value {
    match message(name).map(|d| DynamicMessage::decode(d, bytes)) {
        Some(Ok(m)) => to_json(&m),
        Some(Err(e)) => Value::String(format!("<cannot decode: {e}>")),
        None => Value::String(format!("<unknown type {name}>")),
    }
}

/// Decodes encoded bytes of type `name` into JSON with proto field names (`prefix_rewrite`, as
/// templates write them), defaults left out: what a parent template sees of its children.
pub fn bytes_to_json_proto_names(name: &str, bytes: &[u8]) -> Value {
    let options = SerializeOptions::new()
        .skip_default_fields(true)
        .use_proto_field_name(true);
    match message(name).map(|d| DynamicMessage::decode(d, bytes)) {
        Some(Ok(m)) => m
            .serialize_with_options(serde_json::value::Serializer, &options)
            .unwrap_or_else(|e| Value::String(format!("<cannot serialize: {e}>"))),
        Some(Err(e)) => Value::String(format!("<cannot decode: {e}>")),
        None => Value::String(format!("<unknown type {name}>")),
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
    fn decodes_with_any_and_durations() {
        let v = json!({
            "name": "c", "connect_timeout": "3s", "type": "STRICT_DNS",
        });
        let m = decode("envoy.config.cluster.v3.Cluster", &v).unwrap();
        assert_eq!(to_json(&m)["connectTimeout"], "3s");
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
