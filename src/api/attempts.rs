//! `/attempts` and a destination's `/attempts`: delivery attempts, newest first by default,
//! filtered by tenant, event, destination, type, status, topic and time, with cursor
//! pagination; and one attempt by id. `include=event` adds the event summary, `event.data` the
//! whole event, `response_data` what the endpoint answered, `destination` the destination.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::auth::{Caller, check_caller, log_tenants, path_tenant};
use super::destinations::DestinationView;
use super::error::{ApiError, ApiResult};
use super::events::EventView;
use super::path::P;
use super::query::{PageOf, Params};
use super::{Ctx, CtxState};
use crate::store::{Attempt, AttemptFilter, AttemptStatus};

/// What `include` asked for.
#[derive(Debug, Clone, Copy, Default)]
struct Include {
    event: bool,
    event_data: bool,
    response_data: bool,
    destination: bool,
}

impl Include {
    fn of(params: &Params) -> ApiResult<Include> {
        let mut include = Include::default();
        for item in params.array("include")? {
            match item.as_str() {
                "event" => include.event = true,
                "event.data" => {
                    include.event = true;
                    include.event_data = true;
                }
                "response_data" => include.response_data = true,
                "destination" => include.destination = true,
                _ => {}
            }
        }
        Ok(include)
    }
}

/// Outpost's `Attempt`, serialized straight to the response (the event's `data` stays raw).
#[derive(Debug, Serialize)]
pub struct AttemptView {
    id: String,
    tenant_id: String,
    status: &'static str,
    time: DateTime<Utc>,
    #[serde(skip_serializing_if = "String::is_empty")]
    code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_data: Option<Value>,
    attempt_number: u32,
    manual: bool,
    /// jetpost delivers to webhooks only.
    destination_type: String,
    event_id: String,
    destination_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<EventView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<DestinationView>,
}

/// Turns attempts into views, fetching each distinct event and destination once (an event's
/// data is held once, however many attempts show it).
async fn views(ctx: &Ctx, attempts: Vec<Attempt>, include: Include) -> ApiResult<Vec<AttemptView>> {
    let store = &ctx.state.store;
    let now = Utc::now();
    let mut events = HashMap::new();
    let mut destinations = HashMap::new();
    let mut out = Vec::with_capacity(attempts.len());
    for a in attempts {
        let event = if include.event {
            let key = (a.tenant_id.clone(), a.event_id.clone());
            if !events.contains_key(&key) {
                let found = store.get_event(&a.tenant_id, &a.event_id).await?;
                let view = found
                    .map(|e| EventView::of(e, include.event_data))
                    .transpose()?;
                events.insert(key.clone(), view);
            }
            events[&key]
                .as_ref()
                .map(|e| e.for_attempt(&a.destination_id))
        } else {
            None
        };
        let destination = if include.destination {
            let key = (a.tenant_id.clone(), a.destination_id.clone());
            if !destinations.contains_key(&key) {
                let found = store
                    .get_destination(&a.tenant_id, &a.destination_id)
                    .await?;
                destinations.insert(key.clone(), found);
            }
            destinations[&key]
                .clone()
                .map(|d| DestinationView::of(d, now, &ctx.state.destinations))
        } else {
            None
        };
        out.push(AttemptView::of(
            a,
            include.response_data,
            event,
            destination,
        ));
    }
    Ok(out)
}

impl AttemptView {
    /// The view of an attempt with what was included of it.
    pub(crate) fn of(
        a: Attempt,
        with_response_data: bool,
        event: Option<EventView>,
        destination: Option<DestinationView>,
    ) -> AttemptView {
        AttemptView {
            status: a.status.as_str(),
            response_data: a.response_data.filter(|_| with_response_data),
            id: a.id,
            tenant_id: a.tenant_id,
            time: a.time,
            code: a.code,
            attempt_number: a.attempt_number,
            manual: a.manual,
            destination_type: a.destination_type,
            event_id: a.event_id,
            destination_id: a.destination_id,
            event,
            destination,
        }
    }
}

fn status(params: &Params) -> ApiResult<Option<AttemptStatus>> {
    match params.get("status") {
        None => Ok(None),
        Some("success") => Ok(Some(AttemptStatus::Success)),
        Some("failed") => Ok(Some(AttemptStatus::Failed)),
        Some(_) => Err(ApiError::query("status", "must be 'success' or 'failed'")),
    }
}

async fn listing(
    ctx: &Ctx,
    params: &Params,
    tenant_ids: Vec<String>,
    destination_ids: Vec<String>,
) -> ApiResult<Json<PageOf<AttemptView>>> {
    let (mut page, pagination) = params.log_page()?;
    let include = Include::of(params)?;
    // The events' data is loaded below for the attempts the page keeps: the page's byte
    // budget counts it, so the store ends the page before it would pass the budget.
    if let Some(budget) = &mut page.budget {
        budget.event_data = include.event_data;
    }
    let filter = AttemptFilter {
        tenant_ids,
        event_ids: params.array("event_id")?,
        destination_ids,
        destination_kinds: params.array("destination_type")?,
        status: status(params)?,
        topics: params.array("topic")?,
        time: params.time_range("time")?,
    };
    let found = ctx.state.store.list_attempts(&filter, &page).await?;
    let models = views(ctx, found.models, include).await?;
    Ok(Json(PageOf::new(
        models,
        pagination.with_cursors(found.next, found.prev),
    )))
}

pub async fn list(
    State(ctx): CtxState,
    caller: Caller,
    params: Params,
) -> ApiResult<Json<PageOf<AttemptView>>> {
    check_caller(&ctx, &caller).await?;
    let tenant_ids = log_tenants(&caller, params.array("tenant_id")?)?;
    let destination_ids = params.array("destination_id")?;
    listing(&ctx, &params, tenant_ids, destination_ids).await
}

pub async fn list_for_destination(
    State(ctx): CtxState,
    caller: Caller,
    P((tenant_id, destination_id)): P<(String, String)>,
    params: Params,
) -> ApiResult<Json<PageOf<AttemptView>>> {
    let tenant = path_tenant(&ctx, &caller, &tenant_id).await?;
    listing(&ctx, &params, vec![tenant.id], vec![destination_id]).await
}

async fn one(
    ctx: &Ctx,
    tenant_id: Option<&str>,
    attempt_id: &str,
    params: &Params,
) -> ApiResult<Json<AttemptView>> {
    let attempt = ctx
        .state
        .store
        .get_attempt(tenant_id, attempt_id)
        .await?
        .ok_or_else(|| ApiError::not_found("attempt"))?;
    one_view(ctx, attempt, params).await
}

async fn one_view(ctx: &Ctx, attempt: Attempt, params: &Params) -> ApiResult<Json<AttemptView>> {
    let view = views(ctx, vec![attempt], Include::of(params)?)
        .await?
        .pop()
        .ok_or_else(ApiError::internal)?;
    Ok(Json(view))
}

pub async fn get(
    State(ctx): CtxState,
    caller: Caller,
    P(attempt_id): P<String>,
    params: Params,
) -> ApiResult<Json<AttemptView>> {
    check_caller(&ctx, &caller).await?;
    let tenant = caller.tenant_id().or(params.get("tenant_id"));
    one(&ctx, tenant, &attempt_id, &params).await
}

pub async fn get_for_destination(
    State(ctx): CtxState,
    caller: Caller,
    P((tenant_id, destination_id, attempt_id)): P<(String, String, String)>,
    params: Params,
) -> ApiResult<Json<AttemptView>> {
    let tenant = path_tenant(&ctx, &caller, &tenant_id).await?;
    let attempt = ctx
        .state
        .store
        .get_attempt(Some(&tenant.id), &attempt_id)
        .await?
        .filter(|a| a.destination_id == destination_id)
        .ok_or_else(|| ApiError::not_found("attempt"))?;
    one_view(&ctx, attempt, &params).await
}
