//! The store's conformance suite: every case runs against SQLite (a fresh file) and Postgres
//! (a fresh schema), as `store::sqlite::<case>` and `store::postgres::<case>`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jetpost::delivery::alert::AlertPolicy;
use jetpost::store::{
    AttemptCompletion, AttemptFilter, AttemptStatus, BackendKind, ClaimRequest, ClaimedDelivery,
    Credentials, DeliveryOutcome, DeliveryStatus, DestinationFilter, ErrorKind, EventFilter,
    InsertOutcome, Lease, Metadata, NewAttempt, NewDestination, NewEvent, NewLease, PageRequest,
    RoutingChange, SortDir, Store, StoreError, StoreOptions, TenantFilter, TimeRange,
};
use sqlx::Connection as _;

use crate::support::db::TestDb;

const AES: &str = "test-aes-secret";

/// Defines each case twice: `sqlite::<case>` and `postgres::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(crate::support::db::TestDb::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(crate::support::db::TestDb::postgres().await).await;
                }
            )*
        }
    };
}

conformance!(
    migrations_are_idempotent,
    tenants_upsert_list_and_soft_delete,
    destinations_crud_disable_and_soft_delete,
    credentials_are_encrypted_at_rest,
    credentials_need_the_right_secret,
    unreadable_credentials_postpone_only_their_deliveries,
    duplicate_events_are_reported_and_write_nothing,
    handed_off_deliveries_are_inserted_leased,
    event_data_bytes_round_trip_exactly,
    concurrent_batches_store_each_event_once,
    concurrent_claims_never_overlap,
    claims_are_fair_across_destinations,
    expired_lease_is_reclaimed_and_lost_lease_refused,
    expired_leases_and_pending_deliveries_queue_together,
    attempts_retries_and_manual_retry,
    consecutive_failures_are_counted_per_destination,
    batch_completion_checks_each_lease,
    batch_completion_counts_failures_in_batch_order,
    failed_batch_completion_writes_nothing,
    disabled_or_deleted_destinations_get_no_deliveries,
    events_paginate_both_ways_with_filters,
    attempts_and_tenants_paginate,
    transient_errors_are_classified,
);

fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn webhook(tenant_id: &str, id: &str, secret: &str) -> NewDestination {
    NewDestination {
        tenant_id: tenant_id.into(),
        id: id.into(),
        kind: "webhook".into(),
        topics: vec!["order.paid".into(), "order.shipped".into()],
        filter: Some(serde_json::json!({"data": {"amount": {"$gte": 100}}})),
        config: BTreeMap::from([("url".into(), format!("https://example.test/{id}"))]),
        credentials: Credentials(BTreeMap::from([("secret".into(), secret.into())])),
        delivery_metadata: Some(meta(&[("app", "jetpost")])),
        metadata: None,
    }
}

fn event(tenant_id: &str, id: &str, destination_ids: &[&str]) -> NewEvent {
    NewEvent {
        tenant_id: tenant_id.into(),
        id: id.into(),
        destination_id: None,
        topic: "order.paid".into(),
        time: Utc::now(),
        metadata: Some(meta(&[("source", "test")])),
        data: format!(r#"{{"id":"{id}"}}"#),
        eligible_for_retry: true,
        destination_ids: destination_ids.iter().map(|d| d.to_string()).collect(),
        lease: None,
    }
}

/// An event stored without hand-off.
fn inserted() -> InsertOutcome {
    InsertOutcome::Inserted { leased: Vec::new() }
}

/// A store with tenant `t1` and webhook destinations with the given ids.
async fn with_destinations(db: &TestDb, ids: &[&str]) -> Store {
    let store = db.store(Some(AES)).await;
    store.upsert_tenant("t1", None).await.unwrap();
    for id in ids {
        store
            .create_destination(&webhook("t1", id, "whsec_x"))
            .await
            .unwrap();
    }
    store
}

fn claim(owner: &str, now: DateTime<Utc>, limit: u32) -> ClaimRequest<'_> {
    ClaimRequest {
        owner,
        now,
        limit,
        per_destination: 1000,
        lease: Duration::from_secs(60),
    }
}

fn attempt(id: &str, status: AttemptStatus, code: &str) -> NewAttempt {
    NewAttempt {
        id: id.into(),
        status,
        code: code.into(),
        response_data: Some(serde_json::json!({"status_code": 500, "body": "nope"})),
        time: Utc::now(),
    }
}

fn later(seconds: i64) -> DateTime<Utc> {
    Utc::now() + TimeDelta::seconds(seconds)
}

async fn migrations_are_idempotent(db: TestDb) {
    let store = Store::connect(db.url(), Some(AES)).await.unwrap();
    let pending = store.pending_migrations().await.unwrap();
    assert_eq!(
        pending.iter().map(|m| m.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let refused = store.check_migrated().await.unwrap_err();
    assert!(
        matches!(refused, StoreError::NotMigrated { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("jetpost migrate"), "{refused}");

    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    store.check_migrated().await.unwrap();

    // Another process (a second replica, `jetpost migrate`) finds nothing to do.
    let other = Store::connect(db.url(), Some(AES)).await.unwrap();
    other.migrate().await.unwrap();
    other.check_migrated().await.unwrap();
    other.ping().await.unwrap();
    assert_eq!(
        db.raw_count("SELECT count(*) FROM _sqlx_migrations").await,
        5
    );
    assert_eq!(store.backend(), db.kind());
}

async fn tenants_upsert_list_and_soft_delete(db: TestDb) {
    let store = db.store(Some(AES)).await;
    let first = store
        .upsert_tenant("acme", Some(&meta(&[("plan", "pro")])))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.tenant.metadata, Some(meta(&[("plan", "pro")])));

    let second = store.upsert_tenant("acme", None).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.tenant.metadata, None);
    assert_eq!(second.tenant.created_at, first.tenant.created_at);
    assert!(second.tenant.updated_at >= first.tenant.updated_at);
    assert_eq!(
        store.get_tenant("acme").await.unwrap(),
        Some(second.tenant.clone())
    );
    assert_eq!(store.get_tenant("nobody").await.unwrap(), None);

    store.upsert_tenant("globex", None).await.unwrap();
    assert_eq!(store.count_tenants().await.unwrap(), 2);
    store
        .create_destination(&webhook("acme", "d1", "whsec_1"))
        .await
        .unwrap();

    store.delete_tenant("acme").await.unwrap();
    assert_eq!(store.get_tenant("acme").await.unwrap(), None);
    assert_eq!(store.get_destination("acme", "d1").await.unwrap(), None);
    assert_eq!(store.count_tenants().await.unwrap(), 1);
    let again = store.delete_tenant("acme").await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::NotFound, "{again}");

    // Coming back is a new tenant without the old destinations.
    let revived = store.upsert_tenant("acme", None).await.unwrap();
    assert!(revived.created);
    assert!(
        store
            .list_destinations("acme", &DestinationFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let listed = store
        .list_tenants(&TenantFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    let ids: Vec<_> = listed.models.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, vec!["acme", "globex"]); // newest first

    // Racing upserts of one new tenant: all succeed, exactly one creates it.
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        racers.spawn(async move { store.upsert_tenant("initech", None).await.unwrap().created });
    }
    let created = racers.join_all().await.into_iter().filter(|c| *c).count();
    assert_eq!(created, 1);
}

async fn destinations_crud_disable_and_soft_delete(db: TestDb) {
    let store = db.store(Some(AES)).await;
    store.upsert_tenant("t1", None).await.unwrap();

    let unknown_tenant = store
        .create_destination(&webhook("nobody", "d1", "whsec_1"))
        .await
        .unwrap_err();
    assert_eq!(
        unknown_tenant.kind(),
        ErrorKind::NotFound,
        "{unknown_tenant}"
    );

    let input = webhook("t1", "d1", "whsec_1");
    let created = store.create_destination(&input).await.unwrap();
    assert_eq!(created.kind, "webhook");
    assert_eq!(created.topics, input.topics);
    assert_eq!(created.filter, input.filter);
    assert_eq!(created.config, input.config);
    assert_eq!(created.credentials, input.credentials);
    assert_eq!(created.delivery_metadata, input.delivery_metadata);
    assert_eq!(created.disabled_at, None);
    assert_eq!(
        store.get_destination("t1", "d1").await.unwrap(),
        Some(created.clone())
    );
    // Tenant-scoped: another tenant cannot see it.
    store.upsert_tenant("t2", None).await.unwrap();
    assert_eq!(store.get_destination("t2", "d1").await.unwrap(), None);

    let taken = store.create_destination(&input).await.unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::Conflict, "{taken}");

    let mut other = webhook("t1", "d2", "whsec_2");
    other.kind = "aws_sqs".into();
    other.topics = vec!["*".into()];
    store.create_destination(&other).await.unwrap();
    assert_eq!(store.count_destinations("t1").await.unwrap(), 2);

    let only = |kinds: &[&str], topics: &[&str]| DestinationFilter {
        kinds: kinds.iter().map(|s| s.to_string()).collect(),
        topics: topics.iter().map(|s| s.to_string()).collect(),
    };
    let ids =
        |ds: Vec<jetpost::store::Destination>| ds.into_iter().map(|d| d.id).collect::<Vec<_>>();
    let all = store
        .list_destinations("t1", &DestinationFilter::default())
        .await
        .unwrap();
    assert_eq!(ids(all), vec!["d1", "d2"]);
    let webhooks = store
        .list_destinations("t1", &only(&["webhook"], &[]))
        .await
        .unwrap();
    assert_eq!(ids(webhooks), vec!["d1"]);
    let by_topic = store
        .list_destinations("t1", &only(&[], &["user.created"]))
        .await
        .unwrap();
    assert_eq!(ids(by_topic), vec!["d2"]); // "*" matches every topic

    let mut changed = input.clone();
    changed.topics = vec!["order.refunded".into()];
    changed.filter = None;
    changed.metadata = Some(meta(&[("team", "billing")]));
    changed.credentials = Credentials(BTreeMap::from([
        ("secret".into(), "whsec_new".into()),
        ("previous_secret".into(), "whsec_1".into()),
    ]));
    let updated = store.update_destination(&changed).await.unwrap();
    assert_eq!(updated.topics, changed.topics);
    assert_eq!(updated.filter, None);
    assert_eq!(updated.metadata, changed.metadata);
    assert_eq!(updated.credentials, changed.credentials);
    assert_eq!(updated.created_at, created.created_at);
    assert_eq!(
        store.get_destination("t1", "d1").await.unwrap(),
        Some(updated.clone())
    );

    let disabled = store.disable_destination("t1", "d1").await.unwrap();
    assert!(disabled.disabled_at.is_some());
    let again = store.disable_destination("t1", "d1").await.unwrap();
    assert_eq!(again.disabled_at, disabled.disabled_at);
    let enabled_ids = ids(store.list_enabled_destinations("t1").await.unwrap());
    assert_eq!(enabled_ids, vec!["d2"]);
    assert_eq!(store.count_destinations("t1").await.unwrap(), 2);
    let enabled = store.enable_destination("t1", "d1").await.unwrap();
    assert_eq!(enabled.disabled_at, None);
    let enabled_ids = ids(store.list_enabled_destinations("t1").await.unwrap());
    assert_eq!(enabled_ids, vec!["d1", "d2"]);

    store.delete_destination("t1", "d1").await.unwrap();
    assert_eq!(store.get_destination("t1", "d1").await.unwrap(), None);
    assert_eq!(store.count_destinations("t1").await.unwrap(), 1);
    for e in [
        store.delete_destination("t1", "d1").await.unwrap_err(),
        store.update_destination(&changed).await.unwrap_err(),
        store.disable_destination("t1", "d1").await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }
    // The id of a deleted destination stays reserved.
    let reused = store.create_destination(&input).await.unwrap_err();
    assert_eq!(reused.kind(), ErrorKind::Conflict, "{reused}");
}

async fn credentials_are_encrypted_at_rest(db: TestDb) {
    let secret = "whsec_super_secret_value_42";
    let store = db.store(Some(AES)).await;
    store.upsert_tenant("t1", None).await.unwrap();
    store
        .create_destination(&webhook("t1", "d1", secret))
        .await
        .unwrap();

    let raw = db
        .raw_texts("SELECT credentials FROM destinations WHERE id = 'd1'")
        .await;
    let raw = raw[0].clone().expect("credentials column is set");
    assert!(
        !raw.contains(secret),
        "plaintext secret in the column: {raw}"
    );
    assert!(
        !raw.contains("secret"),
        "credential keys in the column: {raw}"
    );
    assert!(raw.starts_with("v1:"), "{raw}");

    let read = store.get_destination("t1", "d1").await.unwrap().unwrap();
    assert_eq!(read.credentials.0["secret"], secret);
    // Debug output hides the value.
    assert!(!format!("{read:?}").contains(secret));

    // Destinations without credentials need no secret and store NULL.
    let mut plain = webhook("t1", "d2", "");
    plain.credentials = Credentials::default();
    store.create_destination(&plain).await.unwrap();
    let raw = db
        .raw_texts("SELECT credentials FROM destinations WHERE id = 'd2'")
        .await;
    assert_eq!(raw, vec![None]);
}

/// A destination sealed under another key (a wrong `AES_ENCRYPTION_SECRET`) keeps its own
/// deliveries waiting under their lease; the other destinations' deliveries are claimed.
async fn unreadable_credentials_postpone_only_their_deliveries(db: TestDb) {
    let store = with_destinations(&db, &["good"]).await;
    let other_key = Store::connect(db.url(), Some("another-secret"))
        .await
        .unwrap();
    other_key
        .create_destination(&webhook("t1", "sealed", "whsec_2"))
        .await
        .unwrap();
    store
        .insert_events(&[event("t1", "e1", &["good", "sealed"])])
        .await
        .unwrap();

    let claimed = store.claim_due(&claim("w", later(1), 10)).await.unwrap();
    let to: Vec<&str> = claimed.iter().map(|c| c.destination.id.as_str()).collect();
    assert_eq!(to, vec!["good"]);
    // Left leased, not failed or cancelled: due again when the lease runs out.
    let deliveries = store.list_deliveries("t1", "e1").await.unwrap();
    let sealed = deliveries
        .iter()
        .find(|d| d.destination_id == "sealed")
        .unwrap();
    assert_eq!(sealed.status, DeliveryStatus::Delivering);
    assert_eq!(sealed.attempts, 0);
    assert!(
        store
            .claim_due(&claim("w", later(2), 10))
            .await
            .unwrap()
            .is_empty()
    );
    // The right key opens it once the lease has run out.
    let claimed = other_key
        .claim_due(&claim("w", later(120), 10))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].destination.id, "sealed");
    assert_eq!(claimed[0].destination.credentials.0["secret"], "whsec_2");
}

async fn credentials_need_the_right_secret(db: TestDb) {
    let store = db.store(Some(AES)).await;
    store.upsert_tenant("t1", None).await.unwrap();
    store
        .create_destination(&webhook("t1", "d1", "whsec_1"))
        .await
        .unwrap();

    let wrong = Store::connect(db.url(), Some("another-secret"))
        .await
        .unwrap();
    let e = wrong.get_destination("t1", "d1").await.unwrap_err();
    assert!(matches!(e, StoreError::Undecryptable { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert!(e.to_string().contains("AES_ENCRYPTION_SECRET"), "{e}");
    assert!(!e.to_string().contains("whsec_1"));

    let none = Store::connect(db.url(), None).await.unwrap();
    let e = none.get_destination("t1", "d1").await.unwrap_err();
    assert!(matches!(e, StoreError::SecretMissing), "{e}");
    assert!(e.to_string().contains("AES_ENCRYPTION_SECRET"), "{e}");
    let e = none
        .create_destination(&webhook("t1", "d2", "whsec_2"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::SecretMissing), "{e}");
    let mut plain = webhook("t1", "d3", "");
    plain.credentials = Credentials::default();
    none.create_destination(&plain).await.unwrap();
    assert!(none.get_destination("t1", "d3").await.unwrap().is_some());
}

async fn duplicate_events_are_reported_and_write_nothing(db: TestDb) {
    let store = with_destinations(&db, &["d1", "d2"]).await;
    let first = event("t1", "e1", &["d1", "d2"]);
    assert_eq!(
        store
            .insert_events(std::slice::from_ref(&first))
            .await
            .unwrap(),
        vec![inserted()]
    );
    let mut replay = first.clone();
    replay.data = r#"{"id":"changed"}"#.into();
    assert_eq!(
        store.insert_events(&[replay]).await.unwrap(),
        vec![InsertOutcome::Duplicate]
    );
    let stored = store.get_event("t1", "e1").await.unwrap().unwrap();
    assert_eq!(stored.data, first.data);
    assert_eq!(db.raw_count("SELECT count(*) FROM events").await, 1);
    assert_eq!(db.raw_count("SELECT count(*) FROM deliveries").await, 2);

    // Inside one batch: the first occurrence wins, a repeated destination id counts once.
    let batch = vec![
        event("t1", "e2", &["d1", "d1"]),
        event("t1", "e2", &["d2"]),
        event("t1", "e3", &["d2"]),
        event("t1", "e1", &["d1"]),
    ];
    assert_eq!(
        store.insert_events(&batch).await.unwrap(),
        vec![
            inserted(),
            InsertOutcome::Duplicate,
            inserted(),
            InsertOutcome::Duplicate,
        ]
    );
    assert_eq!(db.raw_count("SELECT count(*) FROM events").await, 3);
    assert_eq!(db.raw_count("SELECT count(*) FROM deliveries").await, 4);
    let e2 = store.list_deliveries("t1", "e2").await.unwrap();
    assert_eq!(e2.len(), 1);
    assert_eq!(e2[0].destination_id, "d1");
    assert_eq!(e2[0].status, DeliveryStatus::Pending);

    // Idempotency is per tenant: another tenant may use the same id.
    store.upsert_tenant("t2", None).await.unwrap();
    assert_eq!(
        store
            .insert_events(&[event("t2", "e1", &[])])
            .await
            .unwrap(),
        vec![inserted()]
    );
    assert!(store.insert_events(&[]).await.unwrap().is_empty());
}

async fn handed_off_deliveries_are_inserted_leased(db: TestDb) {
    let store = with_destinations(&db, &["d1", "d2", "d3"]).await;
    let t0 = later(1);
    // The store keeps microseconds.
    let expires =
        DateTime::from_timestamp_micros((t0 + TimeDelta::seconds(40)).timestamp_micros()).unwrap();
    let mut handed = event("t1", "e1", &["d1", "d2", "d3"]);
    handed.lease = Some(NewLease {
        owner: "w1".into(),
        expires_at: expires,
        destination_ids: vec!["d3".into(), "d1".into()],
    });
    let outcomes = store.insert_events(&[handed.clone()]).await.unwrap();
    let [InsertOutcome::Inserted { leased }] = outcomes.as_slice() else {
        panic!("not inserted: {outcomes:?}");
    };
    let deliveries = store.list_deliveries("t1", "e1").await.unwrap();
    let id_of = |d: &str| {
        deliveries
            .iter()
            .find(|x| x.destination_id == d)
            .unwrap()
            .id
    };
    assert_eq!(
        leased,
        &vec![id_of("d3"), id_of("d1")],
        "in the lease's order"
    );
    for d in &deliveries {
        if d.destination_id == "d2" {
            assert_eq!(d.status, DeliveryStatus::Pending);
            assert_eq!(d.lease_owner, None);
        } else {
            assert_eq!(d.status, DeliveryStatus::Delivering, "{}", d.destination_id);
            assert_eq!(d.lease_owner.as_deref(), Some("w1"));
            assert_eq!(d.lease_expires_at, Some(expires));
            assert_eq!(d.next_attempt_at, Some(expires));
        }
    }

    // Claims take only the pending one while the lease holds...
    let claimed = store.claim_due(&claim("w2", t0, 10)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.destination_id, "d2");
    // ...and the lease is a real one: the owner records under it, a stale copy is refused.
    let lease = Lease {
        delivery_id: id_of("d1"),
        owner: "w1".into(),
        expires_at: expires,
    };
    let ok = attempt("h1", AttemptStatus::Success, "200");
    assert!(
        store
            .complete_attempt(&lease, &ok, DeliveryOutcome::Success)
            .await
            .unwrap()
    );
    let stale = Lease {
        delivery_id: id_of("d3"),
        owner: "w2".into(),
        expires_at: expires,
    };
    assert!(
        !store
            .complete_attempt(&stale, &ok, DeliveryOutcome::Success)
            .await
            .unwrap()
    );
    // The handed-off delivery nobody recorded is claimed again once its lease runs out.
    let after = store
        .claim_due(&claim("w2", expires + TimeDelta::seconds(1), 10))
        .await
        .unwrap();
    let ids: Vec<&str> = after
        .iter()
        .map(|c| c.delivery.destination_id.as_str())
        .collect();
    assert_eq!(ids, vec!["d3"]);

    // A duplicate leases nothing.
    assert_eq!(
        store.insert_events(&[handed]).await.unwrap(),
        vec![InsertOutcome::Duplicate]
    );
}

async fn event_data_bytes_round_trip_exactly(db: TestDb) {
    let store = with_destinations(&db, &["d1"]).await;
    let datas = [
        r#"{"zebra":1,"alpha":2,"big":12345678901234567890,"s":"<&>\u003c"}"#,
        "{ \"spaced\" : [ 1.50 , 2e10 ],\n  \"unicode\": \"é€😀\", \"esc\": \"\\\"\\\\\\/\" }",
    ];
    let batch: Vec<NewEvent> = datas
        .iter()
        .enumerate()
        .map(|(i, data)| NewEvent {
            data: data.to_string(),
            ..event("t1", &format!("e{i}"), &["d1"])
        })
        .collect();
    store.insert_events(&batch).await.unwrap();
    for (i, data) in datas.iter().enumerate() {
        let stored = store
            .get_event("t1", &format!("e{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.data, *data);
        assert_eq!(stored.metadata, batch[i].metadata);
        assert_eq!(stored.destination_ids, vec!["d1"]);
        assert!(stored.eligible_for_retry);
        assert_eq!(
            stored.time.timestamp_micros(),
            batch[i].time.timestamp_micros()
        );
    }
    let claimed = store.claim_due(&claim("w", later(1), 10)).await.unwrap();
    let mut sent: Vec<&str> = claimed.iter().map(|c| c.event.data.as_str()).collect();
    sent.sort();
    let mut expected = datas.to_vec();
    expected.sort();
    assert_eq!(sent, expected);
    let listed = store
        .list_events(&EventFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    assert!(listed.models.iter().any(|e| e.data == datas[0]));
}

async fn concurrent_batches_store_each_event_once(db: TestDb) {
    let store = with_destinations(&db, &["d1", "d2"]).await;
    const TASKS: usize = 12;
    const BATCHES: usize = 8;
    const PER_BATCH: usize = 25;
    // Ids overlap across tasks, so the same event races in from several of them.
    const DISTINCT: usize = TASKS * BATCHES * PER_BATCH / 3;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let mut inserted = 0;
            for batch in 0..BATCHES {
                let events: Vec<NewEvent> = (0..PER_BATCH)
                    .map(|i| {
                        let n = (task * BATCHES * PER_BATCH + batch * PER_BATCH + i) % DISTINCT;
                        event("t1", &format!("e{n}"), &["d1", "d2"])
                    })
                    .collect();
                let outcomes = store.insert_events(&events).await.unwrap();
                inserted += outcomes
                    .iter()
                    .filter(|o| matches!(o, InsertOutcome::Inserted { .. }))
                    .count();
            }
            inserted
        });
    }
    let inserted: usize = tasks.join_all().await.into_iter().sum();
    assert_eq!(inserted, DISTINCT);
    assert_eq!(
        db.raw_count("SELECT count(*) FROM events").await,
        DISTINCT as i64
    );
    assert_eq!(
        db.raw_count("SELECT count(DISTINCT id) FROM events").await,
        DISTINCT as i64
    );
    assert_eq!(
        db.raw_count("SELECT count(*) FROM deliveries").await,
        2 * DISTINCT as i64
    );
    assert_eq!(
        store
            .count_deliveries(DeliveryStatus::Pending)
            .await
            .unwrap(),
        2 * DISTINCT as u64
    );
}

async fn concurrent_claims_never_overlap(db: TestDb) {
    let store = with_destinations(&db, &["d1", "d2", "d3"]).await;
    let events: Vec<NewEvent> = (0..60)
        .map(|i| event("t1", &format!("e{i}"), &["d1", "d2", "d3"]))
        .collect();
    store.insert_events(&events).await.unwrap();
    assert!(store.next_due_at().await.unwrap().unwrap() <= Utc::now());

    let now = later(1);
    let mut workers = tokio::task::JoinSet::new();
    for worker in ["w1", "w2", "w3"] {
        let store = store.clone();
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim_due(&claim(worker, now, 7)).await.unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                for c in &claimed {
                    assert_eq!(c.delivery.status, DeliveryStatus::Delivering);
                    assert_eq!(c.delivery.lease_owner.as_deref(), Some(worker));
                    assert_eq!(c.lease.owner, worker);
                    assert_eq!(c.destination.credentials.0["secret"], "whsec_x");
                    assert_eq!(c.event.id, c.delivery.event_id);
                }
                mine.extend(claimed.into_iter().map(|c| c.delivery.id));
            }
        });
    }
    let per_worker = workers.join_all().await;
    let mut seen = HashSet::new();
    for ids in &per_worker {
        for id in ids {
            assert!(seen.insert(*id), "delivery {id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 180);
    assert_eq!(
        store
            .count_deliveries(DeliveryStatus::Delivering)
            .await
            .unwrap(),
        180
    );
    assert_eq!(
        store
            .count_deliveries(DeliveryStatus::Pending)
            .await
            .unwrap(),
        0
    );
    // Leases run out in a minute: that is when something is next due.
    let due = store.next_due_at().await.unwrap().unwrap();
    assert!(due > Utc::now() + TimeDelta::seconds(30), "{due}");
}

async fn claims_are_fair_across_destinations(db: TestDb) {
    let store = with_destinations(&db, &["busy", "quiet"]).await;
    let backlog: Vec<NewEvent> = (0..50)
        .map(|i| event("t1", &format!("b{i}"), &["busy"]))
        .collect();
    store.insert_events(&backlog).await.unwrap();
    // A fresh event for another destination, behind the whole backlog in time.
    store
        .insert_events(&[event("t1", "fresh", &["quiet"])])
        .await
        .unwrap();

    let req = |owner, limit| ClaimRequest {
        owner,
        now: later(1),
        limit,
        per_destination: 3,
        lease: Duration::from_secs(60),
    };
    let count = |claimed: &[ClaimedDelivery], d: &str| {
        claimed.iter().filter(|c| c.destination.id == d).count()
    };
    // Round-robin: even a claim of two serves both destinations, oldest first within each.
    let first = store.claim_due(&req("w1", 2)).await.unwrap();
    let ids: Vec<_> = first.iter().map(|c| c.event.id.as_str()).collect();
    assert_eq!(ids, ["b0", "fresh"], "the fresh event was starved");
    // Busy may have 3 in flight: 2 more now, then none until one finishes.
    let second = store.claim_due(&req("w2", 10)).await.unwrap();
    let ids: Vec<_> = second.iter().map(|c| c.event.id.as_str()).collect();
    assert_eq!(ids, ["b1", "b10"]);
    let third = store.claim_due(&req("w2", 10)).await.unwrap();
    assert!(third.is_empty(), "{} more claimed", third.len());

    let ok = attempt("a1", AttemptStatus::Success, "200");
    assert!(
        store
            .complete_attempt(&first[0].lease, &ok, DeliveryOutcome::Success)
            .await
            .unwrap()
    );
    let fourth = store.claim_due(&req("w2", 10)).await.unwrap();
    assert_eq!(count(&fourth, "busy"), 1);
    assert_eq!(fourth.len(), 1);
}

/// A destination's queue holds pending deliveries and expired leases side by side: a claim
/// takes the oldest due of both, and counts only live leases against the destination's cap.
async fn expired_leases_and_pending_deliveries_queue_together(db: TestDb) {
    let store = with_destinations(&db, &["d1"]).await;
    store
        .insert_events(&[event("t1", "e1", &["d1"])])
        .await
        .unwrap();
    let t0 = later(1);
    let req = |now, per_destination| ClaimRequest {
        owner: "w1",
        now,
        limit: 10,
        per_destination,
        lease: Duration::from_secs(30),
    };
    let first = store.claim_due(&req(t0, 1)).await.unwrap();
    assert_eq!(first.len(), 1);
    // e2 is due from its insertion, before e1's lease (t0 + 30 s) runs out.
    store
        .insert_events(&[event("t1", "e2", &["d1"])])
        .await
        .unwrap();
    let after = t0 + TimeDelta::seconds(31);

    // One in flight at most: the older of the two due deliveries, the pending one.
    let second = store.claim_due(&req(after, 1)).await.unwrap();
    let ids: Vec<_> = second.iter().map(|c| c.event.id.as_str()).collect();
    assert_eq!(ids, ["e2"]);
    // Two at most: e2's live lease counts, e1's expired one does not, so e1 is taken again.
    let third = store.claim_due(&req(after, 2)).await.unwrap();
    let ids: Vec<_> = third.iter().map(|c| c.event.id.as_str()).collect();
    assert_eq!(ids, ["e1"]);
    assert_eq!(third[0].delivery.id, first[0].delivery.id);
    assert!(store.claim_due(&req(after, 2)).await.unwrap().is_empty());
}

async fn expired_lease_is_reclaimed_and_lost_lease_refused(db: TestDb) {
    let store = with_destinations(&db, &["d1"]).await;
    store
        .insert_events(&[event("t1", "e1", &["d1"])])
        .await
        .unwrap();
    let t0 = later(1);
    let lease = Duration::from_secs(30);
    let req = |owner, now| ClaimRequest {
        owner,
        now,
        limit: 10,
        per_destination: 10,
        lease,
    };

    let first = store.claim_due(&req("w1", t0)).await.unwrap();
    assert_eq!(first.len(), 1);
    let first = &first[0];
    assert!(
        store
            .claim_due(&req("w2", t0 + TimeDelta::seconds(10)))
            .await
            .unwrap()
            .is_empty()
    );

    // w1 went silent; after the lease w2 takes over.
    let second = store
        .claim_due(&req("w2", t0 + TimeDelta::seconds(31)))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    let second = &second[0];
    assert_eq!(second.delivery.id, first.delivery.id);
    assert_eq!(second.lease.owner, "w2");

    let late = attempt("late", AttemptStatus::Success, "200");
    assert!(
        !store
            .complete_attempt(&first.lease, &late, DeliveryOutcome::Success)
            .await
            .unwrap(),
        "a lost lease must not complete"
    );
    assert_eq!(db.raw_count("SELECT count(*) FROM attempts").await, 0);
    // Even the same owner cannot complete an older claim of its own.
    let mut stale = second.lease.clone();
    stale.expires_at -= TimeDelta::seconds(1);
    assert!(
        !store
            .complete_attempt(&stale, &late, DeliveryOutcome::Success)
            .await
            .unwrap()
    );

    let ok = attempt("a1", AttemptStatus::Success, "200");
    assert!(
        store
            .complete_attempt(&second.lease, &ok, DeliveryOutcome::Success)
            .await
            .unwrap()
    );
    let d = &store.list_deliveries("t1", "e1").await.unwrap()[0];
    assert_eq!(d.status, DeliveryStatus::Success);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.lease_owner, None);
    assert_eq!(d.next_attempt_at, None);
    // Completing twice is refused too.
    assert!(
        !store
            .complete_attempt(&second.lease, &late, DeliveryOutcome::Success)
            .await
            .unwrap()
    );
}

async fn attempts_retries_and_manual_retry(db: TestDb) {
    let store = with_destinations(&db, &["d1"]).await;
    store
        .insert_events(&[event("t1", "e1", &["d1"])])
        .await
        .unwrap();

    let c = store.claim_due(&claim("w", later(1), 10)).await.unwrap();
    let retry_at = later(120);
    assert!(
        store
            .complete_attempt(
                &c[0].lease,
                &attempt("a1", AttemptStatus::Failed, "500"),
                DeliveryOutcome::RetryAt(retry_at),
            )
            .await
            .unwrap()
    );
    let d = &store.list_deliveries("t1", "e1").await.unwrap()[0];
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(
        d.next_attempt_at.map(|t| t.timestamp_micros()),
        Some(retry_at.timestamp_micros())
    );
    assert!(
        store
            .claim_due(&claim("w", later(60), 10))
            .await
            .unwrap()
            .is_empty()
    );

    let c = store
        .claim_due(&claim("w", retry_at + TimeDelta::seconds(1), 10))
        .await
        .unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].delivery.attempts, 1);
    assert!(
        store
            .complete_attempt(
                &c[0].lease,
                &attempt("a2", AttemptStatus::Failed, "timeout"),
                DeliveryOutcome::Failed,
            )
            .await
            .unwrap()
    );
    let d = &store.list_deliveries("t1", "e1").await.unwrap()[0];
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Failed, 2));

    // A manual retry reopens it, due now.
    let reopened = store.schedule_manual_retry("t1", "e1", "d1").await.unwrap();
    assert_eq!(reopened.status, DeliveryStatus::Pending);
    assert!(reopened.manual);
    let c = store.claim_due(&claim("w", later(1), 10)).await.unwrap();
    assert_eq!(c.len(), 1);
    assert!(c[0].delivery.manual);
    // While an attempt holds the lease, another manual retry is refused.
    let busy = store
        .schedule_manual_retry("t1", "e1", "d1")
        .await
        .unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Conflict, "{busy}");
    assert!(
        store
            .complete_attempt(
                &c[0].lease,
                &attempt("a3", AttemptStatus::Success, "200"),
                DeliveryOutcome::Success,
            )
            .await
            .unwrap()
    );

    let log = store
        .list_attempts(
            &AttemptFilter {
                tenant_ids: vec!["t1".into()],
                event_ids: vec!["e1".into()],
                ..AttemptFilter::default()
            },
            &PageRequest {
                dir: SortDir::Asc,
                ..PageRequest::default()
            },
        )
        .await
        .unwrap();
    let summary: Vec<_> = log
        .models
        .iter()
        .map(|a| {
            (
                a.id.as_str(),
                a.attempt_number,
                a.manual,
                a.status,
                a.code.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("a1", 1, false, AttemptStatus::Failed, "500"),
            ("a2", 2, false, AttemptStatus::Failed, "timeout"),
            ("a3", 3, true, AttemptStatus::Success, "200"),
        ]
    );
    let a1 = store.get_attempt(Some("t1"), "a1").await.unwrap().unwrap();
    assert_eq!(a1, log.models[0]);
    assert_eq!(
        a1.response_data,
        Some(serde_json::json!({"status_code": 500, "body": "nope"}))
    );
    assert_eq!(a1.delivery_id, reopened.id);
    assert_eq!(store.get_attempt(None, "a1").await.unwrap(), Some(a1));
    assert_eq!(store.get_attempt(Some("t2"), "a1").await.unwrap(), None);
    // Attempt ids are unique.
    let c = {
        store.schedule_manual_retry("t1", "e1", "d1").await.unwrap();
        store.claim_due(&claim("w", later(1), 10)).await.unwrap()
    };
    let dup = store
        .complete_attempt(
            &c[0].lease,
            &attempt("a1", AttemptStatus::Success, "200"),
            DeliveryOutcome::Success,
        )
        .await
        .unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::Conflict, "{dup}");

    // Manual retry of something that is not there, or to a disabled destination.
    for (event_id, destination_id) in [("nope", "d1"), ("e1", "nope")] {
        let e = store
            .schedule_manual_retry("t1", event_id, destination_id)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }
    store.disable_destination("t1", "d1").await.unwrap();
    let e = store
        .schedule_manual_retry("t1", "e1", "d1")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
}

async fn consecutive_failures_are_counted_per_destination(db: TestDb) {
    let store = with_destinations(&db, &["d1", "d2"]).await;
    store
        .insert_events(&[
            event("t1", "e1", &["d1"]),
            event("t1", "e2", &["d1"]),
            event("t1", "e3", &["d1"]),
            event("t1", "e4", &["d1"]),
            event("t1", "e5", &["d2"]),
        ])
        .await
        .unwrap();
    let claimed = store.claim_due(&claim("w", later(1), 10)).await.unwrap();
    assert_eq!(claimed.len(), 5);
    let lease_of = |event_id: &str| {
        claimed
            .iter()
            .find(|c| c.event.id == event_id)
            .unwrap()
            .lease
            .clone()
    };
    let failed = |id: &str| attempt(id, AttemptStatus::Failed, "500");
    let record = |event_id: &'static str, attempt: NewAttempt| {
        let store = store.clone();
        let lease = lease_of(event_id);
        async move {
            store
                .record_attempt(&lease, &attempt, DeliveryOutcome::Failed)
                .await
                .unwrap()
                .expect("lease held")
        }
    };

    let first = record("e1", failed("a1")).await;
    assert_eq!((first.attempt_number, first.consecutive_failures), (1, 1));
    assert_eq!(record("e2", failed("a2")).await.consecutive_failures, 2);
    // Another destination counts on its own.
    assert_eq!(record("e5", failed("a5")).await.consecutive_failures, 1);
    // A success resets the count; the next failure starts again from one.
    let ok = attempt("a3", AttemptStatus::Success, "200");
    assert_eq!(record("e3", ok).await.consecutive_failures, 0);
    assert_eq!(record("e4", failed("a4")).await.consecutive_failures, 1);

    // A lost lease writes nothing and counts nothing.
    assert_eq!(
        store
            .record_attempt(&lease_of("e4"), &failed("a4b"), DeliveryOutcome::Failed)
            .await
            .unwrap(),
        None
    );

    // Enabling a destination starts its count over.
    store.disable_destination("t1", "d1").await.unwrap();
    store.enable_destination("t1", "d1").await.unwrap();
    store.schedule_manual_retry("t1", "e1", "d1").await.unwrap();
    let again = store.claim_due(&claim("w", later(2), 10)).await.unwrap();
    assert_eq!(again.len(), 1);
    let recorded = store
        .record_attempt(&again[0].lease, &failed("a6"), DeliveryOutcome::Failed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (recorded.attempt_number, recorded.consecutive_failures),
        (2, 1)
    );
}

fn completion(
    c: &ClaimedDelivery,
    attempt: NewAttempt,
    outcome: DeliveryOutcome,
) -> AttemptCompletion {
    AttemptCompletion {
        lease: c.lease.clone(),
        attempt,
        outcome,
    }
}

async fn batch_completion_checks_each_lease(db: TestDb) {
    let store = with_destinations(&db, &["d1", "d2"]).await;
    let mut events: Vec<NewEvent> = (1..=5)
        .map(|i| event("t1", &format!("e{i}"), &["d1"]))
        .collect();
    events.push(event("t1", "e6", &["d2"]));
    store.insert_events(&events).await.unwrap();
    let claimed = store.claim_due(&claim("w1", later(1), 10)).await.unwrap();
    assert_eq!(claimed.len(), 6);
    let of = |event_id: &str| claimed.iter().find(|c| c.event.id == event_id).unwrap();
    let ok = |id: &str| attempt(id, AttemptStatus::Success, "200");
    let failed = |id: &str| attempt(id, AttemptStatus::Failed, "500");

    // e4 was completed on its own already (a failure: d1 has one in a row).
    let alone = store
        .record_attempt(&of("e4").lease, &failed("a4"), DeliveryOutcome::Failed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alone.consecutive_failures, 1);

    let retry_at = later(120);
    let mut stale = completion(of("e3"), failed("a3"), DeliveryOutcome::Failed);
    stale.lease.owner = "w9".into();
    let batch = vec![
        completion(of("e1"), ok("a1"), DeliveryOutcome::Success),
        completion(of("e2"), failed("a2"), DeliveryOutcome::RetryAt(retry_at)),
        // A lease that does not hold, in the middle of the batch.
        stale,
        // Completed before: refused like a second `record_attempt`.
        completion(of("e4"), failed("a4b"), DeliveryOutcome::Failed),
        completion(of("e5"), failed("a5"), DeliveryOutcome::Failed),
        completion(of("e6"), ok("a6"), DeliveryOutcome::Success),
        // The same delivery twice in one batch: only the first completes it.
        completion(of("e1"), ok("a1b"), DeliveryOutcome::Success),
    ];
    let recorded = store.record_attempts(&batch).await.unwrap();
    let summary: Vec<Option<(u32, u32)>> = recorded
        .iter()
        .map(|r| r.map(|r| (r.attempt_number, r.consecutive_failures)))
        .collect();
    // d1: e1 resets the count, e2 and e5 fail in a row; d2 counts on its own.
    assert_eq!(
        summary,
        vec![
            Some((1, 0)),
            Some((1, 1)),
            None,
            None,
            Some((1, 2)),
            Some((1, 0)),
            None
        ]
    );

    let status = |ds: Vec<jetpost::store::Delivery>| (ds[0].status, ds[0].attempts);
    let deliveries = |e: &'static str| {
        let store = store.clone();
        async move { store.list_deliveries("t1", e).await.unwrap() }
    };
    assert_eq!(status(deliveries("e1").await), (DeliveryStatus::Success, 1));
    let e2 = deliveries("e2").await;
    assert_eq!((e2[0].status, e2[0].attempts), (DeliveryStatus::Pending, 1));
    assert_eq!(
        e2[0].next_attempt_at.map(|t| t.timestamp_micros()),
        Some(retry_at.timestamp_micros())
    );
    assert_eq!(e2[0].lease_owner, None);
    // The stale lease wrote nothing: e3 is still held by w1.
    let e3 = deliveries("e3").await;
    assert_eq!(
        (e3[0].status, e3[0].attempts),
        (DeliveryStatus::Delivering, 0)
    );
    assert_eq!(e3[0].lease_owner.as_deref(), Some("w1"));
    assert_eq!(status(deliveries("e4").await), (DeliveryStatus::Failed, 1));
    assert_eq!(status(deliveries("e5").await), (DeliveryStatus::Failed, 1));
    assert_eq!(status(deliveries("e6").await), (DeliveryStatus::Success, 1));
    assert_eq!(db.raw_count("SELECT count(*) FROM attempts").await, 5);
    assert_eq!(
        db.raw_count("SELECT count(*) FROM attempts WHERE id IN ('a3', 'a4b', 'a1b')")
            .await,
        0
    );
    // The attempts carry their delivery's facts.
    let a2 = store.get_attempt(Some("t1"), "a2").await.unwrap().unwrap();
    assert_eq!(
        (
            a2.event_id.as_str(),
            a2.destination_id.as_str(),
            a2.attempt_number,
            a2.status
        ),
        ("e2", "d1", 1, AttemptStatus::Failed)
    );
    assert_eq!(a2.delivery_id, of("e2").delivery.id);
    assert_eq!(
        a2.response_data,
        Some(serde_json::json!({"status_code": 500, "body": "nope"}))
    );

    // The real holder of e3 still completes it, and d1's count went on from the batch's.
    let e3 = store
        .record_attempt(&of("e3").lease, &failed("a3"), DeliveryOutcome::Failed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((e3.attempt_number, e3.consecutive_failures), (1, 3));
}

async fn batch_completion_counts_failures_in_batch_order(db: TestDb) {
    let store = with_destinations(&db, &["d1", "d2"]).await;
    let mut events: Vec<NewEvent> = (1..=6)
        .map(|i| event("t1", &format!("e{i}"), &["d1"]))
        .collect();
    events.push(event("t1", "f1", &["d2"]));
    store.insert_events(&events).await.unwrap();
    let claimed = store.claim_due(&claim("w", later(1), 10)).await.unwrap();
    let of = |event_id: &str| claimed.iter().find(|c| c.event.id == event_id).unwrap();
    let failed = |id: &str| attempt(id, AttemptStatus::Failed, "500");
    let batch: Vec<AttemptCompletion> = [
        ("e1", failed("a1")),
        ("e2", failed("a2")),
        ("f1", failed("b1")),
        ("e3", attempt("a3", AttemptStatus::Success, "200")),
        ("e4", failed("a4")),
        ("e5", failed("a5")),
        ("e6", failed("a6")),
    ]
    .into_iter()
    .map(|(e, a)| completion(of(e), a, DeliveryOutcome::Failed))
    .collect();
    let counts: Vec<u32> = store
        .record_attempts(&batch)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.expect("lease held").consecutive_failures)
        .collect();
    assert_eq!(counts, [1, 2, 1, 0, 1, 2, 3]);
    // Every count went to exactly one attempt, so each alert level fires once (of 4: 50 %
    // at 2 failures, 70 % at 3).
    let policy = AlertPolicy {
        consecutive_failure_count: 4,
        auto_disable_destination: false,
    };
    let levels: Vec<Option<u8>> = counts.iter().map(|&n| policy.level(n)).collect();
    assert_eq!(
        levels,
        [None, Some(50), None, None, None, Some(50), Some(70)]
    );
    assert_eq!(
        db.raw_count("SELECT consecutive_failures FROM destinations WHERE id = 'd1'")
            .await,
        3
    );
    assert_eq!(
        db.raw_count("SELECT consecutive_failures FROM destinations WHERE id = 'd2'")
            .await,
        1
    );

    // Two more failures of d1 in one batch count +2: 4 is the 100 % level, 5 none.
    for e in ["e1", "e2"] {
        store.schedule_manual_retry("t1", e, "d1").await.unwrap();
    }
    let again = store.claim_due(&claim("w", later(2), 10)).await.unwrap();
    assert_eq!(again.len(), 2);
    let batch: Vec<AttemptCompletion> = again
        .iter()
        .enumerate()
        .map(|(i, c)| completion(c, failed(&format!("r{i}")), DeliveryOutcome::Failed))
        .collect();
    let recorded = store.record_attempts(&batch).await.unwrap();
    let counts: Vec<(u32, u32)> = recorded
        .iter()
        .map(|r| {
            let r = r.expect("lease held");
            (r.attempt_number, r.consecutive_failures)
        })
        .collect();
    assert_eq!(counts, [(2, 4), (2, 5)]);
    assert_eq!(policy.level(4), Some(100));
    assert_eq!(policy.level(5), None);
    assert_eq!(
        db.raw_count("SELECT consecutive_failures FROM destinations WHERE id = 'd1'")
            .await,
        5
    );
}

async fn failed_batch_completion_writes_nothing(db: TestDb) {
    let store = with_destinations(&db, &["d1"]).await;
    store
        .insert_events(&[event("t1", "e1", &["d1"]), event("t1", "e2", &["d1"])])
        .await
        .unwrap();
    let claimed = store.claim_due(&claim("w", later(1), 10)).await.unwrap();
    let failed = |id: &str| attempt(id, AttemptStatus::Failed, "500");
    // The second item reuses an attempt id that is taken: the whole batch fails...
    let batch = vec![
        completion(&claimed[0], failed("x1"), DeliveryOutcome::Failed),
        completion(&claimed[1], failed("x1"), DeliveryOutcome::Failed),
    ];
    let err = store.record_attempts(&batch).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    // ...and writes nothing, so each item can be recorded again (alone, or in a new batch).
    assert_eq!(db.raw_count("SELECT count(*) FROM attempts").await, 0);
    assert_eq!(
        db.raw_count("SELECT consecutive_failures FROM destinations WHERE id = 'd1'")
            .await,
        0
    );
    assert_eq!(
        db.raw_count("SELECT count(*) FROM deliveries WHERE status = 'delivering'")
            .await,
        2
    );
    let first = store
        .record_attempt(&claimed[0].lease, &failed("x1"), DeliveryOutcome::Failed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.consecutive_failures, 1);
    let second = store
        .record_attempt(&claimed[1].lease, &failed("x1"), DeliveryOutcome::Failed)
        .await
        .unwrap_err();
    assert_eq!(second.kind(), ErrorKind::Conflict, "{second}");
    assert_eq!(
        store.record_attempts(&[]).await.unwrap(),
        Vec::<Option<_>>::new()
    );
}

async fn disabled_or_deleted_destinations_get_no_deliveries(db: TestDb) {
    let store = with_destinations(&db, &["d1", "d2", "d3"]).await;
    store
        .insert_events(&[event("t1", "e1", &["d1", "d2", "d3"])])
        .await
        .unwrap();
    // d3 is being attempted when it gets disabled; d1 and d2 are still pending.
    let in_flight = store
        .claim_due(&ClaimRequest {
            owner: "w",
            now: later(1),
            limit: 10,
            per_destination: 10,
            lease: Duration::from_secs(60),
        })
        .await
        .unwrap();
    let d3 = in_flight
        .into_iter()
        .find(|c| c.destination.id == "d3")
        .unwrap();
    // A second event's deliveries are pending when the destinations change.
    store
        .insert_events(&[event("t1", "e2", &["d1", "d2", "d3"])])
        .await
        .unwrap();
    store.disable_destination("t1", "d1").await.unwrap();
    store.delete_destination("t1", "d2").await.unwrap();
    store.disable_destination("t1", "d3").await.unwrap();

    let status = |ds: &[jetpost::store::Delivery], d: &str| {
        ds.iter().find(|x| x.destination_id == d).unwrap().status
    };
    let e2 = store.list_deliveries("t1", "e2").await.unwrap();
    assert_eq!(status(&e2, "d1"), DeliveryStatus::Cancelled);
    assert_eq!(status(&e2, "d2"), DeliveryStatus::Cancelled);
    assert_eq!(status(&e2, "d3"), DeliveryStatus::Cancelled);
    // The attempt in flight finishes, but its retry is cancelled.
    assert!(
        store
            .complete_attempt(
                &d3.lease,
                &attempt("a1", AttemptStatus::Failed, "503"),
                DeliveryOutcome::RetryAt(later(10)),
            )
            .await
            .unwrap()
    );
    let e1 = store.list_deliveries("t1", "e1").await.unwrap();
    assert_eq!(status(&e1, "d3"), DeliveryStatus::Cancelled);
    assert!(
        store
            .claim_due(&claim("w", later(3600), 100))
            .await
            .unwrap()
            .is_empty()
    );

    // A delivery that slipped in for a disabled destination (stale routing) is cancelled
    // by the claim rather than sent.
    store
        .insert_events(&[event("t1", "e3", &["d1"])])
        .await
        .unwrap();
    assert!(
        store
            .claim_due(&claim("w", later(1), 10))
            .await
            .unwrap()
            .is_empty()
    );
    let e3 = store.list_deliveries("t1", "e3").await.unwrap();
    assert_eq!(status(&e3, "d1"), DeliveryStatus::Cancelled);
}

async fn events_paginate_both_ways_with_filters(db: TestDb) {
    let store = with_destinations(&db, &["d1", "d2"]).await;
    store.upsert_tenant("t2", None).await.unwrap();
    let base = DateTime::parse_from_rfc3339("2024-05-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    // e0..e6, one second apart, except e3 and e4 share a time (ties break by insertion).
    let mut batch = Vec::new();
    for i in 0..7i64 {
        let second = if i >= 4 { i - 1 } else { i };
        let mut e = event(
            "t1",
            &format!("e{i}"),
            if i % 2 == 0 { &["d1"] } else { &["d2"] },
        );
        e.time = base + TimeDelta::seconds(second);
        e.topic = if i < 5 { "order.paid" } else { "order.shipped" }.into();
        batch.push(e);
    }
    let mut other = event("t2", "x0", &[]);
    other.time = base;
    batch.push(other);
    store.insert_events(&batch).await.unwrap();

    let t1_only = EventFilter {
        tenant_ids: vec!["t1".into()],
        ..EventFilter::default()
    };
    let ids = |p: &jetpost::store::Page<jetpost::store::Event>| {
        p.models.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    };
    let page = |dir, next: Option<String>, prev: Option<String>| PageRequest {
        dir,
        limit: 3,
        next,
        prev,
        budget: None,
    };

    // Newest first, forward to the end...
    let p1 = store
        .list_events(&t1_only, &page(SortDir::Desc, None, None))
        .await
        .unwrap();
    assert_eq!(ids(&p1), ["e6", "e5", "e4"]);
    assert_eq!(p1.prev, None);
    let p2 = store
        .list_events(&t1_only, &page(SortDir::Desc, p1.next.clone(), None))
        .await
        .unwrap();
    assert_eq!(ids(&p2), ["e3", "e2", "e1"]);
    let p3 = store
        .list_events(&t1_only, &page(SortDir::Desc, p2.next.clone(), None))
        .await
        .unwrap();
    assert_eq!(ids(&p3), ["e0"]);
    assert_eq!(p3.next, None);
    // ...and back.
    let back2 = store
        .list_events(&t1_only, &page(SortDir::Desc, None, p3.prev.clone()))
        .await
        .unwrap();
    assert_eq!(ids(&back2), ids(&p2));
    let back1 = store
        .list_events(&t1_only, &page(SortDir::Desc, None, back2.prev.clone()))
        .await
        .unwrap();
    assert_eq!(ids(&back1), ids(&p1));
    assert_eq!(back1.prev, None);
    assert!(back1.next.is_some());

    // Oldest first.
    let a1 = store
        .list_events(&t1_only, &page(SortDir::Asc, None, None))
        .await
        .unwrap();
    assert_eq!(ids(&a1), ["e0", "e1", "e2"]);
    let a2 = store
        .list_events(&t1_only, &page(SortDir::Asc, a1.next.clone(), None))
        .await
        .unwrap();
    assert_eq!(ids(&a2), ["e3", "e4", "e5"]);
    let a1_again = store
        .list_events(&t1_only, &page(SortDir::Asc, None, a2.prev.clone()))
        .await
        .unwrap();
    assert_eq!(ids(&a1_again), ids(&a1));

    let all = |filter: EventFilter| {
        let store = store.clone();
        async move {
            let p = store
                .list_events(
                    &filter,
                    &PageRequest {
                        dir: SortDir::Asc,
                        ..PageRequest::default()
                    },
                )
                .await
                .unwrap();
            p.models.into_iter().map(|e| e.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(all(EventFilter::default()).await.len(), 8);
    assert_eq!(
        all(EventFilter {
            topics: vec!["order.shipped".into()],
            ..t1_only.clone()
        })
        .await,
        ["e5", "e6"]
    );
    assert_eq!(
        all(EventFilter {
            destination_ids: vec!["d2".into()],
            ..t1_only.clone()
        })
        .await,
        ["e1", "e3", "e5"]
    );
    assert_eq!(
        all(EventFilter {
            ids: vec!["e2".into(), "x0".into()],
            ..EventFilter::default()
        })
        .await,
        ["x0", "e2"]
    );
    let range = TimeRange {
        gte: Some(base + TimeDelta::seconds(1)),
        lt: Some(base + TimeDelta::seconds(3)),
        ..TimeRange::default()
    };
    assert_eq!(
        all(EventFilter {
            time: range,
            ..t1_only.clone()
        })
        .await,
        ["e1", "e2"]
    );
    let range = TimeRange {
        gt: Some(base + TimeDelta::seconds(4)),
        lte: Some(base + TimeDelta::seconds(5)),
        ..TimeRange::default()
    };
    assert_eq!(
        all(EventFilter {
            time: range,
            ..t1_only.clone()
        })
        .await,
        ["e6"]
    );

    let bad = store
        .list_events(
            &t1_only,
            &page(SortDir::Desc, Some("garbage!".into()), None),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Invalid, "{bad}");
}

async fn attempts_and_tenants_paginate(db: TestDb) {
    let store = with_destinations(&db, &["d1"]).await;
    let mut sqs = webhook("t1", "q1", "whsec_q");
    sqs.kind = "aws_sqs".into();
    store.create_destination(&sqs).await.unwrap();
    let mut e2 = event("t1", "e2", &["q1"]);
    e2.topic = "order.shipped".into();
    store
        .insert_events(&[event("t1", "e1", &["d1"]), e2])
        .await
        .unwrap();
    // Five attempts on e1 (four retries), one on e2.
    let base = Utc::now() + TimeDelta::seconds(1);
    for n in 0..6i64 {
        let c = store
            .claim_due(&claim("w", later(3600 * (n + 1)), 10))
            .await
            .unwrap();
        let c = if n < 5 {
            c.iter().find(|c| c.event.id == "e1").unwrap()
        } else {
            c.iter().find(|c| c.event.id == "e2").unwrap()
        };
        let mut a = attempt(&format!("a{n}"), AttemptStatus::Failed, "500");
        a.time = base + TimeDelta::seconds(n);
        let outcome = if n < 4 {
            DeliveryOutcome::RetryAt(later(3600 * (n + 1) + 1))
        } else {
            DeliveryOutcome::Failed
        };
        assert!(store.complete_attempt(&c.lease, &a, outcome).await.unwrap());
    }
    let filter = AttemptFilter::default();
    let req = |next: Option<String>, prev: Option<String>| PageRequest {
        dir: SortDir::Desc,
        limit: 4,
        next,
        prev,
        budget: None,
    };
    let ids = |p: &jetpost::store::Page<jetpost::store::Attempt>| {
        p.models.iter().map(|a| a.id.clone()).collect::<Vec<_>>()
    };
    let p1 = store
        .list_attempts(&filter, &req(None, None))
        .await
        .unwrap();
    assert_eq!(ids(&p1), ["a5", "a4", "a3", "a2"]);
    let p2 = store
        .list_attempts(&filter, &req(p1.next.clone(), None))
        .await
        .unwrap();
    assert_eq!(ids(&p2), ["a1", "a0"]);
    assert_eq!(p2.next, None);
    let back = store
        .list_attempts(&filter, &req(None, p2.prev.clone()))
        .await
        .unwrap();
    assert_eq!(ids(&back), ids(&p1));

    let only = |f: AttemptFilter| {
        let store = store.clone();
        async move {
            let p = store
                .list_attempts(&f, &PageRequest::default())
                .await
                .unwrap();
            p.models.into_iter().map(|a| a.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        only(AttemptFilter {
            destination_kinds: vec!["aws_sqs".into()],
            ..filter.clone()
        })
        .await,
        ["a5"]
    );
    assert_eq!(
        only(AttemptFilter {
            topics: vec!["order.shipped".into()],
            ..filter.clone()
        })
        .await,
        ["a5"]
    );
    assert_eq!(
        only(AttemptFilter {
            destination_ids: vec!["d1".into()],
            ..filter.clone()
        })
        .await
        .len(),
        5
    );
    assert_eq!(
        only(AttemptFilter {
            status: Some(AttemptStatus::Success),
            ..filter.clone()
        })
        .await,
        Vec::<String>::new()
    );
    let range = TimeRange {
        gte: Some(base + TimeDelta::seconds(1)),
        lte: Some(base + TimeDelta::seconds(2)),
        ..TimeRange::default()
    };
    assert_eq!(
        only(AttemptFilter {
            time: range,
            ..filter.clone()
        })
        .await,
        ["a2", "a1"]
    );

    // Tenants page by creation time.
    for t in ["t2", "t3", "t4"] {
        store.upsert_tenant(t, None).await.unwrap();
    }
    let tp = |next: Option<String>, prev: Option<String>| PageRequest {
        dir: SortDir::Asc,
        limit: 3,
        next,
        prev,
        budget: None,
    };
    let all = TenantFilter::default();
    let t1 = store.list_tenants(&all, &tp(None, None)).await.unwrap();
    let tids = |p: &jetpost::store::Page<jetpost::store::Tenant>| {
        p.models.iter().map(|t| t.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(tids(&t1), ["t1", "t2", "t3"]);
    let t2 = store
        .list_tenants(&all, &tp(t1.next.clone(), None))
        .await
        .unwrap();
    assert_eq!(tids(&t2), ["t4"]);
    let filtered = store
        .list_tenants(
            &TenantFilter {
                ids: vec!["t3".into(), "t1".into()],
            },
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(tids(&filtered), ["t3", "t1"]);
}

async fn transient_errors_are_classified(db: TestDb) {
    match db.kind() {
        BackendKind::Sqlite => sqlite_busy_is_transient(db).await,
        BackendKind::Postgres => postgres_lost_connection_is_transient(db).await,
    }
}

/// Another process holds SQLite's write lock longer than the busy timeout.
async fn sqlite_busy_is_transient(db: TestDb) {
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(200),
        ..StoreOptions::default()
    };
    let store = db.store_with(None, &options).await;
    let mut other = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();

    let e = store.upsert_tenant("t1", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.is_transient());
    assert!(e.to_string().contains("retry later"), "{e}");

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    store.upsert_tenant("t1", None).await.unwrap();
}

/// Postgres kills the session a call is waiting in (as in a failover or an admin's
/// pg_terminate_backend): that call fails as transient, the next one gets a new connection.
async fn postgres_lost_connection_is_transient(db: TestDb) {
    let store = db.store(None).await;
    store.upsert_tenant("t1", None).await.unwrap();

    let mut admin = sqlx::PgConnection::connect(&crate::support::db::postgres_admin_url())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {}.tenants IN ACCESS EXCLUSIVE MODE",
        db.schema()
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    let blocked = tokio::spawn({
        let store = store.clone();
        async move { store.upsert_tenant("t1", None).await }
    });
    // Wait until the store's session is queued behind the lock, then terminate it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let pid: i32 = loop {
        let waiting: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event_type = 'Lock' LIMIT 1",
        )
        .bind(db.schema())
        .fetch_optional(&mut admin)
        .await
        .unwrap();
        if let Some(pid) = waiting {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the store never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(terminated);
    let e = tokio::time::timeout(Duration::from_secs(30), blocked)
        .await
        .expect("the blocked call returns once its session is gone")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e:?}");
    sqlx::query("ROLLBACK").execute(&mut admin).await.unwrap();

    // The next call succeeds on a fresh connection.
    let again = store
        .upsert_tenant("t1", Some(&meta(&[("k", "v")])))
        .await
        .unwrap();
    assert_eq!(again.tenant.metadata, Some(meta(&[("k", "v")])));

    // Idle sessions killed behind the pool's back are replaced transparently.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(db.schema())
    .execute(&mut admin)
    .await
    .unwrap();
    // pg_terminate_backend only signals: wait until the sessions are really gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let alive: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(db.schema())
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if alive == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sessions survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.ping().await.unwrap();
    assert!(store.get_tenant("t1").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_creates_file_and_folder_in_wal_mode() {
    let db = TestDb::sqlite().await;
    let path = db.dir().join("nested/deeper/jetpost.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url, None).await.unwrap();
    store.migrate().await.unwrap();
    assert!(path.is_file());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    store.upsert_tenant("t1", None).await.unwrap();
    assert_eq!(store.backend(), BackendKind::Sqlite);
    // One process owns a SQLite file: no cross-replica notices.
    assert!(store.routing_changes().await.unwrap().is_none());
}

/// Every tenant or destination write reaches other replicas' routing caches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_announces_routing_changes_to_other_replicas() {
    let db = TestDb::postgres().await;
    let writer = db.store(Some(AES)).await;
    let replica = Store::connect(db.url(), Some(AES)).await.unwrap();
    let mut changes = replica
        .routing_changes()
        .await
        .unwrap()
        .expect("a listener");

    // The channel is database-wide: other tests' tenants may show up too.
    let tenant = format!("t-{}", uuid::Uuid::new_v4().simple());
    writer.upsert_tenant(&tenant, None).await.unwrap();
    writer
        .create_destination(&webhook(&tenant, "d1", "whsec_1"))
        .await
        .unwrap();
    writer.disable_destination(&tenant, "d1").await.unwrap();
    writer.delete_destination(&tenant, "d1").await.unwrap();
    // Nothing is announced for a write that fails.
    writer.delete_destination(&tenant, "d1").await.unwrap_err();
    writer.delete_tenant(&tenant).await.unwrap();

    let mut seen = 0;
    while seen < 5 {
        let change = tokio::time::timeout(Duration::from_secs(30), changes.next())
            .await
            .expect("a notice within 30 s")
            .unwrap();
        if change == RoutingChange::Tenant(tenant.clone()) {
            seen += 1;
        }
    }
    // And no sixth one for the failed delete.
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if changes.next().await.unwrap() == RoutingChange::Tenant(tenant.clone()) {
                return;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "a failed write was announced");
}

#[tokio::test]
async fn unknown_database_urls_are_refused_without_leaking_passwords() {
    let e = Store::connect("mysql://root:hunter2@db/x", None)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::BadUrl { .. }), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.to_string().contains("sqlite://"), "{e}");
}
