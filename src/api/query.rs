//! Query strings as Outpost reads them: arrays in its three spellings (`a=x&a=y`, `a[]=x`,
//! `a[0]=x&a[1]=y`), time filters (`time[gte]=…`, RFC 3339 or `YYYY-MM-DD`), and cursor
//! pagination (`limit`, `dir`, `order_by`, `next`/`prev`) with the `pagination` object that
//! list responses carry. Every size a query asks for (values per array, page size) is checked
//! here, before anything is loaded, and refused with a 400 that states the limit.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use crate::store::{ByteBudget, PageRequest, SortDir, TimeRange};

/// Most values one array parameter may carry (`tenant_id=a&tenant_id=b&…`); each becomes a
/// bound SQL parameter, so thousands would cost the store more than any real filter needs.
pub const MAX_ARRAY_VALUES: usize = 100;

/// Most items one page of a log (events, attempts) holds, as Outpost documents.
pub const MAX_LOG_PAGE: u32 = 1000;

/// Most bytes of stored payloads (event `data`, attempts' `response_data`) one page of a log
/// holds: a page ends early, with a `next` cursor, rather than pass it (its first item is always
/// shown). Events may hold up to a megabyte of data each, so `limit` alone would allow a
/// gigabyte.
pub const MAX_PAGE_PAYLOAD_BYTES: u64 = 2 * 1024 * 1024;

/// The decoded query string, in order.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params, ApiError> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(pairs)| Params(pairs))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
    }
}

impl Params {
    /// The first non-empty value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// An array parameter: indexed brackets (ordered by index) win over empty brackets, which
    /// win over repeated plain keys, as in Outpost. Empty values are dropped. More than
    /// [`MAX_ARRAY_VALUES`] values is a 400.
    pub fn array(&self, name: &str) -> ApiResult<Vec<String>> {
        let mut indexed: Vec<(u64, &str)> = Vec::new();
        let mut bracketed: Vec<&str> = Vec::new();
        let mut plain: Vec<&str> = Vec::new();
        for (key, value) in &self.0 {
            if value.is_empty() {
                continue;
            }
            if key == name {
                plain.push(value);
                continue;
            }
            let Some(inner) = key
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('['))
                .and_then(|rest| rest.strip_suffix(']'))
            else {
                continue;
            };
            if inner.is_empty() {
                bracketed.push(value);
            } else if let Ok(index) = inner.parse::<u64>() {
                indexed.push((index, value));
            }
        }
        let count = [indexed.len(), bracketed.len(), plain.len()]
            .into_iter()
            .find(|n| *n > 0)
            .unwrap_or(0);
        if count > MAX_ARRAY_VALUES {
            return Err(ApiError::bad_request(format!(
                "too many values for {name}: {count} given, at most {MAX_ARRAY_VALUES} are \
                 allowed; split the request"
            )));
        }
        let chosen: Vec<&str> = if !indexed.is_empty() {
            indexed.sort_by_key(|(i, _)| *i);
            indexed.into_iter().map(|(_, v)| v).collect()
        } else if !bracketed.is_empty() {
            bracketed
        } else {
            plain
        };
        Ok(chosen.into_iter().map(str::to_owned).collect())
    }

    /// `field[gte]`, `field[gt]`, `field[lte]`, `field[lt]`.
    pub fn time_range(&self, field: &str) -> ApiResult<TimeRange> {
        if self.has(&format!("{field}[any]")) {
            return Err(ApiError::bad_request(
                "operator 'any' is not supported, use 'gte', 'lte', 'gt', or 'lt'",
            ));
        }
        let read = |op: &str| -> ApiResult<Option<DateTime<Utc>>> {
            let key = format!("{field}[{op}]");
            self.get(&key)
                .map(|v| {
                    parse_time(v).ok_or_else(|| {
                        ApiError::query(
                            &key,
                            "invalid format, expected RFC3339 (e.g. 2024-01-15T09:30:00Z or \
                             2024-01-15T09:30:00.123Z) or YYYY-MM-DD",
                        )
                    })
                })
                .transpose()
        };
        Ok(TimeRange {
            gte: read("gte")?,
            gt: read("gt")?,
            lte: read("lte")?,
            lt: read("lt")?,
        })
    }

    /// `dir` (default `desc`), 422 otherwise.
    pub fn dir(&self) -> ApiResult<SortDir> {
        match self.get("dir") {
            None | Some("desc") => Ok(SortDir::Desc),
            Some("asc") => Ok(SortDir::Asc),
            Some(_) => Err(ApiError::query("dir", "must be 'asc' or 'desc'")),
        }
    }

    /// `next` and `prev`, which exclude each other (400).
    pub fn cursors(&self) -> ApiResult<(Option<String>, Option<String>)> {
        let next = self.get("next").map(str::to_owned);
        let prev = self.get("prev").map(str::to_owned);
        if next.is_some() && prev.is_some() {
            return Err(ApiError::bad_request(
                "cannot specify both 'next' and 'prev' cursors",
            ));
        }
        Ok((next, prev))
    }

    /// A page of a time-ordered log (events, attempts): `limit` 1..=1000 (400 otherwise;
    /// Outpost caps larger values silently), default 100; `order_by` must be `time`.
    pub fn log_page(&self) -> ApiResult<(PageRequest, Pagination)> {
        if let Some(order_by) = self.get("order_by")
            && order_by != "time"
        {
            return Err(ApiError::query("order_by", "must be one of: [time]"));
        }
        let limit = self.limit(100, MAX_LOG_PAGE)?;
        let (mut page, pagination) = self.page("time", limit)?;
        page.budget = Some(ByteBudget {
            max_bytes: MAX_PAGE_PAYLOAD_BYTES,
            event_data: false,
        });
        Ok((page, pagination))
    }

    /// A page of tenants: `limit` 1..=100 (400 otherwise), default 20.
    pub fn tenant_page(&self) -> ApiResult<(PageRequest, Pagination)> {
        let limit = self.limit(20, 100)?;
        self.page("created_at", limit)
    }

    /// `limit`: `default` when absent, 400 unless a whole number in `1..=max`.
    fn limit(&self, default: u32, max: u32) -> ApiResult<u32> {
        let Some(raw) = self.get("limit") else {
            return Ok(default);
        };
        match raw.parse::<i64>() {
            Ok(l) if (1..=i64::from(max)).contains(&l) => Ok(l as u32),
            Ok(_) => Err(ApiError::bad_request(format!(
                "invalid limit: must be between 1 and {max}"
            ))),
            Err(_) => Err(ApiError::bad_request(format!(
                "invalid limit: must be an integer between 1 and {max}"
            ))),
        }
    }

    fn page(&self, order_by: &'static str, limit: u32) -> ApiResult<(PageRequest, Pagination)> {
        let dir = self.dir()?;
        let (next, prev) = self.cursors()?;
        Ok((
            PageRequest {
                dir,
                limit,
                next,
                prev,
                ..PageRequest::default()
            },
            Pagination {
                order_by,
                dir: match dir {
                    SortDir::Asc => "asc",
                    SortDir::Desc => "desc",
                },
                limit,
                next: None,
                prev: None,
            },
        ))
    }
}

/// A list response: the page's items and its `pagination` (and, for tenants, the `count`),
/// serialized straight from typed views so stored bytes (raw event `data`) go out as stored.
#[derive(Debug, Serialize)]
pub struct PageOf<T> {
    pub models: Vec<T>,
    pub pagination: Pagination,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl<T> PageOf<T> {
    pub fn new(models: Vec<T>, pagination: Pagination) -> PageOf<T> {
        PageOf {
            models,
            pagination,
            count: None,
        }
    }
}

/// The `pagination` object of list responses (Outpost's `SeekPagination`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pagination {
    pub order_by: &'static str,
    pub dir: &'static str,
    pub limit: u32,
    pub next: Option<String>,
    pub prev: Option<String>,
}

impl Pagination {
    pub fn with_cursors(mut self, next: Option<String>, prev: Option<String>) -> Pagination {
        self.next = next;
        self.prev = prev;
        self
    }
}

/// RFC 3339 (fractions allowed) or a bare date (midnight UTC). A `+` offset that arrived
/// unescaped reads as a space; it is put back.
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    if value.contains(' ')
        && let Ok(t) = DateTime::parse_from_rfc3339(&value.replace(' ', "+"))
    {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn arrays_in_outposts_three_spellings() {
        let array = |pairs: &[(&str, &str)], name: &str| params(pairs).array(name).unwrap();
        assert_eq!(
            array(&[("topic", "a"), ("topic", "b")], "topic"),
            ["a", "b"]
        );
        assert_eq!(
            array(&[("topic[]", "a"), ("topic[]", "b")], "topic"),
            ["a", "b"]
        );
        assert_eq!(
            array(&[("topic[1]", "b"), ("topic[0]", "a")], "topic"),
            ["a", "b"]
        );
        assert_eq!(
            array(&[("filters[topic][0]", "x")], "filters[topic]"),
            ["x"]
        );
        assert!(array(&[("topics", "a")], "topic").is_empty());
        assert!(array(&[("topic", "")], "topic").is_empty());
    }

    #[test]
    fn arrays_are_capped_in_every_spelling() {
        let many = |key: &dyn Fn(usize) -> String, n: usize| {
            Params((0..n).map(|i| (key(i), format!("v{i}"))).collect())
        };
        let spellings: [&dyn Fn(usize) -> String; 3] = [
            &|_| "tenant_id".to_owned(),
            &|_| "tenant_id[]".to_owned(),
            &|i| format!("tenant_id[{i}]"),
        ];
        for key in spellings {
            assert_eq!(
                many(key, MAX_ARRAY_VALUES)
                    .array("tenant_id")
                    .unwrap()
                    .len(),
                MAX_ARRAY_VALUES
            );
            let err = many(key, 5000).array("tenant_id").unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(err.message.contains("at most 100"), "{}", err.message);
        }
    }

    #[test]
    fn times_in_rfc3339_or_dates() {
        let t = parse_time("2024-01-15T09:30:00.123Z").unwrap();
        assert_eq!(t.timestamp_millis() % 1000, 123);
        assert_eq!(
            parse_time("2024-01-15"),
            Some("2024-01-15T00:00:00Z".parse().unwrap())
        );
        assert_eq!(
            parse_time("2024-01-15T10:30:00 02:00"),
            Some("2024-01-15T08:30:00Z".parse().unwrap())
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn pages_validate_their_parameters() {
        let (page, info) = params(&[]).log_page().unwrap();
        assert_eq!(
            (page.limit, page.dir, info.dir),
            (100, SortDir::Desc, "desc")
        );
        let (page, _) = params(&[("limit", "1000"), ("dir", "asc")])
            .log_page()
            .unwrap();
        assert_eq!((page.limit, page.dir), (1000, SortDir::Asc));
        for bad in ["1001", "0", "-1", "many", "99999999999999999999"] {
            let err = params(&[("limit", bad)]).log_page().unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert!(err.message.contains("1000"), "{}", err.message);
        }
        assert_eq!(
            params(&[("dir", "up")]).log_page().unwrap_err().status,
            axum::http::StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            params(&[("next", "a"), ("prev", "b")])
                .log_page()
                .unwrap_err()
                .status,
            axum::http::StatusCode::BAD_REQUEST
        );
        assert_eq!(
            params(&[("limit", "101")])
                .tenant_page()
                .unwrap_err()
                .status,
            axum::http::StatusCode::BAD_REQUEST
        );
        assert!(params(&[("order_by", "id")]).log_page().is_err());
    }
}
