//! The HTTP API: `/api/v1` (Outpost's contract plus our NATS account status), `/healthz` and
//! `/metrics`. Handlers translate HTTP to calls on the store and ingest; business rules live there.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;

use crate::config::Config;
use crate::ingest::Ingest;
use crate::source::nats::StatusBoard;
use crate::store::Store;

/// Everything the handlers reach.
#[derive(Clone)]
pub struct ApiState {
    pub config: Arc<Config>,
    pub store: Store,
    pub ingest: Arc<Ingest>,
    /// The NATS accounts' status; `None` when no NATS source runs.
    pub accounts: Option<StatusBoard>,
    pub metrics: PrometheusHandle,
    /// Wakes the delivery dispatcher (e.g. after a manual retry).
    pub deliveries_ready: Arc<Notify>,
}

/// The whole HTTP surface.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(state): State<ApiState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({"status": "healthy"})),
        ),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unhealthy", "store": err.to_string()})),
        ),
    }
}

async fn metrics(State(state): State<ApiState>) -> String {
    state.metrics.render()
}
