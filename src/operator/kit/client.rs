//! The operator's client for the Kubernetes API, with a bound on how many requests are in flight
//! at once.
//!
//! kube's HTTP client opens a new connection for every request that finds none idle, and keeps
//! every idle connection for as long as the API server does (it has no idle reaper). With seven
//! controllers reconciling a hundred objects each at once, a slow API server (a busy node) made
//! the operator open ~200 connections, each holding its TLS state and read buffers: some 20 MiB
//! that stayed after the burst (docs/benchmarks.md, "Operator RSS with 100 backup and drill
//! schedules"). Waiting for one of a few requests to finish costs milliseconds; the controllers
//! still reconcile concurrently, and calls to DHIS2 itself are not limited by this.

use kube::Client;
use kube::client::ClientBuilder;
use tower::limit::ConcurrencyLimitLayer;

/// Requests to the API server in flight at once. A watch counts only until its response starts,
/// so the long-lived watches do not hold these. client-go's default (5 requests per second, bursts
/// of 10) is stricter.
pub const API_REQUESTS_AT_ONCE: usize = 8;

/// A client from the kubeconfig or the in-cluster credentials, like `Client::try_default`.
pub async fn connect() -> Result<Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&ConcurrencyLimitLayer::new(API_REQUESTS_AT_ONCE))
        .build())
}
