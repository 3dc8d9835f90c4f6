//! Error classes across routes: malformed bodies, missing fields, unknown ids and routes,
//! oversized bodies, all in Outpost's `{status, message, data}` shape.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Auth, Service, assert_error, messages};
use crate::support::db::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_and_missing_fields() {
    let svc = Service::start().await;
    svc.tenant("t1").await;
    for (method, path) in [
        (Method::POST, "/api/v1/tenants/t1/destinations"),
        (Method::PUT, "/api/v1/tenants/t1"),
        (Method::POST, "/api/v1/retry"),
        (Method::POST, "/api/v1/publish"),
    ] {
        let (status, json) = svc
            .call_raw(method.clone(), path, &Auth::Admin, b"{\"type\": ".to_vec())
            .await;
        assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(json["message"], "invalid JSON", "{method} {path}");
        let (status, json) = svc
            .call_raw(method.clone(), path, &Auth::Admin, b"[1, 2]".to_vec())
            .await;
        assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let (status, json) = svc
        .call(
            Method::POST,
            "/api/v1/retry",
            &Auth::Admin,
            Some(&json!({})),
        )
        .await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        messages(&json),
        vec!["event_id is required", "destination_id is required"]
    );
    let (status, json) = svc
        .call(
            Method::PUT,
            "/api/v1/tenants/t1",
            &Auth::Admin,
            Some(&json!({"metadata": "x"})),
        )
        .await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        messages(&json),
        vec!["metadata must be an object of strings"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_and_routes_are_404() {
    let svc = Service::start().await;
    svc.tenant("t1").await;
    for path in [
        "/api/v1/tenants/nobody",
        "/api/v1/tenants/nobody/destinations",
        "/api/v1/tenants/t1/destinations/nothing",
        "/api/v1/tenants/t1/destinations/nothing/attempts/a1",
        "/api/v1/events/nothing",
        "/api/v1/attempts/nothing",
        "/api/v1/destination-types/azure_servicebus",
        "/api/v1/no/such/route",
        "/nothing",
    ] {
        let (status, json) = svc.get(path, &Auth::Admin).await;
        assert_error(status, &json, StatusCode::NOT_FOUND);
    }
    let (status, json) = svc
        .call(Method::POST, "/api/v1/events", &Auth::Admin, None)
        .await;
    assert_error(status, &json, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.max_request_body_bytes = 1024;
    })
    .await;
    svc.tenant("t1").await;
    let big = json!({"tenant_id": "t1", "data": {"pad": "x".repeat(2000)}});
    let (status, json) = svc
        .call(Method::POST, "/api/v1/publish", &Auth::Admin, Some(&big))
        .await;
    assert_error(status, &json, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("max_request_body_bytes")
    );
    let small = json!({"tenant_id": "t1", "data": {"pad": "x"}});
    let (status, _) = svc
        .call(Method::POST, "/api/v1/publish", &Auth::Admin, Some(&small))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}
