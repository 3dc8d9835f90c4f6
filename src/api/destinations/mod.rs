//! `/tenants/{tenant_id}/destinations`: list (filtered by `type` and `topics`), create, get,
//! PATCH, delete, enable, disable. Every write drops the tenant's routing cache entry so the
//! next event is routed with it. Responses are Outpost's destination shape, `disabled_at: null`
//! and `credentials` included.

pub(super) mod input;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::auth::{Caller, path_tenant};
use super::body::{Body, Patch, merge_map};
use super::error::{ApiError, ApiResult};
use super::path::P;
use super::query::Params;
use super::{Ctx, CtxState};
use crate::destination::{CredentialsWrite, DestinationType, Registry, Writer, masked};
use crate::event::topics_match;
use crate::store::{
    Credentials, Destination, DestinationTimes, ErrorKind, Metadata, NewDestination,
};

/// Outpost's destination (`DestinationWebhook`).
#[derive(Debug, Serialize)]
pub struct DestinationView {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    topics: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<Value>,
    config: BTreeMap<String, String>,
    credentials: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    disabled_at: Option<DateTime<Utc>>,
    /// Outpost's read-only display of where events go (a webhook's URL).
    target: String,
}

impl DestinationView {
    /// The view of `d`, its credentials and target shown as its type shows them.
    pub fn of(d: Destination, now: DateTime<Utc>, types: &Registry) -> DestinationView {
        let kind = types.get(&d.kind);
        DestinationView {
            target: kind.map(|t| t.target(&d.config)).unwrap_or_default(),
            credentials: match kind {
                Some(t) => t.displayed_credentials(&d.credentials.0, now),
                None => masked(&d.credentials.0),
            },
            filter: d
                .filter
                .filter(|f| f.as_object().is_none_or(|m| !m.is_empty())),
            delivery_metadata: d.delivery_metadata.filter(|m| !m.is_empty()),
            metadata: d.metadata.filter(|m| !m.is_empty()),
            id: d.id,
            tenant_id: d.tenant_id,
            kind: d.kind,
            topics: d.topics,
            config: d.config,
            created_at: d.created_at,
            updated_at: d.updated_at,
            disabled_at: d.disabled_at,
        }
    }
}

fn view(ctx: &Ctx, d: Destination) -> Json<DestinationView> {
    Json(DestinationView::of(d, Utc::now(), &ctx.state.destinations))
}

/// Outpost's list filters: any of the `type`s; every one of the `topics` reachable (a
/// destination on `"*"` matches any; `topics=*` alone keeps only those).
fn listed(d: &Destination, kinds: &[String], topics: &[String]) -> bool {
    if !kinds.is_empty() && !kinds.contains(&d.kind) {
        return false;
    }
    if topics.is_empty() || d.topics == ["*"] {
        return true;
    }
    if topics == ["*"] {
        return false;
    }
    topics.iter().all(|t| topics_match(&d.topics, Some(t)))
}

pub async fn list(
    State(ctx): CtxState,
    caller: Caller,
    P(tenant_id): P<String>,
    params: Params,
) -> ApiResult<Json<Vec<DestinationView>>> {
    let tenant = path_tenant(&ctx, &caller, &tenant_id).await?;
    let kinds = params.array("type")?;
    let topics = params.array("topics")?;
    let now = Utc::now();
    let destinations = ctx
        .state
        .store
        .list_destinations(&tenant.id, &Default::default())
        .await?;
    Ok(Json(
        destinations
            .into_iter()
            .filter(|d| listed(d, &kinds, &topics))
            .map(|d| DestinationView::of(d, now, &ctx.state.destinations))
            .collect(),
    ))
}

fn writer(caller: &Caller) -> Writer {
    if caller.is_admin() {
        Writer::Admin
    } else {
        Writer::Tenant
    }
}

/// The type of `kind`; request parsing has refused unknown types already, so this only fails
/// for a stored destination of a type this server no longer has.
fn destination_type<'a>(ctx: &'a Ctx, kind: &str) -> ApiResult<&'a dyn DestinationType> {
    ctx.state.destinations.get(kind).ok_or_else(|| {
        ApiError::validation(vec![format!(
            "type {kind:?} is not supported: jetpost delivers to {} destinations only",
            ctx.state.destinations.names()
        )])
    })
}

pub async fn create(
    State(ctx): CtxState,
    caller: Caller,
    P(tenant_id): P<String>,
    body: Body,
) -> ApiResult<(StatusCode, Json<DestinationView>)> {
    let tenant = path_tenant(&ctx, &caller, &tenant_id).await?;
    let now = Utc::now();
    let req = input::create(&body.object()?, &ctx.topics, now)?;
    if !caller.is_admin() && (req.created_at.is_some() || req.updated_at.is_some()) {
        return Err(ApiError::forbidden(
            "created_at and updated_at can only be set with API key authentication",
        ));
    }
    let kind = destination_type(&ctx, &req.kind)?;
    let mut problems = kind.validate_config(&req.config);
    problems.extend(kind.validate_credentials(&req.credentials));
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let credentials = kind
        .prepare_credentials(CredentialsWrite {
            merged: &req.credentials,
            sent: &req.credentials,
            original: None,
            writer: writer(&caller),
            now,
        })
        .map_err(ApiError::validation)?;
    let config = kind
        .resolve_config(req.config, &credentials, None)
        .await
        .map_err(ApiError::validation)?;

    let max = ctx.state.config.max_destinations_per_tenant;
    if ctx.state.store.count_destinations(&tenant.id).await? >= u64::from(max) {
        return Err(ApiError::bad_request(format!(
            "maximum number of destinations per tenant reached ({max}, \
             max_destinations_per_tenant); delete one first"
        )));
    }
    let new = NewDestination {
        tenant_id: tenant.id.clone(),
        id: req.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        kind: req.kind,
        topics: req.topics,
        filter: req.filter,
        config,
        credentials: Credentials(credentials),
        delivery_metadata: req.delivery_metadata,
        metadata: req.metadata,
    };
    let mut created = ctx
        .state
        .store
        .create_destination(&new)
        .await
        .map_err(|err| match err.kind() {
            // Outpost answers a taken id with 400.
            ErrorKind::Conflict => ApiError::bad_request(err.to_string()),
            _ => err.into(),
        })?;
    if req.disabled_at.is_some() {
        created = ctx
            .state
            .store
            .disable_destination(&tenant.id, &created.id)
            .await?;
    }
    if req.created_at.is_some() || req.updated_at.is_some() || req.disabled_at.is_some() {
        let created_at = req.created_at;
        created = ctx
            .state
            .store
            .set_destination_times(
                &tenant.id,
                &created.id,
                &DestinationTimes {
                    created_at,
                    // Outpost: updated_at defaults to created_at when importing.
                    updated_at: req.updated_at.or(created_at),
                    disabled_at: req.disabled_at,
                },
            )
            .await?;
    }
    Ok((StatusCode::CREATED, view(&ctx, created)))
}

async fn stored(ctx: &Ctx, tenant_id: &str, destination_id: &str) -> ApiResult<Destination> {
    ctx.state
        .store
        .get_destination(tenant_id, destination_id)
        .await?
        .ok_or_else(|| ApiError::not_found("destination"))
}

pub async fn get(
    State(ctx): CtxState,
    caller: Caller,
    P((tenant_id, destination_id)): P<(String, String)>,
) -> ApiResult<Json<DestinationView>> {
    let tenant = path_tenant(&ctx, &caller, &tenant_id).await?;
    Ok(view(&ctx, stored(&ctx, &tenant.id, &destination_id).await?))
}

pub async fn update(
    State(ctx): CtxState,
    caller: Caller,
    P((tenant_id, destination_id)): P<(String, String)>,
    body: Body,
) -> ApiResult<Json<DestinationView>> {
    let tenant = path_tenant(&ctx, &caller, &tenant_id).await?;
    let now = Utc::now();
    // An unknown destination is 404 whatever the body holds (as Outpost).
    let original = stored(&ctx, &tenant.id, &destination_id).await?;
    let patch = input::update(&body.object()?, &ctx.topics, now)?;
    if let Some(kind) = &patch.kind
        && *kind != original.kind
    {
        return Err(ApiError::validation(vec![format!(
            "type cannot be updated (the destination is a {:?} destination)",
            original.kind
        )]));
    }

    let (config, config_changed) = merge_map(Some(&original.config), patch.config);
    let config = config.unwrap_or_default();
    let sent: BTreeMap<String, String> = match &patch.credentials {
        Patch::Value(map) => map
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect(),
        Patch::Absent | Patch::Null => BTreeMap::new(),
    };
    let (merged, credentials_changed) = merge_map(Some(&original.credentials.0), patch.credentials);
    let kind = destination_type(&ctx, &original.kind)?;
    let credentials = kind
        .prepare_credentials(CredentialsWrite {
            merged: &merged.unwrap_or_default(),
            sent: &sent,
            original: Some(&original.credentials.0),
            writer: writer(&caller),
            now,
        })
        .map_err(ApiError::validation)?;
    if config_changed || credentials_changed {
        let mut problems = kind.validate_config(&config);
        problems.extend(kind.validate_credentials(&credentials));
        if !problems.is_empty() {
            return Err(ApiError::validation(problems));
        }
    }
    let config = kind
        .resolve_config(config, &credentials, Some(&original.credentials.0))
        .await
        .map_err(ApiError::validation)?;
    let filter = match patch.filter {
        Patch::Absent => original.filter.clone(),
        Patch::Null => None,
        Patch::Value(f) => Some(f),
    };
    let (delivery_metadata, delivery_metadata_changed) =
        merge_map(original.delivery_metadata.as_ref(), patch.delivery_metadata);
    if delivery_metadata_changed
        && let Some(problem) = input::delivery_metadata_problem(delivery_metadata.as_ref())
    {
        return Err(ApiError::validation(vec![problem]));
    }
    let (metadata, _) = merge_map(original.metadata.as_ref(), patch.metadata);
    let new = NewDestination {
        tenant_id: tenant.id.clone(),
        id: original.id.clone(),
        kind: original.kind.clone(),
        topics: patch.topics.unwrap_or_else(|| original.topics.clone()),
        filter,
        config,
        credentials: Credentials(credentials),
        delivery_metadata,
        metadata,
    };
    let store = &ctx.state.store;
    let mut updated = store.update_destination(&new).await?;
    match patch.disabled_at {
        Patch::Absent => {}
        Patch::Null => {
            if updated.disabled_at.is_some() {
                updated = store.enable_destination(&tenant.id, &updated.id).await?;
            }
        }
        Patch::Value(at) => {
            if updated.disabled_at.is_none() {
                store.disable_destination(&tenant.id, &updated.id).await?;
            }
            updated = store
                .set_destination_times(
                    &tenant.id,
                    &updated.id,
                    &DestinationTimes {
                        disabled_at: Some(at),
                        ..Default::default()
                    },
                )
                .await?;
        }
    }
    Ok(view(&ctx, updated))
}

pub async fn delete(
    State(ctx): CtxState,
    caller: Caller,
    P((tenant_id, destination_id)): P<(String, String)>,
) -> ApiResult<Json<Value>> {
    let tenant = path_tenant(&ctx, &caller, &tenant_id).await?;
    ctx.state
        .store
        .delete_destination(&tenant.id, &destination_id)
        .await?;
    ctx.state.destinations.close(&tenant.id, &destination_id);
    Ok(Json(json!({"success": true})))
}

pub async fn enable(
    State(ctx): CtxState,
    caller: Caller,
    P((tenant_id, destination_id)): P<(String, String)>,
) -> ApiResult<Json<DestinationView>> {
    set_disabled(&ctx, &caller, &tenant_id, &destination_id, false).await
}

pub async fn disable(
    State(ctx): CtxState,
    caller: Caller,
    P((tenant_id, destination_id)): P<(String, String)>,
) -> ApiResult<Json<DestinationView>> {
    set_disabled(&ctx, &caller, &tenant_id, &destination_id, true).await
}

/// Changes nothing (not even `updated_at`) when the destination is already in that state.
async fn set_disabled(
    ctx: &Ctx,
    caller: &Caller,
    tenant_id: &str,
    destination_id: &str,
    disabled: bool,
) -> ApiResult<Json<DestinationView>> {
    let tenant = path_tenant(ctx, caller, tenant_id).await?;
    let current = stored(ctx, &tenant.id, destination_id).await?;
    if current.disabled_at.is_some() == disabled {
        return Ok(view(ctx, current));
    }
    let store = &ctx.state.store;
    let changed = if disabled {
        store
            .disable_destination(&tenant.id, destination_id)
            .await?
    } else {
        store.enable_destination(&tenant.id, destination_id).await?
    };
    Ok(view(ctx, changed))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::destination::webhook::WebhookProvider;

    fn destination(topics: &[&str]) -> Destination {
        Destination {
            tenant_id: "t".into(),
            id: "d".into(),
            kind: "webhook".into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            filter: None,
            config: BTreeMap::new(),
            credentials: Credentials::default(),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn list_filters_follow_outpost() {
        let all = destination(&["*"]);
        let some = destination(&["user.*", "order.paid"]);
        assert!(listed(&all, &[], &strings(&["x"])));
        assert!(listed(&all, &[], &strings(&["*"])));
        assert!(!listed(&some, &[], &strings(&["*"])));
        assert!(listed(
            &some,
            &[],
            &strings(&["user.created", "order.paid"])
        ));
        assert!(!listed(
            &some,
            &[],
            &strings(&["user.created", "order.shipped"])
        ));
        assert!(!listed(&some, &strings(&["aws_sqs"]), &[]));
        assert!(listed(&some, &strings(&["aws_sqs", "webhook"]), &[]));
    }

    #[test]
    fn view_has_outposts_required_fields() {
        let types = Registry::builtin(
            WebhookProvider::new(&Default::default(), Duration::from_secs(1), "test").unwrap(),
            &Default::default(),
        );
        let v = serde_json::to_value(DestinationView::of(destination(&["*"]), Utc::now(), &types))
            .unwrap();
        for key in [
            "id",
            "type",
            "topics",
            "config",
            "credentials",
            "created_at",
            "updated_at",
            "disabled_at",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(v["disabled_at"], Value::Null);
        assert!(v.get("filter").is_none());
    }
}
