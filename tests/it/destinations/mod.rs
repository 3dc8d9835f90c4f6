//! Destination types other than webhook, each against its real service.

mod aws;
mod hookdeck;
mod nats;
mod rabbitmq;

use async_nats::jetstream;
use jetpost::config::{AccountConfig, Config};
use jetpost::local_nats::LocalNatsServer;

use crate::api::Service;
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
