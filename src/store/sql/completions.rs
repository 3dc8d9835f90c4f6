//! Completing attempts: each finished attempt is recorded, its delivery moved on and its
//! destination's consecutive failures counted — if the claim's lease still holds the delivery.
//! Many attempts go in one transaction (the dispatcher's group commit: one commit for a whole
//! batch), each checked against its own lease; a statement does all rows of a kind at once, so
//! a batch costs a handful of statements, not a handful per attempt. The decisions (`held`,
//! `watched`, `plan`) are shared with SQLite's writer thread (`sqlite_writer`), which runs
//! them with single-row statements instead; this sqlx path is Postgres'.

use std::collections::{HashMap, HashSet};

use sqlx::{Encode, Executor, QueryBuilder, Type};

use super::rows::{self, RowExt as _, delivery_columns};
use super::timestamp::Timestamp;
use super::{Dialect, SqlStore, in_shapes, push_ids};
use crate::store::error::{Result, StoreError, db_error, is_unique_violation};
use crate::store::model::{
    AttemptCompletion, AttemptRecorded, AttemptStatus, Delivery, DeliveryOutcome, DeliveryStatus,
};

/// Rows per statement, well under both backends' bind-parameter limits (SQLite 32766,
/// Postgres 65535): an attempt row binds 11 values.
const ROWS_PER_STATEMENT: usize = 1000;

/// The destination (queue) a delivery belongs to.
fn queue_of(d: &Delivery) -> (&str, &str) {
    (d.tenant_id.as_str(), d.destination_id.as_str())
}

/// What one held attempt writes.
pub(crate) struct Write<'a> {
    /// The item's place in the batch.
    pub index: usize,
    /// The delivery row as read at the start of the transaction, under its lease.
    pub row: &'a Delivery,
    pub status: DeliveryStatus,
    pub attempt_number: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub next_manual: bool,
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Timestamp: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Timestamp>: Encode<'q, DB> + Type<DB>,
{
    /// Completes every attempt of `batch` whose lease still holds its delivery, in one
    /// transaction; the others (lease expired and claimed again, reset by a manual retry, or a
    /// second completion of the same delivery in the batch) write nothing and get `None`.
    /// Consecutive failures are counted in batch order, so several attempts of one destination
    /// in a batch see the same values as they would one transaction each.
    pub async fn complete_attempts(
        &self,
        batch: &[AttemptCompletion],
    ) -> Result<Vec<Option<AttemptRecorded>>> {
        let op = "complete attempts";
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let response_data = batch
            .iter()
            .map(|c| rows::to_opt_json("response_data", c.attempt.response_data.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        // Sorted, so that concurrent batches (Postgres) lock delivery rows in one order.
        let mut ids: Vec<i64> = batch.iter().map(|c| c.lease.delivery_id).collect();
        ids.sort_unstable();
        ids.dedup();

        let mut tx = self
            .begin_write(DB::BEGIN_WRITE_UNSYNCED)
            .await
            .map_err(db_error(op))?;

        let mut leased: HashMap<i64, Delivery> = HashMap::with_capacity(ids.len());
        for chunk in in_shapes(&ids, ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<DB>::new(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM deliveries WHERE status = 'delivering' AND id IN ("
            ));
            push_ids(&mut qb, chunk);
            qb.push(" ORDER BY id").push(DB::FOR_UPDATE);
            for row in qb.build().fetch_all(&mut *tx).await.map_err(db_error(op))? {
                let delivery = rows::delivery(&row)?;
                leased.insert(delivery.id, delivery);
            }
        }
        let held = held(batch, &leased);
        if held.is_empty() {
            // Ended here rather than dropped: a dropped transaction's rollback waits for the
            // connection's next use, and until then the rows stay locked, so claims (SKIP
            // LOCKED) would pass over deliveries whose lease has in fact run out.
            tx.rollback().await.map_err(db_error(op))?;
            return Ok(vec![None; batch.len()]);
        }

        // Destinations whose failure count or liveness (for a retry) matters, row-locked on
        // Postgres in key order.
        let watched = watched(batch, &held);
        // (tenant, destination) → (failures in a row, live)
        let mut destinations: HashMap<(String, String), (i64, bool)> = HashMap::new();
        for chunk in in_shapes(&watched, ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<DB>::new(
                "SELECT tenant_id, id, consecutive_failures, \
                 (deleted_at IS NULL AND disabled_at IS NULL) AS live FROM destinations WHERE ",
            );
            push_keys(&mut qb, chunk);
            qb.push(" ORDER BY tenant_id, id").push(DB::FOR_UPDATE);
            for row in qb.build().fetch_all(&mut *tx).await.map_err(db_error(op))? {
                destinations.insert(
                    (row.text("tenant_id")?, row.text("id")?),
                    (row.int("consecutive_failures")?, row.flag("live")?),
                );
            }
        }
        let CompletionPlan {
            results,
            writes,
            failures,
            resets,
        } = plan(batch, &held, &destinations);
        let now = Timestamp::now();

        for chunk in in_shapes(&writes, ROWS_PER_STATEMENT) {
            // Columns of a VALUES list are column1, column2, … on both backends.
            let mut qb = QueryBuilder::<DB>::new(
                "UPDATE deliveries SET status = v.column2, attempts = v.column3, \
                 next_attempt_at = v.column4, manual = v.column5, lease_owner = NULL, \
                 lease_expires_at = NULL, updated_at = ",
            );
            qb.push_bind(now).push(" FROM (");
            qb.push_values(chunk, |mut v, w| {
                v.push_bind(batch[w.index].lease.delivery_id)
                    .push_bind(w.status.as_str())
                    .push_bind(w.attempt_number)
                    .push_bind(w.next_attempt_at)
                    .push_bind(w.next_manual);
            });
            qb.push(") AS v WHERE deliveries.id = v.column1");
            qb.build().execute(&mut *tx).await.map_err(db_error(op))?;
        }
        for chunk in in_shapes(&writes, ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<DB>::new(
                "INSERT INTO attempts (id, tenant_id, event_id, destination_id, delivery_id, \
                 attempt_number, manual, status, code, response_data, time) ",
            );
            qb.push_values(chunk, |mut v, w| {
                let c = &batch[w.index];
                v.push_bind(c.attempt.id.as_str())
                    .push_bind(w.row.tenant_id.as_str())
                    .push_bind(w.row.event_id.as_str())
                    .push_bind(w.row.destination_id.as_str())
                    .push_bind(c.lease.delivery_id)
                    .push_bind(w.attempt_number)
                    .push_bind(w.row.manual)
                    .push_bind(c.attempt.status.as_str())
                    .push_bind(c.attempt.code.as_str())
                    .push_bind(response_data[w.index].as_deref())
                    .push_bind(Timestamp::new(c.attempt.time));
            });
            qb.build().execute(&mut *tx).await.map_err(|e| {
                if is_unique_violation(&e) {
                    let ids: Vec<&str> = chunk
                        .iter()
                        .map(|w| batch[w.index].attempt.id.as_str())
                        .collect();
                    StoreError::Conflict(format!(
                        "an attempt id of {ids:?} already exists; give every attempt a new id"
                    ))
                } else {
                    db_error(op)(e)
                }
            })?;
        }

        for chunk in in_shapes(&failures, ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<DB>::new(
                "UPDATE destinations SET consecutive_failures = v.column3 FROM (",
            );
            qb.push_values(chunk, |mut v, ((tenant_id, id), n)| {
                v.push_bind(*tenant_id).push_bind(*id).push_bind(*n);
            });
            qb.push(
                ") AS v WHERE destinations.tenant_id = v.column1 AND destinations.id = v.column2",
            );
            qb.build().execute(&mut *tx).await.map_err(db_error(op))?;
        }
        for chunk in in_shapes(&resets, ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<DB>::new(
                "UPDATE destinations SET consecutive_failures = 0 \
                 WHERE consecutive_failures <> 0 AND (",
            );
            push_keys(&mut qb, chunk);
            qb.push(")");
            qb.build().execute(&mut *tx).await.map_err(db_error(op))?;
        }
        tx.commit().await.map_err(db_error(op))?;
        Ok(results)
    }
}

/// The items of `batch` whose lease still holds their delivery (`leased`: the delivering rows
/// read under the transaction), in batch order; a delivery completes once.
pub(crate) fn held<'a>(
    batch: &[AttemptCompletion],
    leased: &'a HashMap<i64, Delivery>,
) -> Vec<(usize, &'a Delivery)> {
    let mut completed = HashSet::new();
    batch
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let row = leased.get(&c.lease.delivery_id)?;
            let holds = row.lease_owner.as_deref() == Some(c.lease.owner.as_str())
                && row.lease_expires_at == Some(Timestamp::new(c.lease.expires_at).0);
            (holds && completed.insert(c.lease.delivery_id)).then_some((i, row))
        })
        .collect()
}

/// The destinations, in key order, whose failure count or liveness (for a retry) the held
/// items need read. Destinations with successes only are reset without a read, and only if
/// there is something to reset: the common case (a healthy destination) leaves the
/// destination row alone, so completions don't queue on it.
pub(crate) fn watched<'a>(
    batch: &[AttemptCompletion],
    held: &[(usize, &'a Delivery)],
) -> Vec<(&'a str, &'a str)> {
    let mut watched: Vec<(&str, &str)> = held
        .iter()
        .filter(|(i, _)| {
            batch[*i].attempt.status == AttemptStatus::Failed
                || matches!(batch[*i].outcome, DeliveryOutcome::RetryAt(_))
        })
        .map(|(_, row)| queue_of(row))
        .collect();
    watched.sort_unstable();
    watched.dedup();
    watched
}

/// What completing the held items writes, decided the same way on every backend.
pub(crate) struct CompletionPlan<'a> {
    /// One per batch item: `None` for the items whose lease was lost.
    pub results: Vec<Option<AttemptRecorded>>,
    /// The deliveries to move on and attempts to insert, in batch order.
    pub writes: Vec<Write<'a>>,
    /// Destinations whose failure count changed, in key order, with the new count.
    pub failures: Vec<((&'a str, &'a str), i64)>,
    /// Destinations not read (successes only) whose count goes back to 0, in key order.
    pub resets: Vec<(&'a str, &'a str)>,
}

/// Decides every held item's writes. `destinations`: (tenant, destination) → (failures in
/// a row, live) of the watched destinations. Consecutive failures are counted in batch
/// order, so several attempts of one destination in a batch see the same values as they
/// would one transaction each.
pub(crate) fn plan<'a>(
    batch: &[AttemptCompletion],
    held: &[(usize, &'a Delivery)],
    destinations: &'a HashMap<(String, String), (i64, bool)>,
) -> CompletionPlan<'a> {
    let live: HashSet<(&str, &str)> = destinations
        .iter()
        .filter(|(_, (_, live))| *live)
        .map(|((t, d), _)| (t.as_str(), d.as_str()))
        .collect();
    let initial: HashMap<(&str, &str), i64> = destinations
        .iter()
        .map(|((t, d), (n, _))| ((t.as_str(), d.as_str()), *n))
        .collect();
    let mut counts = initial.clone();
    let mut resets: Vec<(&str, &str)> = Vec::new();
    let mut results = vec![None; batch.len()];
    let mut writes = Vec::with_capacity(held.len());
    for &(index, row) in held {
        let c = &batch[index];
        let (status, next_attempt_at) = match c.outcome {
            DeliveryOutcome::Success => (DeliveryStatus::Success, None),
            DeliveryOutcome::Failed => (DeliveryStatus::Failed, None),
            DeliveryOutcome::Cancelled => (DeliveryStatus::Cancelled, None),
            DeliveryOutcome::RetryAt(at) => {
                if live.contains(&queue_of(row)) {
                    (DeliveryStatus::Pending, Some(Timestamp::new(at)))
                } else {
                    (DeliveryStatus::Cancelled, None)
                }
            }
        };
        // In batch order: a failure counts one more, a success resets the count. A
        // destination row that is gone counts nothing.
        let consecutive_failures = match (c.attempt.status, counts.get_mut(&queue_of(row))) {
            (AttemptStatus::Failed, Some(n)) => {
                *n += 1;
                *n
            }
            (AttemptStatus::Failed, None) => 0,
            (AttemptStatus::Success, Some(n)) => {
                *n = 0;
                0
            }
            (AttemptStatus::Success, None) => {
                resets.push(queue_of(row));
                0
            }
        };
        let attempt_number = i64::from(row.attempts) + 1;
        results[index] = Some(AttemptRecorded {
            attempt_number: u32::try_from(attempt_number).unwrap_or(u32::MAX),
            consecutive_failures: u32::try_from(consecutive_failures).unwrap_or(u32::MAX),
        });
        writes.push(Write {
            index,
            row,
            status,
            attempt_number,
            next_attempt_at,
            // Automatic retries after a manual attempt are automatic again.
            next_manual: row.manual && !matches!(c.outcome, DeliveryOutcome::RetryAt(_)),
        });
    }
    let mut failures: Vec<((&str, &str), i64)> = counts
        .into_iter()
        .filter(|(k, n)| initial.get(k) != Some(n))
        .collect();
    failures.sort_unstable();
    resets.sort_unstable();
    resets.dedup();
    CompletionPlan {
        results,
        writes,
        failures,
        resets,
    }
}

/// `(tenant_id = $n AND id = $n+1) OR …` for destination keys (portable where row-value IN
/// lists are not).
fn push_keys<DB>(qb: &mut QueryBuilder<DB>, keys: &[(&str, &str)])
where
    DB: Dialect,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    for (n, (tenant_id, id)) in keys.iter().enumerate() {
        if n > 0 {
            qb.push(" OR ");
        }
        qb.push("(tenant_id = ")
            .push_bind(*tenant_id)
            .push(" AND id = ")
            .push_bind(*id)
            .push(")");
    }
}
