//! The webhook provider against a real HTTP receiver: exact bytes, every header, signatures
//! checked by verifiers written here from the public specs, and each failure code.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jetpost::config::{Secret, WebhookConfig, WebhookMode};
use jetpost::destination::AttemptCode;
use jetpost::destination::webhook::{
    AttemptResult, WebhookCredentials, WebhookProvider, WebhookRequest,
};
use sha2::Sha256;

use crate::support::receiver::{Receiver, Recorded, Reply};

const BODY: &str = r#"{"zebra":1,"alpha":2,"big":12345678901234567890,"esc":"<&>\u003c"}"#;
const SECRET: &str = "whsec_current";
const OLD_SECRET: &str = "whsec_previous";
const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STD_OLD_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldA==";
const WAIT: Duration = Duration::from_secs(10);

/// `mode`, with deliveries to the loopback receivers allowed.
fn config(mode: WebhookMode) -> WebhookConfig {
    WebhookConfig {
        mode,
        block_private_ips: false,
        ..WebhookConfig::default()
    }
}

fn provider(config: &WebhookConfig) -> WebhookProvider {
    WebhookProvider::new(config, Duration::from_secs(10), "test-version").unwrap()
}

fn request(url: String) -> WebhookRequest {
    WebhookRequest {
        event_id: "evt_123".into(),
        topic: "order.paid".into(),
        body: BODY.into(),
        url,
        credentials: WebhookCredentials::new(SECRET),
        ..WebhookRequest::default()
    }
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn rotated(current: &str, previous: &str, invalid_at: DateTime<Utc>) -> WebhookCredentials {
    WebhookCredentials {
        secret: Secret::new(current),
        previous_secret: Some(Secret::new(previous)),
        previous_secret_invalid_at: Some(invalid_at),
    }
}

async fn send_one(
    provider: &WebhookProvider,
    receiver: &Receiver,
    req: &WebhookRequest,
) -> (AttemptResult, Recorded) {
    let result = provider.send(req).await;
    let recorded = receiver.wait_for(1, WAIT).await.remove(0);
    (result, recorded)
}

/// Outpost default mode, as its docs tell receivers to verify: strip `v0=`, split on `,`,
/// accept when any candidate equals hex(HMAC-SHA256(secret as bytes, raw body)).
pub(crate) fn default_signature_valid(header: &str, secret: &str, body: &[u8]) -> bool {
    let Some(candidates) = header.strip_prefix("v0=") else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    candidates.split(',').any(|c| c == expected)
}

/// Standard Webhooks (standardwebhooks.com spec): key = base64-decode(secret minus `whsec_`),
/// signed content = `<webhook-id>.<webhook-timestamp>.<body>`, header = space-separated
/// `v1,<base64 signature>` entries; valid when any v1 entry matches.
fn standard_signature_valid(recorded: &Recorded, secret: &str) -> bool {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = recorded.header("webhook-id").unwrap();
    let timestamp = recorded.header("webhook-timestamp").unwrap();
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(&recorded.body);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(&content);
    let expected = BASE64.encode(mac.finalize().into_bytes());
    recorded
        .header("webhook-signature")
        .unwrap()
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

fn prefixed_headers(recorded: &Recorded, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = recorded
        .headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn default_mode_sends_exact_body_and_outpost_headers() {
    let receiver = Receiver::start().await;
    let provider = provider(&config(WebhookMode::Default));
    let before = Utc::now().timestamp();
    let (result, recorded) =
        send_one(&provider, &receiver, &request(receiver.url("/hook?a=1"))).await;
    let after = Utc::now().timestamp();

    assert!(result.success, "{result:?}");
    assert_eq!(result.code, AttemptCode::Status(200));
    assert_eq!(result.code.to_string(), "200");
    assert_eq!(result.status(), Some(200));
    assert_eq!(result.error, None);

    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/hook?a=1");
    assert_eq!(&recorded.body[..], BODY.as_bytes());
    assert_eq!(recorded.header("content-type"), Some("application/json"));
    assert_eq!(recorded.header("user-agent"), Some("jetpost/test-version"));
    assert_eq!(recorded.header("x-outpost-event-id"), Some("evt_123"));
    assert_eq!(recorded.header("x-outpost-topic"), Some("order.paid"));

    let timestamp = recorded.header("x-outpost-timestamp").unwrap();
    assert_eq!(timestamp.len(), "2024-06-01T08:23:36Z".len(), "{timestamp}");
    assert!(timestamp.ends_with('Z'), "{timestamp}");
    let ts = DateTime::parse_from_rfc3339(timestamp).unwrap().timestamp();
    assert!((before..=after).contains(&ts), "{timestamp}");
    assert_eq!(ts, result.sent_at.timestamp());

    let signature = recorded.header("x-outpost-signature").unwrap();
    assert!(
        !signature.contains(','),
        "one secret, one signature: {signature}"
    );
    assert!(default_signature_valid(signature, SECRET, &recorded.body));
    assert!(!default_signature_valid(
        signature,
        OLD_SECRET,
        &recorded.body
    ));

    assert_eq!(
        prefixed_headers(&recorded, "x-outpost-"),
        [
            "x-outpost-event-id",
            "x-outpost-signature",
            "x-outpost-timestamp",
            "x-outpost-topic"
        ]
    );
    assert!(prefixed_headers(&recorded, "webhook-").is_empty());
}

#[tokio::test]
async fn previous_secret_signs_only_until_it_is_invalid() {
    let receiver = Receiver::start().await;
    let provider = provider(&config(WebhookMode::Default));

    let mut req = request(receiver.url("/"));
    req.credentials = rotated(SECRET, OLD_SECRET, Utc::now() + chrono::Duration::hours(1));
    provider.send(&req).await;
    req.credentials = rotated(
        SECRET,
        OLD_SECRET,
        Utc::now() - chrono::Duration::seconds(1),
    );
    provider.send(&req).await;

    let requests = receiver.wait_for(2, WAIT).await;
    let valid = requests[0].header("x-outpost-signature").unwrap();
    assert_eq!(valid.split(',').count(), 2, "{valid}");
    assert!(default_signature_valid(valid, SECRET, &requests[0].body));
    assert!(default_signature_valid(
        valid,
        OLD_SECRET,
        &requests[0].body
    ));

    let expired = requests[1].header("x-outpost-signature").unwrap();
    assert!(!expired.contains(','), "{expired}");
    assert!(default_signature_valid(expired, SECRET, &requests[1].body));
    assert!(!default_signature_valid(
        expired,
        OLD_SECRET,
        &requests[1].body
    ));
}

#[tokio::test]
async fn standard_mode_follows_standard_webhooks() {
    let receiver = Receiver::start().await;
    let provider = provider(&config(WebhookMode::Standard));
    let mut req = request(receiver.url("/std"));
    req.credentials = WebhookCredentials::new(STD_SECRET);
    req.event_metadata = map(&[("source", "shop")]);
    let before = Utc::now().timestamp();
    let (result, recorded) = send_one(&provider, &receiver, &req).await;

    assert!(result.success, "{result:?}");
    assert_eq!(&recorded.body[..], BODY.as_bytes());
    assert_eq!(recorded.header("content-type"), Some("application/json"));
    assert_eq!(recorded.header("webhook-id"), Some("evt_123"));
    let ts: i64 = recorded
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!(ts >= before && ts <= Utc::now().timestamp());
    let signature = recorded.header("webhook-signature").unwrap();
    assert!(signature.starts_with("v1,") && !signature.contains(' '));
    assert!(standard_signature_valid(&recorded, STD_SECRET));
    assert!(!standard_signature_valid(&recorded, STD_OLD_SECRET));

    // Outpost's standard mode: topic and metadata under `webhook-`, event metadata also bare.
    assert_eq!(recorded.header("webhook-topic"), Some("order.paid"));
    assert_eq!(recorded.header("webhook-source"), Some("shop"));
    assert_eq!(recorded.header("source"), Some("shop"));
    assert!(prefixed_headers(&recorded, "x-outpost-").is_empty());
}

#[tokio::test]
async fn standard_mode_rotation_sends_both_signatures_space_separated() {
    let receiver = Receiver::start().await;
    let provider = provider(&config(WebhookMode::Standard));
    let mut req = request(receiver.url("/"));
    req.credentials = rotated(
        STD_SECRET,
        STD_OLD_SECRET,
        Utc::now() + chrono::Duration::hours(1),
    );
    let (_, recorded) = send_one(&provider, &receiver, &req).await;
    let signature = recorded.header("webhook-signature").unwrap();
    assert_eq!(signature.split(' ').count(), 2, "{signature}");
    assert!(standard_signature_valid(&recorded, STD_SECRET));
    assert!(standard_signature_valid(&recorded, STD_OLD_SECRET));
}

#[tokio::test]
async fn standard_mode_metadata_cannot_replace_id_timestamp_or_signature() {
    let receiver = Receiver::start().await;
    let provider = provider(&config(WebhookMode::Standard));
    let mut req = request(receiver.url("/"));
    req.credentials = WebhookCredentials::new(STD_SECRET);
    req.delivery_metadata = map(&[("id", "forged"), ("signature", "v1,forged")]);
    req.event_metadata = map(&[("timestamp", "1"), ("webhook-id", "forged")]);
    req.custom_headers = map(&[("webhook-signature", "v1,forged")]);
    let (_, recorded) = send_one(&provider, &receiver, &req).await;
    assert_eq!(recorded.header("webhook-id"), Some("evt_123"));
    assert_ne!(recorded.header("webhook-timestamp"), Some("1"));
    assert!(standard_signature_valid(&recorded, STD_SECRET));
    assert!(
        !recorded
            .header("webhook-signature")
            .unwrap()
            .contains("forged")
    );
}

#[tokio::test]
async fn standard_mode_with_an_unusable_secret_fails_without_sending() {
    let receiver = Receiver::start().await;
    let provider = provider(&config(WebhookMode::Standard));
    let result = provider.send(&request(receiver.url("/"))).await;
    assert!(!result.success);
    assert_eq!(result.code, AttemptCode::InvalidRequest);
    let error = result.error.unwrap();
    assert!(error.contains("credentials.secret"), "{error}");
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn metadata_overrides_in_priority_order_but_never_the_signature() {
    let receiver = Receiver::start().await;
    let provider = provider(&config(WebhookMode::Default));
    let mut req = request(receiver.url("/"));
    req.delivery_metadata = map(&[
        ("region", "eu"),
        ("tier", "gold"),
        ("topic", "from-delivery-metadata"),
        ("signature", "v0=forged"),
    ]);
    req.event_metadata = map(&[("tier", "platinum"), ("signature", "v0=forged")]);
    let (result, recorded) = send_one(&provider, &receiver, &req).await;
    assert!(result.success);
    assert_eq!(recorded.header("x-outpost-region"), Some("eu"));
    assert_eq!(recorded.header("x-outpost-tier"), Some("platinum"));
    assert_eq!(
        recorded.header("x-outpost-topic"),
        Some("from-delivery-metadata")
    );
    let signature = recorded.header("x-outpost-signature").unwrap();
    assert!(default_signature_valid(signature, SECRET, &recorded.body));
}

#[tokio::test]
async fn custom_headers_are_sent_below_system_headers() {
    let receiver = Receiver::start().await;
    let provider = provider(&config(WebhookMode::Default));
    let mut req = request(receiver.url("/"));
    req.custom_headers = map(&[
        ("Authorization", "Bearer token-1"),
        ("X-Tenant", "acme"),
        ("x-outpost-event-id", "custom-id"),
        ("x-outpost-signature", "v0=forged"),
        ("Content-Type", "text/plain"),
        ("User-Agent", "spoofed"),
    ]);
    let (_, recorded) = send_one(&provider, &receiver, &req).await;
    assert_eq!(recorded.header("authorization"), Some("Bearer token-1"));
    assert_eq!(recorded.header("x-tenant"), Some("acme"));
    assert_eq!(recorded.header("x-outpost-event-id"), Some("evt_123"));
    assert_eq!(recorded.header("content-type"), Some("application/json"));
    assert_eq!(recorded.header("user-agent"), Some("jetpost/test-version"));
    let signature = recorded.header("x-outpost-signature").unwrap();
    assert!(default_signature_valid(signature, SECRET, &recorded.body));
}

#[tokio::test]
async fn without_a_secret_no_signature_header_is_sent_not_even_a_custom_one() {
    let receiver = Receiver::start().await;
    let provider = provider(&config(WebhookMode::Default));
    let mut req = request(receiver.url("/"));
    req.credentials = WebhookCredentials::default();
    req.custom_headers = map(&[("x-outpost-signature", "v0=forged")]);
    let (result, recorded) = send_one(&provider, &receiver, &req).await;
    assert!(result.success);
    assert_eq!(recorded.header("x-outpost-signature"), None);
}

#[tokio::test]
async fn custom_header_prefix_applies_in_default_mode() {
    let receiver = Receiver::start().await;
    let provider = provider(&WebhookConfig {
        header_prefix: "x-acme-".into(),
        ..config(WebhookMode::Default)
    });
    let mut req = request(receiver.url("/"));
    req.event_metadata = map(&[("k", "v")]);
    let (_, recorded) = send_one(&provider, &receiver, &req).await;
    assert_eq!(
        prefixed_headers(&recorded, "x-acme-"),
        [
            "x-acme-event-id",
            "x-acme-k",
            "x-acme-signature",
            "x-acme-timestamp",
            "x-acme-topic"
        ]
    );
    assert!(prefixed_headers(&recorded, "x-outpost-").is_empty());
}

#[tokio::test]
async fn server_error_is_a_failure_with_status_code_and_body() {
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Full {
        status: 500,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: "database down".into(),
    });
    let provider = provider(&config(WebhookMode::Default));
    let result = provider.send(&request(receiver.url("/"))).await;
    assert!(!result.success);
    assert_eq!(result.code.to_string(), "500");
    assert_eq!(result.status(), Some(500));
    assert_eq!(result.response_body, "database down");
    assert_eq!(
        result.response_headers,
        [("content-type".to_owned(), "text/plain".to_owned())]
    );
    assert_eq!(result.retry_after, None);
}

#[tokio::test]
async fn too_many_requests_reports_retry_after() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Full {
        status: 429,
        headers: vec![("retry-after".into(), "7".into())],
        body: "slow down".into(),
    }]);
    let provider = provider(&config(WebhookMode::Default));
    let result = provider.send(&request(receiver.url("/"))).await;
    assert!(!result.success);
    assert_eq!(result.code, AttemptCode::Status(429));
    assert_eq!(result.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(result.response_body, "slow down");
}

#[tokio::test]
async fn response_body_over_the_cap_is_replaced_by_a_placeholder() {
    let receiver = Receiver::start().await;
    receiver.script([
        Reply::Full {
            status: 200,
            headers: vec![],
            body: "x".repeat(100_000),
        },
        Reply::Full {
            status: 200,
            headers: vec![],
            body: "y".repeat(64),
        },
    ]);
    let provider = provider(&WebhookConfig {
        max_response_body_bytes: 64,
        ..config(WebhookMode::Default)
    });
    let over = provider.send(&request(receiver.url("/"))).await;
    assert!(over.success);
    assert_eq!(
        over.response_body,
        "Response body exceeded 64 bytes and was not stored"
    );
    let at_cap = provider.send(&request(receiver.url("/"))).await;
    assert_eq!(at_cap.response_body, "y".repeat(64));
}

#[tokio::test]
async fn redirects_are_not_followed_and_count_as_success() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Full {
        status: 302,
        headers: vec![("location".into(), receiver.url("/elsewhere"))],
        body: String::new(),
    }]);
    let provider = provider(&config(WebhookMode::Default));
    let result = provider.send(&request(receiver.url("/hook"))).await;
    assert!(result.success, "success = status < 400");
    assert_eq!(result.code, AttemptCode::Status(302));
    assert!(
        result
            .response_headers
            .contains(&("location".to_owned(), receiver.url("/elsewhere")))
    );
    // Give a follow-up request every chance to show up before checking it did not.
    provider.send(&request(receiver.url("/marker"))).await;
    let paths: Vec<String> = receiver.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook", "/marker"]);
}

#[tokio::test]
async fn slow_endpoint_times_out() {
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Delay(Duration::from_secs(30), 200));
    let provider = WebhookProvider::new(
        &config(WebhookMode::Default),
        Duration::from_millis(500),
        "test-version",
    )
    .unwrap();
    let result = provider.send(&request(receiver.url("/"))).await;
    assert!(!result.success);
    assert_eq!(result.code, AttemptCode::Timeout);
    assert_eq!(result.status(), None);
    assert!(result.error.unwrap().contains("no response within"));
}

#[tokio::test]
async fn closed_port_is_connection_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let provider = provider(&config(WebhookMode::Default));
    let result = provider
        .send(&request(format!("http://127.0.0.1:{port}/")))
        .await;
    assert!(!result.success);
    assert_eq!(result.code, AttemptCode::ConnectionRefused, "{result:?}");
}

#[tokio::test]
async fn dropped_connection_is_connection_reset() {
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Drop);
    let provider = provider(&config(WebhookMode::Default));
    let result = provider.send(&request(receiver.url("/"))).await;
    assert!(!result.success);
    assert_eq!(result.code, AttemptCode::ConnectionReset, "{result:?}");
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn unknown_host_is_dns_error() {
    let provider = provider(&config(WebhookMode::Default));
    // RFC 6761: .invalid never resolves.
    let result = provider
        .send(&request("http://no-such-host.invalid/".into()))
        .await;
    assert_eq!(result.code, AttemptCode::DnsError, "{result:?}");
    let message = result.error.unwrap();
    assert!(
        message.contains("could not resolve no-such-host.invalid"),
        "{message}"
    );
}

#[tokio::test]
async fn tls_to_a_plain_http_endpoint_is_tls_error() {
    let receiver = Receiver::start().await;
    let provider = provider(&config(WebhookMode::Default));
    let url = receiver.url("/").replace("http://", "https://");
    let result = provider.send(&request(url)).await;
    assert_eq!(result.code, AttemptCode::TlsError, "{result:?}");
}

#[tokio::test]
async fn private_address_guard_blocks_loopback_only_when_enabled() {
    let receiver = Receiver::start().await;
    let blocking = provider(&WebhookConfig {
        block_private_ips: true,
        ..config(WebhookMode::Default)
    });
    let literal = blocking.send(&request(receiver.url("/"))).await;
    assert!(!literal.success);
    assert_eq!(literal.code, AttemptCode::BlockedAddress);
    assert_eq!(literal.code.to_string(), "blocked_address");
    let message = literal.error.unwrap();
    assert!(
        message.contains("127.0.0.1 is a loopback address"),
        "{message}"
    );

    // A name is checked on the addresses the connection would use (DNS rebinding safe).
    let port = receiver.url("/").rsplit(':').next().unwrap().to_owned();
    let named = blocking
        .send(&request(format!("http://localhost:{port}")))
        .await;
    assert_eq!(named.code, AttemptCode::BlockedAddress, "{named:?}");
    assert!(
        named.error.unwrap().contains("localhost resolves to"),
        "message names the host"
    );
    assert!(receiver.requests().is_empty());

    let open = provider(&config(WebhookMode::Default));
    let allowed = open.send(&request(receiver.url("/"))).await;
    assert!(allowed.success, "{allowed:?}");
    assert_eq!(receiver.requests().len(), 1);
}
