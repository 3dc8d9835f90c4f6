//! The retry policy: after an attempt, whether its delivery is finished or tried again, and
//! when. Combines the configured `RetrySchedule`, a little jitter, the endpoint's
//! `Retry-After`, manual rounds and the failures no retry can fix. Pure: no I/O, no clock.

use std::time::Duration;

use rand::Rng;

use crate::config::RetrySchedule;
use crate::destination::AttemptCode;

/// Longest `Retry-After` honoured by default: an endpoint cannot park a delivery for days.
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// What the dispatcher needs to know about an attempt to decide what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFacts {
    pub success: bool,
    pub code: AttemptCode,
    /// The endpoint's `Retry-After` (429 and 503 only).
    pub retry_after: Option<Duration>,
    /// This attempt's number within its delivery, 1 for the first.
    pub attempt_number: u32,
    /// The attempt was asked for by a user (manual retry).
    pub manual: bool,
    /// The event's `eligible_for_retry`.
    pub eligible_for_retry: bool,
}

/// What happens to the delivery after the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again after this delay.
    RetryIn(Duration),
    GiveUp(GiveUpReason),
}

/// Why a failed delivery is not tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The failure needs a change to the destination (`blocked_address`, `invalid_request`).
    Permanent,
    /// The event was published with `eligible_for_retry: false`.
    NotEligible,
    /// A manual retry gets exactly one attempt.
    Manual,
    /// Every retry of the schedule was used.
    Exhausted,
}

impl GiveUpReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::Permanent => "permanent",
            GiveUpReason::NotEligible => "not_eligible",
            GiveUpReason::Manual => "manual",
            GiveUpReason::Exhausted => "exhausted",
        }
    }
}

/// Decides retries; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    schedule: RetrySchedule,
    retry_after_cap: Duration,
}

impl RetryPolicy {
    pub fn new(schedule: RetrySchedule, retry_after_cap: Duration) -> Self {
        RetryPolicy {
            schedule,
            retry_after_cap,
        }
    }

    pub fn schedule(&self) -> &RetrySchedule {
        &self.schedule
    }

    /// The verdict for an attempt. A retry waits the schedule's delay for this retry number,
    /// or the endpoint's `Retry-After` when that is longer (capped at `retry_after_cap`), plus
    /// up to 10 % jitter: never sooner than the schedule says, so the schedule stays the
    /// operator's promise to endpoints, and `Retry-After` can only ask for more time.
    pub fn decide(&self, facts: &AttemptFacts, rng: &mut impl Rng) -> Verdict {
        if facts.success {
            return Verdict::Delivered;
        }
        if facts.code.is_permanent() {
            return Verdict::GiveUp(GiveUpReason::Permanent);
        }
        if facts.manual {
            return Verdict::GiveUp(GiveUpReason::Manual);
        }
        if !facts.eligible_for_retry {
            return Verdict::GiveUp(GiveUpReason::NotEligible);
        }
        // Automatic attempts come before any manual one, so attempt n is followed by retry n.
        let Some(scheduled) = self.schedule.delay(facts.attempt_number) else {
            return Verdict::GiveUp(GiveUpReason::Exhausted);
        };
        let asked = facts
            .retry_after
            .map_or(Duration::ZERO, |d| d.min(self.retry_after_cap));
        let delay = scheduled.max(asked);
        Verdict::RetryIn(delay + jitter(delay, rng))
    }

    /// Whether giving up after `reason` means "retries exhausted" for alerts: only when the
    /// schedule allows retries at all (Outpost's rule).
    pub fn is_exhaustion(&self, reason: GiveUpReason) -> bool {
        reason == GiveUpReason::Exhausted && self.schedule.max_retries() > 0
    }
}

/// Up to a tenth of `delay`, so deliveries that failed together do not all retry together.
fn jitter(delay: Duration, rng: &mut impl Rng) -> Duration {
    let max_nanos = u64::try_from((delay / 10).as_nanos()).unwrap_or(u64::MAX);
    if max_nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.random_range(0..=max_nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn failed(attempt_number: u32) -> AttemptFacts {
        AttemptFacts {
            success: false,
            code: AttemptCode::Status(500),
            retry_after: None,
            attempt_number,
            manual: false,
            eligible_for_retry: true,
        }
    }

    fn policy(delays: &[u64]) -> RetryPolicy {
        RetryPolicy::new(
            RetrySchedule::fixed(delays.iter().map(|s| Duration::from_secs(*s)).collect()),
            Duration::from_secs(60),
        )
    }

    fn within(verdict: Verdict, low: u64, high_millis: u64) {
        match verdict {
            Verdict::RetryIn(d) => assert!(
                d >= Duration::from_secs(low) && d <= Duration::from_millis(high_millis),
                "{d:?} not in [{low}s, {high_millis}ms]"
            ),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn failures_follow_the_schedule_then_give_up() {
        let policy = policy(&[1, 10, 100]);
        let rng = &mut StdRng::seed_from_u64(7);
        within(policy.decide(&failed(1), rng), 1, 1_100);
        within(policy.decide(&failed(2), rng), 10, 11_000);
        within(policy.decide(&failed(3), rng), 100, 110_000);
        assert_eq!(
            policy.decide(&failed(4), rng),
            Verdict::GiveUp(GiveUpReason::Exhausted)
        );
        assert!(policy.is_exhaustion(GiveUpReason::Exhausted));
    }

    #[test]
    fn success_permanent_manual_and_ineligible_are_final() {
        let policy = policy(&[1, 1]);
        let rng = &mut StdRng::seed_from_u64(1);
        let ok = AttemptFacts {
            success: true,
            code: AttemptCode::Status(204),
            ..failed(1)
        };
        assert_eq!(policy.decide(&ok, rng), Verdict::Delivered);
        let blocked = AttemptFacts {
            code: AttemptCode::BlockedAddress,
            ..failed(1)
        };
        assert_eq!(
            policy.decide(&blocked, rng),
            Verdict::GiveUp(GiveUpReason::Permanent)
        );
        let manual = AttemptFacts {
            manual: true,
            ..failed(1)
        };
        assert_eq!(
            policy.decide(&manual, rng),
            Verdict::GiveUp(GiveUpReason::Manual)
        );
        let ineligible = AttemptFacts {
            eligible_for_retry: false,
            ..failed(1)
        };
        assert_eq!(
            policy.decide(&ineligible, rng),
            Verdict::GiveUp(GiveUpReason::NotEligible)
        );
        // Timeouts and 4xx are retried like any other failure.
        let timeout = AttemptFacts {
            code: AttemptCode::Timeout,
            ..failed(1)
        };
        within(policy.decide(&timeout, rng), 1, 1_100);
    }

    #[test]
    fn retry_after_extends_but_never_shortens_and_is_capped() {
        let policy = policy(&[5, 5]);
        let rng = &mut StdRng::seed_from_u64(3);
        let longer = AttemptFacts {
            code: AttemptCode::Status(429),
            retry_after: Some(Duration::from_secs(20)),
            ..failed(1)
        };
        within(policy.decide(&longer, rng), 20, 22_000);
        let shorter = AttemptFacts {
            retry_after: Some(Duration::from_secs(1)),
            ..longer
        };
        within(policy.decide(&shorter, rng), 5, 5_500);
        let huge = AttemptFacts {
            retry_after: Some(Duration::from_secs(86_400)),
            ..longer
        };
        within(policy.decide(&huge, rng), 60, 66_000);
        // Retry-After does not add retries the schedule does not have.
        let last = AttemptFacts {
            attempt_number: 3,
            ..longer
        };
        assert_eq!(
            policy.decide(&last, rng),
            Verdict::GiveUp(GiveUpReason::Exhausted)
        );
    }

    #[test]
    fn no_retries_configured_is_not_an_exhaustion_alert() {
        let policy = policy(&[]);
        let rng = &mut StdRng::seed_from_u64(3);
        assert_eq!(
            policy.decide(&failed(1), rng),
            Verdict::GiveUp(GiveUpReason::Exhausted)
        );
        assert!(!policy.is_exhaustion(GiveUpReason::Exhausted));
    }

    #[test]
    fn zero_delay_has_no_jitter() {
        let policy = policy(&[0]);
        let rng = &mut StdRng::seed_from_u64(3);
        assert_eq!(
            policy.decide(&failed(1), rng),
            Verdict::RetryIn(Duration::ZERO)
        );
    }
}
