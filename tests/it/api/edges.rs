//! The server's edges over real sockets: slow request heads and bodies are cut off, connections
//! past the bound wait until one frees, keep-alive still works, shutdown lets requests in
//! progress finish, `/metrics` behind its token, and the SSRF guard on by default.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use jetpost::api::{ServeLimits, serve};
use jetpost::config::WebhookConfig;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{API_KEY, Auth, Service};
use crate::support::db::TestDb;

/// Far above every timeout the tests configure: reaching it means the server held on.
const HANG: Duration = Duration::from_secs(20);

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Everything the server sends until it closes the connection; panics if it does not close
/// within `HANG`.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(HANG, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the connection open for {HANG:?}"
    );
    String::from_utf8_lossy(&received).into_owned()
}

/// One response on a kept-alive connection: its status and body (`Content-Length` framed).
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(HANG, stream.read(&mut byte))
            .await
            .expect("a response in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed mid-response: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_head_is_disconnected_after_the_header_timeout() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.api_header_read_timeout_seconds = 1;
    })
    .await;
    let mut slow = connect(&svc.url("")).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_until_closed(&mut slow).await,
        "",
        "closed without an answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_body_is_answered_408_and_closed() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.api_body_read_timeout_seconds = 1;
    })
    .await;
    let mut slow = connect(&svc.url("")).await;
    let request = format!(
        "PUT /api/v1/tenants/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"metadata\":"
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("api_body_read_timeout_seconds"), "{answer}");
    let (status, _) = svc.get("/api/v1/tenants/slow", &Auth::Admin).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the short request did nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_several_requests_then_idles_out() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.api_header_read_timeout_seconds = 1;
    })
    .await;
    let mut conn = connect(&svc.url("")).await;
    for i in 0..3 {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (status, body) = read_response(&mut conn).await;
        assert_eq!(status, 200, "request {i}: {body}");
        assert!(body.contains("healthy"), "{body}");
    }
    // Idle past the header timeout: closed by the server.
    assert_eq!(read_until_closed(&mut conn).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_past_the_bound_do_not_keep_a_request_out() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.api_header_read_timeout_seconds = 1;
        c.api_max_connections = 2;
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut conn = connect(&svc.url("")).await;
        conn.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        slow.push(conn);
    }
    let (status, json) = tokio::time::timeout(HANG, svc.get("/healthz", &Auth::None))
        .await
        .expect("a request after slow clients is served once they time out");
    assert_eq!(status, StatusCode::OK, "{json}");
    for conn in &mut slow {
        read_until_closed(conn).await;
    }
}

/// `serve` on a loopback port with a route that answers at once and one that tells `arrived`
/// and then waits for `release`.
struct Bare {
    base: String,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    arrived: Arc<Notify>,
    release: Arc<Notify>,
}

async fn bare(limits: ServeLimits) -> Bare {
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (arrived_in, release_in) = (arrived.clone(), release.clone());
    let router = Router::new().route("/now", get(|| async { "now" })).route(
        "/held",
        post(move |body: Bytes| async move {
            arrived_in.notify_one();
            release_in.notified().await;
            format!("held {}", body.len())
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let served = tokio::spawn(serve(listener, router, limits, stop.clone()));
    Bare {
        base,
        stop,
        served,
        arrived,
        release,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_bound_wait_until_one_closes() {
    let server = bare(ServeLimits {
        header_read_timeout: Duration::from_secs(60),
        body_read_timeout: Duration::from_secs(60),
        max_connections: 2,
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = connect(&server.base).await;
        conn.write_all(b"GET /now HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(conn);
    }
    let mut third = connect(&server.base).await;
    third
        .write_all(b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "the third connection was served past the bound"
    );
    // One of the two finishes its request and leaves: the third gets its turn.
    held[0]
        .write_all(b"Connection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_until_closed(&mut held[0]).await.contains("now"));
    let (status, body) = read_response(&mut third).await;
    assert_eq!((status, body.as_str()), (200, "now"));
    server.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_progress_finish() {
    let server = bare(ServeLimits {
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(10),
        max_connections: 8,
    })
    .await;
    let client = crate::support::http_client();
    let in_progress = tokio::spawn(
        client
            .post(format!("{}/held", server.base))
            .body("12345")
            .send(),
    );
    // An idle keep-alive connection as well: shutdown must not wait for it.
    let mut idle = connect(&server.base).await;
    idle.write_all(b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await.0, 200);
    server.arrived.notified().await;
    server.stop.cancel();
    assert_eq!(read_until_closed(&mut idle).await, "");
    assert!(
        !server.served.is_finished(),
        "a request is still in progress"
    );
    server.release.notify_one();
    let response = in_progress.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "held 5");
    tokio::time::timeout(HANG, server.served)
        .await
        .expect("serve returns once its connections closed")
        .unwrap();
    assert!(
        TcpStream::connect(server.base.trim_start_matches("http://"))
            .await
            .is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_only_with_the_metrics_token_when_one_is_set() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.metrics_token = "scrape-token".into();
    })
    .await;
    let client = crate::support::http_client();
    let scrape = |auth: Option<&'static str>| {
        let mut request = client.get(svc.url("/metrics"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    for refused in [
        None,
        Some("Bearer wrong-token"),
        Some("Basic scrape-token"),
        // The admin key is not the metrics token.
        Some("Bearer test-admin-key"),
    ] {
        let response = scrape(refused).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{refused:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        crate::support::contract::check("GET", "/metrics", 401, &body);
        assert!(
            body["message"].as_str().unwrap().contains("metrics_token"),
            "{body}"
        );
    }
    for accepted in ["Bearer scrape-token", "bearer scrape-token"] {
        let response = scrape(Some(accepted)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{accepted}");
        assert!(
            response
                .headers()
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("text/plain"),
        );
    }
    // The health check stays open.
    let (status, _) = svc.get("/healthz", &Auth::None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_open_without_a_metrics_token() {
    let svc = Service::start().await;
    let response = crate::support::http_client()
        .get(svc.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_config_refuses_webhooks_to_private_addresses() {
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.destinations.webhook.block_private_ips = WebhookConfig::default().block_private_ips;
    })
    .await;
    svc.tenant("t1").await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
    ] {
        let (status, json) = svc
            .call(
                Method::POST,
                "/api/v1/tenants/t1/destinations",
                &Auth::Admin,
                Some(&json!({"type": "webhook", "topics": "*", "config": {"url": url}})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {json}");
        assert!(
            json["data"][0].as_str().unwrap().starts_with("config.url"),
            "{url}: {json}"
        );
    }
    svc.webhook(
        "t1",
        json!({"type": "webhook", "topics": "*", "config": {"url": "https://example.com/hook"}}),
    )
    .await;
}
