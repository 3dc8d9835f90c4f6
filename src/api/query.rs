//! Query strings as Outpost reads them: arrays in its three spellings (`a=x&a=y`, `a[]=x`,
//! `a[0]=x&a[1]=y`), time filters (`time[gte]=…`, RFC 3339 or `YYYY-MM-DD`), and cursor
//! pagination (`limit`, `dir`, `order_by`, `next`/`prev`) with the `pagination` object that
//! list responses carry.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use crate::store::{PageRequest, SortDir, TimeRange};

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
    /// win over repeated plain keys, as in Outpost. Empty values are dropped.
    pub fn array(&self, name: &str) -> Vec<String> {
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
        let chosen: Vec<&str> = if !indexed.is_empty() {
            indexed.sort_by_key(|(i, _)| *i);
            indexed.into_iter().map(|(_, v)| v).collect()
        } else if !bracketed.is_empty() {
            bracketed
        } else {
            plain
        };
        chosen.into_iter().map(str::to_owned).collect()
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

    /// A page of a time-ordered log (events, attempts): `limit` defaults to 100, values past
    /// 1000 are capped and unreadable ones ignored (as Outpost); `order_by` must be `time`.
    pub fn log_page(&self) -> ApiResult<(PageRequest, Pagination)> {
        if let Some(order_by) = self.get("order_by")
            && order_by != "time"
        {
            return Err(ApiError::query("order_by", "must be one of: [time]"));
        }
        let limit = self
            .get("limit")
            .and_then(|l| l.parse::<i64>().ok())
            .filter(|l| *l > 0)
            .map_or(100, |l| l.min(1000) as u32);
        self.page("time", limit)
    }

    /// A page of tenants: `limit` 1..=100 (400 otherwise), default 20.
    pub fn tenant_page(&self) -> ApiResult<(PageRequest, Pagination)> {
        let limit = match self.get("limit") {
            None => 20,
            Some(l) => match l.parse::<i64>() {
                Ok(l) if (1..=100).contains(&l) => l as u32,
                Ok(_) => {
                    return Err(ApiError::bad_request(
                        "invalid limit: must be between 1 and 100",
                    ));
                }
                Err(_) => {
                    return Err(ApiError::bad_request("invalid limit: must be an integer"));
                }
            },
        };
        self.page("created_at", limit)
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
        assert_eq!(
            params(&[("topic", "a"), ("topic", "b")]).array("topic"),
            vec!["a", "b"]
        );
        assert_eq!(
            params(&[("topic[]", "a"), ("topic[]", "b")]).array("topic"),
            vec!["a", "b"]
        );
        assert_eq!(
            params(&[("topic[1]", "b"), ("topic[0]", "a")]).array("topic"),
            vec!["a", "b"]
        );
        assert_eq!(
            params(&[("filters[topic][0]", "x")]).array("filters[topic]"),
            vec!["x"]
        );
        assert!(params(&[("topics", "a")]).array("topic").is_empty());
        assert!(params(&[("topic", "")]).array("topic").is_empty());
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
        let (page, _) = params(&[("limit", "5000"), ("dir", "asc")])
            .log_page()
            .unwrap();
        assert_eq!((page.limit, page.dir), (1000, SortDir::Asc));
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
