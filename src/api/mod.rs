//! The HTTP API: `/api/v1` (Outpost's contract plus our NATS account status), `/healthz`,
//! `/metrics`, and the tenant portal's pages. Handlers translate HTTP to calls on the store and
//! ingest; business rules live there. One module per resource; `auth`, `body`, `query` and
//! `error` are shared by all.
//! See docs/api.md.

mod attempts;
mod auth;
mod body;
mod destination_types;
mod destinations;
mod error;
mod events;
mod filters;
#[doc(hidden)]
pub mod fuzz;
mod health;
mod metrics;
mod nats;
mod path;
mod publish;
mod query;
mod retry;
mod server;
mod tenants;
mod topics;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;

use crate::config::Config;
use crate::delivery::DispatcherHealth;
use crate::destination::Registry;
use crate::event::TopicRules;
use crate::ingest::Ingest;
use crate::retention::RetentionHealth;
use crate::source::nats::StatusBoard;
use crate::store::Store;

pub use self::auth::TenantTokens;
pub use self::error::ApiError;
pub use self::server::{ServeLimits, serve};

/// Everything the handlers reach.
#[derive(Clone)]
pub struct ApiState {
    pub config: Arc<Config>,
    pub store: Store,
    pub ingest: Arc<Ingest>,
    /// The NATS accounts' status; `None` when no NATS source runs.
    pub accounts: Option<StatusBoard>,
    /// This replica's id under exclusive NATS account ownership; `None` otherwise.
    pub replica_id: Option<String>,
    pub metrics: PrometheusHandle,
    /// Wakes the delivery dispatcher (e.g. after a manual retry).
    pub deliveries_ready: Arc<Notify>,
    /// The delivery dispatcher's health, for `/healthz`.
    pub dispatcher: DispatcherHealth,
    /// The retention setting and the last purge, for `/healthz`.
    pub retention: RetentionHealth,
    /// The destination types (validation, `/destination-types`) and the publishers the
    /// dispatcher opened (closed here when a destination is deleted).
    pub destinations: Registry,
}

/// `ApiState` plus what the router derives from the config once.
pub(crate) struct Ctx {
    state: ApiState,
    topics: TopicRules,
    /// `None` without `api_jwt_secret`: no tenant tokens.
    tokens: Option<TenantTokens>,
}

/// The whole HTTP surface.
pub fn router(state: ApiState) -> Router {
    let body_limit = state.config.max_request_body_bytes;
    let ctx = Arc::new(Ctx {
        topics: TopicRules::new(&state.config.topics, state.config.topics_allow_wildcards),
        tokens: TenantTokens::new(state.config.api_jwt_secret.expose()),
        state,
    });
    let destination = "/tenants/{tenant_id}/destinations/{destination_id}";
    let v1 = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/destination-types", get(destination_types::list))
        .route("/destination-types/{type}", get(destination_types::get))
        .route("/topics", get(topics::list))
        .route("/publish", post(publish::publish))
        .route("/retry", post(retry::retry))
        .route("/tenants", get(tenants::list))
        .route(
            "/tenants/{tenant_id}",
            put(tenants::upsert)
                .get(tenants::get)
                .delete(tenants::delete),
        )
        .route("/tenants/{tenant_id}/token", get(tenants::token))
        .route("/tenants/{tenant_id}/portal", get(tenants::portal))
        .route(
            "/tenants/{tenant_id}/destinations",
            get(destinations::list).post(destinations::create),
        )
        .route(
            destination,
            get(destinations::get)
                .patch(destinations::update)
                .delete(destinations::delete),
        )
        .route(&format!("{destination}/enable"), put(destinations::enable))
        .route(
            &format!("{destination}/disable"),
            put(destinations::disable),
        )
        .route(
            &format!("{destination}/attempts"),
            get(attempts::list_for_destination),
        )
        .route(
            &format!("{destination}/attempts/{{attempt_id}}"),
            get(attempts::get_for_destination),
        )
        .route("/events", get(events::list))
        .route("/events/{event_id}", get(events::get))
        .route("/filters/match", post(filters::check))
        .route("/attempts", get(attempts::list))
        .route("/attempts/{attempt_id}", get(attempts::get))
        .route("/metrics/events", get(metrics::events))
        .route("/metrics/attempts", get(metrics::attempts))
        .route("/nats/accounts", get(nats::accounts))
        .route("/nats/replicas", get(nats::replicas));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::prometheus))
        .merge(crate::portal::routes(
            &ctx.state.config.portal.frame_ancestors,
        ))
        .nest("/api/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panicked,
        ))
        .with_state(ctx)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found: no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

type CtxState = axum::extract::State<Arc<Ctx>>;
