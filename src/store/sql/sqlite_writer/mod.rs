//! SQLite's hot-path writer: one thread that owns a connection of its own and runs ingest's
//! event batches, the dispatcher's attempt completions and its claims, each whole, with cached
//! single-row statements (`statements`). sqlx's SQLite driver hands every statement to its
//! worker thread and every result row back, which cost 40-100 µs per row on the hot path
//! (BENCHMARKS.md); here a batch crosses threads once each way.
//!
//! Work that queues while a transaction runs goes into the next one together, so events and
//! attempts share a commit. Each piece runs under a savepoint of its own: a piece that fails
//! is undone alone and answers its own error, the others commit. The transaction is synced to
//! disk (`synchronous = FULL`) when it holds events (acked to NATS once committed), and not
//! waited for otherwise (see `Dialect::BEGIN_WRITE_UNSYNCED`).
//!
//! The store's other writes (tenants, destinations, retries, purges, migrations) stay on the
//! sqlx writer connection; both take the same `WriteTurn` around each transaction, so they
//! queue in-process instead of meeting SQLite's sleeping busy handler on the file lock.

mod statements;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::deliveries::{ClaimTimes, ClaimedRow};
use super::{STATEMENT_CACHE, WriteTurn};
use crate::store::error::{DbFailure, Result, StoreError};
use crate::store::model::{
    AttemptCompletion, AttemptRecorded, ClaimRequest, InsertOutcome, NewEvent,
};

/// Pieces of work one transaction takes at most.
const PIECES_PER_TRANSACTION: usize = 64;

/// A handle on the writer thread; cheap to clone. The thread ends on `close`.
#[derive(Clone)]
pub(crate) struct SqliteWriter {
    work: mpsc::Sender<Message>,
}

enum Message {
    Piece(Box<dyn Piece>),
    /// Answered when the thread takes it: it is alive and its queue moves.
    Ping(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

impl SqliteWriter {
    /// Opens the database file (created and switched to WAL by sqlx's writer already) and
    /// starts the thread.
    pub async fn start(path: &Path, busy_timeout: Duration, turn: WriteTurn) -> Result<Self> {
        let (work, queue) = mpsc::channel();
        let (opened, open_result) = oneshot::channel();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || match open(&path, busy_timeout) {
                Ok(conn) => {
                    let _ = opened.send(Ok(()));
                    serve(conn, &turn, &queue);
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Database {
                op: "start the SQLite writer thread",
                source: e.into(),
            })?;
        open_result
            .await
            .map_err(|_| closed("open the SQLite database"))??;
        Ok(SqliteWriter { work })
    }

    /// `Store::insert_events` on SQLite.
    pub async fn insert_events(&self, batch: &[NewEvent]) -> Result<Vec<InsertOutcome>> {
        let batch = batch.to_vec();
        self.run("insert events", true, move |conn| {
            statements::insert_events(conn, &batch)
        })
        .await
    }

    /// `SqlStore::complete_attempts` on SQLite.
    pub async fn complete_attempts(
        &self,
        batch: &[AttemptCompletion],
    ) -> Result<Vec<Option<AttemptRecorded>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let batch = batch.to_vec();
        self.run("complete attempts", false, move |conn| {
            statements::complete_attempts(conn, &batch)
        })
        .await
    }

    /// `SqlStore::claim_due` on SQLite.
    pub async fn claim_due(&self, req: &ClaimRequest<'_>) -> Result<Vec<ClaimedRow>> {
        let times = ClaimTimes::of(req)?;
        let owner = req.owner.to_string();
        let limit = i64::from(req.limit);
        self.run("claim deliveries", false, move |conn| {
            statements::claim_due(conn, &owner, &times, limit)
        })
        .await
    }

    /// Answers once the thread has taken everything queued before it (for `/healthz`): an
    /// error if the thread is gone.
    pub async fn ping(&self) -> Result<()> {
        let (done, answered) = oneshot::channel();
        self.work
            .send(Message::Ping(done))
            .map_err(|_| closed("ping the writer thread"))?;
        answered.await.map_err(|_| closed("ping the writer thread"))
    }

    /// Stops the thread once the work queued before has been answered, and closes the
    /// connection; later calls fail as the store being closed.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.work.send(Message::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }

    /// Runs `write` in the writer's next transaction; answers once that has committed.
    async fn run<T, W>(&self, op: &'static str, durable: bool, write: W) -> Result<T>
    where
        T: Send + 'static,
        W: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let piece = Box::new(Pending {
            op,
            durable,
            write: Some(write),
            result: None,
            done,
        });
        self.work
            .send(Message::Piece(piece))
            .map_err(|_| closed(op))?;
        answer.await.map_err(|_| closed(op))?
    }
}

fn closed(op: &'static str) -> StoreError {
    StoreError::Unavailable {
        op,
        source: "the store is closed".into(),
    }
}

/// One caller's work in a shared transaction.
trait Piece: Send {
    /// Whether its commit must be on disk before it is answered.
    fn durable(&self) -> bool;
    /// Runs it; `false` when it failed (its savepoint is then undone).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction has ended; `failure` when the transaction
    /// itself failed (nothing of it was written).
    fn answer(self: Box<Self>, failure: Option<&DbFailure>);
}

struct Pending<T, W> {
    op: &'static str,
    durable: bool,
    write: Option<W>,
    result: Option<Result<T>>,
    done: oneshot::Sender<Result<T>>,
}

impl<T, W> Piece for Pending<T, W>
where
    T: Send,
    W: FnOnce(&Connection) -> Result<T> + Send,
{
    fn durable(&self) -> bool {
        self.durable
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let Some(write) = self.write.take() else {
            return false;
        };
        let result = write(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failure: Option<&DbFailure>) {
        let this = *self;
        let result = match (failure, this.result) {
            // Its own error, even when the transaction failed too.
            (_, Some(Err(own))) => Err(own),
            (None, Some(written)) => written,
            (Some(failure), _) => Err(failure.to_error(this.op)),
            (None, None) => Err(closed(this.op)),
        };
        let _ = this.done.send(result);
    }
}

fn open(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let op = "open the SQLite database";
    let failed = |e| DbFailure::from_sqlite(&e).to_error(op);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(failed)?;
    conn.busy_timeout(busy_timeout).map_err(failed)?;
    // As sqlx's connections (sql::sqlite::connect): foreign keys on, statement journals in
    // memory; `synchronous` is set per transaction.
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY")
        .map_err(failed)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The thread's loop: takes what has queued, runs it as one transaction, answers.
fn serve(conn: Connection, turn: &WriteTurn, queue: &mpsc::Receiver<Message>) {
    let mut synced = None;
    let mut closing = None;
    while closing.is_none() {
        let Ok(first) = queue.recv() else {
            break;
        };
        let mut pieces = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Piece(piece) => pieces.push(piece),
                Message::Ping(done) => {
                    let _ = done.send(());
                }
                Message::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
            if pieces.len() < PIECES_PER_TRANSACTION {
                next = queue.try_recv().ok();
            }
        }
        if pieces.is_empty() {
            continue;
        }
        let failure = {
            let _turn = turn.blocking_lock();
            // A panic in a piece fails this transaction's pieces, not every later one.
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
                transaction(&conn, &mut pieces, &mut synced)
            }));
            match ran {
                Ok(result) => result.err().map(|e| DbFailure::from_sqlite(&e)),
                Err(_) => {
                    if !conn.is_autocommit() {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                    Some(DbFailure::panicked())
                }
            }
        };
        for piece in pieces {
            piece.answer(failure.as_ref());
        }
    }
    drop(conn);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Runs `pieces` in one transaction, each under its savepoint. `synced`: the connection's
/// `synchronous` setting as last set. An error means nothing was written.
fn transaction(
    conn: &Connection,
    pieces: &mut [Box<dyn Piece>],
    synced: &mut Option<bool>,
) -> rusqlite::Result<()> {
    let durable = pieces.iter().any(|p| p.durable());
    let result = (|| {
        if *synced != Some(durable) {
            let level = if durable { "FULL" } else { "NORMAL" };
            conn.execute_batch(&format!("PRAGMA synchronous = {level}"))?;
            *synced = Some(durable);
        }
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        for piece in pieces.iter_mut() {
            conn.prepare_cached("SAVEPOINT piece")?.execute([])?;
            if !piece.run(conn) {
                conn.prepare_cached("ROLLBACK TO piece")?.execute([])?;
            }
            conn.prepare_cached("RELEASE piece")?.execute([])?;
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    })();
    if result.is_err() && !conn.is_autocommit() {
        // Leaves the connection clean for the next transaction; SQLite may have rolled
        // back by itself already (SQLITE_FULL, SQLITE_IOERR).
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::error::sqlite_error;

    fn table(dir: &tempfile::TempDir) -> Connection {
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x TEXT PRIMARY KEY)")
            .unwrap();
        open(&path, Duration::from_millis(100)).unwrap()
    }

    fn insert(x: &'static str) -> impl FnOnce(&Connection) -> Result<()> + Send {
        move |conn| {
            conn.execute("INSERT INTO t (x) VALUES (?1)", [x])
                .map(|_| ())
                .map_err(sqlite_error("insert"))
        }
    }

    fn piece<W>(write: W) -> (Box<dyn Piece>, oneshot::Receiver<Result<()>>)
    where
        W: FnOnce(&Connection) -> Result<()> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let piece = Box::new(Pending {
            op: "test",
            durable: false,
            write: Some(write),
            result: None,
            done,
        });
        (piece, answer)
    }

    fn rows(conn: &Connection) -> Vec<String> {
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A piece that fails is undone alone: the pieces before and after it in the same
    /// transaction are written, and each caller gets its own answer.
    #[test]
    fn a_failed_piece_is_undone_alone() {
        let dir = tempfile::tempdir().unwrap();
        let conn = table(&dir);
        let (a, a_answer) = piece(insert("a"));
        let (b, b_answer) = piece(|conn: &Connection| {
            insert("b")(conn)?;
            insert("a")(conn) // a duplicate key: fails after writing "b"
        });
        let (c, c_answer) = piece(insert("c"));
        let mut pieces = vec![a, b, c];
        transaction(&conn, &mut pieces, &mut None).unwrap();
        for piece in pieces {
            piece.answer(None);
        }
        assert_eq!(rows(&conn), ["a", "c"]);
        assert!(a_answer.blocking_recv().unwrap().is_ok());
        let b_error = b_answer.blocking_recv().unwrap().unwrap_err();
        assert!(b_error.to_string().contains("UNIQUE"), "{b_error}");
        assert!(c_answer.blocking_recv().unwrap().is_ok());
    }

    /// When the transaction itself fails (the file locked by another process past the busy
    /// timeout), nothing is written and every piece is told to retry.
    #[test]
    fn a_failed_transaction_fails_every_piece_as_transient() {
        let dir = tempfile::tempdir().unwrap();
        let conn = table(&dir);
        let locker = Connection::open(dir.path().join("t.db")).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let (a, a_answer) = piece(insert("a"));
        let mut pieces = vec![a];
        let failure = transaction(&conn, &mut pieces, &mut None)
            .err()
            .map(|e| DbFailure::from_sqlite(&e));
        assert!(failure.is_some(), "BEGIN IMMEDIATE must time out");
        for piece in pieces {
            piece.answer(failure.as_ref());
        }
        let error = a_answer.blocking_recv().unwrap().unwrap_err();
        assert_eq!(error.kind(), crate::store::ErrorKind::Transient, "{error}");
        locker.execute_batch("ROLLBACK").unwrap();
        assert!(rows(&conn).is_empty());
        assert!(
            conn.is_autocommit(),
            "the connection is left out of any transaction"
        );
    }

    /// The thread answers a ping while it runs, and a ping after it closed is an error.
    #[tokio::test]
    async fn a_ping_shows_whether_the_thread_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(table(&dir));
        let writer = SqliteWriter::start(&path, Duration::from_millis(100), WriteTurn::default())
            .await
            .unwrap();
        writer.ping().await.unwrap();
        writer.close().await;
        let error = writer.ping().await.unwrap_err();
        assert!(error.to_string().contains("closed"), "{error}");
    }
}
