//! A tenant's whole journey through the API: a webhook destination pointing at a real
//! `Receiver`, a published event stored with its delivery, the attempt log with `include`, and
//! manual retries with Outpost's refusals. Until the dispatcher runs inside `app::run`, the
//! attempt is recorded through a second store handle, as a dispatcher would.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use jetpost::store::{AttemptStatus, ClaimRequest, DeliveryOutcome, NewAttempt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, Service, assert_error};
use crate::support::receiver::Receiver;

/// Waits for an attempt of `event_id` to show in the API; records one (success, 200) when
/// nothing delivers the event by itself.
async fn ensure_attempt(svc: &Service, event_id: &str) -> Value {
    let store = svc.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut waited = 0;
    loop {
        let list = svc
            .admin(
                Method::GET,
                &format!("/api/v1/attempts?event_id={event_id}"),
                None,
                StatusCode::OK,
            )
            .await;
        if let Some(first) = list["models"].as_array().and_then(|m| m.first()) {
            return first.clone();
        }
        waited += 1;
        if waited > 20 {
            let claimed = store
                .claim_due(&ClaimRequest {
                    owner: "api-test",
                    now: Utc::now() + TimeDelta::seconds(1),
                    limit: 10,
                    per_destination: 10,
                    lease: Duration::from_secs(30),
                })
                .await
                .unwrap();
            for c in claimed {
                let attempt = NewAttempt {
                    id: uuid::Uuid::new_v4().to_string(),
                    status: AttemptStatus::Success,
                    code: "200".into(),
                    response_data: Some(json!({"status_code": 200, "body": "ok", "headers": {}})),
                    time: Utc::now(),
                };
                store
                    .complete_attempt(&c.lease, &attempt, DeliveryOutcome::Success)
                    .await
                    .unwrap();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt for {event_id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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

    let attempt = ensure_attempt(&svc, "e1").await;
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
