//! Retention (`log_retention_ttl_days`): the store's purge on SQLite and Postgres (what goes,
//! what stays, batches, counts), `/healthz` showing the last purge, and a `jetpost serve`
//! killed with SIGKILL in the middle of a purge leaving a consistent store that the next start
//! finishes purging.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jetpost::store::{
    AttemptStatus, ClaimRequest, Credentials, DeliveryOutcome, DeliveryStatus, NewAttempt,
    NewDestination, NewEvent, PurgeOptions, Purged, Store,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::api::{Auth, Service};
use crate::support::db::TestDb;
use crate::support::serve::Serve;

const AES: &str = "test-aes-secret";

crate::on_both_backends!(
    purge_deletes_old_finished_events_with_their_deliveries_and_attempts,
    purge_keeps_an_event_until_its_last_delivery_finishes,
);

fn destination(id: &str) -> NewDestination {
    NewDestination {
        tenant_id: "t1".into(),
        id: id.into(),
        kind: "webhook".into(),
        topics: vec!["*".into()],
        filter: None,
        config: BTreeMap::from([("url".into(), format!("https://example.test/{id}"))]),
        credentials: Credentials(BTreeMap::from([("secret".into(), "whsec_x".into())])),
        delivery_metadata: None,
        metadata: None,
    }
}

fn event(id: &str, destination_ids: &[&str]) -> NewEvent {
    NewEvent {
        tenant_id: "t1".into(),
        id: id.into(),
        destination_id: None,
        topic: "order.paid".into(),
        time: Utc::now(),
        metadata: None,
        data: format!(r#"{{"id":"{id}"}}"#),
        eligible_for_retry: true,
        destination_ids: destination_ids.iter().map(|d| d.to_string()).collect(),
        lease: None,
    }
}

fn claim(now: DateTime<Utc>) -> ClaimRequest<'static> {
    ClaimRequest {
        owner: "w",
        now,
        limit: 1000,
        per_destination: 1000,
        lease: Duration::from_secs(600),
    }
}

/// Claims every due delivery and completes it with `outcome(event_id, destination_id)`;
/// `None` leaves it claimed (in flight).
async fn attempt_all(
    store: &Store,
    now: DateTime<Utc>,
    outcome: impl Fn(&str, &str) -> Option<DeliveryOutcome>,
) {
    for c in store.claim_due(&claim(now)).await.unwrap() {
        let (event_id, destination_id) = (&c.delivery.event_id, &c.delivery.destination_id);
        let Some(outcome) = outcome(event_id, destination_id) else {
            continue;
        };
        let status = if outcome == DeliveryOutcome::Success {
            AttemptStatus::Success
        } else {
            AttemptStatus::Failed
        };
        let attempt = NewAttempt {
            id: format!(
                "att-{event_id}-{destination_id}-{}",
                c.delivery.attempts + 1
            ),
            status,
            code: "200".into(),
            response_data: None,
            time: now,
        };
        assert!(
            store
                .complete_attempt(&c.lease, &attempt, outcome)
                .await
                .unwrap()
        );
    }
}

/// Makes the events whose id starts with `old-` look stored in 2000.
async fn age_old_events(db: &TestDb) {
    db.raw_execute(
        "UPDATE events SET created_at = '2000-01-01T00:00:00.000000Z' WHERE id LIKE 'old-%'",
    )
    .await;
}

async fn orphans(db: &TestDb) -> (i64, i64) {
    let deliveries = db
        .raw_count(
            "SELECT count(*) FROM deliveries d WHERE NOT EXISTS \
             (SELECT 1 FROM events e WHERE e.tenant_id = d.tenant_id AND e.id = d.event_id)",
        )
        .await;
    let attempts = db
        .raw_count(
            "SELECT count(*) FROM attempts a WHERE NOT EXISTS \
             (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)",
        )
        .await;
    (deliveries, attempts)
}

fn no_pause(batch_size: usize) -> PurgeOptions {
    PurgeOptions {
        batch_size,
        pause: Duration::ZERO,
        rest_per_busy: 0,
    }
}

async fn purge_deletes_old_finished_events_with_their_deliveries_and_attempts(db: TestDb) {
    let store = db.store(Some(AES)).await;
    store.upsert_tenant("t1", None).await.unwrap();
    for id in ["d1", "d2"] {
        store.create_destination(&destination(id)).await.unwrap();
    }
    let mut events: Vec<NewEvent> = (0..10)
        .map(|i| event(&format!("old-ok-{i}"), &["d1"]))
        .collect();
    events.extend([
        event("old-failed", &["d1", "d2"]),
        event("old-cancelled", &["d2"]),
        event("old-unrouted", &[]),
        event("old-retrying", &["d1", "d2"]),
        event("old-in-flight", &["d1"]),
        event("new-ok", &["d1"]),
    ]);
    store.insert_events(&events).await.unwrap();
    let now = Utc::now();
    let next_week = now + TimeDelta::days(7);
    attempt_all(&store, now, |event, destination| {
        match (event, destination) {
            ("old-failed", "d2") => Some(DeliveryOutcome::Failed),
            ("old-cancelled", _) => Some(DeliveryOutcome::Cancelled),
            ("old-retrying", "d2") => Some(DeliveryOutcome::RetryAt(next_week)),
            ("old-in-flight", _) => None,
            _ => Some(DeliveryOutcome::Success),
        }
    })
    .await;
    age_old_events(&db).await;

    // 16 old events, 3 per batch: six batches in the one cycle.
    let mut batches = Vec::new();
    let purged = store
        .purge_expired(now - TimeDelta::days(1), &no_pause(3), |b| batches.push(b))
        .await
        .unwrap();
    let expected = Purged {
        events: 13,     // 10 ok, failed, cancelled, unrouted
        deliveries: 13, // 10 + 2 + 1 + 0
        attempts: 13,   // one per delivery
    };
    assert_eq!(purged, expected);
    assert_eq!(batches.len(), 6, "{batches:?}");
    let summed = batches.iter().fold(Purged::default(), |a, b| Purged {
        events: a.events + b.events,
        deliveries: a.deliveries + b.deliveries,
        attempts: a.attempts + b.attempts,
    });
    assert_eq!(summed, expected);

    assert!(store.get_event("t1", "old-ok-0").await.unwrap().is_none());
    assert!(
        store
            .get_event("t1", "old-unrouted")
            .await
            .unwrap()
            .is_none()
    );
    for kept in ["old-retrying", "old-in-flight", "new-ok"] {
        assert!(
            store.get_event("t1", kept).await.unwrap().is_some(),
            "{kept}"
        );
    }
    let retrying = store.list_deliveries("t1", "old-retrying").await.unwrap();
    assert_eq!(retrying.len(), 2, "both deliveries of a kept event stay");
    assert_eq!(
        db.raw_count("SELECT count(*) FROM attempts WHERE event_id = 'old-retrying'")
            .await,
        2,
        "a kept event keeps its attempts"
    );
    let in_flight = store.list_deliveries("t1", "old-in-flight").await.unwrap();
    assert_eq!(in_flight[0].status, DeliveryStatus::Delivering);
    assert_eq!(db.raw_count("SELECT count(*) FROM events").await, 3);
    assert_eq!(db.raw_count("SELECT count(*) FROM deliveries").await, 4);
    assert_eq!(db.raw_count("SELECT count(*) FROM attempts").await, 3);
    assert_eq!(orphans(&db).await, (0, 0));

    // Nothing more to do.
    let again = store
        .purge_expired(now - TimeDelta::days(1), &no_pause(3), |_| {})
        .await
        .unwrap();
    assert_eq!(again, Purged::default());

    let rows = store.table_rows().await.unwrap();
    match db {
        // The rowid span: at least the rows there are.
        TestDb::Sqlite { .. } => {
            assert!(
                rows.events >= 3 && rows.deliveries >= 4 && rows.attempts >= 3,
                "{rows:?}"
            );
        }
        // The planner's statistics, exact for tables this small once analyzed.
        TestDb::Postgres { .. } => {
            db.raw_execute("ANALYZE events; ANALYZE deliveries; ANALYZE attempts")
                .await;
            let rows = store.table_rows().await.unwrap();
            assert_eq!(
                (rows.events, rows.deliveries, rows.attempts),
                (3, 4, 3),
                "{rows:?}"
            );
        }
    }
}

async fn purge_keeps_an_event_until_its_last_delivery_finishes(db: TestDb) {
    let store = db.store(Some(AES)).await;
    store.upsert_tenant("t1", None).await.unwrap();
    store.create_destination(&destination("d1")).await.unwrap();
    store
        .insert_events(&[event("old-slow", &["d1"]), event("old-queued", &["d1"])])
        .await
        .unwrap();
    let now = Utc::now();
    let soon = now + TimeDelta::minutes(5);
    // old-slow fails once and retries in five minutes; old-queued is never attempted.
    attempt_all(&store, now, |event, _| {
        (event == "old-slow").then_some(DeliveryOutcome::RetryAt(soon))
    })
    .await;
    // Put old-queued back in the queue (its claim would otherwise hold a lease).
    db.raw_execute(
        "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL \
         WHERE event_id = 'old-queued'",
    )
    .await;
    age_old_events(&db).await;
    let cutoff = now - TimeDelta::days(1);

    let purged = store
        .purge_expired(cutoff, &no_pause(500), |_| {})
        .await
        .unwrap();
    assert_eq!(
        purged,
        Purged::default(),
        "pending deliveries keep their events"
    );

    // The retry fails for good: now the event goes, with both its attempts.
    attempt_all(&store, soon + TimeDelta::seconds(1), |event, _| {
        (event == "old-slow").then_some(DeliveryOutcome::Failed)
    })
    .await;
    let purged = store
        .purge_expired(cutoff, &no_pause(500), |_| {})
        .await
        .unwrap();
    assert_eq!(
        purged,
        Purged {
            events: 1,
            deliveries: 1,
            attempts: 2
        }
    );
    assert!(store.get_event("t1", "old-queued").await.unwrap().is_some());
    assert_eq!(orphans(&db).await, (0, 0));
}

/// `/healthz` says when the last purge ran and what it deleted; `null` with retention off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_shows_the_last_purge() {
    let db = TestDb::sqlite().await;
    {
        let store = db.store(Some(AES)).await;
        let events = [
            event("old-1", &[]),
            event("old-2", &[]),
            event("old-3", &[]),
            event("new-1", &[]),
        ];
        store.insert_events(&events).await.unwrap();
        store.close().await;
    }
    age_old_events(&db).await;

    let svc = Service::start_with(db, |c| c.log_retention_ttl_days = 7).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let retention = loop {
        let (status, health) = svc.get("/healthz", &Auth::None).await;
        assert_eq!(status, StatusCode::OK, "{health}");
        let retention = health["workers"]["store"]["retention"].clone();
        assert_eq!(retention["ttl_days"], 7, "{health}");
        if !retention["last_purge"].is_null() {
            break retention;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no purge within 30 s: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let last = &retention["last_purge"];
    assert_eq!(
        last["deleted"],
        serde_json::json!({"events": 3, "deliveries": 0, "attempts": 0}),
        "{retention}"
    );
    assert!(last["duration_ms"].is_u64(), "{retention}");
    for key in ["started_at", "older_than"] {
        let at = last[key].as_str().unwrap_or_default();
        assert!(
            DateTime::parse_from_rfc3339(at).is_ok(),
            "{key}: {retention}"
        );
    }
    let store = svc.store().await;
    assert!(store.get_event("t1", "new-1").await.unwrap().is_some());
    assert!(store.get_event("t1", "old-1").await.unwrap().is_none());

    // The gauge is set just after the purge is recorded.
    let client = crate::support::http_client();
    let series = [
        "jetpost_retention_deleted_total{table=\"events\"}",
        "jetpost_store_rows{table=\"events\"}",
        "jetpost_store_rows{table=\"attempts\"}",
    ];
    loop {
        let metrics = client.get(svc.url("/metrics")).send().await.unwrap();
        let metrics = metrics.text().await.unwrap();
        let missing: Vec<_> = series.iter().filter(|s| !metrics.contains(*s)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing:?} missing from /metrics"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let off = Service::start().await;
    let (_, health) = off.get("/healthz", &Auth::None).await;
    assert_eq!(
        health["workers"]["store"]["retention"],
        Value::Null,
        "{health}"
    );
}

/// Seeds a SQLite store with `old` old events each with one successful delivery and attempt,
/// and 100 old events whose delivery waits for a retry in 2100 (with one failed attempt).
async fn seed_old_events(db: &TestDb) {
    db.store(Some(AES)).await.close().await;
    db.raw_execute(
        "INSERT INTO events (tenant_id, id, topic, time, data, eligible_for_retry, \
             destination_ids, created_at) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000) \
         SELECT 't1', 'old-' || i, 'order.paid', '2000-01-01T00:00:00.000000Z', '{}', 1, \
             '[\"d1\"]', '2000-01-01T00:00:00.000000Z' FROM n;
         INSERT INTO deliveries (tenant_id, event_id, destination_id, status, attempts, \
             created_at, updated_at) \
         SELECT tenant_id, id, 'd1', 'success', 1, created_at, created_at FROM events;
         INSERT INTO events (tenant_id, id, topic, time, data, eligible_for_retry, \
             destination_ids, created_at) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) \
         SELECT 't1', 'keep-' || i, 'order.paid', '2000-01-01T00:00:00.000000Z', '{}', 1, \
             '[\"d1\"]', '2000-01-01T00:00:00.000000Z' FROM n;
         INSERT INTO deliveries (tenant_id, event_id, destination_id, status, attempts, \
             next_attempt_at, created_at, updated_at) \
         SELECT tenant_id, id, 'd1', 'pending', 1, '2100-01-01T00:00:00.000000Z', created_at, \
             created_at FROM events WHERE id LIKE 'keep-%';
         INSERT INTO attempts (id, tenant_id, event_id, destination_id, delivery_id, \
             attempt_number, manual, status, code, time) \
         SELECT 'att-' || id, tenant_id, event_id, destination_id, id, 1, 0, \
             CASE status WHEN 'success' THEN 'success' ELSE 'failed' END, '200', created_at \
         FROM deliveries;",
    )
    .await;
}

/// What must hold whenever jetpost is down, however it stopped.
async fn assert_consistent(db: &TestDb) {
    assert_eq!(
        orphans(db).await,
        (0, 0),
        "deliveries or attempts lost their parent"
    );
    assert_eq!(
        db.raw_texts("PRAGMA integrity_check").await,
        vec![Some("ok".to_owned())]
    );
    assert_eq!(
        db.raw_count("SELECT count(*) FROM pragma_foreign_key_check")
            .await,
        0
    );
    assert_eq!(
        db.raw_count(
            "SELECT count(*) FROM deliveries d JOIN events e \
             ON e.tenant_id = d.tenant_id AND e.id = d.event_id \
             WHERE d.status = 'pending' AND e.id LIKE 'keep-%'"
        )
        .await,
        100,
        "pending deliveries and their events stay"
    );
    assert_eq!(
        db.raw_count("SELECT count(*) FROM attempts WHERE event_id LIKE 'keep-%'")
            .await,
        100
    );
}

/// SIGKILL in the middle of a purge: no orphans, pending deliveries intact, and the next start
/// purges the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_killed_midway_leaves_a_consistent_store_and_finishes_after_restart() {
    let db = TestDb::sqlite().await;
    seed_old_events(&db).await;
    let seeded = db.raw_count("SELECT count(*) FROM events").await;
    assert_eq!(seeded, 40_100);
    let env = [
        ("DATABASE_URL", db.url()),
        ("API_AUTH_DISABLED", "true"),
        ("LOG_RETENTION_TTL_DAYS", "30"),
    ];

    let mut serve = Serve::start(&env).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = db.raw_count("SELECT count(*) FROM events").await;
        if events < seeded {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the purge did not start within 20 s; logs:\n{}",
            serve.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    serve.kill().await;
    let left = db
        .raw_count("SELECT count(*) FROM events WHERE id LIKE 'old-%'")
        .await;
    assert!(
        left > 0,
        "the purge finished before the kill; the test needs more events"
    );
    assert_consistent(&db).await;
    assert_eq!(
        db.raw_count("SELECT count(*) FROM deliveries WHERE event_id LIKE 'old-%'")
            .await,
        left,
        "every remaining old event still has its delivery"
    );

    let mut serve = Serve::start(&env).await;
    let client = crate::support::http_client();
    // ~40,000 events at the purge's paced rate: about 20 s alone, longer beside the rest of
    // the suite on two cores.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let health: Value = client
            .get(serve.url("/healthz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let last = &health["workers"]["store"]["retention"]["last_purge"];
        if !last.is_null() {
            assert_eq!(last["deleted"]["events"], left, "{health}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no purge finished within 90 s after the restart: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve.terminate(Duration::from_secs(20)).await;
    assert_eq!(db.raw_count("SELECT count(*) FROM events").await, 100);
    assert_eq!(db.raw_count("SELECT count(*) FROM deliveries").await, 100);
    assert_consistent(&db).await;
    // A file jetpost created uses incremental auto-vacuum, and the purge gave the freed pages
    // back to the file system.
    assert_eq!(db.raw_count("PRAGMA auto_vacuum").await, 2);
    assert_eq!(db.raw_count("PRAGMA freelist_count").await, 0);
}
