//! `POST /publish`: an event through the same ingest path as NATS messages. The admin names the
//! tenant in the body; a tenant token's tenant is stamped over the body's `tenant_id` (the
//! splice, as for a NATS account), so a tenant can publish only to itself. 202 with
//! `{id, duplicate, destination_ids}`; 422 naming the field for an invalid event; 503 only
//! when the store cannot take it.

use std::borrow::Cow;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::auth::{Caller, check_caller};
use super::body::Body;
use super::error::{ApiError, ApiResult};
use super::{Ctx, CtxState};
use crate::event::{Event, EventError, SpliceError, new_event_id, splice_tenant};
use crate::ingest::IngestError;

pub async fn publish(
    State(ctx): CtxState,
    caller: Caller,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_caller(&ctx, &caller).await?;
    let raw: Cow<'_, [u8]> = match &caller {
        Caller::Admin => Cow::Borrowed(&body.0),
        Caller::Tenant(tenant_id) => {
            Cow::Owned(splice_tenant(&body.0, tenant_id).map_err(|err| match err {
                SpliceError::NotObject { .. } => ApiError::validation(vec![
                    "the request body must be a JSON object (an event)".to_owned(),
                ]),
                other => ApiError::invalid_json(other.to_string()),
            })?)
        }
    };
    match ctx.state.ingest.accept(&raw, new_event_id).await {
        Ok(accepted) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "id": accepted.id,
                "duplicate": accepted.duplicate,
                "destination_ids": accepted.destination_ids,
            })),
        )),
        Err(IngestError::Invalid(reason)) => Err(invalid_event(&ctx, &raw, reason)),
        Err(IngestError::Unavailable(reason)) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason))
        }
    }
}

/// Why ingest refused the event, as a 422 naming the field (re-reading the event: this is the
/// error path only).
fn invalid_event(ctx: &Ctx, raw: &[u8], reason: String) -> ApiError {
    match Event::parse(raw) {
        Err(err @ (EventError::NotUtf8 { .. } | EventError::NotJson { .. })) => {
            ApiError::invalid_json(err.to_string())
        }
        Err(err) => ApiError::validation(vec![field_message(&err)]),
        Ok(event) => match ctx.topics.validate_event_topic(event.topic.as_deref()) {
            Err(err) => ApiError::validation(vec![err.to_string()]),
            Ok(()) => ApiError::validation(vec![reason]),
        },
    }
}

/// `tenant_id is required` rather than `field "tenant_id" is required`: the field first, as
/// Outpost words its validation messages.
fn field_message(err: &EventError) -> String {
    match err {
        EventError::MissingField { field } => format!("{field} is required"),
        EventError::EmptyField { field } => format!("{field} must not be empty"),
        EventError::WrongType {
            field,
            expected,
            found,
        } => format!("{field} must be {expected}, found {found}"),
        EventError::InvalidValue { field, reason } => format!("{field}: {reason}"),
        EventError::DuplicateField { field } => format!("{field} appears more than once"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_with_the_field() {
        let err = Event::parse(br#"{"data":{}}"#).unwrap_err();
        assert_eq!(field_message(&err), "tenant_id is required");
        let err = Event::parse(br#"{"tenant_id":"t","data":[]}"#).unwrap_err();
        assert!(
            field_message(&err).starts_with("data must be"),
            "{}",
            field_message(&err)
        );
    }
}
