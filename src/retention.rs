//! The retention task (`log_retention_ttl_days`): at start and then every minute it purges the
//! events older than the TTL whose deliveries are all finished (the store does the deleting,
//! see `store::Store::purge_expired`), counts what it deleted, refreshes the table-size gauge,
//! and keeps the last purge for `/healthz`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::{BackendKind, PurgeOptions, Purged, Store, TableRows};

/// How often the task wakes: a purge cycle (when retention is on), then the gauge.
pub const PURGE_EVERY: Duration = Duration::from_secs(60);

/// One finished purge cycle, as `/healthz` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastPurge {
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    /// Events stored before this were candidates.
    pub older_than: DateTime<Utc>,
    pub deleted: Purged,
}

/// The retention setting and the last purge, shared between the task and `/healthz`.
#[derive(Debug, Clone)]
pub struct RetentionHealth {
    ttl_days: u32,
    last: Arc<Mutex<Option<LastPurge>>>,
}

impl RetentionHealth {
    /// `ttl_days` 0: retention is off.
    pub fn new(ttl_days: u32) -> Self {
        RetentionHealth {
            ttl_days,
            last: Arc::default(),
        }
    }

    pub fn last_purge(&self) -> Option<LastPurge> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `/healthz`'s `workers.store.retention`: `null` when retention is off; `last_purge` is
    /// `null` until the first cycle has finished.
    pub fn to_json(&self) -> Value {
        if self.ttl_days == 0 {
            return Value::Null;
        }
        let last = self.last_purge().map(|p| {
            json!({
                "started_at": p.started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "duration_ms": u64::try_from(p.duration.as_millis()).unwrap_or(u64::MAX),
                "older_than": p.older_than.to_rfc3339_opts(SecondsFormat::Secs, true),
                "deleted": p.deleted,
            })
        });
        json!({"ttl_days": self.ttl_days, "last_purge": last})
    }

    fn record(&self, purge: LastPurge) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(purge);
    }
}

/// Runs until `stop`: a purge cycle every `every` (the first at once) while the TTL is above
/// zero, and the `jetpost_store_rows` gauge refreshed after each. A cycle cut short by `stop`
/// leaves whole batches only (each is one transaction).
pub async fn run(
    store: Store,
    health: RetentionHealth,
    options: PurgeOptions,
    every: Duration,
    stop: CancellationToken,
) {
    let ttl = (health.ttl_days > 0).then(|| TimeDelta::days(i64::from(health.ttl_days)));
    if ttl.is_some() {
        note_space_reuse(&store).await;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let cycle = async {
            if let Some(ttl) = ttl {
                purge(&store, &health, ttl, &options).await;
            }
            match store.table_rows().await {
                Ok(rows) => set_row_gauges(rows),
                Err(err) => warn!("retention: cannot estimate the tables' rows: {err}"),
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            () = cycle => {}
        }
    }
}

async fn purge(store: &Store, health: &RetentionHealth, ttl: TimeDelta, options: &PurgeOptions) {
    let started_at = Utc::now();
    let started = Instant::now();
    let older_than = started_at - ttl;
    let purged = store
        .purge_expired(older_than, options, |batch| {
            for (table, rows) in [
                ("events", batch.events),
                ("deliveries", batch.deliveries),
                ("attempts", batch.attempts),
            ] {
                metrics::counter!("jetpost_retention_deleted_total", "table" => table)
                    .increment(rows);
            }
        })
        .await;
    match purged {
        Ok(deleted) => {
            let duration = started.elapsed();
            if deleted.events > 0 {
                info!(
                    events = deleted.events,
                    deliveries = deleted.deliveries,
                    attempts = deleted.attempts,
                    duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                    older_than = %older_than.to_rfc3339_opts(SecondsFormat::Secs, true),
                    "retention: purged old events"
                );
            }
            health.record(LastPurge {
                started_at,
                duration,
                older_than,
                deleted,
            });
        }
        // What was committed stays deleted; the next cycle finds the rest.
        Err(err) => warn!("retention: purge stopped, the next cycle carries on: {err}"),
    }
}

/// Says once, at start, when a SQLite file will not shrink after purges.
async fn note_space_reuse(store: &Store) {
    if store.backend() != BackendKind::Sqlite {
        return;
    }
    match store.reclaims_space().await {
        Ok(true) => {}
        Ok(false) => info!(
            "retention: this SQLite file was created without incremental auto-vacuum, so purged \
             space is reused for new rows but the file does not shrink; to shrink it, stop \
             jetpost and run: sqlite3 FILE 'PRAGMA auto_vacuum = INCREMENTAL; VACUUM;' \
             (see docs/storage.md, Retention)"
        ),
        Err(err) => warn!("retention: cannot read the SQLite auto-vacuum mode: {err}"),
    }
}

fn set_row_gauges(rows: TableRows) {
    for (table, count) in [
        ("events", rows.events),
        ("deliveries", rows.deliveries),
        ("attempts", rows.attempts),
    ] {
        // Precision loss past 2^53 rows is irrelevant for an estimate.
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("jetpost_store_rows", "table" => table).set(count as f64);
    }
}
