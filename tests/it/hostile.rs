//! Hostile NATS payloads through the real pipeline (nats-server → source → ingest → SQLite):
//! each gets its documented outcome — terminated and counted, or stored under the account's
//! tenant — and none crashes, hangs or loops. Hostile values that reach the logs of a real
//! `jetpost serve` never forge a line, in either log format.

use std::sync::Arc;

use jetpost::source::nats::NatsSource;

use crate::support::db::TestDb;
use crate::support::nats::{operator_server, wait_until};
use crate::support::pipeline::{
    NOWHERE, account, ingest, install_account, provision, publish, source_config, stream_messages,
    webhook,
};
use crate::support::serve::Serve;

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

#[tokio::test]
async fn ids_topics_and_metadata_that_break_headers_are_terminated() {
    let db = TestDb::sqlite().await;
    let store = db.store(None).await;
    webhook(&store, "acme", "all", &["*"], NOWHERE).await;
    let server = operator_server(&["acme"]).await;
    let js = provision(&server, "acme").await;
    let config = source_config(&server, vec![account(&server, "acme", "acme")]);
    let source = NatsSource::start(config, Arc::new(ingest(&store, 1)));

    let rejected: [&[u8]; 6] = [
        br#"{"id":"evt\r\nINFO forged","data":{}}"#,
        br#"{"id":"a b","data":{}}"#,
        br#"{"id":"t1","topic":"order paid","data":{}}"#,
        br#"{"id":"d1","destination_id":"d/1","data":{}}"#,
        br#"{"id":"m1","data":{},"metadata":{"region":"eu\r\nx-forged: 1"}}"#,
        br#"{"id":"m2","data":{},"metadata":{"bad key":"v"}}"#,
    ];
    for body in rejected {
        publish(&js, "events.hostile", body.to_vec()).await;
    }
    // Without an `id` in the body the Nats-Msg-Id header names the event: it must be a valid
    // id as well, or the event could never be delivered.
    for msg_id in ["order 42", "order-42"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        js.publish_with_headers("events.hostile", headers, r#"{"data":{}}"#.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    wait_until("every message settled", || async {
        stream_messages(&js).await == 0
    })
    .await;
    let status = source.status().get("acme").unwrap();
    assert_eq!(status.messages_rejected, rejected.len() as u64 + 1);
    assert!(store.get_event("acme", "order-42").await.unwrap().is_some());
    for id in ["a b", "t1", "d1", "m1", "m2", "order 42"] {
        assert!(store.get_event("acme", id).await.unwrap().is_none(), "{id}");
    }
    source.stop().await;
}

/// Messages whose rejection reason quotes a hostile key raw (a duplicated member, a mistyped
/// metadata entry): the reason is logged, and before logs were escaped its CR/LF started a
/// forged line. Checked on a real `jetpost serve`'s stderr in both formats.
#[tokio::test]
async fn hostile_values_never_forge_a_log_line() {
    let server = operator_server(&["acme"]).await;
    let js = provision(&server, "acme").await;
    let accounts = tempfile::tempdir().unwrap();
    install_account(accounts.path(), &server, "acme");
    const FORGED: &str = r#"\r\n2026-01-01T00:00:00.000000Z  INFO jetpost: FORGED\u001b[2J"#;
    let hostile = [
        format!(r#"{{"data":{{}},"k{FORGED}":1,"k{FORGED}":2}}"#),
        format!(r#"{{"data":{{}},"metadata":{{"m{FORGED}":1}}}}"#),
    ];

    for format in ["text", "json"] {
        let db = TestDb::sqlite().await;
        let env = [
            ("API_KEY", "test"),
            ("DATABASE_URL", db.url()),
            ("LOG_FORMAT", format),
            ("PUBLISH_NATS_SERVERS", &server.url()),
            (
                "PUBLISH_NATS_ACCOUNTS_DIR",
                accounts.path().to_str().unwrap(),
            ),
        ];
        let mut serve = Serve::start(&env).await;
        for body in &hostile {
            publish(&js, "events.hostile", body.clone()).await;
        }
        wait_until("both rejections logged", || async {
            serve.logs().matches("FORGED").count() >= hostile.len()
        })
        .await;
        serve.kill().await;
        let logs = serve.logs();

        assert!(
            !logs.contains('\r') && !logs.contains('\u{1b}'),
            "{format}: raw control characters in the logs: {logs:?}"
        );
        for line in logs.lines().filter(|l| l.contains("FORGED")) {
            match format {
                "text" => {
                    assert!(
                        line.contains("rejected message terminated"),
                        "text: a forged line: {line:?}\n{logs}"
                    );
                    assert!(
                        line.contains(r"\r\n2026-01-01T00:00:00.000000Z  INFO jetpost: FORGED")
                    );
                }
                _ => {
                    let event: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("json: not one JSON line ({e}): {line:?}"));
                    assert_eq!(event["message"], "rejected message terminated", "{line}");
                    let reason = event["reason"].as_str().unwrap();
                    assert!(
                        reason.contains("\r\n2026-01-01T00:00:00.000000Z  INFO jetpost: FORGED"),
                        "the value is kept exactly: {reason:?}"
                    );
                }
            }
        }
    }
}
