//! Delivery alerts, with Outpost's semantics: a destination's consecutive failed attempts
//! cross thresholds at 50/70/90/100 % of `alert.consecutive_failure_count` (100 % may disable
//! it), and a delivery that used up its retries alerts at most once per destination per window.
//! Pure decisions here; the dispatcher acts on them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Outpost's alert levels, in percent of `consecutive_failure_count`.
pub const ALERT_LEVELS: [u8; 4] = [50, 70, 90, 100];

/// Outpost's default de-duplication window for exhausted-retries alerts.
pub const DEFAULT_EXHAUSTED_RETRIES_WINDOW: Duration = Duration::from_secs(3600);

/// When consecutive failures alert, and whether the last level disables the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertPolicy {
    /// The failure count that is 100 %; 0 turns consecutive-failure alerts off.
    pub consecutive_failure_count: u32,
    pub auto_disable_destination: bool,
}

impl AlertPolicy {
    /// The level (percent) that exactly `consecutive_failures` reaches, if any. Each level is
    /// `ceil(count × percent / 100)` failures; where several levels land on the same count the
    /// highest wins (count 3: 70, 90 and 100 % all fall on 3 failures, so 3 is 100 %).
    /// Exact matches are enough because the store hands every count to exactly one attempt, so
    /// a level fires once per failure streak.
    pub fn level(&self, consecutive_failures: u32) -> Option<u8> {
        let max = u64::from(self.consecutive_failure_count);
        if max == 0 || consecutive_failures == 0 {
            return None;
        }
        ALERT_LEVELS.iter().rev().copied().find(|&percent| {
            (max * u64::from(percent)).div_ceil(100) == u64::from(consecutive_failures)
        })
    }

    /// Whether reaching `level` disables the destination.
    pub fn disables_at(&self, level: u8) -> bool {
        level == 100 && self.auto_disable_destination
    }
}

/// At most one exhausted-retries alert per destination per window, in this process (replicas
/// each keep their own window). A zero window alerts on every exhaustion.
#[derive(Debug)]
pub struct ExhaustedRetriesWindow {
    window: Duration,
    last: Mutex<HashMap<(String, String), Instant>>,
}

impl ExhaustedRetriesWindow {
    pub fn new(window: Duration) -> Self {
        ExhaustedRetriesWindow {
            window,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// True when this exhaustion should alert (and starts a new window for the destination).
    pub fn admit(&self, tenant_id: &str, destination_id: &str, now: Instant) -> bool {
        if self.window.is_zero() {
            return true;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        // Forget closed windows now and then, so the map only holds recently failing ones.
        if last.len() > 1024 {
            last.retain(|_, at| now.duration_since(*at) < self.window);
        }
        let key = (tenant_id.to_owned(), destination_id.to_owned());
        match last.get(&key) {
            Some(at) if now.duration_since(*at) < self.window => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(count: u32, up_to: u32) -> Vec<(u32, u8)> {
        let policy = AlertPolicy {
            consecutive_failure_count: count,
            auto_disable_destination: true,
        };
        (0..=up_to)
            .filter_map(|n| policy.level(n).map(|l| (n, l)))
            .collect()
    }

    #[test]
    fn outposts_levels_of_the_default_count() {
        assert_eq!(
            levels(100, 300),
            vec![(50, 50), (70, 70), (90, 90), (100, 100)]
        );
    }

    #[test]
    fn small_counts_round_up_and_the_highest_level_wins() {
        assert_eq!(levels(4, 10), vec![(2, 50), (3, 70), (4, 100)]);
        assert_eq!(levels(3, 10), vec![(2, 50), (3, 100)]);
        assert_eq!(levels(1, 10), vec![(1, 100)]);
        assert_eq!(levels(0, 10), vec![]);
    }

    #[test]
    fn only_the_last_level_disables_and_only_when_configured() {
        let policy = AlertPolicy {
            consecutive_failure_count: 10,
            auto_disable_destination: true,
        };
        assert!(policy.disables_at(100));
        assert!(!policy.disables_at(90));
        let keep = AlertPolicy {
            auto_disable_destination: false,
            ..policy
        };
        assert!(!keep.disables_at(100));
    }

    #[test]
    fn exhausted_alerts_once_per_destination_per_window() {
        let window = ExhaustedRetriesWindow::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(window.admit("t", "d1", t0));
        assert!(!window.admit("t", "d1", t0 + Duration::from_secs(59)));
        assert!(window.admit("t", "d2", t0));
        assert!(window.admit("other", "d1", t0));
        assert!(window.admit("t", "d1", t0 + Duration::from_secs(61)));
        let every = ExhaustedRetriesWindow::new(Duration::ZERO);
        assert!(every.admit("t", "d1", t0));
        assert!(every.admit("t", "d1", t0));
    }
}
