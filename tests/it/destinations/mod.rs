//! Destination types other than webhook, each against its real service.

mod aws;
mod hookdeck;
mod kafka;
mod nats;
pub mod rabbitmq;

use std::collections::BTreeMap;

use async_nats::jetstream;
use chrono::Utc;
use jetpost::config::{AccountConfig, Config};
use jetpost::local_nats::LocalNatsServer;
use jetpost::store::{Credentials, Destination, Event};
use reqwest::StatusCode;
use serde_json::Value;

use crate::api::{Auth, Service};
use crate::support::db::TestDb;
use crate::support::nats::{declare_stream_and_consumer, plain_server};

/// A tenant's NATS account feeding jetpost: a real nats-server with the stream `events`
/// (`events.>`) and the consumer `jetpost`, consumed for tenant `t1` (created) by an in-process
/// jetpost with `tweak` applied to its config.
pub struct TenantStream {
    /// Stopped on drop: kept for as long as the test runs.
    pub server: LocalNatsServer,
    pub js: jetstream::Context,
    pub svc: Service,
}

impl TenantStream {
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TenantStream {
        let server = plain_server().await;
        let js = jetstream::new(server.connect().await.unwrap());
        declare_stream_and_consumer(&js, "events", &["events.>"], "jetpost").await;
        let url = server.url();
        let svc = Service::start_with(TestDb::sqlite().await, move |c| {
            c.publishmq.nats.servers = vec![url];
            c.publishmq.nats.accounts = vec![AccountConfig {
                name: "t1".into(),
                credentials_file: None,
                stream: "events".into(),
                consumer: "jetpost".into(),
                tenant_id: "t1".into(),
            }];
            tweak(c);
        })
        .await;
        svc.tenant("t1").await;
        TenantStream { server, js, svc }
    }

    /// Publishes `event` (an Outpost event as JSON text) into the tenant's stream.
    pub async fn publish(&self, event: &str) {
        publish_event(&self.js, event).await;
    }

    /// The service, the JetStream context to publish with, and the server.
    pub fn into_parts(self) -> (Service, jetstream::Context, LocalNatsServer) {
        (self.svc, self.js, self.server)
    }
}

/// Publishes `raw` (an Outpost event as JSON text) on `events.orders` and waits for the ack.
pub async fn publish_event(js: &jetstream::Context, raw: &str) {
    js.publish("events.orders", raw.to_owned().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The attempts recorded for tenant `t1`'s `destination`, with their response data.
pub async fn attempts(svc: &Service, destination: &str) -> Vec<Value> {
    let (status, list) = svc
        .get(
            &format!(
                "/api/v1/tenants/t1/destinations/{destination}/attempts?include=response_data"
            ),
            &Auth::Admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["models"].as_array().cloned().unwrap_or_default()
}

/// A stored destination `direct` of tenant `t1`, for tests that open a type's publisher
/// themselves.
pub fn destination(
    kind: &str,
    config: &[(&str, &str)],
    credentials: &[(&str, &str)],
) -> Destination {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Destination {
        tenant_id: "t1".into(),
        id: "direct".into(),
        kind: kind.into(),
        topics: vec!["*".into()],
        filter: None,
        config: map(config),
        credentials: Credentials(map(credentials)),
        delivery_metadata: None,
        metadata: None,
        disabled_at: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

/// An event `id` of tenant `t1` on topic `order.paid` with data `{"n":1}`.
pub fn event(id: &str) -> Event {
    Event {
        tenant_id: "t1".into(),
        id: id.into(),
        destination_id: None,
        topic: "order.paid".into(),
        time: Utc::now(),
        metadata: None,
        data: r#"{"n":1}"#.into(),
        eligible_for_retry: true,
        destination_ids: Vec::new(),
        created_at: Utc::now(),
    }
}

/// The `key` of each field of a `/destination-types` entry's `config_fields` or
/// `credential_fields`.
pub fn field_keys(fields: &Value) -> Vec<String> {
    fields
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_owned())
        .collect()
}

/// Tenant `t1`'s delivery of `event` to `d1` once it has failed for good (waiting up to
/// `PATIENCE`; the failure says which attempts were made).
pub async fn failed_delivery(svc: &Service, event: &str) -> jetpost::store::Delivery {
    let store = svc.store().await;
    let deadline = tokio::time::Instant::now() + crate::support::nats::PATIENCE;
    loop {
        let found = store.list_deliveries("t1", event).await.unwrap();
        if let Some(d) = found
            .into_iter()
            .find(|d| d.status == jetpost::store::DeliveryStatus::Failed)
        {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed delivery; attempts: {:?}",
            attempts(svc, "d1").await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
