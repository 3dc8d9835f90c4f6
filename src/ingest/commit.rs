//! Group commit: concurrent ingests are queued and written together, one transaction per batch.
//! While a batch commits, the next one gathers, so a lone event waits for no timer and a burst
//! becomes a few large transactions.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::debug;

use crate::store::{InsertOutcome, NewEvent, Store, StoreError};

struct Pending {
    event: NewEvent,
    done: oneshot::Sender<Result<InsertOutcome, Arc<StoreError>>>,
}

/// Hands events to the committer tasks; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

/// Why an event was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The batch's transaction failed; every event of the batch gets the same error.
    #[error("{0}")]
    Store(Arc<StoreError>),
    #[error("the ingest pipeline is shutting down")]
    Closed,
}

impl GroupCommit {
    /// Starts `committers` tasks writing batches of at most `max_batch` events. SQLite has one
    /// writer, so one committer; Postgres benefits from a few. `committed` is told about every
    /// batch that created deliveries (the dispatcher's cue to claim them at once).
    pub fn start(
        store: Store,
        committers: usize,
        max_batch: usize,
        committed: Arc<tokio::sync::Notify>,
    ) -> GroupCommit {
        let (queue, receiver) = mpsc::channel::<Pending>(max_batch * committers.max(1) * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..committers.max(1) {
            tokio::spawn(commit_loop(
                store.clone(),
                receiver.clone(),
                max_batch.max(1),
                committed.clone(),
            ));
        }
        GroupCommit { queue }
    }

    /// Commits `event` (with its delivery rows) durably; returns once it is in the store.
    pub async fn commit(&self, event: NewEvent) -> Result<InsertOutcome, CommitError> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Pending { event, done })
            .await
            .map_err(|_| CommitError::Closed)?;
        outcome
            .await
            .map_err(|_| CommitError::Closed)?
            .map_err(CommitError::Store)
    }
}

async fn commit_loop(
    store: Store,
    receiver: Arc<Mutex<mpsc::Receiver<Pending>>>,
    max_batch: usize,
    committed: Arc<tokio::sync::Notify>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    loop {
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let events: Vec<NewEvent> = batch.iter().map(|p| p.event.clone()).collect();
        let result = store.insert_events(&events).await;
        debug!(size = events.len(), ok = result.is_ok(), "group commit");
        match result {
            Ok(outcomes) => {
                if outcomes.contains(&InsertOutcome::Inserted) {
                    committed.notify_one();
                }
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = pending.done.send(Ok(outcome));
                }
            }
            Err(err) => {
                let err = Arc::new(err);
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(err.clone()));
                }
            }
        }
    }
}
