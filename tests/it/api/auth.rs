//! Who may call what: no credentials, the admin key, a tenant's own token, another tenant's
//! token, over every route; and the tokens that must be refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Auth, JWT_SECRET, NOWHERE, Service, assert_error};

const METRICS_QUERY: &str =
    "time[start]=2020-01-01T00:00:00Z&time[end]=2030-01-01T00:00:00Z&measures=count";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_each_caller_as_outpost_does() {
    let svc = Service::start().await;
    for tenant in ["t1", "t2"] {
        svc.tenant(tenant).await;
        svc.webhook(
            tenant,
            json!({"id": format!("d-{tenant}"), "type": "webhook", "topics": "*",
                   "config": {"url": NOWHERE}}),
        )
        .await;
    }
    let own = svc.token("t1").await;
    let other = svc.token("t2").await;
    use StatusCode as S;
    let metrics_events = format!("/api/v1/metrics/events?{METRICS_QUERY}");
    let metrics_attempts = format!("/api/v1/metrics/attempts?{METRICS_QUERY}");
    // (method, path, body, none, admin, own tenant, other tenant)
    let cases: Vec<(Method, String, Option<serde_json::Value>, [S; 4])> = vec![
        (
            Method::GET,
            "/api/v1/tenants".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::OK],
        ),
        (
            Method::GET,
            "/api/v1/tenants/t1".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::FORBIDDEN],
        ),
        (
            Method::PUT,
            "/api/v1/tenants/t1".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::FORBIDDEN],
        ),
        (
            Method::GET,
            "/api/v1/tenants/t1/token".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::FORBIDDEN, S::FORBIDDEN],
        ),
        (
            Method::GET,
            "/api/v1/tenants/t1/portal".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::FORBIDDEN, S::FORBIDDEN],
        ),
        (
            Method::GET,
            "/api/v1/tenants/t1/destinations".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::FORBIDDEN],
        ),
        (
            Method::GET,
            "/api/v1/tenants/t1/destinations/d-t1".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::FORBIDDEN],
        ),
        (
            Method::PUT,
            "/api/v1/tenants/t1/destinations/d-t1/enable".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::FORBIDDEN],
        ),
        (
            Method::GET,
            "/api/v1/tenants/t1/destinations/d-t1/attempts".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::FORBIDDEN],
        ),
        (
            Method::PATCH,
            "/api/v1/tenants/t1/destinations/d-t1".into(),
            Some(json!({"type": "webhook"})),
            [S::UNAUTHORIZED, S::OK, S::OK, S::FORBIDDEN],
        ),
        (
            Method::GET,
            "/api/v1/events".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::OK],
        ),
        (
            Method::GET,
            "/api/v1/events?tenant_id=t1".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::FORBIDDEN],
        ),
        (
            Method::GET,
            "/api/v1/attempts".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::OK],
        ),
        (
            Method::GET,
            "/api/v1/attempts?tenant_id=t1".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::FORBIDDEN],
        ),
        (
            Method::GET,
            "/api/v1/topics".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::OK],
        ),
        (
            Method::GET,
            "/api/v1/destination-types".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::OK],
        ),
        (
            Method::GET,
            "/api/v1/destination-types/webhook".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::OK],
        ),
        (
            Method::GET,
            "/api/v1/nats/accounts".into(),
            None,
            [S::UNAUTHORIZED, S::OK, S::FORBIDDEN, S::FORBIDDEN],
        ),
        (
            Method::GET,
            metrics_events.clone(),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::OK],
        ),
        (
            Method::GET,
            format!("{metrics_events}&filters[tenant_id]=t1"),
            None,
            [S::UNAUTHORIZED, S::OK, S::OK, S::FORBIDDEN],
        ),
        (
            Method::GET,
            format!("{metrics_attempts}&dimensions=tenant_id"),
            None,
            [S::UNAUTHORIZED, S::OK, S::FORBIDDEN, S::FORBIDDEN],
        ),
        (
            Method::POST,
            "/api/v1/publish".into(),
            Some(json!({"tenant_id": "t1", "data": {}})),
            [S::UNAUTHORIZED, S::ACCEPTED, S::ACCEPTED, S::ACCEPTED],
        ),
        (
            Method::POST,
            "/api/v1/retry".into(),
            Some(json!({"event_id": "nope", "destination_id": "d-t1"})),
            [S::UNAUTHORIZED, S::NOT_FOUND, S::NOT_FOUND, S::NOT_FOUND],
        ),
        (
            Method::GET,
            "/healthz".into(),
            None,
            [S::OK, S::OK, S::OK, S::OK],
        ),
        (
            Method::GET,
            "/api/v1/healthz".into(),
            None,
            [S::OK, S::OK, S::OK, S::OK],
        ),
    ];
    for (method, path, body, expected) in cases {
        for (auth, want) in [Auth::None, Auth::Admin, own.clone(), other.clone()]
            .iter()
            .zip(expected)
        {
            let (status, json) = svc.call(method.clone(), &path, auth, body.as_ref()).await;
            assert_eq!(status, want, "{method} {path} as {auth:?}: {json}");
            if !status.is_success() {
                assert_error(status, &json, want);
            }
        }
    }
    // /metrics is Prometheus text, open to all.
    let text = svc.client.get(svc.url("/metrics")).send().await.unwrap();
    assert_eq!(text.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_and_changes_only_itself() {
    let svc = Service::start().await;
    svc.tenant("t1").await;
    svc.tenant("t2").await;
    let own = svc.token("t1").await;

    let (status, list) = svc.get("/api/v1/tenants", &own).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["models"].as_array().unwrap().len(), 1);
    assert_eq!(list["models"][0]["id"], "t1");
    assert_eq!(list["count"], 1);

    for (method, path) in [
        (Method::DELETE, "/api/v1/tenants/t2"),
        (Method::POST, "/api/v1/tenants/t2/destinations"),
        (Method::GET, "/api/v1/tenants/t2/destinations/x"),
    ] {
        let body = json!({"type": "webhook", "topics": "*", "config": {"url": NOWHERE}});
        let (status, json) = svc.call(method, path, &own, Some(&body)).await;
        assert_error(status, &json, StatusCode::FORBIDDEN);
    }
    // Publishing with another tenant in the body lands in the token's tenant.
    svc.webhook(
        "t1",
        json!({"id": "d1", "type": "webhook", "topics": "*", "config": {"url": NOWHERE}}),
    )
    .await;
    let (status, accepted) = svc
        .call(
            Method::POST,
            "/api/v1/publish",
            &own,
            Some(&json!({"id": "e1", "tenant_id": "t2", "data": {"x": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["destination_ids"], json!(["d1"]));
    let (_, event) = svc.get("/api/v1/events/e1", &own).await;
    assert_eq!(event["tenant_id"], "t1");
    let (status, _) = svc
        .get("/api/v1/events/e1?tenant_id=t2", &Auth::Admin)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A deleted tenant's token is stale: 401.
    svc.admin(Method::DELETE, "/api/v1/tenants/t1", None, StatusCode::OK)
        .await;
    let (status, json) = svc.get("/api/v1/tenants/t1", &own).await;
    assert_error(status, &json, StatusCode::UNAUTHORIZED);
    let (status, json) = svc.get("/api/v1/events", &own).await;
    assert_error(status, &json, StatusCode::UNAUTHORIZED);
}

fn sign(claims: serde_json::Value, secret: &str) -> Auth {
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    Auth::Bearer(token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused() {
    let svc = Service::start().await;
    svc.tenant("t1").await;
    let exp = Utc::now().timestamp() + 3600;
    let good = sign(
        json!({"iss": "outpost", "sub": "t1", "exp": exp}),
        JWT_SECRET,
    );
    let (status, _) = svc.get("/api/v1/tenants/t1", &good).await;
    assert_eq!(status, StatusCode::OK, "a hand-made valid token works");

    let unsigned = Auth::Bearer(format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"outpost","sub":"t1","exp":{exp}}}"#))
    ));
    let refused = [
        Auth::Bearer("wrong-key".into()),
        sign(
            json!({"iss": "outpost", "sub": "t1", "exp": exp}),
            "other-secret",
        ),
        sign(
            json!({"iss": "outpost", "sub": "t1", "exp": Utc::now().timestamp() - 10}),
            JWT_SECRET,
        ),
        sign(
            json!({"iss": "someone", "sub": "t1", "exp": exp}),
            JWT_SECRET,
        ),
        sign(json!({"iss": "outpost", "sub": "t1"}), JWT_SECRET),
        sign(
            json!({"iss": "outpost", "sub": "ghost", "exp": exp}),
            JWT_SECRET,
        ),
        unsigned,
    ];
    for auth in refused {
        let (status, json) = svc.get("/api/v1/events", &auth).await;
        assert_error(status, &json, StatusCode::UNAUTHORIZED);
    }
    // Not a bearer header at all.
    let resp = svc
        .client
        .get(svc.url("/api/v1/events"))
        .header("authorization", format!("Basic {}", super::API_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_follow_rfc_7519_dates_and_any_case_bearer() {
    let svc = Service::start().await;
    svc.tenant("t1").await;
    let now = Utc::now().timestamp();
    let call = |scheme: &'static str, claims: serde_json::Value| {
        let Auth::Bearer(token) = sign(claims, JWT_SECRET) else {
            unreachable!()
        };
        svc.client
            .get(svc.url("/api/v1/tenants/t1"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
    };
    // A fractional NumericDate, a past `nbf`, the scheme in lower case: all fine.
    let fine = json!({"iss": "outpost", "sub": "t1", "exp": now as f64 + 3600.5, "nbf": now - 60});
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = call(scheme, fine.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }
    // Not valid yet.
    let early = json!({"iss": "outpost", "sub": "t1", "exp": now + 3600, "nbf": now + 600});
    let response = call("Bearer", early).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_disabled_makes_everyone_admin() {
    let svc = Service::start_with(crate::support::db::TestDb::sqlite().await, |c| {
        c.api_auth_disabled = true;
        c.api_key = jetpost::config::Secret::new("");
    })
    .await;
    let (status, json) = svc
        .call(Method::PUT, "/api/v1/tenants/t1", &Auth::None, None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let (status, _) = svc.get("/api/v1/nats/accounts", &Auth::None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = svc.get("/api/v1/tenants/t1/token", &Auth::None).await;
    assert_eq!(status, StatusCode::OK);
}
