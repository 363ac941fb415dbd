//! The operator's HTTP endpoints: `/healthz` (alive), `/readyz` (controllers running) and
//! `/metrics` (OpenMetrics for scrapers that ask for it, else the classic text format).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;

use crate::operator::telemetry::format::{
    CLASSIC_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE, openmetrics_to_classic, wants_openmetrics,
};
use crate::operator::telemetry::metrics::Metrics;

pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let metrics = metrics.clone();
                async move {
                    let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
                    let text = metrics.encode();
                    if wants_openmetrics(accept) {
                        ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text)
                    } else {
                        (
                            [(CONTENT_TYPE, CLASSIC_CONTENT_TYPE)],
                            openmetrics_to_classic(&text),
                        )
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app).await
}
