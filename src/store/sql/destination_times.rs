//! Setting a destination's timestamps explicitly, for Outpost's import fields: `created_at` and
//! `updated_at` on create (admin only) and the time given for `disabled_at`. Routing does not
//! depend on these, so no routing change is announced.

use sqlx::{Encode, Executor, Type};

use super::rows::{self, SealedDestination, destination_columns};
use super::timestamp::Timestamp;
use super::{Dialect, SqlStore, notify_routing};
use crate::store::error::{Result, StoreError, db_error};
use crate::store::model::DestinationTimes;

/// `disabled_at` only moves on a destination that is already disabled: enabling and disabling
/// (which cancels deliveries) stay with `enable_destination` / `disable_destination`.
const SET_DESTINATION_TIMES: &str = concat!(
    "UPDATE destinations SET created_at = coalesce($3, created_at), \
     updated_at = coalesce($4, updated_at), \
     disabled_at = CASE WHEN disabled_at IS NULL THEN NULL ELSE coalesce($5, disabled_at) END \
     WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING ",
    destination_columns!()
);

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Timestamp>: Encode<'q, DB> + Type<DB>,
{
    pub async fn set_destination_times(
        &self,
        tenant_id: &str,
        id: &str,
        times: &DestinationTimes,
    ) -> Result<SealedDestination> {
        let op = "set destination times";
        let mut tx = self
            .begin_write(DB::BEGIN_WRITE)
            .await
            .map_err(db_error(op))?;
        let stored = sqlx::query(SET_DESTINATION_TIMES)
            .bind(tenant_id)
            .bind(id)
            .bind(times.created_at.map(Timestamp::new))
            .bind(times.updated_at.map(Timestamp::new))
            .bind(times.disabled_at.map(Timestamp::new))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error(op))?
            .map(|r| rows::destination(&r, ""))
            .transpose()?
            .ok_or_else(|| StoreError::not_found("destination", id))?;
        notify_routing(&mut tx, tenant_id).await?;
        tx.commit().await.map_err(db_error(op))?;
        Ok(stored)
    }
}
