//! Proves `jetpost::local_nats` against the real nats-server: plain and operator mode, account
//! isolation, accounts added at runtime, user revocation, restart with the store kept, lame duck.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, stream::Stream};
use async_nats::{Client, Event};
use futures::StreamExt as _;
use tokio::time::Instant;

use crate::support::nats::*;

/// Publishes three events, pulls and acks them, and checks the work queue is empty afterwards.
async fn work_queue_round_trip(client: Client) {
    let js = jetstream::new(client);
    let (stream, consumer) =
        declare_stream_and_consumer(&js, "EVENTS", &["events.>"], "jetpost").await;
    let sent: Vec<String> = (0..3).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    for (n, payload) in sent.iter().enumerate() {
        js.publish(format!("events.{n}"), payload.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let received = pull_and_ack(&consumer, sent.len()).await;
    assert_eq!(received, sent);
    wait_for_message_count(stream, 0).await;
}

async fn pull_and_ack(consumer: &PullConsumer, count: usize) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut received = Vec::new();
    while received.len() < count {
        assert!(
            Instant::now() < deadline,
            "pulled {received:?}, expected {count} messages"
        );
        let mut batch = consumer
            .fetch()
            .max_messages(count - received.len())
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            received.push(String::from_utf8(message.payload.to_vec()).unwrap());
            // Acked and confirmed, so the work queue has dropped it when this returns.
            message.double_ack().await.unwrap();
        }
    }
    received
}

async fn wait_for_message_count(mut stream: Stream, expected: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let held = stream.info().await.map(|info| info.state.messages);
        if held.as_ref().is_ok_and(|held| *held == expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream holds {held:?} messages, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn plain_mode_serves_a_work_queue() {
    let server = plain_server().await;
    assert!(server.url().starts_with("nats://127.0.0.1:"));
    assert!(matches!(
        server.creds_path("any"),
        Err(LocalNatsError::PlainMode)
    ));
    work_queue_round_trip(server.connect().await.unwrap()).await;
}

#[tokio::test]
async fn operator_mode_serves_a_work_queue_to_a_tenant_with_creds() {
    let server = operator_server(&["acme"]).await;
    let creds = std::fs::read_to_string(server.creds_path("acme").unwrap()).unwrap();
    assert!(creds.starts_with("-----BEGIN NATS USER JWT-----\n"));
    assert_eq!(server.account_names(), ["acme"]);

    // Without credentials the server refuses.
    assert!(server.connect().await.is_err());
    work_queue_round_trip(connect_as(&server, "acme").await).await;
}

#[tokio::test]
async fn accounts_do_not_see_each_others_streams() {
    let server = operator_server(&["alpha", "beta"]).await;
    let alpha = jetstream::new(connect_as(&server, "alpha").await);
    let beta_client = connect_as(&server, "beta").await;
    let beta = jetstream::new(beta_client.clone());
    let (alpha_stream, _) =
        declare_stream_and_consumer(&alpha, "EVENTS", &["events.>"], "jetpost").await;

    let beta_streams: Vec<String> = beta
        .stream_names()
        .map(|name| name.unwrap())
        .collect()
        .await;
    assert!(beta_streams.is_empty(), "beta sees {beta_streams:?}");
    assert!(beta.get_stream("EVENTS").await.is_err());

    // Beta publishing on alpha's subject reaches nothing of alpha: alpha's next message is the
    // stream's only one.
    beta_client
        .publish("events.from-beta", "intruder".into())
        .await
        .unwrap();
    beta_client.flush().await.unwrap();
    let ack = alpha
        .publish("events.from-alpha", "own".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.sequence, 1);
    wait_for_message_count(alpha_stream, 1).await;

    // The same stream name in beta is a different stream.
    declare_stream_and_consumer(&beta, "EVENTS", &["events.>"], "jetpost").await;
}

#[tokio::test]
async fn an_account_added_at_runtime_has_jetstream_at_once() {
    let server = operator_server(&["acme"]).await;
    let late = server.add_account(AccountSpec::new("late")).await.unwrap();
    assert_eq!(
        server.account("late").unwrap().public_key(),
        late.public_key()
    );
    assert_eq!(server.account_names(), ["acme", "late"]);
    work_queue_round_trip(connect_as(&server, "late").await).await;

    assert!(matches!(
        server.add_account(AccountSpec::new("late")).await,
        Err(LocalNatsError::DuplicateAccount(_))
    ));
    assert!(matches!(
        server.add_account(AccountSpec::new("no/slash")).await,
        Err(LocalNatsError::InvalidAccountName(_))
    ));
}

#[tokio::test]
async fn an_account_without_jetstream_gets_it_through_an_update() {
    let server = operator_server(&[]).await;
    server
        .add_account(AccountSpec::new("core").without_jetstream())
        .await
        .unwrap();
    let js = jetstream::new(connect_as(&server, "core").await);
    assert!(js.query_account().await.is_err(), "JetStream is off");

    server
        .update_account(AccountSpec::new("core"))
        .await
        .unwrap();
    work_queue_round_trip(connect_as(&server, "core").await).await;
}

#[tokio::test]
async fn a_revoked_user_is_cut_off_while_a_new_user_of_the_account_works() {
    let server = operator_server(&["acme"]).await;
    let first = server.creds("acme").unwrap();
    let (old_client, mut events) = connect_with_events(&server, Some(&first)).await;
    old_client.flush().await.unwrap();

    let second = server.new_user("acme").await.unwrap();
    assert_ne!(second.public_key, first.public_key);
    assert_eq!(
        server.users("acme").unwrap(),
        [first.clone(), second.clone()]
    );

    server.revoke_user("acme", &first.public_key).await.unwrap();
    assert!(
        server
            .account("acme")
            .unwrap()
            .revocations()
            .contains_key(&first.public_key)
    );
    wait_for_event(&mut events, "disconnect of the revoked user", |event| {
        matches!(event, Event::Disconnected)
    })
    .await;
    let refused = server
        .connect_options_with(&first)
        .await
        .unwrap()
        .connect(server.url())
        .await;
    assert!(refused.is_err(), "revoked creds still connect");

    let (new_client, _events) = connect_with_events(&server, Some(&second)).await;
    work_queue_round_trip(new_client).await;
}

#[tokio::test]
async fn restart_keeps_the_port_and_the_store_and_clients_reconnect() {
    let server = operator_server(&["acme"]).await;
    server.add_account(AccountSpec::new("late")).await.unwrap();
    let url = server.url();
    let pid = server.pid().await.unwrap();

    let (client, mut events) =
        connect_with_events(&server, Some(&server.creds("acme").unwrap())).await;
    let js = jetstream::new(client);
    let (stream, consumer) =
        declare_stream_and_consumer(&js, "EVENTS", &["events.>"], "jetpost").await;
    for n in 0..3 {
        js.publish(format!("events.{n}"), format!("before-{n}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    server.restart().await.unwrap();
    assert_eq!(server.url(), url);
    assert_ne!(server.pid().await.unwrap(), pid);

    wait_for_event(&mut events, "disconnect", |event| {
        matches!(event, Event::Disconnected)
    })
    .await;
    wait_for_event(&mut events, "reconnect", |event| {
        matches!(event, Event::Connected)
    })
    .await;
    // The same client and consumer handle find the stored messages.
    wait_for_message_count(stream.clone(), 3).await;
    let received = pull_and_ack(&consumer, 3).await;
    assert_eq!(received, ["before-0", "before-1", "before-2"]);
    wait_for_message_count(stream, 0).await;

    // The account added at runtime survived the restart too.
    work_queue_round_trip(connect_as(&server, "late").await).await;
}

#[tokio::test]
async fn stop_and_start_or_kill_and_start_bring_the_same_server_back() {
    let server = plain_server().await;
    let js = jetstream::new(server.connect().await.unwrap());
    let (stream, _) = declare_stream_and_consumer(&js, "EVENTS", &["events.>"], "jetpost").await;
    js.publish("events.1", "kept".into())
        .await
        .unwrap()
        .await
        .unwrap();

    server.stop().await.unwrap();
    assert!(!server.is_running().await);
    assert!(server.connect().await.is_err());
    server.start().await.unwrap();
    assert!(matches!(
        server.start().await,
        Err(LocalNatsError::AlreadyRunning { .. })
    ));
    wait_for_message_count(stream.clone(), 1).await;

    server.kill().await.unwrap();
    assert!(!server.is_running().await);
    server.start().await.unwrap();
    wait_for_message_count(stream, 1).await;
}

#[tokio::test]
async fn lame_duck_tells_clients_and_refuses_new_connections() {
    let server = plain_server().await;
    let (client, mut events) = connect_with_events(&server, None).await;
    client.flush().await.unwrap();

    server.lame_duck().await.unwrap();
    wait_for_event(&mut events, "lame duck notice", |event| {
        matches!(event, Event::LameDuckMode)
    })
    .await;
    wait_until("new connections are refused", || async {
        server.connect().await.is_err()
    })
    .await;

    // Back from lame duck on the same port: the old client reconnects and JetStream works.
    server.restart().await.unwrap();
    wait_for_event(&mut events, "reconnect", |event| {
        matches!(event, Event::Connected)
    })
    .await;
    work_queue_round_trip(client).await;
}

#[tokio::test]
async fn a_server_in_a_named_directory_writes_creds_there_and_dies_with_its_guard() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("nats");
    let mut options = options().await;
    options.dir = Some(dir.clone());
    options.monitoring = true;
    let server = LocalNatsServer::start_operator(options, [AccountSpec::new("acme")])
        .await
        .unwrap();
    assert!(server.creds_path("acme").unwrap().starts_with(&dir));
    assert!(server.log_path().starts_with(&dir));
    assert!(server.log_tail(50).contains("Server is ready"));
    let monitoring = server.monitoring_url().unwrap();
    assert!(monitoring.starts_with("http://127.0.0.1:"));
    let pid = server.pid().await.unwrap();
    let port = server.client_port();

    drop(server);
    // The child is gone (reaped) and its port is free; the named directory stays.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(dir.join("nats-server.conf").is_file());
}

#[tokio::test]
async fn exports_and_imports_let_a_central_account_source_a_tenant_stream() {
    use jetstream::stream::{Config, External, Source, SubjectTransform};

    let server = operator_server(&["central"]).await;
    let tenant = server
        .add_account(
            AccountSpec::new("acme")
                .with_export(Export::service("$JS.API.CONSUMER.>"))
                .with_export(Export::service("$JS.FC.>"))
                .with_export(Export::stream("deliver.acme.>")),
        )
        .await
        .unwrap();
    let tenant_js = jetstream::new(connect_as(&server, "acme").await);
    tenant_js
        .create_stream(Config {
            name: "EVENTS".to_owned(),
            subjects: vec!["events.>".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
    for n in 0..3 {
        tenant_js
            .publish(format!("events.{n}"), format!("event-{n}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // The central account's imports are added at runtime, as aggregate mode does per tenant.
    let acme = tenant.public_key();
    server
        .update_account(
            AccountSpec::new("central")
                .with_import(
                    Import::service(&acme, "$JS.API.CONSUMER.>")
                        .with_local_subject("JS.acme.API.CONSUMER.>"),
                )
                .with_import(Import::service(&acme, "$JS.FC.>"))
                .with_import(Import::stream(&acme, "deliver.acme.>")),
        )
        .await
        .unwrap();
    let central_js = jetstream::new(connect_as(&server, "central").await);
    let aggregate = central_js
        .create_stream(Config {
            name: "AGGREGATE".to_owned(),
            sources: Some(vec![Source {
                name: "EVENTS".to_owned(),
                external: Some(External {
                    api_prefix: "JS.acme.API".to_owned(),
                    delivery_prefix: Some("deliver.acme".to_owned()),
                }),
                subject_transforms: vec![SubjectTransform {
                    source: "events.>".to_owned(),
                    destination: "tenant.acme.events.>".to_owned(),
                }],
                ..Default::default()
            }]),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_for_message_count(aggregate.clone(), 3).await;
    let first = aggregate.get_raw_message(1).await.unwrap();
    assert_eq!(first.subject.as_str(), "tenant.acme.events.0");
    assert_eq!(first.payload.as_ref(), b"event-0");
}

#[tokio::test]
async fn a_server_that_cannot_start_reports_its_log() {
    let mut options = options().await;
    // nats-server refuses lame-duck durations under 30 s.
    options.lame_duck_duration = Duration::from_secs(5);
    let error = LocalNatsServer::start_plain(options).await.unwrap_err();
    assert!(
        matches!(error, LocalNatsError::Exited { .. }),
        "unexpected error: {error}"
    );
    assert!(
        error.to_string().contains("lame_duck_duration"),
        "the log tail explains why: {error}"
    );
}
