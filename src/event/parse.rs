//! `Event::parse`: raw bytes to an [`Event`], with a reason naming the field for every
//! rejection, worded for a log line and for an HTTP 422 message alike.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::Event;
use super::ident::{IdentError, check_id, check_metadata, check_topic};
use super::object::{JsonKind, ObjectError, read_object};
use super::splice::{SpliceError, splice_tenant};

/// Deepest nesting accepted inside `data` (the `data` object itself is level 1). It is the
/// deepest serde_json decodes into a `Value` (recursion limit 128); filters read an accepted
/// event's data as a `filter::Document`, which decodes deeper still.
pub const MAX_DATA_DEPTH: usize = 127;

/// Why bytes are not a valid event. `Display` reads as one sentence, e.g.
/// `field "metadata.region": expected a string, found number`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event is not valid UTF-8 (first invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("event is not valid JSON: {reason}")]
    NotJson { reason: String },
    #[error("event must be a JSON object, found {found}")]
    NotObject { found: JsonKind },
    #[error("field \"{field}\" appears more than once")]
    DuplicateField { field: String },
    #[error("field \"{field}\" is required")]
    MissingField { field: &'static str },
    #[error("field \"{field}\" must not be empty")]
    EmptyField { field: &'static str },
    #[error("field \"{field}\": expected {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: JsonKind,
    },
    #[error("field \"{field}\": {reason}")]
    InvalidValue { field: String, reason: String },
    #[error("field \"data\" is nested deeper than {max} levels")]
    TooDeep { max: usize },
}

impl EventError {
    /// The field at fault (`metadata.<key>` for a metadata value), when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            EventError::NotUtf8 { .. } | EventError::NotJson { .. } => None,
            EventError::NotObject { .. } => None,
            EventError::DuplicateField { field }
            | EventError::WrongType { field, .. }
            | EventError::InvalidValue { field, .. } => Some(field),
            EventError::MissingField { field } | EventError::EmptyField { field } => Some(field),
            EventError::TooDeep { .. } => Some("data"),
        }
    }
}

impl From<ObjectError> for EventError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::NotUtf8 { offset } => EventError::NotUtf8 { offset },
            ObjectError::NotJson { reason } => EventError::NotJson { reason },
            ObjectError::NotObject { found } => EventError::NotObject { found },
        }
    }
}

impl Event {
    /// Parses an Outpost event. Unknown top-level fields are ignored (as Outpost does); `null`
    /// for an optional field means "absent" (as Go's encoding/json does); a duplicated
    /// top-level key is rejected because readers would disagree on which value wins.
    pub fn parse(raw: &[u8]) -> Result<Event, EventError> {
        let top = read_object(raw)?;

        let mut seen = BTreeSet::new();
        for member in &top.members {
            if !seen.insert(member.key.as_ref()) {
                return Err(EventError::DuplicateField {
                    field: member.key.to_string(),
                });
            }
        }
        let field = |name: &str| {
            top.members
                .iter()
                .find(|m| m.key == name)
                .map(|m| m.value)
                .filter(|v| JsonKind::of_raw(v.get()) != JsonKind::Null)
        };

        let tenant_id = match top.members.iter().find(|m| m.key == "tenant_id") {
            None => return Err(EventError::MissingField { field: "tenant_id" }),
            Some(m) => string("tenant_id", m.value)?,
        };
        if tenant_id.is_empty() {
            return Err(EventError::EmptyField { field: "tenant_id" });
        }
        check_id(&tenant_id).map_err(|e| invalid("tenant_id", e))?;

        let data = match top.members.iter().find(|m| m.key == "data") {
            None => return Err(EventError::MissingField { field: "data" }),
            Some(m) => m.value,
        };
        expect_kind("data", data, JsonKind::Object, "an object")?;
        if nesting_depth(data.get()) > MAX_DATA_DEPTH {
            return Err(EventError::TooDeep {
                max: MAX_DATA_DEPTH,
            });
        }

        // Outpost treats "" as "not given" for these.
        let optional_string = |name: &str| -> Result<Option<String>, EventError> {
            let value = field(name).map(|v| string(name, v)).transpose()?;
            Ok(value.filter(|s| !s.is_empty()))
        };

        // Ids and topics are checked here, at the one door every event comes through, so
        // nothing stored can break a header, a URL path or a log line later.
        let checked = |name: &'static str, check: fn(&str) -> Result<(), IdentError>| {
            let value = optional_string(name)?;
            if let Some(value) = &value {
                check(value).map_err(|e| invalid(name, e))?;
            }
            Ok::<_, EventError>(value)
        };

        Ok(Event {
            id: checked("id", check_id)?,
            tenant_id,
            destination_id: checked("destination_id", check_id)?,
            topic: checked("topic", check_topic)?,
            eligible_for_retry: field("eligible_for_retry")
                .map(eligible_for_retry)
                .transpose()?
                .unwrap_or(true),
            time: field("time").map(time).transpose()?,
            metadata: field("metadata")
                .map(metadata)
                .transpose()?
                .unwrap_or_default(),
            data: data.to_owned(),
        })
    }

    /// Parses an event only to evaluate a filter against it (`jetpost filter check`,
    /// `POST /api/v1/filters/match`): as [`Event::parse`], but `tenant_id` may be absent or
    /// anything, since a filter never reads it (a placeholder tenant is spliced in).
    pub fn parse_for_filter_check(raw: &[u8]) -> Result<Event, EventError> {
        let with_tenant = splice_tenant(raw, "filter-check").map_err(|err| match err {
            SpliceError::NotUtf8 { offset } => EventError::NotUtf8 { offset },
            SpliceError::NotJson { reason } => EventError::NotJson { reason },
            SpliceError::NotObject { found } => EventError::NotObject { found },
        })?;
        Event::parse(&with_tenant)
    }
}

fn expect_kind(
    field: &str,
    value: &RawValue,
    kind: JsonKind,
    expected: &'static str,
) -> Result<(), EventError> {
    let found = JsonKind::of_raw(value.get());
    if found == kind {
        Ok(())
    } else {
        Err(EventError::WrongType {
            field: field.to_owned(),
            expected,
            found,
        })
    }
}

fn string(field: &str, value: &RawValue) -> Result<String, EventError> {
    expect_kind(field, value, JsonKind::String, "a string")?;
    serde_json::from_str(value.get()).map_err(|e| EventError::InvalidValue {
        field: field.to_owned(),
        reason: format!("invalid string: {e}"),
    })
}

fn invalid(field: &str, error: IdentError) -> EventError {
    EventError::InvalidValue {
        field: field.to_owned(),
        reason: error.to_string(),
    }
}

fn eligible_for_retry(value: &RawValue) -> Result<bool, EventError> {
    expect_kind("eligible_for_retry", value, JsonKind::Boolean, "a boolean")?;
    Ok(value.get() == "true")
}

fn time(value: &RawValue) -> Result<DateTime<Utc>, EventError> {
    let text = string("time", value)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| EventError::InvalidValue {
            field: "time".to_owned(),
            reason: format!(
                "{text:?} is not an RFC 3339 date-time like \"2024-01-15T10:30:00Z\" ({e})"
            ),
        })
}

fn metadata(value: &RawValue) -> Result<BTreeMap<String, String>, EventError> {
    expect_kind("metadata", value, JsonKind::Object, "an object of strings")?;
    // Already validated as part of the event, so this cannot fail in practice.
    let object = read_object(value.get().as_bytes()).map_err(|_| EventError::InvalidValue {
        field: "metadata".to_owned(),
        reason: "not a readable JSON object".to_owned(),
    })?;
    let mut metadata = BTreeMap::new();
    for member in object.members {
        let field = format!("metadata.{}", member.key);
        let value = string(&field, member.value)?;
        if metadata.insert(member.key.into_owned(), value).is_some() {
            return Err(EventError::DuplicateField { field });
        }
    }
    // Metadata is sent as headers: refuse here what delivery could never send.
    check_metadata(&metadata).map_err(|e| EventError::InvalidValue {
        field: e.field("metadata"),
        reason: e.to_string(),
    })?;
    Ok(metadata)
}

/// Deepest array/object nesting in a syntactically valid JSON text, counted without recursion.
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(raw: &str) -> String {
        Event::parse(raw.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_field() {
        let event = Event::parse(
            br#"{"id":"evt_1","tenant_id":"acme","destination_id":"des_1","topic":"order.paid",
                "eligible_for_retry":false,"time":"2024-01-15T10:30:00Z",
                "metadata":{"region":"eu","k":""},"data":{"b":1, "a":[2]}}"#,
        )
        .unwrap();
        assert_eq!(event.id.as_deref(), Some("evt_1"));
        assert_eq!(event.tenant_id, "acme");
        assert_eq!(event.destination_id.as_deref(), Some("des_1"));
        assert_eq!(event.topic.as_deref(), Some("order.paid"));
        assert!(!event.eligible_for_retry);
        assert_eq!(
            event.time,
            Some("2024-01-15T10:30:00Z".parse::<DateTime<Utc>>().unwrap())
        );
        assert_eq!(
            event.metadata,
            BTreeMap::from([
                ("k".to_owned(), String::new()),
                ("region".to_owned(), "eu".to_owned())
            ])
        );
        assert_eq!(event.data.get(), r#"{"b":1, "a":[2]}"#);
    }

    #[test]
    fn defaults_for_absent_null_and_empty_fields() {
        for raw in [
            r#"{"tenant_id":"t","data":{}}"#,
            r#"{"tenant_id":"t","data":{},"id":null,"destination_id":null,"topic":null,
               "eligible_for_retry":null,"time":null,"metadata":null}"#,
            r#"{"tenant_id":"t","data":{},"id":"","destination_id":"","topic":""}"#,
        ] {
            let event = Event::parse(raw.as_bytes()).unwrap();
            assert_eq!(event.id, None, "{raw}");
            assert_eq!(event.destination_id, None);
            assert_eq!(event.topic, None);
            assert!(event.eligible_for_retry);
            assert_eq!(event.time, None);
            assert!(event.metadata.is_empty());
        }
    }

    #[test]
    fn data_bytes_are_kept_exactly() {
        let data = r#"{ "z" : 12345678901234567890, "a":"\u003c<&>", "f": 1.0e+2 ,"n":[ ] }"#;
        let raw = format!(r#"{{"tenant_id":"t","data":{data}}}"#);
        assert_eq!(Event::parse(raw.as_bytes()).unwrap().data.get(), data);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let event =
            Event::parse(br#"{"tenant_id":"t","data":{},"extra":{"deep":[1]},"Topic":5}"#).unwrap();
        assert_eq!(event.topic, None);
    }

    #[test]
    fn time_offsets_are_normalised_to_utc() {
        let event =
            Event::parse(br#"{"tenant_id":"t","data":{},"time":"2024-01-15T12:30:00.5+02:00"}"#)
                .unwrap();
        assert_eq!(
            event.time.unwrap().to_rfc3339(),
            "2024-01-15T10:30:00.500+00:00"
        );
    }

    #[test]
    fn rejects_non_objects_and_non_json() {
        assert_eq!(err("null"), "event must be a JSON object, found null");
        assert_eq!(err("[1,2]"), "event must be a JSON object, found array");
        assert_eq!(err("\"s\""), "event must be a JSON object, found string");
        assert_eq!(err(" 3 "), "event must be a JSON object, found number");
        assert!(err("{\"a\":").starts_with("event is not valid JSON: "));
        assert!(err("").starts_with("event is not valid JSON: "));
        assert_eq!(
            Event::parse(b"{\"tenant_id\":\"\xc3\x28\"}").unwrap_err(),
            EventError::NotUtf8 { offset: 14 }
        );
    }

    #[test]
    fn rejects_missing_empty_and_mistyped_tenant() {
        assert_eq!(err(r#"{"data":{}}"#), r#"field "tenant_id" is required"#);
        assert_eq!(
            err(r#"{"tenant_id":"","data":{}}"#),
            r#"field "tenant_id" must not be empty"#
        );
        assert_eq!(
            err(r#"{"tenant_id":7,"data":{}}"#),
            r#"field "tenant_id": expected a string, found number"#
        );
        assert_eq!(
            err(r#"{"tenant_id":null,"data":{}}"#),
            r#"field "tenant_id": expected a string, found null"#
        );
    }

    #[test]
    fn rejects_missing_or_non_object_data() {
        assert_eq!(err(r#"{"tenant_id":"t"}"#), r#"field "data" is required"#);
        for (data, found) in [
            ("null", "null"),
            ("[]", "array"),
            ("\"{}\"", "string"),
            ("1", "number"),
            ("true", "boolean"),
        ] {
            assert_eq!(
                err(&format!(r#"{{"tenant_id":"t","data":{data}}}"#)),
                format!(r#"field "data": expected an object, found {found}"#)
            );
        }
    }

    #[test]
    fn rejects_wrong_types_naming_the_field() {
        let cases = [
            (
                r#""id":1"#,
                r#"field "id": expected a string, found number"#,
            ),
            (
                r#""topic":["a"]"#,
                r#"field "topic": expected a string, found array"#,
            ),
            (
                r#""destination_id":{}"#,
                r#"field "destination_id": expected a string, found object"#,
            ),
            (
                r#""eligible_for_retry":"false""#,
                r#"field "eligible_for_retry": expected a boolean, found string"#,
            ),
            (
                r#""time":1700000000"#,
                r#"field "time": expected a string, found number"#,
            ),
            (
                r#""metadata":["a"]"#,
                r#"field "metadata": expected an object of strings, found array"#,
            ),
            (
                r#""metadata":{"ok":"x","region":1}"#,
                r#"field "metadata.region": expected a string, found number"#,
            ),
            (
                r#""metadata":{"nested":{"a":"b"}}"#,
                r#"field "metadata.nested": expected a string, found object"#,
            ),
            (
                r#""metadata":{"n":null}"#,
                r#"field "metadata.n": expected a string, found null"#,
            ),
        ];
        for (member, expected) in cases {
            assert_eq!(
                err(&format!(r#"{{"tenant_id":"t","data":{{}},{member}}}"#)),
                expected
            );
        }
    }

    #[test]
    fn rejects_invalid_time() {
        for time in [
            "",
            "yesterday",
            "2024-01-15",
            "2024-01-15T10:30:00",
            "2024-13-01T00:00:00Z",
        ] {
            let message = err(&format!(
                r#"{{"tenant_id":"t","data":{{}},"time":"{time}"}}"#
            ));
            assert!(
                message.starts_with(&format!(
                    r#"field "time": "{time}" is not an RFC 3339 date-time"#
                )),
                "{message}"
            );
        }
    }

    #[test]
    fn rejects_duplicate_keys() {
        assert_eq!(
            err(r#"{"tenant_id":"a","data":{},"tenant_id":"b"}"#),
            r#"field "tenant_id" appears more than once"#
        );
        assert_eq!(
            err(r#"{"tenant_id":"a","data":{},"x":1,"x":2}"#),
            r#"field "x" appears more than once"#
        );
        assert_eq!(
            err(r#"{"tenant_id":"a","data":{},"top\u0069c":"b","topic":"c"}"#),
            r#"field "topic" appears more than once"#
        );
        assert_eq!(
            err(r#"{"tenant_id":"a","data":{},"metadata":{"k":"1","k":"2"}}"#),
            r#"field "metadata.k" appears more than once"#
        );
    }

    #[test]
    fn nesting_limit_is_serde_jsons() {
        let nested = |depth: usize| {
            // `data` is level 1; the rest are arrays.
            format!(
                r#"{{"tenant_id":"t","data":{{"a":{}{}}}}}"#,
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        let event = Event::parse(nested(MAX_DATA_DEPTH).as_bytes()).unwrap();
        let input = event.filter_input();
        let data = input.get("data").unwrap();
        assert!(data.get("a").is_some(), "{data:?}");
        assert_eq!(
            err(&nested(MAX_DATA_DEPTH + 1)),
            r#"field "data" is nested deeper than 127 levels"#
        );
        assert!(err(&nested(200_000)).contains("nested deeper"));
    }

    #[test]
    fn nesting_depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(r#"{"a":"[[[{{\"]]"}"#), 1);
        assert_eq!(nesting_depth(r#"{"a":[{"b":[]}],"c":{}}"#), 4);
        assert_eq!(nesting_depth("1"), 0);
    }

    #[test]
    fn rejects_ids_and_topics_that_would_break_headers_paths_or_logs() {
        for (member, field) in [
            (r#""id":"evt\r\nINFO forged""#, "id"),
            (r#""id":"a b""#, "id"),
            (r#""destination_id":"d/1""#, "destination_id"),
            (r#""topic":"order.paid\nx""#, "topic"),
            (r#""topic":"order paid""#, "topic"),
        ] {
            let raw = format!(r#"{{"tenant_id":"t","data":{{}},{member}}}"#);
            let e = Event::parse(raw.as_bytes()).unwrap_err();
            assert_eq!(e.field(), Some(field), "{member}");
            assert!(e.to_string().contains(" at character "), "{e}");
        }
        let e = Event::parse(br#"{"tenant_id":"acme\n","data":{}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field \"tenant_id\": has '\\n' at character 5; ids use only letters A-Z a-z, \
             digits and - _ . : @ + = ~"
        );
        let long = format!(
            r#"{{"tenant_id":"t","data":{{}},"id":"{}"}}"#,
            "x".repeat(256)
        );
        assert!(err(&long).contains("at most 255"), "{}", err(&long));
        let ok = Event::parse(
            br#"{"tenant_id":"user@example.com","id":"nats_abc:1","topic":"*","data":{}}"#,
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn rejects_metadata_that_cannot_be_headers() {
        let e = Event::parse(br#"{"tenant_id":"t","data":{},"metadata":{"r":"a\r\nx-forged: 1"}}"#)
            .unwrap_err();
        assert_eq!(e.field(), Some("metadata.r"));
        let e = Event::parse(br#"{"tenant_id":"t","data":{},"metadata":{"a b":"v"}}"#).unwrap_err();
        assert_eq!(e.field(), Some("metadata"));
        assert!(e.to_string().contains(r#"key "a b""#), "{e}");
        let many: Vec<String> = (0..65).map(|i| format!(r#""k{i}":"v""#)).collect();
        let raw = format!(
            r#"{{"tenant_id":"t","data":{{}},"metadata":{{{}}}}}"#,
            many.join(",")
        );
        assert!(
            err(&raw).contains("65 entries; at most 64"),
            "{}",
            err(&raw)
        );
    }

    #[test]
    fn errors_name_their_field() {
        let e = Event::parse(br#"{"tenant_id":"t","data":{},"metadata":{"r":1}}"#).unwrap_err();
        assert_eq!(e.field(), Some("metadata.r"));
        assert_eq!(Event::parse(b"[]").unwrap_err().field(), None);
    }

    #[test]
    fn filter_checks_take_events_with_any_or_no_tenant() {
        for raw in [
            r#"{"topic":"a","data":{"n":1e400}}"#,
            r#"{"tenant_id":5,"topic":"a","data":{"n":1e400}}"#,
            r#"{"tenant_id":"no spaces allowed","topic":"a","data":{"n":1e400}}"#,
        ] {
            let event = Event::parse_for_filter_check(raw.as_bytes()).unwrap();
            assert_eq!(event.topic.as_deref(), Some("a"), "{raw}");
            assert_eq!(event.data.get(), r#"{"n":1e400}"#);
        }
        let err = |raw: &[u8]| Event::parse_for_filter_check(raw).unwrap_err().to_string();
        assert_eq!(err(b"[1]"), "event must be a JSON object, found array");
        assert!(
            err(b"{").starts_with("event is not valid JSON: "),
            "{}",
            err(b"{")
        );
        assert_eq!(
            err(b"\xff"),
            "event is not valid UTF-8 (first invalid byte at offset 0)"
        );
        assert_eq!(err(br#"{"topic":"a"}"#), r#"field "data" is required"#);
        assert_eq!(
            err(br#"{"data":{},"topic":7}"#),
            r#"field "topic": expected a string, found number"#
        );
    }
}
