//! `/destination-types`: the destination types this server accepts (webhook only), with
//! Outpost's field descriptions for building a form.

use axum::Json;
use axum::extract::State;
use serde_json::Value;

use super::CtxState;
use super::auth::{Caller, check_caller};
use super::destinations::webhook;
use super::error::{ApiError, ApiResult};
use super::path::P;

pub async fn list(State(ctx): CtxState, caller: Caller) -> ApiResult<Json<Vec<Value>>> {
    check_caller(&ctx, &caller).await?;
    Ok(Json(vec![webhook::schema(
        ctx.state.config.destinations.webhook.mode,
    )]))
}

pub async fn get(
    State(ctx): CtxState,
    caller: Caller,
    P(kind): P<String>,
) -> ApiResult<Json<Value>> {
    check_caller(&ctx, &caller).await?;
    if kind == webhook::TYPE {
        Ok(Json(webhook::schema(
            ctx.state.config.destinations.webhook.mode,
        )))
    } else {
        Err(ApiError::not_found("destination type"))
    }
}
