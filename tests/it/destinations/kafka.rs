//! kafka destinations against a real Kafka-protocol broker (tansu, one per test): events
//! published in a tenant's NATS account arrive as records with their exact bytes, key and
//! headers, on the partition their key picks; a broker that goes away and comes back gets the
//! event after retries; a refused login fails for good; a missing topic is retried until it
//! exists; changing or deleting a destination closes its connections. Also the API's view of
//! the type.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{TenantStream, attempts, destination, event, failed_delivery, field_keys};
use crate::api::{Auth, Service, messages};
use crate::support::db::TestDb;
use crate::support::nats::wait_until;
use crate::support::proxy::Proxy;
use crate::support::tansu::{Tansu, free_port};
use jetpost::bench::tansu;

const TENANT: &str = "t1";
const D: &str = "/api/v1/tenants/t1/destinations";

/// jetpost consuming tenant `t1`'s NATS account, retrying every second.
async fn service_with_nats() -> TenantStream {
    TenantStream::start(|c| c.retry_schedule = vec![1; 20]).await
}

/// Creates kafka destination `id` with `config`, logging in as tansu's user with
/// SCRAM-SHA-512 unless `config` says otherwise.
async fn create(svc: &Service, id: &str, config: Value) {
    create_as(svc, id, config, tansu::PASSWORD).await
}

async fn create_as(svc: &Service, id: &str, mut config: Value, password: &str) {
    if config.get("sasl_mechanism").is_none() {
        config["sasl_mechanism"] = json!("scram-sha-512");
    }
    svc.admin(
        Method::POST,
        D,
        Some(&json!({
            "id": id,
            "type": "kafka",
            "topics": "*",
            "config": config,
            "credentials": {"username": tansu::USER, "password": password},
            "delivery_metadata": {"source": "jetpost-test"},
        })),
        StatusCode::CREATED,
    )
    .await;
}

fn text(bytes: &Option<Vec<u8>>) -> String {
    String::from_utf8(bytes.clone().unwrap_or_default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_nats_arrives_once_with_its_exact_bytes_key_and_headers() {
    let kafka = Tansu::start().await;
    kafka.create_topic("orders", 3).await;
    let tenant = service_with_nats().await;
    create(
        &tenant.svc,
        "d1",
        json!({"brokers": kafka.address(), "topic": "orders"}),
    )
    .await;

    tenant
        .publish(r#"{"id":"e1","topic":"order.paid","metadata":{"region":"eu"},"data":{"b": [1, 2],"a":"é"}}"#)
        .await;
    let records = kafka.wait_for("orders", 3, 1).await;
    assert_eq!(records.len(), 1, "delivered once");
    let (partition, found) = &records[0];
    let record = &found.record;
    assert_eq!(text(&record.value), r#"{"b": [1, 2],"a":"é"}"#);
    assert_eq!(text(&record.key), "e1");
    let header = |name: &str| String::from_utf8(record.headers[name].clone()).unwrap();
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("event-id"), "e1");
    assert_eq!(header("topic"), "order.paid");
    assert_eq!(header("region"), "eu");
    assert_eq!(header("source"), "jetpost-test");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&header("timestamp")).is_ok(),
        "timestamp header"
    );

    let svc = &tenant.svc;
    wait_until("the attempt is recorded", || async {
        !attempts(svc, "d1").await.is_empty()
    })
    .await;
    let recorded = attempts(svc, "d1").await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["status"], "success");
    assert_eq!(recorded[0]["code"], "OK");
    assert_eq!(
        recorded[0]["response_data"],
        json!({"topic": "orders", "partition": partition, "offset": found.offset, "key": "e1"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_the_same_partition_key_share_a_partition() {
    let kafka = Tansu::start().await;
    kafka.create_topic("by-customer", 4).await;
    let tenant = service_with_nats().await;
    create(
        &tenant.svc,
        "d1",
        json!({
            "brokers": kafka.address(),
            "topic": "by-customer",
            "partition_key_template": "data.customer",
        }),
    )
    .await;

    for (id, customer) in [("e1", "c-1"), ("e2", "c-2"), ("e3", "c-1"), ("e4", "c-3")] {
        tenant
            .publish(&format!(
                r#"{{"id":"{id}","topic":"a","data":{{"customer":"{customer}"}}}}"#
            ))
            .await;
    }
    let records = kafka.wait_for("by-customer", 4, 4).await;
    let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for (partition, found) in &records {
        partitions
            .entry(text(&found.record.key))
            .or_default()
            .insert(*partition);
    }
    assert_eq!(
        partitions.keys().collect::<Vec<_>>(),
        ["c-1", "c-2", "c-3"],
        "the template's result is the key"
    );
    assert_eq!(partitions["c-1"].len(), 1, "one key, one partition");
    let c1 = records
        .iter()
        .filter(|(_, found)| text(&found.record.key) == "c-1")
        .count();
    assert_eq!(c1, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_away_gets_the_event_after_retries() {
    // Clients reach tansu only through the proxy: it advertises the proxy's port.
    let port = free_port();
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let kafka = Tansu::start_on(port, proxy.port()).await;
    kafka.create_topic("orders", 1).await;
    let tenant = service_with_nats().await;
    create(
        &tenant.svc,
        "d1",
        json!({"brokers": kafka.address(), "topic": "orders"}),
    )
    .await;

    proxy.cut();
    tenant
        .publish(r#"{"id":"e1","topic":"order.paid","data":{"n":1}}"#)
        .await;
    let svc = &tenant.svc;
    wait_until("a failed attempt while the broker is away", || async {
        attempts(svc, "d1")
            .await
            .iter()
            .any(|a| a["status"] == "failed")
    })
    .await;
    proxy.restore();

    let records = kafka.wait_for("orders", 1, 1).await;
    assert_eq!(text(&records[0].1.record.value), r#"{"n":1}"#);
    wait_until("the delivery succeeds", || async {
        attempts(svc, "d1").await.iter().any(|a| a["code"] == "OK")
    })
    .await;
    for attempt in attempts(svc, "d1")
        .await
        .iter()
        .filter(|a| a["status"] == "failed")
    {
        let code = attempt["code"].as_str().unwrap();
        assert!(
            [
                "connection_refused",
                "connection_reset",
                "network_error",
                "timeout"
            ]
            .contains(&code),
            "{attempt}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_for_good_with_a_readable_message() {
    let kafka = Tansu::start().await;
    kafka.create_topic("orders", 1).await;
    let tenant = service_with_nats().await;
    create_as(
        &tenant.svc,
        "d1",
        json!({"brokers": kafka.address(), "topic": "orders", "sasl_mechanism": "scram-sha-256"}),
        "not-the-password",
    )
    .await;

    tenant
        .publish(r#"{"id":"e1","topic":"order.paid","data":{"n":1}}"#)
        .await;
    let delivery = failed_delivery(&tenant.svc, "e1").await;
    assert_eq!(delivery.attempts, 1, "a permanent failure is not retried");
    let recorded = attempts(&tenant.svc, "d1").await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["code"], "auth_failed", "{recorded:?}");
    let message = recorded[0]["response_data"]["error"].as_str().unwrap();
    assert!(
        message.contains("refused the login of user \"jetpost\""),
        "{message}"
    );
    assert!(message.contains("credentials.password"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
    assert!(kafka.records("orders", 0).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_not_found_until_it_is_created() {
    use jetpost::destination::{AttemptCode, DestinationType, OutcomeClass, kafka::KafkaType};

    let kafka = Tansu::start().await;
    let publisher = KafkaType::new(false, Duration::from_secs(10))
        .open(&direct(&kafka.address(), "later"))
        .unwrap();
    let outcome = publisher.publish(&event("e1")).await;
    assert_eq!(outcome.code, AttemptCode::NotFound, "{:?}", outcome.error);
    assert_eq!(outcome.class(), OutcomeClass::Retryable);
    let message = outcome.error.unwrap();
    assert!(
        message.contains("topic \"later\" does not exist"),
        "{message}"
    );

    kafka.create_topic("later", 1).await;
    let outcome = publisher.publish(&event("e2")).await;
    assert_eq!(outcome.code, AttemptCode::Ok, "{:?}", outcome.error);
    let records = kafka.records("later", 0).await;
    assert_eq!(records.len(), 1);
    assert_eq!(text(&records[0].record.key), "e2");
    publisher.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_or_deleting_a_destination_closes_its_connections() {
    let port = free_port();
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let kafka = Tansu::start_on(port, proxy.port()).await;
    kafka.create_topic("orders", 1).await;
    kafka.create_topic("audit", 1).await;
    // Every client reaches tansu through the proxy: only jetpost's may be counted, so the test
    // reads outcomes through the API until the end.
    wait_until("the test's own clients are gone", || async {
        proxy.live() == 0
    })
    .await;
    let tenant = service_with_nats().await;
    let svc = &tenant.svc;
    create(
        svc,
        "d1",
        json!({"brokers": kafka.address(), "topic": "orders"}),
    )
    .await;
    let delivered = |event: &'static str| async move {
        wait_until("the event is delivered", || async {
            attempts(svc, "d1")
                .await
                .iter()
                .any(|a| a["event_id"] == event && a["code"] == "OK")
        })
        .await
    };

    tenant
        .publish(r#"{"id":"e1","topic":"a","data":{"n":1}}"#)
        .await;
    delivered("e1").await;
    let open = proxy.live();
    assert!(open > 0, "the client keeps its connections");
    tenant
        .publish(r#"{"id":"e2","topic":"a","data":{"n":2}}"#)
        .await;
    delivered("e2").await;
    assert_eq!(proxy.live(), open, "the connections are reused");

    // A new version: the next attempt opens a new client (as many connections) and the old
    // one's connections close.
    svc.admin(
        Method::PATCH,
        &format!("{D}/d1"),
        Some(&json!({"config": {"topic": "audit"}})),
        StatusCode::OK,
    )
    .await;
    tenant
        .publish(r#"{"id":"e3","topic":"a","data":{"n":3}}"#)
        .await;
    delivered("e3").await;
    wait_until("the old client's connections are closed", || async {
        proxy.live() == open
    })
    .await;

    svc.admin(Method::DELETE, &format!("{D}/d1"), None, StatusCode::OK)
        .await;
    wait_until(
        "the deleted destination's connections are closed",
        || async { proxy.live() == 0 },
    )
    .await;
    assert_eq!(kafka.records("orders", 0).await.len(), 2);
    assert_eq!(kafka.records("audit", 0).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_creates_reads_patches_and_lists_kafka_destinations() {
    let svc = Service::start().await;
    svc.tenant(TENANT).await;
    let created = svc
        .admin(
            Method::POST,
            D,
            Some(&json!({
                "id": "d1",
                "type": "kafka",
                "topics": ["order.paid"],
                "config": {
                    "brokers": " k1.example.com:9092 , k2.example.com:9092",
                    "topic": "events",
                    "sasl_mechanism": "scram-sha-256",
                    "tls": "on",
                },
                "credentials": {"username": "app", "password": "s3cret-password", "extra": "x"},
            })),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["type"], "kafka");
    assert_eq!(created["target"], "k1.example.com:9092 / events");
    assert_eq!(
        created["config"],
        json!({
            "brokers": "k1.example.com:9092,k2.example.com:9092",
            "topic": "events",
            "sasl_mechanism": "scram-sha-256",
            "tls": "true",
        }),
        "stored as Outpost stores it"
    );
    assert_eq!(
        created["credentials"],
        json!({"username": "app", "password": "s3cr***********"})
    );
    let got = svc
        .admin(Method::GET, &format!("{D}/d1"), None, StatusCode::OK)
        .await;
    assert_eq!(got, created);

    let patched = svc
        .admin(
            Method::PATCH,
            &format!("{D}/d1"),
            Some(&json!({"config": {"topic": "audit", "tls": ""}, "credentials": {"username": "ops"}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(patched["config"]["topic"], "audit");
    assert_eq!(patched["config"]["tls"], "false");
    assert_eq!(patched["credentials"]["username"], "ops");
    assert_eq!(patched["credentials"]["password"], "s3cr***********");

    let listed = svc
        .admin(
            Method::GET,
            &format!("{D}?type=kafka"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_kafka_destinations_get_a_422_naming_each_field() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.destinations.webhook.block_private_ips = true;
    })
    .await;
    svc.tenant(TENANT).await;
    let (status, body) = svc
        .call(
            Method::POST,
            D,
            &Auth::Admin,
            Some(&json!({"type": "kafka", "topics": "*", "config": {}, "credentials": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        messages(&body),
        [
            "config.brokers is required (host:port, comma-separated)",
            "config.topic is required",
            "config.sasl_mechanism is required (plain, scram-sha-256 or scram-sha-512)",
            "credentials.username is required",
            "credentials.password is required",
        ]
    );
    let (status, body) = svc
        .call(
            Method::POST,
            D,
            &Auth::Admin,
            Some(&json!({
                "type": "kafka",
                "topics": "*",
                "config": {
                    "brokers": "127.0.0.1:9092",
                    "topic": "a/b",
                    "sasl_mechanism": "gssapi",
                    "partition_key_template": "data.[",
                },
                "credentials": {"username": "u", "password": "p"},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let found = messages(&body);
    let fields: Vec<&str> = found
        .iter()
        .map(|m| m.split([' ', ':']).next().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "config.brokers",
            "config.topic",
            "config.sasl_mechanism",
            "config.partition_key_template"
        ],
        "{found:?}"
    );
    assert!(found[0].contains("loopback"), "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_type_is_described_with_outposts_fields() {
    let svc = Service::start().await;
    let (status, schema) = svc
        .get("/api/v1/destination-types/kafka", &Auth::Admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{schema}");
    assert_eq!(schema["label"], "Apache Kafka");
    assert_eq!(
        field_keys(&schema["config_fields"]),
        [
            "brokers",
            "topic",
            "tls",
            "partition_key_template",
            "sasl_mechanism"
        ]
    );
    assert_eq!(
        field_keys(&schema["credential_fields"]),
        ["username", "password"]
    );
    assert_eq!(
        schema["config_fields"][4]["options"][2]["value"],
        "scram-sha-512"
    );
}

fn direct(brokers: &str, topic: &str) -> jetpost::store::Destination {
    destination(
        "kafka",
        &[
            ("brokers", brokers),
            ("topic", topic),
            ("sasl_mechanism", "scram-sha-256"),
        ],
        &[("username", tansu::USER), ("password", tansu::PASSWORD)],
    )
}
