//! `/metrics`: attache's own Prometheus metrics, then the supervised Envoy's stats read from its
//! admin API (so one scrape covers the pod), and `/metrics/envoy` with Envoy's alone. Reads
//! Envoy; never writes to it.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::state::Shared;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics/envoy", get(envoy_metrics))
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
