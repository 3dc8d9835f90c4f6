//! One attempt of one delivery, claimed or handed over: published through the destination's
//! publisher (`destination::Registry`), judged by the retry policy, recorded under the
//! delivery's lease (in batches, `completions`), then followed by its aftermath.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::aftermath::Aftermath;
use super::backoff::{STORE_BACKOFF_FIRST, doubled, later, with_jitter};
use super::completions::Completions;
use super::health::Health;
use super::lanes::{Lane, Reservation};
use super::retry::{AttemptFacts, RetryPolicy, Verdict};
use crate::destination::{AttemptCode, Outcome, Registry};
use crate::store::{
    Attempt, AttemptCompletion, AttemptRecorded, AttemptStatus, ClaimedDelivery, DeliveryOutcome,
    Lease, NewAttempt, Store, StoreError,
};

/// Runs attempts as tasks of the dispatcher, with what an attempt needs.
pub(super) struct Attempts {
    /// Records an attempt alone when its batch failed.
    pub store: Store,
    /// Records finished attempts in batches.
    pub completions: Completions,
    /// The destination types and the publishers opened for destinations.
    pub destinations: Registry,
    pub retry: RetryPolicy,
    pub aftermath: Aftermath,
    pub health: Arc<Health>,
    /// Notified whenever an attempt finishes: a destination may be below its in-flight limit
    /// again.
    pub settled: Arc<Notify>,
    /// Abandon attempts in flight.
    pub abandon: CancellationToken,
    pub tasks: TaskTracker,
}

impl Attempts {
    /// Runs one attempt as a task of the dispatcher (abandoned when `stop` runs out of grace).
    pub fn spawn(self: &Arc<Self>, claimed: ClaimedDelivery, room: Reservation) {
        let attempts = self.clone();
        self.tasks.spawn(async move {
            let abandon = attempts.abandon.clone();
            tokio::select! {
                _ = abandon.cancelled() => {}
                _ = attempts.run(claimed, room.slot, room.lane) => {}
            }
        });
    }

    /// One attempt of one claimed delivery, from the request to the recorded outcome. The slot
    /// and the lane (the destination's share of it) end with the request: recording the
    /// outcome needs no endpoint capacity, and a lane held through the record would let the
    /// store's commit pace the destination instead of its endpoint.
    async fn run(&self, claimed: ClaimedDelivery, slot: OwnedSemaphorePermit, lane: Lane) {
        let _in_flight = InFlight::enter(self);
        let ClaimedDelivery {
            delivery,
            lease,
            event,
            destination,
        } = claimed;

        let result = match self.destinations.publisher(&destination) {
            Ok(publisher) => publisher.publish(&event).await,
            Err(problem) => Outcome::not_sent(AttemptCode::InvalidRequest, problem),
        };
        drop((slot, lane));

        let facts = AttemptFacts {
            success: result.success,
            code: result.code,
            retry_after: result.retry_after,
            attempt_number: delivery.attempts + 1,
            manual: delivery.manual,
            eligible_for_retry: event.eligible_for_retry,
        };
        let verdict = {
            let mut rng = rand::rng();
            self.retry.decide(&facts, &mut rng)
        };
        let now = Utc::now();
        let (outcome, retry_at) = match verdict {
            Verdict::Delivered => (DeliveryOutcome::Success, None),
            Verdict::RetryIn(delay) => {
                let at = later(now, delay);
                (DeliveryOutcome::RetryAt(at), Some(at))
            }
            Verdict::GiveUp(_) => (DeliveryOutcome::Failed, None),
        };
        let new_attempt = NewAttempt {
            id: uuid::Uuid::now_v7().to_string(),
            status: if result.success {
                AttemptStatus::Success
            } else {
                AttemptStatus::Failed
            },
            code: result.code.to_string(),
            response_data: Some(result.response_data.clone()),
            time: result.sent_at,
        };

        metrics::histogram!("jetpost_delivery_duration_seconds")
            .record(result.duration.as_secs_f64());
        let completion = AttemptCompletion {
            lease: lease.clone(),
            attempt: new_attempt.clone(),
            outcome,
        };
        let recorded = match self.completions.record(completion).await {
            Ok(recorded) => Ok(recorded),
            Err(err) => {
                // Nothing of the batch was written: record this attempt on its own, so one bad
                // item (or a deadlock between batches) costs only its own attempt.
                debug!(event_id = %event.id, "batch not recorded ({err}); recording the attempt alone");
                self.record(&lease, &new_attempt, outcome).await
            }
        };
        let recorded = match recorded {
            Ok(Some(recorded)) => recorded,
            Ok(None) => {
                metrics::counter!("jetpost_deliveries_total", "result" => "lease_lost")
                    .increment(1);
                warn!(
                    tenant = %event.tenant_id, event_id = %event.id,
                    destination_id = %destination.id, attempt = facts.attempt_number,
                    code = %result.code,
                    "attempt not recorded: the delivery's lease ran out and another worker holds \
                     it now (the endpoint may get this event twice; raise delivery_timeout_seconds \
                     if attempts take longer)"
                );
                return;
            }
            Err(err) => {
                metrics::counter!("jetpost_deliveries_total", "result" => "unrecorded")
                    .increment(1);
                self.health.note_error(&err);
                error!(
                    tenant = %event.tenant_id, event_id = %event.id,
                    destination_id = %destination.id, attempt = facts.attempt_number,
                    code = %result.code,
                    "attempt not recorded: {err}; the delivery is attempted again when its lease \
                     expires"
                );
                return;
            }
        };

        self.health
            .attempts_recorded
            .fetch_add(1, Ordering::Relaxed);
        let result_label = match verdict {
            Verdict::Delivered => "success",
            Verdict::RetryIn(_) => "retry_scheduled",
            Verdict::GiveUp(_) => "failed",
        };
        metrics::counter!("jetpost_deliveries_total", "result" => result_label).increment(1);
        if result.success && !delivery.manual {
            let waited = (Utc::now() - event.created_at).to_std().unwrap_or_default();
            metrics::histogram!("jetpost_ingest_to_delivery_seconds").record(waited.as_secs_f64());
        }
        let next = match (verdict, retry_at) {
            (Verdict::GiveUp(reason), _) => format!("gave up ({})", reason.as_str()),
            (_, Some(at)) => format!("retry at {}", at.to_rfc3339()),
            _ => String::new(),
        };
        info!(
            tenant = %event.tenant_id,
            event_id = %event.id,
            destination_id = %destination.id,
            attempt = recorded.attempt_number,
            manual = delivery.manual,
            code = %result.code,
            duration_ms = result.duration.as_millis() as u64,
            outcome = result_label,
            next = %next,
            "delivery attempt"
        );
        if let Some(problem) = &result.error {
            debug!(tenant = %event.tenant_id, event_id = %event.id, destination_id = %destination.id, "attempt error: {problem}");
        }

        let stored = Attempt {
            id: new_attempt.id,
            tenant_id: event.tenant_id.clone(),
            event_id: event.id.clone(),
            destination_id: destination.id.clone(),
            delivery_id: delivery.id,
            attempt_number: recorded.attempt_number,
            manual: delivery.manual,
            status: new_attempt.status,
            code: new_attempt.code,
            response_data: new_attempt.response_data,
            time: new_attempt.time,
            destination_type: destination.kind.clone(),
        };
        self.aftermath
            .follow(&event, destination, &stored, recorded, verdict)
            .await;
    }

    /// Records the attempt alone, retrying transient store errors while the lease still holds.
    async fn record(
        &self,
        lease: &Lease,
        attempt: &NewAttempt,
        outcome: DeliveryOutcome,
    ) -> Result<Option<AttemptRecorded>, StoreError> {
        let mut backoff = STORE_BACKOFF_FIRST;
        loop {
            match self.store.record_attempt(lease, attempt, outcome).await {
                Err(err) if err.is_transient() && later(Utc::now(), backoff) < lease.expires_at => {
                    warn!("recording attempt {} failed: {err}; retrying", attempt.id);
                    tokio::time::sleep(with_jitter(backoff)).await;
                    backoff = doubled(backoff);
                }
                other => return other,
            }
        }
    }
}

/// Counts the attempt in flight while it runs; wakes the claim loop when it ends.
struct InFlight<'a>(&'a Attempts);

impl<'a> InFlight<'a> {
    fn enter(attempts: &'a Attempts) -> Self {
        let now = attempts.health.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("jetpost_deliveries_in_flight").set(now as f64);
        InFlight(attempts)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let now = self.0.health.in_flight.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("jetpost_deliveries_in_flight").set(now as f64);
        self.0.settled.notify_one();
    }
}
