//! Group commit for attempt results: finished attempts queue here and are recorded together,
//! one transaction per batch (`Store::record_attempts`). While a batch commits the next one
//! gathers, so a lone attempt waits for no timer and a busy dispatcher pays one commit (one
//! fsync on SQLite) for many attempts instead of one each.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::debug;

use crate::store::{AttemptCompletion, AttemptRecorded, Store, StoreError};

/// Attempts per transaction at most.
pub const MAX_BATCH: usize = 512;

type Done = oneshot::Sender<Result<Option<AttemptRecorded>, Arc<StoreError>>>;

/// Hands finished attempts to the committer tasks; the tasks end when this is dropped.
pub(crate) struct Completions {
    queue: mpsc::Sender<(AttemptCompletion, Done)>,
}

/// The batch an attempt was in could not be recorded (nothing of it was written), or the
/// committers are gone. The attempt can be recorded on its own.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchError {
    #[error("{0}")]
    Store(Arc<StoreError>),
    #[error("the attempt recorder has stopped")]
    Closed,
}

impl Completions {
    /// Starts `committers` tasks (SQLite has one writer: one; Postgres gains from a few).
    pub(crate) fn start(store: Store, committers: usize) -> Completions {
        let committers = committers.max(1);
        let (queue, receiver) = mpsc::channel(MAX_BATCH * committers * 2);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..committers {
            tokio::spawn(commit_loop(store.clone(), receiver.clone()));
        }
        Completions { queue }
    }

    /// Records the attempt with whatever else is waiting: `None` if its lease was lost.
    pub(crate) async fn record(
        &self,
        completion: AttemptCompletion,
    ) -> Result<Option<AttemptRecorded>, BatchError> {
        let (done, recorded) = oneshot::channel();
        self.queue
            .send((completion, done))
            .await
            .map_err(|_| BatchError::Closed)?;
        recorded
            .await
            .map_err(|_| BatchError::Closed)?
            .map_err(BatchError::Store)
    }
}

async fn commit_loop(
    store: Store,
    receiver: Arc<Mutex<mpsc::Receiver<(AttemptCompletion, Done)>>>,
) {
    let mut items = Vec::with_capacity(MAX_BATCH);
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut receiver = receiver.lock().await;
            let Some((first, done)) = receiver.recv().await else {
                return;
            };
            items.push(first);
            waiting.push(done);
            while items.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok((next, done)) => {
                        items.push(next);
                        waiting.push(done);
                    }
                    Err(_) => break,
                }
            }
        }
        let result = store.record_attempts(&items).await;
        debug!(size = items.len(), ok = result.is_ok(), "attempts recorded");
        match result {
            Ok(recorded) => {
                for (done, recorded) in waiting.drain(..).zip(recorded) {
                    let _ = done.send(Ok(recorded));
                }
            }
            Err(err) => {
                let err = Arc::new(err);
                for done in waiting.drain(..) {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
        items.clear();
    }
}
