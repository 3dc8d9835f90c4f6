//! Ingest's group commit: concurrent ingests are written together, one transaction per batch
//! (`store::GroupCommit`).

use std::sync::Arc;

use crate::store::{GroupCommitError, InsertOutcome, NewEvent, Store, StoreError};

/// Hands events to the committer tasks.
pub struct GroupCommit(crate::store::GroupCommit<NewEvent, InsertOutcome>);

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
    /// writer, so one committer; Postgres benefits from a few.
    pub fn start(store: Store, committers: usize, max_batch: usize) -> GroupCommit {
        GroupCommit(crate::store::GroupCommit::start(
            committers,
            max_batch,
            move |events: Vec<NewEvent>| {
                let store = store.clone();
                async move { store.insert_events(&events).await }
            },
        ))
    }

    /// Commits `event` (with its delivery rows) durably; returns once it is in the store.
    pub async fn commit(&self, event: NewEvent) -> Result<InsertOutcome, CommitError> {
        self.0.commit(event).await.map_err(|err| match err {
            GroupCommitError::Store(err) => CommitError::Store(err),
            GroupCommitError::Closed => CommitError::Closed,
        })
    }
}
