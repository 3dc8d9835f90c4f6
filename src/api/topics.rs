//! `/topics`: the configured topics (`topics` / `TOPICS`); empty when any topic is allowed.

use axum::Json;
use axum::extract::State;

use super::CtxState;
use super::auth::{Caller, check_caller};
use super::error::ApiResult;

pub async fn list(State(ctx): CtxState, caller: Caller) -> ApiResult<Json<Vec<String>>> {
    check_caller(&ctx, &caller).await?;
    Ok(Json(ctx.topics.allowed().to_vec()))
}
