//! Reads the members of a top-level JSON object without decoding their values: each member's
//! decoded key, its byte span in the input and its raw value. Shared by `parse` (field-by-field
//! checks) and `splice` (byte-exact rewriting).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The kind of a JSON value, named in error messages ("expected a string, found number").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    /// The kind of a syntactically valid JSON value, from its first byte.
    pub(crate) fn of_raw(raw: &str) -> JsonKind {
        match raw
            .trim_start_matches(is_json_whitespace)
            .as_bytes()
            .first()
        {
            Some(b'n') => JsonKind::Null,
            Some(b't' | b'f') => JsonKind::Boolean,
            Some(b'"') => JsonKind::String,
            Some(b'[') => JsonKind::Array,
            Some(b'{') => JsonKind::Object,
            _ => JsonKind::Number,
        }
    }

    pub(crate) fn of_value(value: &serde_json::Value) -> JsonKind {
        use serde_json::Value;
        match value {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Boolean,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) => JsonKind::String,
            Value::Array(_) => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonKind::Null => "null",
            JsonKind::Boolean => "boolean",
            JsonKind::Number => "number",
            JsonKind::String => "string",
            JsonKind::Array => "array",
            JsonKind::Object => "object",
        })
    }
}

/// Why bytes could not be read as a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ObjectError {
    NotUtf8 { offset: usize },
    NotJson { reason: String },
    NotObject { found: JsonKind },
}

/// One member of the top-level object, as written.
#[derive(Debug)]
pub(crate) struct Member<'a> {
    /// The key with escapes decoded (`"tenant\u005fid"` reads as `tenant_id`).
    pub key: Cow<'a, str>,
    /// From the key's opening quote to the value's last byte.
    pub span: Range<usize>,
    /// The value's exact bytes.
    pub value: &'a RawValue,
}

/// A top-level object: the input as text and its members in input order (duplicates kept).
#[derive(Debug)]
pub(crate) struct TopLevel<'a> {
    pub text: &'a str,
    pub members: Vec<Member<'a>>,
}

pub(crate) fn is_json_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Reads `raw` as exactly one JSON object (surrounding whitespace allowed). Values are not
/// decoded, so arbitrarily deep nesting inside them costs no stack (serde_json skips raw values
/// iteratively).
pub(crate) fn read_object(raw: &[u8]) -> Result<TopLevel<'_>, ObjectError> {
    let text = std::str::from_utf8(raw).map_err(|e| ObjectError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let Some(open) = text.find(|c: char| !is_json_whitespace(c)) else {
        return Err(ObjectError::NotJson {
            reason: "the input is empty".to_owned(),
        });
    };
    if !text[open..].starts_with('{') {
        // Tell "valid JSON of the wrong kind" apart from "not JSON at all".
        return match serde_json::from_str::<de::IgnoredAny>(text) {
            Ok(_) => Err(ObjectError::NotObject {
                found: JsonKind::of_raw(&text[open..]),
            }),
            Err(e) => Err(ObjectError::NotJson {
                reason: e.to_string(),
            }),
        };
    }

    let mut de = serde_json::Deserializer::from_str(text);
    let pairs = de
        .deserialize_map(MembersVisitor)
        .and_then(|pairs| de.end().map(|()| pairs))
        .map_err(|e| ObjectError::NotJson {
            reason: e.to_string(),
        })?;

    let base = text.as_ptr() as usize;
    let mut cursor = open + 1;
    let mut members = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        let key_start = text[cursor..]
            .find(|c: char| !is_json_whitespace(c) && c != ',')
            .map(|i| cursor + i);
        let value_start = (value.get().as_ptr() as usize).checked_sub(base);
        let (Some(key_start), Some(value_start)) = (key_start, value_start) else {
            return Err(internal_error());
        };
        let value_end = value_start + value.get().len();
        // serde_json hands out raw values as sub-slices of the input; if that ever changed
        // the spans would be wrong, so refuse rather than splice garbage.
        if text.get(value_start..value_end) != Some(value.get()) || key_start >= value_start {
            return Err(internal_error());
        }
        members.push(Member {
            key,
            span: key_start..value_end,
            value,
        });
        cursor = value_end;
    }
    Ok(TopLevel { text, members })
}

fn internal_error() -> ObjectError {
    ObjectError::NotJson {
        reason: "could not locate the object's members in the input".to_owned(),
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value: &'de RawValue = map.next_value()?;
            pairs.push((key, value));
        }
        Ok(pairs)
    }
}

/// Deserializes a key, borrowing it from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (decoded key, member bytes, value bytes) for each member.
    fn spans(raw: &str) -> Vec<(String, &str, &str)> {
        let top = read_object(raw.as_bytes()).unwrap();
        top.members
            .iter()
            .map(|m| (m.key.to_string(), &raw[m.span.clone()], m.value.get()))
            .collect()
    }

    #[test]
    fn members_keep_their_spans_and_order() {
        let raw = " { \"b\" : 1 ,\n\"a\":[1, 2] , \"b\":{\"x\" :null}\t} ";
        assert_eq!(
            spans(raw),
            vec![
                ("b".to_owned(), "\"b\" : 1", "1"),
                ("a".to_owned(), "\"a\":[1, 2]", "[1, 2]"),
                ("b".to_owned(), "\"b\":{\"x\" :null}", "{\"x\" :null}"),
            ]
        );
    }

    #[test]
    fn escaped_keys_are_decoded() {
        let members = spans(r#"{"tenant\u005fid":"x","\"q\"":1}"#);
        assert_eq!(members[0].0, "tenant_id");
        assert_eq!(members[0].1, r#""tenant\u005fid":"x""#);
        assert_eq!(members[1].0, "\"q\"");
    }

    #[test]
    fn empty_object_has_no_members() {
        assert!(read_object(b" {} ").unwrap().members.is_empty());
    }

    #[test]
    fn rejections_are_precise() {
        assert_eq!(
            read_object(b"{\"a\":\xff}").unwrap_err(),
            ObjectError::NotUtf8 { offset: 5 }
        );
        for (raw, kind) in [
            ("null", JsonKind::Null),
            (" [1]", JsonKind::Array),
            ("\"s\"", JsonKind::String),
            ("12", JsonKind::Number),
            ("true", JsonKind::Boolean),
        ] {
            assert_eq!(
                read_object(raw.as_bytes()).unwrap_err(),
                ObjectError::NotObject { found: kind },
                "{raw}"
            );
        }
        for raw in [
            "",
            "   ",
            "{",
            "{\"a\":1",
            "{\"a\":1}}",
            "{\"a\":1} x",
            "[1",
            "nul",
            "{a:1}",
        ] {
            assert!(
                matches!(
                    read_object(raw.as_bytes()),
                    Err(ObjectError::NotJson { .. })
                ),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_inside_values_does_not_overflow() {
        let depth = 100_000;
        let raw = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        let top = read_object(raw.as_bytes()).unwrap();
        assert_eq!(top.members[0].value.get().len(), 2 * depth);
    }
}
