//! Time arithmetic the dispatcher shares: the backoff for retrying the store, with jitter, and
//! deadlines that saturate instead of overflowing.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

pub(super) const STORE_BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub(super) const STORE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// `now + delay`, saturating far in the future instead of overflowing.
pub(super) fn later(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    // A century is "never" for a retry, and keeps every backend's timestamp range.
    const FAR: TimeDelta = TimeDelta::days(36_500);
    let delta = TimeDelta::from_std(delay).unwrap_or(FAR).min(FAR);
    now.checked_add_signed(delta).unwrap_or(now + FAR)
}

/// Up to a quarter more, so replicas retrying the store do not knock in step.
pub(super) fn with_jitter(delay: Duration) -> Duration {
    use rand::Rng;
    let extra = rand::rng().random_range(0.0..0.25);
    delay.mul_f64(1.0 + extra)
}

/// The next backoff after `delay`, up to `STORE_BACKOFF_MAX`.
pub(super) fn doubled(delay: Duration) -> Duration {
    (delay * 2).min(STORE_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_saturates() {
        let now = Utc::now();
        assert_eq!(
            later(now, Duration::from_secs(2)),
            now + TimeDelta::seconds(2)
        );
        let far = later(now, Duration::MAX);
        assert!(far > now + TimeDelta::days(36_000));
    }
}
