//! Secrets stay secret: destination credentials are encrypted in the database file, and no
//! secret (API key, AES secret, JWT secret, webhook secret) appears in the logs of a real
//! `jetpost serve` running at debug level through tenant set-up, deliveries and failures.

use std::time::Duration;

use serde_json::json;

use crate::support::db::TestDb;
use crate::support::http_client;
use crate::support::receiver::{Receiver, Reply};
use crate::support::serve::Serve;

const API_KEY: &str = "admin-key-S3CRET-api";
const AES: &str = "aes-S3CRET-encryption";
const JWT: &str = "jwt-S3CRET-signing";
const WEBHOOK_SECRET: &str = "webhook-S3CRET-hmac-0123456789";

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_never_logged() {
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.reply_with(Reply::Status(500));
    let db = TestDb::sqlite().await;
    let env = [
        ("API_KEY", API_KEY),
        ("AES_ENCRYPTION_SECRET", AES),
        ("API_JWT_SECRET", JWT),
        ("DATABASE_URL", db.url()),
        ("LOG_LEVEL", "debug"),
        ("RETRY_SCHEDULE", "1"),
    ];
    let serve = Serve::start(&env).await;
    let client = http_client();
    let call = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut request = client.request(method, serve.url(path)).bearer_auth(API_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    assert!(
        call(reqwest::Method::PUT, "/api/v1/tenants/acme", None)
            .await
            .unwrap()
            .status()
            .is_success()
    );
    for (id, receiver) in [("ok", &ok), ("failing", &failing)] {
        let destination = json!({
            "id": id, "type": "webhook", "topics": "*",
            "config": {"url": receiver.url("/hook")},
            "credentials": {"secret": WEBHOOK_SECRET},
        });
        let response = call(
            reqwest::Method::POST,
            "/api/v1/tenants/acme/destinations",
            Some(destination),
        )
        .await
        .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }
    let token = call(reqwest::Method::GET, "/api/v1/tenants/acme/token", None)
        .await
        .unwrap();
    assert!(token.status().is_success());
    let published = call(
        reqwest::Method::POST,
        "/api/v1/publish",
        Some(json!({"tenant_id": "acme", "topic": "x", "data": {"n": 1}})),
    )
    .await
    .unwrap();
    assert!(published.status().is_success());
    ok.wait_for(1, Duration::from_secs(30)).await;
    failing.wait_for(2, Duration::from_secs(30)).await;
    let signature = ok.requests()[0]
        .header("x-outpost-signature")
        .unwrap()
        .to_owned();
    // A rejected request must not echo the key either.
    let _ = client
        .get(serve.url("/api/v1/tenants"))
        .bearer_auth("wrong-key-S3CRET")
        .send()
        .await
        .unwrap();

    let file = std::fs::read(db.dir().join("jetpost.db")).unwrap();
    let wal = std::fs::read(db.dir().join("jetpost.db-wal")).unwrap_or_default();
    for bytes in [&file, &wal] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(WEBHOOK_SECRET),
            "the webhook secret is stored in clear"
        );
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = serve.logs();
    assert!(
        logs.contains("event ingested"),
        "the logs were captured: {logs}"
    );
    for secret in [
        API_KEY,
        AES,
        JWT,
        WEBHOOK_SECRET,
        "wrong-key-S3CRET",
        signature.as_str(),
    ] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}
