//! Group commit: callers queue items and wait; committer tasks write whatever has queued as one
//! batch (one transaction), and the next batch gathers while one commits, so a lone item waits
//! for no timer and a burst becomes a few large transactions. Ingest commits events this way,
//! the dispatcher attempt results.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::debug;

use super::StoreError;

type Done<R> = oneshot::Sender<Result<R, Arc<StoreError>>>;
/// The queue the committer tasks take turns to drain.
type Queue<T, R> = Arc<Mutex<mpsc::Receiver<(T, Done<R>)>>>;

/// Hands items to the committer tasks; the tasks end when this is dropped.
pub struct GroupCommit<T, R> {
    queue: mpsc::Sender<(T, Done<R>)>,
}

/// Why an item was not written.
#[derive(Debug, thiserror::Error)]
pub enum GroupCommitError {
    /// The batch's transaction failed: nothing of it was written, and every item of the batch
    /// gets the same error.
    #[error("{0}")]
    Store(Arc<StoreError>),
    /// The committers have stopped.
    #[error("the store's committers have stopped")]
    Closed,
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts `committers` tasks (SQLite has one writer: one; Postgres gains from a few), each
    /// calling `write` with batches of at most `max_batch` items; `write` answers one result per
    /// item, in order.
    pub fn start<W, F>(committers: usize, max_batch: usize, write: W) -> Self
    where
        W: Fn(Vec<T>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Vec<R>, StoreError>> + Send + 'static,
    {
        let committers = committers.max(1);
        let max_batch = max_batch.max(1);
        let (queue, receiver) = mpsc::channel(max_batch * committers * 2);
        let receiver = Arc::new(Mutex::new(receiver));
        let write = Arc::new(write);
        for _ in 0..committers {
            tokio::spawn(commit_loop(receiver.clone(), max_batch, write.clone()));
        }
        GroupCommit { queue }
    }

    /// Writes `item` with whatever else is waiting; returns once its batch has committed.
    pub async fn commit(&self, item: T) -> Result<R, GroupCommitError> {
        let (done, result) = oneshot::channel();
        self.queue
            .send((item, done))
            .await
            .map_err(|_| GroupCommitError::Closed)?;
        result
            .await
            .map_err(|_| GroupCommitError::Closed)?
            .map_err(GroupCommitError::Store)
    }
}

async fn commit_loop<T, R, W, F>(receiver: Queue<T, R>, max_batch: usize, write: Arc<W>)
where
    W: Fn(Vec<T>) -> F,
    F: Future<Output = Result<Vec<R>, StoreError>>,
{
    loop {
        let mut items = Vec::with_capacity(max_batch);
        let mut waiting = Vec::with_capacity(max_batch);
        {
            let mut receiver = receiver.lock().await;
            let Some((first, done)) = receiver.recv().await else {
                return;
            };
            items.push(first);
            waiting.push(done);
            while items.len() < max_batch {
                let Ok((next, done)) = receiver.try_recv() else {
                    break;
                };
                items.push(next);
                waiting.push(done);
            }
        }
        let size = items.len();
        let result = write(items).await;
        debug!(size, ok = result.is_ok(), "group commit");
        match result {
            Ok(results) => {
                for (done, result) in waiting.into_iter().zip(results) {
                    let _ = done.send(Ok(result));
                }
            }
            Err(err) => {
                let err = Arc::new(err);
                for done in waiting {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }
}
