//! The NATS source against a real nats-server in operator/JWT mode: what the sink received, with
//! which tenant, and what is left on the server (stream messages, ack pending, redeliveries).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use jetpost::source::Outcome;
use jetpost::source::nats::topology;
use jetpost::source::nats::{
    AccountSpec, AccountState, NatsSource, NatsSourceConfig, Origin, SubjectPattern, TenantRule,
};

use crate::support::nats::{LocalNatsServer, PATIENCE, connect_as, operator_server, wait_until};
use crate::support::pipeline::{CONSUMER, STREAM, provision, publish, stream_messages};
use crate::support::sink::RecordingSink;

fn account(name: &str, tenant: &str, creds: Option<PathBuf>) -> AccountSpec {
    AccountSpec {
        name: name.into(),
        origin: Origin::Static,
        tenant: TenantRule::Account(tenant.into()),
        stream: STREAM.into(),
        consumer: CONSUMER.into(),
        credentials_file: creds,
        defined_at: format!("test account {name}"),
        fingerprint: [0; 32],
    }
    .fingerprinted(None)
}

fn config(
    server: &LocalNatsServer,
    accounts: Vec<AccountSpec>,
    dir: Option<&Path>,
) -> NatsSourceConfig {
    NatsSourceConfig {
        servers: vec![server.url()],
        accounts,
        accounts_dir: dir.map(Path::to_owned),
        max_in_flight: 64,
        drain_timeout: Duration::from_secs(10),
        resync_interval: Duration::from_secs(1),
    }
}

async fn wait_state(source: &NatsSource, name: &str, state: AccountState) {
    let what = format!("account {name} {state:?}");
    wait_until(&what, || async {
        source.status().get(name).is_some_and(|s| s.state == state)
    })
    .await;
}

#[tokio::test]
async fn delivers_once_with_the_accounts_tenant_and_exact_data_then_acks() {
    let server = operator_server(&["acme"]).await;
    provision(&server, "acme").await;
    let sink = RecordingSink::new();
    let creds = server.creds_path("acme").unwrap();
    let source = NatsSource::start(
        config(&server, vec![account("acme", "acme", Some(creds))], None),
        sink.clone(),
    );
    let js = jetstream::new(connect_as(&server, "acme").await);
    let body = r#"{"tenant_id":"spoofed","topic":"order.paid","tenant\u005fid":"spoofed2","data":{"zebra":1,"alpha":2,"big":12345678901234567890,"s":"<&>\u003c"}}"#;
    publish(&js, "events.order", body).await;

    let got = sink.wait_committed(1, PATIENCE).await;
    let event = got[0].event.as_ref().unwrap();
    assert_eq!(event.tenant_id, "acme");
    assert_eq!(got[0].message.tenant_id, "acme");
    assert_eq!(
        event.data.get(),
        r#"{"zebra":1,"alpha":2,"big":12345678901234567890,"s":"<&>\u003c"}"#
    );
    assert!(!String::from_utf8_lossy(&got[0].message.body).contains("spoofed"));
    assert!(
        got[0].id.starts_with("nats_"),
        "derived id, got {}",
        got[0].id
    );

    wait_until("work-queue stream empty after the ack", || async {
        stream_messages(&js).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 1, "delivered exactly once");
    let status = source.status().get("acme").unwrap();
    assert_eq!(
        (
            status.state,
            status.messages_received,
            status.messages_rejected
        ),
        (AccountState::Consuming, 1, 0)
    );
    source.stop().await;
}

#[tokio::test]
async fn three_accounts_interleaved_keep_their_own_tenants() {
    let names = ["t1", "t2", "t3"];
    let server = operator_server(&names).await;
    let mut accounts = Vec::new();
    let mut publishers = Vec::new();
    for name in names {
        provision(&server, name).await;
        accounts.push(account(
            name,
            &format!("tenant-{name}"),
            Some(server.creds_path(name).unwrap()),
        ));
        publishers.push(jetstream::new(connect_as(&server, name).await));
    }
    let sink = RecordingSink::new();
    let source = NatsSource::start(config(&server, accounts, None), sink.clone());
    for i in 0..40 {
        for (name, js) in names.iter().zip(&publishers) {
            let body =
                format!(r#"{{"id":"{name}-{i}","tenant_id":"t1","topic":"x","data":{{"n":{i}}}}}"#);
            publish(js, "events.x", body).await;
        }
    }
    let got = sink.wait_committed(120, PATIENCE).await;
    let mut ids: Vec<String> = got.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 120, "none lost or duplicated");
    for r in &got {
        let account = r.id.split('-').next().unwrap();
        assert_eq!(
            r.event.as_ref().unwrap().tenant_id,
            format!("tenant-{account}")
        );
        assert_eq!(r.message.account, account);
    }
    source.stop().await;
}

#[tokio::test]
async fn poison_messages_are_terminated_counted_and_never_redelivered() {
    let server = operator_server(&["acme"]).await;
    provision(&server, "acme").await;
    let sink = RecordingSink::new();
    let creds = server.creds_path("acme").unwrap();
    let source = NatsSource::start(
        config(&server, vec![account("acme", "acme", Some(creds))], None),
        sink.clone(),
    );
    let js = jetstream::new(connect_as(&server, "acme").await);
    for poison in [
        "not json",
        "null",
        "[1,2]",
        r#"{"topic":"x"}"#,
        r#"{"data":[1]}"#,
        "\u{1}\u{2}",
    ] {
        publish(&js, "events.bad", poison).await;
    }
    publish(&js, "events.good", r#"{"id":"good","data":{}}"#).await;
    let got = sink.wait_committed(1, PATIENCE).await;
    assert_eq!(got[0].id, "good");
    wait_until("every poison message terminated", || async {
        source
            .status()
            .get("acme")
            .is_some_and(|s| s.messages_rejected == 6)
    })
    .await;
    let consumer = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .consumer_info(CONSUMER)
        .await
        .unwrap();
    assert_eq!(consumer.num_ack_pending, 0);
    assert_eq!(
        consumer.num_redelivered, 0,
        "terminated messages are not redelivered"
    );
    wait_until("stream empty", || async { stream_messages(&js).await == 0 }).await;
    // Terminated messages reached the sink only as far as the source's own checks allowed.
    assert_eq!(
        sink.received().len(),
        3,
        "three bodies that are JSON objects reached parsing"
    );
    source.stop().await;
}

#[tokio::test]
async fn a_transient_failure_is_redelivered_with_the_same_derived_id() {
    let server = operator_server(&["acme"]).await;
    provision(&server, "acme").await;
    let sink = RecordingSink::new();
    sink.script([Outcome::Retry("store down".into())]);
    let creds = server.creds_path("acme").unwrap();
    let source = NatsSource::start(
        config(&server, vec![account("acme", "acme", Some(creds))], None),
        sink.clone(),
    );
    let js = jetstream::new(connect_as(&server, "acme").await);
    publish(&js, "events.x", r#"{"topic":"x","data":{"a":1}}"#).await;
    let committed = sink.wait_committed(1, PATIENCE).await;
    let all = sink.received();
    assert_eq!(all.len(), 2, "nak'ed once, then accepted once");
    assert_eq!(all[0].outcome, Outcome::Retry("store down".into()));
    assert_eq!(
        all[0].id, committed[0].id,
        "the derived id is stable across redeliveries"
    );
    wait_until("stream empty", || async { stream_messages(&js).await == 0 }).await;
    source.stop().await;
}

fn write_account_dir(root: &Path, dir: &str, meta: &str, creds: Option<&Path>) {
    let path = root.join(dir);
    std::fs::create_dir_all(&path).unwrap();
    if let Some(creds) = creds {
        std::fs::copy(creds, path.join("user.creds.tmp")).unwrap();
        std::fs::rename(path.join("user.creds.tmp"), path.join("user.creds")).unwrap();
    }
    std::fs::write(path.join("meta.yaml.tmp"), meta).unwrap();
    std::fs::rename(path.join("meta.yaml.tmp"), path.join("meta.yaml")).unwrap();
}

#[tokio::test]
async fn accounts_dir_adds_changes_and_removes_accounts_at_runtime() {
    let server = operator_server(&["acme", "globex"]).await;
    provision(&server, "acme").await;
    provision(&server, "globex").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let source = NatsSource::start(config(&server, vec![], Some(dir.path())), sink.clone());
    let acme = jetstream::new(connect_as(&server, "acme").await);
    let globex = jetstream::new(connect_as(&server, "globex").await);

    // Added after start.
    write_account_dir(
        dir.path(),
        "acme",
        "tenant_id: acme\nstream: EVENTS\nconsumer: jetpost\n",
        Some(&server.creds_path("acme").unwrap()),
    );
    write_account_dir(
        dir.path(),
        "globex",
        "tenant_id: globex\nstream: EVENTS\nconsumer: jetpost\n",
        Some(&server.creds_path("globex").unwrap()),
    );
    wait_state(&source, "acme", AccountState::Consuming).await;
    wait_state(&source, "globex", AccountState::Consuming).await;
    publish(&acme, "events.x", r#"{"id":"a1","data":{}}"#).await;
    let got = sink.wait_committed(1, PATIENCE).await;
    assert_eq!(got[0].event.as_ref().unwrap().tenant_id, "acme");

    // tenant_id changed in meta.yaml: later events carry the new tenant.
    write_account_dir(
        dir.path(),
        "acme",
        "tenant_id: acme-renamed\nstream: EVENTS\nconsumer: jetpost\n",
        None,
    );
    wait_until("acme's status shows the new tenant", || async {
        source
            .status()
            .get("acme")
            .is_some_and(|s| s.tenant_id == "acme-renamed" && s.state == AccountState::Consuming)
    })
    .await;
    publish(&acme, "events.x", r#"{"id":"a2","data":{}}"#).await;
    let got = sink.wait_committed(2, PATIENCE).await;
    let a2 = got.iter().find(|r| r.id == "a2").unwrap();
    assert_eq!(a2.event.as_ref().unwrap().tenant_id, "acme-renamed");

    // Removed: drained and no longer consumed; the other account keeps running.
    std::fs::remove_dir_all(dir.path().join("acme")).unwrap();
    wait_until("acme gone from the status", || async {
        source.status().get("acme").is_none()
    })
    .await;
    publish(&acme, "events.x", r#"{"id":"a3","data":{}}"#).await;
    publish(&globex, "events.x", r#"{"id":"g1","data":{}}"#).await;
    let got = sink.wait_committed(3, PATIENCE).await;
    assert!(got.iter().any(|r| r.id == "g1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !sink.received().iter().any(|r| r.id == "a3"),
        "a removed account is not consumed"
    );
    assert_eq!(stream_messages(&acme).await, 1, "a3 waits in the stream");
    source.stop().await;
}

#[tokio::test]
async fn credential_rotation_keeps_consuming() {
    crate::support::init_logs();
    let server = operator_server(&["acme"]).await;
    provision(&server, "acme").await;
    let dir = tempfile::tempdir().unwrap();
    let old = server.creds("acme").unwrap();
    write_account_dir(
        dir.path(),
        "acme",
        "tenant_id: acme\nstream: EVENTS\nconsumer: jetpost\n",
        Some(&old.path),
    );
    let sink = RecordingSink::new();
    let source = NatsSource::start(config(&server, vec![], Some(dir.path())), sink.clone());
    wait_state(&source, "acme", AccountState::Consuming).await;
    let js = jetstream::new(connect_as(&server, "acme").await);
    publish(&js, "events.x", r#"{"id":"before","data":{}}"#).await;
    sink.wait_committed(1, PATIENCE).await;

    let new = server.new_user("acme").await.unwrap();
    write_account_dir(
        dir.path(),
        "acme",
        "tenant_id: acme\nstream: EVENTS\nconsumer: jetpost\n",
        Some(&new.path),
    );
    // Give the replacement time to connect with the new creds, then revoke the old user.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.revoke_user("acme", &old.public_key).await.unwrap();
    wait_state(&source, "acme", AccountState::Consuming).await;
    let js = jetstream::new(
        server
            .connect_options_with(&new)
            .await
            .unwrap()
            .connect(server.url())
            .await
            .unwrap(),
    );
    for i in 0..5 {
        publish(
            &js,
            "events.x",
            format!(r#"{{"id":"after-{i}","data":{{}}}}"#),
        )
        .await;
    }
    let got = sink.wait_committed(6, PATIENCE).await;
    assert!((0..5).all(|i| got.iter().any(|r| r.id == format!("after-{i}"))));
    source.stop().await;
}

#[tokio::test]
async fn broken_accounts_do_not_block_the_others_and_recover_without_restart() {
    let server = operator_server(&["good", "nostream", "push"]).await;
    provision(&server, "good").await;
    // "push": the consumer is a push consumer.
    let push_js = jetstream::new(connect_as(&server, "push").await);
    let stream = push_js
        .create_stream(jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["events.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    stream
        .create_consumer(jetstream::consumer::push::Config {
            durable_name: Some(CONSUMER.into()),
            deliver_subject: "push.deliver".into(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad_creds = dir.path().join("bad.creds");
    std::fs::write(&bad_creds, "not a creds file").unwrap();
    let accounts = vec![
        account("good", "good", Some(server.creds_path("good").unwrap())),
        account(
            "nostream",
            "nostream",
            Some(server.creds_path("nostream").unwrap()),
        ),
        account("push", "push", Some(server.creds_path("push").unwrap())),
        account("badcreds", "badcreds", Some(bad_creds)),
    ];
    let sink = RecordingSink::new();
    let source = NatsSource::start(config(&server, accounts, None), sink.clone());
    let good = jetstream::new(connect_as(&server, "good").await);
    publish(&good, "events.x", r#"{"id":"g1","data":{}}"#).await;
    sink.wait_committed(1, PATIENCE).await;

    for (name, needle) in [
        ("nostream", "stream \"EVENTS\" does not exist"),
        ("push", "is a push consumer"),
        ("badcreds", "credentials_file"),
    ] {
        let what = format!("{name} failed with \"{needle}\"");
        wait_until(&what, || async {
            source.status().get(name).is_some_and(|s| {
                s.state == AccountState::Failed
                    && s.last_error.as_deref().is_some_and(|e| e.contains(needle))
            })
        })
        .await;
    }

    // Fixing the missing stream recovers that account without a restart.
    provision(&server, "nostream").await;
    wait_state(&source, "nostream", AccountState::Consuming).await;
    let fixed = jetstream::new(connect_as(&server, "nostream").await);
    publish(&fixed, "events.x", r#"{"id":"n1","data":{}}"#).await;
    let got = sink.wait_committed(2, PATIENCE).await;
    assert_eq!(
        got.iter()
            .find(|r| r.id == "n1")
            .unwrap()
            .event
            .as_ref()
            .unwrap()
            .tenant_id,
        "nostream"
    );
    source.stop().await;
}

#[tokio::test]
async fn server_restart_and_lame_duck_lose_nothing() {
    let server = operator_server(&["acme"]).await;
    provision(&server, "acme").await;
    let sink = RecordingSink::new();
    let creds = server.creds_path("acme").unwrap();
    let source = NatsSource::start(
        config(&server, vec![account("acme", "acme", Some(creds))], None),
        sink.clone(),
    );
    wait_state(&source, "acme", AccountState::Consuming).await;
    let js = jetstream::new(connect_as(&server, "acme").await);
    for i in 0..50 {
        publish(&js, "events.x", format!(r#"{{"id":"a{i}","data":{{}}}}"#)).await;
    }
    sink.wait_committed(50, PATIENCE).await;

    server.restart().await.unwrap();
    let js = jetstream::new(connect_as(&server, "acme").await);
    for i in 50..100 {
        publish(&js, "events.x", format!(r#"{{"id":"a{i}","data":{{}}}}"#)).await;
    }
    sink.wait_committed(100, Duration::from_secs(60)).await;

    server.lame_duck().await.unwrap();
    server
        .wait_exit(Duration::from_secs(90))
        .await
        .expect("lame duck ends with the server exiting");
    server.start().await.unwrap();
    let js = jetstream::new(connect_as(&server, "acme").await);
    for i in 100..150 {
        publish(&js, "events.x", format!(r#"{{"id":"a{i}","data":{{}}}}"#)).await;
    }
    let got = sink.wait_committed(150, Duration::from_secs(60)).await;
    let mut ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 150, "every event arrived");
    wait_until("stream empty", || async { stream_messages(&js).await == 0 }).await;
    source.stop().await;
}

#[tokio::test]
async fn aggregate_mode_takes_the_tenant_from_the_subject() {
    let server = crate::support::aggregate::aggregate_server(&["acme", "globex"], "central").await;
    for tenant in ["acme", "globex"] {
        provision(&server, tenant).await;
    }
    let central = jetstream::new(connect_as(&server, "central").await);
    for tenant in ["acme", "globex"] {
        let source = topology::TenantSource {
            tenant: tenant.into(),
            stream: STREAM.into(),
            filter: "events.>".into(),
            api_prefix: format!("JS.{tenant}.API"),
            deliver_prefix: format!("deliver.{tenant}"),
            subject_prefix: format!("tenant.{tenant}"),
        };
        topology::add_tenant_source(&central, "AGGREGATE", &source)
            .await
            .unwrap();
    }
    let stream = central.get_stream("AGGREGATE").await.unwrap();
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let spec = AccountSpec {
        name: "aggregate".into(),
        origin: Origin::Aggregate,
        tenant: TenantRule::Subject(SubjectPattern::parse("tenant.{tenant_id}.>").unwrap()),
        stream: "AGGREGATE".into(),
        consumer: CONSUMER.into(),
        credentials_file: Some(server.creds_path("central").unwrap()),
        defined_at: "test".into(),
        fingerprint: [0; 32],
    }
    .fingerprinted(None);
    let sink = RecordingSink::new();
    let source = NatsSource::start(config(&server, vec![spec], None), sink.clone());
    for tenant in ["acme", "globex"] {
        let js = jetstream::new(connect_as(&server, tenant).await);
        for i in 0..20 {
            let body =
                format!(r#"{{"id":"{tenant}-{i}","tenant_id":"forged","data":{{"i":{i}}}}}"#);
            publish(&js, "events.order", body).await;
        }
    }
    let got = sink.wait_committed(40, Duration::from_secs(60)).await;
    for r in &got {
        let tenant = r.id.split('-').next().unwrap();
        assert_eq!(
            r.event.as_ref().unwrap().tenant_id,
            tenant,
            "the subject's tenant, not the payload's"
        );
    }
    assert_eq!(
        source.status().get("aggregate").unwrap().source,
        Origin::Aggregate
    );
    source.stop().await;
}

/// A sink that holds every message until the gate opens, then commits it.
struct GateSink {
    gate: tokio::sync::Semaphore,
}

impl jetpost::source::IngestSink for GateSink {
    fn ingest(
        &self,
        _message: jetpost::source::SourceMessage,
    ) -> futures::future::BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let _ = self.gate.acquire().await;
            Outcome::Committed { duplicate: false }
        })
    }
}

#[tokio::test]
async fn pending_is_asked_from_the_server_on_demand() {
    let server = operator_server(&["acme"]).await;
    let js = provision(&server, "acme").await;
    let sink = std::sync::Arc::new(GateSink {
        gate: tokio::sync::Semaphore::new(0),
    });
    let creds = server.creds_path("acme").unwrap();
    let mut cfg = config(&server, vec![account("acme", "acme", Some(creds))], None);
    cfg.max_in_flight = 2;
    let source = NatsSource::start(cfg, sink.clone());
    wait_state(&source, "acme", AccountState::Consuming).await;

    // Two messages are taken and held; the rest stay with the server, never delivered, so
    // only the server knows how many wait.
    for i in 0..12 {
        publish(&js, "events.x", format!(r#"{{"id":"p{i}","data":{{}}}}"#)).await;
    }
    wait_until("the server counts what waits", || async {
        source.status().refresh_pending(PATIENCE).await;
        let pending = source.status().get("acme").unwrap().pending;
        (8..=10).contains(&pending)
    })
    .await;

    sink.gate.add_permits(1000);
    wait_until("stream empty", || async { stream_messages(&js).await == 0 }).await;
    // Asked again only after a second; then nothing waits.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    source.status().refresh_pending(PATIENCE).await;
    assert_eq!(source.status().get("acme").unwrap().pending, 0);
    source.stop().await;
}

#[tokio::test]
async fn a_deleted_consumer_is_noticed_without_waiting_for_heartbeats() {
    let server = operator_server(&["acme"]).await;
    let js = provision(&server, "acme").await;
    let sink = RecordingSink::new();
    let creds = server.creds_path("acme").unwrap();
    let source = NatsSource::start(
        config(&server, vec![account("acme", "acme", Some(creds))], None),
        sink.clone(),
    );
    wait_state(&source, "acme", AccountState::Consuming).await;

    let started = std::time::Instant::now();
    js.delete_consumer_from_stream(CONSUMER, STREAM)
        .await
        .unwrap();
    wait_until("acme reports the missing consumer", || async {
        source.status().get("acme").is_some_and(|s| {
            s.state != AccountState::Consuming
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("does not exist"))
        })
    })
    .await;
    // Well inside two pull heartbeats (30 s each): the server's 409 ended the pull at once.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "noticed after {:?}",
        started.elapsed()
    );

    // Recreated: the account recovers by itself (capped backoff) and consumes again.
    provision(&server, "acme").await;
    wait_state(&source, "acme", AccountState::Consuming).await;
    publish(&js, "events.x", r#"{"id":"after","data":{}}"#).await;
    let got = sink.wait_committed(1, PATIENCE).await;
    assert_eq!(got[0].id, "after");
    source.stop().await;
}
