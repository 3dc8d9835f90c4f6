//! The store's SQL, written once for both backends: `SqlStore<DB>` holds the pools and runs the
//! queries (one file per area); `Dialect` carries what differs between SQLite and Postgres
//! (connection setup, the claim query, row locks, embedded migrations). Each area's
//! `impl SqlStore<DB>` repeats one `where` list: the value types it binds must encode for `DB`,
//! and Rust does not carry such bounds over from a trait.

mod attempts;
mod completions;
mod deliveries;
mod destination_times;
mod destinations;
mod events;
mod filters;
mod metrics;
pub(crate) mod postgres;
mod replicas;
pub(crate) mod retention;
pub(crate) mod rows;
pub(crate) mod sqlite;
pub(crate) mod sqlite_writer;
mod tenants;
pub(crate) mod timestamp;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::migrate::Migrate;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, QueryBuilder, Transaction, Type};
use tokio::sync::OwnedMutexGuard;

use self::rows::RowExt;
use super::error::{Result, StoreError, db_error};
use super::migrations::{EmbeddedMigration, migrator};

/// What differs between the two backends. The bounds on the associated types (rows readable
/// through `RowExt`, connections that can migrate) hold for every use of a `Dialect`.
pub(crate) trait Dialect:
    Database<Row: RowExt, Arguments: IntoArguments<Self> + Default, Connection: Migrate>
{
    /// Opens a write transaction whose commit is durable (synced to disk before it returns):
    /// everything by default, and above all ingest's event batches, which are acked to NATS
    /// once committed. SQLite takes the write lock up front (`BEGIN IMMEDIATE`) so a
    /// transaction never fails upgrading from reader to writer halfway through, and sets
    /// `synchronous = FULL` for it (after an unsynced transaction on the same connection).
    const BEGIN_WRITE: &'static str;

    /// Opens a write transaction whose commit is not waited for on disk: claims and attempt
    /// results, whose loss in a power cut (not a process crash: the OS still has the write)
    /// only makes a delivery go out again, which at-least-once allows — a lost lease is an
    /// expired lease, a lost attempt record leaves the delivery leased until it expires. Both
    /// backends write their log in order, so the next synced commit makes these durable too.
    /// It spares the dispatcher's round trips a disk flush each (~4 ms on the benchmark's disk,
    /// where SQLite's single writer manages ~240 synced commits a second).
    const BEGIN_WRITE_UNSYNCED: &'static str;

    /// `claim_due`'s candidates as rows `(id, live)`: binds `$1` now, `$2` per-destination cap,
    /// `$3` limit. Postgres locks the rows it returns (`FOR UPDATE SKIP LOCKED`).
    const CLAIM_CANDIDATES: &'static str;

    /// Appended to a `SELECT` whose rows the transaction goes on to update: ` FOR UPDATE` on
    /// Postgres (other replicas wait for them), nothing on SQLite (one writer at a time).
    const FOR_UPDATE: &'static str;

    /// Appended to a `SELECT` of a row that must not be deleted before the transaction ends:
    /// ` FOR KEY SHARE` on Postgres (a purge holding the row is waited for, and then the row
    /// is gone), nothing on SQLite (one writer at a time).
    const FOR_KEY_SHARE: &'static str;

    /// Appended to the purge's `SELECT` of old events: ` FOR UPDATE SKIP LOCKED` on Postgres
    /// (replicas purging at once take different events instead of queueing behind each other,
    /// and an event whose row ingest or a manual retry holds is left for the next cycle),
    /// nothing on SQLite.
    const FOR_UPDATE_SKIP_LOCKED: &'static str;

    /// One row, columns `events`, `deliveries`, `attempts`: each table's approximate row
    /// count, at a cost that does not grow with the table.
    const ROW_ESTIMATES: &'static str;

    /// Returns freed pages to the file system after a purge batch; `None` where the database
    /// does it by itself (Postgres' autovacuum).
    const RECLAIM_SPACE: Option<&'static str>;

    /// Returns one row whose column `auto_vacuum` is 0 when freed pages are never returned to
    /// the file system;
    /// `None` where they always are.
    const AUTO_VACUUM_MODE: Option<&'static str>;

    /// Returns a row for a live tenant (`$1` id), share-locked on Postgres until the
    /// transaction ends.
    const SELECT_LIVE_TENANT_LOCKED: &'static str;

    /// Announces a routing change (`$1` tenant id) to other replicas on commit; `None` where
    /// a single process owns the database (SQLite).
    const NOTIFY_ROUTING: Option<&'static str>;

    /// Returns a row when sqlx's `_sqlx_migrations` table exists.
    const MIGRATIONS_TABLE_EXISTS: &'static str;

    /// This backend's schema migrations, embedded in the binary.
    const MIGRATIONS: &'static [EmbeddedMigration];

    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// The pools of one database. SQLite: one writer connection and several readers working on
/// WAL snapshots; the writer takes turns (`WriteTurn`) with the hot-path writer thread
/// (`sqlite_writer`), so writers queue in-process instead of contending for the file lock.
/// Postgres: both are the same pool, and no turns.
pub(crate) struct SqlStore<DB: Database> {
    writer: Pool<DB>,
    reader: Pool<DB>,
    turn: Option<WriteTurn>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            writer: self.writer.clone(),
            reader: self.reader.clone(),
            turn: self.turn.clone(),
        }
    }
}

/// One write transaction at a time among this process's SQLite writers (the sqlx writer
/// connection and the hot-path writer thread); first come, first served.
pub(crate) type WriteTurn = Arc<tokio::sync::Mutex<()>>;

/// A write transaction that holds the write turn until it ends. Derefs to the connection, as
/// sqlx's `Transaction` does.
pub(crate) struct WriteTx<DB: Database> {
    tx: Transaction<'static, DB>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl<DB: Database> WriteTx<DB> {
    pub async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> std::result::Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl<DB: Database> Deref for WriteTx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<DB: Database> DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl<DB: Database> SqlStore<DB> {
    /// Waits for the write turn (SQLite), then opens a write transaction with `begin`
    /// (`Dialect::BEGIN_WRITE` or `BEGIN_WRITE_UNSYNCED`).
    pub(crate) async fn begin_write(
        &self,
        begin: &'static str,
    ) -> std::result::Result<WriteTx<DB>, sqlx::Error> {
        let turn = self.take_turn().await;
        let tx = self.writer.begin_with(begin).await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// The write turn, for a write outside a transaction; `None` where there are no turns.
    pub(crate) async fn take_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.turn {
            Some(turn) => Some(turn.clone().lock_owned().await),
            None => None,
        }
    }
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
{
    pub(crate) fn new(writer: Pool<DB>, reader: Pool<DB>, turn: Option<WriteTurn>) -> Self {
        SqlStore {
            writer,
            reader,
            turn,
        }
    }

    pub async fn migrate(&self) -> Result<()> {
        let _turn = self.take_turn().await;
        migrator(DB::MIGRATIONS)
            .run(&self.writer)
            .await
            .map_err(StoreError::Migrate)
    }

    /// `(version, success)` of every applied migration; `None` before the first migration.
    pub async fn applied_migrations(&self) -> Result<Option<Vec<(i64, bool)>>> {
        let exists = sqlx::query(DB::MIGRATIONS_TABLE_EXISTS)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error("read schema version"))?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&self.reader)
            .await
            .map_err(db_error("read schema version"))?;
        rows.iter()
            .map(|r| Ok((r.int("version")?, r.flag("success")?)))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.writer)
            .await
            .map_err(db_error("ping"))?;
        Ok(())
    }

    /// The pool reads go through (for the Postgres change listener).
    pub(crate) fn pool(&self) -> &Pool<DB> {
        &self.reader
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Queues the routing-change announcement for `tenant_id`; sent when `tx` commits.
pub(crate) async fn notify_routing<DB>(tx: &mut WriteTx<DB>, tenant_id: &str) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    if let Some(sql) = DB::NOTIFY_ROUTING {
        sqlx::query(sql)
            .bind(tenant_id)
            .execute(&mut **tx)
            .await
            .map_err(db_error("announce routing change"))?;
    }
    Ok(())
}

/// Prepared statements each connection keeps: room for every shape of the multi-row statements
/// (`in_shapes`), about ten row counts for each of a dozen kinds, beside the rest.
pub(crate) const STATEMENT_CACHE: usize = 256;

/// Splits `items` into runs whose lengths are powers of two, largest first, none longer than
/// `max` (rounded down to a power of two). A multi-row statement's text depends on its row
/// count, and a connection keeps only so many prepared statements: cut this way, batches of any
/// size reuse a handful of statements per kind instead of preparing one for each size (a
/// 50-row INSERT took longer to prepare than to run).
pub(crate) fn in_shapes<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let max = prev_power_of_two(max.max(1));
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (run, tail) = rest.split_at(prev_power_of_two(rest.len()).min(max));
        rest = tail;
        Some(run)
    })
}

/// The largest power of two not above `n` (`n >= 1`).
fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// `$n, $n+1, ...)` — closes the `IN (` the caller opened.
pub(crate) fn push_ids<DB>(qb: &mut QueryBuilder<DB>, ids: &[i64])
where
    DB: Dialect,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    qb.push(")");
}

#[cfg(test)]
mod tests {
    use super::in_shapes;

    #[test]
    fn batches_are_cut_into_power_of_two_runs() {
        let lengths = |n: usize, max: usize| -> Vec<usize> {
            let items: Vec<usize> = (0..n).collect();
            let runs: Vec<&[usize]> = in_shapes(&items, max).collect();
            assert_eq!(runs.concat(), items, "every item once, in order");
            runs.iter().map(|r| r.len()).collect()
        };
        assert_eq!(lengths(0, 1000), Vec::<usize>::new());
        assert_eq!(lengths(1, 1000), [1]);
        assert_eq!(lengths(52, 1000), [32, 16, 4]);
        assert_eq!(lengths(1500, 1000), [512, 512, 256, 128, 64, 16, 8, 4]);
        assert_eq!(lengths(7, 1), [1; 7]);
    }
}
