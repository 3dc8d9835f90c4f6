//! Failures and what follows them: the retry schedule, `Retry-After`, timeouts, recovery,
//! manual retries, disabled destinations, and stopping with attempts in flight.

use std::time::Duration;

use jetpost::config::{RetrySchedule, Secret};
use jetpost::delivery::RetryPolicy;
use jetpost::store::{AttemptStatus, DeliveryStatus};
use serde_json::{Value, json};

use super::{Bed, TENANT, WAIT, config, eventually, v0_signature, webhook};
use crate::support::receiver::{Receiver, Recorded, Reply};

const OPS_SECRET: &str = "ops-signing-secret";

fn arrivals_of(receiver: &Receiver, event_id: &str) -> Vec<Recorded> {
    receiver
        .requests()
        .into_iter()
        .filter(|r| r.header("x-outpost-event-id") == Some(event_id))
        .collect()
}

/// Each request came at least `delays[i]` after the one before (a little slack for the
/// difference between the wall clock the store uses and the monotonic clock of arrivals).
fn assert_spaced(requests: &[Recorded], delays: &[u64]) {
    assert_eq!(requests.len(), delays.len() + 1);
    for (pair, delay) in requests.windows(2).zip(delays) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap + Duration::from_millis(20) >= Duration::from_secs(*delay),
            "retry came {gap:?} after the previous attempt, before the {delay}s the schedule says"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_is_retried_on_schedule_then_given_up_and_alerted() {
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Full {
        status: 500,
        headers: vec![],
        body: "boom".into(),
    });
    let ops = Receiver::start().await;
    let mut bed = Bed::sqlite().await;
    bed.create(webhook("d1", receiver.url("/"), &["*"])).await;
    bed.start(&config(|c| {
        c.retry_schedule = vec![1, 1, 2];
        c.operator_events.topics = vec!["*".into()];
        c.operator_events.http.url = Some(ops.url("/ops"));
        c.operator_events.http.signing_secret = Secret::new(OPS_SECRET);
    }));

    let retried = bed
        .publish(json!({"tenant_id": TENANT, "topic": "t", "data": {"n": 1}}))
        .await;
    let once = bed
        .publish(
            json!({"tenant_id": TENANT, "topic": "t", "eligible_for_retry": false, "data": {"n": 2}}),
        )
        .await;

    let delivery = bed
        .wait_for(&retried.id, "d1", DeliveryStatus::Failed)
        .await;
    assert_eq!(delivery.attempts, 4);
    assert_eq!(delivery.next_attempt_at, None);
    let attempts = bed.attempts(&retried.id, "d1").await;
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.attempt_number)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for attempt in &attempts {
        assert_eq!(attempt.status, AttemptStatus::Failed);
        assert_eq!(attempt.code, "500");
        assert!(!attempt.manual);
        assert_eq!(
            attempt.response_data,
            Some(json!({"status": 500, "body": "boom"}))
        );
    }
    assert_spaced(&arrivals_of(&receiver, &retried.id), &[1, 1, 2]);

    // Not eligible for retry: one attempt.
    bed.wait_for(&once.id, "d1", DeliveryStatus::Failed).await;
    assert_eq!(bed.attempts(&once.id, "d1").await.len(), 1);

    // Operator events: every failed attempt, and one exhausted-retries alert (the event that
    // was not eligible for retry did not exhaust anything).
    let events: Vec<(Recorded, Value)> = eventually("operator events", || async {
        let events: Vec<(Recorded, Value)> = ops
            .requests()
            .into_iter()
            .map(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                (r, body)
            })
            .collect();
        let count = |topic: &str| events.iter().filter(|(_, e)| e["topic"] == topic).count();
        (count("attempt.failed") == 5 && count("alert.attempt.exhausted_retries") == 1)
            .then_some(events)
    })
    .await;
    for (request, envelope) in &events {
        assert_eq!(request.path, "/ops");
        assert_eq!(
            request.header("x-outpost-signature"),
            Some(v0_signature(OPS_SECRET, &request.body).as_str())
        );
        assert_eq!(envelope["tenant_id"], TENANT);
        assert!(envelope["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert!(envelope["time"].as_str().is_some());
    }
    let exhausted = &events
        .iter()
        .find(|(_, e)| e["topic"] == "alert.attempt.exhausted_retries")
        .unwrap()
        .1["data"];
    assert_eq!(exhausted["event"]["id"], retried.id.as_str());
    assert_eq!(exhausted["event"]["data"], json!({"n": 1}));
    assert_eq!(exhausted["attempt"]["attempt_number"], 4);
    assert_eq!(exhausted["attempt"]["code"], "500");
    assert_eq!(exhausted["destination"]["id"], "d1");
    assert_eq!(exhausted["destination"]["type"], "webhook");
    assert!(exhausted["destination"].get("credentials").is_none());

    // A manual retry gets one attempt, and no automatic retries after it.
    bed.store
        .schedule_manual_retry(TENANT, &retried.id, "d1")
        .await
        .unwrap();
    bed.wake.notify_one();
    let fifth = eventually("the manual attempt", || async {
        let attempts = bed.attempts(&retried.id, "d1").await;
        (attempts.len() == 5).then(|| attempts[4].clone())
    })
    .await;
    assert_eq!(fifth.attempt_number, 5);
    assert!(fifth.manual);
    assert_eq!(fifth.status, AttemptStatus::Failed);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(bed.attempts(&retried.id, "d1").await.len(), 5);
    assert_eq!(
        bed.delivery(&retried.id, "d1").await.status,
        DeliveryStatus::Failed
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_postpones_a_retry_within_its_cap() {
    let asks_2s = Receiver::start().await;
    asks_2s.script([Reply::Full {
        status: 429,
        headers: vec![("retry-after".into(), "2".into())],
        body: String::new(),
    }]);
    let asks_a_day = Receiver::start().await;
    asks_a_day.script([Reply::Full {
        status: 503,
        headers: vec![("retry-after".into(), "86400".into())],
        body: String::new(),
    }]);
    let mut bed = Bed::sqlite().await;
    bed.create(webhook("d1", asks_2s.url("/"), &["*"])).await;
    bed.create(webhook("d2", asks_a_day.url("/"), &["*"])).await;
    bed.start_with(&config(|c| c.retry_schedule = vec![1]), |o| {
        o.retry = RetryPolicy::new(
            RetrySchedule::fixed(vec![Duration::from_secs(1)]),
            Duration::from_secs(3),
        );
    });
    let event = bed
        .publish(json!({"tenant_id": TENANT, "topic": "t", "data": {}}))
        .await;

    // The day-long Retry-After is capped at 3 s (plus at most 10 % jitter).
    let (due, first) = eventually("the 503 to be recorded", || async {
        let d = bed.delivery(&event.id, "d2").await;
        let attempts = bed.attempts(&event.id, "d2").await;
        (d.status == DeliveryStatus::Pending && attempts.len() == 1)
            .then(|| (d.next_attempt_at.unwrap(), attempts[0].clone()))
    })
    .await;
    assert_eq!(first.code, "503");
    let wait = (due - first.time).to_std().unwrap();
    assert!(
        wait >= Duration::from_secs(3) && wait <= Duration::from_secs(4),
        "retry due {wait:?} after the attempt"
    );

    for destination in ["d1", "d2"] {
        bed.wait_for(&event.id, destination, DeliveryStatus::Success)
            .await;
    }
    // Retry-After 2 s beats the schedule's 1 s.
    assert_spaced(&arrivals_of(&asks_2s, &event.id), &[2]);
    let attempts = bed.attempts(&event.id, "d1").await;
    assert_eq!(
        attempts.iter().map(|a| a.code.as_str()).collect::<Vec<_>>(),
        ["429", "200"]
    );
    assert_eq!(
        attempts[0].response_data,
        Some(json!({"status": 429, "body": "", "headers": {"retry-after": "2"}}))
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_errors_are_retried_until_the_endpoint_recovers() {
    let receiver = Receiver::start().await;
    receiver.script([
        Reply::Delay(Duration::from_secs(3), 200),
        Reply::Status(500),
        Reply::Drop,
    ]);
    let mut bed = Bed::sqlite().await;
    bed.create(webhook("d1", receiver.url("/"), &["*"])).await;
    bed.start(&config(|c| {
        c.delivery_timeout_seconds = 1;
        c.retry_schedule = vec![1, 1, 1];
    }));
    let event = bed
        .publish(json!({"tenant_id": TENANT, "topic": "t", "data": {"k": "v"}}))
        .await;

    let delivery = bed.wait_for(&event.id, "d1", DeliveryStatus::Success).await;
    assert_eq!(delivery.attempts, 4);
    let attempts = bed.attempts(&event.id, "d1").await;
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.attempt_number, a.code.as_str(), a.status))
            .collect::<Vec<_>>(),
        [
            (1, "timeout", AttemptStatus::Failed),
            (2, "500", AttemptStatus::Failed),
            (3, "connection_reset", AttemptStatus::Failed),
            (4, "200", AttemptStatus::Success),
        ]
    );
    assert!(attempts[0].response_data.as_ref().unwrap()["error"].is_string());
    // Every attempt carried the same event id and the same bytes.
    let requests = arrivals_of(&receiver, &event.id);
    assert_eq!(requests.len(), 4);
    assert!(requests.iter().all(|r| r.body == requests[0].body));
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_destinations_get_no_attempts_and_lose_their_retries() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let mut bed = Bed::sqlite().await;
    bed.create(webhook("d1", first.url("/"), &["*"])).await;
    bed.create(webhook("d2", second.url("/"), &["*"])).await;

    // Committed for both, then d1 is disabled before any attempt.
    let event = bed
        .publish(json!({"tenant_id": TENANT, "topic": "t", "data": {}}))
        .await;
    assert_eq!(event.destination_ids.len(), 2);
    bed.disable("d1").await;
    bed.start(&config(|c| c.retry_schedule = vec![2]));
    bed.wait_for(&event.id, "d2", DeliveryStatus::Success).await;
    bed.wait_for(&event.id, "d1", DeliveryStatus::Cancelled)
        .await;

    // A retry pending when its destination is disabled is cancelled, not sent.
    second.reply_with(Reply::Status(500));
    let failing = bed
        .publish(json!({"tenant_id": TENANT, "topic": "t", "data": {}}))
        .await;
    assert_eq!(failing.destination_ids, ["d2"]);
    eventually("the first attempt and its scheduled retry", || async {
        let d = bed.delivery(&failing.id, "d2").await;
        (d.status == DeliveryStatus::Pending && d.attempts == 1).then_some(())
    })
    .await;
    bed.disable("d2").await;
    assert_eq!(
        bed.delivery(&failing.id, "d2").await.status,
        DeliveryStatus::Cancelled
    );
    // Past the retry's due time (2 s plus jitter): still one attempt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bed.attempts(&failing.id, "d2").await.len(), 1);
    assert_eq!(
        bed.delivery(&failing.id, "d2").await.status,
        DeliveryStatus::Cancelled
    );
    assert!(first.requests().is_empty());
    assert_eq!(second.requests().len(), 2);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_attempts_in_flight_finish() {
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Delay(Duration::from_millis(1500), 200));
    let mut bed = Bed::sqlite().await;
    bed.create(webhook("d1", receiver.url("/"), &["*"])).await;
    bed.start(&config(|_| {}));
    let health = bed.dispatcher.as_ref().unwrap().health();
    let event = bed
        .publish(json!({"tenant_id": TENANT, "topic": "t", "data": {}}))
        .await;
    receiver.wait_for(1, WAIT).await;
    assert_eq!(health.snapshot().in_flight, 1);

    bed.stop().await;
    // Recorded before stop returned.
    assert_eq!(
        bed.delivery(&event.id, "d1").await.status,
        DeliveryStatus::Success
    );
    let status = health.snapshot();
    assert!(!status.running);
    assert_eq!(status.in_flight, 0);
    assert_eq!(status.attempts_recorded, 1);
    assert_eq!(status.last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_abandoned_at_stop_are_reclaimed_when_their_lease_expires() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Delay(Duration::from_secs(4), 200)]);
    let mut bed = Bed::sqlite().await;
    bed.create(webhook("d1", receiver.url("/"), &["*"])).await;
    let short = |o: &mut jetpost::delivery::DispatcherOptions| {
        o.lease = Duration::from_secs(2);
        o.shutdown_grace = Duration::from_millis(200);
    };
    bed.start_with(&config(|_| {}), short);
    let event = bed
        .publish(json!({"tenant_id": TENANT, "topic": "t", "data": {}}))
        .await;
    receiver.wait_for(1, WAIT).await;
    bed.stop().await;
    // Abandoned: nothing recorded, the lease still holds it.
    let held = bed.delivery(&event.id, "d1").await;
    assert_eq!(held.status, DeliveryStatus::Delivering);
    assert!(bed.attempts(&event.id, "d1").await.is_empty());

    // The next dispatcher takes it once the lease runs out, with the same event id.
    bed.start_with(&config(|_| {}), short);
    bed.wait_for(&event.id, "d1", DeliveryStatus::Success).await;
    let requests = arrivals_of(&receiver, &event.id);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);
    let attempts = bed.attempts(&event.id, "d1").await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].attempt_number, 1);
    bed.stop().await;
}
