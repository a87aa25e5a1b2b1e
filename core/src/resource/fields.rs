//! The fields each kind's `spec` accepts, read from the serde definitions themselves (the
//! `FIELDS` list `#[derive(Deserialize)]` hands to `deserialize_struct`), never written out by
//! hand: what tests use to check that every field is exercised (the property tests mutate every
//! field of every kind) and documented.
//!
//! Must not be used to read objects: it never yields a value.

use serde::de::{self, DeserializeOwned, Visitor};

/// The top-level field names of the spec of `kind` (`config.<name>` for the Module's settings),
/// or none for a kind attache does not read.
pub fn spec_fields(kind: &str) -> Vec<String> {
    super::KINDS
        .iter()
        .find(|k| k.kind == kind)
        .map(|k| (k.fields)())
        .unwrap_or_default()
}

/// Owned copies of field names.
pub(super) fn names(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| (*f).to_string()).collect()
}

/// The field names of struct `T`, as its `Deserialize` implementation declares them.
pub(super) fn of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut tracer = Tracer(None);
    let _ = T::deserialize(&mut tracer);
    tracer.0.unwrap_or(&[])
}

/// A deserializer that only notes the fields of the struct asked for, then stops.
struct Tracer(Option<&'static [&'static str]>);

/// Why the tracer stopped (always: it never produces a value).
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names noted")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> de::Deserializer<'de> for &mut Tracer {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0 = Some(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_names_come_from_the_serde_definitions() {
        let mapping = super::spec_fields("Mapping");
        for f in ["prefix", "service", "hostname", "cors", "load_balancer"] {
            assert!(mapping.iter().any(|m| m == f), "{f} in {mapping:?}");
        }
        assert!(super::spec_fields("Module").iter().any(|f| f == "config.merge_slashes"));
        assert!(super::spec_fields("Secret").is_empty());
    }
}
