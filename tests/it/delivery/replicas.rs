//! Several replicas on one Postgres schema: a burst delivered exactly once per destination by
//! two dispatchers, and a `jetpost serve` killed with SIGKILL mid-delivery whose work a restart
//! finishes, duplicating only what was in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use jetpost::delivery::{Dispatcher, DispatcherOptions, Inbox};
use jetpost::destination::webhook::WebhookProvider;
use jetpost::store::{DeliveryStatus, NewEvent, Store, StoreOptions};
use tokio::process::{Child, Command};

use super::{AES, TENANT, WAIT, config, eventually, webhook};
use crate::support::db::TestDb;
use crate::support::receiver::{Receiver, Reply};

fn new_event(n: usize, destinations: &[&str]) -> NewEvent {
    NewEvent {
        tenant_id: TENANT.into(),
        id: format!("evt_{n:05}"),
        destination_id: None,
        topic: "burst".into(),
        time: chrono::Utc::now(),
        metadata: None,
        data: format!(r#"{{"n":{n}}}"#),
        eligible_for_retry: true,
        destination_ids: destinations.iter().map(|d| d.to_string()).collect(),
        lease: None,
    }
}

/// Requests per event id.
fn counts(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in receiver.requests() {
        let id = request.header("x-outpost-event-id").unwrap().to_owned();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

async fn setup(db: &TestDb, destinations: &[(&str, String)]) -> Store {
    let store = db.store(Some(AES)).await;
    store.upsert_tenant(TENANT, None).await.unwrap();
    for (id, url) in destinations {
        store
            .create_destination(&webhook(id, url.clone(), &["*"]))
            .await
            .unwrap();
    }
    store
}

async fn wait_all_delivered(store: &Store, expected: u64) {
    eventually(&format!("{expected} successful deliveries"), || async {
        let done = store.count_deliveries(DeliveryStatus::Success).await.ok()?;
        (done == expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_a_burst_exactly_once_per_destination() {
    const EVENTS: usize = 5000;
    crate::support::init_logs();
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let db = TestDb::postgres().await;
    let writer = setup(&db, &[("d1", first.url("/")), ("d2", second.url("/"))]).await;

    let config = config(|c| {
        c.delivery_max_concurrency = 64;
        c.delivery_max_concurrency_per_destination = 32;
    });
    let mut replicas = Vec::new();
    for _ in 0..2 {
        // Its own pool: a replica of its own as far as Postgres can tell.
        let store = db.store_with(Some(AES), &StoreOptions::default()).await;
        let provider = WebhookProvider::new(
            &config.destinations.webhook,
            config.delivery_timeout(),
            "test",
        )
        .unwrap();
        let inbox = Inbox::new(DispatcherOptions::from_config(&config));
        let wake = inbox.deliveries_queued();
        let dispatcher = Dispatcher::start(store, provider, inbox).unwrap();
        replicas.push((dispatcher, wake));
    }
    assert_ne!(replicas[0].0.owner(), replicas[1].0.owner());

    for batch in (0..EVENTS).collect::<Vec<_>>().chunks(500) {
        let events: Vec<NewEvent> = batch.iter().map(|n| new_event(*n, &["d1", "d2"])).collect();
        writer.insert_events(&events).await.unwrap();
        for (_, wake) in &replicas {
            wake.notify_one();
        }
    }

    wait_all_delivered(&writer, 2 * EVENTS as u64).await;
    for receiver in [&first, &second] {
        let counts = counts(receiver);
        assert_eq!(counts.len(), EVENTS);
        let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
        assert!(
            repeated.is_empty(),
            "delivered more than once: {repeated:?}"
        );
    }
    assert_eq!(
        db.raw_count(
            "SELECT count(*) FROM attempts WHERE attempt_number <> 1 OR status <> 'success'"
        )
        .await,
        0
    );
    // Both replicas took part.
    for (dispatcher, _) in &replicas {
        assert!(dispatcher.status().attempts_recorded > 0);
    }
    for (dispatcher, _) in replicas {
        dispatcher.stop().await;
    }
}

/// `jetpost serve` on the test's Postgres schema; the API listens on a free port.
async fn serve(db: &TestDb, dir: &std::path::Path) -> Child {
    let config = dir.join("jetpost.yaml");
    std::fs::write(
        &config,
        format!(
            "api_port: 0\n\
             api_auth_disabled: true\n\
             aes_encryption_secret: {AES:?}\n\
             destinations: {{webhook: {{block_private_ips: false}}}}\n\
             database_url: {url:?}\n\
             delivery_timeout_seconds: 2\n\
             delivery_max_concurrency: 4\n\
             delivery_max_concurrency_per_destination: 4\n\
             shutdown_timeout_seconds: 1\n",
            url = db.url()
        ),
    )
    .unwrap();
    let log = if std::env::var_os("JETPOST_TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    Command::new(env!("CARGO_BIN_EXE_jetpost"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_leaves_only_its_in_flight_attempts_to_repeat() {
    const EVENTS: usize = 40;
    crate::support::init_logs();
    let receiver = Receiver::start().await;
    // Slow answers keep attempts in flight when the kill comes.
    receiver.reply_with(Reply::Delay(Duration::from_millis(600), 200));
    let db = TestDb::postgres().await;
    let store = setup(&db, &[("d1", receiver.url("/"))]).await;
    let events: Vec<NewEvent> = (0..EVENTS).map(|n| new_event(n, &["d1"])).collect();
    store.insert_events(&events).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut victim = serve(&db, dir.path()).await;
    receiver.wait_for(12, WAIT).await;
    victim.start_kill().unwrap();
    victim.wait().await.unwrap();

    // What the killed process held: its last requests (the one that just arrived, at least),
    // at most its concurrency, none of them recorded.
    let in_flight: HashSet<String> = db
        .raw_texts("SELECT event_id FROM deliveries WHERE status = 'delivering'")
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(
        !in_flight.is_empty() && in_flight.len() <= 4,
        "{in_flight:?}"
    );
    let delivered_before = store
        .count_deliveries(DeliveryStatus::Success)
        .await
        .unwrap();
    assert!(delivered_before < EVENTS as u64);

    let mut successor = serve(&db, dir.path()).await;
    wait_all_delivered(&store, EVENTS as u64).await;
    successor.start_kill().unwrap();
    successor.wait().await.unwrap();

    let counts = counts(&receiver);
    assert_eq!(counts.len(), EVENTS, "every event arrived");
    let repeated: HashSet<String> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        repeated.is_subset(&in_flight),
        "repeated {repeated:?}, but only {in_flight:?} were in flight at the kill"
    );
    assert!(counts.values().all(|n| *n <= 2));
    // A repeat is the same event: same id, same bytes.
    let mut bodies: BTreeMap<String, HashSet<Vec<u8>>> = BTreeMap::new();
    for request in receiver.requests() {
        let id = request.header("x-outpost-event-id").unwrap().to_owned();
        bodies.entry(id).or_default().insert(request.body.to_vec());
    }
    assert!(bodies.values().all(|b| b.len() == 1));
    // Each delivery recorded exactly one (successful) attempt.
    assert_eq!(
        db.raw_count(
            "SELECT count(*) FROM attempts WHERE status = 'success' AND attempt_number = 1"
        )
        .await,
        EVENTS as i64
    );
    assert_eq!(
        db.raw_count("SELECT count(*) FROM attempts").await,
        EVENTS as i64
    );
}
