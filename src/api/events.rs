//! `/events`: the stored events (those routed to at least one destination), newest first by
//! default, filtered by tenant, id, destination, topic and time, with cursor pagination; and
//! one event by id. `data` is returned as the exact bytes that were published: views hold it
//! as raw JSON and are serialized straight to the response, never through a JSON value type
//! (which cannot hold every number or string a publisher may send).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tracing::error;

use super::auth::{Caller, check_caller, log_tenants};
use super::error::{ApiError, ApiResult};
use super::path::P;
use super::query::{PageOf, Params};
use super::{Ctx, CtxState};
use crate::store::{Event, EventFilter, PageRequest};

/// Outpost's `Event`; inside an attempt, its `EventFull` (or, without `data`, `EventSummary`),
/// which names the attempt's destination instead of every matched one.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    id: String,
    tenant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matched_destination_ids: Option<Vec<String>>,
    topic: String,
    time: DateTime<Utc>,
    eligible_for_retry: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<RawData>,
}

/// An event's `data` as stored, written out verbatim. Shared, so that the attempts of one event
/// on a page hold its bytes once.
#[derive(Debug, Clone)]
struct RawData(Arc<RawValue>);

impl Serialize for RawData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl EventView {
    /// With `data` or without it (the summary).
    pub fn of(e: Event, with_data: bool) -> ApiResult<EventView> {
        let data = if with_data {
            let raw = RawValue::from_string(e.data).map_err(|err| {
                error!(tenant = %e.tenant_id, event_id = %e.id, "stored event data is not JSON: {err}");
                ApiError::internal()
            })?;
            Some(RawData(Arc::from(raw)))
        } else {
            None
        };
        Ok(EventView {
            id: e.id,
            tenant_id: e.tenant_id,
            destination_id: None,
            matched_destination_ids: Some(e.destination_ids),
            topic: e.topic,
            time: e.time,
            eligible_for_retry: e.eligible_for_retry,
            metadata: e.metadata.filter(|m| !m.is_empty()),
            data,
        })
    }

    /// The event as an attempt shows it: for the attempt's destination (`data` is shared).
    pub fn for_attempt(&self, destination_id: &str) -> EventView {
        EventView {
            destination_id: Some(destination_id.to_owned()),
            matched_destination_ids: None,
            ..self.clone()
        }
    }
}

pub async fn list(
    State(ctx): CtxState,
    caller: Caller,
    params: Params,
) -> ApiResult<Json<PageOf<EventView>>> {
    check_caller(&ctx, &caller).await?;
    let tenant_ids = log_tenants(&caller, params.array("tenant_id")?)?;
    let (page, pagination) = params.log_page()?;
    let filter = EventFilter {
        tenant_ids,
        ids: params.array("id")?,
        destination_ids: params.array("destination_id")?,
        topics: params.array("topic")?,
        time: params.time_range("time")?,
    };
    let found = ctx.state.store.list_events(&filter, &page).await?;
    let models = found
        .models
        .into_iter()
        .map(|e| EventView::of(e, true))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(PageOf::new(
        models,
        pagination.with_cursors(found.next, found.prev),
    )))
}

pub async fn get(
    State(ctx): CtxState,
    caller: Caller,
    P(event_id): P<String>,
    params: Params,
) -> ApiResult<Json<EventView>> {
    check_caller(&ctx, &caller).await?;
    let tenant = caller.tenant_id().or(params.get("tenant_id"));
    let event = find(&ctx, tenant, &event_id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    Ok(Json(EventView::of(event, true)?))
}

/// An event by id in one tenant, or (admin without a tenant) the newest with that id in any.
pub async fn find(ctx: &Ctx, tenant_id: Option<&str>, event_id: &str) -> ApiResult<Option<Event>> {
    if let Some(tenant_id) = tenant_id {
        return Ok(ctx.state.store.get_event(tenant_id, event_id).await?);
    }
    let filter = EventFilter {
        ids: vec![event_id.to_owned()],
        ..EventFilter::default()
    };
    let page = PageRequest {
        limit: 1,
        ..PageRequest::default()
    };
    Ok(ctx
        .state
        .store
        .list_events(&filter, &page)
        .await?
        .models
        .pop())
}
