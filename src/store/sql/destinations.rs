//! Destination queries. Credentials arrive here already sealed and leave still sealed: the
//! store facade encrypts and decrypts. Disabling or deleting a destination cancels its pending
//! deliveries in the same transaction.

use sqlx::{Encode, Executor, Type};

use super::rows::{self, RowExt as _, SealedDestination, destination_columns};
use super::timestamp::Timestamp;
use super::{Dialect, SqlStore, WriteTx, notify_routing};
use crate::store::error::{Result, StoreError, db_error, is_unique_violation};
use crate::store::model::NewDestination;

const SELECT_DESTINATION: &str = concat!(
    "SELECT ",
    destination_columns!(),
    " FROM destinations WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
);

const SELECT_TENANT_DESTINATIONS: &str = concat!(
    "SELECT ",
    destination_columns!(),
    " FROM destinations WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at, id"
);

const SELECT_ENABLED_DESTINATIONS: &str = concat!(
    "SELECT ",
    destination_columns!(),
    " FROM destinations WHERE tenant_id = $1 AND deleted_at IS NULL AND disabled_at IS NULL \
     ORDER BY created_at, id"
);

const INSERT_DESTINATION: &str = concat!(
    "INSERT INTO destinations (tenant_id, id, type, topics, filter, config, credentials, \
     delivery_metadata, metadata, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING ",
    destination_columns!()
);

const UPDATE_DESTINATION: &str = concat!(
    "UPDATE destinations SET type = $3, topics = $4, filter = $5, config = $6, credentials = $7, \
     delivery_metadata = $8, metadata = $9, updated_at = $10 \
     WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING ",
    destination_columns!()
);

const DISABLE_DESTINATION: &str = concat!(
    "UPDATE destinations SET disabled_at = coalesce(disabled_at, $3), updated_at = $3 \
     WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING ",
    destination_columns!()
);

const ENABLE_DESTINATION: &str = concat!(
    "UPDATE destinations SET disabled_at = NULL, consecutive_failures = 0, updated_at = $3 \
     WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING ",
    destination_columns!()
);

/// The JSON columns of a destination, serialized once for insert and update.
struct Columns {
    topics: String,
    filter: Option<String>,
    config: String,
    delivery_metadata: Option<String>,
    metadata: Option<String>,
}

impl Columns {
    fn of(d: &NewDestination) -> Result<Columns> {
        Ok(Columns {
            topics: rows::to_json("topics", &d.topics)?,
            filter: rows::to_opt_json("filter", d.filter.as_ref())?,
            config: rows::to_json("config", &d.config)?,
            delivery_metadata: rows::to_opt_json(
                "delivery_metadata",
                d.delivery_metadata.as_ref(),
            )?,
            metadata: rows::to_opt_json("metadata", d.metadata.as_ref())?,
        })
    }
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
    pub async fn create_destination(
        &self,
        d: &NewDestination,
        sealed_credentials: Option<&str>,
    ) -> Result<SealedDestination> {
        let op = "create destination";
        let cols = Columns::of(d)?;
        let mut tx = self
            .begin_write(DB::BEGIN_WRITE)
            .await
            .map_err(db_error(op))?;
        // Locks the tenant row (Postgres) so a concurrent tenant delete cannot miss this one.
        let tenant = sqlx::query(DB::SELECT_LIVE_TENANT_LOCKED)
            .bind(d.tenant_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error(op))?;
        if tenant.is_none() {
            return Err(StoreError::not_found("tenant", &d.tenant_id));
        }
        let row = sqlx::query(INSERT_DESTINATION)
            .bind(d.tenant_id.as_str())
            .bind(d.id.as_str())
            .bind(d.kind.as_str())
            .bind(cols.topics)
            .bind(cols.filter)
            .bind(cols.config)
            .bind(sealed_credentials)
            .bind(cols.delivery_metadata)
            .bind(cols.metadata)
            .bind(Timestamp::now())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!(
                        "destination id {:?} is already taken in tenant {:?} (ids of deleted \
                         destinations stay reserved); choose another id",
                        d.id, d.tenant_id
                    ))
                } else {
                    db_error(op)(e)
                }
            })?;
        let created = rows::destination(&row, "")?;
        notify_routing(&mut tx, &d.tenant_id).await?;
        tx.commit().await.map_err(db_error(op))?;
        Ok(created)
    }

    pub async fn get_destination(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<SealedDestination>> {
        sqlx::query(SELECT_DESTINATION)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error("get destination"))?
            .map(|r| rows::destination(&r, ""))
            .transpose()
    }

    /// Live destinations of a tenant (enabled or not), oldest first.
    pub async fn list_destinations(&self, tenant_id: &str) -> Result<Vec<SealedDestination>> {
        self.destinations_where(SELECT_TENANT_DESTINATIONS, tenant_id)
            .await
    }

    /// Live, enabled destinations of a tenant: what routing may send to.
    pub async fn list_enabled_destinations(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<SealedDestination>> {
        self.destinations_where(SELECT_ENABLED_DESTINATIONS, tenant_id)
            .await
    }

    async fn destinations_where(
        &self,
        sql: &'static str,
        tenant_id: &str,
    ) -> Result<Vec<SealedDestination>> {
        sqlx::query(sql)
            .bind(tenant_id)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error("list destinations"))?
            .iter()
            .map(|r| rows::destination(r, ""))
            .collect()
    }

    pub async fn count_destinations(&self, tenant_id: &str) -> Result<u64> {
        let row = sqlx::query(
            "SELECT count(*) AS n FROM destinations WHERE tenant_id = $1 AND deleted_at IS NULL",
        )
        .bind(tenant_id)
        .fetch_one(&self.reader)
        .await
        .map_err(db_error("count destinations"))?;
        Ok(row.int("n")?.max(0) as u64)
    }

    /// Replaces the writable fields (type included); `disabled_at` and `created_at` stay.
    pub async fn update_destination(
        &self,
        d: &NewDestination,
        sealed_credentials: Option<&str>,
    ) -> Result<SealedDestination> {
        let op = "update destination";
        let cols = Columns::of(d)?;
        let mut tx = self
            .begin_write(DB::BEGIN_WRITE)
            .await
            .map_err(db_error(op))?;
        let row = sqlx::query(UPDATE_DESTINATION)
            .bind(d.tenant_id.as_str())
            .bind(d.id.as_str())
            .bind(d.kind.as_str())
            .bind(cols.topics)
            .bind(cols.filter)
            .bind(cols.config)
            .bind(sealed_credentials)
            .bind(cols.delivery_metadata)
            .bind(cols.metadata)
            .bind(Timestamp::now())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error(op))?
            .ok_or_else(|| StoreError::not_found("destination", &d.id))?;
        let updated = rows::destination(&row, "")?;
        notify_routing(&mut tx, &d.tenant_id).await?;
        tx.commit().await.map_err(db_error(op))?;
        Ok(updated)
    }

    /// Sets `disabled_at` (kept if already disabled) and cancels the pending deliveries.
    pub async fn disable_destination(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<SealedDestination> {
        self.set_disabled(DISABLE_DESTINATION, tenant_id, id, true)
            .await
    }

    pub async fn enable_destination(&self, tenant_id: &str, id: &str) -> Result<SealedDestination> {
        self.set_disabled(ENABLE_DESTINATION, tenant_id, id, false)
            .await
    }

    async fn set_disabled(
        &self,
        sql: &'static str,
        tenant_id: &str,
        id: &str,
        cancel_pending: bool,
    ) -> Result<SealedDestination> {
        let op = "disable or enable destination";
        let now = Timestamp::now();
        let mut tx = self
            .begin_write(DB::BEGIN_WRITE)
            .await
            .map_err(db_error(op))?;
        let row = sqlx::query(sql)
            .bind(tenant_id)
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error(op))?
            .ok_or_else(|| StoreError::not_found("destination", id))?;
        let destination = rows::destination(&row, "")?;
        if cancel_pending {
            cancel_pending_deliveries(&mut tx, tenant_id, id, now).await?;
        }
        notify_routing(&mut tx, tenant_id).await?;
        tx.commit().await.map_err(db_error(op))?;
        Ok(destination)
    }

    /// Soft-deletes the destination (its id stays reserved) and cancels its pending deliveries.
    pub async fn delete_destination(&self, tenant_id: &str, id: &str) -> Result<()> {
        let op = "delete destination";
        let now = Timestamp::now();
        let mut tx = self
            .begin_write(DB::BEGIN_WRITE)
            .await
            .map_err(db_error(op))?;
        let deleted = sqlx::query(
            "UPDATE destinations SET deleted_at = $3, updated_at = $3 \
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error(op))?;
        if DB::rows_affected(&deleted) == 0 {
            return Err(StoreError::not_found("destination", id));
        }
        cancel_pending_deliveries(&mut tx, tenant_id, id, now).await?;
        notify_routing(&mut tx, tenant_id).await?;
        tx.commit().await.map_err(db_error(op))?;
        Ok(())
    }
}

/// Deliveries being attempted right now finish normally; a retry they schedule afterwards is
/// cancelled then (see `complete_attempt`).
async fn cancel_pending_deliveries<DB>(
    tx: &mut WriteTx<DB>,
    tenant_id: &str,
    destination_id: &str,
    now: Timestamp,
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Timestamp: Encode<'q, DB> + Type<DB>,
{
    // The repeated status test lets both backends use the partial queue index.
    sqlx::query(
        "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = $3 \
         WHERE tenant_id = $1 AND destination_id = $2 \
           AND status IN ('pending', 'delivering') AND status = 'pending'",
    )
    .bind(tenant_id)
    .bind(destination_id)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db_error("cancel pending deliveries"))?;
    Ok(())
}
