//! Request bodies: the raw bytes (bounded by `max_request_body_bytes`, 413 past it), JSON
//! objects read field by field so that every 422 names the field at fault, and Outpost's
//! coercion of string maps (`config`, `credentials`, `metadata`: numbers and booleans become
//! strings, nested values their JSON text).

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};
use crate::event::JsonKind;

/// The request body's bytes, parsed later by the handler (after authorization, as in Outpost).
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|rejection| {
                let status = rejection.status();
                if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        status,
                        "request body is too large: the limit is max_request_body_bytes \
                         (MAX_REQUEST_BODY_BYTES)",
                    )
                } else {
                    ApiError::new(status, format!("cannot read the request body: {rejection}"))
                }
            })
    }
}

impl Body {
    /// Whether the body is empty (or only whitespace).
    pub fn is_blank(&self) -> bool {
        self.0.iter().all(u8::is_ascii_whitespace)
    }

    /// The body as a JSON object.
    pub fn object(&self) -> ApiResult<Map<String, Value>> {
        match serde_json::from_slice::<Value>(&self.0) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(not_an_object()),
            Err(err) => Err(ApiError::invalid_json(err.to_string())),
        }
    }

    /// The body's top-level members with their values undecoded, for members that may hold
    /// what `Value` cannot (event data with a number beyond f64). Malformed JSON and
    /// non-objects are answered as [`Body::object`] answers them.
    pub fn raw_object(&self) -> ApiResult<BTreeMap<String, &RawValue>> {
        let not_json = |err: serde_json::Error| ApiError::invalid_json(err.to_string());
        let raw: &RawValue = serde_json::from_slice(&self.0).map_err(not_json)?;
        if JsonKind::of_raw(raw.get()) != JsonKind::Object {
            return Err(not_an_object());
        }
        serde_json::from_str(raw.get()).map_err(not_json)
    }
}

fn not_an_object() -> ApiError {
    ApiError::validation(vec!["the request body must be a JSON object".to_owned()])
}

/// A field of a merge-patch body: left out, `null`, or a value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

/// Reads fields of a JSON object, collecting one message per bad field.
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<String>,
}

impl<'a> Fields<'a> {
    pub fn new(object: &'a Map<String, Value>) -> Fields<'a> {
        Fields {
            object,
            errors: Vec::new(),
        }
    }

    pub fn fail(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    pub fn raw(&self, key: &str) -> Patch<&'a Value> {
        match self.object.get(key) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(v) => Patch::Value(v),
        }
    }

    /// A string field; `null`, `""` and absence all read as `None`.
    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.raw(key) {
            Patch::Absent | Patch::Null => None,
            Patch::Value(Value::String(s)) if s.is_empty() => None,
            Patch::Value(Value::String(s)) => Some(s.clone()),
            Patch::Value(_) => {
                self.fail(format!("{key} must be a string"));
                None
            }
        }
    }

    pub fn required_string(&mut self, key: &str) -> Option<String> {
        let value = self.string(key);
        if value.is_none() && !self.errors.iter().any(|e| e.starts_with(key)) {
            self.fail(format!("{key} is required"));
        }
        value
    }

    /// An RFC 3339 time; `null` reads as `Patch::Null`.
    pub fn time(&mut self, key: &str) -> Patch<DateTime<Utc>> {
        match self.raw(key) {
            Patch::Absent => Patch::Absent,
            Patch::Null => Patch::Null,
            Patch::Value(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => Patch::Value(t.with_timezone(&Utc)),
                Err(_) => {
                    self.fail(format!(
                        "{key} must be an RFC 3339 date-time (e.g. 2024-01-15T09:30:00Z)"
                    ));
                    Patch::Absent
                }
            },
            Patch::Value(_) => {
                self.fail(format!("{key} must be an RFC 3339 date-time string"));
                Patch::Absent
            }
        }
    }

    /// A string map as Outpost reads it. In the map, `null` values are kept as `None` (a
    /// merge patch deletes those keys; a create ignores them).
    pub fn string_map(&mut self, key: &str) -> Patch<BTreeMap<String, Option<String>>> {
        match self.raw(key) {
            Patch::Absent => Patch::Absent,
            Patch::Null => Patch::Null,
            Patch::Value(Value::Object(map)) => Patch::Value(
                map.iter()
                    .map(|(k, v)| (k.clone(), coerce_string(v)))
                    .collect(),
            ),
            Patch::Value(_) => {
                self.fail(format!("{key} must be an object of strings"));
                Patch::Absent
            }
        }
    }

    /// Fails with 422 listing every bad field, if any.
    pub fn finish(self) -> ApiResult<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }
}

/// Outpost's string coercion for map values: strings as they are, booleans and numbers as
/// text, `null` as `None`, arrays and objects as their JSON text.
pub fn coerce_string(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// A create's map: `null` values dropped; `None` when empty.
pub fn present(map: Patch<BTreeMap<String, Option<String>>>) -> Option<BTreeMap<String, String>> {
    match map {
        Patch::Value(map) => {
            let map: BTreeMap<String, String> = map
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            (!map.is_empty()).then_some(map)
        }
        Patch::Absent | Patch::Null => None,
    }
}

/// RFC 7396 merge of a string map: absent or `{}` keeps the original, `null` clears it, keys
/// with `null` are removed, others set. Returns the result (`None` when empty) and whether
/// anything was asked to change.
pub fn merge_map(
    original: Option<&BTreeMap<String, String>>,
    patch: Patch<BTreeMap<String, Option<String>>>,
) -> (Option<BTreeMap<String, String>>, bool) {
    match patch {
        Patch::Absent => (original.cloned(), false),
        Patch::Null => (None, true),
        Patch::Value(p) if p.is_empty() => (original.cloned(), false),
        Patch::Value(p) => {
            let mut merged = original.cloned().unwrap_or_default();
            for (k, v) in p {
                match v {
                    Some(v) => merged.insert(k, v),
                    None => merged.remove(&k),
                };
            }
            ((!merged.is_empty()).then_some(merged), true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> BTreeMap<String, Option<String>> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), coerce_string(v)))
            .collect()
    }

    #[test]
    fn coercion_follows_outpost() {
        let m = map(json!({"a": "x", "b": true, "c": 12, "d": 1.5, "e": {"k": "v"}, "f": null}));
        assert_eq!(m["a"].as_deref(), Some("x"));
        assert_eq!(m["b"].as_deref(), Some("true"));
        assert_eq!(m["c"].as_deref(), Some("12"));
        assert_eq!(m["d"].as_deref(), Some("1.5"));
        assert_eq!(m["e"].as_deref(), Some(r#"{"k":"v"}"#));
        assert_eq!(m["f"], None);
    }

    #[test]
    fn merge_patch_semantics() {
        let original: BTreeMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        assert_eq!(
            merge_map(Some(&original), Patch::Absent),
            (Some(original.clone()), false)
        );
        assert_eq!(
            merge_map(Some(&original), Patch::Value(BTreeMap::new())),
            (Some(original.clone()), false)
        );
        assert_eq!(merge_map(Some(&original), Patch::Null), (None, true));
        let (merged, changed) = merge_map(
            Some(&original),
            Patch::Value(map(json!({"a": null, "c": "3"}))),
        );
        assert!(changed);
        assert_eq!(
            merged,
            Some([("b".into(), "2".into()), ("c".into(), "3".into())].into())
        );
        let (merged, _) = merge_map(
            Some(&original),
            Patch::Value(map(json!({"a": null, "b": null}))),
        );
        assert_eq!(merged, None);
    }

    #[test]
    fn fields_name_what_is_wrong() {
        let obj = json!({"id": 3, "time": "yesterday", "config": []});
        let obj = obj.as_object().unwrap();
        let mut f = Fields::new(obj);
        assert_eq!(f.string("id"), None);
        assert_eq!(f.required_string("event_id"), None);
        assert_eq!(f.time("time"), Patch::Absent);
        assert_eq!(f.string_map("config"), Patch::Absent);
        let err = f.finish().unwrap_err();
        let messages = err.data.unwrap();
        let messages: Vec<&str> = messages
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert_eq!(messages[0], "id must be a string");
        assert_eq!(messages[1], "event_id is required");
        assert!(messages[2].starts_with("time must be an RFC 3339"));
        assert_eq!(messages[3], "config must be an object of strings");
    }
}
