//! The machine's limits, measured in the same run without jetpost: a plain async-nats loop
//! pulling and acking a JetStream backlog (and the publish rate that built it), plain HTTP
//! POSTs to the benchmark receiver with 64 requests in flight, and the `bridge` (NATS →
//! signed POST → ack without a store, `bridge.rs`) for each tenant count.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt as _;

use super::publish::{self, data_object};
use super::receiver::{EVENT_ID_HEADER, FastReceiver};
use super::rig::{self, BenchEnv};
use super::tally::{Tally, event_id};

/// HTTP requests in flight in the HTTP limit.
pub const HTTP_IN_FLIGHT: usize = 64;

/// What the machine does without jetpost.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub publish_per_second: Option<f64>,
    pub pull_ack_per_second: Option<f64>,
    pub http_per_second: Option<f64>,
    /// Events/s of the bridge, by tenant count.
    pub bridge_per_second: BTreeMap<usize, f64>,
}

/// Publishes `messages` events into one account's stream, then pulls and acks them all.
pub async fn jetstream(env: &BenchEnv, messages: u64) -> anyhow::Result<(f64, f64)> {
    let account = "limit".to_owned();
    let nats = rig::start_nats(env, std::slice::from_ref(&account), false).await?;
    rig::provision(&nats, std::slice::from_ref(&account)).await?;
    let js = jetstream::new(nats.connect_as(&account).await?);
    let tally = Tally::new(messages as usize);
    let started = Instant::now();
    publish::burst(&js, &tally, 0..messages).await?;
    let publish_rate = messages as f64 / started.elapsed().as_secs_f64();

    let consumer: PullConsumer = js
        .get_stream(rig::STREAM)
        .await?
        .get_consumer(rig::CONSUMER)
        .await
        .map_err(|err| anyhow::anyhow!("the limit consumer: {err}"))?;
    let mut pulled = consumer
        .stream()
        .max_messages_per_batch(500)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .context("pulling from the limit stream")?;
    let started = Instant::now();
    let mut received = 0u64;
    while received < messages {
        let message = tokio::time::timeout(Duration::from_secs(30), pulled.next())
            .await
            .context("the pull stream stalled for 30 s")?
            .context("the pull stream ended")?
            .map_err(|err| anyhow::anyhow!("pulling: {err}"))?;
        message
            .ack()
            .await
            .map_err(|err| anyhow::anyhow!("acking: {err}"))?;
        received += 1;
    }
    js.client().flush().await?;
    let pull_rate = messages as f64 / started.elapsed().as_secs_f64();
    Ok((publish_rate, pull_rate))
}

/// POSTs `requests` 300-byte bodies to the receiver with [`HTTP_IN_FLIGHT`] in flight.
pub async fn http(requests: u64) -> anyhow::Result<f64> {
    let tally = Arc::new(Tally::new(requests as usize));
    let receiver = FastReceiver::start(tally.clone(), Duration::ZERO).await?;
    let client = super::http_client()?;
    let url = receiver.fast_url("limit");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..HTTP_IN_FLIGHT)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= requests {
                        return anyhow::Ok(());
                    }
                    let response = client
                        .post(&url)
                        .header(EVENT_ID_HEADER, event_id(seq))
                        .header("content-type", "application/json")
                        .body(data_object())
                        .send()
                        .await
                        .context("POST to the benchmark receiver")?;
                    response.bytes().await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.context("an HTTP worker panicked")??;
    }
    let rate = requests as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(
        tally.arrivals() == requests,
        "the receiver counted {} of {requests} requests",
        tally.arrivals()
    );
    Ok(rate)
}
