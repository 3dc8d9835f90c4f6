//! What follows a recorded attempt (Outpost's plan): a crossed consecutive-failure level
//! (disabling the destination at 100 % when configured), an exhausted-retries alert, and the
//! operator events `attempt.success` / `attempt.failed` and the alerts'.

use std::time::Instant;

use tracing::{error, warn};

use super::alert::{AlertPolicy, ExhaustedRetriesWindow};
use super::operator_events::{
    self, AttemptData, AttemptPayload, ConsecutiveFailureData, ConsecutiveFailures,
    DestinationDisabledData, DestinationPayload, EventPayload, OperatorEvents,
};
use super::retry::{RetryPolicy, Verdict};
use crate::store::{Attempt, AttemptRecorded, AttemptStatus, Destination, Event, Store};

/// Alerts, auto-disable and operator events, with what they need to decide.
pub(super) struct Aftermath {
    /// Disables a destination (the store's change feed then tells routing).
    pub store: Store,
    pub alerts: AlertPolicy,
    /// Tells an exhaustion from other reasons to give up.
    pub retry: RetryPolicy,
    pub exhausted: ExhaustedRetriesWindow,
    pub events: OperatorEvents,
}

impl Aftermath {
    /// Alerts and operator events owed for `attempt`, recorded as `recorded` with `verdict`.
    pub async fn follow(
        &self,
        event: &Event,
        mut destination: Destination,
        attempt: &Attempt,
        recorded: AttemptRecorded,
        verdict: Verdict,
    ) {
        let events = &self.events;
        let alerts = self.alerts;
        let level = if attempt.status == AttemptStatus::Failed {
            alerts.level(recorded.consecutive_failures)
        } else {
            None
        };
        let exhausted = matches!(verdict, Verdict::GiveUp(reason) if self.retry.is_exhaustion(reason))
            && self
                .exhausted
                .admit(&event.tenant_id, &destination.id, Instant::now());

        let mut disabled_at = None;
        if let Some(level) = level {
            warn!(
                tenant = %event.tenant_id,
                destination_id = %destination.id,
                consecutive_failures = recorded.consecutive_failures,
                threshold = level,
                "destination failed {} attempts in a row ({level}% of alert.consecutive_failure_count)",
                recorded.consecutive_failures
            );
            if alerts.disables_at(level) {
                match self
                    .store
                    .disable_destination(&event.tenant_id, &destination.id)
                    .await
                {
                    Ok(disabled) => {
                        metrics::counter!("jetpost_destinations_disabled_total").increment(1);
                        warn!(
                            tenant = %event.tenant_id,
                            destination_id = %destination.id,
                            "destination disabled after {} consecutive failed attempts \
                             (alert.auto_disable_destination); enable it once the endpoint is fixed",
                            recorded.consecutive_failures
                        );
                        disabled_at = disabled.disabled_at;
                        destination.disabled_at = disabled.disabled_at;
                    }
                    Err(err) => error!(
                        tenant = %event.tenant_id,
                        destination_id = %destination.id,
                        "could not disable the failing destination: {err}"
                    ),
                }
            }
        }
        if exhausted {
            warn!(
                tenant = %event.tenant_id,
                event_id = %event.id,
                destination_id = %destination.id,
                "delivery failed after every retry"
            );
        }

        let attempt_topic = if attempt.status == AttemptStatus::Success {
            operator_events::TOPIC_ATTEMPT_SUCCESS
        } else {
            operator_events::TOPIC_ATTEMPT_FAILED
        };
        let wanted = |topic| events.enabled(topic);
        if !(wanted(attempt_topic)
            || (level.is_some() && wanted(operator_events::TOPIC_CONSECUTIVE_FAILURE))
            || (disabled_at.is_some() && wanted(operator_events::TOPIC_DESTINATION_DISABLED))
            || (exhausted && wanted(operator_events::TOPIC_EXHAUSTED_RETRIES)))
        {
            return;
        }
        let tenant_id = event.tenant_id.as_str();
        let event_payload = EventPayload::of(event);
        let attempt_payload = AttemptPayload::of(attempt, &destination.kind);
        let destination_payload = DestinationPayload::of(&destination);
        if let Some(at) = disabled_at {
            events.emit(
                operator_events::TOPIC_DESTINATION_DISABLED,
                tenant_id,
                &DestinationDisabledData {
                    tenant_id,
                    destination: &destination_payload,
                    disabled_at: DestinationDisabledData::disabled_at(at),
                    reason: "consecutive_failure",
                    event: &event_payload,
                    attempt: &attempt_payload,
                },
            );
        }
        if let Some(level) = level {
            events.emit(
                operator_events::TOPIC_CONSECUTIVE_FAILURE,
                tenant_id,
                &ConsecutiveFailureData {
                    tenant_id,
                    event: &event_payload,
                    attempt: &attempt_payload,
                    destination: &destination_payload,
                    consecutive_failures: ConsecutiveFailures {
                        current: recorded.consecutive_failures,
                        max: alerts.consecutive_failure_count,
                        threshold: level,
                    },
                },
            );
        }
        let data = AttemptData {
            tenant_id,
            event: &event_payload,
            attempt: &attempt_payload,
            destination: &destination_payload,
        };
        if exhausted {
            events.emit(operator_events::TOPIC_EXHAUSTED_RETRIES, tenant_id, &data);
        }
        events.emit(attempt_topic, tenant_id, &data);
    }
}
