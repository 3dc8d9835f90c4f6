//! SQLite specifics: opening the database file (created with its folder on first run, WAL,
//! busy timeout, foreign keys, full sync) and the statements SQLite words differently.

use std::path::Path;
use std::str::FromStr;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};

use super::sqlite_writer::SqliteWriter;
use super::{Dialect, STATEMENT_CACHE, SqlStore, WriteTurn};
use crate::store::StoreOptions;
use crate::store::error::{Result, StoreError, db_error, redact_url};
use crate::store::migrations::EmbeddedMigration;

impl Dialect for Sqlite {
    // `synchronous` is a setting of the connection read at commit; every write transaction
    // sets the one it needs (all writes go through one connection).
    const BEGIN_WRITE: &'static str = "PRAGMA synchronous = FULL; BEGIN IMMEDIATE";
    const BEGIN_WRITE_UNSYNCED: &'static str = "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE";

    // SQLite has no LATERAL, and uses only the first column of a row-value comparison for an
    // index seek, so the skip-scan over destination queues steps with two index probes
    // (next destination of this tenant, else first destination of the next tenant).
    // `INDEXED BY deliveries_queue`: left to itself the planner takes deliveries_due for
    // `status IN (…)` and sorts every pending delivery to find the first queue, which made a
    // claim cost ~50 ms with 100,000 pending (the benchmark's bottleneck); the partial index
    // is already in queue order.
    // A queue is ordered by status, then due time, so each destination's oldest due
    // deliveries are read per status (two ordered, limited ranges) and ranked together; an
    // `IN` over both statuses would sort the whole backlog. Each status test repeats the
    // index's `status IN (…)`: SQLite uses a partial index only when the query states its
    // condition.
    const CLAIM_CANDIDATES: &'static str = "
        WITH RECURSIVE queues(tenant_id, destination_id) AS (
            SELECT tenant_id, destination_id FROM (
                SELECT tenant_id, destination_id FROM deliveries INDEXED BY deliveries_queue
                WHERE status IN ('pending', 'delivering')
                ORDER BY tenant_id, destination_id LIMIT 1)
            UNION ALL
            SELECT n.tenant_id, n.destination_id
            FROM queues q JOIN deliveries n ON n.id = coalesce(
                (SELECT x.id FROM deliveries x
                 WHERE x.status IN ('pending', 'delivering')
                   AND x.tenant_id = q.tenant_id AND x.destination_id > q.destination_id
                 ORDER BY x.tenant_id, x.destination_id LIMIT 1),
                (SELECT x.id FROM deliveries x INDEXED BY deliveries_queue
                 WHERE x.status IN ('pending', 'delivering') AND x.tenant_id > q.tenant_id
                 ORDER BY x.tenant_id, x.destination_id LIMIT 1))
        ),
        loads AS MATERIALIZED (
            SELECT q.tenant_id, q.destination_id,
                (SELECT count(*) FROM deliveries f INDEXED BY deliveries_queue
                 WHERE f.tenant_id = q.tenant_id AND f.destination_id = q.destination_id
                   AND f.status IN ('pending', 'delivering') AND f.status = 'delivering'
                   AND f.next_attempt_at > $1
                ) AS in_flight,
                EXISTS (SELECT 1 FROM destinations t
                 WHERE t.tenant_id = q.tenant_id AND t.id = q.destination_id
                   AND t.deleted_at IS NULL AND t.disabled_at IS NULL) AS live
            FROM queues q
        ),
        candidates AS (
            SELECT d.id, d.next_attempt_at, l.in_flight, l.live,
                row_number() OVER (PARTITION BY l.tenant_id, l.destination_id
                                   ORDER BY d.next_attempt_at, d.id) AS rank
            FROM loads l JOIN deliveries d ON d.id IN (
                SELECT id FROM (
                    SELECT x.id FROM deliveries x INDEXED BY deliveries_queue
                    WHERE x.tenant_id = l.tenant_id AND x.destination_id = l.destination_id
                      AND x.status IN ('pending', 'delivering') AND x.status = 'pending'
                      AND x.next_attempt_at <= $1
                    ORDER BY x.next_attempt_at LIMIT $2)
                UNION ALL
                SELECT id FROM (
                    SELECT x.id FROM deliveries x INDEXED BY deliveries_queue
                    WHERE x.tenant_id = l.tenant_id AND x.destination_id = l.destination_id
                      AND x.status IN ('pending', 'delivering') AND x.status = 'delivering'
                      AND x.next_attempt_at <= $1
                    ORDER BY x.next_attempt_at LIMIT $2))
        )
        SELECT id, live FROM candidates
        WHERE NOT live OR rank + in_flight <= $2
        ORDER BY rank, next_attempt_at, id
        LIMIT $3";

    const FOR_UPDATE: &'static str = "";

    const FOR_KEY_SHARE: &'static str = "";

    const FOR_UPDATE_SKIP_LOCKED: &'static str = "";

    // The span of rowids: each `max`/`min` alone is one b-tree probe (both in one SELECT
    // would read the whole table), where `count(*)` reads every row. It counts the gaps too:
    // rows deleted in the middle (an old event kept for a pending delivery holds `min`
    // down), so it is an upper bound that purges bring back down.
    const ROW_ESTIMATES: &'static str = "SELECT \
        coalesce((SELECT max(rowid) FROM events) - (SELECT min(rowid) FROM events) + 1, 0) \
            AS events, \
        coalesce((SELECT max(rowid) FROM deliveries) - (SELECT min(rowid) FROM deliveries) + 1, 0) \
            AS deliveries, \
        coalesce((SELECT max(rowid) FROM attempts) - (SELECT min(rowid) FROM attempts) + 1, 0) \
            AS attempts";

    // At most ~8 MB (2000 pages of 4 KiB) per call, so each call holds the writer briefly;
    // a no-op unless the file uses incremental auto-vacuum.
    const RECLAIM_SPACE: Option<&'static str> = Some("PRAGMA incremental_vacuum(2000)");

    const AUTO_VACUUM_MODE: Option<&'static str> = Some("PRAGMA auto_vacuum");

    const SELECT_LIVE_TENANT_LOCKED: &'static str =
        "SELECT 1 FROM tenants WHERE id = $1 AND deleted_at IS NULL";

    const NOTIFY_ROUTING: Option<&'static str> = None;

    const MIGRATIONS_TABLE_EXISTS: &'static str =
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'";

    const MIGRATIONS: &'static [EmbeddedMigration] = &[
        EmbeddedMigration {
            version: 1,
            description: "initial",
            sql: include_str!("../../../migrations/sqlite/0001_initial.sql"),
        },
        EmbeddedMigration {
            version: 2,
            description: "destination failures",
            sql: include_str!("../../../migrations/sqlite/0002_destination_failures.sql"),
        },
        EmbeddedMigration {
            version: 3,
            description: "retention",
            sql: include_str!("../../../migrations/sqlite/0003_retention.sql"),
        },
        EmbeddedMigration {
            version: 4,
            description: "delivery indexes",
            sql: include_str!("../../../migrations/sqlite/0004_delivery_indexes.sql"),
        },
        EmbeddedMigration {
            version: 5,
            description: "replicas",
            sql: include_str!("../../../migrations/sqlite/0005_replicas.sql"),
        },
    ];

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Opens the store's sqlx pools and starts its hot-path writer thread.
pub(crate) async fn connect(
    url: &str,
    options: &StoreOptions,
) -> Result<(SqlStore<Sqlite>, SqliteWriter)> {
    let bad_url = |reason: String| StoreError::BadUrl {
        url: redact_url(url),
        reason,
    };
    let base = SqliteConnectOptions::from_str(url)
        .map_err(|e| bad_url(e.to_string()))?
        .busy_timeout(options.busy_timeout)
        .foreign_keys(true)
        // Acked NATS messages must survive a power loss, not only a process crash.
        .synchronous(SqliteSynchronous::Full)
        // Statement journals (multi-row UPDATE / INSERT keep one to undo a failed statement)
        // stay in memory instead of spilling into a temporary file: they were ~10 % of the
        // writer thread's time in a throughput profile.
        .pragma("temp_store", "memory")
        .statement_cache_capacity(STATEMENT_CACHE);
    create_parent_folder(base.get_filename()).map_err(bad_url)?;
    let path = base.get_filename().to_path_buf();

    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(options.acquire_timeout)
        // Some errors (SQLITE_FULL, SQLITE_IOERR) make SQLite roll back on its own; sqlx's queued
        // rollback then fails and the connection still believes it is in a transaction, so every
        // later write would fail. Such a connection is closed and replaced instead of reused.
        .after_release(|conn, _| {
            Box::pin(async move {
                sqlx::Connection::ping(conn).await?;
                Ok(!sqlx::Connection::is_in_transaction(conn))
            })
        })
        .connect_with(
            base.clone()
                .create_if_missing(true)
                // Takes effect on a new file only (before its first table); an existing
                // file keeps its mode until converted by hand (docs/storage.md, Retention).
                .auto_vacuum(SqliteAutoVacuum::Incremental)
                .journal_mode(SqliteJournalMode::Wal),
        )
        .await
        .map_err(db_error("open the SQLite database"))?;
    // Readers open the file after the writer created it and switched it to WAL (a persistent
    // setting of the file).
    let reader = SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(base)
        .await
        .map_err(db_error("open the SQLite database"))?;
    let turn = WriteTurn::default();
    let hot = SqliteWriter::start(&path, options.busy_timeout, turn.clone()).await?;
    Ok((SqlStore::new(writer, reader, Some(turn)), hot))
}

fn create_parent_folder(file: &Path) -> std::result::Result<(), String> {
    let Some(parent) = file.parent() else {
        return Ok(());
    };
    if parent.as_os_str().is_empty() || file.as_os_str() == ":memory:" {
        return Ok(());
    }
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create the folder {}: {e}", parent.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn synchronous_in(store: &SqlStore<Sqlite>, begin: &'static str) -> i64 {
        let mut tx = store.begin_write(begin).await.unwrap();
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        level
    }

    /// Every write transaction sets its own sync level, so a durable one (an event batch)
    /// that follows an unsynced one (a claim) on the one writer connection is synced again.
    #[tokio::test]
    async fn each_write_transaction_sets_its_sync_level() {
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let (store, _) = connect(&url, &StoreOptions::default()).await.unwrap();
        assert_eq!(synchronous_in(&store, Sqlite::BEGIN_WRITE).await, FULL);
        assert_eq!(
            synchronous_in(&store, Sqlite::BEGIN_WRITE_UNSYNCED).await,
            NORMAL
        );
        assert_eq!(synchronous_in(&store, Sqlite::BEGIN_WRITE).await, FULL);
    }
}
