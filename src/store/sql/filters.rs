//! Dynamic SQL shared by the list queries: `IN` lists, time bounds, and a page's keyset
//! condition, order and limit. Values are always bound, never spliced into the text.

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::timestamp::Timestamp;
use crate::store::error::{Result, StoreError};
use crate::store::model::TimeRange;
use crate::store::page::PagePlan;

/// `AND column IN ($n, ...)`, nothing for an empty list (no filter).
pub(crate) fn push_in<DB>(qb: &mut QueryBuilder<DB>, column: &str, values: &[String])
where
    DB: Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    if values.is_empty() {
        return;
    }
    qb.push(" AND ").push(column).push(" IN (");
    let mut list = qb.separated(", ");
    for v in values {
        list.push_bind(v.as_str());
    }
    qb.push(")");
}

pub(crate) fn push_time_range<DB>(qb: &mut QueryBuilder<DB>, column: &str, range: &TimeRange)
where
    DB: Database,
    for<'q> Timestamp: Encode<'q, DB> + Type<DB>,
{
    let bounds = [
        (">=", range.gte),
        (">", range.gt),
        ("<=", range.lte),
        ("<", range.lt),
    ];
    for (op, bound) in bounds {
        if let Some(t) = bound {
            qb.push(format_args!(" AND {column} {op} "))
                .push_bind(Timestamp::new(t));
        }
    }
}

/// How a list breaks ties between rows with the same time.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TieBreak {
    /// An integer column (events' `seq`).
    Int,
    /// A text column (an id).
    Text,
}

/// Rows strictly beyond the plan's cursor, ordered by (time, key) in scan direction, limited.
pub(crate) fn push_page<DB>(
    qb: &mut QueryBuilder<DB>,
    time_column: &str,
    key_column: &str,
    tie_break: TieBreak,
    plan: &PagePlan,
) -> Result<()>
where
    DB: Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Timestamp: Encode<'q, DB> + Type<DB>,
{
    let (op, dir) = if plan.scan_desc {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some(from) = &plan.from {
        let at = Timestamp::new(from.time);
        qb.push(format_args!(" AND ({time_column} {op} "))
            .push_bind(at)
            .push(format_args!(" OR ({time_column} = "))
            .push_bind(at)
            .push(format_args!(" AND {key_column} {op} "));
        match tie_break {
            TieBreak::Int => {
                let key = from.key.parse::<i64>().map_err(|_| {
                    StoreError::Invalid(
                        "invalid pagination cursor: pass the next/prev value of a previous page"
                            .to_string(),
                    )
                })?;
                qb.push_bind(key);
            }
            TieBreak::Text => {
                qb.push_bind(from.key.as_str());
            }
        }
        qb.push("))");
    }
    qb.push(format_args!(
        " ORDER BY {time_column} {dir}, {key_column} {dir} LIMIT "
    ))
    .push_bind(plan.fetch());
    Ok(())
}
