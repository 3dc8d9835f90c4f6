//! Building blocks for tests that run the real pipeline: a tenant stream with the durable pull
//! consumer jetpost expects, static account specs, a NATS source config, and webhook
//! destinations created straight in the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use jetpost::delivery::Handoff;
use jetpost::event::TopicRules;
use jetpost::ingest::{Ingest, IngestOptions};
use jetpost::routing::RoutingCache;
use jetpost::source::nats::topology::{self, Declaration};
use jetpost::source::nats::{AccountSpec, NatsSourceConfig, Origin, TenantRule};
use jetpost::store::{Credentials, NewDestination, Store};

use crate::support::nats::{LocalNatsServer, connect_as};

pub const STREAM: &str = "EVENTS";
pub const CONSUMER: &str = "jetpost";

/// What `jetpost nats declare` creates: stream `EVENTS` on `events.>`, durable pull consumer
/// `jetpost` with explicit ack.
pub fn declaration() -> Declaration {
    Declaration {
        stream: STREAM.into(),
        subjects: vec!["events.>".into()],
        consumer: CONSUMER.into(),
        max_deliver: None,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 4096,
    }
}

/// Declares the stream and consumer in `account` and returns a JetStream context of that account.
pub async fn provision(server: &LocalNatsServer, account: &str) -> jetstream::Context {
    let js = jetstream::new(connect_as(server, account).await);
    topology::declare(&js, &declaration()).await.unwrap();
    js
}

/// A static account named `name` proving tenant `tenant`, connecting with its first user's creds.
pub fn account(server: &LocalNatsServer, name: &str, tenant: &str) -> AccountSpec {
    AccountSpec {
        name: name.into(),
        origin: Origin::Static,
        tenant: TenantRule::Account(tenant.into()),
        stream: STREAM.into(),
        consumer: CONSUMER.into(),
        credentials_file: Some(server.creds_path(name).unwrap()),
        defined_at: format!("test account {name}"),
        fingerprint: [0; 32],
    }
    .fingerprinted(None)
}

/// A source config for `accounts` on `server`, quick to resync and drain.
pub fn source_config(server: &LocalNatsServer, accounts: Vec<AccountSpec>) -> NatsSourceConfig {
    NatsSourceConfig {
        servers: vec![server.url()],
        accounts,
        accounts_dir: None,
        max_in_flight: 64,
        drain_timeout: Duration::from_secs(10),
        resync_interval: Duration::from_secs(1),
    }
}

/// The real ingest on `store`, with no topic restrictions.
pub fn ingest(store: &Store, committers: usize) -> Ingest {
    Ingest::new(
        store.clone(),
        IngestOptions {
            topics: TopicRules::default(),
            committers,
            max_batch: 256,
        },
        Arc::new(RoutingCache::new(store.clone())),
        Handoff::nowhere(),
    )
}

/// Creates `tenant` (if needed) and a webhook destination `id` on `topics` posting to `url`.
pub async fn webhook(store: &Store, tenant: &str, id: &str, topics: &[&str], url: &str) {
    store.upsert_tenant(tenant, None).await.unwrap();
    store
        .create_destination(&NewDestination {
            tenant_id: tenant.into(),
            id: id.into(),
            kind: "webhook".into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            filter: None,
            config: BTreeMap::from([("url".to_string(), url.to_string())]),
            credentials: Credentials::default(),
            delivery_metadata: None,
            metadata: None,
        })
        .await
        .unwrap();
}

/// Writes `name`'s directory into the accounts directory `root` as an operator would: its
/// user's credentials and a `meta.yaml` for tenant `name`, stream `EVENTS`, consumer `jetpost`.
pub fn install_account(root: &std::path::Path, server: &LocalNatsServer, name: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(server.creds_path(name).unwrap(), dir.join("user.creds")).unwrap();
    std::fs::write(
        dir.join("meta.yaml"),
        format!("tenant_id: {name}\nstream: {STREAM}\nconsumer: {CONSUMER}\n"),
    )
    .unwrap();
}

/// A URL nothing listens on: deliveries to it fail, which these tests do not look at.
pub const NOWHERE: &str = "http://127.0.0.1:9/hook";

pub async fn publish(js: &jetstream::Context, subject: &str, body: impl Into<bytes::Bytes>) {
    js.publish(subject.to_owned(), body.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

pub async fn stream_messages(js: &jetstream::Context) -> u64 {
    js.get_stream(STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}
