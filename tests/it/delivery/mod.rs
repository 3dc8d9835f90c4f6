//! The delivery dispatcher end to end: events accepted through `Ingest` (or written to a shared
//! Postgres store), delivered by real dispatchers to real HTTP receivers, and checked on the
//! wire and in the store. Replica tests run two dispatchers, or `jetpost serve` children.

mod alerts;
mod replicas;
mod retries;
mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use jetpost::config::{Config, Secret};
use jetpost::delivery::{Dispatcher, DispatcherOptions, Handoff, Inbox};
use jetpost::destination::webhook::WebhookProvider;
use jetpost::event::TopicRules;
use jetpost::ingest::{Accepted, Ingest, IngestOptions};
use jetpost::routing::RoutingCache;
use jetpost::store::{
    Attempt, AttemptFilter, Credentials, Delivery, DeliveryStatus, Destination, NewDestination,
    PageRequest, SortDir, Store,
};
use sha2::Sha256;
use tokio::sync::Notify;

use crate::support::db::TestDb;

pub const TENANT: &str = "acme";
pub const SECRET: &str = "whsec_delivery_test";
pub const AES: &str = "delivery-test-aes";
/// Generous: CI has two cores shared with Postgres and the receivers.
pub const WAIT: Duration = Duration::from_secs(60);

/// The default configuration with a fast retry schedule (1 s, 1 s, 2 s), and deliveries to
/// private addresses allowed (the receivers are on loopback).
pub fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config {
        api_auth_disabled: true,
        aes_encryption_secret: Secret::new(AES),
        retry_schedule: vec![1, 1, 2],
        ..Config::default()
    };
    config.destinations.webhook.block_private_ips = false;
    tweak(&mut config);
    config
}

/// `v0=<hex HMAC-SHA256(secret, body)>`, written from Outpost's docs.
pub fn v0_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Polls `probe` until it returns `Some`, panicking after `WAIT` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn webhook(id: &str, url: String, topics: &[&str]) -> NewDestination {
    NewDestination {
        tenant_id: TENANT.into(),
        id: id.into(),
        kind: "webhook".into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        filter: None,
        config: BTreeMap::from([("url".into(), url)]),
        credentials: Credentials(BTreeMap::from([("secret".into(), SECRET.into())])),
        delivery_metadata: None,
        metadata: None,
    }
}

/// A store with tenant `acme`, an ingest pipeline on it, and a dispatcher once started.
pub struct Bed {
    /// Kept for the test's length: dropping it removes the database.
    _db: TestDb,
    pub store: Store,
    routing: Arc<RoutingCache>,
    pub ingest: Arc<Ingest>,
    pub wake: Arc<Notify>,
    pub dispatcher: Option<Dispatcher>,
}

impl Bed {
    pub async fn sqlite() -> Bed {
        Bed::on(TestDb::sqlite().await).await
    }

    pub async fn on(db: TestDb) -> Bed {
        crate::support::init_logs();
        let store = db.store(Some(AES)).await;
        store.upsert_tenant(TENANT, None).await.unwrap();
        let routing = Arc::new(RoutingCache::new(store.clone()));
        // No dispatcher yet: deliveries are committed pending until one starts.
        let ingest = Bed::ingest_on(&store, &routing, Handoff::nowhere());
        Bed {
            _db: db,
            store,
            routing,
            ingest,
            wake: Arc::new(Notify::new()),
            dispatcher: None,
        }
    }

    fn ingest_on(store: &Store, routing: &Arc<RoutingCache>, handoff: Handoff) -> Arc<Ingest> {
        Arc::new(Ingest::new(
            store.clone(),
            IngestOptions {
                topics: TopicRules::new(Vec::<String>::new(), false),
                committers: 1,
                max_batch: 64,
            },
            routing.clone(),
            handoff,
        ))
    }

    /// Creates the destination as the API does (routing follows the store's writes).
    pub async fn create(&self, destination: NewDestination) -> Destination {
        self.store.create_destination(&destination).await.unwrap()
    }

    pub async fn disable(&self, destination_id: &str) {
        self.store
            .disable_destination(TENANT, destination_id)
            .await
            .unwrap();
    }

    pub fn start(&mut self, config: &Config) {
        self.start_with(config, |_| {});
    }

    pub fn start_with(&mut self, config: &Config, tweak: impl FnOnce(&mut DispatcherOptions)) {
        config.validate().unwrap();
        let provider = WebhookProvider::new(
            &config.destinations.webhook,
            config.delivery_timeout(),
            "test",
        )
        .unwrap();
        let mut options = DispatcherOptions::from_config(config);
        tweak(&mut options);
        // As `jetpost serve` does: the dispatcher's inbox first, for ingest to hand fresh
        // deliveries over through and to wake the dispatcher with.
        let inbox = Inbox::new(options);
        self.wake = inbox.deliveries_queued();
        self.ingest = Bed::ingest_on(&self.store, &self.routing, inbox.handoff());
        let dispatcher = Dispatcher::start(self.store.clone(), provider, inbox).unwrap();
        self.dispatcher = Some(dispatcher);
    }

    pub async fn stop(&mut self) {
        if let Some(dispatcher) = self.dispatcher.take() {
            dispatcher.stop().await;
        }
    }

    pub async fn publish(&self, event: serde_json::Value) -> Accepted {
        self.publish_raw(serde_json::to_string(&event).unwrap().as_bytes())
            .await
    }

    pub async fn publish_raw(&self, raw: &[u8]) -> Accepted {
        self.ingest
            .accept(raw, || uuid::Uuid::new_v4().to_string())
            .await
            .unwrap()
    }

    /// The attempts of one event to one destination, by attempt number.
    pub async fn attempts(&self, event_id: &str, destination_id: &str) -> Vec<Attempt> {
        let filter = AttemptFilter {
            tenant_ids: vec![TENANT.into()],
            event_ids: vec![event_id.into()],
            destination_ids: vec![destination_id.into()],
            ..AttemptFilter::default()
        };
        let page = PageRequest {
            dir: SortDir::Asc,
            limit: 1000,
            ..PageRequest::default()
        };
        let mut attempts = self
            .store
            .list_attempts(&filter, &page)
            .await
            .unwrap()
            .models;
        attempts.sort_by_key(|a| a.attempt_number);
        attempts
    }

    pub async fn delivery(&self, event_id: &str, destination_id: &str) -> Delivery {
        self.store
            .list_deliveries(TENANT, event_id)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.destination_id == destination_id)
            .unwrap_or_else(|| panic!("no delivery of {event_id} to {destination_id}"))
    }

    /// Waits until the delivery reaches `status`.
    pub async fn wait_for(
        &self,
        event_id: &str,
        destination_id: &str,
        status: DeliveryStatus,
    ) -> Delivery {
        eventually(
            &format!("delivery of {event_id} to {destination_id} to be {status:?}"),
            || async {
                let d = self.delivery(event_id, destination_id).await;
                (d.status == status).then_some(d)
            },
        )
        .await
    }
}
