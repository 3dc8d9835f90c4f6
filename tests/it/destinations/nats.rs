//! nats destinations against real nats-servers: events ingested from a tenant's account arrive
//! on a subscriber in the destination's account with their exact bytes and headers; with
//! JetStream they land in a stream once, even when published again as a retry after a lost
//! ack would; wrong credentials fail for good; a server that goes away and comes back gets the
//! event after retries; changing or deleting the destination closes its client.

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use jetpost::destination::{AttemptCode, DestinationType, nats::NatsType};
use jetpost::store::Destination;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{TenantStream, attempts, destination, event, failed_delivery, publish_event};
use crate::api::{Auth, Service, messages};
use crate::support::nats::{
    LocalNatsServer, PATIENCE, connection_names, operator_server, options, plain_server, wait_until,
};

const TENANT: &str = "t1";
const D: &str = "/api/v1/tenants/t1/destinations";

/// jetpost consuming tenant `t1`'s events from a plain server of its own, retrying every
/// second; and a JetStream context to publish those events with.
async fn service() -> (Service, jetstream::Context, LocalNatsServer) {
    TenantStream::start(|c| c.retry_schedule = vec![1; 20])
        .await
        .into_parts()
}

/// An admin call whose answer is not checked against Outpost's contract, which has no `nats`
/// type (its destination schemas are a closed `oneOf` of Outpost's types).
async fn unchecked(
    svc: &Service,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = crate::support::http_client()
        .request(method, svc.url(path))
        .bearer_auth(crate::api::API_KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn create(svc: &Service, id: &str, config: Value, credentials: Value) {
    let (status, body) = unchecked(
        svc,
        Method::POST,
        D,
        Some(json!({
            "id": id,
            "type": "nats",
            "topics": "*",
            "config": config,
            "credentials": credentials,
            "delivery_metadata": {"source": "jetpost-test"},
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// The clients named `jetpost t1/<destination>` connected to `server` (its `/connz`).
async fn jetpost_clients(server: &LocalNatsServer, destination: &str) -> usize {
    let monitoring = server.monitoring_url().expect("monitoring on");
    let name = format!("jetpost {TENANT}/{destination}");
    connection_names(&monitoring)
        .await
        .iter()
        .filter(|n| **n == name)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_arrives_once_in_the_destination_account_with_its_bytes_and_headers() {
    let target = operator_server(&["dest", "other"]).await;
    let creds = std::fs::read_to_string(target.creds_path("dest").unwrap()).unwrap();
    let subscriber = target.connect_as("dest").await.unwrap();
    let mut deliveries = subscriber.subscribe("deliveries.>").await.unwrap();
    subscriber.flush().await.unwrap();
    let (svc, js, _source) = service().await;
    create(
        &svc,
        "d1",
        json!({"servers": target.url(), "subject": "deliveries.{topic}"}),
        json!({"creds": creds}),
    )
    .await;

    publish_event(
        &js,
        r#"{"id":"e1","topic":"order.paid","metadata":{"region":"eu"},"data":{"b": [1, 2],"a":"é"}}"#,
    )
    .await;
    let message = tokio::time::timeout(PATIENCE, deliveries.next())
        .await
        .expect("a message within PATIENCE")
        .unwrap();
    assert_eq!(message.subject.as_str(), "deliveries.order.paid");
    assert_eq!(&message.payload[..], r#"{"b": [1, 2],"a":"é"}"#.as_bytes());
    let headers = message.headers.expect("headers");
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header("Nats-Msg-Id").as_deref(), Some("e1"));
    assert_eq!(header("event-id").as_deref(), Some("e1"));
    assert_eq!(header("topic").as_deref(), Some("order.paid"));
    assert_eq!(header("region").as_deref(), Some("eu"));
    assert_eq!(header("source").as_deref(), Some("jetpost-test"));
    assert_eq!(header("Content-Type").as_deref(), Some("application/json"));
    assert!(chrono::DateTime::parse_from_rfc3339(&header("timestamp").unwrap()).is_ok());

    wait_until("the attempt is recorded", || async {
        !attempts(&svc, "d1").await.is_empty()
    })
    .await;
    let recorded = attempts(&svc, "d1").await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["code"], "OK");
    assert_eq!(
        recorded[0]["response_data"],
        json!({"subject": "deliveries.order.paid"})
    );
    // Nothing else arrives: the other account saw nothing, and no second copy follows the
    // recorded attempt.
    subscriber.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), deliveries.next())
            .await
            .is_err(),
        "delivered once"
    );
}

fn direct(config: &[(&str, &str)], credentials: &[(&str, &str)]) -> Destination {
    destination("nats", config, credentials)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jetstream_a_retried_event_is_stored_once() {
    let target = plain_server().await;
    let js = jetstream::new(target.connect().await.unwrap());
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "DELIVERIES".into(),
            subjects: vec!["deliveries.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let url = target.url();
    let publisher = NatsType::new(false, Duration::from_secs(10))
        .open(&direct(
            &[
                ("servers", &url),
                ("subject", "deliveries.{topic}"),
                ("jetstream", "true"),
            ],
            &[],
        ))
        .unwrap();

    let first = publisher.publish(&event("e1")).await;
    assert_eq!(first.code, AttemptCode::Ok, "{:?}", first.error);
    assert_eq!(first.response_data["stream"], "DELIVERIES");
    assert_eq!(first.response_data["duplicate"], false);
    // The same event again, as a retry after an ack that never came back would send it.
    let retried = publisher.publish(&event("e1")).await;
    assert_eq!(retried.code, AttemptCode::Ok, "{:?}", retried.error);
    assert_eq!(retried.response_data["duplicate"], true);
    assert_eq!(
        retried.response_data["sequence"],
        first.response_data["sequence"]
    );
    let info = js
        .get_stream("DELIVERIES")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.state.messages, 1);
    let stored = stream.get_raw_message(1).await.unwrap();
    assert_eq!(&stored.payload[..], br#"{"n":1}"#);
    assert_eq!(
        stored.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("e1")
    );

    // A subject no stream captures is not_found (retried), not OK.
    let uncaptured = NatsType::new(false, Duration::from_secs(10))
        .open(&direct(
            &[
                ("servers", &url),
                ("subject", "elsewhere"),
                ("jetstream", "true"),
            ],
            &[],
        ))
        .unwrap();
    let missing = uncaptured.publish(&event("e2")).await;
    assert_eq!(missing.code, AttemptCode::NotFound, "{:?}", missing.error);
    publisher.close();
    uncaptured.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_for_good() {
    let target = operator_server(&["dest"]).await;
    let (svc, js, _source) = service().await;
    create(
        &svc,
        "d1",
        json!({"servers": target.url(), "subject": "deliveries"}),
        json!({"username": "nobody", "password": "wrong-password"}),
    )
    .await;
    publish_event(&js, r#"{"id":"e1","topic":"order.paid","data":{"n":1}}"#).await;
    let delivery = failed_delivery(&svc, "e1").await;
    assert_eq!(delivery.attempts, 1, "a permanent failure is not retried");
    let recorded = attempts(&svc, "d1").await;
    assert_eq!(recorded[0]["code"], "auth_failed");
    let message = recorded[0]["response_data"]["error"].as_str().unwrap();
    assert!(message.contains("refused the login"), "{message}");
    assert!(!message.contains("wrong-password"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_gets_the_event_after_retries() {
    let target = plain_server().await;
    let js = jetstream::new(target.connect().await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: "DELIVERIES".into(),
        subjects: vec!["deliveries".into()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    let (svc, events, _source) = service().await;
    create(
        &svc,
        "d1",
        json!({"servers": target.url(), "subject": "deliveries", "jetstream": "true"}),
        json!({}),
    )
    .await;

    target.stop().await.unwrap();
    publish_event(
        &events,
        r#"{"id":"e1","topic":"order.paid","data":{"n":1}}"#,
    )
    .await;
    wait_until("a failed attempt while the server is away", || async {
        attempts(&svc, "d1")
            .await
            .iter()
            .any(|a| a["status"] == "failed")
    })
    .await;
    target.start().await.unwrap();
    wait_until("the delivery succeeds", || async {
        attempts(&svc, "d1").await.iter().any(|a| a["code"] == "OK")
    })
    .await;
    let js = jetstream::new(target.connect().await.unwrap());
    let info = js
        .get_stream("DELIVERIES")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.state.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_or_deleting_a_destination_closes_its_client() {
    let mut server_options = options().await;
    server_options.monitoring = true;
    let target = LocalNatsServer::start_plain(server_options).await.unwrap();
    let (svc, js, _source) = service().await;
    let config = json!({"servers": target.url(), "subject": "deliveries"});
    create(&svc, "d1", config.clone(), json!({})).await;

    publish_event(&js, r#"{"id":"e1","topic":"a","data":{"n":1}}"#).await;
    wait_until("d1 delivers", || async {
        !attempts(&svc, "d1").await.is_empty()
    })
    .await;
    assert_eq!(jetpost_clients(&target, "d1").await, 1);

    let (status, body) = unchecked(
        &svc,
        Method::PATCH,
        &format!("{D}/d1"),
        Some(json!({"config": {"subject": "deliveries.v2"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    publish_event(&js, r#"{"id":"e2","topic":"a","data":{"n":2}}"#).await;
    wait_until("d1 delivers again", || async {
        attempts(&svc, "d1").await.len() == 2
    })
    .await;
    wait_until("only the new version's client is connected", || async {
        jetpost_clients(&target, "d1").await == 1
    })
    .await;

    let (status, body) = unchecked(&svc, Method::DELETE, &format!("{D}/d1"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until("the deleted destination's client is closed", || async {
        jetpost_clients(&target, "d1").await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_checks_and_describes_nats_destinations() {
    let svc = Service::start().await;
    svc.tenant(TENANT).await;
    let (status, body) = unchecked(
        &svc,
        Method::POST,
        D,
        Some(json!({
            "type": "nats",
            "topics": "*",
            "config": {"subject": "a.*"},
            "credentials": {"username": "u"},
        })),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let found = messages(&body);
    assert_eq!(found[0], "config.servers is required");
    assert!(
        found[1].starts_with("config.subject must be a NATS subject"),
        "{found:?}"
    );
    assert_eq!(
        found[2],
        "credentials.password is required with credentials.username"
    );

    let (status, created) = unchecked(
        &svc,
        Method::POST,
        D,
        Some(json!({
            "id": "d1",
            "type": "nats",
            "topics": "*",
            "config": {"servers": "nats://n.example.com:4222", "subject": "ev.{topic}"},
            "credentials": {"token": "a-long-secret-token"},
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["target"], "ev.{topic} -> nats://n.example.com:4222");
    assert_eq!(
        created["credentials"],
        json!({"token": "a-lo***************"})
    );

    let (status, schema) = svc
        .get("/api/v1/destination-types/nats", &Auth::Admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{schema}");
    let keys: Vec<&str> = schema["config_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["servers", "subject", "jetstream"]);
}
