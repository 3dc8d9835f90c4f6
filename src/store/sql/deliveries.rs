//! Delivery queries: claiming due deliveries under a lease (fairly across destinations),
//! completing an attempt under that lease, manual retries, and what the dispatcher and metrics
//! ask about the queue.
//!
//! A `delivering` row keeps its lease expiry in `next_attempt_at`, so "due" means the same for
//! both states: `next_attempt_at <= now`. An expired lease is simply due again.

use std::collections::HashMap;
use std::time::Duration;

use chrono::TimeDelta;
use sqlx::{Encode, Executor, QueryBuilder, Type};

use super::rows::{self, RowExt, SealedDestination, delivery_columns};
use super::timestamp::Timestamp;
use super::{Dialect, SqlStore, in_shapes, push_ids};
use crate::store::error::{Result, StoreError, db_error};
use crate::store::model::{ClaimRequest, Delivery, DeliveryStatus, Event, Lease};

/// A claimed delivery as read from the database; the facade opens the credentials.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedRow {
    pub delivery: Delivery,
    pub lease: Lease,
    pub event: Event,
    pub destination: SealedDestination,
}

impl ClaimedRow {
    /// A row of `SELECT_CLAIMED`, leased to `owner` until `expires`.
    pub fn read(r: &impl RowExt, owner: &str, expires: Timestamp) -> Result<ClaimedRow> {
        let delivery = rows::delivery(r)?;
        Ok(ClaimedRow {
            lease: Lease {
                delivery_id: delivery.id,
                owner: owner.to_string(),
                expires_at: expires.0,
            },
            delivery,
            event: rows::event(r, "e_")?.0,
            destination: rows::destination(r, "t_")?,
        })
    }
}

/// A claim's times and cap, as bound into its statements.
pub(crate) struct ClaimTimes {
    pub now: Timestamp,
    /// The lease's expiry.
    pub expires: Timestamp,
    pub per_destination: i64,
}

impl ClaimTimes {
    pub fn of(req: &ClaimRequest<'_>) -> Result<ClaimTimes> {
        // A lease of at least a millisecond makes every claim's expiry later than the one it
        // replaces, which is what makes (owner, expiry) a fencing token.
        let lease = TimeDelta::from_std(req.lease.max(Duration::from_millis(1)))
            .map_err(|_| StoreError::Invalid("claim lease is too long".to_string()))?;
        let expires = req
            .now
            .checked_add_signed(lease)
            .map(Timestamp::new)
            .ok_or_else(|| StoreError::Invalid("claim lease is too long".to_string()))?;
        Ok(ClaimTimes {
            now: Timestamp::new(req.now),
            expires,
            per_destination: i64::from(req.per_destination.max(1)),
        })
    }
}

/// Sorts `claimed` as the candidates `live` came: oldest due first.
fn in_candidate_order(claimed: &mut [ClaimedRow], live: &[i64]) {
    let order: HashMap<i64, usize> = live.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    claimed.sort_by_key(|c| order.get(&c.delivery.id).copied());
}

/// Ids per `IN (…)` list of a claim (a claim takes at most `delivery_max_concurrency`).
const IDS_PER_STATEMENT: usize = 1024;

/// Claimed deliveries with their event (`e_*`) and destination (`t_*`).
pub(crate) const SELECT_CLAIMED: &str = "SELECT d.id, d.tenant_id, d.event_id, d.destination_id, d.status, \
     d.attempts, d.next_attempt_at, d.manual, d.lease_owner, d.lease_expires_at, d.created_at, \
     d.updated_at, \
     e.seq AS e_seq, e.tenant_id AS e_tenant_id, e.id AS e_id, \
     e.destination_id AS e_destination_id, e.topic AS e_topic, e.time AS e_time, \
     e.metadata AS e_metadata, e.data AS e_data, e.eligible_for_retry AS e_eligible_for_retry, \
     e.destination_ids AS e_destination_ids, e.created_at AS e_created_at, \
     t.tenant_id AS t_tenant_id, t.id AS t_id, t.type AS t_type, t.topics AS t_topics, \
     t.filter AS t_filter, t.config AS t_config, t.credentials AS t_credentials, \
     t.delivery_metadata AS t_delivery_metadata, t.metadata AS t_metadata, \
     t.disabled_at AS t_disabled_at, t.created_at AS t_created_at, t.updated_at AS t_updated_at \
     FROM deliveries d \
     JOIN events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id \
     JOIN destinations t ON t.tenant_id = d.tenant_id AND t.id = d.destination_id \
     WHERE d.id IN (";

/// Creates the delivery, or resets a finished/pending one to run again now, unless an attempt
/// holds an unexpired lease on it (then no row comes back).
const UPSERT_MANUAL_RETRY: &str = concat!(
    "INSERT INTO deliveries (tenant_id, event_id, destination_id, status, attempts, \
     next_attempt_at, manual, created_at, updated_at) \
     VALUES ($1, $2, $3, 'pending', 0, $4, TRUE, $4, $4) \
     ON CONFLICT (tenant_id, event_id, destination_id) DO UPDATE SET \
     status = 'pending', next_attempt_at = excluded.next_attempt_at, manual = TRUE, \
     lease_owner = NULL, lease_expires_at = NULL, updated_at = excluded.updated_at \
     WHERE deliveries.status <> 'delivering' \
        OR deliveries.lease_expires_at <= excluded.next_attempt_at \
     RETURNING ",
    delivery_columns!()
);

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
    /// Claims due deliveries: round-robin across destinations, oldest first within each, at
    /// most `per_destination` in flight per destination (counting leases others hold).
    /// Deliveries whose destination was disabled or deleted are cancelled instead of claimed.
    /// Postgres' path; SQLite claims on its writer thread (`sqlite_writer`).
    pub async fn claim_due(&self, req: &ClaimRequest<'_>) -> Result<Vec<ClaimedRow>> {
        let op = "claim deliveries";
        let ClaimTimes {
            now,
            expires,
            per_destination,
        } = ClaimTimes::of(req)?;

        let mut tx = self
            .begin_write(DB::BEGIN_WRITE_UNSYNCED)
            .await
            .map_err(db_error(op))?;
        let candidates = sqlx::query(DB::CLAIM_CANDIDATES)
            .bind(now)
            .bind(per_destination)
            .bind(i64::from(req.limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error(op))?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for row in &candidates {
            let id = row.int("id")?;
            if row.flag("live")? {
                live.push(id);
            } else {
                dead.push(id);
            }
        }
        for ids in in_shapes(&dead, IDS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<DB>::new(
                "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = ",
            );
            qb.push_bind(now).push(" WHERE id IN (");
            push_ids(&mut qb, ids);
            qb.build().execute(&mut *tx).await.map_err(db_error(op))?;
        }
        let mut found = Vec::with_capacity(live.len());
        for ids in in_shapes(&live, IDS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<DB>::new("UPDATE deliveries SET status = 'delivering', ");
            qb.push("lease_owner = ")
                .push_bind(req.owner)
                .push(", lease_expires_at = ")
                .push_bind(expires)
                .push(", next_attempt_at = ")
                .push_bind(expires)
                .push(", updated_at = ")
                .push_bind(now)
                .push(" WHERE id IN (");
            push_ids(&mut qb, ids);
            qb.build().execute(&mut *tx).await.map_err(db_error(op))?;

            let mut qb = QueryBuilder::<DB>::new(SELECT_CLAIMED);
            push_ids(&mut qb, ids);
            found.extend(qb.build().fetch_all(&mut *tx).await.map_err(db_error(op))?);
        }
        tx.commit().await.map_err(db_error(op))?;

        let mut claimed = found
            .iter()
            .map(|r| ClaimedRow::read(r, req.owner, expires))
            .collect::<Result<Vec<_>>>()?;
        in_candidate_order(&mut claimed, &live);
        Ok(claimed)
    }

    /// Queues the event for the destination again, now, as a manual round.
    pub async fn schedule_manual_retry(
        &self,
        tenant_id: &str,
        event_id: &str,
        destination_id: &str,
    ) -> Result<Delivery> {
        let op = "schedule manual retry";
        let now = Timestamp::now();
        let mut tx = self
            .begin_write(DB::BEGIN_WRITE)
            .await
            .map_err(db_error(op))?;
        // Locked so that a purge deleting the event meanwhile is either waited for (then the
        // event is not found) or skips it, never leaves the new delivery without its event.
        let mut qb = QueryBuilder::<DB>::new("SELECT 1 FROM events WHERE tenant_id = ");
        qb.push_bind(tenant_id)
            .push(" AND id = ")
            .push_bind(event_id)
            .push(DB::FOR_KEY_SHARE);
        let event = qb
            .build()
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error(op))?;
        if event.is_none() {
            return Err(StoreError::not_found("event", event_id));
        }
        let destination = sqlx::query(
            "SELECT disabled_at FROM destinations \
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(tenant_id)
        .bind(destination_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error(op))?
        .ok_or_else(|| StoreError::not_found("destination", destination_id))?;
        if destination.opt_time("disabled_at")?.is_some() {
            return Err(StoreError::Invalid(format!(
                "destination {destination_id:?} is disabled; enable it before retrying"
            )));
        }
        let row = sqlx::query(UPSERT_MANUAL_RETRY)
            .bind(tenant_id)
            .bind(event_id)
            .bind(destination_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error(op))?
            .ok_or_else(|| {
                StoreError::Conflict(format!(
                    "event {event_id:?} is being delivered to destination {destination_id:?} \
                     right now; retry after this attempt finishes"
                ))
            })?;
        let delivery = rows::delivery(&row)?;
        tx.commit().await.map_err(db_error(op))?;
        Ok(delivery)
    }

    /// The deliveries of one event (one per destination it was routed or retried to).
    pub async fn list_deliveries(&self, tenant_id: &str, event_id: &str) -> Result<Vec<Delivery>> {
        sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE tenant_id = $1 AND event_id = $2 ORDER BY destination_id"
        ))
        .bind(tenant_id)
        .bind(event_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error("list deliveries"))?
        .iter()
        .map(rows::delivery)
        .collect()
    }

    /// When the next delivery becomes due (a pending one, or a lease running out).
    pub async fn next_due_at(&self) -> Result<Option<Timestamp>> {
        // The first entry of `deliveries_due`, which holds unfinished deliveries in due order.
        let row = sqlx::query(
            "SELECT min(next_attempt_at) AS due FROM deliveries \
             WHERE status IN ('pending', 'delivering')",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(db_error("read next due time"))?;
        Ok(row.opt_time("due")?.map(Timestamp))
    }

    /// Counts the deliveries in `status`: unfinished ones in `deliveries_due`, finished ones
    /// (kept by no index) by reading the table.
    pub async fn count_deliveries(&self, status: DeliveryStatus) -> Result<u64> {
        // Unfinished statuses repeat the partial index's condition, so both planners see
        // that `deliveries_due` covers them.
        let unfinished = matches!(status, DeliveryStatus::Pending | DeliveryStatus::Delivering);
        let sql = if unfinished {
            "SELECT count(*) AS n FROM deliveries \
             WHERE status IN ('pending', 'delivering') AND status = $1"
        } else {
            "SELECT count(*) AS n FROM deliveries WHERE status = $1"
        };
        let row = sqlx::query(sql)
            .bind(status.as_str())
            .fetch_one(&self.reader)
            .await
            .map_err(db_error("count deliveries"))?;
        Ok(row.int("n")?.max(0) as u64)
    }
}
