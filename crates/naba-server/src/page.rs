//! The built-in page at `/`: paste an article, see its topic, its stance toward a target and its
//! entities highlighted in the right-to-left text. One static file compiled into the binary; no
//! external scripts, styles or fonts, so it works offline and under a strict CSP.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The page. `?demo=1` fills in an example and analyses it on load.
pub const PAGE: &str = include_str!("page.html");

const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

pub async fn index() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        PAGE,
    )
        .into_response()
}
