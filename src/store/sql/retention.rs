//! Retention's SQL: one purge batch (old events whose deliveries are all finished, deleted with
//! their deliveries and attempts, children first, in one short transaction), the cheap row
//! estimates behind `jetpost_store_rows`, and handing SQLite's freed pages back to the file system.

use sqlx::{Encode, Executor, QueryBuilder, Type};

use super::rows::RowExt as _;
use super::timestamp::Timestamp;
use super::{Dialect, SqlStore, WriteTx, push_ids};
use crate::store::error::{Result, db_error};
use crate::store::retention::{Purged, TableRows};

/// Where a purge cycle has got to: the last event it looked at, in `(created_at, seq)` order.
/// Events before it that were kept (a delivery still pending) are not looked at again in the
/// same cycle, so every batch reads at most its limit of events however many are kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PurgeCursor {
    created_at: Timestamp,
    seq: i64,
}

/// What one batch did.
#[derive(Debug, Default)]
pub(crate) struct PurgeBatch {
    /// Old events looked at (deleted or kept); fewer than the limit means the cycle is done.
    pub scanned: usize,
    pub next: Option<PurgeCursor>,
    pub deleted: Purged,
}

/// Statuses that keep an event: a delivery waiting for its next attempt or in flight.
const UNFINISHED: &str = "('pending', 'delivering')";

/// The deliveries of the events whose `seq` the caller lists next (it closes the `IN (`).
const DELIVERIES_OF_EVENTS: &str = "SELECT d.id FROM deliveries d \
     JOIN events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id WHERE e.seq IN (";

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Timestamp: Encode<'q, DB> + Type<DB>,
{
    /// Looks at up to `limit` events stored before `older_than` (after `after`, oldest first)
    /// and deletes those whose deliveries are all finished, with their deliveries and
    /// attempts: attempts, then deliveries, then events, in one transaction, so a crash
    /// leaves either the whole batch or none of it.
    pub async fn purge_batch(
        &self,
        older_than: Timestamp,
        after: Option<PurgeCursor>,
        limit: usize,
    ) -> Result<PurgeBatch> {
        let op = "purge old events";
        // Unsynced: a purge lost in a power cut is simply done again by the next cycle.
        let mut tx = self
            .begin_write(DB::BEGIN_WRITE_UNSYNCED)
            .await
            .map_err(db_error(op))?;

        let mut qb =
            QueryBuilder::<DB>::new("SELECT seq, created_at FROM events WHERE created_at < ");
        qb.push_bind(older_than);
        if let Some(after) = after {
            qb.push(" AND (created_at, seq) > (")
                .push_bind(after.created_at)
                .push(", ")
                .push_bind(after.seq)
                .push(")");
        }
        qb.push(" ORDER BY created_at, seq LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .push(DB::FOR_UPDATE_SKIP_LOCKED);
        let rows = qb.build().fetch_all(&mut *tx).await.map_err(db_error(op))?;
        let mut batch = PurgeBatch {
            scanned: rows.len(),
            ..PurgeBatch::default()
        };
        let mut candidates = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq = row.int("seq")?;
            candidates.push(seq);
            batch.next = Some(PurgeCursor {
                created_at: Timestamp(row.time("created_at")?),
                seq,
            });
        }
        if candidates.is_empty() {
            tx.commit().await.map_err(db_error(op))?;
            return Ok(batch);
        }

        let mut purgeable = without_unfinished(&mut tx, candidates, op).await?;
        if !purgeable.is_empty() {
            // Postgres: lock the finished deliveries (a manual retry reopening one waits for
            // this transaction, or has committed and is seen by the check below); new
            // deliveries cannot appear, the events' rows are locked. Only finished rows are
            // locked, which the dispatcher never writes, so its transactions never wait here.
            if !DB::FOR_UPDATE.is_empty() {
                let mut qb = QueryBuilder::<DB>::new(DELIVERIES_OF_EVENTS);
                push_ids(&mut qb, &purgeable);
                qb.push(" AND d.status NOT IN ")
                    .push(UNFINISHED)
                    .push(" ORDER BY d.id FOR UPDATE OF d");
                qb.build().fetch_all(&mut *tx).await.map_err(db_error(op))?;
                purgeable = without_unfinished(&mut tx, purgeable, op).await?;
            }
        }
        if !purgeable.is_empty() {
            let mut qb = QueryBuilder::<DB>::new("DELETE FROM attempts WHERE delivery_id IN (");
            qb.push(DELIVERIES_OF_EVENTS);
            push_ids(&mut qb, &purgeable);
            qb.push(")");
            let done = qb.build().execute(&mut *tx).await.map_err(db_error(op))?;
            batch.deleted.attempts = DB::rows_affected(&done);

            let mut qb = QueryBuilder::<DB>::new("DELETE FROM deliveries WHERE id IN (");
            qb.push(DELIVERIES_OF_EVENTS);
            push_ids(&mut qb, &purgeable);
            qb.push(")");
            let done = qb.build().execute(&mut *tx).await.map_err(db_error(op))?;
            batch.deleted.deliveries = DB::rows_affected(&done);

            let mut qb = QueryBuilder::<DB>::new("DELETE FROM events WHERE seq IN (");
            push_ids(&mut qb, &purgeable);
            let done = qb.build().execute(&mut *tx).await.map_err(db_error(op))?;
            batch.deleted.events = DB::rows_affected(&done);
        }
        tx.commit().await.map_err(db_error(op))?;
        Ok(batch)
    }

    /// Rough row counts of events, deliveries and attempts, each found in a few index probes
    /// (SQLite) or the planner's statistics (Postgres), never by reading the table.
    pub async fn table_rows(&self) -> Result<TableRows> {
        let row = sqlx::query(DB::ROW_ESTIMATES)
            .fetch_one(&self.reader)
            .await
            .map_err(db_error("estimate table rows"))?;
        let count = |col: &str| row.int(col).map(|n| u64::try_from(n).unwrap_or(0));
        Ok(TableRows {
            events: count("events")?,
            deliveries: count("deliveries")?,
            attempts: count("attempts")?,
        })
    }

    /// Gives pages freed by deletes back to the file system, a bounded number per call
    /// (SQLite with incremental auto-vacuum); nothing elsewhere.
    pub async fn reclaim_space(&self) -> Result<()> {
        if let Some(sql) = DB::RECLAIM_SPACE {
            let _turn = self.take_turn().await;
            sqlx::query(sql)
                .execute(&self.writer)
                .await
                .map_err(db_error("reclaim freed space"))?;
        }
        Ok(())
    }

    /// Whether freed space goes back to the file system: Postgres (autovacuum) always; SQLite
    /// when the database file was created with, or converted to, incremental auto-vacuum.
    pub async fn reclaims_space(&self) -> Result<bool> {
        let Some(sql) = DB::AUTO_VACUUM_MODE else {
            return Ok(true);
        };
        let row = sqlx::query(sql)
            .fetch_one(&self.reader)
            .await
            .map_err(db_error("read the auto-vacuum mode"))?;
        Ok(row.int("auto_vacuum")? != 0)
    }
}

/// `events` (seqs) minus those with a delivery still pending or in flight.
async fn without_unfinished<DB>(
    tx: &mut WriteTx<DB>,
    events: Vec<i64>,
    op: &'static str,
) -> Result<Vec<i64>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::<DB>::new(
        "SELECT DISTINCT e.seq FROM events e \
         JOIN deliveries d ON d.tenant_id = e.tenant_id AND d.event_id = e.id \
         WHERE d.status IN ",
    );
    qb.push(UNFINISHED).push(" AND e.seq IN (");
    push_ids(&mut qb, &events);
    let kept = qb
        .build()
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error(op))?;
    let kept = kept
        .iter()
        .map(|row| row.int("seq"))
        .collect::<Result<std::collections::HashSet<i64>>>()?;
    Ok(events
        .into_iter()
        .filter(|seq| !kept.contains(seq))
        .collect())
}
