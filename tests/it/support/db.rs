//! Fresh databases for store tests: a SQLite file in its own temporary folder, or a Postgres
//! schema of its own (dropped when the `TestDb` is dropped) on the machine's Postgres
//! (`JETPOST_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).

use std::path::PathBuf;

use jetpost::store::{BackendKind, Store, StoreOptions};
use sqlx::Connection as _;
use tempfile::TempDir;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn postgres_admin_url() -> String {
    std::env::var("JETPOST_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string())
}

pub enum TestDb {
    Sqlite {
        dir: TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        schema: String,
        url: String,
    },
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/jetpost.db", dir.path().display());
        TestDb::Sqlite { dir, url }
    }

    /// A new schema; the store's sessions use it through `search_path` and are named after it
    /// (`application_name`), so a test can find them in `pg_stat_activity`.
    pub async fn postgres() -> TestDb {
        let admin_url = postgres_admin_url();
        let schema = format!("jetpost_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Postgres at {admin_url} is unreachable ({e}); the store tests need it: \
                     start Postgres or point JETPOST_TEST_POSTGRES_URL at one"
                )
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{admin_url}{separator}options[search_path]={schema}&application_name={schema}"
        );
        TestDb::Postgres {
            admin_url,
            schema,
            url,
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            TestDb::Sqlite { .. } => BackendKind::Sqlite,
            TestDb::Postgres { .. } => BackendKind::Postgres,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// The SQLite folder (SQLite only).
    pub fn dir(&self) -> PathBuf {
        match self {
            TestDb::Sqlite { dir, .. } => dir.path().to_path_buf(),
            TestDb::Postgres { .. } => panic!("not a SQLite test database"),
        }
    }

    /// The schema (Postgres only); also the `application_name` of the store's sessions.
    pub fn schema(&self) -> &str {
        match self {
            TestDb::Postgres { schema, .. } => schema,
            TestDb::Sqlite { .. } => panic!("not a Postgres test database"),
        }
    }

    /// A migrated store with this AES secret.
    pub async fn store(&self, aes_secret: Option<&str>) -> Store {
        self.store_with(aes_secret, &StoreOptions::default()).await
    }

    pub async fn store_with(&self, aes_secret: Option<&str>, options: &StoreOptions) -> Store {
        let store = Store::connect_with(self.url(), aes_secret, options)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// First column of every row of `sql`, read as text, bypassing the store.
    pub async fn raw_texts(&self, sql: &'static str) -> Vec<Option<String>> {
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
            TestDb::Postgres { url, .. } => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
        }
    }

    /// Runs `sql` (one or more statements) bypassing the store, e.g. to age rows.
    pub async fn raw_execute(&self, sql: &'static str) {
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
            TestDb::Postgres { url, .. } => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    /// `sql` must return one integer (e.g. `SELECT count(*) ...`).
    pub async fn raw_count(&self, sql: &'static str) -> i64 {
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
            TestDb::Postgres { url, .. } => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres {
            admin_url, schema, ..
        } = self
        else {
            return;
        };
        let (admin_url, schema) = (admin_url.clone(), schema.clone());
        // Drop may run inside the test's runtime: clean up from a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                // A session of this schema may still hold locks: one left idle in a transaction
                // behind a test proxy whose tasks cannot run while this drop blocks the test's
                // runtime. DROP SCHEMA would wait for it forever, so end the schema's sessions
                // (they are named after it) first, and bound the wait in any case.
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&schema)
                .execute(&mut admin)
                .await
                .ok()?;
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut admin)
                    .await
                    .ok()?;
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
