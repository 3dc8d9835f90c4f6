//! Ours, admin only: `GET /api/v1/nats/accounts`, every NATS account's state, last error,
//! counters and (with exclusive ownership) owner replica, as the NATS source reports them; and
//! `GET /api/v1/nats/replicas`, the replicas sharing the accounts. Both are `[]` when no NATS
//! source runs; replicas also without exclusive ownership. `pending` is asked from the server
//! for each request (see `StatusBoard::refresh_pending`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

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
    let mut accounts = board.snapshot();
    if ctx.state.replica_id.is_some() {
        // The owners as the store has them, so every replica shows the same.
        let mut owners: HashMap<String, String> = ctx
            .state
            .store
            .account_leases()
            .await?
            .into_iter()
            .filter(|lease| lease.live)
            .map(|lease| (lease.account, lease.replica_id))
            .collect();
        for account in &mut accounts {
            account.owner = owners.remove(&account.name);
        }
    }
    Ok(Json(accounts))
}

/// One row of `GET /api/v1/nats/replicas`.
#[derive(Debug, Serialize)]
pub struct ReplicaView {
    pub id: String,
    /// The replica answering this request.
    pub this: bool,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Counted among the replicas sharing the accounts: its lease runs and it is not leaving.
    pub live: bool,
    /// Handing its accounts over before it exits.
    pub leaving: bool,
    /// Account leases it holds that run.
    pub accounts_owned: u64,
}

pub async fn replicas(State(ctx): CtxState, caller: Caller) -> ApiResult<Json<Vec<ReplicaView>>> {
    caller.require_admin()?;
    let Some(me) = ctx.state.replica_id.as_deref() else {
        return Ok(Json(Vec::new()));
    };
    let replicas = ctx.state.store.replica_leases().await?;
    Ok(Json(
        replicas
            .into_iter()
            .map(|r| ReplicaView {
                this: r.id == me,
                id: r.id,
                started_at: r.started_at,
                heartbeat_at: r.heartbeat_at,
                expires_at: r.expires_at,
                live: r.live && !r.leaving,
                leaving: r.leaving,
                accounts_owned: r.accounts,
            })
            .collect(),
    ))
}
