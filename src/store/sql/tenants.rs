//! Tenant queries: upsert (which revives a deleted tenant), lookups, the admin list, and the
//! soft delete that takes the tenant's destinations and pending deliveries with it.

use sqlx::{Encode, Executor, QueryBuilder, Type};

use super::filters::{TieBreak, push_in, push_page};
use super::rows::{self, RowExt as _, tenant_columns};
use super::timestamp::Timestamp;
use super::{Dialect, SqlStore, notify_routing};
use crate::store::error::{Result, StoreError, db_error};
use crate::store::model::{Metadata, Tenant, TenantFilter, Upserted};
use crate::store::page::{Cursor, Page, PagePlan};

const SELECT_TENANT: &str = concat!(
    "SELECT ",
    tenant_columns!(),
    " FROM tenants WHERE id = $1 AND deleted_at IS NULL"
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
    pub async fn upsert_tenant(&self, id: &str, metadata: Option<&Metadata>) -> Result<Upserted> {
        let op = "upsert tenant";
        let metadata = rows::to_opt_json("metadata", metadata)?;
        let now = Timestamp::now();
        let mut tx = self
            .begin_write(DB::BEGIN_WRITE)
            .await
            .map_err(db_error(op))?;
        // Insert-or-nothing first: a concurrent upsert of the same new tenant waits for ours
        // and then takes the update path instead of failing on the primary key.
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, metadata, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(metadata.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error(op))?;
        let mut created = DB::rows_affected(&inserted) == 1;
        if !created {
            // A deleted tenant comes back as a new one: fresh created_at, no destinations.
            let revived = sqlx::query(
                "UPDATE tenants SET metadata = $2, created_at = $3, updated_at = $3, \
                 deleted_at = NULL WHERE id = $1 AND deleted_at IS NOT NULL",
            )
            .bind(id)
            .bind(metadata.as_deref())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error(op))?;
            created = DB::rows_affected(&revived) == 1;
            if !created {
                sqlx::query(
                    "UPDATE tenants SET metadata = $2, updated_at = $3 \
                     WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(id)
                .bind(metadata.as_deref())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_error(op))?;
            }
        }
        let row = sqlx::query(SELECT_TENANT)
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error(op))?;
        let tenant = rows::tenant(&row)?;
        notify_routing(&mut tx, id).await?;
        tx.commit().await.map_err(db_error(op))?;
        Ok(Upserted { tenant, created })
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        sqlx::query(SELECT_TENANT)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error("get tenant"))?
            .map(|r| rows::tenant(&r))
            .transpose()
    }

    /// Live tenants by creation time.
    pub async fn list_tenants(
        &self,
        filter: &TenantFilter,
        plan: &PagePlan,
    ) -> Result<Page<Tenant>> {
        let mut qb = QueryBuilder::<DB>::new(concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM tenants WHERE deleted_at IS NULL"
        ));
        push_in(&mut qb, "id", &filter.ids);
        push_page(&mut qb, "created_at", "id", TieBreak::Text, plan)?;
        let found = qb
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(db_error("list tenants"))?
            .iter()
            .map(rows::tenant)
            .collect::<Result<Vec<_>>>()?;
        Ok(plan.finish(found, |t| Cursor {
            time: t.created_at,
            key: t.id.clone(),
        }))
    }

    pub async fn count_tenants(&self) -> Result<u64> {
        let row = sqlx::query("SELECT count(*) AS n FROM tenants WHERE deleted_at IS NULL")
            .fetch_one(&self.reader)
            .await
            .map_err(db_error("count tenants"))?;
        Ok(row.int("n")?.max(0) as u64)
    }

    /// Soft-deletes the tenant and its destinations; their pending deliveries are cancelled.
    pub async fn delete_tenant(&self, id: &str) -> Result<()> {
        let op = "delete tenant";
        let now = Timestamp::now();
        let mut tx = self
            .begin_write(DB::BEGIN_WRITE)
            .await
            .map_err(db_error(op))?;
        let deleted = sqlx::query(
            "UPDATE tenants SET deleted_at = $2, updated_at = $2 \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error(op))?;
        if DB::rows_affected(&deleted) == 0 {
            return Err(StoreError::not_found("tenant", id));
        }
        sqlx::query(
            "UPDATE destinations SET deleted_at = $2, updated_at = $2 \
             WHERE tenant_id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error(op))?;
        // The repeated status test lets both backends use the partial queue index.
        sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = $2 \
             WHERE tenant_id = $1 AND status IN ('pending', 'delivering') AND status = 'pending'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error(op))?;
        notify_routing(&mut tx, id).await?;
        tx.commit().await.map_err(db_error(op))?;
        Ok(())
    }
}
