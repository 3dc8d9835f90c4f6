//! `RetrySchedule`: when the n-th retry of a failed delivery is due, from either Outpost's
//! exponential rule (interval × 2^(n−1), up to retry_max_limit) or an explicit list of delays.

use std::time::Duration;

use super::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Kind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Exponential {
        interval: Duration,
        max_retries: u32,
    },
    Fixed(Vec<Duration>),
}

impl RetrySchedule {
    /// Retry n (1-based) waits `interval × 2^(n−1)`; at most `max_retries` retries.
    pub fn exponential(interval: Duration, max_retries: u32) -> Self {
        RetrySchedule(Kind::Exponential {
            interval,
            max_retries,
        })
    }

    /// Retry n waits `delays[n−1]`; as many retries as delays.
    pub fn fixed(delays: Vec<Duration>) -> Self {
        RetrySchedule(Kind::Fixed(delays))
    }

    /// `retry_schedule` when set (it overrides the other two), else the exponential rule from
    /// `retry_interval_seconds` and `retry_max_limit`.
    pub fn from_config(config: &Config) -> Self {
        if config.retry_schedule.is_empty() {
            Self::exponential(
                Duration::from_secs(config.retry_interval_seconds),
                config.retry_max_limit,
            )
        } else {
            Self::fixed(
                config
                    .retry_schedule
                    .iter()
                    .copied()
                    .map(Duration::from_secs)
                    .collect(),
            )
        }
    }

    /// Delay before retry `retry_number` (1 = the first retry, after the first attempt
    /// failed); None when retries are exhausted (or for 0). Saturates instead of overflowing.
    pub fn delay(&self, retry_number: u32) -> Option<Duration> {
        if retry_number == 0 || retry_number > self.max_retries() {
            return None;
        }
        match &self.0 {
            Kind::Exponential { interval, .. } => {
                let factor = 1u32.checked_shl(retry_number - 1).unwrap_or(u32::MAX);
                Some(interval.saturating_mul(factor))
            }
            Kind::Fixed(delays) => delays.get(retry_number as usize - 1).copied(),
        }
    }

    /// Retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        match &self.0 {
            Kind::Exponential { max_retries, .. } => *max_retries,
            Kind::Fixed(delays) => u32::try_from(delays.len()).unwrap_or(u32::MAX),
        }
    }
}

impl From<&Config> for RetrySchedule {
    fn from(config: &Config) -> Self {
        Self::from_config(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn defaults_are_outposts_exponential_schedule() {
        let schedule = RetrySchedule::from_config(&Config::default());
        assert_eq!(schedule.max_retries(), 10);
        assert_eq!(schedule.delay(1), secs(30));
        assert_eq!(schedule.delay(2), secs(60));
        assert_eq!(schedule.delay(3), secs(120));
        assert_eq!(schedule.delay(10), secs(30 * 512));
        assert_eq!(schedule.delay(11), None);
        assert_eq!(schedule.delay(0), None);
    }

    #[test]
    fn explicit_schedule_overrides_interval_and_limit() {
        let config = Config {
            retry_schedule: vec![5, 60, 600],
            retry_interval_seconds: 1,
            retry_max_limit: 50,
            ..Config::default()
        };
        let schedule = RetrySchedule::from(&config);
        assert_eq!(schedule.max_retries(), 3);
        assert_eq!(schedule.delay(1), secs(5));
        assert_eq!(schedule.delay(2), secs(60));
        assert_eq!(schedule.delay(3), secs(600));
        assert_eq!(schedule.delay(4), None);
    }

    #[test]
    fn zero_limit_means_no_retries() {
        let schedule = RetrySchedule::exponential(Duration::from_secs(30), 0);
        assert_eq!(schedule.max_retries(), 0);
        assert_eq!(schedule.delay(1), None);
    }

    #[test]
    fn huge_exponents_saturate_instead_of_panicking() {
        let schedule = RetrySchedule::exponential(Duration::from_secs(30), u32::MAX);
        assert_eq!(
            schedule.delay(40),
            Some(Duration::from_secs(30).saturating_mul(u32::MAX))
        );
        assert_eq!(
            schedule.delay(u32::MAX),
            Some(Duration::from_secs(30).saturating_mul(u32::MAX))
        );
    }
}
