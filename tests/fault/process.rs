//! Whole-process faults on a real `jetpost serve`: SIGTERM in the middle of a burst (a graceful
//! drain, exit 0, nothing lost), and a webhook endpoint that is down for a while, then back.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::db::TestDb;
use crate::support::nats::{LocalNatsServer, operator_server, wait_until};
use crate::support::pipeline::{provision, webhook};
use crate::support::receiver::Receiver;
use crate::support::serve::Serve;

fn accounts_dir(server: &LocalNatsServer, tenants: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for tenant in tenants {
        let account = dir.path().join(tenant);
        std::fs::create_dir_all(&account).unwrap();
        std::fs::copy(
            server.creds_path(tenant).unwrap(),
            account.join("user.creds"),
        )
        .unwrap();
        std::fs::write(
            account.join("meta.yaml"),
            format!("tenant_id: {tenant}\nstream: EVENTS\nconsumer: jetpost\n"),
        )
        .unwrap();
    }
    dir
}

fn delivered_ids(receiver: &Receiver) -> HashSet<String> {
    receiver
        .requests()
        .iter()
        .filter_map(|r| r.header("x-outpost-event-id").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn sigterm_mid_burst_drains_exits_0_and_loses_nothing() {
    const EVENTS: usize = 3000;
    let receiver = Receiver::start().await;
    let db = TestDb::sqlite().await;
    let store = db.store(None).await;
    webhook(&store, "acme", "hook", &["*"], &receiver.url("/acme")).await;
    let server = operator_server(&["acme"]).await;
    let js = provision(&server, "acme").await;
    let dir = accounts_dir(&server, &["acme"]);
    let env = [
        ("API_KEY", "k"),
        ("DATABASE_URL", db.url()),
        ("PUBLISH_NATS_SERVERS", &server.url()),
        ("PUBLISH_NATS_ACCOUNTS_DIR", dir.path().to_str().unwrap()),
        ("SHUTDOWN_TIMEOUT_SECONDS", "20"),
    ];
    let mut serve = Serve::start(&env).await;
    let publisher = tokio::spawn(async move {
        let mut acks = Vec::new();
        for i in 0..EVENTS {
            acks.push(
                js.publish(
                    "events.burst",
                    format!(r#"{{"id":"e{i}","data":{{"i":{i}}}}}"#).into(),
                )
                .await
                .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap();
        }
    });
    wait_until("a third of the burst delivered", || async {
        delivered_ids(&receiver).len() >= EVENTS / 3
    })
    .await;
    let status = serve.terminate(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "a graceful shutdown exits 0");
    assert!(
        delivered_ids(&receiver).len() < EVENTS,
        "SIGTERM came mid-burst"
    );
    publisher.await.unwrap();

    let _serve = Serve::start(&env).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while delivered_ids(&receiver).len() < EVENTS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {EVENTS} delivered",
            delivered_ids(&receiver).len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        db.raw_count("SELECT count(*) FROM events").await,
        EVENTS as i64,
        "each event stored once"
    );
}

#[tokio::test]
async fn an_endpoint_down_for_a_while_gets_everything_when_it_is_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = TestDb::sqlite().await;
    let store = db.store(None).await;
    webhook(
        &store,
        "acme",
        "hook",
        &["*"],
        &format!("http://127.0.0.1:{port}/acme"),
    )
    .await;
    let server = operator_server(&["acme"]).await;
    let js = provision(&server, "acme").await;
    let dir = accounts_dir(&server, &["acme"]);
    let env = [
        ("API_KEY", "k"),
        ("DATABASE_URL", db.url()),
        ("PUBLISH_NATS_SERVERS", &server.url()),
        ("PUBLISH_NATS_ACCOUNTS_DIR", dir.path().to_str().unwrap()),
        ("RETRY_SCHEDULE", "1,1,2,2,3,3,5,5,5,5"),
    ];
    let _serve = Serve::start(&env).await;
    for i in 0..20 {
        crate::support::pipeline::publish(
            &js,
            "events.x",
            format!(r#"{{"id":"down-{i}","data":{{}}}}"#),
        )
        .await;
    }
    wait_until("first attempts failed against the closed port", || async {
        db.raw_count("SELECT count(*) FROM attempts WHERE code = 'connection_refused'")
            .await
            >= 20
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let receiver = Receiver::start_on(port).await;
    let got = receiver.wait_for(20, Duration::from_secs(60)).await;
    let ids: HashSet<&str> = got
        .iter()
        .filter_map(|r| r.header("x-outpost-event-id"))
        .collect();
    assert_eq!(
        ids.len(),
        20,
        "every event delivered once the endpoint is back"
    );
    assert_eq!(
        db.raw_count("SELECT count(*) FROM deliveries WHERE status = 'success'")
            .await,
        20
    );
}
