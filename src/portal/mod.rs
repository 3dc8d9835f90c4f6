//! The tenant portal: one HTML page, its script and its style sheet, compiled into the binary
//! and served at `/portal`. The page holds no data: its script calls `/api/v1` with the tenant
//! token from the portal link, so the API's rules and limits hold. See docs/portal.md.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/portal.js");
const STYLE: &str = include_str!("assets/portal.css");
const ICON: &str = include_str!("assets/icon.svg");

/// Only this origin's script, style, API and images (and `data:` images: the destination
/// types' icons); no inline script or style, no plugins, no forms posting elsewhere, no framing
/// by other sites (clickjacking). The portal link's token lives in the URL fragment, which no
/// request carries, and `no-referrer` keeps the page's URL out of any request it makes.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'self'";

/// The portal's routes; the API router merges them.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/portal",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/portal/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/portal/assets/portal.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/portal/assets/portal.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/portal/assets/icon.svg",
            get(|| async { asset(ICON, "image/svg+xml") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Small files that change with the binary: revalidate rather than serve a stale script.
        (header::CACHE_CONTROL, "no-cache"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ]
    .map(|(name, value)| (name, HeaderValue::from_static(value)));
    (headers, body).into_response()
}
