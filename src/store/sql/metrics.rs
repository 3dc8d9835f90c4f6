//! Aggregate queries for `/metrics/events` and `/metrics/attempts`: counts grouped by a time
//! bucket and the requested dimensions, computed by the database. A bucket comes back as an
//! integer index (Unix seconds or months since 1970, divided by the bucket size); the
//! facade's caller turns it into a time. Values are bound, never spliced; only integers
//! derived from a validated `Granularity` are written into the SQL text.

use sqlx::{Encode, Executor, Postgres, QueryBuilder, Sqlite, Type};

use super::filters::push_in;
use super::rows::RowExt;
use super::timestamp::Timestamp;
use super::{Dialect, SqlStore};
use crate::store::aggregate::{
    Aggregates, AttemptAggregateQuery, AttemptDimension, AttemptGroup, EventAggregateQuery,
    EventDimension, EventGroup, Granularity,
};
use crate::store::error::{Result, StoreError, db_error};

/// How each backend reads a stored time as numbers.
pub(crate) trait TimeParts {
    /// Whole Unix seconds of `col`.
    fn epoch_seconds(col: &str) -> String;
    /// Months since January 1970 of `col` (UTC).
    fn month_index(col: &str) -> String;
}

impl TimeParts for Sqlite {
    fn epoch_seconds(col: &str) -> String {
        // Times are stored as fixed-width UTC text, which SQLite's date functions read.
        format!("CAST(strftime('%s', {col}) AS INTEGER)")
    }

    fn month_index(col: &str) -> String {
        format!(
            "((CAST(strftime('%Y', {col}) AS INTEGER) - 1970) * 12 \
             + CAST(strftime('%m', {col}) AS INTEGER) - 1)"
        )
    }
}

impl TimeParts for Postgres {
    fn epoch_seconds(col: &str) -> String {
        format!("CAST(FLOOR(EXTRACT(EPOCH FROM {col})) AS BIGINT)")
    }

    fn month_index(col: &str) -> String {
        format!(
            "((CAST(EXTRACT(YEAR FROM {col} AT TIME ZONE 'UTC') AS BIGINT) - 1970) * 12 \
             + CAST(EXTRACT(MONTH FROM {col} AT TIME ZONE 'UTC') AS BIGINT) - 1)"
        )
    }
}

/// The bucket index of `col`, matching `Granularity::bucket_of` for times after 1970.
fn bucket_expr<DB: TimeParts>(col: &str, g: &Granularity) -> String {
    match g.fixed_seconds() {
        Some(step) => format!(
            "(({} - {}) / {step})",
            DB::epoch_seconds(col),
            g.anchor_seconds()
        ),
        None => format!("({} / {})", DB::month_index(col), g.value.max(1)),
    }
}

/// The grouped columns of a query, in select order (`g_0`, `g_1`, ...).
struct Groups {
    columns: Vec<String>,
}

impl Groups {
    fn new() -> Groups {
        Groups {
            columns: Vec::new(),
        }
    }

    /// Adds a grouped expression and returns its alias.
    fn add(&mut self, expr: String) -> String {
        let alias = format!("g_{}", self.columns.len());
        self.columns.push(format!("{expr} AS {alias}"));
        alias
    }

    fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("{c}, "))
            .collect::<String>()
    }

    /// `GROUP BY 1, 2 ORDER BY 1, 2` by position (both backends accept ordinals), or nothing.
    fn group_and_order(&self) -> String {
        if self.columns.is_empty() {
            return String::new();
        }
        let ordinals: Vec<String> = (1..=self.columns.len()).map(|i| i.to_string()).collect();
        let list = ordinals.join(", ");
        format!(" GROUP BY {list} ORDER BY {list}")
    }
}

fn count(row: &impl RowExt, col: &str) -> Result<u64> {
    Ok(row.int(col)?.max(0) as u64)
}

impl<DB: Dialect + TimeParts> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Timestamp: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Timestamp>: Encode<'q, DB> + Type<DB>,
{
    /// Events with `time` in the range, counted per group. Grouping by destination counts an
    /// event once per destination it was routed to (its deliveries).
    pub async fn aggregate_events(
        &self,
        q: &EventAggregateQuery,
    ) -> Result<Aggregates<EventGroup>> {
        let by_destination = q.dimensions.contains(&EventDimension::DestinationId);
        let mut groups = Groups::new();
        let mut aliases: Vec<(EventDimension, String)> = Vec::new();
        for dim in &q.dimensions {
            let expr = match dim {
                EventDimension::TenantId => "e.tenant_id",
                EventDimension::Topic => "e.topic",
                EventDimension::DestinationId => "d.destination_id",
            };
            aliases.push((*dim, groups.add(expr.to_string())));
        }
        let bucket = q
            .granularity
            .as_ref()
            .map(|g| groups.add(bucket_expr::<DB>("e.time", g)));

        let mut qb = QueryBuilder::<DB>::new("SELECT ");
        qb.push(groups.select_list());
        qb.push("COUNT(*) AS n FROM events e");
        if by_destination {
            qb.push(" JOIN deliveries d ON d.tenant_id = e.tenant_id AND d.event_id = e.id");
        }
        qb.push(" WHERE e.time >= ")
            .push_bind(Timestamp::new(q.start))
            .push(" AND e.time < ")
            .push_bind(Timestamp::new(q.end));
        push_in(&mut qb, "e.tenant_id", &q.filter.tenant_ids);
        push_in(&mut qb, "e.topic", &q.filter.topics);
        if !q.filter.destination_ids.is_empty() {
            if by_destination {
                push_in(&mut qb, "d.destination_id", &q.filter.destination_ids);
            } else {
                qb.push(
                    " AND EXISTS (SELECT 1 FROM deliveries f WHERE f.tenant_id = e.tenant_id \
                     AND f.event_id = e.id",
                );
                push_in(&mut qb, "f.destination_id", &q.filter.destination_ids);
                qb.push(")");
            }
        }
        qb.push(groups.group_and_order());
        qb.push(" LIMIT ").push_bind(i64::from(q.row_limit) + 1);

        let rows = qb
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(db_error("aggregate events"))?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut g = EventGroup {
                bucket: bucket.as_deref().map(|a| row.int(a)).transpose()?,
                count: count(row, "n")?,
                ..EventGroup::default()
            };
            for (dim, alias) in &aliases {
                let value = row.opt_text(alias)?;
                match dim {
                    EventDimension::TenantId => g.tenant_id = value,
                    EventDimension::Topic => g.topic = value,
                    EventDimension::DestinationId => g.destination_id = value,
                }
            }
            if g.count > 0 {
                found.push(g);
            }
        }
        Ok(limit(found, q.row_limit))
    }

    /// Attempts with `time` in the range, counted per group.
    pub async fn aggregate_attempts(
        &self,
        q: &AttemptAggregateQuery,
    ) -> Result<Aggregates<AttemptGroup>> {
        let needs_event =
            q.dimensions.contains(&AttemptDimension::Topic) || !q.filter.topics.is_empty();
        let needs_destination = q.dimensions.contains(&AttemptDimension::DestinationType)
            || !q.filter.destination_kinds.is_empty();
        let mut groups = Groups::new();
        let mut aliases: Vec<(AttemptDimension, String)> = Vec::new();
        for dim in &q.dimensions {
            let expr = match dim {
                AttemptDimension::TenantId => "a.tenant_id",
                AttemptDimension::DestinationId => "a.destination_id",
                AttemptDimension::DestinationType => "t.type",
                AttemptDimension::Topic => "e.topic",
                AttemptDimension::Status => "a.status",
                AttemptDimension::Code => "a.code",
                AttemptDimension::Manual => "a.manual",
                AttemptDimension::AttemptNumber => "a.attempt_number",
            };
            aliases.push((*dim, groups.add(expr.to_string())));
        }
        let bucket = q
            .granularity
            .as_ref()
            .map(|g| groups.add(bucket_expr::<DB>("a.time", g)));

        let mut qb = QueryBuilder::<DB>::new("SELECT ");
        qb.push(groups.select_list());
        qb.push(
            "COUNT(*) AS n, \
             CAST(SUM(CASE WHEN a.status = 'success' THEN 1 ELSE 0 END) AS BIGINT) AS n_success, \
             CAST(SUM(CASE WHEN a.status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS n_failed, \
             CAST(SUM(CASE WHEN a.attempt_number = 1 AND NOT a.manual THEN 1 ELSE 0 END) \
                  AS BIGINT) AS n_first, \
             CAST(SUM(CASE WHEN a.attempt_number > 1 THEN 1 ELSE 0 END) AS BIGINT) AS n_retry, \
             CAST(SUM(CASE WHEN a.manual THEN 1 ELSE 0 END) AS BIGINT) AS n_manual, \
             CAST(SUM(a.attempt_number) AS BIGINT) AS attempt_number_sum \
             FROM attempts a",
        );
        if needs_event {
            qb.push(" LEFT JOIN events e ON e.tenant_id = a.tenant_id AND e.id = a.event_id");
        }
        if needs_destination {
            qb.push(
                " LEFT JOIN destinations t ON t.tenant_id = a.tenant_id AND t.id = a.destination_id",
            );
        }
        qb.push(" WHERE a.time >= ")
            .push_bind(Timestamp::new(q.start))
            .push(" AND a.time < ")
            .push_bind(Timestamp::new(q.end));
        let f = &q.filter;
        push_in(&mut qb, "a.tenant_id", &f.tenant_ids);
        push_in(&mut qb, "a.destination_id", &f.destination_ids);
        push_in(&mut qb, "t.type", &f.destination_kinds);
        push_in(&mut qb, "e.topic", &f.topics);
        push_in(&mut qb, "a.status", &f.statuses);
        push_in(&mut qb, "a.code", &f.codes);
        if let Some(manual) = f.manual {
            qb.push(" AND a.manual = ").push_bind(manual);
        }
        if !f.attempt_numbers.is_empty() {
            qb.push(" AND a.attempt_number IN (");
            let mut list = qb.separated(", ");
            for n in &f.attempt_numbers {
                list.push_bind(i64::from(*n));
            }
            qb.push(")");
        }
        qb.push(groups.group_and_order());
        qb.push(" LIMIT ").push_bind(i64::from(q.row_limit) + 1);

        let rows = qb
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(db_error("aggregate attempts"))?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut g = AttemptGroup {
                bucket: bucket.as_deref().map(|a| row.int(a)).transpose()?,
                count: count(row, "n")?,
                ..AttemptGroup::default()
            };
            if g.count == 0 {
                continue;
            }
            g.successful = count(row, "n_success")?;
            g.failed = count(row, "n_failed")?;
            g.first_attempts = count(row, "n_first")?;
            g.retries = count(row, "n_retry")?;
            g.manual_retries = count(row, "n_manual")?;
            g.attempt_number_sum = count(row, "attempt_number_sum")?;
            for (dim, alias) in &aliases {
                match dim {
                    AttemptDimension::TenantId => g.tenant_id = row.opt_text(alias)?,
                    AttemptDimension::DestinationId => g.destination_id = row.opt_text(alias)?,
                    AttemptDimension::DestinationType => {
                        g.destination_type = row.opt_text(alias)?
                    }
                    AttemptDimension::Topic => g.topic = row.opt_text(alias)?,
                    AttemptDimension::Status => g.status = row.opt_text(alias)?,
                    AttemptDimension::Code => g.code = row.opt_text(alias)?,
                    AttemptDimension::Manual => g.manual = Some(row.flag(alias)?),
                    AttemptDimension::AttemptNumber => {
                        let n = row.int(alias)?;
                        g.attempt_number =
                            Some(u32::try_from(n).map_err(|_| {
                                StoreError::corrupt("attempt number", n.to_string())
                            })?);
                    }
                }
            }
            found.push(g);
        }
        Ok(limit(found, q.row_limit))
    }
}

fn limit<G>(mut groups: Vec<G>, row_limit: u32) -> Aggregates<G> {
    let truncated = groups.len() > row_limit as usize;
    groups.truncate(row_limit as usize);
    Aggregates { groups, truncated }
}
