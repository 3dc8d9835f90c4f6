//! The timing record of one scenario: when each event was published and when its webhook
//! arrived, indexed by the event's sequence number (the number at the end of its id), written
//! lock-free from publishers and the receiver, summarized into rates and percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every benchmark event id; the rest is the event's sequence number.
pub const EVENT_ID_PREFIX: &str = "bench-";

/// The id of event `seq`.
pub fn event_id(seq: u64) -> String {
    format!("{EVENT_ID_PREFIX}{seq}")
}

/// The sequence number in an event id made by [`event_id`].
pub fn parse_seq(id: &str) -> Option<u64> {
    id.strip_prefix(EVENT_ID_PREFIX)?.parse().ok()
}

/// Publish and arrival times of events `0..len` (nanoseconds after `epoch`, plus one so that
/// zero means "not yet").
pub struct Tally {
    epoch: Instant,
    published: Vec<AtomicU64>,
    arrived: Vec<AtomicU64>,
    arrivals: AtomicU64,
    duplicates: AtomicU64,
    strangers: AtomicU64,
}

impl Tally {
    pub fn new(len: usize) -> Tally {
        Tally {
            epoch: Instant::now(),
            published: (0..len).map(|_| AtomicU64::new(0)).collect(),
            arrived: (0..len).map(|_| AtomicU64::new(0)).collect(),
            arrivals: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            strangers: AtomicU64::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.published.len()
    }

    pub fn is_empty(&self) -> bool {
        self.published.is_empty()
    }

    fn stamp(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Records that event `seq` is being published now.
    pub fn published(&self, seq: u64) {
        if let Some(slot) = self.published.get(seq as usize) {
            slot.store(self.stamp(), Ordering::Relaxed);
        }
    }

    /// Records a webhook for the event with this id; repeats and unknown ids are only counted.
    pub fn arrived(&self, id: &str) {
        let Some(slot) = parse_seq(id).and_then(|seq| self.arrived.get(seq as usize)) else {
            self.strangers.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if slot
            .compare_exchange(0, self.stamp(), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.arrivals.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Distinct events that arrived.
    pub fn arrivals(&self) -> u64 {
        self.arrivals.load(Ordering::Relaxed)
    }

    /// Webhooks for events that had arrived already (at-least-once delivery's repeats).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Requests whose event id was not one of this tally's.
    pub fn strangers(&self) -> u64 {
        self.strangers.load(Ordering::Relaxed)
    }

    /// How many of `seqs` arrived.
    pub fn arrived_among(&self, seqs: std::ops::Range<u64>) -> u64 {
        seqs.filter(|seq| self.arrival_nanos(*seq).is_some())
            .count() as u64
    }

    fn arrival_nanos(&self, seq: u64) -> Option<u64> {
        match self.arrived.get(seq as usize)?.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n - 1),
        }
    }

    fn publish_nanos(&self, seq: u64) -> Option<u64> {
        match self.published.get(seq as usize)?.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n - 1),
        }
    }

    /// Waits until `count` of `seqs` arrived, or `within` passed; returns how many arrived.
    pub async fn wait_for(&self, seqs: std::ops::Range<u64>, count: u64, within: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = 0;
        loop {
            // Checking the global counter first keeps the poll cheap while far from done.
            if self.arrivals() >= count {
                seen = self.arrived_among(seqs.clone());
                if seen >= count {
                    return seen;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return seen.max(self.arrived_among(seqs));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Events of `seqs` per second, from the first publish to the last arrival among them.
    pub fn throughput(&self, seqs: std::ops::Range<u64>) -> Option<Throughput> {
        let mut first_publish = u64::MAX;
        let mut last_arrival = 0;
        let mut events = 0u64;
        for seq in seqs {
            if let Some(p) = self.publish_nanos(seq) {
                first_publish = first_publish.min(p);
            }
            if let Some(a) = self.arrival_nanos(seq) {
                last_arrival = last_arrival.max(a);
                events += 1;
            }
        }
        (events > 0 && last_arrival > first_publish).then(|| {
            let elapsed = Duration::from_nanos(last_arrival - first_publish);
            Throughput {
                events,
                elapsed,
                per_second: events as f64 / elapsed.as_secs_f64(),
            }
        })
    }

    /// Publish → arrival latencies of the events of `seqs` that arrived.
    pub fn latencies(&self, seqs: std::ops::Range<u64>) -> Latencies {
        let mut samples: Vec<u64> = seqs
            .filter_map(|seq| {
                Some(
                    self.arrival_nanos(seq)?
                        .saturating_sub(self.publish_nanos(seq)?),
                )
            })
            .collect();
        samples.sort_unstable();
        Latencies { sorted: samples }
    }
}

/// Events over elapsed time.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub events: u64,
    pub elapsed: Duration,
    pub per_second: f64,
}

/// Sorted latency samples in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    sorted: Vec<u64>,
}

impl Latencies {
    pub fn from_nanos(mut samples: Vec<u64>) -> Latencies {
        samples.sort_unstable();
        Latencies { sorted: samples }
    }

    pub fn count(&self) -> usize {
        self.sorted.len()
    }

    /// The `p`-th percentile (0–100, nearest rank) in milliseconds; `None` without samples.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.sorted.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.sorted.len()) - 1;
        Some(self.sorted[index] as f64 / 1e6)
    }

    pub fn max_ms(&self) -> Option<f64> {
        self.sorted.last().map(|n| *n as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(parse_seq(&event_id(42)), Some(42));
        assert_eq!(parse_seq("evt_1"), None);
        assert_eq!(parse_seq("bench-x"), None);
    }

    #[test]
    fn arrivals_are_counted_once_and_strangers_apart() {
        let tally = Tally::new(3);
        tally.published(0);
        tally.published(1);
        tally.arrived("bench-0");
        tally.arrived("bench-0");
        tally.arrived("bench-1");
        tally.arrived("bench-7");
        tally.arrived("other");
        assert_eq!(tally.arrivals(), 2);
        assert_eq!(tally.duplicates(), 1);
        assert_eq!(tally.strangers(), 2);
        assert_eq!(tally.arrived_among(0..3), 2);
        assert_eq!(tally.latencies(0..3).count(), 2);
        assert!(tally.throughput(0..3).is_some());
        assert!(tally.throughput(2..3).is_none());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let l = Latencies::from_nanos((1..=100).map(|n| n * 1_000_000).collect());
        assert_eq!(l.percentile_ms(50.0), Some(50.0));
        assert_eq!(l.percentile_ms(99.0), Some(99.0));
        assert_eq!(l.percentile_ms(100.0), Some(100.0));
        assert_eq!(l.max_ms(), Some(100.0));
        assert_eq!(Latencies::default().percentile_ms(50.0), None);
    }
}
