//! Stored event data that `serde_json::Value` cannot hold (a number beyond f64, a 5,000-digit
//! integer, a lone surrogate) is accepted, routed by a filter on its other fields, delivered
//! and served by every listing and lookup — tenant and admin — exactly as published.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, Service};
use crate::support::db::TestDb;
use crate::support::receiver::Receiver;

crate::on_both_backends!(unholdable_data_is_served_byte_for_byte);

/// `data` as published: valid JSON that no f64 (or Rust string) can hold in places.
pub fn unholdable_data() -> String {
    format!(
        r#"{{"a":1e400, "big":{}, "s":"\ud800", "b":1}}"#,
        "9".repeat(5000)
    )
}

/// Answers 200, carries `data` verbatim where expected, and (with `data` blanked out) matches
/// the contract.
fn check_answer(path: &str, status: StatusCode, body: &[u8], data: &str, with_data: bool) {
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {text}");
    assert_eq!(
        text.contains(data),
        with_data,
        "{path}: data {} in {text:.300}",
        if with_data { "missing" } else { "unexpected" }
    );
    let readable: Value = serde_json::from_str(&text.replace(data, "{}"))
        .unwrap_or_else(|e| panic!("{path}: not JSON once data is blanked ({e}): {text:.300}"));
    crate::support::contract::check("GET", path, status.as_u16(), &readable);
}

async fn unholdable_data_is_served_byte_for_byte(db: TestDb) {
    let receiver = Receiver::start().await;
    let svc = Service::start_on(db).await;
    svc.tenant("t1").await;
    svc.webhook(
        "t1",
        json!({"id": "d1", "type": "webhook", "topics": "*", "filter": {"data": {"b": 1}},
               "config": {"url": receiver.url("/hook")}}),
    )
    .await;
    let data = unholdable_data();
    let body = format!(r#"{{"id":"e1","tenant_id":"t1","topic":"order","data":{data}}}"#);
    let (status, accepted) = svc
        .call_raw(
            Method::POST,
            "/api/v1/publish",
            &Auth::Admin,
            body.into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(
        accepted["destination_ids"],
        json!(["d1"]),
        "the filter on b matched"
    );
    let delivered = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(
        delivered[0].body,
        data.as_bytes(),
        "delivered byte for byte"
    );

    // The attempt is recorded shortly after the delivery.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let attempt_id = loop {
        let (_, attempts) = svc.get("/api/v1/attempts", &Auth::Admin).await;
        if let Some(id) = attempts["models"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let tenant = svc.token("t1").await;
    let every_include = "include=event.data&include=response_data&include=destination";
    let cases: Vec<(String, bool)> = vec![
        ("/api/v1/events".into(), true),
        ("/api/v1/events?tenant_id=t1&limit=1000".into(), true),
        ("/api/v1/events/e1".into(), true),
        ("/api/v1/events/e1?tenant_id=t1".into(), true),
        ("/api/v1/attempts".into(), false),
        ("/api/v1/attempts?include=event".into(), false),
        ("/api/v1/attempts?include=event.data".into(), true),
        ("/api/v1/attempts?include=response_data".into(), false),
        ("/api/v1/attempts?include=destination".into(), false),
        (format!("/api/v1/attempts?{every_include}"), true),
        (
            format!("/api/v1/attempts/{attempt_id}?{every_include}"),
            true,
        ),
        ("/api/v1/tenants/t1/destinations/d1/attempts".into(), false),
        (
            format!("/api/v1/tenants/t1/destinations/d1/attempts?{every_include}"),
            true,
        ),
        (
            format!("/api/v1/tenants/t1/destinations/d1/attempts/{attempt_id}?include=event.data"),
            true,
        ),
    ];
    for auth in [&Auth::Admin, &tenant] {
        for (path, with_data) in &cases {
            if matches!(auth, Auth::Bearer(_)) && path.contains("tenant_id=") {
                continue;
            }
            let (status, body) = svc.get_bytes(path, auth).await;
            check_answer(path, status, &body, &data, *with_data);
        }
    }

    // A manual retry re-evaluates the filter against the stored data.
    let (status, retried) = svc
        .call(
            Method::POST,
            "/api/v1/retry",
            &Auth::Admin,
            Some(&json!({"event_id": "e1", "destination_id": "d1"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    let delivered = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(delivered[1].body, data.as_bytes());
}
