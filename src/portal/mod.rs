//! The tenant portal: one HTML page, its script and its style sheet, compiled into the binary
//! and served at `/portal`. The page holds no data: its script calls `/api/v1` with the tenant
//! token from the portal link, so the API's rules and limits hold. See docs/portal.md.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const HTML: &str = "text/html; charset=utf-8";

/// Every path the portal serves: the page (with and without the trailing slash), its script,
/// style sheet and icon, each with its content type.
const FILES: [(&str, &str, &str); 5] = [
    ("/portal", include_str!("assets/index.html"), HTML),
    ("/portal/", include_str!("assets/index.html"), HTML),
    (
        "/portal/assets/portal.js",
        include_str!("assets/portal.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "/portal/assets/portal.css",
        include_str!("assets/portal.css"),
        "text/css; charset=utf-8",
    ),
    (
        "/portal/assets/icon.svg",
        include_str!("assets/icon.svg"),
        "image/svg+xml",
    ),
];

/// Only this origin's script, style, API and images (and `data:` images: the destination
/// types' icons); no inline script or style, no plugins, no forms posting elsewhere, no framing
/// by other sites (clickjacking). The portal link's token lives in the URL fragment, which no
/// request carries, and `no-referrer` keeps the page's URL out of any request it makes.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'self'";

/// The portal's routes; the API router merges them.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES
        .into_iter()
        .fold(Router::new(), |router, (path, body, content_type)| {
            router.route(path, get(move || async move { asset(body, content_type) }))
        })
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
