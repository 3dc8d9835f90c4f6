//! Ingest: validate → route → commit → settle. Every event, from NATS or `POST /publish`, walks
//! this one path: parsed and checked (permanent errors reject it), routed through the in-memory
//! routing cache, and committed with one delivery row per matched destination by group commit.
//! Only a committed event is acknowledged to its source. A delivery the dispatcher has room for
//! is committed already leased to it and handed over in memory (`delivery::Handoff`, the one tie
//! to delivery); the rest are committed pending, for the dispatcher's claims.

mod commit;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tracing::{debug, warn};

use crate::delivery::Handoff;
use crate::event::{Event, TopicRules, check_id};
use crate::routing::RoutingCache;
use crate::source::{IngestSink, Outcome, SourceMessage};
use crate::store::{self, InsertOutcome, NewEvent, Store};
pub use commit::{CommitError, GroupCommit};

/// What became of an accepted event (Outpost's publish response, plus whether it was stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    /// The tenant already had an event with this id: nothing new was stored or delivered.
    pub duplicate: bool,
    /// The destinations the event matches (for a duplicate too, as Outpost; empty for no match).
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

/// How long an event from NATS waits for the dispatcher to have room for its deliveries (a lane
/// of the destination and a global slot) before they are committed pending instead. Waiting
/// leaves a backlog in the stream, where it costs nothing, rather than in the store, where every
/// delivery then needs a claim; the source's in-flight bound stops the pulling meanwhile. A slow
/// destination does not hold its tenant's other events that long: once its lanes stop turning
/// over (`delivery::lanes`), the wait ends and its deliveries queue in the store.
const HANDOFF_WAIT: Duration = Duration::from_millis(500);
/// The same for an event published over HTTP, whose caller waits for the answer: only long
/// enough to ride out a claim in progress (the dispatcher holds its free slots while it claims).
const HANDOFF_WAIT_HTTP: Duration = Duration::from_millis(100);

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
    topics: TopicRules,
    routing: Arc<RoutingCache>,
    commit: GroupCommit,
    handoff: Handoff,
}

impl Ingest {
    /// Ingest on `store`, routing with `routing` (on the same store) and handing deliveries
    /// over through `handoff` (`delivery::Inbox`).
    pub fn new(
        store: Store,
        options: IngestOptions,
        routing: Arc<RoutingCache>,
        handoff: Handoff,
    ) -> Ingest {
        let commit = GroupCommit::start(store, options.committers, options.max_batch);
        Ingest {
            topics: options.topics,
            routing,
            commit,
            handoff,
        }
    }

    /// The routing cache events are routed with.
    pub fn routing(&self) -> &Arc<RoutingCache> {
        &self.routing
    }

    /// Validates, routes and commits one event (from HTTP: waiting at most `HANDOFF_WAIT_HTTP`
    /// for room to hand its deliveries over). `default_id` names an event without `id`.
    pub async fn accept(
        &self,
        raw: &[u8],
        default_id: impl FnOnce() -> String,
    ) -> Result<Accepted, IngestError> {
        self.accept_within(raw, default_id, HANDOFF_WAIT_HTTP).await
    }

    /// `accept`, waiting up to `wait` for room to hand the deliveries to the dispatcher.
    async fn accept_within(
        &self,
        raw: &[u8],
        default_id: impl FnOnce() -> String,
        wait: Duration,
    ) -> Result<Accepted, IngestError> {
        let mut event = Event::parse(raw).map_err(|err| IngestError::Invalid(err.to_string()))?;
        self.topics
            .validate_event_topic(event.topic.as_deref())
            .map_err(|err| IngestError::Invalid(err.to_string()))?;
        let id = match event.id.clone() {
            Some(id) => id,
            None => {
                // Derived ids and UUIDs are valid by construction; a NATS message's
                // `Nats-Msg-Id` header, taken as the id, is the publisher's and may not be.
                let id = default_id();
                check_id(&id).map_err(|err| {
                    IngestError::Invalid(format!(
                        "the event has no \"id\" and its Nats-Msg-Id header, which would name \
                         it, is not a valid id: it {err}"
                    ))
                })?;
                id
            }
        };
        event.id = Some(id.clone());
        let time = *event.time.get_or_insert_with(chrono::Utc::now);
        let destinations = self.routing.route(&event).await.map_err(|err| {
            warn!(tenant = %event.tenant_id, event_id = %id, "routing failed: {err}");
            IngestError::Unavailable(format!("the store is unavailable: {err}"))
        })?;
        let destination_ids: Vec<String> = destinations.iter().map(|d| d.id.clone()).collect();
        if destination_ids.is_empty() {
            metrics::counter!("jetpost_events_ingested_total", "routed" => "none").increment(1);
            debug!(tenant = %event.tenant_id, event_id = %id, "no destination matches; not stored");
            return Ok(Accepted {
                id,
                duplicate: false,
                destination_ids,
            });
        }
        let deadline = tokio::time::Instant::now() + wait;
        let reserved = (self.handoff)
            .reserve(&event.tenant_id, destinations, deadline)
            .await;
        let lease = reserved.as_ref().map(|r| r.lease().clone());
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
            lease,
        };
        // What the dispatcher needs of the event if some of its deliveries are handed over.
        let handed = reserved.map(|reserved| (stored_event(&new_event), reserved));
        match self.commit.commit(new_event).await {
            Ok(InsertOutcome::Inserted { leased }) => {
                if leased.len() < destination_ids.len() {
                    self.handoff.queued();
                }
                if let Some((mut event, reserved)) = handed {
                    // Close to the store's own `created_at` (taken inside the commit).
                    event.created_at = chrono::Utc::now();
                    reserved.start(event, leased);
                }
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
                // As Outpost: a duplicate names the destinations the event matches now.
                Ok(Accepted {
                    id,
                    duplicate: true,
                    destination_ids,
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

/// The event as the store holds it once committed (`created_at` is set after the commit).
fn stored_event(new_event: &NewEvent) -> store::Event {
    store::Event {
        tenant_id: new_event.tenant_id.clone(),
        id: new_event.id.clone(),
        destination_id: new_event.destination_id.clone(),
        topic: new_event.topic.clone(),
        time: new_event.time,
        metadata: new_event.metadata.clone(),
        data: new_event.data.clone(),
        eligible_for_retry: new_event.eligible_for_retry,
        destination_ids: new_event.destination_ids.clone(),
        created_at: chrono::Utc::now(),
    }
}

impl IngestSink for Ingest {
    fn ingest(&self, message: SourceMessage) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let SourceMessage {
                body, default_id, ..
            } = message;
            match self
                .accept_within(&body, move || default_id, HANDOFF_WAIT)
                .await
            {
                Ok(accepted) if accepted.duplicate => Outcome::Committed { duplicate: true },
                Ok(accepted) if accepted.destination_ids.is_empty() => Outcome::NotRouted,
                Ok(_) => Outcome::Committed { duplicate: false },
                Err(IngestError::Invalid(reason)) => Outcome::Rejected(reason),
                Err(IngestError::Unavailable(reason)) => Outcome::Retry(reason),
            }
        })
    }
}
