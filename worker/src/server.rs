//! The worker's HTTP endpoint on `worker.http_addr`: `/metrics` (Prometheus
//! text), `/healthz` (the process is up) and `/readyz` (200 once the consumer
//! is subscribed, 503 before and while draining).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::error::WorkerError;
use crate::metrics::Metrics;

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

/// The routes, for serving or for tests.
pub fn router(metrics: Metrics, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, ready })
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds `addr` and serves until `stop` fires; returns the bound address.
pub(crate) async fn serve(
    addr: &str,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
) -> Result<SocketAddr, WorkerError> {
    let http_err = |source| WorkerError::Http {
        addr: addr.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(http_err)?;
    let local = listener.local_addr().map_err(http_err)?;
    tracing::info!(addr = %local, "http listening");
    tokio::spawn(async move {
        let app = router(metrics, ready);
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::warn!(error = %e, "http server stopped");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_ready_and_metrics() {
        let ready = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let metrics = Metrics::new();
        metrics.dlq_records_total.inc();
        let addr = serve("127.0.0.1:0", metrics, ready.clone(), stop.clone())
            .await
            .unwrap();
        let client = reqwest::Client::new();
        let get = |path: &str| client.get(format!("http://{addr}{path}")).send();
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        assert_eq!(get("/readyz").await.unwrap().status(), 503);
        ready.store(true, Ordering::SeqCst);
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let text = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(text.contains("weft_worker_dlq_records_total 1"), "{text}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_taken_address_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = serve(
            &addr,
            Metrics::new(),
            Arc::default(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(&addr), "{err}");
    }
}
