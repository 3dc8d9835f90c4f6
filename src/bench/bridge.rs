//! The `bridge` limit: the NATS → webhook path with nothing in between, run in the same bench
//! as jetpost on the same accounts, receiver and event stream. Per tenant it pulls from the
//! tenant's consumer, signs and POSTs each event with jetpost's own webhook client, and acks
//! once the receiver answered; no store, no retries, no attempt log. It is what a stateless
//! NATS → HTTP pipe does on this machine: the ceiling jetpost's throughput is compared with.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::flow::{self, FlowResult};
use super::rig::{self, BenchEnv, Rig, RigOptions, TenantPlan};
use crate::config::WebhookConfig;
use crate::destination::webhook::{WebhookCredentials, WebhookProvider, WebhookRequest};

/// Requests in flight per tenant: jetpost's default per destination
/// (`delivery_max_concurrency_per_destination`).
pub const IN_FLIGHT_PER_TENANT: usize = 16;

/// The fields of an Outpost event the pipe needs; `data` stays the bytes that were published.
#[derive(Deserialize)]
struct Event<'a> {
    id: String,
    topic: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// `tenants` accounts publish `events` in total as fast as they can while the bridge delivers
/// them, one webhook per tenant.
pub async fn throughput(env: &BenchEnv, tenants: usize, events: u64) -> anyhow::Result<FlowResult> {
    let plans = TenantPlan::many(&format!("br{tenants}"), tenants);
    let parts = flow::assign(&plans, 0, events);
    let rig = Rig::prepare(env, RigOptions::webhooks(plans, events)).await?;
    let settings = WebhookConfig {
        block_private_ips: false,
        ..WebhookConfig::default()
    };
    let provider = WebhookProvider::new(&settings, Duration::from_secs(30), "bridge")?;
    let stop = CancellationToken::new();
    let mut pipes: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();
    for tenant in &rig.tenants {
        let pipe = Pipe {
            js: rig.jetstream(&tenant.name).await?,
            provider: provider.clone(),
            url: rig.receiver.fast_url(&tenant.name),
            credentials: WebhookCredentials::new(format!("whsec_bench_{}", tenant.name)),
        };
        pipes.push(tokio::spawn(pipe.run(stop.clone())));
    }
    flow::burst_all(&rig, &parts).await?;
    let (delivered, waited) = flow::wait(&rig, 0..events).await;
    let result = flow::result(&rig, 0..events, delivered, waited);
    stop.cancel();
    for pipe in pipes {
        pipe.await.context("a bridge pipe panicked")??;
    }
    rig.stop().await?;
    Ok(result)
}

/// One tenant's pipe.
struct Pipe {
    js: jetstream::Context,
    provider: WebhookProvider,
    url: String,
    credentials: WebhookCredentials,
}

impl Pipe {
    async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let consumer: PullConsumer = self
            .js
            .get_stream(rig::STREAM)
            .await?
            .get_consumer(rig::CONSUMER)
            .await
            .map_err(|err| anyhow::anyhow!("the bridge's consumer: {err}"))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(IN_FLIGHT_PER_TENANT * 4)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .context("pulling for the bridge")?;
        let permits = Arc::new(Semaphore::new(IN_FLIGHT_PER_TENANT));
        let this = Arc::new(self);
        loop {
            // The permit before the pull, so at most IN_FLIGHT_PER_TENANT are held.
            let permit = permits.clone().acquire_owned().await?;
            let next = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(_)) => continue,
                None => return Ok(()),
            };
            let pipe = this.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let ack = match pipe.deliver(&message.payload).await {
                    Some(true) => AckKind::Ack,
                    Some(false) => AckKind::Nak(None),
                    None => AckKind::Term,
                };
                let _ = message.ack_with(ack).await;
            });
        }
    }

    /// POSTs one event: whether the receiver took it, `None` when it is not an event.
    async fn deliver(&self, payload: &[u8]) -> Option<bool> {
        let event: Event<'_> = serde_json::from_slice(payload).ok()?;
        let request = WebhookRequest {
            event_id: event.id,
            topic: event.topic,
            body: Bytes::copy_from_slice(event.data.get().as_bytes()),
            url: self.url.clone(),
            credentials: self.credentials.clone(),
            ..WebhookRequest::default()
        };
        Some(self.provider.send(&request).await.success)
    }
}
