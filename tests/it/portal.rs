//! The tenant portal in a real browser (Debian's chromium driven by playwright-core, the script
//! `tests/browser/portal.mjs`) against a real `jetpost serve` consuming an operator-mode
//! nats-server, delivering to a real receiver and the machine's RabbitMQ. The script does what a
//! tenant does; this side publishes through NATS, breaks and mends the endpoint when asked, and
//! checks what arrived.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use jetpost::api::TenantTokens;
use serde_json::{Value, json};

use crate::destinations::rabbitmq::{exchange_and_queue, next_message, rabbitmq};
use crate::support::browser::BrowserRun;
use crate::support::db::TestDb;
use crate::support::http_client;
use crate::support::nats::{AccountSpec, LocalNatsServer, options};
use crate::support::pipeline::{install_account, provision, publish};
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::serve::Serve;
use crate::webhook::default_signature_valid;

const API_KEY: &str = "portal-admin-key";
const JWT_SECRET: &str = "portal-jwt-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_manages_a_webhook_and_retries_a_failed_delivery_in_the_portal() {
    let server = LocalNatsServer::start_operator(options().await, [AccountSpec::new("acme")])
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let js = provision(&server, "acme").await;
    let accounts = tempfile::tempdir().unwrap();
    install_account(accounts.path(), &server, "acme");
    let db = TestDb::sqlite().await;
    let receiver = Receiver::start().await;
    // Two sites that show the portal in an iframe: one listed in portal.frame_ancestors.
    let allowed_site = Receiver::start().await;
    let other_site = Receiver::start().await;
    let allowed_origin = allowed_site.url("");
    let serve = Serve::start(&[
        ("API_KEY", API_KEY),
        ("API_JWT_SECRET", JWT_SECRET),
        ("DATABASE_URL", db.url()),
        ("PUBLISH_NATS_SERVERS", &server.url()),
        (
            "PUBLISH_NATS_ACCOUNTS_DIR",
            accounts.path().to_str().unwrap(),
        ),
        // One attempt per event unless the tenant retries: the failed attempt stays failed.
        ("RETRY_MAX_LIMIT", "0"),
        // A topic list, so the form offers a topics picker.
        ("TOPICS", "order.paid,order.shipped"),
        ("PORTAL_FRAME_ANCESTORS", &allowed_origin),
        // Everything jetpost logs, to check that no token is among it.
        ("LOG_LEVEL", "debug"),
    ])
    .await;
    admin(&serve, reqwest::Method::PUT, "/api/v1/tenants/acme").await;
    let link = admin(&serve, reqwest::Method::GET, "/api/v1/tenants/acme/portal").await;
    let link = link["redirect_url"].as_str().unwrap().to_owned();
    // A token issued 25 hours ago ran out an hour ago.
    let expired = TenantTokens::new(JWT_SECRET)
        .unwrap()
        .issue("acme", Utc::now() - TimeDelta::hours(25))
        .unwrap();
    for site in [&allowed_site, &other_site] {
        site.reply_with(Reply::Full {
            status: 200,
            headers: vec![("content-type".to_owned(), "text/html".to_owned())],
            body: format!(
                "<!doctype html><title>Dashboard</title>\
                 <iframe src=\"{}\" title=\"Webhooks\"></iframe>",
                link.replace('&', "&amp;")
            ),
        });
    }
    let screenshots = std::env::var("JETPOST_PORTAL_SCREENSHOTS").ok();
    let scratch = tempfile::tempdir().unwrap();
    let screenshots = screenshots.unwrap_or_else(|| scratch.path().to_str().unwrap().to_owned());
    let webhook_url = receiver.url("/hooks");

    let mut run = BrowserRun::start(
        "portal.mjs",
        &[
            ("PORTAL_URL", &link),
            (
                "EXPIRED_URL",
                &serve.url(&format!("/portal#token={expired}")),
            ),
            ("NO_TOKEN_URL", &serve.url("/portal")),
            ("RECEIVER_URL", &webhook_url),
            ("ALLOWED_SITE_URL", &allowed_site.url("/dashboard")),
            ("OTHER_SITE_URL", &other_site.url("/dashboard")),
            ("SCREENSHOTS_DIR", &screenshots),
        ],
    )
    .await;
    let mut secret = String::new();
    let (_amqp, channel) = rabbitmq().await;
    let mut queue = String::new();
    while let Some(step) = run.next_step().await {
        let answer = match step["do"].as_str().unwrap_or_default() {
            "secret" => {
                secret = step["secret"].as_str().unwrap().to_owned();
                json!({})
            }
            "publish" => {
                let event = json!({"id": step["id"], "topic": step["topic"], "data": step["data"]});
                publish(&js, "events.portal", event.to_string()).await;
                json!({})
            }
            "delivered" => {
                let event_id = step["event_id"].as_str().unwrap();
                let count = step["count"].as_u64().unwrap_or(1) as usize;
                wait_for_event(&receiver, event_id, count).await;
                json!({})
            }
            "publish-many" => {
                let count = step["count"].as_u64().unwrap();
                for i in 0..count {
                    let event = json!({"id": format!("evt-page-{i}"), "topic": "order.paid",
                                       "data": {"amount": 500, "n": i}});
                    publish(&js, "events.portal", event.to_string()).await;
                }
                for i in 0..count {
                    wait_for_event(&receiver, &format!("evt-page-{i}"), 1).await;
                }
                json!({})
            }
            "exchange" => {
                queue = exchange_and_queue(&channel, "portal").await;
                json!({"exchange": queue})
            }
            "queued" => {
                let message = next_message(&channel, &queue).await;
                let body: Value = serde_json::from_slice(&message.body).unwrap();
                assert_eq!(body, step["data"], "the event's data arrived in RabbitMQ");
                assert_eq!(message.routing_key, "order.shipped");
                json!({})
            }
            "short-link" => {
                // A token with 10 s left: issued 24 h minus 10 s ago.
                let token = TenantTokens::new(JWT_SECRET)
                    .unwrap()
                    .issue(
                        "acme",
                        Utc::now() - TimeDelta::hours(24) + TimeDelta::seconds(10),
                    )
                    .unwrap();
                json!({"url": serve.url(&format!("/portal#token={token}"))})
            }
            "fail" => {
                receiver.reply_with(Reply::Status(500));
                json!({})
            }
            "recover" => {
                receiver.reply_with(Reply::Status(200));
                json!({})
            }
            "deleted" => {
                let list = admin(
                    &serve,
                    reqwest::Method::GET,
                    "/api/v1/tenants/acme/destinations",
                )
                .await;
                let types: Vec<&str> = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["type"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    types,
                    ["rabbitmq"],
                    "the portal deleted the webhook: {list}"
                );
                let rabbitmq = &list[0];
                assert_eq!(rabbitmq["topics"], json!(["order.shipped"]));
                assert_eq!(rabbitmq["config"]["tls"], "false");
                assert_eq!(rabbitmq["credentials"]["username"], "guest");
                json!({})
            }
            other => json!({"error": format!("this test does not know the step {other:?}")}),
        };
        run.reply(answer).await;
    }
    run.finish().await;
    let token = link
        .split("token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let logs = serve.logs();
    assert!(logs.len() > 1000, "debug logs were written: {logs}");
    assert!(
        !logs.contains(token),
        "the tenant token is in jetpost's logs"
    );

    // What the endpoint received: the events the filter let through (one twice: the failed
    // attempt and the portal's retry), signed with the secret the portal showed (which keeps
    // signing for a day after the rotation), with the header entered in the form; never those
    // the filter held back (`evt-small`, and `evt-mq`, which went to RabbitMQ).
    let requests = receiver.requests();
    let mut ids: Vec<&str> = requests
        .iter()
        .map(|r| r.header("x-outpost-event-id").unwrap_or_default())
        .collect();
    assert_eq!(ids[..3], ["evt-big", "evt-retry", "evt-retry"]);
    let mut pages: Vec<String> = (0..20).map(|i| format!("evt-page-{i}")).collect();
    pages.sort();
    ids[3..].sort();
    assert_eq!(ids[3..], pages);
    for request in &requests {
        assert_eq!(request.path, "/hooks");
        assert_eq!(request.header("x-portal-test"), Some("from-the-portal"));
        assert_eq!(request.header("x-outpost-app"), Some("shop"));
        let signature = request.header("x-outpost-signature").unwrap();
        assert!(
            default_signature_valid(signature, &secret, &request.body),
            "signed with the secret the portal showed: {signature}"
        );
    }
}

/// Waits until the receiver got `count` requests for `event_id`.
async fn wait_for_event(receiver: &Receiver, event_id: &str, count: usize) {
    let of_event = |r: &Recorded| r.header("x-outpost-event-id") == Some(event_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while receiver.requests().iter().filter(|r| of_event(r)).count() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} delivery(ies) of {event_id} within 30 s; got {:?}",
            receiver.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin(serve: &Serve, method: reqwest::Method, path: &str) -> Value {
    let response = http_client()
        .request(method, serve.url(path))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}
