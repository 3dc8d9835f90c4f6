//! `POST /publish` and `/events`: the publish response, duplicates, invalid events, and the
//! event log with its filters and cursor pagination in both directions.

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, NOWHERE, Service, assert_error, messages};
use crate::support::db::TestDb;

crate::on_both_backends!(publish_and_read_back);

async fn setup(svc: &Service) {
    svc.tenant("t1").await;
    svc.webhook(
        "t1",
        json!({"id": "d1", "type": "webhook", "topics": ["order.paid", "order.shipped"],
               "config": {"url": NOWHERE}}),
    )
    .await;
    svc.webhook(
        "t1",
        json!({"id": "d2", "type": "webhook", "topics": ["order.paid"],
               "filter": {"data": {"amount": {"$gte": 100}}},
               "config": {"url": NOWHERE}}),
    )
    .await;
}

async fn publish_and_read_back(db: TestDb) {
    let svc = Service::start_on(db).await;
    setup(&svc).await;
    // Data bytes come back exactly: key order, spacing and a big integer.
    let data = r#"{"z":1, "amount":150,"big":12345678901234567890}"#;
    let body = format!(
        r#"{{"id":"e1","tenant_id":"t1","topic":"order.paid","metadata":{{"source":"crm"}},"data":{data}}}"#
    );
    let (status, accepted) = svc
        .call_raw(
            Method::POST,
            "/api/v1/publish",
            &Auth::Admin,
            body.clone().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let mut ids: Vec<String> = serde_json::from_value(accepted["destination_ids"].clone()).unwrap();
    ids.sort();
    assert_eq!(accepted["id"], "e1");
    assert_eq!(accepted["duplicate"], false);
    assert_eq!(ids, vec!["d1", "d2"]);

    // The same id again is a duplicate: nothing new is stored.
    let (status, again) = svc
        .call_raw(
            Method::POST,
            "/api/v1/publish",
            &Auth::Admin,
            body.into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["id"], "e1");
    assert_eq!(again["duplicate"], true);
    // As Outpost: a duplicate still names the destinations the event matches.
    let mut again_ids: Vec<String> =
        serde_json::from_value(again["destination_ids"].clone()).unwrap();
    again_ids.sort();
    assert_eq!(again_ids, vec!["d1", "d2"]);

    let resp = svc
        .client
        .get(svc.url("/api/v1/events/e1"))
        .bearer_auth(super::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(text.contains(&format!(r#""data":{data}"#)), "{text}");
    let event: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(event["tenant_id"], "t1");
    assert_eq!(event["topic"], "order.paid");
    assert_eq!(event["eligible_for_retry"], true);
    assert_eq!(event["metadata"], json!({"source": "crm"}));
    let mut matched: Vec<String> =
        serde_json::from_value(event["matched_destination_ids"].clone()).unwrap();
    matched.sort();
    assert_eq!(matched, vec!["d1", "d2"]);

    let list = svc
        .admin(Method::GET, "/api/v1/events", None, StatusCode::OK)
        .await;
    assert_eq!(list["models"].as_array().unwrap().len(), 1);
    assert_eq!(list["pagination"]["order_by"], "time");
    assert_eq!(list["pagination"]["dir"], "desc");
    assert_eq!(list["pagination"]["limit"], 100);
    assert_eq!(list["pagination"]["next"], Value::Null);
    assert_eq!(list["pagination"]["prev"], Value::Null);

    // The filter keeps small orders from d2; a topic nobody takes is accepted, not stored.
    let small = svc
        .publish(json!({"tenant_id": "t1", "topic": "order.paid", "data": {"amount": 5}}))
        .await;
    assert_eq!(small["destination_ids"], json!(["d1"]));
    assert!(
        !small["id"].as_str().unwrap().is_empty(),
        "an id is generated"
    );
    let none = svc
        .publish(json!({"id": "e-none", "tenant_id": "t1", "topic": "user.created", "data": {}}))
        .await;
    assert_eq!(none["destination_ids"], json!([]));
    let (status, _) = svc.get("/api/v1/events/e-none", &Auth::Admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let unknown = svc
        .publish(json!({"tenant_id": "nobody", "data": {}}))
        .await;
    assert_eq!(unknown["destination_ids"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_422_naming_the_field() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.topics = vec!["order.paid".into()];
    })
    .await;
    svc.tenant("t1").await;
    let cases = [
        (json!({"data": {}}), "tenant_id is required"),
        (
            json!({"tenant_id": "t1", "topic": "order.paid"}),
            "data is required",
        ),
        (
            json!({"tenant_id": "t1", "topic": "order.paid", "data": [1]}),
            "data must be",
        ),
        (
            json!({"tenant_id": "t1", "topic": "order.paid", "data": {}, "metadata": {"a": 1}}),
            "metadata.a",
        ),
        (
            json!({"tenant_id": "t1", "topic": "order.paid", "data": {}, "time": "soon"}),
            "time",
        ),
        (json!({"tenant_id": "t1", "data": {}}), "topic is required"),
        (
            json!({"tenant_id": "t1", "topic": "user.created", "data": {}}),
            "topic \"user.created\"",
        ),
    ];
    for (body, expected) in cases {
        let (status, json) = svc
            .call(Method::POST, "/api/v1/publish", &Auth::Admin, Some(&body))
            .await;
        assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
        let m = messages(&json);
        assert!(m[0].starts_with(expected), "{body}: {m:?}");
    }
    let (status, json) = svc
        .call_raw(
            Method::POST,
            "/api/v1/publish",
            &Auth::Admin,
            b"{not json".to_vec(),
        )
        .await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json["message"], "invalid JSON");
}

/// Ten events a minute apart, e0 oldest.
async fn ten_events(svc: &Service) -> DateTime<Utc> {
    setup(svc).await;
    let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    for i in 0..10 {
        let topic = if i % 2 == 0 {
            "order.paid"
        } else {
            "order.shipped"
        };
        svc.publish(json!({
            "id": format!("e{i}"),
            "tenant_id": "t1",
            "topic": topic,
            "time": (start + TimeDelta::minutes(i)).to_rfc3339(),
            "data": {"amount": i * 30},
        }))
        .await;
    }
    start
}

fn ids(page: &Value) -> Vec<String> {
    page["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn page(svc: &Service, query: &str) -> Value {
    svc.admin(
        Method::GET,
        &format!("/api/v1/events?{query}"),
        None,
        StatusCode::OK,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_paginate_in_both_directions() {
    let svc = Service::start().await;
    ten_events(&svc).await;
    for dir in ["desc", "asc"] {
        let mut expected: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
        if dir == "desc" {
            expected.reverse();
        }
        // Forward through four pages of 3, 3, 3, 1.
        let mut seen = Vec::new();
        let mut pages = Vec::new();
        let mut query = format!("limit=3&dir={dir}");
        loop {
            let p = page(&svc, &query).await;
            seen.extend(ids(&p));
            pages.push(p.clone());
            match p["pagination"]["next"].as_str() {
                Some(next) => query = format!("limit=3&dir={dir}&next={next}"),
                None => break,
            }
        }
        assert_eq!(seen, expected, "{dir}");
        assert_eq!(pages.len(), 4);
        assert_eq!(pages[0]["pagination"]["prev"], Value::Null);
        // And back from the last page to the first.
        let mut back = Vec::new();
        let mut current = pages.last().unwrap().clone();
        while let Some(prev) = current["pagination"]["prev"].as_str() {
            current = page(&svc, &format!("limit=3&dir={dir}&prev={prev}")).await;
            back.push(ids(&current));
        }
        let back: Vec<Vec<String>> = back.into_iter().rev().collect();
        let forward: Vec<Vec<String>> = pages[..3].iter().map(ids).collect();
        assert_eq!(back, forward, "{dir}");
    }
    // limit is 1..=1000: anything else is refused, naming the limit (Outpost caps silently).
    assert_eq!(page(&svc, "limit=1000").await["pagination"]["limit"], 1000);
    for bad in ["limit=5000", "limit=abc", "limit=0"] {
        let (status, body) = svc
            .get(&format!("/api/v1/events?{bad}"), &Auth::Admin)
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        assert!(body["message"].as_str().unwrap().contains("1000"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_filter_by_time_topic_destination_and_id() {
    let svc = Service::start().await;
    let start = ten_events(&svc).await;
    let at = |m: i64| {
        (start + TimeDelta::minutes(m))
            .to_rfc3339()
            .replace("+00:00", "Z")
    };
    let cases = [
        (
            format!("time[gte]={}&dir=asc", at(7)),
            vec!["e7", "e8", "e9"],
        ),
        (format!("time[gt]={}&dir=asc", at(7)), vec!["e8", "e9"]),
        (format!("time[lt]={}&dir=asc", at(2)), vec!["e0", "e1"]),
        (
            format!("time[gte]={}&time[lte]={}&dir=asc", at(3), at(5)),
            vec!["e3", "e4", "e5"],
        ),
        ("time[lt]=2026-01-01&dir=asc".to_owned(), vec![]),
        (
            "topic=order.shipped&dir=asc&limit=2".to_owned(),
            vec!["e1", "e3"],
        ),
        // d2 takes paid orders of 100 or more: e4 (120), e6 (180), e8 (240).
        (
            "destination_id=d2&dir=asc".to_owned(),
            vec!["e4", "e6", "e8"],
        ),
        ("id[]=e2&id[]=e5&dir=asc".to_owned(), vec!["e2", "e5"]),
        ("tenant_id=t1&id=e9".to_owned(), vec!["e9"]),
        ("tenant_id=other".to_owned(), vec![]),
    ];
    for (query, expected) in cases {
        assert_eq!(ids(&page(&svc, &query).await), expected, "{query}");
    }
    for (query, expected) in [
        ("time[gte]=yesterday", StatusCode::UNPROCESSABLE_ENTITY),
        ("time[any]=2026-01-01", StatusCode::BAD_REQUEST),
        ("order_by=id", StatusCode::UNPROCESSABLE_ENTITY),
        ("dir=random", StatusCode::UNPROCESSABLE_ENTITY),
        ("next=%%%", StatusCode::BAD_REQUEST),
        ("next=bm9wZQ", StatusCode::BAD_REQUEST),
    ] {
        let (status, json) = svc
            .get(&format!("/api/v1/events?{query}"), &Auth::Admin)
            .await;
        assert_error(status, &json, expected);
    }
    let (_, json) = svc
        .get("/api/v1/events?time[gte]=yesterday", &Auth::Admin)
        .await;
    assert!(json["data"]["query.time[gte]"].is_string(), "{json}");

    // A tenant lists only its own events, whatever it asks for.
    svc.tenant("t2").await;
    let t2 = svc.token("t2").await;
    let (status, json) = svc.get("/api/v1/events", &t2).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["models"], json!([]));
    let (status, _) = svc.get("/api/v1/events/e1", &t2).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
