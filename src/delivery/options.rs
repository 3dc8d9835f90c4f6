//! How the dispatcher runs: `DispatcherOptions`, filled from the service configuration by
//! `from_config`, and the lease owner that tells replicas apart.

use std::time::Duration;

use super::alert::{AlertPolicy, DEFAULT_EXHAUSTED_RETRIES_WINDOW};
use super::retry::{DEFAULT_RETRY_AFTER_CAP, RetryPolicy};
use crate::config::{Config, OperatorEventsConfig, RetrySchedule};

/// Added to the delivery timeout to make the lease: time to record the attempt afterwards.
pub const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// The longest the dispatcher sleeps without looking for due deliveries.
pub const DEFAULT_MAX_IDLE_WAIT: Duration = Duration::from_secs(1);

/// How the dispatcher runs; `from_config` fills it from the service configuration.
#[derive(Clone)]
pub struct DispatcherOptions {
    /// Recorded as the lease owner; unique per process (`from_config` makes one).
    pub owner: String,
    /// Attempts in flight at most (`delivery_max_concurrency`).
    pub max_concurrency: usize,
    /// Attempts in flight per destination at most, counting other replicas' leases
    /// (`delivery_max_concurrency_per_destination`).
    pub max_concurrency_per_destination: u32,
    /// How long a claim holds a delivery; must exceed the delivery timeout, or a slow attempt
    /// loses its delivery to another worker and the endpoint gets it twice.
    pub lease: Duration,
    pub retry: RetryPolicy,
    pub alerts: AlertPolicy,
    /// At most one exhausted-retries alert per destination in this window (0 = every time).
    pub exhausted_retries_window: Duration,
    pub operator_events: OperatorEventsConfig,
    /// Longest sleep between looks at the store for due retries and expired leases.
    pub max_idle_wait: Duration,
    /// How long `stop` lets attempts in flight finish.
    pub shutdown_grace: Duration,
    /// How often `jetpost_deliveries_pending` is refreshed.
    pub gauge_interval: Duration,
}

impl std::fmt::Debug for DispatcherOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatcherOptions")
            .field("owner", &self.owner)
            .field("max_concurrency", &self.max_concurrency)
            .field(
                "max_concurrency_per_destination",
                &self.max_concurrency_per_destination,
            )
            .field("lease", &self.lease)
            .field("retry", &self.retry)
            .field("alerts", &self.alerts)
            .field("operator_events", &self.operator_events)
            .finish_non_exhaustive()
    }
}

impl DispatcherOptions {
    pub fn from_config(config: &Config) -> Self {
        DispatcherOptions {
            owner: default_owner(),
            max_concurrency: config.delivery_max_concurrency.max(1),
            max_concurrency_per_destination: u32::try_from(
                config.delivery_max_concurrency_per_destination,
            )
            .unwrap_or(u32::MAX)
            .max(1),
            lease: config.delivery_timeout() + LEASE_MARGIN,
            retry: RetryPolicy::new(RetrySchedule::from_config(config), DEFAULT_RETRY_AFTER_CAP),
            alerts: AlertPolicy {
                consecutive_failure_count: config.alert.consecutive_failure_count,
                auto_disable_destination: config.alert.auto_disable_destination,
            },
            exhausted_retries_window: DEFAULT_EXHAUSTED_RETRIES_WINDOW,
            operator_events: config.operator_events.clone(),
            max_idle_wait: DEFAULT_MAX_IDLE_WAIT,
            shutdown_grace: config.shutdown_timeout(),
            gauge_interval: Duration::from_secs(5),
        }
    }
}

/// `<host>-<pid>-<random>`: tells replicas, and restarts of one, apart in `lease_owner`.
pub fn default_owner() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "jetpost".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_names_host_and_process() {
        let a = default_owner();
        let b = default_owner();
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }

    #[test]
    fn options_follow_the_config() {
        let config = Config {
            delivery_timeout_seconds: 7,
            delivery_max_concurrency: 3,
            delivery_max_concurrency_per_destination: 2,
            retry_schedule: vec![1, 2],
            ..Config::default()
        };
        let options = DispatcherOptions::from_config(&config);
        assert_eq!(options.lease, Duration::from_secs(17));
        assert_eq!(options.max_concurrency, 3);
        assert_eq!(options.max_concurrency_per_destination, 2);
        assert_eq!(options.retry.schedule().max_retries(), 2);
        assert_eq!(options.alerts.consecutive_failure_count, 100);
    }
}
