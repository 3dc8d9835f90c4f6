//! The `Receiver` helper itself: it records exactly what arrives and answers as told.

use std::time::Duration;

use crate::support::http_client;
use crate::support::receiver::{Receiver, Reply};

#[tokio::test]
async fn records_exact_body_and_headers() {
    let receiver = Receiver::start().await;
    let body = r#"{"zebra":1,"alpha":2,"big":12345678901234567890}"#;
    let response = http_client()
        .post(receiver.url("/hook?x=1"))
        .header("x-outpost-topic", "order.paid")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let requests = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/hook?x=1");
    assert_eq!(requests[0].header("x-outpost-topic"), Some("order.paid"));
    assert_eq!(&requests[0].body[..], body.as_bytes());
}

#[tokio::test]
async fn answers_as_scripted_then_by_default() {
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Status(503));
    receiver.script([
        Reply::Full {
            status: 429,
            headers: vec![("retry-after".into(), "7".into())],
            body: "slow down".into(),
        },
        Reply::Delay(Duration::from_millis(300), 201),
    ]);
    let client = http_client();
    let first = client.post(receiver.url("/")).send().await.unwrap();
    assert_eq!(first.status(), 429);
    assert_eq!(first.headers()["retry-after"], "7");
    assert_eq!(first.text().await.unwrap(), "slow down");
    let started = std::time::Instant::now();
    let second = client.post(receiver.url("/")).send().await.unwrap();
    assert_eq!(second.status(), 201);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let third = client.post(receiver.url("/")).send().await.unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn drop_closes_the_connection_without_an_answer() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Drop]);
    let client = http_client();
    let dropped = client.post(receiver.url("/")).body("{}").send().await;
    assert!(
        dropped.is_err(),
        "a dropped connection must be an error, got {dropped:?}"
    );
    let next = client
        .post(receiver.url("/"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 200);
    assert_eq!(receiver.requests().len(), 2);
}
