//! The store's ingest rate without NATS or HTTP: many tasks calling `Ingest::accept` at once
//! (validate, route through the cache, group commit with one delivery row per event), on a
//! fresh SQLite file or Postgres schema, with the committer counts `app::run` uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;

use super::db::{BenchDb, StoreChoice};
use super::publish::event_body_for;
use super::rig;
use crate::delivery::Handoff;
use crate::event::TopicRules;
use crate::ingest::{Ingest, IngestOptions};
use crate::routing::RoutingCache;
use crate::store::BackendKind;

const TENANT: &str = "store-bench";

/// Events per second committed by `tasks` concurrent callers of `Ingest::accept`.
pub async fn ingest_rate(choice: &StoreChoice, events: u64, tasks: usize) -> anyhow::Result<f64> {
    let db = BenchDb::create(choice).await?;
    let store = rig::open_store(db.url()).await?;
    rig::seed_webhook(&store, TENANT, "http://127.0.0.1:9/unused").await?;
    let ingest = Arc::new(Ingest::new(
        store.clone(),
        IngestOptions {
            topics: TopicRules::default(),
            // As app::run: SQLite has one writer, Postgres takes a few.
            committers: match store.backend() {
                BackendKind::Sqlite => 1,
                BackendKind::Postgres => 4,
            },
            max_batch: 256,
        },
        Arc::new(RoutingCache::new(store.clone())),
        Handoff::nowhere(),
    ));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks.max(1))
        .map(|_| {
            let (ingest, next) = (ingest.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= events {
                        return anyhow::Ok(());
                    }
                    let body = event_body_for(TENANT, seq);
                    let accepted = ingest
                        .accept(&body, || unreachable_default_id(seq))
                        .await
                        .with_context(|| format!("ingesting event {seq}"))?;
                    anyhow::ensure!(
                        accepted.destination_ids.len() == 1,
                        "event {seq} was not routed to the benchmark destination"
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.context("an ingest task panicked")??;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    drop(ingest);
    store.close().await;
    Ok(rate)
}

/// Benchmark events carry their id; this only names one if that ever changes.
fn unreachable_default_id(seq: u64) -> String {
    format!("store-default-{seq}")
}
