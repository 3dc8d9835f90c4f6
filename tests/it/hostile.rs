//! Hostile NATS payloads through the real pipeline (nats-server → source → ingest → SQLite):
//! each gets its documented outcome — terminated and counted, or stored under the account's
//! tenant — and none crashes, hangs or loops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use jetpost::event::TopicRules;
use jetpost::ingest::{Ingest, IngestOptions};
use jetpost::source::nats::topology::{self, Declaration};
use jetpost::source::nats::{AccountSpec, NatsSource, NatsSourceConfig, Origin, TenantRule};
use jetpost::store::{Credentials, NewDestination};

use crate::support::db::TestDb;
use crate::support::nats::{connect_as, operator_server, wait_until};

#[tokio::test]
async fn hostile_payloads_get_their_documented_outcome() {
    let db = TestDb::sqlite().await;
    let store = db.store(None).await;
    for tenant in ["acme", "victim"] {
        store.upsert_tenant(tenant, None).await.unwrap();
        store
            .create_destination(&NewDestination {
                tenant_id: tenant.into(),
                id: "all".into(),
                kind: "webhook".into(),
                topics: vec!["*".into()],
                filter: None,
                config: BTreeMap::from([("url".into(), "http://127.0.0.1:9/".into())]),
                credentials: Credentials::default(),
                delivery_metadata: None,
                metadata: None,
            })
            .await
            .unwrap();
    }
    let server = operator_server(&["acme"]).await;
    let js = jetstream::new(connect_as(&server, "acme").await);
    let declaration = Declaration {
        stream: "EVENTS".into(),
        subjects: vec!["events.>".into()],
        consumer: "jetpost".into(),
        max_deliver: None,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 4096,
    };
    topology::declare(&js, &declaration).await.unwrap();
    let ingest = Arc::new(Ingest::new(
        store.clone(),
        IngestOptions {
            topics: TopicRules::default(),
            committers: 1,
            max_batch: 64,
        },
    ));
    let spec = AccountSpec {
        name: "acme".into(),
        origin: Origin::Static,
        tenant: TenantRule::Account("acme".into()),
        stream: "EVENTS".into(),
        consumer: "jetpost".into(),
        credentials_file: Some(server.creds_path("acme").unwrap()),
        defined_at: "test".into(),
        fingerprint: [0; 32],
    }
    .fingerprinted(None);
    let source = NatsSource::start(
        NatsSourceConfig {
            servers: vec![server.url()],
            accounts: vec![spec],
            accounts_dir: None,
            max_in_flight: 16,
            drain_timeout: Duration::from_secs(5),
            resync_interval: Duration::from_secs(1),
        },
        ingest,
    );

    let deep = format!(
        r#"{{"id":"deep","data":{}1{}}}"#,
        r#"{"a":"#.repeat(10_000),
        "}".repeat(10_000)
    );
    let big = format!(
        r#"{{"id":"big","data":{{"blob":"{}"}}}}"#,
        "x".repeat(900_000)
    );
    let rejected: Vec<Vec<u8>> = vec![
        b"null".to_vec(),
        b"[1,2,3]".to_vec(),
        b"\"a string\"".to_vec(),
        b"".to_vec(),
        b"{\"data\":{}".to_vec(),
        vec![b'{', 0xff, 0xfe, b'}'],
        br#"{"id":"dup-data","data":{},"data":{"x":1}}"#.to_vec(),
        br#"{"id":"no-data"}"#.to_vec(),
        br#"{"id":"array-data","data":[1]}"#.to_vec(),
        br#"{"id":"bad-meta","data":{},"metadata":{"n":1}}"#.to_vec(),
        br#"{"id":"bad-time","data":{},"time":"yesterday"}"#.to_vec(),
        deep.into_bytes(),
    ];
    let stored: Vec<(&str, Vec<u8>)> = vec![
        (
            "spoof-case",
            br#"{"id":"spoof-case","Tenant_ID":"victim","TENANT_ID":"victim","data":{}}"#.to_vec(),
        ),
        (
            "spoof-twice",
            br#"{"id":"spoof-twice","tenant_id":"victim","tenant_id":"victim","data":{}}"#.to_vec(),
        ),
        (
            "spoof-escaped",
            br#"{"id":"spoof-escaped","tenant\u005fid":"victim","data":{}}"#.to_vec(),
        ),
        (
            "nested-tenant",
            br#"{"id":"nested-tenant","data":{"tenant_id":"victim"}}"#.to_vec(),
        ),
        ("big", big.into_bytes()),
    ];
    for body in &rejected {
        js.publish("events.hostile", body.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    for (_, body) in &stored {
        js.publish("events.hostile", body.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    wait_until("every hostile message settled", || async {
        js.get_stream("EVENTS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
            == 0
    })
    .await;
    let status = source.status().get("acme").unwrap();
    assert_eq!(
        status.messages_rejected,
        rejected.len() as u64,
        "each invalid payload terminated once"
    );
    let consumer = js
        .get_stream("EVENTS")
        .await
        .unwrap()
        .consumer_info("jetpost")
        .await
        .unwrap();
    assert_eq!(consumer.num_redelivered, 0, "nothing loops");
    for (id, _) in &stored {
        let event = store.get_event("acme", id).await.unwrap();
        assert!(event.is_some(), "{id} stored under the account's tenant");
        assert!(
            store.get_event("victim", id).await.unwrap().is_none(),
            "{id} never reaches another tenant"
        );
    }
    let nested = store
        .get_event("acme", "nested-tenant")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        nested.data, r#"{"tenant_id":"victim"}"#,
        "data is the customer's, kept as is"
    );
    source.stop().await;
}
