//! `POST /api/v1/filters/match`: a filter tested against an event as delivery evaluates it,
//! for the admin and any tenant, and a 422 naming the field for everything else.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, Service, assert_error, messages};

const PATH: &str = "/api/v1/filters/match";

/// `{"matches": …}` for `filter` and `event`, asserting a 200.
async fn matches(svc: &Service, auth: &Auth, filter: Value, event: &Value) -> bool {
    let body = json!({"filter": filter, "event": event});
    let (status, json) = svc.call(Method::POST, PATH, auth, Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{body}: {json}");
    json["matches"]
        .as_bool()
        .unwrap_or_else(|| panic!("{json}"))
}

/// A 422 for `body`; returns its `data` messages.
async fn refused(svc: &Service, body: &Value) -> Vec<String> {
    let (status, json) = svc.call(Method::POST, PATH, &Auth::Admin, Some(body)).await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json["message"], "validation error", "{json}");
    messages(&json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_match_as_delivery_does() {
    let svc = Service::start().await;
    let event = json!({"id": "e1", "topic": "order.paid", "metadata": {"region": "eu"},
                       "time": "2026-03-02T14:05:00Z", "data": {"amount": 120, "tags": ["a"]}});
    let admin = &Auth::Admin;
    for (filter, expected) in [
        (json!({}), true),
        (json!({"data": {"amount": {"$gte": 100}}}), true),
        (json!({"data": {"amount": {"$gte": 200}}}), false),
        (json!({"data": {"tags": {"$in": ["a", "b"]}}}), false),
        (json!({"topic": "order.paid"}), true),
        (json!({"topic": {"$startsWith": "user."}}), false),
        (json!({"metadata": {"region": "eu"}}), true),
        (
            json!({"metadata": {"region": {"$in": ["us", "ap"]}}}),
            false,
        ),
        (
            json!({"id": "e1", "time": {"$gte": "2026-01-01T00:00:00Z"}}),
            true,
        ),
        (
            json!({"$or": [{"topic": "user.created"}, {"data": {"amount": {"$lt": 200}}}]}),
            true,
        ),
        (json!({"$not": {"metadata": {"region": "eu"}}}), false),
    ] {
        assert_eq!(
            matches(&svc, admin, filter.clone(), &event).await,
            expected,
            "{filter}"
        );
    }

    // A tenant field in the event is neither needed nor looked at.
    let with_tenant = json!({"tenant_id": "someone else", "topic": "a", "data": {}});
    assert!(matches(&svc, admin, json!({"topic": "a"}), &with_tenant).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_beyond_f64_read_as_delivery_reads_them() {
    let svc = Service::start().await;
    let event = r#"{"topic":"t","data":{"a":1e400,"b":1}}"#;
    for (filter, expected) in [
        (r#"{"data":{"b":1}}"#, true),
        (r#"{"data":{"a":{"$gt":1e308}}}"#, true),
        (r#"{"data":{"a":1}}"#, false),
        (r#"{"data":{"b":2}}"#, false),
    ] {
        let body = format!(r#"{{"filter":{filter},"event":{event}}}"#);
        let (status, json) = svc
            .call_raw(Method::POST, PATH, &Auth::Admin, body.into_bytes())
            .await;
        assert_eq!(status, StatusCode::OK, "{filter}: {json}");
        assert_eq!(json, json!({"matches": expected}), "{filter}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_tenant_may_call_it_and_nobody_else() {
    let svc = Service::start().await;
    svc.tenant("t1").await;
    let tenant = svc.token("t1").await;
    let event = json!({"topic": "order.paid", "data": {"amount": 5}});
    assert!(matches(&svc, &tenant, json!({"data": {"amount": 5}}), &event).await);
    assert!(!matches(&svc, &tenant, json!({"data": {"amount": 6}}), &event).await);

    let body = json!({"filter": {}, "event": event});
    for auth in [
        Auth::None,
        Auth::Bearer("not-the-key".to_owned()),
        Auth::Bearer(format!("{}x", super::API_KEY)),
    ] {
        let (status, json) = svc.call(Method::POST, PATH, &auth, Some(&body)).await;
        assert_error(status, &json, StatusCode::UNAUTHORIZED);
    }
    // Authentication comes before the body is read.
    let (status, json) = svc
        .call_raw(Method::POST, PATH, &Auth::None, b"{".to_vec())
        .await;
    assert_error(status, &json, StatusCode::UNAUTHORIZED);

    // A deleted tenant's token is stale, as on every route.
    svc.admin(Method::DELETE, "/api/v1/tenants/t1", None, StatusCode::OK)
        .await;
    let (status, json) = svc.call(Method::POST, PATH, &tenant, Some(&body)).await;
    assert_error(status, &json, StatusCode::UNAUTHORIZED);

    let (status, json) = svc.call(Method::GET, PATH, &Auth::Admin, None).await;
    assert_error(status, &json, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mistake_is_a_422_naming_its_field() {
    let svc = Service::start().await;
    let event = json!({"topic": "t", "data": {}});

    let unknown = refused(
        &svc,
        &json!({"filter": {"data": {"$gtt": 1}}, "event": event}),
    )
    .await;
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(
        unknown[0].starts_with(r#"filter at "data": unknown operator "$gtt""#),
        "{unknown:?}"
    );
    let operand = refused(
        &svc,
        &json!({"filter": {"data": {"n": {"$gt": [1]}}}, "event": event}),
    )
    .await;
    assert_eq!(
        operand,
        [r#"filter at "data.n": $gt expects a number or a string, found array"#]
    );
    assert_eq!(
        refused(&svc, &json!({"filter": [], "event": event})).await,
        ["filter must be a JSON object, found array"]
    );

    assert_eq!(
        refused(&svc, &json!({"filter": {}})).await,
        ["event is required"]
    );
    assert_eq!(
        refused(&svc, &json!({"event": event})).await,
        ["filter is required"]
    );
    assert_eq!(
        refused(&svc, &json!({"filter": null, "event": null})).await,
        ["filter is required", "event is required"]
    );
    assert_eq!(
        refused(&svc, &json!({"filter": {}, "event": "order.paid"})).await,
        ["event must be a JSON object, found string"]
    );
    assert_eq!(
        refused(&svc, &json!({"filter": {}, "event": {"topic": "t"}})).await,
        [r#"event: field "data" is required"#]
    );
    let topic = refused(
        &svc,
        &json!({"filter": {}, "event": {"topic": "a b", "data": {}}}),
    )
    .await;
    assert!(
        topic[0].starts_with(r#"event: field "topic": "#),
        "{topic:?}"
    );
    assert_eq!(
        refused(
            &svc,
            &json!({"filter": {}, "event": {"data": {}, "metadata": {"r": 1}}})
        )
        .await,
        [r#"event: field "metadata.r": expected a string, found number"#]
    );
    assert_eq!(
        refused(
            &svc,
            &json!({"filter": {}, "event": event, "tenant_id": "t1"})
        )
        .await,
        ["tenant_id: unknown field; the body has only filter and event"]
    );

    // Bodies that are not one JSON object are answered as on every other route.
    for body in [&b"{\"filter\": "[..], b"", b"nope", b"{} {}"] {
        let (status, json) = svc
            .call_raw(Method::POST, PATH, &Auth::Admin, body.to_vec())
            .await;
        assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(json["message"], "invalid JSON", "{body:?}: {json}");
    }
    let (status, json) = svc
        .call_raw(Method::POST, PATH, &Auth::Admin, b"[1, 2]".to_vec())
        .await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(messages(&json), ["the request body must be a JSON object"]);

    // The request body limit applies.
    let big = format!(
        r#"{{"filter":{{}},"event":{{"data":{{"s":"{}"}}}}}}"#,
        "x".repeat(2 << 20)
    );
    let (status, json) = svc
        .call_raw(Method::POST, PATH, &Auth::Admin, big.into_bytes())
        .await;
    assert_error(status, &json, StatusCode::PAYLOAD_TOO_LARGE);
}
