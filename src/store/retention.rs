//! Retention in the store: one purge cycle deletes the events stored before a cutoff whose
//! deliveries are all finished, with their deliveries and attempts, in small batches (each its
//! own short transaction), and estimates the tables' sizes cheaply. The periodic task that
//! drives it is `crate::retention`; docs/storage.md (Retention) says what is kept.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::sql::retention::PurgeCursor;
use super::sql::timestamp::Timestamp;
use super::{Db, Result, Store};

/// Rows deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub events: u64,
    pub deliveries: u64,
    pub attempts: u64,
}

impl Purged {
    fn add(&mut self, other: Purged) {
        self.events += other.events;
        self.deliveries += other.deliveries;
        self.attempts += other.attempts;
    }
}

/// Approximate rows per table (see `Store::table_rows`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableRows {
    pub events: u64,
    pub deliveries: u64,
    pub attempts: u64,
}

/// How a purge cycle paces itself.
#[derive(Debug, Clone)]
pub struct PurgeOptions {
    /// Events looked at per transaction: small enough that ingest and the dispatcher (on
    /// SQLite, queued behind the one writer connection) wait only briefly.
    pub batch_size: usize,
    /// The shortest pause between batches.
    pub pause: Duration,
    /// The pause after a batch is at least this many times as long as the batch took, so a
    /// cycle holds the writer for at most 1 / (1 + rest_per_busy) of its time however slow
    /// the disk (4: a fifth).
    pub rest_per_busy: u32,
}

impl Default for PurgeOptions {
    fn default() -> Self {
        PurgeOptions {
            batch_size: 100,
            pause: Duration::from_millis(10),
            rest_per_busy: 4,
        }
    }
}

impl Store {
    /// Deletes every event stored (`created_at`) before `older_than` whose deliveries are all
    /// finished (success, failed, cancelled), with those deliveries and their attempts, batch
    /// by batch until none is left; an event with a delivery pending or in flight is kept with
    /// everything of it. Each batch commits on its own: after an error (or a crash) what was
    /// committed stays deleted and the rest is found again by the next cycle. `on_batch` sees
    /// each batch's counts as it commits (for metrics).
    pub async fn purge_expired(
        &self,
        older_than: DateTime<Utc>,
        options: &PurgeOptions,
        mut on_batch: impl FnMut(Purged),
    ) -> Result<Purged> {
        let older_than = Timestamp::new(older_than);
        let limit = options.batch_size.max(1);
        let mut total = Purged::default();
        let mut cursor: Option<PurgeCursor> = None;
        loop {
            let started = std::time::Instant::now();
            let batch = on_db!(self, db => db.purge_batch(older_than, cursor, limit).await)?;
            total.add(batch.deleted);
            on_batch(batch.deleted);
            if batch.deleted.events > 0 {
                on_db!(self, db => db.reclaim_space().await)?;
            }
            if batch.scanned < limit {
                return Ok(total);
            }
            cursor = batch.next;
            let rest = started.elapsed() * options.rest_per_busy;
            tokio::time::sleep(rest.max(options.pause)).await;
        }
    }

    /// Approximate rows in events, deliveries and attempts, at a cost independent of their
    /// size: on SQLite the span of rowids (an upper bound: rows deleted in the middle still
    /// count), on Postgres the planner's statistics (`pg_class.reltuples`).
    pub async fn table_rows(&self) -> Result<TableRows> {
        on_db!(self, db => db.table_rows().await)
    }

    /// Whether space freed by purges is returned to the file system. False for a SQLite file
    /// created before jetpost turned on incremental auto-vacuum (freed pages are still reused
    /// for new rows, the file just does not shrink); always true on Postgres.
    pub async fn reclaims_space(&self) -> Result<bool> {
        on_db!(self, db => db.reclaims_space().await)
    }
}
