//! `RecordingSink`: an `IngestSink` for source tests. It parses each message as ingest would,
//! records what arrived, and answers with the outcome a test scripts (commit by default).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jetpost::event::Event;
use jetpost::source::{IngestSink, Outcome, SourceMessage};

/// One message as the sink saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message: SourceMessage,
    /// The parsed event (`None` when the body was rejected).
    pub event: Option<Event>,
    /// The id ingest would store: the event's own `id`, else the source's default.
    pub id: String,
    pub outcome: Outcome,
}

#[derive(Default)]
pub struct RecordingSink {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Outcome>>,
}

impl RecordingSink {
    pub fn new() -> Arc<RecordingSink> {
        Arc::new(RecordingSink::default())
    }

    /// The outcomes for the next valid messages, in order; then commit.
    pub fn script(&self, outcomes: impl IntoIterator<Item = Outcome>) {
        self.script.lock().unwrap().extend(outcomes);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Messages that were committed (duplicates included), in arrival order.
    pub fn committed(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| matches!(r.outcome, Outcome::Committed { .. }))
            .collect()
    }

    /// Waits until `count` messages were committed; panics after `within`.
    pub async fn wait_committed(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let committed = self.committed();
            if committed.len() >= count {
                return committed;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} committed messages within {within:?}, got {}",
                committed.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl IngestSink for RecordingSink {
    fn ingest(&self, message: SourceMessage) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let (event, outcome) = match Event::parse(&message.body) {
                Ok(event) => {
                    let outcome = self
                        .script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or(Outcome::Committed { duplicate: false });
                    (Some(event), outcome)
                }
                Err(err) => (None, Outcome::Rejected(err.to_string())),
            };
            let id = event
                .as_ref()
                .and_then(|e| e.id.clone())
                .unwrap_or_else(|| message.default_id.clone());
            self.received.lock().unwrap().push(Received {
                message,
                event,
                id,
                outcome: outcome.clone(),
            });
            outcome
        })
    }
}
