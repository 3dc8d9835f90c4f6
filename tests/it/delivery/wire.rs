//! What arrives at the endpoint: exact bytes, Outpost's headers and signature, one request per
//! matching destination, and no more requests at once than the concurrency bounds allow.

use std::collections::BTreeMap;
use std::time::Duration;

use jetpost::store::{AttemptStatus, DeliveryStatus};
use serde_json::json;

use super::{Bed, SECRET, TENANT, WAIT, config, v0_signature, webhook};
use crate::support::receiver::{Receiver, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_exact_bytes_with_outpost_headers_and_signature() {
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Full {
        status: 202,
        headers: vec![],
        body: "thanks".into(),
    });
    let mut bed = Bed::sqlite().await;
    let mut destination = webhook("d1", receiver.url("/hook?x=1"), &["*"]);
    destination
        .config
        .insert("custom_headers".into(), r#"{"X-Custom":"c"}"#.into());
    destination.delivery_metadata = Some(BTreeMap::from([("region".into(), "eu".into())]));
    bed.create(destination).await;
    bed.start(&config(|_| {}));

    // Key order, a big integer and escapes must survive byte for byte.
    let data = r#"{"zebra":1,"alpha":2,"big":12345678901234567890,"esc":"<\u003c>\n"}"#;
    let raw = format!(
        r#"{{"tenant_id":"{TENANT}","topic":"order.paid","metadata":{{"source":"shop"}},"data":{data}}}"#
    );
    let accepted = bed.publish_raw(raw.as_bytes()).await;
    assert_eq!(accepted.destination_ids, vec!["d1".to_string()]);

    let request = receiver.wait_for(1, WAIT).await.remove(0);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hook?x=1");
    assert_eq!(request.body, data.as_bytes());
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.header("x-outpost-event-id"),
        Some(accepted.id.as_str())
    );
    assert_eq!(request.header("x-outpost-topic"), Some("order.paid"));
    assert_eq!(request.header("x-outpost-region"), Some("eu"));
    assert_eq!(request.header("x-outpost-source"), Some("shop"));
    assert_eq!(request.header("x-custom"), Some("c"));
    assert!(request.header("x-outpost-timestamp").is_some());
    assert_eq!(
        request.header("x-outpost-signature"),
        Some(v0_signature(SECRET, data.as_bytes()).as_str())
    );

    bed.wait_for(&accepted.id, "d1", DeliveryStatus::Success)
        .await;
    let attempts = bed.attempts(&accepted.id, "d1").await;
    assert_eq!(attempts.len(), 1);
    let attempt = &attempts[0];
    assert_eq!(attempt.attempt_number, 1);
    assert_eq!(attempt.status, AttemptStatus::Success);
    assert_eq!(attempt.code, "202");
    assert!(!attempt.manual);
    assert_eq!(
        attempt.response_data,
        Some(json!({"status": 202, "body": "thanks"}))
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fans_out_to_matching_destinations_by_topic_and_filter() {
    let all = Receiver::start().await;
    let paid = Receiver::start().await;
    let big = Receiver::start().await;
    let mut bed = Bed::sqlite().await;
    bed.create(webhook("d-all", all.url("/"), &["*"])).await;
    bed.create(webhook("d-paid", paid.url("/"), &["order.paid"]))
        .await;
    let mut filtered = webhook("d-big", big.url("/"), &["*"]);
    filtered.filter = Some(json!({"data": {"amount": {"$gte": 100}}}));
    bed.create(filtered).await;
    bed.start(&config(|_| {}));

    let small_paid = bed
        .publish(json!({"tenant_id": TENANT, "topic": "order.paid", "data": {"amount": 50}}))
        .await;
    let big_shipped = bed
        .publish(json!({"tenant_id": TENANT, "topic": "order.shipped", "data": {"amount": 500}}))
        .await;
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    assert_eq!(
        sorted(small_paid.destination_ids.clone()),
        ["d-all", "d-paid"]
    );
    assert_eq!(
        sorted(big_shipped.destination_ids.clone()),
        ["d-all", "d-big"]
    );

    for (event, destination) in [
        (&small_paid, "d-all"),
        (&small_paid, "d-paid"),
        (&big_shipped, "d-all"),
        (&big_shipped, "d-big"),
    ] {
        bed.wait_for(&event.id, destination, DeliveryStatus::Success)
            .await;
    }
    let ids = |receiver: &Receiver| {
        let mut ids: Vec<String> = receiver
            .requests()
            .iter()
            .map(|r| r.header("x-outpost-event-id").unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&all),
        sorted(vec![small_paid.id.clone(), big_shipped.id.clone()])
    );
    assert_eq!(ids(&paid), vec![small_paid.id.clone()]);
    assert_eq!(ids(&big), vec![big_shipped.id.clone()]);
    // Only matched destinations got a delivery at all.
    assert_eq!(
        bed.store
            .list_deliveries(TENANT, &small_paid.id)
            .await
            .unwrap()
            .len(),
        2
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_in_flight_stay_within_the_global_and_per_destination_bounds() {
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Delay(Duration::from_millis(300), 200));
    let mut bed = Bed::sqlite().await;
    bed.create(webhook("a", receiver.url("/a"), &["*"])).await;
    bed.create(webhook("b", receiver.url("/b"), &["*"])).await;
    bed.start(&config(|c| {
        c.delivery_max_concurrency = 3;
        c.delivery_max_concurrency_per_destination = 2;
    }));
    let mut events = Vec::new();
    for n in 0..8 {
        events.push(
            bed.publish(json!({"tenant_id": TENANT, "topic": "t", "data": {"n": n}}))
                .await,
        );
    }
    receiver.wait_for(16, WAIT).await;
    for event in &events {
        for destination in ["a", "b"] {
            bed.wait_for(&event.id, destination, DeliveryStatus::Success)
                .await;
        }
    }
    assert!(
        receiver.max_concurrent("/a") <= 2,
        "{}",
        receiver.max_concurrent("/a")
    );
    assert!(
        receiver.max_concurrent("/b") <= 2,
        "{}",
        receiver.max_concurrent("/b")
    );
    assert!(
        receiver.max_concurrent("*") <= 3,
        "{}",
        receiver.max_concurrent("*")
    );
    // And the bounds are used, not just respected: attempts do overlap.
    assert!(receiver.max_concurrent("*") >= 2);
    assert_eq!(receiver.requests().len(), 16);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_delivery_is_committed_leased_and_sent_without_a_claim() {
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Delay(Duration::from_millis(1500), 200));
    let mut bed = Bed::sqlite().await;
    bed.create(webhook("a", receiver.url("/a"), &["*"])).await;
    bed.start_with(&config(|_| {}), |o| {
        // Claims would only come after this long: anything sent sooner was handed off.
        o.max_idle_wait = Duration::from_secs(30);
    });
    let owner = bed.dispatcher.as_ref().unwrap().owner().to_owned();
    let accepted = bed
        .publish(json!({"tenant_id": TENANT, "topic": "t", "data": {}}))
        .await;

    // Committed already leased to this dispatcher, and on the wire at once.
    let deliveries = bed
        .store
        .list_deliveries(TENANT, &accepted.id)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, DeliveryStatus::Delivering);
    assert_eq!(deliveries[0].lease_owner.as_deref(), Some(owner.as_str()));
    receiver.wait_for(1, Duration::from_secs(1)).await;

    bed.wait_for(&accepted.id, "a", DeliveryStatus::Success)
        .await;
    let attempts = bed.attempts(&accepted.id, "a").await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].attempt_number, 1);
    assert_eq!(receiver.requests().len(), 1);
    bed.stop().await;
}
