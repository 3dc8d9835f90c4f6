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
