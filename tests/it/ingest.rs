//! Ingest end to end: NATS messages committed to a real store (SQLite file, the machine's
//! Postgres) with their delivery rows, acked only after the commit; idempotency; a Postgres
//! outage; and a `jetpost serve` process killed with SIGKILL in the middle of a burst.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jetpost::ingest::Ingest;
use jetpost::source::nats::NatsSource;
use jetpost::source::{IngestSink, Outcome, SourceMessage};
use jetpost::store::{DeliveryStatus, EventFilter, PageRequest, Store};

use crate::support::db::TestDb;
use crate::support::nats::{LocalNatsServer, operator_server, wait_until};
use crate::support::pipeline::{
    NOWHERE, account, install_account, provision, publish, source_config, stream_messages,
};
use crate::support::serve::Serve;

async fn webhook(store: &Store, tenant: &str, id: &str, topics: &[&str]) {
    crate::support::pipeline::webhook(store, tenant, id, topics, NOWHERE).await;
}

fn ingest(store: &Store, committers: usize) -> Arc<Ingest> {
    Arc::new(crate::support::pipeline::ingest(store, committers))
}

fn source(server: &LocalNatsServer, accounts: &[&str], sink: Arc<dyn IngestSink>) -> NatsSource {
    let accounts = accounts
        .iter()
        .map(|name| account(server, name, name))
        .collect();
    NatsSource::start(source_config(server, accounts), sink)
}

async fn event_count(store: &Store, tenant: &str) -> usize {
    let filter = EventFilter {
        tenant_ids: vec![tenant.into()],
        ..Default::default()
    };
    let page = PageRequest {
        limit: 1000,
        ..Default::default()
    };
    store
        .list_events(&filter, &page)
        .await
        .unwrap()
        .models
        .len()
}

#[tokio::test]
async fn a_nats_event_is_committed_with_its_deliveries_before_the_ack() {
    let db = TestDb::sqlite().await;
    let store = db.store(None).await;
    webhook(&store, "acme", "orders", &["order.paid"]).await;
    webhook(&store, "acme", "everything", &["*"]).await;
    webhook(&store, "acme", "users", &["user.created"]).await;
    let server = operator_server(&["acme"]).await;
    let js = provision(&server, "acme").await;
    let source = source(&server, &["acme"], ingest(&store, 1));

    let body = r#"{"id":"evt_1","tenant_id":"spoofed","topic":"order.paid","data":{"zebra":1,"alpha":2,"big":12345678901234567890}}"#;
    publish(&js, "events.x", body).await;
    wait_until("event stored", || async {
        store.get_event("acme", "evt_1").await.unwrap().is_some()
    })
    .await;
    let event = store.get_event("acme", "evt_1").await.unwrap().unwrap();
    assert_eq!(
        event.data,
        r#"{"zebra":1,"alpha":2,"big":12345678901234567890}"#
    );
    assert_eq!(event.topic, "order.paid");
    let mut routed: Vec<String> = store
        .list_deliveries("acme", "evt_1")
        .await
        .unwrap()
        .into_iter()
        .inspect(|d| assert_eq!(d.status, DeliveryStatus::Pending))
        .map(|d| d.destination_id)
        .collect();
    routed.sort();
    assert_eq!(routed, ["everything", "orders"]);
    assert!(store.get_event("spoofed", "evt_1").await.unwrap().is_none());

    // Routed to one destination that does not match: acked but not stored.
    publish(
        &js,
        "events.x",
        r#"{"id":"evt_2","destination_id":"users","topic":"invoice.sent","data":{}}"#,
    )
    .await;
    wait_until("every message acked", || async {
        stream_messages(&js).await == 0
    })
    .await;
    assert!(store.get_event("acme", "evt_2").await.unwrap().is_none());
    assert_eq!(event_count(&store, "acme").await, 1);
    source.stop().await;
}

#[tokio::test]
async fn the_same_id_twice_is_one_event_and_the_second_is_a_duplicate() {
    let db = TestDb::sqlite().await;
    let store = db.store(None).await;
    webhook(&store, "acme", "all", &["*"]).await;
    let ingest = ingest(&store, 1);
    let first = ingest
        .accept(
            br#"{"id":"same","tenant_id":"acme","data":{"v":1}}"#,
            || unreachable!(),
        )
        .await
        .unwrap();
    let second = ingest
        .accept(
            br#"{"id":"same","tenant_id":"acme","data":{"v":2}}"#,
            || unreachable!(),
        )
        .await
        .unwrap();
    assert!(!first.duplicate && first.destination_ids == ["all"]);
    // A duplicate names the destinations the event matches (as Outpost) but stores nothing.
    assert!(second.duplicate && second.destination_ids == ["all"]);
    assert_eq!(
        store.get_event("acme", "same").await.unwrap().unwrap().data,
        r#"{"v":1}"#
    );
    assert_eq!(
        store.list_deliveries("acme", "same").await.unwrap().len(),
        1
    );
    // Idempotency is per tenant.
    webhook(&store, "globex", "all", &["*"]).await;
    let other = ingest
        .accept(
            br#"{"id":"same","tenant_id":"globex","data":{}}"#,
            || unreachable!(),
        )
        .await
        .unwrap();
    assert!(!other.duplicate);
}

/// Commits through the real ingest, then reports a failure for the first delivery of each
/// message, so NATS redelivers a message that is already committed.
struct CommitThenNak {
    ingest: Arc<Ingest>,
    outcomes: Mutex<Vec<(String, Outcome)>>,
}

impl IngestSink for CommitThenNak {
    fn ingest(&self, message: SourceMessage) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let id = message.default_id.clone();
            let seen = self.outcomes.lock().unwrap().iter().any(|(i, _)| *i == id);
            let outcome = self.ingest.ingest(message).await;
            self.outcomes.lock().unwrap().push((id, outcome.clone()));
            if seen {
                outcome
            } else {
                Outcome::Retry("simulated lost ack".into())
            }
        })
    }
}

#[tokio::test]
async fn a_redelivered_message_without_id_is_one_event() {
    let db = TestDb::sqlite().await;
    let store = db.store(None).await;
    webhook(&store, "acme", "all", &["*"]).await;
    let server = operator_server(&["acme"]).await;
    let js = provision(&server, "acme").await;
    let sink = Arc::new(CommitThenNak {
        ingest: ingest(&store, 1),
        outcomes: Mutex::new(Vec::new()),
    });
    let source = source(&server, &["acme"], sink.clone());
    publish(&js, "events.x", r#"{"topic":"x","data":{"n":1}}"#).await;
    wait_until("delivered twice", || async {
        sink.outcomes.lock().unwrap().len() >= 2
    })
    .await;
    let outcomes = sink.outcomes.lock().unwrap().clone();
    assert_eq!(
        outcomes[0].0, outcomes[1].0,
        "the same derived id both times"
    );
    assert_eq!(outcomes[0].1, Outcome::Committed { duplicate: false });
    assert_eq!(outcomes[1].1, Outcome::Committed { duplicate: true });
    assert_eq!(event_count(&store, "acme").await, 1);
    source.stop().await;
}

/// Records every outcome the real ingest returns.
struct Counting {
    ingest: Arc<Ingest>,
    retried: Mutex<u64>,
}

impl IngestSink for Counting {
    fn ingest(&self, message: SourceMessage) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let outcome = self.ingest.ingest(message).await;
            if matches!(outcome, Outcome::Retry(_)) {
                *self.retried.lock().unwrap() += 1;
            }
            outcome
        })
    }
}

#[tokio::test]
async fn postgres_connections_killed_mid_stream_lose_nothing() {
    let db = TestDb::postgres().await;
    let store = db.store(None).await;
    webhook(&store, "acme", "all", &["*"]).await;
    let server = operator_server(&["acme"]).await;
    let js = provision(&server, "acme").await;
    let sink = Arc::new(Counting {
        ingest: ingest(&store, 4),
        retried: Mutex::new(0),
    });
    let source = source(&server, &["acme"], sink.clone());

    let admin = sqlx::PgPool::connect(&crate::support::db::postgres_admin_url())
        .await
        .unwrap();
    let schema = db.schema().to_owned();
    let killer = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            let _ = sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&schema)
                .execute(&admin)
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    for i in 0..300 {
        publish(
            &js,
            "events.x",
            format!(r#"{{"id":"e{i}","data":{{"i":{i}}}}}"#),
        )
        .await;
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    killer.await.unwrap();
    wait_until("all 300 events committed", || async {
        store
            .count_deliveries(DeliveryStatus::Pending)
            .await
            .is_ok_and(|n| n == 300)
    })
    .await;
    assert_eq!(event_count(&store, "acme").await, 300);
    assert!(
        *sink.retried.lock().unwrap() > 0,
        "the outage must have caused naks"
    );
    wait_until("every message acked", || async {
        stream_messages(&js).await == 0
    })
    .await;
    source.stop().await;
}

#[tokio::test]
async fn sigkill_during_a_burst_loses_nothing_and_duplicates_nothing() {
    const PER_ACCOUNT: usize = 3334;
    let accounts = ["acme", "globex", "initech"];
    let db = TestDb::sqlite().await;
    let store = db.store(None).await;
    for tenant in accounts {
        webhook(&store, tenant, "all", &["*"]).await;
    }
    let server = operator_server(&accounts).await;
    let accounts_dir = tempfile::tempdir().unwrap();
    let mut publishers = Vec::new();
    for name in accounts {
        publishers.push(provision(&server, name).await);
        install_account(accounts_dir.path(), &server, name);
    }
    let env = [
        ("API_KEY", "test"),
        ("DATABASE_URL", db.url()),
        ("PUBLISH_NATS_SERVERS", &server.url()),
        (
            "PUBLISH_NATS_ACCOUNTS_DIR",
            accounts_dir.path().to_str().unwrap(),
        ),
    ];
    let mut child = Serve::start(&env).await;
    // Events without `id`: a redelivery after the crash must map to the same derived id.
    let publishing = {
        let publishers = publishers.clone();
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..PER_ACCOUNT {
                for js in &publishers {
                    let ack = js
                        .publish(
                            "events.burst",
                            format!(r#"{{"topic":"burst","data":{{"i":{i}}}}}"#).into(),
                        )
                        .await
                        .unwrap();
                    acks.push(ack);
                }
                if acks.len() >= 512 {
                    for ack in acks.drain(..) {
                        ack.await.unwrap();
                    }
                }
            }
            for ack in acks {
                ack.await.unwrap();
            }
        })
    };
    let total = || async { db.raw_count("SELECT count(*) FROM events").await as usize };
    wait_until("a third of the burst committed", || async {
        total().await >= PER_ACCOUNT
    })
    .await;
    let status = child.kill().await;
    assert!(!status.success(), "killed with SIGKILL");
    let committed_before_restart = total().await;
    assert!(
        committed_before_restart < PER_ACCOUNT * 3,
        "the kill came mid-burst"
    );

    publishing.await.unwrap();
    let mut child = Serve::start(&env).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while total().await < PER_ACCOUNT * 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every event was committed after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Exactly once: no duplicate (derived ids are stable) and one delivery row each.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(total().await, PER_ACCOUNT * 3);
    assert_eq!(
        db.raw_count("SELECT count(*) FROM deliveries").await,
        (PER_ACCOUNT * 3) as i64
    );
    for js in &publishers {
        wait_until("every message acked", || async {
            stream_messages(js).await == 0
        })
        .await;
    }
    child.kill().await;
}
