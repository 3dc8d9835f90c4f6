//! Test-facing side of `jetpost::local_nats`: servers started with the nats-server from
//! `$NATS_SERVER_BIN` or the project's `.tools/`, clients that record connection events, and a
//! work-queue stream with a durable pull consumer as jetpost expects it.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull, stream::Stream};
use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::{Instant, sleep};

pub use jetpost::local_nats::*;

/// Generous bound for anything the server should do "soon" on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Options with the nats-server found from the environment (read here, at the call site).
pub async fn options() -> ServerOptions {
    let lookup = BinaryLookup::from_env(Some(Path::new(env!("CARGO_MANIFEST_DIR"))));
    let binary = lookup
        .find()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    ServerOptions::new(binary)
}

/// A JetStream server without authentication.
pub async fn plain_server() -> LocalNatsServer {
    LocalNatsServer::start_plain(options().await)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// An operator-mode server with one JetStream account per name.
pub async fn operator_server(accounts: &[&str]) -> LocalNatsServer {
    LocalNatsServer::start_operator(
        options().await,
        accounts.iter().map(|name| AccountSpec::new(*name)),
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

/// A client of `account`'s first user.
pub async fn connect_as(server: &LocalNatsServer, account: &str) -> Client {
    server
        .connect_as(account)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// A client (with `creds`, or none in plain mode) whose connection events arrive on the receiver.
pub async fn connect_with_events(
    server: &LocalNatsServer,
    creds: Option<&UserCreds>,
) -> (Client, UnboundedReceiver<Event>) {
    let options = match creds {
        Some(creds) => server.connect_options_with(creds).await.unwrap(),
        None => ConnectOptions::new(),
    };
    let (sender, receiver) = unbounded_channel();
    let client = options
        .event_callback(move |event| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(event);
            }
        })
        .connect(server.url())
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    (client, receiver)
}

/// Waits for the first event that `wanted` accepts; panics after [`PATIENCE`].
pub async fn wait_for_event(
    events: &mut UnboundedReceiver<Event>,
    what: &str,
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if wanted(&event) => return event,
            Ok(Some(_)) => {}
            Ok(None) => panic!("event stream ended before {what}"),
            Err(_) => panic!("no {what} event within {PATIENCE:?}"),
        }
    }
}

/// The names of the clients connected to the server whose monitoring endpoint is `monitoring`
/// (its `/connz`; unnamed clients are left out).
pub async fn connection_names(monitoring: &str) -> Vec<String> {
    let connz: serde_json::Value = crate::support::http_client()
        .get(format!("{monitoring}/connz?limit=100000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    connz["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Polls `condition` until it holds; panics with `what` after [`PATIENCE`].
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// A work-queue file stream on `subjects` with a durable pull consumer (explicit ack), the
/// topology `jetpost nats declare` creates.
pub async fn declare_stream_and_consumer(
    js: &jetstream::Context,
    stream: &str,
    subjects: &[&str],
    consumer: &str,
) -> (Stream, PullConsumer) {
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: stream.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|error| panic!("creating stream {stream}: {error}"));
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(consumer.to_owned()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|error| panic!("creating consumer {consumer}: {error}"));
    (stream, consumer)
}
