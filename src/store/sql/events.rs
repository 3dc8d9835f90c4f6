//! Event queries: the batch insert that ingest's group commit rests on (events plus one
//! delivery per matched destination, all in one transaction, duplicates skipped by the unique
//! (tenant_id, id) key; a delivery handed to a dispatcher goes in already leased to it),
//! lookups, and the filtered, paginated list. The insert's decisions (`candidates`,
//! `new_deliveries`, `outcomes`) are shared with SQLite's writer thread (`sqlite_writer`); the
//! sqlx insert below is Postgres'.

use std::collections::{HashMap, HashSet};

use sqlx::{Encode, Executor, QueryBuilder, Type};

use super::filters::{TieBreak, push_in, push_page, push_time_range};
use super::rows::{self, RowExt as _, event_columns};
use super::timestamp::Timestamp;
use super::{Dialect, SqlStore, in_shapes};
use crate::store::error::{Result, db_error};
use crate::store::model::{Event, EventFilter, InsertOutcome, NewEvent};
use crate::store::page::{Cursor, Page, PagePlan};

/// Rows per INSERT statement, well under both backends' bind-parameter limits
/// (SQLite 32766, Postgres 65535): events bind 10 values a row, deliveries 8.
const EVENTS_PER_STATEMENT: usize = 1000;
const DELIVERIES_PER_STATEMENT: usize = 2000;

/// The owner and expiry a handed-off delivery is inserted leased to.
pub(crate) type LeasedTo<'a> = (&'a str, Timestamp);

/// (tenant, event, destination) → id of each delivery inserted leased.
pub(crate) type LeasedIds = HashMap<(String, String, String), i64>;

/// The batch items to insert, as indexes sorted by (tenant, id): only the first occurrence of
/// a (tenant, id) in the batch is a candidate, and sorting makes concurrent batches take row
/// locks in one order (no deadlocks).
pub(crate) fn candidates(batch: &[NewEvent]) -> Vec<usize> {
    let mut seen = HashSet::new();
    let mut candidates: Vec<usize> = (0..batch.len())
        .filter(|&i| seen.insert((batch[i].tenant_id.as_str(), batch[i].id.as_str())))
        .collect();
    candidates.sort_by_key(|&i| (batch[i].tenant_id.as_str(), batch[i].id.as_str()));
    candidates
}

/// The deliveries of the events inserted (`inserted`: batch indexes), one per distinct
/// destination id: pending, or leased to the dispatcher the event was handed to.
pub(crate) fn new_deliveries<'a>(
    batch: &'a [NewEvent],
    inserted: &[usize],
) -> Vec<(usize, &'a str, Option<LeasedTo<'a>>)> {
    let mut deliveries = Vec::new();
    for &i in inserted {
        let e = &batch[i];
        let mut distinct = HashSet::new();
        for d in &e.destination_ids {
            if distinct.insert(d.as_str()) {
                let lease = e.lease.as_ref().filter(|l| l.destination_ids.contains(d));
                let lease = lease.map(|l| (l.owner.as_str(), Timestamp::new(l.expires_at)));
                deliveries.push((i, d.as_str(), lease));
            }
        }
    }
    deliveries
}

/// One outcome per batch item: `Inserted` with its leased deliveries' ids for the events
/// inserted, `Duplicate` for the rest.
pub(crate) fn outcomes(
    batch: &[NewEvent],
    inserted: &[usize],
    leased_ids: &LeasedIds,
) -> Vec<InsertOutcome> {
    let mut outcomes = vec![InsertOutcome::Duplicate; batch.len()];
    for &i in inserted {
        let e = &batch[i];
        let leased = e.lease.as_ref().map_or_else(Vec::new, |lease| {
            lease
                .destination_ids
                .iter()
                .filter_map(|d| {
                    let key = (e.tenant_id.clone(), e.id.clone(), d.clone());
                    leased_ids.get(&key).copied()
                })
                .collect()
        });
        outcomes[i] = InsertOutcome::Inserted { leased };
    }
    outcomes
}

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
    pub async fn insert_events(&self, batch: &[NewEvent]) -> Result<Vec<InsertOutcome>> {
        let op = "insert events";
        let candidates = candidates(batch);
        if candidates.is_empty() {
            return Ok(vec![InsertOutcome::Duplicate; batch.len()]);
        }
        let json = candidates
            .iter()
            .map(|&i| {
                let e = &batch[i];
                Ok((
                    rows::to_opt_json("metadata", e.metadata.as_ref())?,
                    rows::to_json("destination_ids", &e.destination_ids)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let position: HashMap<(&str, &str), usize> = candidates
            .iter()
            .map(|&i| ((batch[i].tenant_id.as_str(), batch[i].id.as_str()), i))
            .collect();
        let now = Timestamp::now();

        let mut tx = self
            .begin_write(DB::BEGIN_WRITE)
            .await
            .map_err(db_error(op))?;
        let mut inserted = Vec::new();
        for (chunk, json) in
            in_shapes(&candidates, EVENTS_PER_STATEMENT).zip(in_shapes(&json, EVENTS_PER_STATEMENT))
        {
            let mut qb = QueryBuilder::<DB>::new(
                "INSERT INTO events (tenant_id, id, destination_id, topic, time, metadata, data, \
                 eligible_for_retry, destination_ids, created_at) ",
            );
            qb.push_values(chunk.iter().zip(json), |mut row, (&i, (metadata, ids))| {
                let e = &batch[i];
                row.push_bind(e.tenant_id.as_str())
                    .push_bind(e.id.as_str())
                    .push_bind(e.destination_id.as_deref())
                    .push_bind(e.topic.as_str())
                    .push_bind(Timestamp::new(e.time))
                    .push_bind(metadata.as_deref())
                    .push_bind(e.data.as_str())
                    .push_bind(e.eligible_for_retry)
                    .push_bind(ids.as_str())
                    .push_bind(now);
            });
            qb.push(" ON CONFLICT (tenant_id, id) DO NOTHING RETURNING tenant_id, id");
            for row in qb.build().fetch_all(&mut *tx).await.map_err(db_error(op))? {
                let (tenant_id, id) = (row.text("tenant_id")?, row.text("id")?);
                if let Some(&i) = position.get(&(tenant_id.as_str(), id.as_str())) {
                    inserted.push(i);
                }
            }
        }

        let deliveries = new_deliveries(batch, &inserted);
        let mut leased_ids = LeasedIds::new();
        for chunk in in_shapes(&deliveries, DELIVERIES_PER_STATEMENT) {
            let mut qb = QueryBuilder::<DB>::new(
                "INSERT INTO deliveries (tenant_id, event_id, destination_id, status, attempts, \
                 next_attempt_at, manual, lease_owner, lease_expires_at, created_at, updated_at) ",
            );
            qb.push_values(chunk, |mut row, &(i, destination_id, lease)| {
                let e = &batch[i];
                row.push_bind(e.tenant_id.as_str())
                    .push_bind(e.id.as_str())
                    .push_bind(destination_id)
                    .push(if lease.is_some() {
                        "'delivering'"
                    } else {
                        "'pending'"
                    })
                    .push("0")
                    .push_bind(lease.map_or(now, |(_, expires)| expires))
                    .push("FALSE")
                    .push_bind(lease.map(|(owner, _)| owner))
                    .push_bind(lease.map(|(_, expires)| expires))
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.push(" ON CONFLICT (tenant_id, event_id, destination_id) DO NOTHING");
            if !chunk.iter().any(|(_, _, lease)| lease.is_some()) {
                qb.build().execute(&mut *tx).await.map_err(db_error(op))?;
                continue;
            }
            qb.push(" RETURNING id, tenant_id, event_id, destination_id, lease_owner");
            for row in qb.build().fetch_all(&mut *tx).await.map_err(db_error(op))? {
                if row.opt_text("lease_owner")?.is_some() {
                    let key = (
                        row.text("tenant_id")?,
                        row.text("event_id")?,
                        row.text("destination_id")?,
                    );
                    leased_ids.insert(key, row.int("id")?);
                }
            }
        }
        tx.commit().await.map_err(db_error(op))?;
        Ok(outcomes(batch, &inserted, &leased_ids))
    }

    pub async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<Event>> {
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error("get event"))?
        .map(|r| rows::event(&r, "").map(|(e, _)| e))
        .transpose()
    }

    /// Events by time, then insertion order. Two reads: the page's keys with the size of their
    /// `data` (no payload), then the events the page keeps within its byte budget.
    pub async fn list_events(&self, filter: &EventFilter, plan: &PagePlan) -> Result<Page<Event>> {
        let mut qb = QueryBuilder::<DB>::new(
            "SELECT seq, CAST(COALESCE(octet_length(data), 0) AS BIGINT) AS size FROM events \
             WHERE 1 = 1",
        );
        push_in(&mut qb, "tenant_id", &filter.tenant_ids);
        push_in(&mut qb, "id", &filter.ids);
        push_in(&mut qb, "topic", &filter.topics);
        if !filter.destination_ids.is_empty() {
            qb.push(
                " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.tenant_id = events.tenant_id \
                 AND d.event_id = events.id",
            );
            push_in(&mut qb, "d.destination_id", &filter.destination_ids);
            qb.push(")");
        }
        push_time_range(&mut qb, "time", &filter.time);
        push_page(&mut qb, "time", "seq", TieBreak::Int, plan)?;
        let sized = qb
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(db_error("list events"))?
            .iter()
            .map(|r| Ok((r.int("seq")?, r.int("size")?.max(0) as u64)))
            .collect::<Result<Vec<(i64, u64)>>>()?;
        let keep = plan.keep(sized.iter().map(|(_, size)| *size));
        let more = sized.len() > keep;
        let seqs: Vec<i64> = sized.into_iter().take(keep).map(|(seq, _)| seq).collect();

        let mut found = Vec::with_capacity(keep);
        if keep > 0 {
            let mut qb = QueryBuilder::<DB>::new(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE seq IN ("
            ));
            let mut list = qb.separated(", ");
            for seq in &seqs {
                list.push_bind(*seq);
            }
            qb.push(")");
            found = qb
                .build()
                .fetch_all(&self.reader)
                .await
                .map_err(db_error("list events"))?
                .iter()
                .map(|r| rows::event(r, ""))
                .collect::<Result<Vec<_>>>()?;
            PagePlan::in_scan_order(&mut found, &seqs, |(_, seq)| seq);
        }
        let page = plan.finish_kept(found, more, |(e, seq)| Cursor {
            time: e.time,
            key: seq.to_string(),
        });
        Ok(Page {
            models: page.models.into_iter().map(|(e, _)| e).collect(),
            next: page.next,
            prev: page.prev,
        })
    }
}
