//! `/metrics/events` and `/metrics/attempts`: Outpost's aggregates. `time[start]`/`time[end]`
//! (required, end exclusive), optional `granularity` (`<n><unit>`, unit `s m h d w M`),
//! `measures` (required), `dimensions` and `filters[<dimension>]`. Counts come from the store;
//! rates and averages are derived here, and with a granularity every bucket of the range is
//! present (zeros where nothing happened), per dimension combination. A tenant token is
//! limited to its tenant and may not group by tenant. Malformed queries are 400 (Outpost).

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::CtxState;
use super::auth::{Caller, check_caller};
use super::error::{ApiError, ApiResult};
use super::query::Params;
use crate::store::{
    AggregateQuery, AttemptAggregateFilter, AttemptDimension, AttemptGroup, BucketUnit,
    EventAggregateFilter, EventDimension, EventGroup, Granularity,
};

/// Most groups (rows) one query returns, as Outpost.
const ROW_LIMIT: u32 = 100_000;

const EVENT_MEASURES: &[&str] = &["count", "rate"];
const EVENT_DIMENSIONS: &[&str] = &["tenant_id", "topic", "destination_id"];
const ATTEMPT_MEASURES: &[&str] = &[
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
const ATTEMPT_DIMENSIONS: &[&str] = &[
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
struct Common {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    granularity: Option<(Granularity, String)>,
    measures: Vec<String>,
    dimensions: Vec<String>,
    tenant_ids: Vec<String>,
}

fn parse_common(
    caller: &Caller,
    params: &Params,
    measures_allowed: &[&str],
    dimensions_allowed: &[&str],
) -> ApiResult<Common> {
    let dimensions = params.array("dimensions");
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
    let measures = params.array("measures");
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
    let requested = params.array("filters[tenant_id]");
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

/// A group as the response shows it, before zero-filling.
struct Point {
    bucket: Option<i64>,
    dimensions: Map<String, Value>,
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

fn measure(name: &str, c: &Counts, seconds: f64) -> Value {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_second = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    match name {
        "count" => json!(c.count),
        "successful_count" => json!(c.successful),
        "failed_count" => json!(c.failed),
        "error_rate" => json!(ratio(c.failed, c.count)),
        "first_attempt_count" => json!(c.first_attempts),
        "retry_count" => json!(c.retries),
        "manual_retry_count" => json!(c.manual_retries),
        "avg_attempt_number" => json!(ratio(c.attempt_number_sum, c.count)),
        "rate" => json!(per_second(c.count)),
        "successful_rate" => json!(per_second(c.successful)),
        "failed_rate" => json!(per_second(c.failed)),
        _ => Value::Null,
    }
}

/// The response: points in order, with every bucket of the range per dimension combination
/// when bucketed.
fn respond(
    common: &Common,
    points: Vec<Point>,
    truncated: bool,
    started: Instant,
) -> ApiResult<Json<Value>> {
    let range_seconds = (common.end - common.start).num_milliseconds() as f64 / 1000.0;
    let mut data = Vec::new();
    let mut truncated = truncated;
    let mut push = |bucket: Option<(i64, &Granularity)>,
                    dimensions: &Map<String, Value>,
                    counts: &Counts|
     -> bool {
        if data.len() >= ROW_LIMIT as usize {
            return false;
        }
        let (seconds, time_bucket) = match bucket {
            Some((index, g)) => (
                g.bucket_seconds(index).unwrap_or(0) as f64,
                g.bucket_start(index),
            ),
            None => (range_seconds, None),
        };
        let metrics: Map<String, Value> = common
            .measures
            .iter()
            .map(|m| (m.clone(), measure(m, counts, seconds)))
            .collect();
        let mut point = json!({"dimensions": dimensions, "metrics": metrics});
        if let Some(t) = time_bucket {
            point["time_bucket"] = json!(t);
        }
        data.push(point);
        true
    };
    match &common.granularity {
        None => {
            for p in &points {
                if !push(None, &p.dimensions, &p.counts) {
                    truncated = true;
                    break;
                }
            }
        }
        Some((g, _)) => {
            let slots = g.buckets_between(common.start, common.end);
            if slots.len() > ROW_LIMIT as usize {
                return Err(ApiError::bad_request(format!(
                    "query too broad: the time range has more than {ROW_LIMIT} buckets of this \
                     granularity; use a coarser granularity or a shorter range"
                )));
            }
            // Points arrive grouped by dimensions (then bucket): fill each group's buckets.
            let mut i = 0;
            'groups: while i < points.len() {
                let dims = &points[i].dimensions;
                let mut j = i;
                while j < points.len() && points[j].dimensions == *dims {
                    j += 1;
                }
                let group = &points[i..j];
                for slot in &slots {
                    let counts = group
                        .iter()
                        .find(|p| p.bucket == Some(*slot))
                        .map(|p| p.counts)
                        .unwrap_or_default();
                    if !push(Some((*slot, g)), dims, &counts) {
                        truncated = true;
                        break 'groups;
                    }
                }
                i = j;
            }
            if points.is_empty() && common.dimensions.is_empty() {
                for slot in &slots {
                    push(Some((*slot, g)), &Map::new(), &Counts::default());
                }
            }
        }
    }
    let mut metadata = json!({
        "query_time_ms": started.elapsed().as_millis() as u64,
        "row_count": data.len(),
        "row_limit": ROW_LIMIT,
        "truncated": truncated,
    });
    if let Some((_, raw)) = &common.granularity {
        metadata["granularity"] = json!(raw);
    }
    Ok(Json(json!({"data": data, "metadata": metadata})))
}

pub async fn events(
    State(ctx): CtxState,
    caller: Caller,
    params: Params,
) -> ApiResult<Json<Value>> {
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
            topics: params.array("filters[topic]"),
            destination_ids: params.array("filters[destination_id]"),
        },
        row_limit: ROW_LIMIT,
    };
    let found = ctx.state.store.aggregate_events(&query).await?;
    let points = found
        .groups
        .into_iter()
        .map(|g: EventGroup| {
            let mut dimensions = Map::new();
            for d in &common.dimensions {
                let value = match d.as_str() {
                    "tenant_id" => g.tenant_id.clone(),
                    "topic" => g.topic.clone(),
                    _ => g.destination_id.clone(),
                };
                dimensions.insert(d.clone(), json!(value.unwrap_or_default()));
            }
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
    respond(&common, points, found.truncated, started)
}

pub async fn attempts(
    State(ctx): CtxState,
    caller: Caller,
    params: Params,
) -> ApiResult<Json<Value>> {
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
        .array("filters[attempt_number]")
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
            destination_ids: params.array("filters[destination_id]"),
            destination_kinds: params.array("filters[destination_type]"),
            topics: params.array("filters[topic]"),
            statuses: params.array("filters[status]"),
            codes: params.array("filters[code]"),
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
            let mut dimensions = Map::new();
            for d in &common.dimensions {
                let value = match d.as_str() {
                    "tenant_id" => json!(g.tenant_id.clone().unwrap_or_default()),
                    "destination_id" => json!(g.destination_id.clone().unwrap_or_default()),
                    "destination_type" => json!(g.destination_type.clone().unwrap_or_default()),
                    "topic" => json!(g.topic.clone().unwrap_or_default()),
                    "status" => json!(g.status.clone().unwrap_or_default()),
                    "code" => json!(g.code.clone().unwrap_or_default()),
                    "manual" => json!(g.manual.unwrap_or_default()),
                    _ => json!(g.attempt_number.unwrap_or_default()),
                };
                dimensions.insert(d.clone(), value);
            }
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
    respond(&common, points, found.truncated, started)
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
        assert_eq!(measure("error_rate", &c, 60.0), json!(0.25));
        assert_eq!(measure("avg_attempt_number", &c, 60.0), json!(1.5));
        assert_eq!(measure("rate", &c, 2.0), json!(2.0));
        assert_eq!(measure("error_rate", &Counts::default(), 1.0), json!(0.0));
    }
}
