//! A fresh store for each benchmark run: a SQLite file in a temporary directory, or a Postgres
//! schema of its own (reached through `search_path`) that is dropped afterwards.

use std::fmt;

use anyhow::Context as _;
use sqlx::Connection as _;
use tempfile::TempDir;

/// Which store jetpost runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    Sqlite,
    /// The admin URL of a Postgres database; the benchmark creates and drops a schema in it.
    Postgres(String),
}

impl StoreChoice {
    pub fn name(&self) -> &'static str {
        match self {
            StoreChoice::Sqlite => "sqlite",
            StoreChoice::Postgres(_) => "postgres",
        }
    }
}

impl fmt::Display for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fresh, empty store location.
pub enum BenchDb {
    Sqlite {
        _dir: TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        schema: String,
        url: String,
    },
}

impl BenchDb {
    pub async fn create(choice: &StoreChoice) -> anyhow::Result<BenchDb> {
        match choice {
            StoreChoice::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("jetpost-bench-")
                    .tempdir()
                    .context("creating a temporary directory for the SQLite store")?;
                let url = format!("sqlite://{}/jetpost.db", dir.path().display());
                Ok(BenchDb::Sqlite { _dir: dir, url })
            }
            StoreChoice::Postgres(admin_url) => {
                let schema = format!("jetpost_bench_{}", uuid::Uuid::new_v4().simple());
                let mut admin =
                    sqlx::PgConnection::connect(admin_url)
                        .await
                        .with_context(|| {
                            format!(
                                "cannot reach Postgres at {}; start it or pass --postgres-url",
                                crate::config::DatabaseUrl::new(admin_url.as_str()).redacted()
                            )
                        })?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut admin)
                    .await
                    .with_context(|| format!("creating schema {schema}"))?;
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                let url = format!("{admin_url}{separator}options[search_path]={schema}");
                Ok(BenchDb::Postgres {
                    admin_url: admin_url.clone(),
                    schema,
                    url,
                })
            }
        }
    }

    /// The `database_url` jetpost connects with.
    pub fn url(&self) -> &str {
        match self {
            BenchDb::Sqlite { url, .. } | BenchDb::Postgres { url, .. } => url,
        }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let BenchDb::Postgres {
            admin_url, schema, ..
        } = self
        else {
            return;
        };
        let (admin_url, schema) = (admin_url.clone(), schema.clone());
        // Drop may run inside a runtime: clean up from a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut admin)
                .await
                .ok()
            })
        });
        let _ = cleanup.join();
    }
}

/// Seeds `count` finished events of `tenant` (each with a successful delivery to
/// `destination_id` and its attempt) stored at `stored_at`: the old log a retention purge
/// deletes. Written with plain SQL in one transaction (the store's own path cannot backdate).
pub async fn seed_old_events(
    url: &str,
    tenant: &str,
    destination_id: &str,
    count: u64,
    stored_at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let count = i64::try_from(count).context("too many old events")?;
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        let at = stored_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut tx = conn.begin().await?;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
             INSERT INTO events (tenant_id, id, topic, time, data, eligible_for_retry, \
                 destination_ids, created_at) \
             SELECT $2, 'old-' || i, 'bench.old', $3, '{\"old\":' || i || '}', 1, \
                 json_array($4), $3 FROM n",
        )
        .bind(count)
        .bind(tenant)
        .bind(&at)
        .bind(destination_id)
        .execute(&mut *tx)
        .await
        .context("seeding old events")?;
        seed_finished(&mut tx, tenant, destination_id).await?;
        tx.commit().await?;
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO events (tenant_id, id, topic, time, data, eligible_for_retry, \
                 destination_ids, created_at) \
             SELECT $2, 'old-' || i, 'bench.old', $3, '{\"old\":' || i || '}', TRUE, \
                 json_build_array($4::text)::text, $3 FROM generate_series(1, $1) AS i",
        )
        .bind(count)
        .bind(tenant)
        .bind(stored_at)
        .bind(destination_id)
        .execute(&mut *tx)
        .await
        .context("seeding old events")?;
        seed_finished(&mut tx, tenant, destination_id).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The successful delivery and attempt of each seeded old event of `tenant`.
async fn seed_finished<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    tenant: &str,
    destination_id: &str,
) -> anyhow::Result<()>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "INSERT INTO deliveries (tenant_id, event_id, destination_id, status, attempts, \
             manual, created_at, updated_at) \
         SELECT tenant_id, id, $2, 'success', 1, FALSE, created_at, created_at FROM events \
         WHERE tenant_id = $1 AND id LIKE 'old-%'",
    )
    .bind(tenant)
    .bind(destination_id)
    .execute(&mut **tx)
    .await
    .context("seeding old deliveries")?;
    sqlx::query(
        "INSERT INTO attempts (id, tenant_id, event_id, destination_id, delivery_id, \
             attempt_number, manual, status, code, response_data, time) \
         SELECT 'old-' || tenant_id || '-' || id, tenant_id, event_id, destination_id, id, 1, \
             FALSE, 'success', '200', '{\"status\":200}', created_at FROM deliveries \
         WHERE tenant_id = $1 AND event_id LIKE 'old-%'",
    )
    .bind(tenant)
    .execute(&mut **tx)
    .await
    .context("seeding old attempts")?;
    Ok(())
}

/// The events `seed_old_events` stored that are still there.
pub async fn count_old_events(url: &str) -> anyhow::Result<u64> {
    let sql = "SELECT count(*) FROM events WHERE id LIKE 'old-%'";
    let count: i64 = if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        sqlx::query_scalar(sql).fetch_one(&mut conn).await?
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::query_scalar(sql).fetch_one(&mut conn).await?
    };
    Ok(u64::try_from(count).unwrap_or(0))
}
