//! The API with a NATS source: `/api/v1/nats/accounts` and `/healthz` report each account, a
//! failed account leaves the service healthy, and events published to NATS show in `/events`.

use async_nats::jetstream;
use jetpost::config::AccountConfig;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Auth, NOWHERE, Service};
use crate::support::db::TestDb;
use crate::support::nats::{declare_stream_and_consumer, plain_server, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_reported_and_a_failed_one_keeps_the_service_healthy() {
    let server = plain_server().await;
    let client = server.connect().await.unwrap();
    let js = jetstream::new(client);
    declare_stream_and_consumer(&js, "events", &["events.>"], "jetpost").await;
    let url = server.url();
    let svc = Service::start_with(TestDb::sqlite().await, move |c| {
        c.publishmq.nats.servers = vec![url];
        c.publishmq.nats.accounts = vec![
            AccountConfig {
                name: "good".into(),
                credentials_file: None,
                stream: "events".into(),
                consumer: "jetpost".into(),
                tenant_id: "t1".into(),
            },
            AccountConfig {
                name: "broken".into(),
                credentials_file: None,
                stream: "no-such-stream".into(),
                consumer: "jetpost".into(),
                tenant_id: "t2".into(),
            },
        ];
    })
    .await;

    let states = || async {
        let accounts = svc
            .admin(Method::GET, "/api/v1/nats/accounts", None, StatusCode::OK)
            .await;
        accounts
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().unwrap().to_owned(),
                    a["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    wait_until("good consumes and broken fails", || async {
        states().await
            == vec![
                ("broken".to_owned(), "failed".to_owned()),
                ("good".to_owned(), "consuming".to_owned()),
            ]
    })
    .await;
    let accounts = svc
        .admin(Method::GET, "/api/v1/nats/accounts", None, StatusCode::OK)
        .await;
    let broken = &accounts[0];
    assert_eq!(broken["source"], "static");
    assert_eq!(broken["tenant_id"], "t2");
    assert_eq!(broken["stream"], "no-such-stream");
    assert!(broken["last_error"].is_string(), "{broken}");
    for key in ["messages_received", "messages_rejected", "pending"] {
        assert!(broken[key].is_u64(), "{key} in {broken}");
    }
    // One process on SQLite: ownership is shared, no account has an owner.
    assert!(broken["owner"].is_null(), "{broken}");

    let (status, health) = svc.get("/healthz", &Auth::None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "healthy");
    assert_eq!(
        health["workers"]["nats"],
        json!({"status": "healthy", "accounts": {
            "total": 2, "connecting": 0, "consuming": 1, "failed": 1, "draining": 0,
            "standby": 0}})
    );

    // An event published on the good account's stream is ingested for its tenant.
    svc.tenant("t1").await;
    svc.webhook(
        "t1",
        json!({"id": "d1", "type": "webhook", "topics": "*", "config": {"url": NOWHERE}}),
    )
    .await;
    js.publish(
        "events.orders",
        r#"{"id":"n1","tenant_id":"spoofed","topic":"order.paid","data":{"n":1}}"#.into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    wait_until("the NATS event is listed", || async {
        let (_, list) = svc.get("/api/v1/events?id=n1", &Auth::Admin).await;
        list["models"].as_array().is_some_and(|m| !m.is_empty())
    })
    .await;
    let (_, event) = svc.get("/api/v1/events/n1", &Auth::Admin).await;
    assert_eq!(event["tenant_id"], "t1");
    assert_eq!(event["data"], json!({"n": 1}));
}
