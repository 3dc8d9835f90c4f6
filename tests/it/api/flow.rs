//! A tenant's whole journey through the API: a webhook destination pointing at a real
//! `Receiver`, a published event delivered by the dispatcher running inside `app::run`, the
//! attempt log with `include`, and manual retries with Outpost's refusals.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, Service, assert_error};
use crate::support::receiver::Receiver;

/// Waits until `/attempts?<query>` lists `count` attempts (newest first); returns them.
async fn wait_for_attempts(svc: &Service, query: &str, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = svc
            .admin(
                Method::GET,
                &format!("/api/v1/attempts?{query}"),
                None,
                StatusCode::OK,
            )
            .await;
        let models = list["models"].as_array().cloned().unwrap_or_default();
        if models.len() >= count {
            return models;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} attempt(s) for {query} not within 60 s: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_deliver_inspect_and_retry() {
    let receiver = Receiver::start().await;
    let svc = Service::start().await;
    svc.tenant("t1").await;
    let token = svc.token("t1").await;
    // The tenant sets up its own destination.
    let (status, d1) = svc
        .call(
            Method::POST,
            "/api/v1/tenants/t1/destinations",
            &token,
            Some(
                &json!({"id": "d1", "type": "webhook", "topics": ["order.paid"],
                         "config": {"url": receiver.url("/hook")}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{d1}");
    svc.webhook(
        "t1",
        json!({"id": "d-other", "type": "webhook", "topics": ["user.created"],
               "config": {"url": receiver.url("/other")}}),
    )
    .await;

    let accepted = svc
        .publish(json!({"id": "e1", "tenant_id": "t1", "topic": "order.paid",
                        "data": {"order": 42}}))
        .await;
    assert_eq!(accepted["destination_ids"], json!(["d1"]));

    // Stored with one delivery to d1, and listed.
    let store = svc.store().await;
    let deliveries = store.list_deliveries("t1", "e1").await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].destination_id, "d1");
    let (status, events) = svc.get("/api/v1/events?topic=order.paid", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events["models"][0]["id"], "e1");
    assert_eq!(events["models"][0]["data"], json!({"order": 42}));

    // Delivered to the receiver, byte for byte, in Outpost's format.
    let requests = receiver.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(requests[0].path, "/hook");
    assert_eq!(&requests[0].body[..], br#"{"order":42}"#);
    assert_eq!(requests[0].header("x-outpost-event-id"), Some("e1"));
    assert_eq!(requests[0].header("x-outpost-topic"), Some("order.paid"));
    let signature = requests[0].header("x-outpost-signature").unwrap();
    assert!(signature.starts_with("v0="), "{signature}");

    let attempt = wait_for_attempts(&svc, "event_id=e1", 1).await[0].clone();
    assert_eq!(attempt["status"], "success");
    assert_eq!(attempt["code"], "200");
    let attempt_id = attempt["id"].as_str().unwrap().to_owned();
    assert_eq!(attempt["event_id"], "e1");
    assert_eq!(attempt["destination_id"], "d1");
    assert_eq!(attempt["destination_type"], "webhook");
    assert_eq!(attempt["attempt_number"], 1);
    assert_eq!(attempt["manual"], false);
    assert!(attempt.get("response_data").is_none(), "{attempt}");
    assert!(attempt.get("event").is_none(), "{attempt}");

    let (status, listed) = svc
        .get(
            "/api/v1/attempts?event_id=e1&include=event.data&include=response_data&include=destination",
            &token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let full = &listed["models"][0];
    assert_eq!(full["event"]["id"], "e1");
    assert_eq!(full["event"]["data"], json!({"order": 42}));
    assert!(full["response_data"].is_object(), "{full}");
    assert_eq!(full["destination"]["id"], "d1");
    let (_, summary) = svc
        .get(
            &format!("/api/v1/attempts/{attempt_id}?include=event"),
            &token,
        )
        .await;
    assert_eq!(summary["event"]["topic"], "order.paid");
    assert!(summary["event"].get("data").is_none(), "{summary}");
    for path in [
        format!("/api/v1/tenants/t1/destinations/d1/attempts/{attempt_id}"),
        format!("/api/v1/attempts/{attempt_id}?tenant_id=t1"),
    ] {
        let (status, one) = svc.get(&path, &Auth::Admin).await;
        assert_eq!(status, StatusCode::OK, "{path}: {one}");
        assert_eq!(one["id"], attempt_id.as_str());
    }
    let (status, json) = svc
        .get(
            &format!("/api/v1/tenants/t1/destinations/d-other/attempts/{attempt_id}"),
            &Auth::Admin,
        )
        .await;
    assert_error(status, &json, StatusCode::NOT_FOUND);
    let (_, by_destination) = svc
        .get(
            "/api/v1/tenants/t1/destinations/d1/attempts?status=success",
            &token,
        )
        .await;
    assert_eq!(by_destination["models"].as_array().unwrap().len(), 1);
    let (_, failed) = svc.get("/api/v1/attempts?status=failed", &token).await;
    assert_eq!(failed["models"], json!([]));
    let (status, json) = svc.get("/api/v1/attempts?status=maybe", &token).await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);

    // A manual retry reopens the delivery, flagged manual.
    let (status, retried) = svc
        .call(
            Method::POST,
            "/api/v1/retry",
            &token,
            Some(&json!({"event_id": "e1", "destination_id": "d1"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried, json!({"success": true}));
    let delivery = &store.list_deliveries("t1", "e1").await.unwrap()[0];
    assert!(delivery.manual, "{delivery:?}");
    receiver.wait_for(2, Duration::from_secs(60)).await;
    let attempts = wait_for_attempts(&svc, "event_id=e1", 2).await;
    let retried = &attempts[0];
    assert_eq!(retried["manual"], true, "{retried}");
    assert_eq!(retried["attempt_number"], 2);
    assert_eq!(retried["status"], "success");

    // Refusals as Outpost words them.
    let (status, json) = svc
        .call(
            Method::POST,
            "/api/v1/retry",
            &token,
            Some(&json!({"event_id": "e1", "destination_id": "d-other"})),
        )
        .await;
    assert_error(status, &json, StatusCode::BAD_REQUEST);
    assert_eq!(json["message"], "destination does not match event");
    let (status, json) = svc
        .call(
            Method::POST,
            "/api/v1/retry",
            &token,
            Some(&json!({"event_id": "e1", "destination_id": "missing"})),
        )
        .await;
    assert_error(status, &json, StatusCode::NOT_FOUND);
    svc.admin(
        Method::PUT,
        "/api/v1/tenants/t1/destinations/d1/disable",
        None,
        StatusCode::OK,
    )
    .await;
    let (status, json) = svc
        .call(
            Method::POST,
            "/api/v1/retry",
            &Auth::Admin,
            Some(&json!({"event_id": "e1", "destination_id": "d1"})),
        )
        .await;
    assert_error(status, &json, StatusCode::BAD_REQUEST);
    assert_eq!(json["message"], "Destination is disabled");
    assert_eq!(json["data"], json!({"error": "destination_disabled"}));
}
