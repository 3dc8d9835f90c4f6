//! rabbitmq destinations against the machine's RabbitMQ (127.0.0.1:5672, guest/guest): events
//! published in a tenant's NATS account arrive on a queue bound to the destination's exchange,
//! with their exact bytes and headers; a broker that goes away and comes back gets the event
//! after retries; a wrong password fails for good; changing or deleting a destination closes
//! its connection. Also the API's view of the type.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    TenantStream, attempts, destination, event, failed_delivery, field_keys, publish_event,
};
use crate::api::{Auth, Service, messages};
use crate::support::db::TestDb;
use crate::support::nats::{LocalNatsServer, PATIENCE, wait_until};
use crate::support::proxy::Proxy;

const RABBITMQ: &str = "127.0.0.1:5672";
const TENANT: &str = "t1";
const D: &str = "/api/v1/tenants/t1/destinations";

/// A channel on the machine's RabbitMQ, or a failure saying how to start it.
pub(crate) async fn rabbitmq() -> (Connection, Channel) {
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(
            &format!("amqp://guest:guest@{RABBITMQ}/%2f"),
            ConnectionProperties::default(),
        ),
    )
    .await;
    let connection = match connected {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => panic!("start RabbitMQ at {RABBITMQ} (guest/guest): {error}"),
        Err(_) => panic!("start RabbitMQ at {RABBITMQ} (guest/guest): no answer within 10 s"),
    };
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

/// A fresh topic exchange and a queue bound to it for every routing key, both named `name`
/// plus a unique suffix; returns the name.
pub(crate) async fn exchange_and_queue(channel: &Channel, name: &str) -> String {
    let name = format!("{name}-{}", uuid::Uuid::new_v4().simple());
    declare_exchange_and_queue(channel, &name).await;
    name
}

/// A topic exchange and a queue bound to it for every routing key, both named `name`.
async fn declare_exchange_and_queue(channel: &Channel, name: &str) {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            name.into(),
            name.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// A message taken from `queue`: routing key, properties and body.
pub(crate) struct Received {
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

async fn take(channel: &Channel, queue: &str) -> Option<Received> {
    let got = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()?;
    Some(Received {
        routing_key: got.delivery.routing_key.to_string(),
        properties: got.delivery.properties.clone(),
        body: got.delivery.data.clone(),
    })
}

pub(crate) async fn next_message(channel: &Channel, queue: &str) -> Received {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(received) = take(channel, queue).await {
            return received;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing arrived on queue {queue} within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header(properties: &BasicProperties, name: &str) -> String {
    let headers = properties.headers().as_ref().expect("headers");
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(value)) => value.to_string(),
        other => panic!("header {name}: {other:?}"),
    }
}

/// jetpost consuming tenant `t1`'s NATS account, retrying every second, and a JetStream
/// context to publish events with.
async fn service_with_nats() -> (Service, jetstream::Context, LocalNatsServer) {
    TenantStream::start(|c| c.retry_schedule = vec![1; 20])
        .await
        .into_parts()
}

async fn create(svc: &Service, id: &str, server_url: &str, exchange: &str, password: &str) {
    svc.admin(
        Method::POST,
        D,
        Some(&json!({
            "id": id,
            "type": "rabbitmq",
            "topics": "*",
            "config": {"server_url": server_url, "exchange": exchange},
            "credentials": {"username": "guest", "password": password},
            "delivery_metadata": {"source": "jetpost-test"},
        })),
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_nats_arrives_once_with_its_exact_bytes_and_headers() {
    let (_amqp, channel) = rabbitmq().await;
    let exchange = exchange_and_queue(&channel, "jetpost-exact").await;
    let (svc, js, _nats) = service_with_nats().await;
    create(&svc, "d1", RABBITMQ, &exchange, "guest").await;

    publish_event(
        &js,
        r#"{"id":"e1","topic":"order.paid","metadata":{"region":"eu"},"data":{"b": [1, 2],"a":"é"}}"#,
    )
    .await;
    let received = next_message(&channel, &exchange).await;
    assert_eq!(received.body, r#"{"b": [1, 2],"a":"é"}"#.as_bytes());
    assert_eq!(received.routing_key, "order.paid");
    let properties = &received.properties;
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(header(properties, "event-id"), "e1");
    assert_eq!(header(properties, "topic"), "order.paid");
    assert_eq!(header(properties, "region"), "eu");
    assert_eq!(header(properties, "source"), "jetpost-test");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&header(properties, "timestamp")).is_ok(),
        "timestamp header"
    );

    wait_until("the attempt is recorded", || async {
        !attempts(&svc, "d1").await.is_empty()
    })
    .await;
    let recorded = attempts(&svc, "d1").await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["status"], "success");
    assert_eq!(recorded[0]["code"], "OK");
    assert_eq!(
        recorded[0]["response_data"],
        json!({"exchange": exchange, "routing_key": "order.paid"})
    );
    assert!(take(&channel, &exchange).await.is_none(), "delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_away_gets_the_event_after_retries() {
    let (_amqp, channel) = rabbitmq().await;
    let exchange = exchange_and_queue(&channel, "jetpost-retry").await;
    let proxy = Proxy::start(RABBITMQ.parse::<SocketAddr>().unwrap()).await;
    let (svc, js, _nats) = service_with_nats().await;
    let via_proxy = format!("127.0.0.1:{}", proxy.port());
    create(&svc, "d1", &via_proxy, &exchange, "guest").await;

    proxy.cut();
    publish_event(&js, r#"{"id":"e1","topic":"order.paid","data":{"n":1}}"#).await;
    wait_until("a failed attempt while the broker is away", || async {
        attempts(&svc, "d1")
            .await
            .iter()
            .any(|a| a["status"] == "failed")
    })
    .await;
    proxy.restore();

    let received = next_message(&channel, &exchange).await;
    assert_eq!(received.body, br#"{"n":1}"#);
    wait_until("the delivery succeeds", || async {
        attempts(&svc, "d1").await.iter().any(|a| a["code"] == "OK")
    })
    .await;
    let recorded = attempts(&svc, "d1").await;
    let failed: Vec<&Value> = recorded
        .iter()
        .filter(|a| a["status"] == "failed")
        .collect();
    assert!(!failed.is_empty());
    for attempt in failed {
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
    let (_amqp, channel) = rabbitmq().await;
    let exchange = exchange_and_queue(&channel, "jetpost-auth").await;
    let (svc, js, _nats) = service_with_nats().await;
    create(&svc, "d1", RABBITMQ, &exchange, "not-the-password").await;

    publish_event(&js, r#"{"id":"e1","topic":"order.paid","data":{"n":1}}"#).await;
    let delivery = failed_delivery(&svc, "e1").await;
    assert_eq!(delivery.attempts, 1, "a permanent failure is not retried");
    let recorded = attempts(&svc, "d1").await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["code"], "auth_failed");
    let message = recorded[0]["response_data"]["error"].as_str().unwrap();
    assert!(
        message.contains("refused the login of user \"guest\""),
        "{message}"
    );
    assert!(message.contains("credentials.password"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_or_deleting_a_destination_closes_its_connection() {
    let (_amqp, channel) = rabbitmq().await;
    let exchange = exchange_and_queue(&channel, "jetpost-close").await;
    let proxy = Proxy::start(RABBITMQ.parse::<SocketAddr>().unwrap()).await;
    let (svc, js, _nats) = service_with_nats().await;
    let via_proxy = format!("127.0.0.1:{}", proxy.port());
    create(&svc, "d1", &via_proxy, &exchange, "guest").await;

    publish_event(&js, r#"{"id":"e1","topic":"a","data":{"n":1}}"#).await;
    next_message(&channel, &exchange).await;
    assert_eq!(proxy.live(), 1, "one connection, kept open");
    publish_event(&js, r#"{"id":"e2","topic":"a","data":{"n":2}}"#).await;
    next_message(&channel, &exchange).await;
    assert_eq!(proxy.live(), 1, "the connection is reused");

    // Pointed straight at the broker: the next attempt opens the new version and closes the
    // old one's connection.
    svc.admin(
        Method::PATCH,
        &format!("{D}/d1"),
        Some(&json!({"config": {"server_url": RABBITMQ}})),
        StatusCode::OK,
    )
    .await;
    publish_event(&js, r#"{"id":"e3","topic":"a","data":{"n":3}}"#).await;
    next_message(&channel, &exchange).await;
    wait_until("the old connection is closed", || async {
        proxy.live() == 0
    })
    .await;

    create(&svc, "d2", &via_proxy, &exchange, "guest").await;
    publish_event(&js, r#"{"id":"e4","topic":"a","data":{"n":4}}"#).await;
    // Both destinations deliver e4.
    next_message(&channel, &exchange).await;
    next_message(&channel, &exchange).await;
    wait_until("d2's connection is open", || async { proxy.live() == 1 }).await;
    svc.admin(Method::DELETE, &format!("{D}/d2"), None, StatusCode::OK)
        .await;
    wait_until("the deleted destination's connection is closed", || async {
        proxy.live() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_creates_reads_patches_and_lists_rabbitmq_destinations() {
    let svc = Service::start().await;
    svc.tenant(TENANT).await;
    let created = svc
        .admin(
            Method::POST,
            D,
            Some(&json!({
                "id": "d1",
                "type": "rabbitmq",
                "topics": ["order.paid"],
                "config": {"server_url": "mq.example.com:5672", "exchange": "events", "tls": "true"},
                "credentials": {"username": "app", "password": "s3cret-password", "extra": "x"},
            })),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["type"], "rabbitmq");
    assert_eq!(created["target"], "events -> mq.example.com:5672");
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
            Some(&json!({"config": {"exchange": "audit"}, "credentials": {"username": "ops"}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(patched["config"]["exchange"], "audit");
    assert_eq!(patched["config"]["server_url"], "mq.example.com:5672");
    assert_eq!(patched["credentials"]["username"], "ops");
    assert_eq!(patched["credentials"]["password"], "s3cr***********");
    let stored = svc
        .store()
        .await
        .get_destination(TENANT, "d1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.credentials.0,
        BTreeMap::from([
            ("password".to_owned(), "s3cret-password".to_owned()),
            ("username".to_owned(), "ops".to_owned())
        ])
    );

    let list = svc.admin(Method::GET, D, None, StatusCode::OK).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["type"], "rabbitmq");
    let listed = svc
        .admin(
            Method::GET,
            &format!("{D}?type=rabbitmq"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rabbitmq_destinations_get_a_422_naming_each_field() {
    let svc = Service::start().await;
    svc.tenant(TENANT).await;
    let (status, body) = svc
        .call(
            Method::POST,
            D,
            &Auth::Admin,
            Some(&json!({"type": "rabbitmq", "topics": "*", "config": {}, "credentials": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        messages(&body),
        [
            "config.server_url is required",
            "config.exchange is required",
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
                "type": "rabbitmq",
                "topics": "*",
                "config": {"server_url": "amqp://mq:5672", "exchange": "e", "tls": "maybe"},
                "credentials": {"username": "u", "password": "p"},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let found = messages(&body);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0], "config.tls must be \"true\" or \"false\"");
    assert!(
        found[1].starts_with("config.server_url must be host:port"),
        "{found:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_brokers_are_refused_when_blocking() {
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
            Some(&json!({
                "type": "rabbitmq",
                "topics": "*",
                "config": {"server_url": "127.0.0.1:5672", "exchange": "e"},
                "credentials": {"username": "u", "password": "p"},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let found = messages(&body);
    assert!(
        found[0].starts_with("config.server_url: 127.0.0.1 is a loopback address"),
        "{found:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rabbitmq_type_is_described_with_outposts_fields() {
    let svc = Service::start().await;
    let (status, schema) = svc
        .get("/api/v1/destination-types/rabbitmq", &Auth::Admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{schema}");
    assert_eq!(schema["type"], "rabbitmq");
    assert_eq!(schema["label"], "RabbitMQ");
    assert_eq!(
        field_keys(&schema["config_fields"]),
        ["server_url", "exchange", "tls"]
    );
    assert_eq!(
        field_keys(&schema["credential_fields"]),
        ["username", "password"]
    );
    assert_eq!(schema["credential_fields"][1]["sensitive"], true);
    let (_, all) = svc.get("/api/v1/destination-types", &Auth::Admin).await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|t| t["type"] == "rabbitmq"),
        "{all}"
    );
}

fn direct(exchange: &str, username: &str) -> jetpost::store::Destination {
    destination(
        "rabbitmq",
        &[("server_url", RABBITMQ), ("exchange", exchange)],
        &[("username", username), ("password", "guest")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_is_not_found_until_it_is_declared() {
    use jetpost::destination::{
        AttemptCode, DestinationType, OutcomeClass, rabbitmq::RabbitMqType,
    };

    let (_amqp, channel) = rabbitmq().await;
    let missing = format!("jetpost-missing-{}", uuid::Uuid::new_v4().simple());
    let publisher = RabbitMqType::new(false, Duration::from_secs(10))
        .open(&direct(&missing, "guest"))
        .unwrap();
    let outcome = publisher.publish(&event("e1")).await;
    assert_eq!(outcome.code, AttemptCode::NotFound, "{:?}", outcome.error);
    assert_eq!(outcome.class(), OutcomeClass::Retryable);
    let message = outcome.error.unwrap();
    assert!(
        message.contains(&format!("exchange {missing:?} does not exist")),
        "{message}"
    );

    // Declared meanwhile: the next attempt opens a new channel and delivers.
    declare_exchange_and_queue(&channel, &missing).await;
    let outcome = publisher.publish(&event("e2")).await;
    assert_eq!(outcome.code, AttemptCode::Ok, "{:?}", outcome.error);
    assert_eq!(next_message(&channel, &missing).await.body, br#"{"n":1}"#);
    publisher.close();
}

/// Runs `rabbitmqctl` with `args`, failing the test with how to get it when it cannot.
fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("rabbitmqctl (from rabbitmq-server, next to RabbitMQ at {RABBITMQ}): {e}")
        });
    assert!(status.success(), "rabbitmqctl {args:?}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_that_may_not_write_to_the_exchange_is_access_denied() {
    use jetpost::destination::{
        AttemptCode, DestinationType, OutcomeClass, rabbitmq::RabbitMqType,
    };

    let (_amqp, channel) = rabbitmq().await;
    let exchange = exchange_and_queue(&channel, "jetpost-denied").await;
    let user = format!("jetpost-reader-{}", uuid::Uuid::new_v4().simple());
    rabbitmqctl(&["add_user", &user, "guest"]);
    // Configure and read anything, write nothing.
    rabbitmqctl(&["set_permissions", "-p", "/", &user, ".*", "", ".*"]);

    let publisher = RabbitMqType::new(false, Duration::from_secs(10))
        .open(&direct(&exchange, &user))
        .unwrap();
    let outcome = publisher.publish(&event("e1")).await;
    publisher.close();
    rabbitmqctl(&["delete_user", &user]);
    assert_eq!(
        outcome.code,
        AttemptCode::AccessDenied,
        "{:?}",
        outcome.error
    );
    assert_eq!(outcome.class(), OutcomeClass::Permanent);
    let message = outcome.error.unwrap();
    assert!(
        message.contains(&format!(
            "user {user:?} may not publish to exchange {exchange:?}"
        )),
        "{message}"
    );
    assert!(
        take(&channel, &exchange).await.is_none(),
        "nothing published"
    );
}
