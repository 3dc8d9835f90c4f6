//! Aggregates over the event and attempt logs for Outpost's `/metrics/events` and
//! `/metrics/attempts`: the query (time range, optional time buckets, dimensions to group by,
//! filters) and the grouped counts it yields. Plain data; the SQL is in `sql::metrics`.

use std::ops::Range;

use chrono::{DateTime, Datelike, Months, TimeDelta, TimeZone, Utc};

/// The unit of a time bucket (Outpost's `s`, `m`, `h`, `d`, `w`, `M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketUnit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

/// Time bucketing: `value` units per bucket. Buckets are aligned to the Unix epoch (weeks to
/// Sunday 1970-01-04, months to January 1970), so `1d` buckets start at midnight UTC, `1w`
/// on Sundays and `1M` on the first of the month, as in Outpost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granularity {
    pub value: u32,
    pub unit: BucketUnit,
}

/// Sunday 1970-01-04, the anchor of week buckets.
const FIRST_SUNDAY: i64 = 3 * 86_400;

impl Granularity {
    /// Seconds per bucket for fixed-length units; `None` for months.
    pub fn fixed_seconds(&self) -> Option<i64> {
        let unit = match self.unit {
            BucketUnit::Second => 1,
            BucketUnit::Minute => 60,
            BucketUnit::Hour => 3_600,
            BucketUnit::Day => 86_400,
            BucketUnit::Week => 7 * 86_400,
            BucketUnit::Month => return None,
        };
        Some(unit * i64::from(self.value.max(1)))
    }

    /// Where bucket 0 starts, in Unix seconds (fixed-length units).
    pub(crate) fn anchor_seconds(&self) -> i64 {
        match self.unit {
            BucketUnit::Week => FIRST_SUNDAY,
            _ => 0,
        }
    }

    /// The bucket `t` falls in.
    pub fn bucket_of(&self, t: DateTime<Utc>) -> i64 {
        match self.fixed_seconds() {
            Some(step) => (t.timestamp() - self.anchor_seconds()).div_euclid(step),
            None => {
                let months = i64::from(t.year() - 1970) * 12 + i64::from(t.month0());
                months.div_euclid(i64::from(self.value.max(1)))
            }
        }
    }

    /// When bucket `index` starts.
    pub fn bucket_start(&self, index: i64) -> Option<DateTime<Utc>> {
        match self.fixed_seconds() {
            Some(step) => {
                let seconds = index
                    .checked_mul(step)?
                    .checked_add(self.anchor_seconds())?;
                DateTime::from_timestamp(seconds, 0)
            }
            None => {
                let months = index.checked_mul(i64::from(self.value.max(1)))?;
                let epoch = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).single()?;
                if months >= 0 {
                    epoch.checked_add_months(Months::new(u32::try_from(months).ok()?))
                } else {
                    epoch.checked_sub_months(Months::new(u32::try_from(-months).ok()?))
                }
            }
        }
    }

    /// How long bucket `index` lasts, in seconds (months vary).
    pub fn bucket_seconds(&self, index: i64) -> Option<i64> {
        match self.fixed_seconds() {
            Some(step) => Some(step),
            None => {
                let start = self.bucket_start(index)?;
                let end = self.bucket_start(index + 1)?;
                Some((end - start).num_seconds())
            }
        }
    }

    /// Every bucket that overlaps `[start, end)`, in order, as a range of indexes (nothing
    /// is listed: a range spanning millions of buckets costs nothing until iterated).
    pub fn buckets_between(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Range<i64> {
        if start >= end {
            return 0..0;
        }
        let last = end - TimeDelta::microseconds(1);
        self.bucket_of(start)..self.bucket_of(last).saturating_add(1)
    }

    /// How many buckets overlap `[start, end)`, counted arithmetically.
    pub fn bucket_count(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> u64 {
        let range = self.buckets_between(start, end);
        range.end.abs_diff(range.start)
    }
}

/// What `/metrics/events` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventDimension {
    TenantId,
    Topic,
    /// One row per (event, destination it was routed to).
    DestinationId,
}

/// Narrows an event aggregate; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventAggregateFilter {
    pub tenant_ids: Vec<String>,
    pub topics: Vec<String>,
    pub destination_ids: Vec<String>,
}

/// What `/metrics/attempts` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptDimension {
    TenantId,
    DestinationId,
    DestinationType,
    Topic,
    Status,
    Code,
    Manual,
    AttemptNumber,
}

/// Narrows an attempt aggregate; empty lists (and `None`) match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptAggregateFilter {
    pub tenant_ids: Vec<String>,
    pub destination_ids: Vec<String>,
    pub destination_kinds: Vec<String>,
    pub topics: Vec<String>,
    pub statuses: Vec<String>,
    pub codes: Vec<String>,
    pub manual: Option<bool>,
    pub attempt_numbers: Vec<u32>,
}

/// One aggregate query: rows with `time` in `[start, end)`, grouped by bucket (if any) and the
/// dimensions, at most `row_limit` groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateQuery<D, F> {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub granularity: Option<Granularity>,
    pub dimensions: Vec<D>,
    pub filter: F,
    pub row_limit: u32,
}

pub type EventAggregateQuery = AggregateQuery<EventDimension, EventAggregateFilter>;
pub type AttemptAggregateQuery = AggregateQuery<AttemptDimension, AttemptAggregateFilter>;

/// Groups in dimension order and then bucket order; `truncated` when more than `row_limit`
/// groups existed.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregates<G> {
    pub groups: Vec<G>,
    pub truncated: bool,
}

/// One group of events. Dimension fields are `Some` only when grouped by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventGroup {
    /// The bucket index (see [`Granularity::bucket_start`]) when bucketed.
    pub bucket: Option<i64>,
    pub tenant_id: Option<String>,
    pub topic: Option<String>,
    pub destination_id: Option<String>,
    pub count: u64,
}

/// One group of attempts. Dimension fields are `Some` only when grouped by (`topic` and
/// `destination_type` may be `None` anyway when the event or destination row is missing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptGroup {
    pub bucket: Option<i64>,
    pub tenant_id: Option<String>,
    pub destination_id: Option<String>,
    pub destination_type: Option<String>,
    pub topic: Option<String>,
    pub status: Option<String>,
    pub code: Option<String>,
    pub manual: Option<bool>,
    pub attempt_number: Option<u32>,
    pub count: u64,
    pub successful: u64,
    pub failed: u64,
    /// First automatic attempts (attempt 1, not manual).
    pub first_attempts: u64,
    /// Attempts after the first (attempt number > 1).
    pub retries: u64,
    pub manual_retries: u64,
    /// Sum of attempt numbers (for the average).
    pub attempt_number_sum: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn fixed_buckets_align_to_the_epoch() {
        let g = Granularity {
            value: 5,
            unit: BucketUnit::Minute,
        };
        let b = g.bucket_of(at("2026-03-02T14:07:59Z"));
        assert_eq!(g.bucket_start(b), Some(at("2026-03-02T14:05:00Z")));
        assert_eq!(g.bucket_seconds(b), Some(300));
    }

    #[test]
    fn weeks_start_on_sunday() {
        let g = Granularity {
            value: 1,
            unit: BucketUnit::Week,
        };
        // 2026-03-04 is a Wednesday.
        let b = g.bucket_of(at("2026-03-04T10:00:00Z"));
        assert_eq!(g.bucket_start(b), Some(at("2026-03-01T00:00:00Z")));
    }

    #[test]
    fn months_are_calendar_months() {
        let g = Granularity {
            value: 1,
            unit: BucketUnit::Month,
        };
        let b = g.bucket_of(at("2024-02-29T23:59:59Z"));
        assert_eq!(g.bucket_start(b), Some(at("2024-02-01T00:00:00Z")));
        assert_eq!(g.bucket_seconds(b), Some(29 * 86_400));
        let q = Granularity {
            value: 3,
            unit: BucketUnit::Month,
        };
        let b = q.bucket_of(at("2024-05-10T00:00:00Z"));
        assert_eq!(q.bucket_start(b), Some(at("2024-04-01T00:00:00Z")));
    }

    #[test]
    fn buckets_between_covers_a_half_open_range() {
        let g = Granularity {
            value: 1,
            unit: BucketUnit::Hour,
        };
        let buckets = g.buckets_between(at("2026-03-02T10:30:00Z"), at("2026-03-02T13:00:00Z"));
        let starts: Vec<_> = buckets
            .clone()
            .map(|b| g.bucket_start(b).unwrap())
            .collect();
        assert_eq!(
            starts,
            vec![
                at("2026-03-02T10:00:00Z"),
                at("2026-03-02T11:00:00Z"),
                at("2026-03-02T12:00:00Z")
            ]
        );
        assert!(
            g.buckets_between(at("2026-03-02T10:00:00Z"), at("2026-03-02T10:00:00Z"))
                .is_empty()
        );
        assert_eq!(
            g.bucket_count(at("2026-03-02T10:30:00Z"), at("2026-03-02T13:00:00Z")),
            3
        );
    }

    #[test]
    fn bucket_counts_of_huge_ranges_are_arithmetic() {
        let g = Granularity {
            value: 1,
            unit: BucketUnit::Second,
        };
        let (start, end) = (at("0001-01-01T00:00:00Z"), at("9999-12-31T00:00:00Z"));
        assert_eq!(
            g.bucket_count(start, end),
            (end - start).num_seconds() as u64
        );
        let months = Granularity {
            value: 1,
            unit: BucketUnit::Month,
        };
        assert_eq!(months.bucket_count(start, end), 9999 * 12);
    }
}
