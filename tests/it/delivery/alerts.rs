//! Consecutive-failure alerts and auto-disable, reported as Outpost operator events to a second
//! receiver and checked there (envelope, payloads, signature).

use std::time::Duration;

use jetpost::config::Secret;
use jetpost::store::DeliveryStatus;
use serde_json::{Value, json};

use super::{Bed, TENANT, config, eventually, v0_signature, webhook};
use crate::support::receiver::{Receiver, Recorded, Reply};

const OPS_SECRET: &str = "ops-signing-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_alert_at_each_level_and_disable_the_destination() {
    let endpoint = Receiver::start().await;
    endpoint.reply_with(Reply::Status(500));
    let ops = Receiver::start().await;
    let mut bed = Bed::sqlite().await;
    bed.create(webhook("d1", endpoint.url("/"), &["*"])).await;
    bed.start(&config(|c| {
        // Retries far away: every failure here is a first attempt.
        c.retry_schedule = vec![600];
        c.alert.consecutive_failure_count = 4;
        c.alert.auto_disable_destination = true;
        c.operator_events.topics = vec![
            "alert.destination.consecutive_failure".into(),
            "alert.destination.disabled".into(),
            "attempt.failed".into(),
        ];
        c.operator_events.http.url = Some(ops.url("/ops"));
        c.operator_events.http.signing_secret = Secret::new(OPS_SECRET);
    }));

    let mut events = Vec::new();
    for n in 0..4 {
        events.push(
            bed.publish(json!({"tenant_id": TENANT, "topic": "t", "data": {"n": n}}))
                .await,
        );
    }

    // Levels of 4: 50 % at 2 failures, 70 % at 3, 90 % and 100 % both at 4 (reported as 100).
    let received: Vec<(Recorded, Value)> = eventually("the alerts", || async {
        let received: Vec<(Recorded, Value)> = ops
            .requests()
            .into_iter()
            .map(|r| {
                let body = serde_json::from_slice(&r.body).unwrap();
                (r, body)
            })
            .collect();
        (received.len() >= 8).then_some(received)
    })
    .await;
    let of = |topic: &str| -> Vec<&Value> {
        received
            .iter()
            .filter(|(_, e)| e["topic"] == topic)
            .map(|(_, e)| &e["data"])
            .collect()
    };
    for (request, envelope) in &received {
        assert_eq!(
            request.header("x-outpost-signature"),
            Some(v0_signature(OPS_SECRET, &request.body).as_str()),
            "{envelope}"
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(envelope["tenant_id"], TENANT);
    }
    assert_eq!(of("attempt.failed").len(), 4);
    let mut levels: Vec<(u64, u64, u64)> = of("alert.destination.consecutive_failure")
        .iter()
        .map(|d| {
            let f = &d["consecutive_failures"];
            (
                f["current"].as_u64().unwrap(),
                f["max"].as_u64().unwrap(),
                f["threshold"].as_u64().unwrap(),
            )
        })
        .collect();
    levels.sort();
    assert_eq!(levels, [(2, 4, 50), (3, 4, 70), (4, 4, 100)]);

    let disabled = of("alert.destination.disabled");
    assert_eq!(disabled.len(), 1);
    let disabled = disabled[0];
    assert_eq!(disabled["reason"], "consecutive_failure");
    assert_eq!(disabled["tenant_id"], TENANT);
    assert_eq!(disabled["destination"]["id"], "d1");
    assert!(disabled["destination"]["disabled_at"].is_string());
    assert_eq!(
        disabled["disabled_at"],
        disabled["destination"]["disabled_at"]
    );
    assert_eq!(disabled["attempt"]["status"], "failed");
    assert_eq!(disabled["attempt"]["code"], "500");

    // The destination is disabled, its scheduled retries cancelled, and ingest no longer
    // routes to it.
    let stored = bed
        .store
        .get_destination(TENANT, "d1")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.disabled_at.is_some());
    for event in &events {
        bed.wait_for(&event.id, "d1", DeliveryStatus::Cancelled)
            .await;
    }
    let after = bed
        .publish(json!({"tenant_id": TENANT, "topic": "t", "data": {}}))
        .await;
    assert!(after.destination_ids.is_empty());

    // Nothing more is sent: no request to the endpoint, no further alert.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(endpoint.requests().len(), 4);
    assert_eq!(ops.requests().len(), 8);

    // Enabling starts the count over: the next failure is not an alert.
    bed.store.enable_destination(TENANT, "d1").await.unwrap();
    bed.ingest.routing().invalidate(TENANT);
    let again = bed
        .publish(json!({"tenant_id": TENANT, "topic": "t", "data": {}}))
        .await;
    assert_eq!(again.destination_ids, ["d1"]);
    eventually("the attempt.failed of the next failure", || async {
        (ops.requests().len() == 9).then_some(())
    })
    .await;
    let last: Value = serde_json::from_slice(&ops.requests()[8].body).unwrap();
    assert_eq!(last["topic"], "attempt.failed");
    bed.stop().await;
}
