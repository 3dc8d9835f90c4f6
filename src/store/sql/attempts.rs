//! Attempt queries: one attempt by id, and the filtered, paginated attempt log (attempts are
//! written by `complete_attempt`).

use std::collections::HashSet;

use sqlx::{Encode, Executor, QueryBuilder, Type};

use super::filters::{TieBreak, push_in, push_page, push_time_range};
use super::rows::{self, RowExt as _, attempt_columns};
use super::timestamp::Timestamp;
use super::{Dialect, SqlStore};
use crate::store::error::{Result, db_error};
use crate::store::model::{Attempt, AttemptFilter};
use crate::store::page::{Cursor, Page, PagePlan};

impl<DB: Dialect> SqlStore<DB>
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
    /// `tenant_id: None` looks across tenants (admin).
    pub async fn get_attempt(&self, tenant_id: Option<&str>, id: &str) -> Result<Option<Attempt>> {
        let mut qb = QueryBuilder::<DB>::new(concat!(
            "SELECT ",
            attempt_columns!(),
            " FROM attempts WHERE id = "
        ));
        qb.push_bind(id);
        if let Some(tenant_id) = tenant_id {
            qb.push(" AND tenant_id = ").push_bind(tenant_id);
        }
        qb.build()
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error("get attempt"))?
            .map(|r| rows::attempt(&r))
            .transpose()
    }

    /// Attempts by time, then id. Two reads: the page's keys with the size of their
    /// `response_data` (and, when the budget says so, of each distinct event's `data`), then
    /// the attempts the page keeps within its byte budget.
    pub async fn list_attempts(
        &self,
        filter: &AttemptFilter,
        plan: &PagePlan,
    ) -> Result<Page<Attempt>> {
        let event_data = plan.budget.is_some_and(|b| b.event_data);
        let mut qb = QueryBuilder::<DB>::new(
            "SELECT id, tenant_id, event_id, \
             CAST(COALESCE(octet_length(response_data), 0) AS BIGINT) AS size",
        );
        if event_data {
            qb.push(
                ", CAST(COALESCE((SELECT octet_length(e.data) FROM events e \
                 WHERE e.tenant_id = attempts.tenant_id AND e.id = attempts.event_id), 0) \
                 AS BIGINT) AS event_size",
            );
        }
        qb.push(" FROM attempts WHERE 1 = 1");
        push_in(&mut qb, "tenant_id", &filter.tenant_ids);
        push_in(&mut qb, "event_id", &filter.event_ids);
        push_in(&mut qb, "destination_id", &filter.destination_ids);
        if let Some(status) = filter.status {
            qb.push(" AND status = ").push_bind(status.as_str());
        }
        if !filter.topics.is_empty() {
            qb.push(
                " AND EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = attempts.tenant_id \
                 AND e.id = attempts.event_id",
            );
            push_in(&mut qb, "e.topic", &filter.topics);
            qb.push(")");
        }
        if !filter.destination_kinds.is_empty() {
            qb.push(
                " AND EXISTS (SELECT 1 FROM destinations t \
                 WHERE t.tenant_id = attempts.tenant_id AND t.id = attempts.destination_id",
            );
            push_in(&mut qb, "t.type", &filter.destination_kinds);
            qb.push(")");
        }
        push_time_range(&mut qb, "time", &filter.time);
        push_page(&mut qb, "time", "id", TieBreak::Text, plan)?;
        let rows = qb
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(db_error("list attempts"))?;
        // Each distinct event's data counts once: the caller loads it once.
        let mut events_seen = HashSet::new();
        let mut sized: Vec<(String, u64)> = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut size = r.int("size")?.max(0) as u64;
            if event_data && events_seen.insert((r.text("tenant_id")?, r.text("event_id")?)) {
                size = size.saturating_add(r.int("event_size")?.max(0) as u64);
            }
            sized.push((r.text("id")?, size));
        }
        let keep = plan.keep(sized.iter().map(|(_, size)| *size));
        let more = sized.len() > keep;
        let ids: Vec<String> = sized.into_iter().take(keep).map(|(id, _)| id).collect();

        let mut found = Vec::with_capacity(keep);
        if keep > 0 {
            let mut qb = QueryBuilder::<DB>::new(concat!(
                "SELECT ",
                attempt_columns!(),
                " FROM attempts WHERE id IN ("
            ));
            let mut list = qb.separated(", ");
            for id in &ids {
                list.push_bind(id.as_str());
            }
            qb.push(")");
            found = qb
                .build()
                .fetch_all(&self.reader)
                .await
                .map_err(db_error("list attempts"))?
                .iter()
                .map(rows::attempt)
                .collect::<Result<Vec<_>>>()?;
            PagePlan::in_scan_order(&mut found, &ids, |a| &a.id);
        }
        Ok(plan.finish_kept(found, more, |a| Cursor {
            time: a.time,
            key: a.id.clone(),
        }))
    }
}
