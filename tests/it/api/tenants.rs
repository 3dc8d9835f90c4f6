//! `/tenants`: upsert with and without a body, get with derived fields, list with pagination,
//! delete, token and portal URL. The basic CRUD runs on both backends.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Auth, NOWHERE, Service, assert_error};
use crate::support::db::TestDb;

crate::on_both_backends!(tenant_crud);

async fn tenant_crud(db: TestDb) {
    let svc = Service::start_on(db).await;
    // The SDKs send PUT without a body.
    let (status, created) = svc
        .call(Method::PUT, "/api/v1/tenants/acme", &Auth::Admin, None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["id"], "acme");
    assert_eq!(created["destinations_count"], 0);
    assert_eq!(created["topics"], json!([]));
    assert!(created.get("metadata").is_none(), "{created}");
    for key in ["created_at", "updated_at"] {
        assert!(created[key].is_string(), "{key} in {created}");
    }

    let updated = svc
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme",
            Some(&json!({"metadata": {"plan": "pro", "seats": 5}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(updated["metadata"], json!({"plan": "pro", "seats": "5"}));
    assert_eq!(updated["created_at"], created["created_at"]);

    svc.webhook(
        "acme",
        json!({"type": "webhook", "topics": ["b.x", "a.y"], "config": {"url": NOWHERE}}),
    )
    .await;
    svc.webhook(
        "acme",
        json!({"type": "webhook", "topics": ["a.y", "c.z"], "config": {"url": NOWHERE}}),
    )
    .await;
    let got = svc
        .admin(Method::GET, "/api/v1/tenants/acme", None, StatusCode::OK)
        .await;
    assert_eq!(got["destinations_count"], 2);
    assert_eq!(got["topics"], json!(["a.y", "b.x", "c.z"]));
    assert_eq!(got["metadata"], json!({"plan": "pro", "seats": "5"}));

    // PUT replaces metadata; null clears it.
    let cleared = svc
        .admin(
            Method::PUT,
            "/api/v1/tenants/acme",
            Some(&json!({"metadata": null})),
            StatusCode::OK,
        )
        .await;
    assert!(cleared.get("metadata").is_none(), "{cleared}");

    let deleted = svc
        .admin(Method::DELETE, "/api/v1/tenants/acme", None, StatusCode::OK)
        .await;
    assert_eq!(deleted, json!({"success": true}));
    let (status, json) = svc.get("/api/v1/tenants/acme", &Auth::Admin).await;
    assert_error(status, &json, StatusCode::NOT_FOUND);
    assert_eq!(json["message"], "tenant not found");
    let (status, json) = svc
        .call(Method::DELETE, "/api/v1/tenants/acme", &Auth::Admin, None)
        .await;
    assert_error(status, &json, StatusCode::NOT_FOUND);
    // Comes back as new, without its old destinations.
    let (status, again) = svc
        .call(Method::PUT, "/api/v1/tenants/acme", &Auth::Admin, None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["destinations_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_paginate_and_filter() {
    let svc = Service::start().await;
    for id in ["t1", "t2", "t3"] {
        svc.tenant(id).await;
    }
    let page1 = svc
        .admin(Method::GET, "/api/v1/tenants?limit=2", None, StatusCode::OK)
        .await;
    assert_eq!(page1["count"], 3);
    assert_eq!(
        page1["pagination"],
        json!({"order_by": "created_at", "dir": "desc", "limit": 2,
               "next": page1["pagination"]["next"], "prev": null})
    );
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&page1), vec!["t3", "t2"]);
    let next = page1["pagination"]["next"].as_str().unwrap();
    let page2 = svc
        .admin(
            Method::GET,
            &format!("/api/v1/tenants?limit=2&next={next}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(ids(&page2), vec!["t1"]);
    assert_eq!(page2["pagination"]["next"], json!(null));
    let prev = page2["pagination"]["prev"].as_str().unwrap();
    let back = svc
        .admin(
            Method::GET,
            &format!("/api/v1/tenants?limit=2&prev={prev}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(ids(&back), vec!["t3", "t2"]);

    let filtered = svc
        .admin(
            Method::GET,
            "/api/v1/tenants?id[]=t1&id[]=t3&dir=asc",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(ids(&filtered), vec!["t1", "t3"]);

    for (query, expected) in [
        ("limit=0", StatusCode::BAD_REQUEST),
        ("limit=101", StatusCode::BAD_REQUEST),
        ("limit=x", StatusCode::BAD_REQUEST),
        ("dir=sideways", StatusCode::UNPROCESSABLE_ENTITY),
        ("next=a&prev=b", StatusCode::BAD_REQUEST),
        ("next=garbage", StatusCode::BAD_REQUEST),
    ] {
        let (status, json) = svc
            .get(&format!("/api/v1/tenants?{query}"), &Auth::Admin)
            .await;
        assert_error(status, &json, expected);
    }
    let (_, json) = svc.get("/api/v1/tenants?dir=sideways", &Auth::Admin).await;
    assert!(json["data"]["query.dir"].is_string(), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_portal_urls() {
    let svc = Service::start().await;
    svc.tenant("acme+co").await;
    let token = svc
        .admin(
            Method::GET,
            "/api/v1/tenants/acme+co/token",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(token["tenant_id"], "acme+co");
    let auth = Auth::Bearer(token["token"].as_str().unwrap().to_owned());
    let (status, me) = svc.get("/api/v1/tenants/acme+co", &auth).await;
    assert_eq!(status, StatusCode::OK, "{me}");

    let portal = svc
        .admin(
            Method::GET,
            "/api/v1/tenants/acme+co/portal?theme=dark",
            None,
            StatusCode::OK,
        )
        .await;
    let url = portal["redirect_url"].as_str().unwrap();
    // The token rides in the fragment, which no request carries.
    assert!(url.starts_with(&svc.url("/portal#token=")), "{url}");
    assert!(url.contains("&tenant_id=acme%2Bco"), "{url}");
    assert!(url.ends_with("&theme=dark"), "{url}");
    assert_eq!(portal["tenant_id"], "acme+co");
    let page = crate::support::http_client()
        .get(svc.url("/portal"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("/portal/assets/portal.js")
    );

    let (status, json) = svc.get("/api/v1/tenants/nobody/token", &Auth::Admin).await;
    assert_error(status, &json, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_jwt_secret_no_tokens_are_issued() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.api_jwt_secret = jetpost::config::Secret::new("");
    })
    .await;
    svc.tenant("t1").await;
    let (status, json) = svc.get("/api/v1/tenants/t1/token", &Auth::Admin).await;
    assert_error(status, &json, StatusCode::BAD_REQUEST);
    assert!(json["message"].as_str().unwrap().contains("API_JWT_SECRET"));
}

/// The portal link for `t1`, asked with `host` as the `Host` header.
async fn portal_with_host(svc: &Service, host: &str) -> (StatusCode, serde_json::Value) {
    let response = crate::support::http_client()
        .get(svc.url("/api/v1/tenants/t1/portal"))
        .bearer_auth(super::API_KEY)
        .header("host", host)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let json = response.json().await.unwrap();
    crate::support::contract::check("GET", "/api/v1/tenants/t1/portal", status.as_u16(), &json);
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_links_use_the_host_only_when_it_is_a_plain_host() {
    let svc = Service::start().await;
    svc.tenant("t1").await;
    for host in ["jetpost.internal:3333", "10.0.0.5", "[::1]:8080"] {
        let (status, json) = portal_with_host(&svc, host).await;
        assert_eq!(status, StatusCode::OK, "{host}: {json}");
        let url = json["redirect_url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("http://{host}/portal#token=")),
            "{url}"
        );
    }
    for host in [
        "evil.example/path?x=",
        "evil.example?x=",
        "evil.example#",
        "user@evil.example",
        "evil.example:80:80",
    ] {
        let (status, json) = portal_with_host(&svc, host).await;
        assert_error(status, &json, StatusCode::BAD_REQUEST);
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("PORTAL_PROXY_URL"),
            "{host}: {json}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_links_point_at_the_configured_portal_url() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.portal.proxy_url = Some("https://webhooks.example.com".into());
    })
    .await;
    svc.tenant("t1").await;
    for host in ["evil.example/path?x=", "evil.example"] {
        let (status, json) = portal_with_host(&svc, host).await;
        assert_eq!(status, StatusCode::OK, "{host}: {json}");
        let url = json["redirect_url"].as_str().unwrap();
        assert!(
            url.starts_with("https://webhooks.example.com/#token="),
            "{url}"
        );
        assert!(url.ends_with("&tenant_id=t1"), "{url}");
    }
}
