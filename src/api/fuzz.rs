//! Entry points for the fuzz targets (fuzz/): the API's parsing of request bodies and query
//! strings, and the views listings serve a stored event through, reachable without a running
//! service. Each takes arbitrary input and must never panic; nothing else should call them.

use axum::extract::Query;
use axum::http::Uri;
use chrono::Utc;
use serde::Serialize;

use super::attempts::AttemptView;
use super::auth::Caller;
use super::body::{Body, Fields};
use super::destinations::input;
use super::events::EventView;
use super::metrics::{
    ATTEMPT_DIMENSIONS, ATTEMPT_MEASURES, EVENT_DIMENSIONS, EVENT_MEASURES, parse_common,
};
use super::query::{PageOf, Params};
use crate::delivery::operator_events::EventPayload;
use crate::event::TopicRules;
use crate::store::{Attempt, AttemptStatus, Event};

/// Reads `body` as every JSON request body the API parses field by field: a destination's
/// create and update (topics, filter, maps, times) and a tenant's metadata. Refusals are
/// fine; panics are not.
pub fn request_body(body: &[u8]) {
    let Ok(object) = Body(bytes::Bytes::copy_from_slice(body)).object() else {
        return;
    };
    let now = Utc::now();
    let rules = [
        TopicRules::new(Vec::<String>::new(), true),
        TopicRules::new(vec!["a.b".to_owned()], false),
    ];
    for rules in &rules {
        let _ = input::create(&object, rules, now);
        let _ = input::update(&object, rules, now);
    }
    let mut fields = Fields::new(&object);
    let _ = fields.string_map("metadata");
    let _ = fields.finish();
}

/// Reads `query` (the part after `?`) as every list and metrics endpoint does, for the admin
/// and for a tenant.
pub fn query_string(query: &str) {
    let Ok(uri) = format!("/?{query}").parse::<Uri>() else {
        return;
    };
    let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(&uri) else {
        return;
    };
    let params = Params(pairs);
    for name in ["tenant_id", "id", "topic", "include", "filters[topic]"] {
        let _ = params.array(name);
    }
    let _ = params.log_page();
    let _ = params.tenant_page();
    let _ = params.time_range("time");
    for caller in [Caller::Admin, Caller::Tenant("t".to_owned())] {
        let _ = parse_common(&caller, &params, EVENT_MEASURES, EVENT_DIMENSIONS);
        let _ = parse_common(&caller, &params, ATTEMPT_MEASURES, ATTEMPT_DIMENSIONS);
    }
}

/// The JSON texts a stored event with `data` (its exact text) is served as: the event list,
/// one event, an attempt list with the event's data included, and the operator event. `None`
/// when a view refuses the data (it must not, for any data `Event::parse` accepts).
pub fn served_event(data: &str) -> Option<Vec<String>> {
    let event = Event {
        tenant_id: "t".to_owned(),
        id: "e".to_owned(),
        destination_id: None,
        topic: "topic".to_owned(),
        time: Utc::now(),
        metadata: None,
        data: data.to_owned(),
        eligible_for_retry: true,
        destination_ids: vec!["d".to_owned()],
        created_at: Utc::now(),
    };
    let attempt = Attempt {
        id: "a".to_owned(),
        tenant_id: "t".to_owned(),
        event_id: "e".to_owned(),
        destination_id: "d".to_owned(),
        delivery_id: 1,
        attempt_number: 1,
        manual: false,
        status: AttemptStatus::Success,
        code: "200".to_owned(),
        response_data: None,
        time: Utc::now(),
        destination_type: "webhook".to_owned(),
    };
    let operator = serde_json::to_string(&EventPayload::of(&event)).ok()?;
    let view = EventView::of(event, true).ok()?;
    let (_, pagination) = Params::default().log_page().ok()?;
    let attempt = AttemptView::of(attempt, true, Some(view.for_attempt("d")), None);
    let texts = [
        to_json(&PageOf::new(vec![view.clone()], pagination.clone())),
        to_json(&view),
        to_json(&PageOf::new(vec![attempt], pagination)),
    ];
    let mut out: Vec<String> = texts.into_iter().collect::<Option<_>>()?;
    out.push(operator);
    Some(out)
}

fn to_json(value: &impl Serialize) -> Option<String> {
    serde_json::to_string(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_views_carry_the_data_byte_for_byte() {
        let huge = "9".repeat(5000);
        for data in [
            r#"{}"#.to_owned(),
            r#"{"a":1e400,"s":"\ud800","b":[1,{"c":null}]}"#.to_owned(),
            format!(r#"{{ "big" : {huge} }}"#),
        ] {
            let served = served_event(&data).unwrap();
            assert_eq!(served.len(), 4);
            for text in served {
                assert!(text.contains(&format!("\"data\":{data}")), "{text:.200}");
            }
        }
    }

    #[test]
    fn hostile_requests_parse_without_panicking() {
        for body in [
            &b"{\"topics\":[\"a\"],\"filter\":{\"data\":{\"$gt\":1e400}}}"[..],
            b"{\"config\":{\"url\":1e400},\"metadata\":{\"a\":[[[[]]]]}}",
            b"[",
            b"\xff",
        ] {
            request_body(body);
        }
        let many = "tenant_id=a&".repeat(5000);
        for query in [
            "limit=99999999999999999999999&dir=sideways",
            "time[start]=0001-01-01T00:00:00Z&time[end]=9999-12-31T00:00:00Z&granularity=1s\
             &measures=count",
            many.as_str(),
            "%zz=%ff&include[18446744073709551615]=x",
        ] {
            query_string(query);
        }
    }
}
