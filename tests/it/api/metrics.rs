//! Observability routes: `/metrics/events` and `/metrics/attempts` aggregates through the
//! API, `/healthz` in Outpost's shape, `/api/v1/nats/accounts` without a NATS source, and
//! the Prometheus text at `/metrics`.

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, NOWHERE, Service, assert_error};

const RANGE: &str = "time[start]=2026-01-01T00:00:00Z&time[end]=2026-01-01T03:00:00Z";

async fn seeded() -> Service {
    let svc = Service::start().await;
    for tenant in ["t1", "t2"] {
        svc.tenant(tenant).await;
        svc.webhook(
            tenant,
            json!({"id": "d1", "type": "webhook", "topics": "*", "config": {"url": NOWHERE}}),
        )
        .await;
    }
    let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    // t1: three events in the first hour, one in the third; t2: one in the second.
    for (i, (tenant, minutes, topic)) in [
        ("t1", 5, "a"),
        ("t1", 10, "a"),
        ("t1", 50, "b"),
        ("t1", 130, "a"),
        ("t2", 70, "a"),
    ]
    .into_iter()
    .enumerate()
    {
        svc.publish(json!({
            "id": format!("e{i}"),
            "tenant_id": tenant,
            "topic": topic,
            "time": (start + TimeDelta::minutes(minutes)).to_rfc3339(),
            "data": {},
        }))
        .await;
    }
    svc
}

async fn metrics(svc: &Service, auth: &Auth, query: &str) -> Value {
    let (status, json) = svc
        .get(&format!("/api/v1/metrics/events?{RANGE}&{query}"), auth)
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {json}");
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_metrics_bucket_group_and_scope() {
    let svc = seeded().await;

    let total = metrics(&svc, &Auth::Admin, "measures=count").await;
    assert_eq!(
        total["data"],
        json!([{"dimensions": {}, "metrics": {"count": 5}}])
    );
    assert_eq!(total["metadata"]["row_count"], 1);
    assert_eq!(total["metadata"]["truncated"], false);
    assert!(total["metadata"].get("granularity").is_none());

    // Hourly, zeros filled in, with the rate per second of each bucket.
    let hourly = metrics(
        &svc,
        &Auth::Admin,
        "measures[]=count&measures[]=rate&granularity=1h",
    )
    .await;
    let points: Vec<(String, u64)> = hourly["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["time_bucket"].as_str().unwrap().to_owned(),
                p["metrics"]["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        points,
        vec![
            ("2026-01-01T00:00:00Z".to_owned(), 3),
            ("2026-01-01T01:00:00Z".to_owned(), 1),
            ("2026-01-01T02:00:00Z".to_owned(), 1),
        ]
    );
    assert_eq!(hourly["data"][0]["metrics"]["rate"], json!(3.0 / 3600.0));
    assert_eq!(hourly["metadata"]["granularity"], "1h");

    let by_tenant = metrics(
        &svc,
        &Auth::Admin,
        "measures=count&dimensions=tenant_id&dimensions=topic",
    )
    .await;
    assert_eq!(
        by_tenant["data"],
        json!([
            {"dimensions": {"tenant_id": "t1", "topic": "a"}, "metrics": {"count": 3}},
            {"dimensions": {"tenant_id": "t1", "topic": "b"}, "metrics": {"count": 1}},
            {"dimensions": {"tenant_id": "t2", "topic": "a"}, "metrics": {"count": 1}},
        ])
    );
    let filtered = metrics(
        &svc,
        &Auth::Admin,
        "measures=count&filters[tenant_id]=t2&filters[topic][]=a",
    )
    .await;
    assert_eq!(filtered["data"][0]["metrics"]["count"], 1);

    // A tenant sees its own counts only, and may not group or filter by other tenants.
    let t2 = svc.token("t2").await;
    let own = metrics(&svc, &t2, "measures=count").await;
    assert_eq!(own["data"][0]["metrics"]["count"], 1);
    for query in [
        "measures=count&dimensions=tenant_id",
        "measures=count&filters[tenant_id]=t1",
    ] {
        let (status, json) = svc
            .get(&format!("/api/v1/metrics/events?{RANGE}&{query}"), &t2)
            .await;
        assert_error(status, &json, StatusCode::FORBIDDEN);
    }

    for query in [
        "measures=count".to_owned(),
        RANGE.to_owned(),
        format!("{RANGE}&measures=volume"),
        format!("{RANGE}&measures=count&dimensions=status"),
        format!("{RANGE}&measures=count&granularity=61m"),
        "time[start]=2026-01-02T00:00:00Z&time[end]=2026-01-01T00:00:00Z&measures=count".to_owned(),
        "time[start]=2026-01-01&time[end]=2026-01-02T00:00:00Z&measures=count".to_owned(),
    ] {
        let (status, json) = svc
            .get(&format!("/api/v1/metrics/events?{query}"), &Auth::Admin)
            .await;
        assert_error(status, &json, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_metrics_answer_in_outposts_shape() {
    let svc = seeded().await;
    let (status, json) = svc
        .get(
            "/api/v1/metrics/attempts?time[start]=2020-01-01T00:00:00Z&time[end]=2030-01-01T00:00:00Z\
             &measures=count&measures=error_rate&measures=avg_attempt_number&dimensions=status",
            &Auth::Admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert!(json["data"].is_array());
    for key in ["query_time_ms", "row_count", "row_limit", "truncated"] {
        assert!(!json["metadata"][key].is_null(), "{key} in {json}");
    }
    let (status, json) = svc
        .get(
            &format!("/api/v1/metrics/attempts?{RANGE}&measures=count&filters[manual]=maybe"),
            &Auth::Admin,
        )
        .await;
    assert_error(status, &json, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_accounts_and_prometheus() {
    let svc = seeded().await;
    for path in ["/healthz", "/api/v1/healthz"] {
        let (status, health) = svc.get(path, &Auth::None).await;
        assert_eq!(status, StatusCode::OK, "{health}");
        assert_eq!(health["status"], "healthy");
        assert!(health["timestamp"].is_string());
        assert_eq!(health["workers"]["http-server"]["status"], "healthy");
        assert_eq!(health["workers"]["store"]["status"], "healthy");
        assert_eq!(health["workers"]["store"]["backend"], "sqlite");
        assert_eq!(health["workers"]["dispatcher"]["status"], "healthy");
        assert!(health["workers"]["dispatcher"]["in_flight"].is_number());
        assert!(
            health["workers"].get("nats").is_none(),
            "no NATS source here"
        );
    }
    let accounts = svc
        .admin(Method::GET, "/api/v1/nats/accounts", None, StatusCode::OK)
        .await;
    assert_eq!(accounts, json!([]));

    let resp = svc.client.get(svc.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("jetpost_events_ingested_total"),
        "publishing counts ingested events: {text}"
    );
}

/// The database going away makes `/healthz` 503 naming the store, and coming back heals it
/// without a restart (the machine's Postgres behind a proxy the test cuts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_the_store_is_unreachable_and_recovers() {
    use crate::support::db::TestDb;
    use crate::support::proxy::Proxy;

    let db = TestDb::postgres().await;
    let mut url = reqwest::Url::parse(db.url()).unwrap();
    let target = url.socket_addrs(|| Some(5432)).unwrap()[0];
    let proxy = Proxy::start(target).await;
    url.set_port(Some(proxy.port())).unwrap();
    let svc = Service::start_with(db, |config| {
        config.database_url = jetpost::config::DatabaseUrl::new(url.as_str());
    })
    .await;
    let (status, health) = svc.get("/healthz", &Auth::None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["workers"]["store"]["backend"], "postgres");

    proxy.cut();
    let health = wait_for_health(&svc, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(health["status"], "failed", "{health}");
    assert_eq!(health["workers"]["store"]["status"], "failed", "{health}");
    assert_eq!(health["workers"]["http-server"]["status"], "healthy");
    // The API still answers, with the store's error rather than a hang.
    let (status, _) = svc.get("/api/v1/tenants/t1", &Auth::Admin).await;
    assert!(status.is_server_error(), "{status}");

    proxy.restore();
    let health = wait_for_health(&svc, StatusCode::OK).await;
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["workers"]["store"]["status"], "healthy");
}

async fn wait_for_health(svc: &Service, want: StatusCode) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, health) = svc.get("/healthz", &Auth::None).await;
        if status == want {
            return health;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz stayed {status} (wanted {want}): {health}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
