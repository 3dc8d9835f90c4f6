//! `/destination-types`: the destination types this server accepts, with Outpost's field
//! descriptions for building a form (each type's own `metadata`).

use axum::Json;
use axum::extract::State;
use serde_json::Value;

use super::CtxState;
use super::auth::{Caller, check_caller};
use super::error::{ApiError, ApiResult};
use super::path::P;

pub async fn list(State(ctx): CtxState, caller: Caller) -> ApiResult<Json<Vec<Value>>> {
    check_caller(&ctx, &caller).await?;
    Ok(Json(
        ctx.state
            .destinations
            .types()
            .map(|t| t.metadata())
            .collect(),
    ))
}

pub async fn get(
    State(ctx): CtxState,
    caller: Caller,
    P(kind): P<String>,
) -> ApiResult<Json<Value>> {
    check_caller(&ctx, &caller).await?;
    match ctx.state.destinations.get(&kind) {
        Some(t) => Ok(Json(t.metadata())),
        None => Err(ApiError::not_found("destination type")),
    }
}
