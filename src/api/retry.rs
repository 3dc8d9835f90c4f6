//! `POST /retry`: queue an event for a destination again, now, as a manual attempt. As Outpost:
//! the event must exist (a tenant may retry only its own), the destination must exist, be
//! enabled (400 otherwise) and still match the event's topic and filter (400 otherwise).
//! 409 while an attempt for that pair is in flight. Wakes the dispatcher.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::CtxState;
use super::auth::{Caller, check_caller};
use super::body::{Body, Fields};
use super::error::{ApiError, ApiResult};
use super::events;
use crate::event::{Filter, topics_match};
use crate::store::{Destination, Event, EventFilter, PageRequest};

pub async fn retry(
    State(ctx): CtxState,
    caller: Caller,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_caller(&ctx, &caller).await?;
    let object = body.object()?;
    let mut fields = Fields::new(&object);
    let event_id = fields.required_string("event_id").unwrap_or_default();
    let destination_id = fields.required_string("destination_id").unwrap_or_default();
    fields.finish()?;

    let store = &ctx.state.store;
    let event = match caller.tenant_id() {
        Some(own) => store.get_event(own, &event_id).await?,
        None => {
            // Event ids are unique per tenant only: prefer the one routed to this destination.
            let filter = EventFilter {
                ids: vec![event_id.clone()],
                destination_ids: vec![destination_id.clone()],
                ..EventFilter::default()
            };
            let page = PageRequest {
                limit: 1,
                ..PageRequest::default()
            };
            match store.list_events(&filter, &page).await?.models.pop() {
                Some(event) => Some(event),
                None => events::find(&ctx, None, &event_id).await?,
            }
        }
    }
    .ok_or_else(|| ApiError::not_found("event"))?;

    let destination = store
        .get_destination(&event.tenant_id, &destination_id)
        .await?
        .ok_or_else(|| ApiError::not_found("destination"))?;
    if destination.disabled_at.is_some() {
        return Err(disabled());
    }
    if !matches(&destination, &event) {
        return Err(ApiError::bad_request("destination does not match event"));
    }
    store
        .schedule_manual_retry(&event.tenant_id, &event.id, &destination.id)
        .await
        .map_err(|err| match err.kind() {
            crate::store::ErrorKind::Invalid => disabled(),
            _ => err.into(),
        })?;
    ctx.state.deliveries_ready.notify_one();
    Ok((StatusCode::ACCEPTED, Json(json!({"success": true}))))
}

fn disabled() -> ApiError {
    ApiError::bad_request("Destination is disabled")
        .with_data(json!({"error": "destination_disabled"}))
}

/// Whether routing would send `event` to `destination` now (topics and filter).
fn matches(destination: &Destination, event: &Event) -> bool {
    let topic = Some(event.topic.as_str()).filter(|t| !t.is_empty());
    if !topics_match(&destination.topics, topic) {
        return false;
    }
    let Some(filter) = &destination.filter else {
        return true;
    };
    let Ok(filter) = Filter::from_json(filter) else {
        return false;
    };
    if filter.is_empty() {
        return true;
    }
    let Ok(data) = RawValue::from_string(event.data.clone()) else {
        return false;
    };
    let as_event = crate::event::Event {
        id: Some(event.id.clone()),
        tenant_id: event.tenant_id.clone(),
        destination_id: event.destination_id.clone(),
        topic: topic.map(str::to_owned),
        eligible_for_retry: event.eligible_for_retry,
        time: Some(event.time),
        metadata: event.metadata.clone().unwrap_or_default(),
        data,
    };
    filter.matches(&as_event.filter_input())
}
