//! The HTTP endpoints: Prometheus `/metrics`, `/healthz` (the process serves and no reconcile is
//! wedged) and `/readyz` (every cache has synced).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::error::{Error, Result};

/// What the endpoints read.
#[derive(Clone)]
pub struct Health {
    pub registry: Arc<Registry>,
    /// True once the caches have synced.
    pub ready: watch::Receiver<bool>,
    pub progress: Arc<crate::runtime::progress::Progress>,
}

async fn healthz(State(h): State<Health>) -> (StatusCode, String) {
    match h.progress.stalled(crate::runtime::progress::STALL) {
        None => (StatusCode::OK, "ok".into()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("stalled: {why}")),
    }
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &h.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
    }
}

async fn readyz(State(h): State<Health>) -> (StatusCode, &'static str) {
    if *h.ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

/// Binds the HTTP port: a port in use fails start-up instead of running without probes.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(Error::Http)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    tracing::info!(addr = ?listener.local_addr().ok(), "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Http)
}
