//! Stage 8: the admin HTTP server, for humans and machines.
//!
//! `/ready` (200 once the first snapshot is served), `/alive`, `/metrics` (module `metrics`),
//! the diagnostics page at `/ui/` (module `ui`; also at Emissary's `/ambassador/v0/diag/`, and at
//! `/` for a browser) and the JSON it reads under `/debug/` (module `debug`). Binds to loopback by
//! default. Read-only: nothing here changes what Envoy is served; it reads Envoy's admin API only
//! for its stats and the configuration directory only for the lines around a diagnostic.

mod debug;
mod metrics;
mod ui;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::state::Shared;

/// The admin routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ready", get(ready))
        .route("/alive", get(|| async { "alive\n" }))
        .merge(metrics::routes())
        .merge(debug::routes())
        .merge(ui::routes())
        .with_state(shared)
}

/// Serves the admin routes on a bound listener until `shutdown` resolves.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

const INDEX: &str = "attache admin

/ui/                the diagnostics page (also /ambassador/v0/diag/)
/ready              200 once the first snapshot is served
/alive              200 while the process runs
/metrics            Prometheus metrics: attache's, then the supervised Envoy's (query passed to Envoy, e.g. ?usedonly)
/metrics/envoy      the supervised Envoy's Prometheus stats alone
/debug/summary      readiness, configuration version and when it changed, counts (JSON)
/debug/routes       routes: host, match, weight, cluster, source object (JSON; ?q=&offset=&limit=)
/debug/clusters     clusters with the Mappings using them and EDS endpoints (JSON; ?q=&offset=&limit=)
/debug/diagnostics  problems found in the configuration (JSON; ?context=N adds N source lines around each)
/debug/envoys       connected Envoys: versions sent, ACKed, last NACK (JSON)
/debug/rules        the effective rule table (JSON)
/debug/snapshot     the Envoy resources being served (JSON)
/debug/ir           the intermediate representation (JSON)
";

/// A browser gets the diagnostics page; anything else the list of endpoints.
async fn index(headers: HeaderMap) -> Response {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser {
        ui::page().into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], INDEX).into_response()
    }
}

async fn ready(axum::extract::State(s): axum::extract::State<Arc<Shared>>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no configuration served yet\n",
        )
    }
}
