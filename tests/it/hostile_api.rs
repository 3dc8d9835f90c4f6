//! Hostile API requests on the wire against a real `jetpost serve`: every size a request asks
//! for (metric buckets, page sizes, repeated array values, event data a page includes) is
//! refused with a 400 or answered within a bound, quickly, without the process's memory
//! growing; and stored data `serde_json::Value` cannot hold is served exactly after a restart.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::stored_data::unholdable_data;
use crate::support::db::TestDb;
use crate::support::http_client;
use crate::support::receiver::Receiver;
use crate::support::serve::Serve;

const API_KEY: &str = "hostile-admin-key";
/// Large events stored for the listings to (not) load at once: 40 × 900 kB is 36 MB.
const LARGE_EVENTS: usize = 40;
const LARGE_DATA_BYTES: usize = 900_000;
/// How much the peak resident memory may rise over the hostile requests. One request's
/// payloads are bounded to 2 MiB (`MAX_PAGE_PAYLOAD_BYTES`), held a few times over (rows, then the
/// serialized answer); the rest is allocator and SQLite page-cache noise. Before the bounds, a
/// single request here took hundreds of megabytes.
const PEAK_GROWTH_BOUND_KB: u64 = 16 * 1024;
/// "Does not hang": every answer, 400 or bounded 200, comes well within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// The largest 200 answer accepted: the payload budget plus the page's own fields.
const MAX_ANSWER_BYTES: usize = 6 * 1024 * 1024;

/// `VmRSS` or `VmHWM` (peak) of a process, in kB.
fn memory_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Resets the process's peak (`VmHWM`) to its current RSS; false where the kernel refuses.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

struct Api {
    serve: Serve,
    client: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let started = tokio::time::Instant::now();
        let response = self
            .client
            .get(self.serve.url(path))
            .bearer_auth(API_KEY)
            .timeout(ANSWER_WITHIN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path:.120}: no answer ({:.200})", e.to_string()));
        let status = response.status();
        let body = response.bytes().await.unwrap().to_vec();
        assert!(started.elapsed() < ANSWER_WITHIN, "{path:.120}: too slow");
        (status, body)
    }

    /// A request that must be refused with a 400 naming the limit.
    async fn refused(&self, path: &str, limit: &str) {
        let (status, body) = self.get(path).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path:.120}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(limit), "{path:.120}: {message}");
    }

    /// A request answered 200 within the answer bound; returns the body (with the data no
    /// `Value` can hold blanked out).
    async fn bounded(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path:.120}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        assert!(
            body.len() <= MAX_ANSWER_BYTES,
            "{path:.120}: {} bytes",
            body.len()
        );
        let text = String::from_utf8(body).unwrap();
        serde_json::from_str(&text.replace(&unholdable_data(), "{}")).unwrap()
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> StatusCode {
        self.client
            .post(self.serve.url(path))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn put(&self, path: &str, body: Value) -> StatusCode {
        self.client
            .request(reqwest::Method::PUT, self.serve.url(path))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_bounded_and_stored_data_survives_restarts() {
    let receiver = Receiver::start().await;
    let db = TestDb::sqlite().await;
    let env = [
        ("API_KEY", API_KEY),
        ("API_JWT_SECRET", "hostile-jwt-secret"),
        ("AES_ENCRYPTION_SECRET", "hostile-aes-secret"),
        ("DATABASE_URL", db.url()),
    ];
    let api = Api {
        serve: Serve::start(&env).await,
        client: http_client(),
    };
    assert!(api.put("/api/v1/tenants/t1", json!({})).await.is_success());
    let destination = json!({"id": "d1", "type": "webhook", "topics": "*",
                             "config": {"url": receiver.url("/hook")}});
    let created = api
        .client
        .post(api.serve.url("/api/v1/tenants/t1/destinations"))
        .bearer_auth(API_KEY)
        .json(&destination)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(created, StatusCode::CREATED);

    // Large events, each delivered once (so each has an attempt), and one whose data no
    // serde_json value can hold.
    let blob = "x".repeat(LARGE_DATA_BYTES);
    for i in 0..LARGE_EVENTS {
        let body = format!(
            r#"{{"id":"large-{i}","tenant_id":"t1","topic":"t","data":{{"blob":"{blob}"}}}}"#
        );
        assert_eq!(
            api.post("/api/v1/publish", body.into_bytes()).await,
            StatusCode::ACCEPTED
        );
    }
    let data = unholdable_data();
    let body = format!(r#"{{"id":"unholdable","tenant_id":"t1","topic":"t","data":{data}}}"#);
    assert_eq!(
        api.post("/api/v1/publish", body.into_bytes()).await,
        StatusCode::ACCEPTED
    );
    receiver
        .wait_for(LARGE_EVENTS + 1, Duration::from_secs(60))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = api.bounded("/api/v1/attempts?limit=1000").await;
        if page["models"].as_array().unwrap().len() == LARGE_EVENTS + 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "attempts missing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Warm-up: one small request of each kind, so that allocator and page cache have
    // grown for what a bounded request legitimately uses.
    let day = "time[start]=2026-01-01T00:00:00Z&time[end]=2026-01-02T00:00:00Z";
    for path in [
        "/api/v1/events?limit=3".to_owned(),
        "/api/v1/attempts?include=event.data&limit=3".to_owned(),
        format!("/api/v1/metrics/attempts?{day}&measures=count&granularity=1h"),
    ] {
        api.bounded(&path).await;
    }
    let pid = api.serve.pid();
    let peak_measured = reset_peak(pid);
    let before = memory_kb(pid, "VmRSS");

    let huge = "time[start]=0001-01-01T00:00:00Z&time[end]=9999-12-31T00:00:00Z";
    for kind in ["events", "attempts"] {
        let metrics = format!("/api/v1/metrics/{kind}?measures=count");
        api.refused(&format!("{metrics}&{huge}&granularity=1s"), "at most 10000")
            .await;
        api.refused(&format!("{metrics}&{day}&granularity=1s"), "at most 10000")
            .await;
        let ten_seconds = api
            .bounded(&format!("{metrics}&{day}&granularity=10s"))
            .await;
        assert_eq!(ten_seconds["data"].as_array().unwrap().len(), 8640);
        // Repetitions stay under the 64 kB a URI may have.
        let topics = "filters[topic]=t&".repeat(2000);
        api.refused(&format!("{metrics}&{day}&{topics}"), "at most 100")
            .await;
    }
    api.refused(
        &format!("/api/v1/events?{}", "tenant_id=t1&".repeat(3000)),
        "at most 100",
    )
    .await;
    api.refused(
        &format!("/api/v1/attempts?{}", "event_id=a&".repeat(5000)),
        "at most 100",
    )
    .await;
    api.refused(
        &format!("/api/v1/events?{}", "topic[]=t&".repeat(3000)),
        "at most 100",
    )
    .await;
    api.refused("/api/v1/events?limit=100000", "1000").await;
    api.refused("/api/v1/tenants?limit=1000000", "100").await;

    // Max pages over 36 MB of stored data end early, with a cursor to the rest.
    for path in [
        "/api/v1/events?limit=1000",
        "/api/v1/attempts?include=event.data&limit=1000",
        "/api/v1/tenants/t1/destinations/d1/attempts?include=event.data&limit=1000",
    ] {
        let page = api.bounded(path).await;
        let shown = page["models"].as_array().unwrap().len();
        assert!((1..LARGE_EVENTS).contains(&shown), "{path}: {shown} items");
        assert!(
            page["pagination"]["next"].is_string(),
            "{path}: no next cursor"
        );
    }

    let (peak_label, after) = if peak_measured {
        ("peak", memory_kb(pid, "VmHWM"))
    } else {
        ("resident", memory_kb(pid, "VmRSS"))
    };
    eprintln!(
        "jetpost serve memory: {before} kB before, {peak_label} {after} kB over the requests"
    );
    assert!(
        after.saturating_sub(before) <= PEAK_GROWTH_BOUND_KB,
        "{peak_label} memory grew from {before} kB to {after} kB"
    );
    let (health, _) = api.get("/healthz").await;
    assert_eq!(health, StatusCode::OK);

    // After a restart, the stored data is still served exactly.
    let Api { mut serve, client } = api;
    assert!(serve.terminate(Duration::from_secs(30)).await.success());
    let api = Api {
        serve: Serve::start(&env).await,
        client,
    };
    for path in [
        "/api/v1/events/unholdable",
        "/api/v1/events?topic=t&limit=2",
        "/api/v1/attempts?event_id=unholdable&include=event.data",
    ] {
        let (status, body) = api.get(path).await;
        let text = String::from_utf8(body).unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {text:.300}");
        assert!(text.contains(&data), "{path}: {text:.300}");
    }
}
