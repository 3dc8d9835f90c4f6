//! Operational endpoints: `/healthz` (also `/api/v1/healthz`, without auth) in Outpost's shape,
//! `{status, timestamp, workers: {name: {status, …}}}`, and `/metrics` in Prometheus text (open,
//! or behind `metrics_token`).
//!
//! Health is 503 only when jetpost cannot work at all: the store does not answer. NATS
//! accounts are reported with counts per state, but a failed account leaves the service
//! healthy: it is one tenant's problem (bad credentials, a missing stream), the other accounts
//! keep flowing, and restarting jetpost would not fix it. Details are in the log and
//! `/api/v1/nats/accounts`; health names only the failing part.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tracing::warn;

use super::CtxState;
use super::auth::MetricsReader;
use crate::source::nats::AccountState;
use crate::store::BackendKind;

/// A store that takes longer than this to answer a ping counts as down.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn healthz(State(ctx): CtxState) -> (StatusCode, Json<Value>) {
    let store_ok = match tokio::time::timeout(PING_TIMEOUT, ctx.state.store.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            warn!("health check: the store does not answer: {err}");
            false
        }
        Err(_) => {
            warn!("health check: the store did not answer within {PING_TIMEOUT:?}");
            false
        }
    };
    let status = |ok: bool| if ok { "healthy" } else { "failed" };
    let mut workers = json!({
        "http-server": {"status": "healthy"},
        "store": {
            "status": status(store_ok),
            "backend": match ctx.state.store.backend() {
                BackendKind::Sqlite => "sqlite",
                BackendKind::Postgres => "postgres",
            },
            "retention": ctx.state.retention.to_json(),
        },
    });
    if let Some(board) = &ctx.state.accounts {
        let accounts = board.snapshot();
        let mut counts = json!({"total": accounts.len()});
        for state in AccountState::ALL {
            counts[state.as_str()] = json!(accounts.iter().filter(|a| a.state == state).count());
        }
        workers["nats"] = json!({"status": "healthy", "accounts": counts});
    }
    let dispatcher = ctx.state.dispatcher.snapshot();
    // Not claiming means the store is unreachable from the dispatcher: reported there.
    let dispatcher_ok = dispatcher.running;
    workers["dispatcher"] = json!({
        "status": status(dispatcher_ok && dispatcher.claiming),
        "in_flight": dispatcher.in_flight,
        "attempts_recorded": dispatcher.attempts_recorded,
    });
    let healthy = store_ok && dispatcher_ok;
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "status": status(healthy),
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            "workers": workers,
        })),
    )
}

pub async fn prometheus(State(ctx): CtxState, _reader: MetricsReader) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        ctx.state.metrics.render(),
    )
}
