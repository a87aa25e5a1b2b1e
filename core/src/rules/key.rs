//! Cache keys of IR nodes: a 128-bit hash of a node's serde serialization in a compact binary
//! form written straight into a reused buffer (strings length-prefixed and unescaped, numbers as
//! bytes, every value tagged, struct field names kept so skipped fields cannot make two nodes
//! alike), hashed once. It replaced `serde_json` into a streaming hasher, whose string escaping,
//! number formatting and per-token hasher calls made hashing the largest cost of an incremental
//! translation. Keys live only in memory: the format may change freely.

use std::cell::RefCell;

use serde::ser::{self, Serialize};

use crate::diagnostic::Origin;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// The key of `prefix`, `value` and `origin`.
pub(crate) fn key<T: Serialize + ?Sized>(prefix: &[&[u8]], value: &T, origin: Option<&Origin>, extra: &[u128]) -> u128 {
    BUFFER.with(|b| {
        let mut buf = b.borrow_mut();
        buf.clear();
        for p in prefix {
            put_bytes(&mut buf, p);
        }
        let _ = value.serialize(&mut Writer { buf: &mut buf });
        if let Some(o) = origin {
            put_bytes(&mut buf, o.file.as_bytes());
            buf.extend_from_slice(&o.line.to_le_bytes());
            buf.extend_from_slice(&o.column.to_le_bytes());
        }
        for k in extra {
            buf.extend_from_slice(&k.to_le_bytes());
        }
        xxhash_rust::xxh3::xxh3_128(&buf)
    })
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    buf.extend_from_slice(bytes);
}

struct Writer<'a> {
    buf: &'a mut Vec<u8>,
}

/// Serialization into a buffer cannot fail; serde wants an error type anyway.
#[derive(Debug)]
pub(crate) struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("key serialization failed")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Never
    }
}

impl Writer<'_> {
    fn tag(&mut self, t: u8) {
        self.buf.push(t);
    }
}

impl<'a, 'b> ser::Serializer for &'a mut Writer<'b> {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<(), Never> {
        self.buf.extend_from_slice(&[b'b', u8::from(v)]);
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Never> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), Never> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), Never> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), Never> {
        self.tag(b'i');
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Never> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), Never> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), Never> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), Never> {
        self.tag(b'u');
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Never> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Never> {
        self.tag(b'f');
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Never> {
        self.tag(b'c');
        self.buf.extend_from_slice(&u32::from(v).to_le_bytes());
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Never> {
        self.tag(b's');
        put_bytes(self.buf, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Never> {
        self.tag(b'y');
        put_bytes(self.buf, v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Never> {
        self.tag(b'N');
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Never> {
        self.tag(b'S');
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Never> {
        self.tag(b'0');
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Never> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Result<(), Never> {
        self.tag(b'v');
        self.buf.extend_from_slice(&index.to_le_bytes());
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<(), Never> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.tag(b'w');
        self.buf.extend_from_slice(&index.to_le_bytes());
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Never> {
        self.tag(b'[');
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
        self.tag(b'(');
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        self.tag(b'(');
        Ok(self)
    }
    fn serialize_tuple_variant(self, _: &'static str, index: u32, _: &'static str, _: usize) -> Result<Self, Never> {
        self.tag(b't');
        self.buf.extend_from_slice(&index.to_le_bytes());
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Never> {
        self.tag(b'{');
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        self.tag(b'{');
        Ok(self)
    }
    fn serialize_struct_variant(self, _: &'static str, index: u32, _: &'static str, _: usize) -> Result<Self, Never> {
        self.tag(b'x');
        self.buf.extend_from_slice(&index.to_le_bytes());
        Ok(self)
    }
}

/// Sequences and tuples: elements in order, then an end tag.
macro_rules! elements {
    ($($trait:ident :: $method:ident => $end:literal),* $(,)?) => {$(
        impl ser::$trait for &mut Writer<'_> {
            type Ok = ();
            type Error = Never;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), Never> {
                self.tag($end);
                Ok(())
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element => b']',
    SerializeTuple::serialize_element => b')',
    SerializeTupleStruct::serialize_field => b')',
    SerializeTupleVariant::serialize_field => b')',
);

/// Structs: each field's name (so skipped fields cannot make two values alike), then its value.
macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for &mut Writer<'_> {
            type Ok = ();
            type Error = Never;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, name: &'static str, value: &T) -> Result<(), Never> {
                put_bytes(self.buf, name.as_bytes());
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), Never> {
                self.tag(b'}');
                Ok(())
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for &mut Writer<'_> {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Never> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Never> {
        self.tag(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::key;
    use serde_json::json;

    #[test]
    fn keys_tell_apart_what_differs_and_only_that() {
        let k = |v: &serde_json::Value| key(&[b"leaf"], v, None, &[]);
        assert_eq!(k(&json!({"a": 1, "b": "x"})), k(&json!({"a": 1, "b": "x"})));
        assert_ne!(k(&json!({"a": 1, "b": "x"})), k(&json!({"a": 1, "b": "y"})));
        // Lengths are part of strings, so moving a character between fields changes the key.
        assert_ne!(k(&json!(["ab", "c"])), k(&json!(["a", "bc"])));
        // Field names count: the same value under another (skipped-field) name differs.
        assert_ne!(k(&json!({"a": 1})), k(&json!({"b": 1})));
        assert_ne!(k(&json!(1)), k(&json!("1")));
        assert_ne!(k(&json!(null)), k(&json!([])));
        assert_ne!(
            key(&[b"leaf"], &json!(1), None, &[]),
            key(&[b"leaf"], &json!(1), None, &[7])
        );
    }

    #[test]
    fn skipped_options_do_not_collide() {
        #[derive(serde::Serialize)]
        struct S {
            #[serde(skip_serializing_if = "Option::is_none")]
            a: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            b: Option<u32>,
        }
        let k = |s: &S| key(&[], s, None, &[]);
        assert_ne!(k(&S { a: Some(1), b: None }), k(&S { a: None, b: Some(1) }));
    }
}
