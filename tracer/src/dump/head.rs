//! The keys of a dump that say what it is, read without building the rest:
//! a first pass over the text that checks the JSON and allocates nothing for
//! the body, so that what is not a dump (or is a newer one) is refused before
//! the typed parse, and the agent can date its dumps without reading them.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::Value;

/// The top-level keys that identify a dump and its window; every other key is
/// skipped unread.
#[derive(Debug, Deserialize)]
pub(super) struct Head {
    pub format: Option<Value>,
    pub format_version: Option<Value>,
    pub tool: Option<Value>,
    pub cgroups: Option<IsArray>,
    pub started_unix_ns: Option<Value>,
    pub duration_ns: Option<Value>,
}

/// Whether a value is a JSON array; its contents are skipped.
#[derive(Debug)]
pub(super) struct IsArray(pub bool);

impl<'de> Deserialize<'de> for IsArray {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Shape)
    }
}

struct Shape;

impl<'de> Visitor<'de> for Shape {
    type Value = IsArray;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IsArray, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(IsArray(true))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IsArray, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(IsArray(false))
    }

    fn visit_bool<E>(self, _: bool) -> Result<IsArray, E> {
        Ok(IsArray(false))
    }

    fn visit_i64<E>(self, _: i64) -> Result<IsArray, E> {
        Ok(IsArray(false))
    }

    fn visit_u64<E>(self, _: u64) -> Result<IsArray, E> {
        Ok(IsArray(false))
    }

    fn visit_f64<E>(self, _: f64) -> Result<IsArray, E> {
        Ok(IsArray(false))
    }

    fn visit_str<E>(self, _: &str) -> Result<IsArray, E> {
        Ok(IsArray(false))
    }

    fn visit_unit<E>(self) -> Result<IsArray, E> {
        Ok(IsArray(false))
    }
}
