//! Outpost-style cursor pagination: a page request (`dir`, `limit`, `next`/`prev`), the page it
//! yields, and the opaque cursor: URL-safe base64 of `<unix micros>:<tie-break key>`, the
//! position of the first or last item shown. A page may also carry a byte budget for the
//! stored payloads it loads (event `data`, attempts' `response_data`): the page then ends early,
//! with a `next` cursor, so that no page holds more than the budget (plus one row).

use std::collections::HashMap;
use std::hash::Hash;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::error::{Result, StoreError};

pub const MAX_PAGE_LIMIT: u32 = 1000;
pub const DEFAULT_PAGE_LIMIT: u32 = 100;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortDir {
    Asc,
    #[default]
    Desc,
}

/// Which page to read. `next` continues after the last item of a page, `prev` goes back before
/// its first item; at most one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub dir: SortDir,
    /// 1..=1000; values outside are clamped.
    pub limit: u32,
    pub next: Option<String>,
    pub prev: Option<String>,
    /// Bounds the bytes of stored payloads the page loads; `None`: only `limit` bounds it.
    pub budget: Option<ByteBudget>,
}

/// The most bytes of stored payloads one page loads. Sizes are read first (without the
/// payloads), and the page ends before the row that would pass `max_bytes`; its first row is
/// always kept, so every row can be listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteBudget {
    pub max_bytes: u64,
    /// Attempt lists: also count each distinct event's `data`, which the caller will load.
    pub event_data: bool,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            dir: SortDir::Desc,
            limit: DEFAULT_PAGE_LIMIT,
            next: None,
            prev: None,
            budget: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub models: Vec<T>,
    /// Cursor for the following page, `None` at the end.
    pub next: Option<String>,
    /// Cursor for the preceding page, `None` on the first page.
    pub prev: Option<String>,
}

/// A position in a list ordered by (time, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub time: DateTime<Utc>,
    pub key: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.time.timestamp_micros(), self.key))
    }

    pub fn decode(s: &str) -> Result<Cursor> {
        let invalid = || {
            StoreError::Invalid(format!(
                "invalid pagination cursor {s:?}: pass the next/prev value of a previous page"
            ))
        };
        let raw = URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| invalid())?;
        let raw = String::from_utf8(raw).map_err(|_| invalid())?;
        let (micros, key) = raw.split_once(':').ok_or_else(invalid)?;
        let micros = micros.parse::<i64>().map_err(|_| invalid())?;
        let time = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
        Ok(Cursor {
            time,
            key: key.to_string(),
        })
    }
}

/// How to run one page query: rows strictly beyond `from` in scan order, `limit + 1` of them
/// (the extra row only tells whether more exist).
#[derive(Debug, Clone)]
pub(crate) struct PagePlan {
    pub limit: u32,
    /// Scan newest first.
    pub scan_desc: bool,
    pub from: Option<Cursor>,
    /// Reading backwards (`prev`): rows come in reverse and are flipped before returning.
    pub backwards: bool,
    pub budget: Option<ByteBudget>,
}

impl PagePlan {
    pub fn new(req: &PageRequest) -> Result<PagePlan> {
        let limit = req.limit.clamp(1, MAX_PAGE_LIMIT);
        let desc = req.dir == SortDir::Desc;
        let budget = req.budget;
        match (&req.next, &req.prev) {
            (Some(_), Some(_)) => Err(StoreError::Invalid(
                "pass either next or prev, not both".to_string(),
            )),
            (Some(next), None) => Ok(PagePlan {
                limit,
                scan_desc: desc,
                from: Some(Cursor::decode(next)?),
                backwards: false,
                budget,
            }),
            (None, Some(prev)) => Ok(PagePlan {
                limit,
                scan_desc: !desc,
                from: Some(Cursor::decode(prev)?),
                backwards: true,
                budget,
            }),
            (None, None) => Ok(PagePlan {
                limit,
                scan_desc: desc,
                from: None,
                backwards: false,
                budget,
            }),
        }
    }

    /// Rows to fetch.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// How many of the fetched rows (scan order, with their payload sizes) the page keeps: at
    /// most `limit`, and within the budget, if any (at least one).
    pub fn keep(&self, sizes: impl IntoIterator<Item = u64>) -> usize {
        let mut total = 0u64;
        let mut kept = 0;
        for size in sizes.into_iter().take(self.limit as usize) {
            total = total.saturating_add(size);
            if kept > 0 && self.budget.is_some_and(|b| total > b.max_bytes) {
                break;
            }
            kept += 1;
        }
        kept
    }

    /// Puts rows loaded by key (in whatever order the store returned them) back in the order of
    /// `keys`, the page's scan order.
    pub fn in_scan_order<K: Eq + Hash, T>(rows: &mut [T], keys: &[K], key_of: impl Fn(&T) -> &K) {
        let position: HashMap<&K, usize> = keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
        rows.sort_by_key(|r| position.get(key_of(r)).copied().unwrap_or(usize::MAX));
    }

    /// Turns the fetched rows (in scan order) into a page with its cursors.
    pub fn finish<T>(&self, mut rows: Vec<T>, position: impl Fn(&T) -> Cursor) -> Page<T> {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        self.finish_kept(rows, more, position)
    }

    /// `finish` for rows already cut to what the page keeps; `more` when rows were left out
    /// beyond them.
    pub fn finish_kept<T>(
        &self,
        mut rows: Vec<T>,
        more: bool,
        position: impl Fn(&T) -> Cursor,
    ) -> Page<T> {
        if self.backwards {
            rows.reverse();
        }
        let first = rows.first().map(|r| position(r).encode());
        let last = rows.last().map(|r| position(r).encode());
        let (next, prev) = match (self.from.is_some(), self.backwards) {
            // First page: nothing before it.
            (false, _) => (if more { last } else { None }, None),
            // Forward from a cursor: there is something before (where we came from).
            (true, false) => (if more { last } else { None }, first),
            // Backward from a cursor: there is something after (where we came from).
            (true, true) => (last, if more { first } else { None }),
        };
        Page {
            models: rows,
            next,
            prev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_ends_the_page_early_but_keeps_one_row() {
        let plan = |max_bytes: Option<u64>| {
            PagePlan::new(&PageRequest {
                limit: 3,
                budget: max_bytes.map(|max_bytes| ByteBudget {
                    max_bytes,
                    event_data: false,
                }),
                ..PageRequest::default()
            })
            .unwrap()
        };
        assert_eq!(plan(None).keep([10, 10, 10, 10]), 3);
        assert_eq!(plan(Some(25)).keep([10, 10, 10, 10]), 2);
        assert_eq!(plan(Some(30)).keep([10, 10, 10, 10]), 3);
        assert_eq!(plan(Some(5)).keep([10, 10]), 1);
        assert_eq!(plan(Some(5)).keep([]), 0);
        assert_eq!(plan(Some(u64::MAX - 1)).keep([u64::MAX - 1, 1]), 1);
    }

    #[test]
    fn cursor_round_trips_keys_with_colons() {
        let c = Cursor {
            time: DateTime::from_timestamp_micros(1_704_067_200_123_456).unwrap(),
            key: "a:b:c".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn garbage_cursor_is_invalid() {
        for s in [
            "",
            "!!!",
            &URL_SAFE_NO_PAD.encode("nocolon"),
            &URL_SAFE_NO_PAD.encode("x:1"),
        ] {
            let e = Cursor::decode(s).unwrap_err();
            assert_eq!(e.kind(), super::super::error::ErrorKind::Invalid, "{s}");
        }
    }

    #[test]
    fn next_and_prev_together_are_refused() {
        let req = PageRequest {
            next: Some("a".into()),
            prev: Some("b".into()),
            ..PageRequest::default()
        };
        assert!(PagePlan::new(&req).is_err());
    }

    #[test]
    fn prev_scans_the_other_way_and_flips() {
        let c = Cursor {
            time: DateTime::from_timestamp_micros(5).unwrap(),
            key: "k".into(),
        };
        let req = PageRequest {
            dir: SortDir::Desc,
            limit: 2,
            next: None,
            prev: Some(c.encode()),
            budget: None,
        };
        let plan = PagePlan::new(&req).unwrap();
        assert!(!plan.scan_desc && plan.backwards);
        let pos = |n: &i64| Cursor {
            time: DateTime::from_timestamp_micros(*n).unwrap(),
            key: n.to_string(),
        };
        let page = plan.finish(vec![6, 7, 8], pos);
        assert_eq!(page.models, vec![7, 6]);
        assert_eq!(page.prev, Some(pos(&7).encode()));
        assert_eq!(page.next, Some(pos(&6).encode()));
    }
}
