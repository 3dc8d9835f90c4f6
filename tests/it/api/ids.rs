//! Hostile ids, topics, metadata and headers over the API: whatever would break a header, a URL
//! path or a log line is refused with a 422 naming the field where it enters (publish, tenant
//! upsert, destination writes), the bounds on sizes hold, and what is accepted is delivered.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, Service, assert_error, messages};
use crate::support::db::TestDb;
use crate::support::receiver::Receiver;

const D: &str = "/api/v1/tenants/t1/destinations";

/// Asserts a 422 whose first message starts with `expected`.
fn assert_refused(status: StatusCode, json: &Value, expected: &str) {
    assert_error(status, json, StatusCode::UNPROCESSABLE_ENTITY);
    let got = messages(json);
    assert!(
        got.first().is_some_and(|m| m.starts_with(expected)),
        "{got:?} should start with {expected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_what_cannot_be_a_header_and_delivers_the_rest() {
    let svc = Service::start().await;
    let receiver = Receiver::start().await;
    svc.tenant("t1").await;
    svc.webhook(
        "t1",
        json!({"id": "d1", "type": "webhook", "topics": "*",
               "config": {"url": receiver.url("/hook")}}),
    )
    .await;

    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases = [
        (
            json!({"id": "evt\r\nINFO forged", "tenant_id": "t1", "data": {}}),
            "id: has '\\r' at character 4; ids use only letters A-Z a-z, digits and - _ . : @ + = ~",
        ),
        (
            json!({"id": "x".repeat(256), "tenant_id": "t1", "data": {}}),
            "id: is 256 characters long; at most 255 are allowed",
        ),
        (
            json!({"tenant_id": "t 1", "data": {}}),
            "tenant_id: has ' ' at character 2",
        ),
        (
            json!({"tenant_id": "t1", "destination_id": "d/1", "data": {}}),
            "destination_id: has '/' at character 2",
        ),
        (
            json!({"tenant_id": "t1", "topic": "order paid", "data": {}}),
            "topic: has ' ' at character 6; topics use only visible ASCII characters",
        ),
        (
            json!({"tenant_id": "t1", "data": {}, "metadata": {"region": "eu\r\nx-forged: 1"}}),
            "metadata.region: has '\\r' at character 3; metadata values are header values",
        ),
        (
            json!({"tenant_id": "t1", "data": {}, "metadata": {"bad key": "v"}}),
            "metadata: key \"bad key\": has ' ' at character 4",
        ),
        (
            json!({"tenant_id": "t1", "data": {}, "metadata": many}),
            "metadata: has 65 entries; at most 64 are allowed",
        ),
        (
            json!({"tenant_id": "t1", "data": {}, "metadata": {"k": "v".repeat(8192)}}),
            "metadata: has 8193 bytes of keys and values; at most 8192 are allowed",
        ),
    ];
    for (event, expected) in &cases {
        let (status, json) = svc
            .call(Method::POST, "/api/v1/publish", &Auth::Admin, Some(event))
            .await;
        assert_refused(status, &json, expected);
    }
    // A tenant token's publish goes through the same checks after its tenant is stamped.
    let tenant = svc.token("t1").await;
    let (status, json) = svc
        .call(
            Method::POST,
            "/api/v1/publish",
            &tenant,
            Some(&json!({"id": "a\nb", "data": {}})),
        )
        .await;
    assert_refused(status, &json, "id: has '\\n' at character 2");
    assert!(
        svc.store()
            .await
            .get_event("t1", "evt\r\nINFO forged")
            .await
            .unwrap()
            .is_none(),
        "nothing refused was stored"
    );

    // What is accepted goes out as the headers it was checked for.
    let accepted = svc
        .publish(json!({
            "id": "user@example.com:42", "tenant_id": "t1", "topic": "order/paid#1",
            "metadata": {"X-Trace_ID": "a b\tc é"}, "data": {"n": 1}
        }))
        .await;
    assert_eq!(accepted["destination_ids"], json!(["d1"]));
    let requests = receiver.wait_for(1, Duration::from_secs(60)).await;
    let request = &requests[0];
    assert_eq!(
        request.header("x-outpost-event-id"),
        Some("user@example.com:42")
    );
    assert_eq!(request.header("x-outpost-topic"), Some("order/paid#1"));
    assert_eq!(
        request
            .headers
            .get("x-outpost-x-trace_id")
            .map(|v| v.as_bytes()),
        Some("a b\tc é".as_bytes()),
        "metadata sent as a header"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_ids_are_checked_where_tenants_are_created() {
    let svc = Service::start().await;
    for (path, expected) in [
        ("acme%0D%0Aco", "tenant_id: has '\\r' at character 5"),
        ("acme%20co", "tenant_id: has ' ' at character 5"),
        ("acme%2Fco", "tenant_id: has '/' at character 5"),
        ("caf%C3%A9", "tenant_id: has 'é' at character 4"),
    ] {
        let (status, json) = svc
            .call(
                Method::PUT,
                &format!("/api/v1/tenants/{path}"),
                &Auth::Admin,
                None,
            )
            .await;
        assert_refused(status, &json, expected);
        // Other routes look the id up as it is: such a tenant cannot exist (404).
        let (status, json) = svc
            .get(&format!("/api/v1/tenants/{path}"), &Auth::Admin)
            .await;
        assert_error(status, &json, StatusCode::NOT_FOUND);
    }
    let long = "t".repeat(256);
    let (status, json) = svc
        .call(
            Method::PUT,
            &format!("/api/v1/tenants/{long}"),
            &Auth::Admin,
            None,
        )
        .await;
    assert_refused(status, &json, "tenant_id: is 256 characters long");
    let created = svc.tenant("user@example.com").await;
    assert_eq!(created["id"], "user@example.com");
    svc.tenant(&"t".repeat(255)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_writes_refuse_bad_ids_topics_headers_and_oversized_parts() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.topics_allow_wildcards = true;
        c.destinations.webhook.header_prefix = "X-Acme-".into();
    })
    .await;
    svc.tenant("t1").await;
    let base = |extra: Value| {
        let mut body = json!({"type": "webhook", "topics": "*",
                              "config": {"url": "https://example.com/hook"}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let topics: Vec<String> = (0..257).map(|i| format!("t{i}")).collect();
    let ids: Vec<String> = (0..4000).map(|i| format!("customer-{i:08}")).collect();
    let cases = [
        (json!({"id": "d 1"}), "id: has ' ' at character 2"),
        (json!({"id": "d\n1"}), "id: has '\\n' at character 2"),
        (json!({"id": "d".repeat(256)}), "id: is 256 characters long"),
        (json!({"id": ".."}), "id: must not be \".\" or \"..\""),
        (
            json!({"topics": ["ok", "a b"]}),
            "topics[1] has ' ' at character 2",
        ),
        (
            json!({"topics": topics}),
            "topics lists 257 topics; at most 256 are allowed",
        ),
        (
            json!({"filter": {"data": {"customer": {"$in": ids}}}}),
            "filter is ",
        ),
        (
            json!({"delivery_metadata": {"app": "shop\r\nx-forged: 1"}}),
            "delivery_metadata.app: has '\\r' at character 5",
        ),
        (
            json!({"delivery_metadata": {"a:b": "v"}}),
            "delivery_metadata: key \"a:b\": has ':'",
        ),
    ];
    for (extra, expected) in &cases {
        let body = base(extra.clone());
        let (status, json) = svc.call(Method::POST, D, &Auth::Admin, Some(&body)).await;
        assert_refused(status, &json, expected);
    }

    // Every header jetpost sets, in either mode with the configured prefix, is refused as a
    // custom header, naming it; other names are fine.
    for name in [
        "x-acme-signature",
        "X-Acme-Event-Id",
        "x-acme-timestamp",
        "x-acme-topic",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "Content-Length",
    ] {
        let headers = format!(r#"{{"{name}":"v"}}"#);
        let body = base(json!({"config": {"url": "https://example.com/hook",
                                          "custom_headers": headers}}));
        let (status, json) = svc.call(Method::POST, D, &Auth::Admin, Some(&body)).await;
        assert_refused(
            status,
            &json,
            &format!("config.custom_headers.{name}: jetpost sets this header itself"),
        );
    }
    let created = svc
        .webhook(
            "t1",
            base(json!({
                "id": "user@example.com:hooks",
                "topics": ["order.*", "a/b#c"],
                "delivery_metadata": {"app": "shop"},
                "config": {"url": "https://example.com/hook",
                           "custom_headers": {"x-outpost-signature": "ok", "x-api-key": "k"}}
            })),
        )
        .await;
    assert_eq!(created["id"], "user@example.com:hooks");

    // PATCH checks what it changes, including the merged delivery metadata.
    let path = format!("{D}/user@example.com:hooks");
    for (patch, expected) in [
        (
            json!({"delivery_metadata": {"k": "v\u{7f}"}}),
            "delivery_metadata.k: has '\\u{7f}'",
        ),
        (
            json!({"config": {"custom_headers": {"X-Acme-Signature": "forged"}}}),
            "config.custom_headers.X-Acme-Signature: jetpost sets this header itself",
        ),
        (json!({"topics": ["a\tb"]}), "topics[0] has '\\t'"),
    ] {
        let (status, json) = svc
            .call(Method::PATCH, &path, &Auth::Admin, Some(&patch))
            .await;
        assert_refused(status, &json, expected);
    }
    let many: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (status, json) = svc
        .call(
            Method::PATCH,
            &path,
            &Auth::Admin,
            Some(&json!({ "delivery_metadata": many })),
        )
        .await;
    assert_refused(
        status,
        &json,
        "delivery_metadata: has 65 entries; at most 64 are allowed",
    );
    let (_, kept) = svc.get(&path, &Auth::Admin).await;
    assert_eq!(kept["delivery_metadata"], json!({"app": "shop"}));
}
