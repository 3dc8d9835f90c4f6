//! `/metrics/events` and `/metrics/attempts`: Outpost's aggregates. `time[start]`/`time[end]`
//! (required, end exclusive), optional `granularity` (`<n><unit>`, unit `s m h d w M`),
//! `measures` (required), `dimensions` and `filters[<dimension>]`. Counts come from the store;
//! rates and averages are derived here, and with a granularity every bucket of the range is
//! present (zeros where nothing happened), per dimension combination. A tenant token is
//! limited to its tenant and may not group by tenant. Malformed queries are 400 (Outpost), and
//! so is a range of more than `ROW_LIMIT` buckets, counted before anything is queried or built;
//! answers are written straight from typed rows, at most `ROW_LIMIT` of them.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

use super::CtxState;
use super::auth::{Caller, check_caller};
use super::error::{ApiError, ApiResult};
use super::query::Params;
use crate::store::{
    AggregateQuery, AttemptAggregateFilter, AttemptDimension, AttemptGroup, BucketUnit,
    EventAggregateFilter, EventDimension, EventGroup, Granularity,
};

/// Most rows one answer holds, and most buckets a range may span. Outpost allows 100,000; a
/// row is about 150 bytes of JSON, so 10,000 keep one answer near a megabyte and one query's
/// memory within a few (see docs/api.md).
pub const ROW_LIMIT: u32 = 10_000;

pub(crate) const EVENT_MEASURES: &[&str] = &["count", "rate"];
pub(crate) const EVENT_DIMENSIONS: &[&str] = &["tenant_id", "topic", "destination_id"];
pub(crate) const ATTEMPT_MEASURES: &[&str] = &[
    "count",
    "successful_count",
    "failed_count",
    "error_rate",
    "first_attempt_count",
    "retry_count",
    "manual_retry_count",
    "avg_attempt_number",
    "rate",
    "successful_rate",
    "failed_rate",
];
pub(crate) const ATTEMPT_DIMENSIONS: &[&str] = &[
    "tenant_id",
    "destination_id",
    "destination_type",
    "topic",
    "status",
    "code",
    "manual",
    "attempt_number",
];

/// The parts every metrics query shares.
pub(crate) struct Common {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    granularity: Option<(Granularity, String)>,
    measures: Vec<String>,
    dimensions: Vec<String>,
    tenant_ids: Vec<String>,
}

pub(crate) fn parse_common(
    caller: &Caller,
    params: &Params,
    measures_allowed: &[&str],
    dimensions_allowed: &[&str],
) -> ApiResult<Common> {
    let dimensions = params.array("dimensions")?;
    if caller.tenant_id().is_some() && dimensions.iter().any(|d| d == "tenant_id") {
        return Err(ApiError::forbidden(
            "tenant_id dimension is not allowed for tenant-scoped requests",
        ));
    }
    let time = |key: &str| -> ApiResult<DateTime<Utc>> {
        let value = params
            .get(key)
            .ok_or_else(|| ApiError::bad_request("time[start] and time[end] are required"))?;
        DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid {key}: expected an RFC 3339 date-time such as 2026-03-02T00:00:00Z"
                ))
            })
    };
    let (start, end) = (time("time[start]")?, time("time[end]")?);
    if start >= end {
        return Err(ApiError::bad_request(
            "invalid time range: start must be before end",
        ));
    }
    let granularity = params
        .get("granularity")
        .map(|raw| parse_granularity(raw).map(|g| (g, raw.to_owned())))
        .transpose()?;
    if let Some((g, raw)) = &granularity {
        // Counted, not listed: a range of centuries at 1s must cost nothing to refuse.
        let buckets = g.bucket_count(start, end);
        if buckets > u64::from(ROW_LIMIT) {
            return Err(ApiError::bad_request(format!(
                "query too broad: the time range holds {buckets} buckets of {raw}, at most \
                 {ROW_LIMIT} are allowed; use a coarser granularity or a shorter range"
            )));
        }
    }
    let measures = params.array("measures")?;
    if measures.is_empty() {
        return Err(ApiError::bad_request("at least one measures[] is required"));
    }
    if let Some(m) = measures
        .iter()
        .find(|m| !measures_allowed.contains(&m.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown measure {m:?} (one of: {})",
            measures_allowed.join(", ")
        )));
    }
    if let Some(d) = dimensions
        .iter()
        .find(|d| !dimensions_allowed.contains(&d.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown dimension {d:?} (one of: {})",
            dimensions_allowed.join(", ")
        )));
    }
    let requested = params.array("filters[tenant_id]")?;
    let tenant_ids = match caller.tenant_id() {
        None => requested,
        Some(own) if requested.is_empty() || requested == [own] => vec![own.to_owned()],
        Some(_) => {
            return Err(ApiError::forbidden(
                "filters[tenant_id] does not match authenticated tenant",
            ));
        }
    };
    Ok(Common {
        start,
        end,
        granularity,
        measures,
        dimensions,
        tenant_ids,
    })
}

/// `<n><unit>`: `s` and `m` up to 60, `h` 24, `d` 31, `w` 4, `M` 12.
fn parse_granularity(raw: &str) -> ApiResult<Granularity> {
    let invalid = |why: &str| {
        ApiError::bad_request(format!(
            "invalid granularity {raw:?}: {why} (e.g. 30s, 5m, 1h, 1d, 1w, 1M)"
        ))
    };
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| invalid("missing unit"))?;
    let (digits, unit) = raw.split_at(split);
    let value: u32 = digits.parse().map_err(|_| invalid("missing number"))?;
    let (unit, max) = match unit {
        "s" => (BucketUnit::Second, 60),
        "m" => (BucketUnit::Minute, 60),
        "h" => (BucketUnit::Hour, 24),
        "d" => (BucketUnit::Day, 31),
        "w" => (BucketUnit::Week, 4),
        "M" => (BucketUnit::Month, 12),
        _ => return Err(invalid("unit must be one of s, m, h, d, w, M")),
    };
    if value == 0 || value > max {
        return Err(invalid(&format!("value must be between 1 and {max}")));
    }
    Ok(Granularity { value, unit })
}

/// A group's value for one dimension, as the response shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum DimensionValue {
    Text(String),
    Flag(bool),
    Number(u32),
}

/// A group as the store returned it: its bucket (when bucketed), its dimension values in the
/// order of `Common::dimensions`, and its counts.
struct Point {
    bucket: Option<i64>,
    dimensions: Vec<DimensionValue>,
    counts: Counts,
}

/// The counts measures derive from.
#[derive(Clone, Copy, Default)]
struct Counts {
    count: u64,
    successful: u64,
    failed: u64,
    first_attempts: u64,
    retries: u64,
    manual_retries: u64,
    attempt_number_sum: u64,
}

/// One measure's value: counts are integers, ratios and rates decimals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
enum MeasureValue {
    Count(u64),
    Ratio(f64),
}

fn measure(name: &str, c: &Counts, seconds: f64) -> MeasureValue {
    let ratio =
        |a: u64, b: u64| MeasureValue::Ratio(if b == 0 { 0.0 } else { a as f64 / b as f64 });
    let per_second = |n: u64| {
        MeasureValue::Ratio(if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        })
    };
    match name {
        "count" => MeasureValue::Count(c.count),
        "successful_count" => MeasureValue::Count(c.successful),
        "failed_count" => MeasureValue::Count(c.failed),
        "error_rate" => ratio(c.failed, c.count),
        "first_attempt_count" => MeasureValue::Count(c.first_attempts),
        "retry_count" => MeasureValue::Count(c.retries),
        "manual_retry_count" => MeasureValue::Count(c.manual_retries),
        "avg_attempt_number" => ratio(c.attempt_number_sum, c.count),
        "rate" => per_second(c.count),
        "successful_rate" => per_second(c.successful),
        "failed_rate" => per_second(c.failed),
        // Measures are checked against the allowed names before the query runs.
        _ => MeasureValue::Count(0),
    }
}

/// One row of the answer: a group (index into the groups, `None` for the empty dimension set
/// of a zero-filled range without data) in one bucket, or over the whole range.
struct Row {
    bucket: Option<i64>,
    group: Option<usize>,
    counts: Counts,
}

/// The answer, serialized straight from the rows: measures are derived while writing.
pub struct Answer {
    common: Common,
    groups: Vec<Vec<DimensionValue>>,
    rows: Vec<Row>,
    truncated: bool,
    query_time_ms: u64,
}

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("data", &Rows(self))?;
        map.serialize_entry(
            "metadata",
            &AnswerMetadata {
                granularity: self
                    .common
                    .granularity
                    .as_ref()
                    .map(|(_, raw)| raw.as_str()),
                query_time_ms: self.query_time_ms,
                row_count: self.rows.len(),
                row_limit: ROW_LIMIT,
                truncated: self.truncated,
            },
        )?;
        map.end()
    }
}

#[derive(Serialize)]
struct AnswerMetadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    granularity: Option<&'a str>,
    query_time_ms: u64,
    row_count: usize,
    row_limit: u32,
    truncated: bool,
}

struct Rows<'a>(&'a Answer);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let answer = self.0;
        let range_seconds =
            (answer.common.end - answer.common.start).num_milliseconds() as f64 / 1000.0;
        let mut seq = s.serialize_seq(Some(answer.rows.len()))?;
        for row in &answer.rows {
            let (seconds, time_bucket) = match (row.bucket, &answer.common.granularity) {
                (Some(index), Some((g, _))) => (
                    g.bucket_seconds(index).unwrap_or(0) as f64,
                    g.bucket_start(index),
                ),
                _ => (range_seconds, None),
            };
            let values = row.group.map_or(&[][..], |g| answer.groups[g].as_slice());
            seq.serialize_element(&RowOut {
                time_bucket,
                dimensions: Pairs(
                    answer
                        .common
                        .dimensions
                        .iter()
                        .map(String::as_str)
                        .zip(values.iter().cloned())
                        .collect(),
                ),
                metrics: Pairs(
                    answer
                        .common
                        .measures
                        .iter()
                        .map(|m| (m.as_str(), measure(m, &row.counts, seconds)))
                        .collect(),
                ),
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct RowOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    time_bucket: Option<DateTime<Utc>>,
    dimensions: Pairs<'a, DimensionValue>,
    metrics: Pairs<'a, MeasureValue>,
}

/// A JSON object written from name/value pairs in order.
struct Pairs<'a, V>(Vec<(&'a str, V)>);

impl<V: Serialize> Serialize for Pairs<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The rows in order, at most `ROW_LIMIT`: with a granularity, every bucket of the range per
/// dimension combination (zeros where nothing happened). The bucket count was checked against
/// `ROW_LIMIT` before the query ran, so the loops below are bounded by it.
fn respond(common: Common, points: Vec<Point>, truncated: bool, started: Instant) -> Json<Answer> {
    let limit = ROW_LIMIT as usize;
    let mut truncated = truncated;
    let mut groups: Vec<Vec<DimensionValue>> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    match &common.granularity {
        None => {
            for p in points {
                if rows.len() >= limit {
                    truncated = true;
                    break;
                }
                groups.push(p.dimensions);
                rows.push(Row {
                    bucket: None,
                    group: Some(groups.len() - 1),
                    counts: p.counts,
                });
            }
        }
        Some((g, _)) => {
            let slots = g.buckets_between(common.start, common.end);
            let empty = points.is_empty();
            // Points arrive grouped by dimensions, then in bucket order: walk each group's
            // points alongside the slots.
            let mut points = points.into_iter().peekable();
            'groups: while let Some(first) = points.next() {
                groups.push(first.dimensions);
                let group = groups.len() - 1;
                let mut pending = Some((first.bucket, first.counts));
                for slot in slots.clone() {
                    if rows.len() >= limit {
                        truncated = true;
                        break 'groups;
                    }
                    // Skip points outside the range (none expected), then take this slot's.
                    while pending.is_some_and(|(b, _)| b.is_none_or(|b| b < slot)) {
                        pending = next_in_group(&mut points, &groups[group]);
                    }
                    let counts = match pending {
                        Some((Some(b), counts)) if b == slot => {
                            pending = next_in_group(&mut points, &groups[group]);
                            counts
                        }
                        _ => Counts::default(),
                    };
                    rows.push(Row {
                        bucket: Some(slot),
                        group: Some(group),
                        counts,
                    });
                }
                while pending.is_some() {
                    pending = next_in_group(&mut points, &groups[group]);
                }
            }
            if empty && common.dimensions.is_empty() {
                rows.extend(slots.take(limit).map(|slot| Row {
                    bucket: Some(slot),
                    group: None,
                    counts: Counts::default(),
                }));
            }
        }
    }
    Json(Answer {
        common,
        groups,
        rows,
        truncated,
        query_time_ms: started.elapsed().as_millis() as u64,
    })
}

/// The next point if it belongs to the group with `dimensions`.
fn next_in_group(
    points: &mut std::iter::Peekable<std::vec::IntoIter<Point>>,
    dimensions: &[DimensionValue],
) -> Option<(Option<i64>, Counts)> {
    points
        .next_if(|p| p.dimensions == dimensions)
        .map(|p| (p.bucket, p.counts))
}

pub async fn events(
    State(ctx): CtxState,
    caller: Caller,
    params: Params,
) -> ApiResult<Json<Answer>> {
    check_caller(&ctx, &caller).await?;
    let started = Instant::now();
    let common = parse_common(&caller, &params, EVENT_MEASURES, EVENT_DIMENSIONS)?;
    let dimensions = common
        .dimensions
        .iter()
        .filter_map(|d| match d.as_str() {
            "tenant_id" => Some(EventDimension::TenantId),
            "topic" => Some(EventDimension::Topic),
            "destination_id" => Some(EventDimension::DestinationId),
            _ => None,
        })
        .collect();
    let query = AggregateQuery {
        start: common.start,
        end: common.end,
        granularity: common.granularity.as_ref().map(|(g, _)| *g),
        dimensions,
        filter: EventAggregateFilter {
            tenant_ids: common.tenant_ids.clone(),
            topics: params.array("filters[topic]")?,
            destination_ids: params.array("filters[destination_id]")?,
        },
        row_limit: ROW_LIMIT,
    };
    let found = ctx.state.store.aggregate_events(&query).await?;
    let points = found
        .groups
        .into_iter()
        .map(|g: EventGroup| {
            let dimensions = common
                .dimensions
                .iter()
                .map(|d| {
                    let value = match d.as_str() {
                        "tenant_id" => g.tenant_id.clone(),
                        "topic" => g.topic.clone(),
                        _ => g.destination_id.clone(),
                    };
                    DimensionValue::Text(value.unwrap_or_default())
                })
                .collect();
            Point {
                bucket: g.bucket,
                dimensions,
                counts: Counts {
                    count: g.count,
                    ..Counts::default()
                },
            }
        })
        .collect();
    Ok(respond(common, points, found.truncated, started))
}

pub async fn attempts(
    State(ctx): CtxState,
    caller: Caller,
    params: Params,
) -> ApiResult<Json<Answer>> {
    check_caller(&ctx, &caller).await?;
    let started = Instant::now();
    let common = parse_common(&caller, &params, ATTEMPT_MEASURES, ATTEMPT_DIMENSIONS)?;
    let dimensions = common
        .dimensions
        .iter()
        .filter_map(|d| {
            Some(match d.as_str() {
                "tenant_id" => AttemptDimension::TenantId,
                "destination_id" => AttemptDimension::DestinationId,
                "destination_type" => AttemptDimension::DestinationType,
                "topic" => AttemptDimension::Topic,
                "status" => AttemptDimension::Status,
                "code" => AttemptDimension::Code,
                "manual" => AttemptDimension::Manual,
                "attempt_number" => AttemptDimension::AttemptNumber,
                _ => return None,
            })
        })
        .collect();
    let manual = match params.get("filters[manual]") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid filters[manual] {other:?}: use true or false"
            )));
        }
    };
    let attempt_numbers = params
        .array("filters[attempt_number]")?
        .iter()
        .map(|n| {
            n.parse::<u32>().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid filters[attempt_number] {n:?}: use whole numbers"
                ))
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let query = AggregateQuery {
        start: common.start,
        end: common.end,
        granularity: common.granularity.as_ref().map(|(g, _)| *g),
        dimensions,
        filter: AttemptAggregateFilter {
            tenant_ids: common.tenant_ids.clone(),
            destination_ids: params.array("filters[destination_id]")?,
            destination_kinds: params.array("filters[destination_type]")?,
            topics: params.array("filters[topic]")?,
            statuses: params.array("filters[status]")?,
            codes: params.array("filters[code]")?,
            manual,
            attempt_numbers,
        },
        row_limit: ROW_LIMIT,
    };
    let found = ctx.state.store.aggregate_attempts(&query).await?;
    let points = found
        .groups
        .into_iter()
        .map(|g: AttemptGroup| {
            let text = |v: &Option<String>| DimensionValue::Text(v.clone().unwrap_or_default());
            let dimensions = common
                .dimensions
                .iter()
                .map(|d| match d.as_str() {
                    "tenant_id" => text(&g.tenant_id),
                    "destination_id" => text(&g.destination_id),
                    "destination_type" => text(&g.destination_type),
                    "topic" => text(&g.topic),
                    "status" => text(&g.status),
                    "code" => text(&g.code),
                    "manual" => DimensionValue::Flag(g.manual.unwrap_or_default()),
                    _ => DimensionValue::Number(g.attempt_number.unwrap_or_default()),
                })
                .collect();
            Point {
                bucket: g.bucket,
                dimensions,
                counts: Counts {
                    count: g.count,
                    successful: g.successful,
                    failed: g.failed,
                    first_attempts: g.first_attempts,
                    retries: g.retries,
                    manual_retries: g.manual_retries,
                    attempt_number_sum: g.attempt_number_sum,
                },
            }
        })
        .collect();
    Ok(respond(common, points, found.truncated, started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularities_follow_outposts_bounds() {
        assert_eq!(
            parse_granularity("5m").unwrap(),
            Granularity {
                value: 5,
                unit: BucketUnit::Minute
            }
        );
        assert_eq!(parse_granularity("1M").unwrap().unit, BucketUnit::Month);
        for bad in ["", "m", "0h", "25h", "5x", "5", "-1d", "13M"] {
            assert!(parse_granularity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn measures_derive_from_counts() {
        let c = Counts {
            count: 4,
            failed: 1,
            successful: 3,
            attempt_number_sum: 6,
            ..Counts::default()
        };
        assert_eq!(measure("error_rate", &c, 60.0), MeasureValue::Ratio(0.25));
        assert_eq!(
            measure("avg_attempt_number", &c, 60.0),
            MeasureValue::Ratio(1.5)
        );
        assert_eq!(measure("rate", &c, 2.0), MeasureValue::Ratio(2.0));
        assert_eq!(measure("count", &c, 2.0), MeasureValue::Count(4));
        assert_eq!(
            measure("error_rate", &Counts::default(), 1.0),
            MeasureValue::Ratio(0.0)
        );
    }

    fn params(query: &str) -> Params {
        Params(
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    #[test]
    fn bucket_counts_are_refused_before_anything_is_built() {
        let q = "measures=count&granularity=1s&time[start]=0001-01-01T00:00:00Z\
                 &time[end]=9999-12-31T00:00:00Z";
        let err = parse_common(&Caller::Admin, &params(q), EVENT_MEASURES, EVENT_DIMENSIONS)
            .err()
            .unwrap();
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(err.message.contains("at most 10000"), "{}", err.message);
        // A day at 1s is 86,400 buckets: refused too; a day at 10s (8,640) is fine.
        let day = "measures=count&time[start]=2026-01-01T00:00:00Z&time[end]=2026-01-02T00:00:00Z";
        let one_second = format!("{day}&granularity=1s");
        assert!(parse_common(&Caller::Admin, &params(&one_second), EVENT_MEASURES, &[]).is_err());
        let ten_seconds = format!("{day}&granularity=10s");
        assert!(parse_common(&Caller::Admin, &params(&ten_seconds), EVENT_MEASURES, &[]).is_ok());
    }

    #[test]
    fn answers_fill_every_bucket_of_each_group_in_order() {
        let q = "measures=count&dimensions=topic&granularity=1h\
                 &time[start]=2026-01-01T00:00:00Z&time[end]=2026-01-01T03:00:00Z";
        let common = parse_common(&Caller::Admin, &params(q), EVENT_MEASURES, EVENT_DIMENSIONS)
            .ok()
            .unwrap();
        let hour = |h: i64| Some(common.start.timestamp() / 3600 + h);
        let point = |topic: &str, bucket, count| Point {
            bucket,
            dimensions: vec![DimensionValue::Text(topic.into())],
            counts: Counts {
                count,
                ..Counts::default()
            },
        };
        let points = vec![
            point("a", hour(0), 3),
            point("a", hour(2), 1),
            point("b", hour(1), 2),
        ];
        let Json(answer) = respond(common, points, false, Instant::now());
        let json = serde_json::to_value(&answer).unwrap();
        let counts: Vec<(String, String, u64)> = json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["dimensions"]["topic"].as_str().unwrap().to_owned(),
                    p["time_bucket"].as_str().unwrap()[11..13].to_owned(),
                    p["metrics"]["count"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected = [
            ("a", "00", 3),
            ("a", "01", 0),
            ("a", "02", 1),
            ("b", "00", 0),
            ("b", "01", 2),
            ("b", "02", 0),
        ]
        .map(|(t, h, n)| (t.to_owned(), h.to_owned(), n));
        assert_eq!(counts, expected);
        assert_eq!(json["metadata"]["row_count"], 6);
        assert_eq!(json["metadata"]["row_limit"], ROW_LIMIT);
        assert_eq!(json["metadata"]["granularity"], "1h");
    }
}
