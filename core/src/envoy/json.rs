//! Encoded protobuf bytes to proto3 JSON, read straight from the wire with the descriptors:
//! what `attache translate -o json`, the admin's dumps, the goldens and parent templates see of
//! a resource.
//!
//! The output is exactly what decoding into a prost-reflect `DynamicMessage` and serializing
//! it gives (defaults left out, 64-bit integers as strings, enums by name; tests compare the
//! two on every golden output and on random translations), without building the message: that
//! decode visited every field descriptor of every message and was a third of the command
//! line's time. Well-known types other than `Any` are small and rare and go through
//! prost-reflect; anything this reader does not take (a malformed message) is an `Err`, and the
//! caller falls back to prost-reflect, which reports it. Must not: encode, or know Envoy's
//! messages by name.

use base64::{display::Base64Display, prelude::BASE64_STANDARD};
use prost::encoding::{decode_key, decode_varint, WireType};
use prost_reflect::{Cardinality, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

/// How field names are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// `prefixRewrite`: the proto3 JSON mapping.
    Json,
    /// `prefix_rewrite`: as in the .proto files (and the templates).
    Proto,
}

/// Why bytes were not read (the caller falls back to prost-reflect, which says why).
#[derive(Debug)]
pub struct Unreadable;

type Read<T> = Result<T, Unreadable>;

/// Nesting deeper than this is refused (prost's own limit).
const MAX_DEPTH: usize = 100;

/// The message of type `desc` encoded in `bytes`, as proto3 JSON.
///
/// # Errors
/// [`Unreadable`] when the bytes are not a valid message of that type.
pub fn to_json(desc: &MessageDescriptor, bytes: &[u8], names: Names) -> Read<Value> {
    message(desc, bytes, names, 0)
}

/// One field's occurrences on the wire, in order.
struct Seen<'a> {
    field: FieldDescriptor,
    values: Vec<Raw<'a>>,
}

/// A value as it was on the wire.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

fn message(desc: &MessageDescriptor, bytes: &[u8], names: Names, depth: usize) -> Read<Value> {
    if depth > MAX_DEPTH {
        return Err(Unreadable);
    }
    match well_known_type(desc.full_name()) {
        Some("Any") => return any(desc, bytes, names, depth),
        Some(_) => return well_known(desc, bytes, names),
        None => {}
    }
    let seen = scan(desc, bytes)?;
    let mut out = Map::new();
    fields(&seen, names, depth, &mut out)?;
    Ok(Value::Object(out))
}

/// Every known field's occurrences, by field, in wire order; unknown fields are skipped (the
/// JSON mapping leaves them out). Each occurrence's wire type is checked against its field.
fn scan<'a>(desc: &MessageDescriptor, mut buf: &'a [u8]) -> Read<Vec<Seen<'a>>> {
    let mut seen: Vec<Seen<'a>> = Vec::new();
    while !buf.is_empty() {
        let (number, wire) = decode_key(&mut buf).map_err(|_| Unreadable)?;
        let raw = match wire {
            WireType::Varint => Raw::Varint(decode_varint(&mut buf).map_err(|_| Unreadable)?),
            WireType::ThirtyTwoBit => {
                let (v, rest) = buf.split_first_chunk::<4>().ok_or(Unreadable)?;
                buf = rest;
                Raw::Fixed32(u32::from_le_bytes(*v))
            }
            WireType::SixtyFourBit => {
                let (v, rest) = buf.split_first_chunk::<8>().ok_or(Unreadable)?;
                buf = rest;
                Raw::Fixed64(u64::from_le_bytes(*v))
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).map_err(|_| Unreadable)?).map_err(|_| Unreadable)?;
                if len > buf.len() {
                    return Err(Unreadable);
                }
                let (v, rest) = buf.split_at(len);
                buf = rest;
                Raw::Bytes(v)
            }
            WireType::StartGroup | WireType::EndGroup => return Err(Unreadable),
        };
        let Some(field) = desc.get_field(number) else {
            continue;
        };
        let kind = field.kind();
        let expected = match kind {
            Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => WireType::ThirtyTwoBit,
            Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => WireType::SixtyFourBit,
            Kind::String | Kind::Bytes | Kind::Message(_) => WireType::LengthDelimited,
            _ => WireType::Varint,
        };
        let packed =
            field.cardinality() == Cardinality::Repeated && packable(&kind) && wire == WireType::LengthDelimited;
        if wire != expected && !packed {
            return Err(Unreadable);
        }
        if let (Kind::String, Raw::Bytes(b)) = (&kind, raw) {
            std::str::from_utf8(b).map_err(|_| Unreadable)?;
        }
        // A member of a oneof clears the others. prost-reflect decodes what it then drops (and
        // reports its errors): rare, so that case is left to it, as is a message seen twice.
        if let Some(oneof) = field.containing_oneof() {
            if seen
                .iter()
                .any(|s| s.field.number() != number && s.field.containing_oneof().as_ref() == Some(&oneof))
            {
                return Err(Unreadable);
            }
        }
        match seen.iter_mut().find(|s| s.field.number() == number) {
            Some(s) => s.values.push(raw),
            None => seen.push(Seen {
                field,
                values: vec![raw],
            }),
        }
    }
    Ok(seen)
}

/// The JSON members of the fields seen, defaults left out.
fn fields(seen: &[Seen<'_>], names: Names, depth: usize, out: &mut Map<String, Value>) -> Read<()> {
    for s in seen {
        let field = &s.field;
        let kind = field.kind();
        let value = if field.is_map() {
            let Kind::Message(entry) = &kind else {
                return Err(Unreadable);
            };
            let map = map(entry, &s.values, names, depth)?;
            if map.is_empty() {
                continue;
            }
            Value::Object(map)
        } else if field.cardinality() == Cardinality::Repeated {
            let mut list = Vec::new();
            for raw in &s.values {
                match (raw, packable(&kind)) {
                    (Raw::Bytes(mut packed), true) => {
                        while !packed.is_empty() {
                            let one = packed_one(&kind, &mut packed)?;
                            list.push(scalar(&kind, one)?);
                        }
                    }
                    _ => list.push(single(&kind, &[*raw], names, depth)?),
                }
            }
            if list.is_empty() {
                continue;
            }
            Value::Array(list)
        } else {
            let value = single(&kind, &s.values, names, depth)?;
            if !field.supports_presence() && is_default(&kind, &value) {
                continue;
            }
            value
        };
        let name = match names {
            Names::Json => field.json_name(),
            Names::Proto => field.name(),
        };
        out.insert(name.to_string(), value);
    }
    Ok(())
}

/// A map field's entries: key and value of each entry message, the last entry of a key winning.
fn map(entry: &MessageDescriptor, values: &[Raw<'_>], names: Names, depth: usize) -> Read<Map<String, Value>> {
    let key_field = entry.map_entry_key_field();
    let value_field = entry.map_entry_value_field();
    let (key_kind, value_kind) = (key_field.kind(), value_field.kind());
    let mut out = Map::new();
    for raw in values {
        let Raw::Bytes(bytes) = raw else {
            return Err(Unreadable);
        };
        let seen = scan(entry, bytes)?;
        let of = |f: &FieldDescriptor| {
            seen.iter()
                .find(|s| s.field.number() == f.number())
                .map(|s| &s.values[..])
        };
        let key = match of(&key_field) {
            Some(v) => single(&key_kind, v, names, depth)?,
            None => default_of(&key_kind),
        };
        let key = match key {
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => return Err(Unreadable),
        };
        let value = match of(&value_field) {
            Some(v) => single(&value_kind, v, names, depth)?,
            None => match &value_kind {
                Kind::Message(m) => message(m, &[], names, depth + 1)?,
                k => default_of(k),
            },
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// A singular value from its occurrences: the last scalar, or the one message.
fn single(kind: &Kind, values: &[Raw<'_>], names: Names, depth: usize) -> Read<Value> {
    match kind {
        Kind::Message(m) => match values {
            [Raw::Bytes(b)] => message(m, b, names, depth + 1),
            // Seen twice: the merge of both (left to prost-reflect, see `scan`).
            _ => Err(Unreadable),
        },
        _ => scalar(kind, *values.last().ok_or(Unreadable)?),
    }
}

/// Whether values of this kind may come packed.
fn packable(kind: &Kind) -> bool {
    !matches!(kind, Kind::String | Kind::Bytes | Kind::Message(_))
}

/// One element of a packed list.
fn packed_one<'a>(kind: &Kind, buf: &mut &'a [u8]) -> Read<Raw<'a>> {
    Ok(match kind {
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => {
            let (v, rest) = buf.split_first_chunk::<4>().ok_or(Unreadable)?;
            *buf = rest;
            Raw::Fixed32(u32::from_le_bytes(*v))
        }
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => {
            let (v, rest) = buf.split_first_chunk::<8>().ok_or(Unreadable)?;
            *buf = rest;
            Raw::Fixed64(u64::from_le_bytes(*v))
        }
        _ => Raw::Varint(decode_varint(buf).map_err(|_| Unreadable)?),
    })
}

/// A scalar (not a message) as JSON.
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
fn scalar(kind: &Kind, raw: Raw<'_>) -> Read<Value> {
    Ok(match (kind, raw) {
        (Kind::Int32, Raw::Varint(v)) => Value::from(v as i32),
        (Kind::Int64, Raw::Varint(v)) => Value::String((v as i64).to_string()),
        (Kind::Uint32, Raw::Varint(v)) => Value::from(v as u32),
        (Kind::Uint64, Raw::Varint(v)) => Value::String(v.to_string()),
        (Kind::Sint32, Raw::Varint(v)) => {
            let v = v as u32;
            Value::from(((v >> 1) as i32) ^ -((v & 1) as i32))
        }
        (Kind::Sint64, Raw::Varint(v)) => Value::String((((v >> 1) as i64) ^ -((v & 1) as i64)).to_string()),
        (Kind::Bool, Raw::Varint(v)) => Value::Bool(v != 0),
        (Kind::Enum(e), Raw::Varint(v)) => {
            let number = v as i32;
            if e.full_name() == "google.protobuf.NullValue" {
                Value::Null
            } else {
                match e.get_value(number) {
                    Some(value) => Value::String(value.name().to_string()),
                    None => Value::from(number),
                }
            }
        }
        (Kind::Fixed32, Raw::Fixed32(v)) => Value::from(v),
        (Kind::Sfixed32, Raw::Fixed32(v)) => Value::from(v as i32),
        (Kind::Float, Raw::Fixed32(v)) => float(f64::from(f32::from_bits(v))),
        (Kind::Fixed64, Raw::Fixed64(v)) => Value::String(v.to_string()),
        (Kind::Sfixed64, Raw::Fixed64(v)) => Value::String((v as i64).to_string()),
        (Kind::Double, Raw::Fixed64(v)) => float(f64::from_bits(v)),
        (Kind::String, Raw::Bytes(b)) => Value::String(std::str::from_utf8(b).map_err(|_| Unreadable)?.to_string()),
        (Kind::Bytes, Raw::Bytes(b)) => Value::String(Base64Display::new(b, &BASE64_STANDARD).to_string()),
        _ => return Err(Unreadable),
    })
}

/// A float or double as the JSON mapping writes it (non-finite values as strings).
fn float(v: f64) -> Value {
    if v.is_finite() {
        Value::from(v)
    } else if v.is_nan() {
        Value::String("NaN".into())
    } else if v > 0.0 {
        Value::String("Infinity".into())
    } else {
        Value::String("-Infinity".into())
    }
}

/// The JSON of a kind's default value (a map entry without its key or value).
fn default_of(kind: &Kind) -> Value {
    match kind {
        Kind::Int64 | Kind::Uint64 | Kind::Sint64 | Kind::Fixed64 | Kind::Sfixed64 => Value::String("0".into()),
        Kind::Float | Kind::Double => Value::from(0.0),
        Kind::Bool => Value::Bool(false),
        Kind::String | Kind::Bytes => Value::String(String::new()),
        Kind::Enum(e) => {
            scalar(kind, Raw::Varint(0)).unwrap_or_else(|_| Value::String(e.default_value().name().to_string()))
        }
        _ => Value::from(0),
    }
}

/// Whether a field without presence holds its default (and so is left out).
fn is_default(kind: &Kind, value: &Value) -> bool {
    match value {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => match kind {
            Kind::Int64 | Kind::Uint64 | Kind::Sint64 | Kind::Fixed64 | Kind::Sfixed64 => s == "0",
            Kind::Enum(e) => e.get_value(0).is_some_and(|v| v.name() == s),
            _ => s.is_empty(),
        },
        Value::Null => matches!(kind, Kind::Enum(_)),
        _ => false,
    }
}

/// The well-known types the JSON mapping writes in a form of their own (prost-reflect's list),
/// by their short name.
fn well_known_type(full_name: &str) -> Option<&str> {
    const SPECIAL: [&str; 17] = [
        "Any",
        "Timestamp",
        "Duration",
        "Struct",
        "FloatValue",
        "DoubleValue",
        "Int32Value",
        "Int64Value",
        "UInt32Value",
        "UInt64Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
        "FieldMask",
        "ListValue",
        "Value",
        "Empty",
    ];
    full_name
        .strip_prefix("google.protobuf.")
        .filter(|n| SPECIAL.contains(n))
}

/// `google.protobuf.Any`: `@type` and the payload's members (a well-known payload under `value`).
fn any(desc: &MessageDescriptor, bytes: &[u8], names: Names, depth: usize) -> Read<Value> {
    let seen = scan(desc, bytes)?;
    let last = |n: u32| {
        seen.iter()
            .find(|s| s.field.number() == n)
            .and_then(|s| s.values.last().copied())
    };
    let type_url = match last(1) {
        Some(Raw::Bytes(b)) => std::str::from_utf8(b).map_err(|_| Unreadable)?,
        Some(_) => return Err(Unreadable),
        None => "",
    };
    // Several `value` occurrences are one merged payload, as for any bytes field: the last.
    let payload: &[u8] = match last(2) {
        Some(Raw::Bytes(b)) => b,
        Some(_) => return Err(Unreadable),
        None => &[],
    };
    let name = type_url.rsplit_once('/').map(|(_, n)| n).ok_or(Unreadable)?;
    if name.is_empty() {
        return Err(Unreadable);
    }
    let inner = desc.parent_pool().get_message_by_name(name).ok_or(Unreadable)?;
    let mut out = Map::new();
    out.insert("@type".into(), Value::String(type_url.to_string()));
    if well_known_type(name).is_some() {
        out.insert("value".into(), message(&inner, payload, names, depth + 1)?);
    } else {
        let seen = scan(&inner, payload)?;
        fields(&seen, names, depth + 1, &mut out)?;
    }
    Ok(Value::Object(out))
}

/// A well-known type other than `Any` (durations, wrappers, structs: small), through
/// prost-reflect.
fn well_known(desc: &MessageDescriptor, bytes: &[u8], names: Names) -> Read<Value> {
    let m = prost_reflect::DynamicMessage::decode(desc.clone(), bytes).map_err(|_| Unreadable)?;
    super::serialize(&m, names).map_err(|_| Unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use serde_json::json;

    /// The encoding of `value` as message `name`.
    fn encode(name: &str, value: Value) -> Vec<u8> {
        crate::envoy::decode(name, &value).unwrap().encode_to_vec()
    }

    /// Reads `bytes` both ways and checks they agree; returns the JSON (camelCase names).
    fn same(name: &str, bytes: &[u8]) -> Value {
        let desc = crate::envoy::message(name).unwrap();
        let mut out = Value::Null;
        for names in [Names::Proto, Names::Json] {
            let wire = to_json(&desc, bytes, names).expect("read from the wire");
            assert_eq!(
                wire,
                crate::envoy::reflect_to_json(desc.clone(), bytes, names),
                "{names:?}"
            );
            out = wire;
        }
        out
    }

    #[test]
    fn scalars_enums_lists_maps_and_any_read_as_prost_reflect_reads_them() {
        let cluster = "envoy.config.cluster.v3.Cluster";
        let bytes = encode(
            cluster,
            json!({
                "name": "c", "type": "STRICT_DNS", "lb_policy": "RING_HASH",
                "connect_timeout": "1.5s", "per_connection_buffer_limit_bytes": 0,
                "common_lb_config": {"healthy_panic_threshold": {"value": -0.0}},
                "outlier_detection": {"consecutive_5xx": 7, "max_ejection_percent": 100},
                "metadata": {"filter_metadata": {"b": {"x": [1, "y", null, true, {"z": 2.5}]}, "a": {}}},
                "typed_extension_protocol_options": {
                    "k": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "3s"},
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 100}}
                    }
                },
                "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "::1", "port_value": 80}}}}
                ]}]},
            }),
        );
        let out = same(cluster, &bytes);
        assert_eq!(out["lbPolicy"], "RING_HASH");
        assert_eq!(
            out["perConnectionBufferLimitBytes"], 0,
            "a wrapper is kept at its default"
        );
    }

    #[test]
    fn packed_lists_64_bit_integers_and_non_finite_floats() {
        let retry = "envoy.config.route.v3.RetryPolicy";
        same(
            retry,
            &encode(
                retry,
                json!({"retriable_status_codes": [500, 503, 0, 4294967295u32], "num_retries": 3}),
            ),
        );
        let range = "envoy.type.v3.Int64Range";
        let out = same(
            range,
            &encode(
                range,
                json!({"start": "-9223372036854775808", "end": "9223372036854775807"}),
            ),
        );
        assert_eq!(out["start"], "-9223372036854775808");
        // A double's NaN and infinities: encoded by hand (the JSON mapping takes them as strings).
        let percent = "envoy.type.v3.Percent";
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e-300] {
            let mut bytes = vec![0x09];
            bytes.extend_from_slice(&v.to_le_bytes());
            same(percent, &bytes);
        }
    }

    #[test]
    fn a_message_seen_twice_or_a_oneof_switch_is_left_to_prost_reflect() {
        let route = "envoy.config.route.v3.Route";
        let first = encode(
            route,
            json!({"name": "a", "match": {"prefix": "/a", "case_sensitive": false}, "route": {"cluster": "x", "timeout": "1s"}}),
        );
        let second = encode(route, json!({"redirect": {"path_redirect": "/c"}}));
        let desc = crate::envoy::message(route).unwrap();
        for bytes in [
            [first.clone(), first.clone()].concat(),
            [first.clone(), second].concat(),
        ] {
            assert!(to_json(&desc, &bytes, Names::Json).is_err());
            assert_eq!(
                crate::envoy::bytes_to_json(route, &bytes),
                crate::envoy::reflect_to_json(desc.clone(), &bytes, Names::Json)
            );
        }
        // A scalar seen twice: the last one.
        let twice = [first, encode(route, json!({"name": "b"}))].concat();
        assert_eq!(same(route, &twice)["name"], "b");
    }

    #[test]
    fn an_any_of_a_well_known_type_has_a_value_member_and_of_others_their_fields() {
        let any = "google.protobuf.Any";
        for (url, payload) in [
            ("type.googleapis.com/google.protobuf.Duration", &[0x08, 0x03][..]),
            ("type.googleapis.com/google.protobuf.Struct", &[]),
            // In the google.protobuf package, yet not one the JSON mapping treats apart.
            (
                "type.googleapis.com/google.protobuf.FileDescriptorProto",
                &[0x0a, 0x01, b'x'],
            ),
            (
                "type.googleapis.com/envoy.type.v3.Percent",
                &[0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f],
            ),
        ] {
            let mut bytes = vec![0x0a, u8::try_from(url.len()).unwrap()];
            bytes.extend_from_slice(url.as_bytes());
            bytes.extend_from_slice(&[0x12, u8::try_from(payload.len()).unwrap()]);
            bytes.extend_from_slice(payload);
            let out = same(any, &bytes);
            assert_eq!(out["@type"], url);
        }
    }

    #[test]
    fn unknown_fields_are_skipped_and_enums_out_of_range_are_numbers() {
        let cluster = "envoy.config.cluster.v3.Cluster";
        let mut bytes = encode(cluster, json!({"name": "c"}));
        // Field 9999 (unknown) as a varint and as bytes; lb_policy (6) = 99, not a known value.
        bytes.extend_from_slice(&[0xf8, 0xf0, 0x04, 0x01, 0xfa, 0xf0, 0x04, 0x02, 0x01, 0x02, 0x30, 0x63]);
        let out = same(cluster, &bytes);
        assert_eq!(out["lbPolicy"], 99);
    }

    #[test]
    fn malformed_bytes_are_not_read() {
        let desc = crate::envoy::message("envoy.config.cluster.v3.Cluster").unwrap();
        let good = encode(
            "envoy.config.cluster.v3.Cluster",
            json!({"name": "cluster", "connect_timeout": "1s"}),
        );
        for cut in 1..good.len() {
            // Every truncation is either read as prost-reflect reads it or refused (then the
            // caller asks prost-reflect, which reports the error).
            if let Ok(v) = to_json(&desc, &good[..cut], Names::Json) {
                assert_eq!(
                    v,
                    crate::envoy::reflect_to_json(desc.clone(), &good[..cut], Names::Json)
                );
            }
        }
        // A string that is not UTF-8; a group; a length past the end.
        for bad in [&[0x0a, 0x01, 0xff][..], &[0x0b, 0x0c], &[0x0a, 0x05, 0x61]] {
            assert!(to_json(&desc, bad, Names::Json).is_err(), "{bad:?}");
        }
    }
}
