//! Outpost-style cursor pagination: a page request (`dir`, `limit`, `next`/`prev`), the page it
//! yields, and the opaque cursor: URL-safe base64 of `<unix micros>:<tie-break key>`, the
//! position of the first or last item shown.

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
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            dir: SortDir::Desc,
            limit: DEFAULT_PAGE_LIMIT,
            next: None,
            prev: None,
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
}

impl PagePlan {
    pub fn new(req: &PageRequest) -> Result<PagePlan> {
        let limit = req.limit.clamp(1, MAX_PAGE_LIMIT);
        let desc = req.dir == SortDir::Desc;
        match (&req.next, &req.prev) {
            (Some(_), Some(_)) => Err(StoreError::Invalid(
                "pass either next or prev, not both".to_string(),
            )),
            (Some(next), None) => Ok(PagePlan {
                limit,
                scan_desc: desc,
                from: Some(Cursor::decode(next)?),
                backwards: false,
            }),
            (None, Some(prev)) => Ok(PagePlan {
                limit,
                scan_desc: !desc,
                from: Some(Cursor::decode(prev)?),
                backwards: true,
            }),
            (None, None) => Ok(PagePlan {
                limit,
                scan_desc: desc,
                from: None,
                backwards: false,
            }),
        }
    }

    /// Rows to fetch.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// Turns the fetched rows (in scan order) into a page with its cursors.
    pub fn finish<T>(&self, mut rows: Vec<T>, position: impl Fn(&T) -> Cursor) -> Page<T> {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
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
