//! The hot path's statements on the writer thread's connection: the same decisions as the
//! sqlx path's (`events`, `completions`, `deliveries` share them), written as single-row
//! statements that the connection prepares once and keeps.

use std::collections::HashMap;
use std::sync::LazyLock;

use rusqlite::types::{FromSql, FromSqlError};
use rusqlite::{Connection, OptionalExtension, named_params, params};

use super::super::Dialect;
use super::super::completions::{self, CompletionPlan};
use super::super::deliveries::{ClaimTimes, ClaimedRow, SELECT_CLAIMED};
use super::super::events::{self, LeasedIds};
use super::super::rows::{self, RowExt, delivery_columns};
use super::super::timestamp::Timestamp;
use crate::store::error::{Result, StoreError, is_sqlite_unique_violation, sqlite_error};
use crate::store::model::{AttemptCompletion, AttemptRecorded, Delivery, InsertOutcome, NewEvent};

/// Stores the batch's new events with their deliveries (see `Store::insert_events`).
pub(super) fn insert_events(conn: &Connection, batch: &[NewEvent]) -> Result<Vec<InsertOutcome>> {
    let failed = sqlite_error("insert events");
    let now = Timestamp::now();
    let mut insert_event = conn
        .prepare_cached(
            "INSERT INTO events (tenant_id, id, destination_id, topic, time, metadata, data, \
             eligible_for_retry, destination_ids, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .map_err(&failed)?;
    let mut inserted = Vec::new();
    for i in events::candidates(batch) {
        let e = &batch[i];
        let metadata = rows::to_opt_json("metadata", e.metadata.as_ref())?;
        let destination_ids = rows::to_json("destination_ids", &e.destination_ids)?;
        let stored = insert_event
            .execute(params![
                e.tenant_id,
                e.id,
                e.destination_id,
                e.topic,
                Timestamp::new(e.time),
                metadata,
                e.data,
                e.eligible_for_retry,
                destination_ids,
                now,
            ])
            .map_err(&failed)?;
        if stored == 1 {
            inserted.push(i);
        }
    }

    let mut insert_delivery = conn
        .prepare_cached(
            "INSERT INTO deliveries (tenant_id, event_id, destination_id, status, attempts, \
             next_attempt_at, manual, lease_owner, lease_expires_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, 0, ?5, FALSE, ?6, ?7, ?8, ?8) \
             ON CONFLICT (tenant_id, event_id, destination_id) DO NOTHING",
        )
        .map_err(&failed)?;
    let mut leased_ids = LeasedIds::new();
    for (i, destination_id, lease) in events::new_deliveries(batch, &inserted) {
        let e = &batch[i];
        let status = if lease.is_some() {
            "delivering"
        } else {
            "pending"
        };
        let stored = insert_delivery
            .execute(params![
                e.tenant_id,
                e.id,
                destination_id,
                status,
                lease.map_or(now, |(_, expires)| expires),
                lease.map(|(owner, _)| owner),
                lease.map(|(_, expires)| expires),
                now,
            ])
            .map_err(&failed)?;
        if stored == 1 && lease.is_some() {
            let key = (
                e.tenant_id.clone(),
                e.id.clone(),
                destination_id.to_string(),
            );
            leased_ids.insert(key, conn.last_insert_rowid());
        }
    }
    Ok(events::outcomes(batch, &inserted, &leased_ids))
}

/// Completes the batch's attempts whose lease still holds (see `Store::record_attempts`).
pub(super) fn complete_attempts(
    conn: &Connection,
    batch: &[AttemptCompletion],
) -> Result<Vec<Option<AttemptRecorded>>> {
    let failed = sqlite_error("complete attempts");
    let mut read_delivery = conn
        .prepare_cached(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE id = ?1 AND status = 'delivering'"
        ))
        .map_err(&failed)?;
    let mut leased: HashMap<i64, Delivery> = HashMap::with_capacity(batch.len());
    for c in batch {
        let id = c.lease.delivery_id;
        if leased.contains_key(&id) {
            continue;
        }
        let row = read_delivery
            .query_row([id], |r| Ok(rows::delivery(&LiteRow(r))))
            .optional()
            .map_err(&failed)?;
        if let Some(delivery) = row.transpose()? {
            leased.insert(id, delivery);
        }
    }
    let held = completions::held(batch, &leased);
    if held.is_empty() {
        return Ok(vec![None; batch.len()]);
    }

    let mut read_destination = conn
        .prepare_cached(
            "SELECT consecutive_failures, (deleted_at IS NULL AND disabled_at IS NULL) \
             FROM destinations WHERE tenant_id = ?1 AND id = ?2",
        )
        .map_err(&failed)?;
    let mut destinations: HashMap<(String, String), (i64, bool)> = HashMap::new();
    for (tenant_id, id) in completions::watched(batch, &held) {
        let found = read_destination
            .query_row([tenant_id, id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(&failed)?;
        if let Some(found) = found {
            destinations.insert((tenant_id.to_string(), id.to_string()), found);
        }
    }
    let CompletionPlan {
        results,
        writes,
        failures,
        resets,
    } = completions::plan(batch, &held, &destinations);

    let now = Timestamp::now();
    let mut update_delivery = conn
        .prepare_cached(
            "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, \
             manual = ?5, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?6 \
             WHERE id = ?1",
        )
        .map_err(&failed)?;
    let mut insert_attempt = conn
        .prepare_cached(
            "INSERT INTO attempts (id, tenant_id, event_id, destination_id, delivery_id, \
             attempt_number, manual, status, code, response_data, time) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(&failed)?;
    for w in &writes {
        let c = &batch[w.index];
        update_delivery
            .execute(params![
                c.lease.delivery_id,
                w.status.as_str(),
                w.attempt_number,
                w.next_attempt_at,
                w.next_manual,
                now,
            ])
            .map_err(&failed)?;
        let response_data = rows::to_opt_json("response_data", c.attempt.response_data.as_ref())?;
        insert_attempt
            .execute(params![
                c.attempt.id,
                w.row.tenant_id,
                w.row.event_id,
                w.row.destination_id,
                c.lease.delivery_id,
                w.attempt_number,
                w.row.manual,
                c.attempt.status.as_str(),
                c.attempt.code,
                response_data,
                Timestamp::new(c.attempt.time),
            ])
            .map_err(|e| {
                if is_sqlite_unique_violation(&e) {
                    StoreError::Conflict(format!(
                        "attempt id {:?} already exists; give every attempt a new id",
                        c.attempt.id
                    ))
                } else {
                    failed(e)
                }
            })?;
    }
    let mut set_failures = conn
        .prepare_cached(
            "UPDATE destinations SET consecutive_failures = ?3 WHERE tenant_id = ?1 AND id = ?2",
        )
        .map_err(&failed)?;
    for ((tenant_id, id), n) in failures {
        set_failures
            .execute(params![tenant_id, id, n])
            .map_err(&failed)?;
    }
    let mut reset_failures = conn
        .prepare_cached(
            "UPDATE destinations SET consecutive_failures = 0 \
             WHERE consecutive_failures <> 0 AND tenant_id = ?1 AND id = ?2",
        )
        .map_err(&failed)?;
    for (tenant_id, id) in resets {
        reset_failures
            .execute(params![tenant_id, id])
            .map_err(&failed)?;
    }
    Ok(results)
}

/// `SELECT_CLAIMED` for one delivery.
static SELECT_ONE_CLAIMED: LazyLock<String> = LazyLock::new(|| format!("{SELECT_CLAIMED}?1)"));

/// Claims due deliveries for `owner` (see `Store::claim_due`).
pub(super) fn claim_due(
    conn: &Connection,
    owner: &str,
    times: &ClaimTimes,
    limit: i64,
) -> Result<Vec<ClaimedRow>> {
    let failed = sqlite_error("claim deliveries");
    let mut candidates = conn
        .prepare_cached(<sqlx::Sqlite as Dialect>::CLAIM_CANDIDATES)
        .map_err(&failed)?;
    let mut live = Vec::new();
    let mut dead = Vec::new();
    let mut found = candidates
        .query(named_params! {
            "$1": times.now,
            "$2": times.per_destination,
            "$3": limit,
        })
        .map_err(&failed)?;
    while let Some(row) = found.next().map_err(&failed)? {
        let id: i64 = row.get(0).map_err(&failed)?;
        let is_live: bool = row.get(1).map_err(&failed)?;
        if is_live {
            live.push(id);
        } else {
            dead.push(id);
        }
    }
    drop(found);

    let mut cancel = conn
        .prepare_cached(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?2 WHERE id = ?1",
        )
        .map_err(&failed)?;
    for id in dead {
        cancel.execute(params![id, times.now]).map_err(&failed)?;
    }
    let mut lease = conn
        .prepare_cached(
            "UPDATE deliveries SET status = 'delivering', lease_owner = ?2, \
             lease_expires_at = ?3, next_attempt_at = ?3, updated_at = ?4 WHERE id = ?1",
        )
        .map_err(&failed)?;
    let mut read = conn
        .prepare_cached(SELECT_ONE_CLAIMED.as_str())
        .map_err(&failed)?;
    // In the candidates' order: oldest due first.
    let mut claimed = Vec::with_capacity(live.len());
    for id in live {
        lease
            .execute(params![id, owner, times.expires, times.now])
            .map_err(&failed)?;
        let row = read
            .query_row([id], |r| {
                Ok(ClaimedRow::read(&LiteRow(r), owner, times.expires))
            })
            .optional()
            .map_err(&failed)?;
        if let Some(row) = row {
            claimed.push(row?);
        }
    }
    Ok(claimed)
}

/// A rusqlite row read through `RowExt`, as the sqlx paths read theirs.
struct LiteRow<'a, 'stmt>(&'a rusqlite::Row<'stmt>);

impl LiteRow<'_, '_> {
    fn get<T: FromSql>(&self, col: &str) -> Result<T> {
        self.0
            .get(col)
            .map_err(|e| StoreError::corrupt("column", format!("{col}: {e}")))
    }
}

impl RowExt for LiteRow<'_, '_> {
    fn text(&self, col: &str) -> Result<String> {
        self.get(col)
    }

    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        self.get(col)
    }

    fn int(&self, col: &str) -> Result<i64> {
        self.get(col)
    }

    fn flag(&self, col: &str) -> Result<bool> {
        self.get(col)
    }

    fn time(&self, col: &str) -> Result<chrono::DateTime<chrono::Utc>> {
        self.get::<Timestamp>(col).map(|t| t.0)
    }

    fn opt_time(&self, col: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.get::<Option<Timestamp>>(col).map(|t| t.map(|t| t.0))
    }
}

impl FromSql for Timestamp {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        Timestamp::parse(text).map_err(|e| FromSqlError::Other(e.into()))
    }
}

impl rusqlite::ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.to_text().into())
    }
}
