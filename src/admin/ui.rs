//! The diagnostics page: one HTML page, a script and a style sheet, compiled into the binary
//! (no network, no build step), served at `/ui/` and at Emissary's `/ambassador/v0/diag/`. The
//! page only reads the JSON under `/debug/` and polls `/debug/summary` to follow changes; it holds
//! no logic the JSON endpoints do not have.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;

use crate::state::Shared;

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// Everything the page loads comes from this server; the page's text comes from the JSON as
/// text nodes, never as markup.
const SECURITY: [(header::HeaderName, &str); 3] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-cache"),
];

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { page() }))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/ambassador/v0/diag",
            get(|| async { Redirect::permanent("/ambassador/v0/diag/") }),
        )
        .route("/ambassador/v0/diag/", get(|| async { page() }))
}

/// The page itself.
pub(super) fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", PAGE)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (SECURITY, [(header::CONTENT_TYPE, content_type)], body)
}
