//! Attempt results are recorded by group commit (`store::GroupCommit`): many attempts per
//! transaction (`Store::record_attempts`), so a busy dispatcher pays one commit for many
//! attempts instead of one each.

use crate::store::{AttemptCompletion, AttemptRecorded, GroupCommit, GroupCommitError, Store};

/// Attempts per transaction at most.
pub const MAX_BATCH: usize = 512;

/// Hands finished attempts to the committer tasks; the tasks end when this is dropped.
pub(crate) struct Completions(GroupCommit<AttemptCompletion, Option<AttemptRecorded>>);

impl Completions {
    /// Starts `committers` tasks (SQLite has one writer: one; Postgres gains from a few).
    pub(crate) fn start(store: Store, committers: usize) -> Completions {
        Completions(GroupCommit::start(
            committers,
            MAX_BATCH,
            move |items: Vec<AttemptCompletion>| {
                let store = store.clone();
                async move { store.record_attempts(&items).await }
            },
        ))
    }

    /// Records the attempt with whatever else is waiting: `None` if its lease was lost. An
    /// error means nothing of its batch was written; the attempt can be recorded on its own.
    pub(crate) async fn record(
        &self,
        completion: AttemptCompletion,
    ) -> Result<Option<AttemptRecorded>, GroupCommitError> {
        self.0.commit(completion).await
    }
}
