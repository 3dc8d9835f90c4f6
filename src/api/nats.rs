//! `GET /api/v1/nats/accounts` (ours, admin only): every NATS account's state, last error and
//! counters, as the NATS source reports them; `[]` when no NATS source runs.

use axum::Json;
use axum::extract::State;

use super::CtxState;
use super::auth::Caller;
use super::error::ApiResult;
use crate::source::nats::AccountStatusView;

pub async fn accounts(
    State(ctx): CtxState,
    caller: Caller,
) -> ApiResult<Json<Vec<AccountStatusView>>> {
    caller.require_admin()?;
    Ok(Json(
        ctx.state
            .accounts
            .as_ref()
            .map(|board| board.snapshot())
            .unwrap_or_default(),
    ))
}
