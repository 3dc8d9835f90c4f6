//! The `hookdeck` type against real local HTTP servers standing in for Hookdeck's API (token
//! verification) and its event host: the token is verified at write and names the source, an
//! event from the tenant's NATS account arrives once, signed with the token, and failures are
//! retried.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use super::TenantStream;
use crate::api::{Auth, messages};
use crate::support::nats::wait_until;
use crate::support::receiver::{Receiver, Reply};

fn token(source_id: &str) -> String {
    BASE64.encode(format!("{source_id}:sk_test_0123456789"))
}

async fn attempts(stream: &TenantStream, event_id: &str) -> Vec<Value> {
    let (status, list) = stream
        .svc
        .get(
            &format!("/api/v1/attempts?event_id={event_id}&include=response_data"),
            &Auth::Admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["models"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hookdeck_source_gets_signed_events_from_the_tenants_stream() {
    let api = Receiver::start().await;
    api.reply_with(Reply::Full {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: r#"{"name":"orders-source","url":"https://hkdk.events/src_orders"}"#.into(),
    });
    let events = Receiver::start().await;
    let (api_url, events_url) = (api.url("/"), events.url("/in"));
    let stream = TenantStream::start(move |c| {
        c.destinations.hookdeck.api_url = api_url;
        c.destinations.hookdeck.events_url = events_url;
        c.retry_schedule = vec![1];
    })
    .await;
    let svc = &stream.svc;

    // A token that is not one, and one Hookdeck refuses: 422s naming the field.
    let (status, body) = svc
        .call(
            Method::POST,
            "/api/v1/tenants/t1/destinations",
            &Auth::Admin,
            Some(&json!({"type": "hookdeck", "topics": "*",
                         "credentials": {"token": "not a token"}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        messages(&body)
            .iter()
            .any(|m| m.starts_with("credentials.token is not a Hookdeck source token")),
        "{body}"
    );
    api.script([Reply::Status(401)]);
    let (status, body) = svc
        .call(
            Method::POST,
            "/api/v1/tenants/t1/destinations",
            &Auth::Admin,
            Some(&json!({"type": "hookdeck", "topics": "*",
                         "credentials": {"token": token("src_refused")}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        messages(&body)
            .iter()
            .any(|m| m.contains("credentials.token was not accepted by Hookdeck (status 401)")),
        "{body}"
    );

    // Accepted: verified with the token, and the source is named in the config and target.
    let token = token("src_orders");
    let (status, created) = svc
        .call(
            Method::POST,
            "/api/v1/tenants/t1/destinations",
            &Auth::Admin,
            Some(
                &json!({"id": "hd", "type": "hookdeck", "topics": ["order.paid"],
                         "credentials": {"token": token},
                         "delivery_metadata": {"region": "eu"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["config"],
        json!({"source_name": "orders-source", "source_id": "src_orders"})
    );
    assert_eq!(created["target"], "orders-source");
    assert_ne!(
        created["credentials"]["token"], token,
        "the token is masked"
    );
    let verified = api.requests();
    let verify = verified.last().unwrap();
    assert_eq!(verify.path, "/2025-01-01/sources/src_orders/managed/verify");
    assert_eq!(
        verify.header("x-hookdeck-source-token"),
        Some(token.as_str())
    );
    let (status, listed) = svc
        .get("/api/v1/destination-types/hookdeck", &Auth::Admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["credential_fields"][0]["key"], "token");

    // An event from the tenant's stream: once, data as the body, signed with the token.
    events.script([Reply::Status(503)]);
    stream
        .publish(
            r#"{"id":"e1","topic":"order.paid","metadata":{"source":"shop"},"data":{"order": 42}}"#,
        )
        .await;
    let arrived = events.wait_for(2, Duration::from_secs(60)).await;
    let request = &arrived[1];
    assert_eq!(request.path, "/in/src_orders");
    assert_eq!(&request.body[..], br#"{"order": 42}"#);
    assert_eq!(request.header("content-type"), Some("application/json"));
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(&request.body);
    let expected = format!("v0={}", BASE64.encode(mac.finalize().into_bytes()));
    assert_eq!(
        request.header("x-hookdeck-signature"),
        Some(expected.as_str())
    );
    assert_eq!(request.header("x-outpost-event-id"), Some("e1"));
    assert_eq!(request.header("x-outpost-topic"), Some("order.paid"));
    assert_eq!(request.header("x-outpost-source"), Some("shop"));
    assert_eq!(request.header("x-outpost-region"), Some("eu"));
    assert!(request.header("x-outpost-timestamp").is_some());

    // The 503 was retried; both attempts are recorded with the destination's type.
    wait_until("two attempts are recorded", || async {
        attempts(&stream, "e1").await.len() == 2
    })
    .await;
    let recorded = attempts(&stream, "e1").await;
    let codes: Vec<&str> = recorded
        .iter()
        .map(|a| a["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["200", "503"], "newest first");
    assert!(recorded.iter().all(|a| a["destination_type"] == "hookdeck"));
    assert_eq!(recorded[0]["response_data"]["status"], 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events.requests().len(), 2, "nothing more after the success");

    // A PATCH that keeps the token does not ask Hookdeck again.
    let asked = api.requests().len();
    let (status, patched) = svc
        .call(
            Method::PATCH,
            "/api/v1/tenants/t1/destinations/hd",
            &Auth::Admin,
            Some(&json!({"topics": "*"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["config"]["source_id"], "src_orders");
    assert_eq!(api.requests().len(), asked);
}
