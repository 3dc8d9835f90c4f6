//! `GET /api/v1/nats/accounts` (ours, admin only): every NATS account's state, last error and
//! counters, as the NATS source reports them; `[]` when no NATS source runs. `pending` is asked
//! from the server for each request (see `StatusBoard::refresh_pending`).

use axum::Json;
use axum::extract::State;

use super::CtxState;
use super::auth::Caller;
use super::error::ApiResult;
use crate::source::nats::AccountStatusView;

/// How long a request waits for the accounts' pending counts to be refreshed from the server.
const PENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn accounts(
    State(ctx): CtxState,
    caller: Caller,
) -> ApiResult<Json<Vec<AccountStatusView>>> {
    caller.require_admin()?;
    let Some(board) = ctx.state.accounts.as_ref() else {
        return Ok(Json(Vec::new()));
    };
    board.refresh_pending(PENDING_WAIT).await;
    Ok(Json(board.snapshot()))
}
