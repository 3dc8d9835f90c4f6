//! Who is calling: the admin (`Authorization: Bearer <api_key>`) or a tenant (a JWT signed with
//! `api_jwt_secret`: HS256, `iss=outpost`, `sub=<tenant>`, `exp`), and the route rules Outpost
//! applies: 401 without valid credentials, 403 for a tenant on admin-only routes or on another
//! tenant's path, 404 for an admin naming an unknown tenant, 401 for a tenant token whose
//! tenant is gone. With `api_auth_disabled` every caller is the admin. `/metrics` has its
//! own optional token (`metrics_token`).

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tracing::error;

use super::Ctx;
use super::error::{ApiError, ApiResult};
use crate::store::Tenant;

/// Outpost's tenant token issuer.
const ISSUER: &str = "outpost";
/// Tenant tokens are valid this long (Outpost: 24 hours).
const TOKEN_LIFETIME: TimeDelta = TimeDelta::hours(24);

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    /// A tenant JWT's subject.
    Tenant(String),
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin)
    }

    /// The tenant a tenant caller is bound to; `None` for the admin.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Tenant(id) => Some(id),
        }
    }

    /// Admin-only routes answer a tenant with 403.
    pub fn require_admin(&self) -> ApiResult<()> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(_) => Err(ApiError::forbidden(
                "this route needs the admin API key; a tenant token is not enough",
            )),
        }
    }
}

impl FromRequestParts<std::sync::Arc<Ctx>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &std::sync::Arc<Ctx>,
    ) -> Result<Caller, ApiError> {
        if ctx.state.config.api_auth_disabled {
            return Ok(Caller::Admin);
        }
        let token = bearer_token(parts).ok_or_else(ApiError::unauthorized)?;
        let api_key = ctx.state.config.api_key.expose();
        if !api_key.is_empty() && constant_time_eq(token.as_bytes(), api_key.as_bytes()) {
            return Ok(Caller::Admin);
        }
        ctx.tokens
            .as_ref()
            .and_then(|tokens| tokens.verify(token))
            .map(Caller::Tenant)
            .ok_or_else(ApiError::unauthorized)
    }
}

/// A caller allowed to read `/metrics`: anyone while `metrics_token` is empty, else only a
/// caller presenting it as a bearer token.
pub struct MetricsReader;

impl FromRequestParts<std::sync::Arc<Ctx>> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &std::sync::Arc<Ctx>,
    ) -> Result<MetricsReader, ApiError> {
        let expected = &ctx.state.config.metrics_token;
        if expected.is_empty() {
            return Ok(MetricsReader);
        }
        match bearer_token(parts) {
            Some(token) if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) => {
                Ok(MetricsReader)
            }
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "/metrics needs Authorization: Bearer <metrics_token>",
            )),
        }
    }
}

/// The credentials of `Authorization: Bearer <token>`. The scheme is case-insensitive
/// (RFC 9110 §11.1) and may be followed by several spaces (RFC 6750 §2.1).
fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Outpost's tenant-scoped routes: the tenant named in the path, which a tenant caller must
/// own (403 otherwise). Unknown or deleted: 404 for the admin, 401 for a tenant (its token
/// is stale).
pub async fn path_tenant(ctx: &Ctx, caller: &Caller, tenant_id: &str) -> ApiResult<Tenant> {
    if let Caller::Tenant(own) = caller
        && own != tenant_id
    {
        return Err(ApiError::forbidden(
            "a tenant token gives access to its own tenant only",
        ));
    }
    match ctx.state.store.get_tenant(tenant_id).await? {
        Some(tenant) => Ok(tenant),
        None if caller.is_admin() => Err(ApiError::not_found("tenant")),
        None => Err(ApiError::unauthorized()),
    }
}

/// For routes without a tenant in the path: a tenant caller's tenant must still exist.
pub async fn check_caller(ctx: &Ctx, caller: &Caller) -> ApiResult<()> {
    if let Caller::Tenant(own) = caller
        && ctx.state.store.get_tenant(own).await?.is_none()
    {
        return Err(ApiError::unauthorized());
    }
    Ok(())
}

/// The tenants a log query (events, attempts) covers: a tenant caller sees only itself, and
/// naming another tenant in `tenant_id` is 403; the admin's `tenant_id` list is used as given
/// (empty: every tenant).
pub fn log_tenants(caller: &Caller, requested: Vec<String>) -> ApiResult<Vec<String>> {
    match caller {
        Caller::Admin => Ok(requested),
        Caller::Tenant(own) => {
            if requested.is_empty() || requested == [own.as_str()] {
                Ok(vec![own.clone()])
            } else {
                Err(ApiError::forbidden(
                    "tenant_id query parameter does not match authenticated tenant",
                ))
            }
        }
    }
}

/// Compares without an early exit, so the time taken does not reveal the key's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The claims of an issued token.
#[derive(Debug, Serialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
}

/// What a verified token tells: its subject. `exp`, `nbf` and `iss` are checked by
/// `jsonwebtoken` (which reads NumericDates with fractions, as RFC 7519 allows) and not read
/// again here.
#[derive(Debug, Deserialize)]
struct Subject {
    sub: String,
}

/// Issues and verifies tenant JWTs with `api_jwt_secret`.
pub struct TenantTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TenantTokens {
    /// `None` when no secret is configured: tenant tokens are then neither issued nor accepted.
    pub fn new(secret: &str) -> Option<TenantTokens> {
        if secret.is_empty() {
            return None;
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // A token that is not valid yet is refused like an expired one.
        validation.validate_nbf = true;
        validation.leeway = 0;
        Some(TenantTokens {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        })
    }

    /// A token for `tenant_id`, valid for 24 hours from `now`.
    pub fn issue(&self, tenant_id: &str, now: DateTime<Utc>) -> ApiResult<String> {
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: tenant_id.to_owned(),
            iat: Some(now.timestamp()),
            exp: (now + TOKEN_LIFETIME).timestamp(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(
            |err| {
                error!("cannot sign a tenant token: {err}");
                ApiError::internal()
            },
        )
    }

    /// The tenant of a valid token: HS256 with this secret, issuer `outpost`, not expired, not
    /// before its `nbf` (when it has one), non-empty subject. Anything else (`alg: none`,
    /// another algorithm, a wrong signature) is `None`.
    pub fn verify(&self, token: &str) -> Option<String> {
        let data = jsonwebtoken::decode::<Subject>(token, &self.decoding, &self.validation).ok()?;
        Some(data.claims.sub).filter(|sub| !sub.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn tokens() -> TenantTokens {
        TenantTokens::new("jwt-secret").unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_name_the_tenant() {
        let t = tokens();
        let token = t.issue("acme", Utc::now()).unwrap();
        assert_eq!(t.verify(&token).as_deref(), Some("acme"));
        assert_eq!(TenantTokens::new("other").unwrap().verify(&token), None);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let t = tokens();
        let token = t.issue("acme", Utc::now() - TimeDelta::hours(25)).unwrap();
        assert_eq!(t.verify(&token), None);
    }

    #[test]
    fn unsigned_and_foreign_tokens_are_refused() {
        let t = tokens();
        let claims = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iss":"outpost","sub":"acme","exp":{}}}"#,
            Utc::now().timestamp() + 3600
        ));
        let none = format!(
            "{}.{claims}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
        );
        assert_eq!(t.verify(&none), None);

        let wrong_issuer = Claims {
            iss: "someone".into(),
            sub: "acme".into(),
            exp: Utc::now().timestamp() + 3600,
            iat: None,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &wrong_issuer,
            &EncodingKey::from_secret(b"jwt-secret"),
        )
        .unwrap();
        assert_eq!(t.verify(&token), None);
        assert_eq!(t.verify("not.a.token"), None);
    }

    /// A token signed with the test secret carrying `claims` as they are.
    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"jwt-secret"),
        )
        .unwrap()
    }

    #[test]
    fn tokens_not_valid_yet_are_refused() {
        let now = Utc::now().timestamp();
        let claims = |nbf: i64| serde_json::json!({"iss": "outpost", "sub": "acme", "exp": now + 3600, "nbf": nbf});
        assert_eq!(tokens().verify(&signed(claims(now + 600))), None);
        assert_eq!(
            tokens().verify(&signed(claims(now - 60))).as_deref(),
            Some("acme")
        );
    }

    #[test]
    fn numeric_dates_may_have_fractions() {
        let now = Utc::now().timestamp() as f64;
        let claims = |exp: f64| serde_json::json!({"iss": "outpost", "sub": "acme", "exp": exp});
        assert_eq!(
            tokens().verify(&signed(claims(1_893_456_000.5))).as_deref(),
            Some("acme")
        );
        assert_eq!(tokens().verify(&signed(claims(now - 600.5))), None);
        let not_yet = serde_json::json!({
            "iss": "outpost", "sub": "acme", "exp": now + 3600.0, "nbf": now + 600.25,
        });
        assert_eq!(tokens().verify(&signed(not_yet)), None);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let token = |header: &str| {
            let (parts, ()) = axum::http::Request::builder()
                .header(AUTHORIZATION, header)
                .body(())
                .unwrap()
                .into_parts();
            bearer_token(&parts).map(str::to_owned)
        };
        for header in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc"] {
            assert_eq!(token(header).as_deref(), Some("abc"), "{header}");
        }
        for header in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "Token abc"] {
            assert_eq!(token(header), None, "{header}");
        }
    }

    #[test]
    fn no_secret_means_no_tenant_tokens() {
        assert!(TenantTokens::new("").is_none());
    }

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
