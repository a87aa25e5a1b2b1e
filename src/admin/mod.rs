//! Stage 8: the admin HTTP server, for humans and machines.
//!
//! `/ready` (200 once the first snapshot is served), `/alive`, `/metrics` (Prometheus text),
//! `/debug/diagnostics`, `/debug/snapshot`, `/debug/ir` and `/debug/envoys` (JSON). Binds to
//! loopback by default. Read-only: nothing here changes what Envoy is served.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::snapshot::ResourceType;
use crate::state::Shared;

/// The admin routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ready", get(ready))
        .route("/alive", get(|| async { "alive\n" }))
        .route("/metrics", get(metrics))
        .route("/debug/diagnostics", get(diagnostics))
        .route("/debug/snapshot", get(snapshot))
        .route("/debug/ir", get(ir))
        .route("/debug/envoys", get(envoys))
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

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "attache admin\n\n/ready              200 once the first snapshot is served\n/alive              200 while the process runs\n/metrics            Prometheus metrics\n/debug/diagnostics  problems found in the configuration (JSON)\n/debug/snapshot     the Envoy resources being served (JSON)\n/debug/ir           the intermediate representation (JSON)\n/debug/envoys       connected Envoys: versions sent, ACKed, last NACK (JSON)\n",
    )
}

async fn ready(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no configuration served yet\n",
        )
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.render_metrics(),
    )
}

async fn diagnostics(State(s): State<Arc<Shared>>) -> Json<Value> {
    let t = s.translation();
    Json(json!({
        "counts": crate::diagnostic::count(&t.diagnostics),
        "diagnostics": t.diagnostics.iter().map(|d| json!({
            "text": d.to_string(),
            "code": d.code,
            "severity": d.severity,
            "object": d.object,
            "origin": d.origin,
            "path": d.path,
            "message": d.message,
            "hint": d.hint,
        })).collect::<Vec<_>>(),
    }))
}

async fn snapshot(State(s): State<Arc<Shared>>) -> Json<Value> {
    let snap = s.snapshot.borrow().clone();
    let Some(snap) = snap else {
        return Json(json!({"version": null}));
    };
    let mut types = serde_json::Map::new();
    for ty in ResourceType::ALL {
        // Secrets would carry private keys: only their names and versions leave the process.
        let resources: Vec<Value> = snap
            .of_type(ty)
            .map(|(name, r)| {
                let config = if ty == ResourceType::Secret {
                    json!("<redacted>")
                } else {
                    crate::envoy::bytes_to_json(ty.message_name(), &r.bytes)
                };
                json!({"name": name, "version": r.version, "config": config})
            })
            .collect();
        types.insert(
            ty.label().to_string(),
            json!({"version": snap.type_version(ty), "resources": resources}),
        );
    }
    Json(json!({"version": snap.version(), "types": types}))
}

async fn ir(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(serde_json::to_value(&s.translation().ir).unwrap_or(Value::Null))
}

async fn envoys(State(s): State<Arc<Shared>>) -> Json<Value> {
    let list: Vec<Value> = s
        .envoys
        .lock()
        .map(|m| m.iter().map(|(id, e)| json!({"stream": id, "status": e})).collect())
        .unwrap_or_default();
    Json(Value::Array(list))
}
