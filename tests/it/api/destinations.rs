//! `/tenants/{id}/destinations`: create, get, list filters, PATCH merge semantics as the SDKs
//! use them, enable/disable, delete, validation, limits and secrets. The basic CRUD runs on
//! both backends.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, NOWHERE, Service, assert_error, messages};
use crate::support::db::TestDb;

crate::on_both_backends!(destination_crud);

const D: &str = "/api/v1/tenants/t1/destinations";

async fn destination_crud(db: TestDb) {
    let svc = Service::start_on(db).await;
    svc.tenant("t1").await;
    let created = svc
        .webhook(
            "t1",
            json!({
                "id": "d1",
                "type": "webhook",
                "topics": ["order.paid"],
                "config": {"url": "https://example.com/hook"},
                "metadata": {"team": "core"},
            }),
        )
        .await;
    // The contract's required fields, with disabled_at present and null.
    for key in [
        "id",
        "type",
        "topics",
        "config",
        "credentials",
        "created_at",
        "updated_at",
    ] {
        assert!(!created[key].is_null(), "{key} in {created}");
    }
    assert_eq!(created["disabled_at"], Value::Null);
    assert!(created.as_object().unwrap().contains_key("disabled_at"));
    assert_eq!(created["tenant_id"], "t1");
    assert_eq!(created["target"], "https://example.com/hook");
    let secret = created["credentials"]["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 20,
        "{secret}"
    );

    let got = svc
        .admin(Method::GET, &format!("{D}/d1"), None, StatusCode::OK)
        .await;
    assert_eq!(got, created);

    let list = svc.admin(Method::GET, D, None, StatusCode::OK).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let patched = svc
        .admin(
            Method::PATCH,
            &format!("{D}/d1"),
            Some(&json!({"type": "webhook", "topics": "*", "config": {"url": "https://example.com/v2"}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(patched["topics"], json!(["*"]));
    assert_eq!(patched["config"]["url"], "https://example.com/v2");
    assert_eq!(patched["metadata"], json!({"team": "core"}));
    assert_eq!(patched["credentials"]["secret"], secret);

    let disabled = svc
        .admin(
            Method::PUT,
            &format!("{D}/d1/disable"),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(disabled["disabled_at"].is_string());
    let again = svc
        .admin(
            Method::PUT,
            &format!("{D}/d1/disable"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(again["disabled_at"], disabled["disabled_at"]);
    let enabled = svc
        .admin(Method::PUT, &format!("{D}/d1/enable"), None, StatusCode::OK)
        .await;
    assert_eq!(enabled["disabled_at"], Value::Null);

    let deleted = svc
        .admin(Method::DELETE, &format!("{D}/d1"), None, StatusCode::OK)
        .await;
    assert_eq!(deleted, json!({"success": true}));
    for method in [Method::GET, Method::DELETE] {
        let (status, json) = svc
            .call(method, &format!("{D}/d1"), &Auth::Admin, None)
            .await;
        assert_error(status, &json, StatusCode::NOT_FOUND);
        assert_eq!(json["message"], "destination not found");
    }
    let (status, json) = svc
        .call(Method::PUT, &format!("{D}/d1/enable"), &Auth::Admin, None)
        .await;
    assert_error(status, &json, StatusCode::NOT_FOUND);
}

async fn with_destination(body: Value) -> (Service, Value) {
    let svc = Service::start().await;
    svc.tenant("t1").await;
    let created = svc.webhook("t1", body).await;
    (svc, created)
}

async fn patch(svc: &Service, body: Value) -> Value {
    svc.admin(
        Method::PATCH,
        &format!("{D}/d1"),
        Some(&body),
        StatusCode::OK,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_follows_the_sdks_merge_semantics() {
    let (svc, _) = with_destination(json!({
        "id": "d1",
        "type": "webhook",
        "topics": ["a"],
        "filter": {"data": {"amount": {"$gte": 100}}},
        "config": {"url": "https://example.com/hook"},
        "metadata": {"k1": "v1", "k2": "v2"},
        "delivery_metadata": {"app": "x"},
    }))
    .await;

    // Omitted fields are kept.
    let p = patch(&svc, json!({"type": "webhook"})).await;
    assert_eq!(p["topics"], json!(["a"]));
    assert_eq!(p["filter"], json!({"data": {"amount": {"$gte": 100}}}));
    assert_eq!(p["metadata"], json!({"k1": "v1", "k2": "v2"}));

    // {} metadata: no change; keys set to null are removed, others merged.
    let p = patch(&svc, json!({"type": "webhook", "metadata": {}})).await;
    assert_eq!(p["metadata"], json!({"k1": "v1", "k2": "v2"}));
    let p = patch(
        &svc,
        json!({"type": "webhook", "metadata": {"k1": null, "k3": "v3"}}),
    )
    .await;
    assert_eq!(p["metadata"], json!({"k2": "v2", "k3": "v3"}));

    // null clears a map; {} clears the filter; null clears it too.
    let p = patch(
        &svc,
        json!({"type": "webhook", "metadata": null, "delivery_metadata": null}),
    )
    .await;
    assert!(p.get("metadata").is_none(), "{p}");
    assert!(p.get("delivery_metadata").is_none(), "{p}");
    let p = patch(&svc, json!({"type": "webhook", "filter": {}})).await;
    assert!(p.get("filter").is_none(), "{p}");
    let p = patch(&svc, json!({"type": "webhook", "filter": {"topic": "a"}})).await;
    assert_eq!(p["filter"], json!({"topic": "a"}));
    let p = patch(&svc, json!({"type": "webhook", "filter": null})).await;
    assert!(p.get("filter").is_none(), "{p}");

    // Config merges key by key.
    let p = patch(
        &svc,
        json!({"type": "webhook", "config": {"custom_headers": {"x-api-key": "k"}}}),
    )
    .await;
    assert_eq!(p["config"]["url"], "https://example.com/hook");
    assert_eq!(p["config"]["custom_headers"], r#"{"x-api-key":"k"}"#);

    // disabled_at: a time disables, null enables.
    let p = patch(
        &svc,
        json!({"type": "webhook", "disabled_at": "2024-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(p["disabled_at"], "2024-01-01T00:00:00Z");
    let p = patch(&svc, json!({"type": "webhook", "disabled_at": null})).await;
    assert_eq!(p["disabled_at"], Value::Null);

    // The type cannot change; a future disabled_at is refused.
    for body in [
        json!({"type": "aws_sqs"}),
        json!({"type": "webhook", "disabled_at": "2999-01-01T00:00:00Z"}),
        json!({"type": "webhook", "topics": null}),
        json!({"type": "webhook", "config": {"url": null}}),
        json!({"type": "webhook", "filter": {"data": {"$regex": "x"}}}),
    ] {
        let (status, json) = svc
            .call(Method::PATCH, &format!("{D}/d1"), &Auth::Admin, Some(&body))
            .await;
        assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let (_, json) = svc
        .call(
            Method::PATCH,
            &format!("{D}/d1"),
            &Auth::Admin,
            Some(&json!({"type": "webhook", "config": {"url": null}})),
        )
        .await;
    assert_eq!(messages(&json), vec!["config.url is required"]);

    // An unknown destination is 404 before its body is looked at (as Outpost).
    for body in [
        json!({"type": "webhook", "topics": ["not a topic"]}),
        json!({"type": "webhook", "config": {"url": null}}),
    ] {
        let (status, json) = svc
            .call(
                Method::PATCH,
                &format!("{D}/nope"),
                &Auth::Admin,
                Some(&body),
            )
            .await;
        assert_error(status, &json, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_validates_each_field() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.topics = vec!["order.paid".into(), "order.shipped".into()];
        c.max_destinations_per_tenant = 2;
        c.destinations.webhook.block_private_ips = true;
    })
    .await;
    svc.tenant("t1").await;
    let cases = [
        (json!({}), vec!["type is required", "topics is required"]),
        (
            json!({"type": "webhook", "topics": ["user.created"], "config": {"url": "https://e.com"}}),
            vec!["topics: topic \"user.created\" is not one of the configured topics"],
        ),
        (
            json!({"type": "webhook", "topics": 5, "config": {"url": "https://e.com"}}),
            vec!["topics must be \"*\" or an array of topic strings"],
        ),
        (
            json!({"type": "webhook", "topics": "*", "config": {}}),
            vec!["config.url is required"],
        ),
        (
            json!({"type": "webhook", "topics": "*", "config": {"url": "http://127.0.0.1/x"}}),
            vec!["config.url"],
        ),
        (
            json!({"type": "webhook", "topics": "*",
                   "config": {"url": "https://e.com", "custom_headers": "{\"Host\":\"x\"}"}}),
            vec!["config.custom_headers.Host"],
        ),
        (
            json!({"type": "webhook", "topics": "*", "config": {"url": "https://e.com"},
                   "credentials": {"previous_secret": "p"}}),
            vec!["credentials.secret is required"],
        ),
        (
            json!({"type": "gcp_pubsub", "topics": "*"}),
            vec!["type \"gcp_pubsub\" is not available in this build"],
        ),
        (
            json!({"type": "carrier_pigeon", "topics": "*"}),
            vec!["type \"carrier_pigeon\" is not supported"],
        ),
    ];
    for (body, expected) in cases {
        let (status, json) = svc.call(Method::POST, D, &Auth::Admin, Some(&body)).await;
        assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(json["message"], "validation error");
        let got = messages(&json);
        for (want, have) in expected.iter().zip(&got) {
            assert!(
                have.starts_with(want),
                "{body}: {have:?} should start with {want:?}"
            );
        }
        assert!(got.len() >= expected.len(), "{body}: {got:?}");
    }

    // Configured topics and "*" are fine; the id can be chosen; a taken id is 400 (Outpost).
    let ok = json!({"id": "d1", "type": "webhook", "topics": ["order.paid"],
                    "config": {"url": "https://example.com/hook"}});
    svc.webhook("t1", ok.clone()).await;
    let (status, json) = svc.call(Method::POST, D, &Auth::Admin, Some(&ok)).await;
    assert_error(status, &json, StatusCode::BAD_REQUEST);
    svc.webhook(
        "t1",
        json!({"type": "webhook", "topics": "*", "config": {"url": "https://example.com/hook"}}),
    )
    .await;
    // max_destinations_per_tenant = 2.
    let (status, json) = svc
        .call(
            Method::POST,
            D,
            &Auth::Admin,
            Some(&json!({"type": "webhook", "topics": "*", "config": {"url": "https://e.com"}})),
        )
        .await;
    assert_error(status, &json, StatusCode::BAD_REQUEST);
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("max_destinations_per_tenant")
    );

    // An unknown tenant is 404.
    let (status, json) = svc
        .call(
            Method::POST,
            "/api/v1/tenants/nobody/destinations",
            &Auth::Admin,
            Some(&ok),
        )
        .await;
    assert_error(status, &json, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_and_disabled_creates_keep_the_given_times() {
    let svc = Service::start().await;
    svc.tenant("t1").await;
    let created = svc
        .webhook(
            "t1",
            json!({"id": "d1", "type": "webhook", "topics": "*",
                   "config": {"url": NOWHERE},
                   "created_at": "2024-02-15T10:00:00Z",
                   "disabled_at": "2024-03-01T12:00:00Z"}),
        )
        .await;
    assert_eq!(created["created_at"], "2024-02-15T10:00:00Z");
    assert_eq!(created["updated_at"], "2024-02-15T10:00:00Z");
    assert_eq!(created["disabled_at"], "2024-03-01T12:00:00Z");
    // Tenants may not set the import times.
    let token = svc.token("t1").await;
    let (status, json) = svc
        .call(
            Method::POST,
            D,
            &token,
            Some(
                &json!({"type": "webhook", "topics": "*", "config": {"url": NOWHERE},
                         "created_at": "2024-02-15T10:00:00Z"}),
            ),
        )
        .await;
    assert_error(status, &json, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_by_type_and_topics() {
    let svc = Service::start().await;
    svc.tenant("t1").await;
    for (id, topics) in [
        ("all", json!("*")),
        ("users", json!(["user.created", "user.deleted"])),
        ("orders", json!(["order.paid"])),
    ] {
        svc.webhook(
            "t1",
            json!({"id": id, "type": "webhook", "topics": topics, "config": {"url": NOWHERE}}),
        )
        .await;
    }
    let ids = |list: &Value| -> Vec<String> {
        let mut ids: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    for (query, expected) in [
        ("", vec!["all", "orders", "users"]),
        ("?type=webhook", vec!["all", "orders", "users"]),
        ("?type[]=aws_sqs", vec![]),
        ("?topics=user.created", vec!["all", "users"]),
        (
            "?topics[0]=user.created&topics[1]=user.deleted",
            vec!["all", "users"],
        ),
        ("?topics=user.created&topics=order.paid", vec!["all"]),
        ("?topics=*", vec!["all"]),
    ] {
        let list = svc
            .admin(Method::GET, &format!("{D}{query}"), None, StatusCode::OK)
            .await;
        assert_eq!(ids(&list), expected, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_set_by_the_admin_and_rotated_by_anyone() {
    let (svc, created) = with_destination(json!({
        "id": "d1", "type": "webhook", "topics": "*",
        "config": {"url": NOWHERE},
        "credentials": {"secret": "whsec_admin_chosen"},
    }))
    .await;
    assert_eq!(
        created["credentials"],
        json!({"secret": "whsec_admin_chosen"})
    );
    let token = svc.token("t1").await;

    // A tenant cannot set a secret, on create or update.
    let (status, json) = svc
        .call(
            Method::POST,
            D,
            &token,
            Some(
                &json!({"type": "webhook", "topics": "*", "config": {"url": NOWHERE},
                         "credentials": {"secret": "whsec_mine"}}),
            ),
        )
        .await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(messages(&json)[0].starts_with("credentials.secret is forbidden"));
    let (status, json) = svc
        .call(
            Method::PATCH,
            &format!("{D}/d1"),
            &token,
            Some(&json!({"type": "webhook", "credentials": {"secret": "whsec_mine"}})),
        )
        .await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);

    // But may rotate: the old secret keeps signing for a day.
    let (status, rotated) = svc
        .call(
            Method::PATCH,
            &format!("{D}/d1"),
            &token,
            Some(&json!({"type": "webhook", "credentials": {"rotate_secret": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let creds = &rotated["credentials"];
    assert_eq!(creds["previous_secret"], "whsec_admin_chosen");
    assert!(creds["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_ne!(creds["secret"], "whsec_admin_chosen");
    assert!(creds["previous_secret_invalid_at"].is_string());
    assert!(creds.get("rotate_secret").is_none());

    // The admin may set them outright.
    let p = patch(
        &svc,
        json!({"type": "webhook", "credentials": {"secret": "whsec_new", "previous_secret": null,
                                                  "previous_secret_invalid_at": null}}),
    )
    .await;
    assert_eq!(p["credentials"], json!({"secret": "whsec_new"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_follows_every_write_at_once() {
    let (svc, _) = with_destination(json!({
        "id": "d1", "type": "webhook", "topics": ["a"], "config": {"url": NOWHERE},
    }))
    .await;
    let mut n = 0;
    let mut routed = |topic: &'static str| {
        n += 1;
        let svc = &svc;
        let id = format!("e{n}");
        async move {
            let accepted = svc
                .publish(json!({"id": id, "tenant_id": "t1", "topic": topic, "data": {}}))
                .await;
            accepted["destination_ids"].clone()
        }
    };
    assert_eq!(routed("a").await, json!(["d1"]));
    patch(&svc, json!({"type": "webhook", "topics": ["b"]})).await;
    assert_eq!(routed("a").await, json!([]));
    assert_eq!(routed("b").await, json!(["d1"]));
    patch(
        &svc,
        json!({"type": "webhook", "filter": {"data": {"x": 1}}}),
    )
    .await;
    assert_eq!(routed("b").await, json!([]));
    patch(&svc, json!({"type": "webhook", "filter": null})).await;
    svc.admin(
        Method::PUT,
        &format!("{D}/d1/disable"),
        None,
        StatusCode::OK,
    )
    .await;
    assert_eq!(routed("b").await, json!([]));
    svc.admin(Method::PUT, &format!("{D}/d1/enable"), None, StatusCode::OK)
        .await;
    assert_eq!(routed("b").await, json!(["d1"]));
    patch(
        &svc,
        json!({"type": "webhook", "disabled_at": "2024-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(routed("b").await, json!([]));
    patch(&svc, json!({"type": "webhook", "disabled_at": null})).await;
    assert_eq!(routed("b").await, json!(["d1"]));
    svc.admin(Method::DELETE, &format!("{D}/d1"), None, StatusCode::OK)
        .await;
    assert_eq!(routed("b").await, json!([]));
    svc.webhook(
        "t1",
        json!({"id": "d2", "type": "webhook", "topics": "*", "config": {"url": NOWHERE}}),
    )
    .await;
    assert_eq!(routed("b").await, json!(["d2"]));
    svc.admin(Method::DELETE, "/api/v1/tenants/t1", None, StatusCode::OK)
        .await;
    assert_eq!(routed("b").await, json!([]));
}
