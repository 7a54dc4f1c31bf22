//! Reading a body that is a JSON object.
//!
//! Keys are matched case-insensitively against the aliases traders use (see
//! [`Field::from_json_key`]); numbers may arrive as numbers or strings.
//! Values are read from the raw JSON text, so a price keeps every digit it
//! was sent with (`67890.50` is not rounded through a float). Keys the
//! signal has no field for are kept in `extra`, in order, first one wins.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use signal_vocabulary::Direction;

use super::draft::{Draft, Field, Offered};

/// What a body is as JSON.
pub(crate) enum Json<'a> {
    /// An object: its entries in order, values still as raw JSON text.
    Object(Vec<(String, &'a RawValue)>),
    /// A JSON string (someone quoted the whole message): its contents.
    String(String),
}

/// Reads `text` as a JSON object or string, if it is one (trailing
/// whitespace allowed). Anything else, including invalid JSON, is `None`.
pub(crate) fn sniff(text: &str) -> Option<Json<'_>> {
    match text.as_bytes().first()? {
        b'{' => serde_json::from_str::<Entries<'_>>(text)
            .ok()
            .map(|entries| Json::Object(entries.0)),
        b'"' => serde_json::from_str::<String>(text).ok().map(Json::String),
        _ => None,
    }
}

/// Fills `draft` from an object's entries.
pub(crate) fn fill(entries: &[(String, &RawValue)], draft: &mut Draft) {
    for (key, raw) in entries {
        let literal = raw.get().trim();
        let Some(field) = Field::from_json_key(key) else {
            keep(draft, key, literal);
            continue;
        };
        match literal.as_bytes().first() {
            Some(b'"') => {
                if let Ok(text) = serde_json::from_str::<String>(literal) {
                    draft.offer(field, key, Offered::Text(&text));
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                if field == Field::Direction {
                    offer_numeric_direction(draft, literal);
                } else {
                    draft.offer(field, key, Offered::Number(literal));
                }
            }
            Some(b't' | b'f') => {
                draft.offer(field, key, Offered::Text(literal));
            }
            // null carries nothing; objects and arrays are not field values.
            Some(b'n') | None => {}
            Some(_) => keep(draft, key, literal),
        }
    }
}

/// Scripts often send a position sign: 1 / -1 (0 is flat).
fn offer_numeric_direction(draft: &mut Draft, literal: &str) {
    let direction = match literal.parse::<f64>() {
        Ok(n) if n > 0.0 => Some(Direction::Long),
        Ok(n) if n < 0.0 => Some(Direction::Short),
        _ => None,
    };
    if draft.direction.is_none() {
        draft.direction = direction;
    }
}

/// Keeps an entry the signal has no field for, as JSON, with NUL characters
/// removed (Postgres `jsonb` cannot hold `\u0000`).
fn keep(draft: &mut Draft, key: &str, literal: &str) {
    if let Ok(value) = serde_json::from_str::<Value>(literal) {
        draft
            .extra
            .entry(key.replace('\0', ""))
            .or_insert_with(|| without_nul(value));
    }
}

fn without_nul(value: Value) -> Value {
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "")),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace('\0', ""), without_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

/// An object's entries in document order, duplicates included, values
/// borrowed as raw JSON.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;

        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor)
    }
}
