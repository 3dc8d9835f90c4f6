//! Hostile NATS payloads through the real pipeline (nats-server → source → ingest → SQLite):
//! each gets its documented outcome — terminated and counted, or stored under the account's
//! tenant — and none crashes, hangs or loops.

use std::sync::Arc;

use jetpost::source::nats::NatsSource;

use crate::support::db::TestDb;
use crate::support::nats::{operator_server, wait_until};
use crate::support::pipeline::{
    NOWHERE, account, ingest, provision, source_config, stream_messages, webhook,
};

#[tokio::test]
async fn hostile_payloads_get_their_documented_outcome() {
    let db = TestDb::sqlite().await;
    let store = db.store(None).await;
    for tenant in ["acme", "victim"] {
        webhook(&store, tenant, "all", &["*"], NOWHERE).await;
    }
    let server = operator_server(&["acme"]).await;
    let js = provision(&server, "acme").await;
    let mut config = source_config(&server, vec![account(&server, "acme", "acme")]);
    config.max_in_flight = 16;
    let source = NatsSource::start(config, Arc::new(ingest(&store, 1)));

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
        (
            "beyond-f64",
            br#"{"id":"beyond-f64","data":{"a":1e400,"s":"\ud800","b":1}}"#.to_vec(),
        ),
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
        stream_messages(&js).await == 0
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
    let beyond = store
        .get_event("acme", "beyond-f64")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        beyond.data, r#"{"a":1e400,"s":"\ud800","b":1}"#,
        "data serde_json values cannot hold is kept as is"
    );
    source.stop().await;
}
