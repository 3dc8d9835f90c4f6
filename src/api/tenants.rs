//! `/tenants`: list (admin; a tenant sees itself), upsert (`PUT`, body optional), get, delete,
//! and the tenant token and portal URL (admin only). A tenant is shown with Outpost's derived
//! `destinations_count` and `topics`.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::error;

use super::auth::{Caller, check_caller, path_tenant};
use super::body::{Body, Fields, present};
use super::error::{ApiError, ApiResult};
use super::path::P;
use super::query::{PageOf, Pagination, Params};
use super::{Ctx, CtxState};
use crate::event::check_id;
use crate::store::{Destination, Metadata, Tenant, TenantFilter};

/// Outpost's `Tenant`.
#[derive(Debug, Serialize)]
pub struct TenantView {
    id: String,
    destinations_count: usize,
    /// Every topic the tenant's destinations subscribe to, sorted; `["*"]` if one takes all.
    topics: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

async fn view(ctx: &Ctx, tenant: Tenant) -> ApiResult<TenantView> {
    let destinations = ctx
        .state
        .store
        .list_destinations(&tenant.id, &Default::default())
        .await?;
    Ok(TenantView {
        destinations_count: destinations.len(),
        topics: tenant_topics(&destinations),
        metadata: tenant.metadata.filter(|m| !m.is_empty()),
        id: tenant.id,
        created_at: tenant.created_at,
        updated_at: tenant.updated_at,
    })
}

fn tenant_topics(destinations: &[Destination]) -> Vec<String> {
    let mut topics: Vec<String> = Vec::new();
    for d in destinations {
        for t in &d.topics {
            if t == "*" {
                return vec!["*".to_owned()];
            }
            if !topics.contains(t) {
                topics.push(t.clone());
            }
        }
    }
    topics.sort();
    topics
}

pub async fn list(
    axum::extract::State(ctx): CtxState,
    caller: Caller,
    params: Params,
) -> ApiResult<Json<PageOf<TenantView>>> {
    if let Caller::Tenant(own) = &caller {
        let tenant = path_tenant(&ctx, &caller, own).await?;
        return Ok(Json(PageOf {
            models: vec![view(&ctx, tenant).await?],
            pagination: Pagination {
                order_by: "created_at",
                dir: "desc",
                limit: 1,
                next: None,
                prev: None,
            },
            count: Some(1),
        }));
    }
    let (page, pagination) = params.tenant_page()?;
    let filter = TenantFilter {
        ids: params.array("id")?,
    };
    let found = ctx.state.store.list_tenants(&filter, &page).await?;
    let count = ctx.state.store.count_tenants().await?;
    let mut models = Vec::with_capacity(found.models.len());
    for tenant in found.models {
        models.push(view(&ctx, tenant).await?);
    }
    Ok(Json(PageOf {
        models,
        pagination: pagination.with_cursors(found.next, found.prev),
        count: Some(count),
    }))
}

pub async fn upsert(
    axum::extract::State(ctx): CtxState,
    caller: Caller,
    P(tenant_id): P<String>,
    body: Body,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    if let Caller::Tenant(own) = &caller
        && *own != tenant_id
    {
        return Err(ApiError::forbidden(
            "a tenant token gives access to its own tenant only",
        ));
    }
    check_caller(&ctx, &caller).await?;
    // Only here: other routes look the path id up as it is (an invalid one is simply not
    // found), so a tenant stored before ids were checked can still be read and deleted.
    check_id(&tenant_id).map_err(|err| ApiError::validation(vec![format!("tenant_id: {err}")]))?;
    // The SDKs send PUT without a body to create a tenant with no metadata.
    let metadata = if body.is_blank() {
        None
    } else {
        let object = body.object()?;
        let mut fields = Fields::new(&object);
        let metadata = fields.string_map("metadata");
        fields.finish()?;
        present(metadata)
    };
    let upserted = ctx
        .state
        .store
        .upsert_tenant(&tenant_id, metadata.as_ref())
        .await?;
    let status = if upserted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&ctx, upserted.tenant).await?)))
}

pub async fn get(
    axum::extract::State(ctx): CtxState,
    caller: Caller,
    P(tenant_id): P<String>,
) -> ApiResult<Json<TenantView>> {
    let tenant = path_tenant(&ctx, &caller, &tenant_id).await?;
    Ok(Json(view(&ctx, tenant).await?))
}

pub async fn delete(
    axum::extract::State(ctx): CtxState,
    caller: Caller,
    P(tenant_id): P<String>,
) -> ApiResult<Json<Value>> {
    let tenant = path_tenant(&ctx, &caller, &tenant_id).await?;
    ctx.state.store.delete_tenant(&tenant.id).await?;
    ctx.state.destinations.close_tenant(&tenant.id);
    Ok(Json(json!({"success": true})))
}

async fn issue_token(ctx: &Ctx, caller: &Caller, tenant_id: &str) -> ApiResult<(String, String)> {
    caller.require_admin()?;
    let tenant = path_tenant(ctx, caller, tenant_id).await?;
    let tokens = ctx.tokens.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "tenant tokens are off: set api_jwt_secret (API_JWT_SECRET) to issue them",
        )
    })?;
    Ok((tokens.issue(&tenant.id, Utc::now())?, tenant.id))
}

pub async fn token(
    axum::extract::State(ctx): CtxState,
    caller: Caller,
    P(tenant_id): P<String>,
) -> ApiResult<Json<Value>> {
    let (token, tenant_id) = issue_token(&ctx, &caller, &tenant_id).await?;
    Ok(Json(json!({"token": token, "tenant_id": tenant_id})))
}

/// Outpost's portal redirect: `portal.proxy_url`, or else `/portal` on this server as the
/// request named it in `Host`, with the token in the fragment (`#token=…&tenant_id=…`): a
/// fragment never leaves the browser, so the token is in no request line, access log or
/// `Referer`.
pub async fn portal(
    axum::extract::State(ctx): CtxState,
    caller: Caller,
    P(tenant_id): P<String>,
    params: Params,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let (token, tenant_id) = issue_token(&ctx, &caller, &tenant_id).await?;
    let mut url = portal_base(&ctx, &headers)?;
    url.push('#');
    url.push_str(&format!(
        "token={token}&tenant_id={}",
        encode_query_value(&tenant_id)
    ));
    if let Some(theme @ ("light" | "dark")) = params.get("theme") {
        url.push_str("&theme=");
        url.push_str(theme);
    }
    Ok(Json(json!({"redirect_url": url, "tenant_id": tenant_id})))
}

/// Where portal links point, without the query jetpost adds. The configured URL when there is
/// one; else this server's `/portal`, but only at a `Host` that is nothing more than a host and
/// port: any other text would let a caller's header send the token to another site.
fn portal_base(ctx: &Ctx, headers: &HeaderMap) -> ApiResult<String> {
    if let Some(proxy_url) = &ctx.state.config.portal.proxy_url {
        return reqwest::Url::parse(proxy_url)
            .map(|url| url.to_string())
            .map_err(|err| {
                error!("portal.proxy_url {proxy_url:?} is not a URL: {err}");
                ApiError::internal()
            });
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|host| is_host_and_port(host))
        .ok_or_else(|| {
            ApiError::bad_request(
                "cannot build the portal link: the request's Host header is not a plain \
                 host[:port]; set portal.proxy_url (PORTAL_PROXY_URL) to the URL the portal is \
                 served at",
            )
        })?;
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    Ok(format!("{scheme}://{host}/portal"))
}

/// `host[:port]` where host is a DNS name (letters, digits, `-`, `_`, dots between labels of
/// at most 63), an IPv4 address or a bracketed IPv6 address, and port 0-65535.
fn is_host_and_port(value: &str) -> bool {
    let (host_ok, port) = match value.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((ip, rest)) => (
                ip.parse::<std::net::Ipv6Addr>().is_ok(),
                match rest {
                    "" => None,
                    _ => match rest.strip_prefix(':') {
                        Some(port) => Some(port),
                        None => return false,
                    },
                },
            ),
            None => return false,
        },
        None => {
            let (host, port) = match value.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (value, None),
            };
            (is_dns_name(host), port)
        }
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    host_ok && port_ok
}

fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_plain_host_and_port() {
        for good in [
            "localhost",
            "localhost:3333",
            "api.example.com",
            "api.example.com:443",
            "jetpost_api:3333",
            "127.0.0.1",
            "10.0.0.5:8080",
            "[::1]",
            "[2001:db8::1]:3333",
        ] {
            assert!(is_host_and_port(good), "{good}");
        }
        for bad in [
            "",
            "evil.example/path?x=",
            "evil.example?x=",
            "evil.example#",
            "user@evil.example",
            "evil.example:",
            "evil.example:99999",
            "evil.example:80:80",
            "evil.example:8o",
            "evil .example",
            "evil..example",
            ".evil.example",
            "-evil.example",
            "[::1",
            "[::1]x",
            "[evil.example]",
            "::1",
            "evil.example\\x",
        ] {
            assert!(!is_host_and_port(bad), "{bad}");
        }
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query_value("acme"), "acme");
        assert_eq!(encode_query_value("a b&c/é"), "a%20b%26c%2F%C3%A9");
    }
}
