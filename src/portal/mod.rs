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
/// but by this origin and the configured ones (clickjacking). The portal link's token lives in
/// the URL fragment, which no request carries, and `no-referrer` keeps the page's URL out of
/// any request it makes.
fn content_security_policy(frame_ancestors: &[String]) -> String {
    let mut framers = String::from("'self'");
    for origin in frame_ancestors {
        framers.push(' ');
        framers.push_str(origin);
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {framers}"
    )
}

/// The portal's routes; the API router merges them. `frame_ancestors` are the origins
/// (validated with the config) that may frame the portal besides its own.
pub fn routes<S: Clone + Send + Sync + 'static>(frame_ancestors: &[String]) -> Router<S> {
    let policy = HeaderValue::from_str(&content_security_policy(frame_ancestors))
        .expect("origins checked by the config make a valid header");
    FILES
        .into_iter()
        .fold(Router::new(), |router, (path, body, content_type)| {
            let policy = policy.clone();
            router.route(
                path,
                get(move || async move { asset(body, content_type, policy) }),
            )
        })
}

fn asset(body: &'static str, content_type: &'static str, policy: HeaderValue) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, policy),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // Small files that change with the binary: revalidate rather than serve a stale script.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_origin_and_the_configured_ones_may_frame_the_portal() {
        let alone = content_security_policy(&[]);
        assert!(alone.ends_with("frame-ancestors 'self'"), "{alone}");
        assert!(!alone.contains("unsafe"), "{alone}");
        let embedded = content_security_policy(&[
            "https://app.example.com".to_owned(),
            "http://localhost:3000".to_owned(),
        ]);
        assert!(
            embedded
                .ends_with("frame-ancestors 'self' https://app.example.com http://localhost:3000"),
            "{embedded}"
        );
    }
}
