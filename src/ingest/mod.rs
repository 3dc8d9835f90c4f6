//! Ingest: validate → route → commit → settle. Every event, from NATS or `POST /publish`, walks
//! this one path: parsed and checked (permanent errors reject it), routed through the in-memory
//! routing cache, and committed with one delivery row per matched destination by group commit.
//! Only a committed event is acknowledged to its source.

mod commit;
pub mod routing;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::event::{Event, TopicRules};
use crate::source::{IngestSink, Outcome, SourceMessage};
use crate::store::{InsertOutcome, NewEvent, Store};
pub use commit::{CommitError, GroupCommit};
pub use routing::RoutingCache;

/// What became of an accepted event (Outpost's publish response, plus whether it was stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    /// The tenant already had an event with this id: nothing new was stored or delivered.
    pub duplicate: bool,
    /// The destinations the event will be delivered to (empty for a duplicate or no match).
    pub destination_ids: Vec<String>,
}

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The event is invalid and never will be valid: reject it (NATS `Term`, HTTP 422).
    #[error("{0}")]
    Invalid(String),
    /// The event could not be committed now: try again later (NATS `Nak`, HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

/// Ingest settings taken from the config.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub topics: TopicRules,
    /// Concurrent commit transactions (1 for SQLite's single writer).
    pub committers: usize,
    /// Events per commit transaction at most.
    pub max_batch: usize,
}

/// The ingest pipeline; shared by the NATS source (as its `IngestSink`) and the HTTP API.
pub struct Ingest {
    store: Store,
    topics: TopicRules,
    routing: Arc<RoutingCache>,
    commit: GroupCommit,
    committed: Arc<Notify>,
}

impl Ingest {
    pub fn new(store: Store, options: IngestOptions) -> Ingest {
        let committed = Arc::new(Notify::new());
        let commit = GroupCommit::start(
            store.clone(),
            options.committers,
            options.max_batch,
            committed.clone(),
        );
        Ingest {
            store,
            topics: options.topics,
            routing: Arc::new(RoutingCache::default()),
            commit,
            committed,
        }
    }

    /// The routing cache, for invalidation by whoever writes tenants and destinations.
    pub fn routing(&self) -> &Arc<RoutingCache> {
        &self.routing
    }

    /// Notified after each commit that created deliveries: the dispatcher claims them at once.
    pub fn deliveries_committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Validates, routes and commits one event. `default_id` names an event without `id`.
    pub async fn accept(
        &self,
        raw: &[u8],
        default_id: impl FnOnce() -> String,
    ) -> Result<Accepted, IngestError> {
        let mut event = Event::parse(raw).map_err(|err| IngestError::Invalid(err.to_string()))?;
        self.topics
            .validate_event_topic(event.topic.as_deref())
            .map_err(|err| IngestError::Invalid(err.to_string()))?;
        let id = event.id.clone().unwrap_or_else(default_id);
        event.id = Some(id.clone());
        let time = *event.time.get_or_insert_with(chrono::Utc::now);
        let destination_ids = self
            .routing
            .route(&self.store, &event)
            .await
            .map_err(|err| {
                warn!(tenant = %event.tenant_id, event_id = %id, "routing failed: {err}");
                IngestError::Unavailable(format!("the store is unavailable: {err}"))
            })?;
        if destination_ids.is_empty() {
            metrics::counter!("jetpost_events_ingested_total", "routed" => "none").increment(1);
            debug!(tenant = %event.tenant_id, event_id = %id, "no destination matches; not stored");
            return Ok(Accepted {
                id,
                duplicate: false,
                destination_ids,
            });
        }
        let metadata = (!event.metadata.is_empty()).then(|| event.metadata.clone());
        let new_event = NewEvent {
            tenant_id: event.tenant_id.clone(),
            id: id.clone(),
            destination_id: event.destination_id.clone(),
            topic: event.topic.clone().unwrap_or_default(),
            time,
            metadata,
            data: event.data.get().to_owned(),
            eligible_for_retry: event.eligible_for_retry,
            destination_ids: destination_ids.clone(),
        };
        match self.commit.commit(new_event).await {
            Ok(InsertOutcome::Inserted) => {
                metrics::counter!("jetpost_events_ingested_total", "routed" => "some").increment(1);
                tracing::info!(tenant = %event.tenant_id, event_id = %id, destinations = destination_ids.len(), "event ingested");
                Ok(Accepted {
                    id,
                    duplicate: false,
                    destination_ids,
                })
            }
            Ok(InsertOutcome::Duplicate) => {
                metrics::counter!("jetpost_events_ingested_total", "routed" => "duplicate")
                    .increment(1);
                debug!(tenant = %event.tenant_id, event_id = %id, "duplicate event");
                Ok(Accepted {
                    id,
                    duplicate: true,
                    destination_ids: Vec::new(),
                })
            }
            Err(err) => {
                warn!(tenant = %event.tenant_id, event_id = %id, "commit failed: {err}");
                Err(IngestError::Unavailable(format!(
                    "the event could not be stored: {err}"
                )))
            }
        }
    }
}

impl IngestSink for Ingest {
    fn ingest(&self, message: SourceMessage) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let SourceMessage {
                body, default_id, ..
            } = message;
            match self.accept(&body, move || default_id).await {
                Ok(accepted) if accepted.duplicate => Outcome::Committed { duplicate: true },
                Ok(accepted) if accepted.destination_ids.is_empty() => Outcome::NotRouted,
                Ok(_) => Outcome::Committed { duplicate: false },
                Err(IngestError::Invalid(reason)) => Outcome::Rejected(reason),
                Err(IngestError::Unavailable(reason)) => Outcome::Retry(reason),
            }
        })
    }
}
