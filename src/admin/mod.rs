//! Stage 8: the admin HTTP server, for humans and machines.
//!
//! `/ready` (200 once the first snapshot is served), `/alive`, `/metrics` (Prometheus text:
//! attache's own metrics, then, with `serve --envoy`, the supervised Envoy's, so one scrape
//! covers the pod), `/metrics/envoy` (Envoy's alone), `/debug/diagnostics`, `/debug/snapshot`,
//! `/debug/ir` and `/debug/envoys` (JSON). Binds to loopback by default. Read-only: nothing here
//! changes what Envoy is served, and it reads Envoy's admin API only for its stats.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
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
        .route("/metrics/envoy", get(envoy_metrics))
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
        "attache admin\n\n/ready              200 once the first snapshot is served\n/alive              200 while the process runs\n/metrics            Prometheus metrics: attache's, then the supervised Envoy's (query passed to Envoy, e.g. ?usedonly)\n/metrics/envoy      the supervised Envoy's Prometheus stats alone\n/debug/diagnostics  problems found in the configuration (JSON)\n/debug/snapshot     the Envoy resources being served (JSON)\n/debug/ir           the intermediate representation (JSON)\n/debug/envoys       connected Envoys: versions sent, ACKed, last NACK (JSON)\n",
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

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long `/metrics` waits for Envoy's stats before answering with attache's alone (a
/// Prometheus scrape times out after 10 s by default).
const ENVOY_STATS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn metrics(State(s): State<Arc<Shared>>, RawQuery(query): RawQuery) -> impl IntoResponse {
    let mut text = s.render_metrics();
    if let Some(admin) = s.envoy_admin {
        let envoy = envoy_stats(admin, query.as_deref()).await;
        let _ = writeln!(
            text,
            "# HELP attache_envoy_stats_up 1 when the supervised Envoy's stats follow (its admin API answered)\n# TYPE attache_envoy_stats_up gauge\nattache_envoy_stats_up {}",
            u8::from(envoy.is_ok())
        );
        match envoy {
            Ok(stats) => text.push_str(&stats),
            Err(e) => tracing::debug!(%admin, error = %e, "Envoy's stats are missing from /metrics"),
        }
    }
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text)
}

async fn envoy_metrics(State(s): State<Arc<Shared>>, RawQuery(query): RawQuery) -> axum::response::Response {
    let Some(admin) = s.envoy_admin else {
        return (
            StatusCode::NOT_FOUND,
            "no supervised Envoy: start attache with `serve --envoy`, or scrape your Envoy's admin /stats/prometheus\n",
        )
            .into_response();
    };
    match envoy_stats(admin, query.as_deref()).await {
        Ok(stats) => ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], stats).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("Envoy's admin API at {admin} did not answer: {e:#}\n"),
        )
            .into_response(),
    }
}

/// Envoy's `/stats/prometheus` (with the scrape's query string, e.g. `usedonly` or `filter`).
async fn envoy_stats(admin: std::net::SocketAddr, query: Option<&str>) -> anyhow::Result<String> {
    use http_body_util::BodyExt as _;
    let path = match query {
        Some(q) if !q.is_empty() => format!("/stats/prometheus?{q}"),
        _ => "/stats/prometheus".to_owned(),
    };
    // A wildcard admin address is reached on loopback.
    let addr = if admin.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if admin.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        std::net::SocketAddr::new(loopback, admin.port())
    } else {
        admin
    };
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
        anyhow::Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(ENVOY_STATS_TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {ENVOY_STATS_TIMEOUT:?}"))?
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
