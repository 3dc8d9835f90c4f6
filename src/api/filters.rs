//! `POST /filters/match` (jetpost's own): evaluates a destination filter against an event
//! exactly as delivery does, for a UI's "test this filter" box. Any authenticated caller; no
//! tenant is involved and nothing is stored. 200 `{"matches": bool}`, 422 naming the field.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::CtxState;
use super::auth::{Caller, check_caller};
use super::body::Body;
use super::error::{ApiError, ApiResult};
use crate::event::{Event, Filter, JsonKind};

/// At most this many unknown top-level fields are named in a 422 (the rest are counted).
const MAX_NAMED_UNKNOWN: usize = 10;

pub async fn check(State(ctx): CtxState, caller: Caller, body: Body) -> ApiResult<Json<Value>> {
    check_caller(&ctx, &caller).await?;
    let (filter, event) = read(&body)?;
    Ok(Json(
        json!({ "matches": filter.matches(&event.filter_input()) }),
    ))
}

/// The body's filter and event, or a 422 listing every field at fault. The body is read
/// without decoding `event`, whose `data` may hold what `serde_json::Value` cannot (a number
/// beyond f64): delivery matches such events, so this route must too.
fn read(body: &Body) -> ApiResult<(Filter, Event)> {
    let members = body.raw_object()?;
    let mut errors = Vec::new();

    let filter = object_member(&members, "filter", &mut errors).and_then(|raw| {
        let parsed = serde_json::from_str::<Value>(raw.get())
            .map_err(|err| format!("filter cannot be read: {err} of the filter"))
            .and_then(|value| Filter::from_written_json(&value).map_err(|err| err.to_string()));
        parsed.map_err(|message| errors.push(message)).ok()
    });
    let event = object_member(&members, "event", &mut errors).and_then(|raw| {
        Event::parse_for_filter_check(raw.get().as_bytes())
            .map_err(|err| errors.push(format!("event: {err}")))
            .ok()
    });

    let unknown: Vec<&String> = members
        .keys()
        .filter(|key| !matches!(key.as_str(), "filter" | "event"))
        .collect();
    for key in unknown.iter().take(MAX_NAMED_UNKNOWN) {
        errors.push(format!(
            "{key}: unknown field; the body has only filter and event"
        ));
    }
    if unknown.len() > MAX_NAMED_UNKNOWN {
        errors.push(format!(
            "{} more unknown fields",
            unknown.len() - MAX_NAMED_UNKNOWN
        ));
    }

    match (filter, event) {
        (Some(filter), Some(event)) if errors.is_empty() => Ok((filter, event)),
        _ => Err(ApiError::validation(errors)),
    }
}

/// A required member that must be a JSON object; `null` reads as absent.
fn object_member<'a>(
    members: &BTreeMap<String, &'a RawValue>,
    key: &str,
    errors: &mut Vec<String>,
) -> Option<&'a RawValue> {
    let Some(&raw) = members.get(key) else {
        errors.push(format!("{key} is required"));
        return None;
    };
    match JsonKind::of_raw(raw.get()) {
        JsonKind::Object => return Some(raw),
        JsonKind::Null => errors.push(format!("{key} is required")),
        found => errors.push(format!("{key} must be a JSON object, found {found}")),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(body: &str) -> bool {
        let (filter, event) = read(&Body(body.to_owned().into())).unwrap();
        filter.matches(&event.filter_input())
    }

    fn refused(body: &str) -> ApiError {
        read(&Body(body.to_owned().into())).unwrap_err()
    }

    fn messages(err: &ApiError) -> Vec<&str> {
        let data = err.data.as_ref().and_then(Value::as_array).unwrap();
        data.iter().filter_map(Value::as_str).collect()
    }

    #[test]
    fn evaluates_as_delivery_does() {
        let event = r#"{"topic":"order.paid","metadata":{"region":"eu"},"data":{"a":1e400,"b":1}}"#;
        assert!(matches(&format!(r#"{{"filter":{{}},"event":{event}}}"#)));
        assert!(matches(&format!(
            r#"{{"filter":{{"data":{{"a":{{"$gt":1e308}}}},"topic":"order.paid"}},"event":{event}}}"#
        )));
        assert!(!matches(&format!(
            r#"{{"filter":{{"metadata":{{"region":"us"}}}},"event":{event}}}"#
        )));
    }

    #[test]
    fn every_field_at_fault_is_named() {
        let err = refused(r#"{"filter":[],"x":1,"event":{"topic":"t"}}"#);
        assert_eq!(err.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            messages(&err),
            [
                "filter must be a JSON object, found array",
                r#"event: field "data" is required"#,
                "x: unknown field; the body has only filter and event",
            ]
        );
        assert_eq!(
            messages(&refused(r#"{"filter":null}"#)),
            ["filter is required", "event is required"]
        );
        assert_eq!(
            messages(&refused(r#"{"filter":{"data":{"$x":1e400}},"event":"e"}"#)),
            [
                "filter cannot be read: number out of range at line 1 column 19 of the filter",
                "event must be a JSON object, found string",
            ]
        );
        let many: Vec<String> = (0..12).map(|i| format!(r#""k{i:02}":0"#)).collect();
        let err = refused(&format!(
            r#"{{"filter":{{}},"event":{{"data":{{}}}},{}}}"#,
            many.join(",")
        ));
        let messages = messages(&err);
        assert_eq!(messages.len(), MAX_NAMED_UNKNOWN + 1);
        assert_eq!(messages.last(), Some(&"2 more unknown fields"));
    }

    #[test]
    fn malformed_bodies_are_answered_as_elsewhere() {
        for body in ["", "{", r#"{"filter":{}"#, "nul", "{} {}"] {
            let ours = refused(body);
            let theirs = Body(body.to_owned().into()).object().unwrap_err();
            assert_eq!(ours, theirs, "{body:?}");
        }
        for body in ["[]", "null", "1e400", r#""{}""#] {
            let ours = refused(body);
            assert_eq!(
                messages(&ours),
                ["the request body must be a JSON object"],
                "{body}"
            );
        }
    }
}
