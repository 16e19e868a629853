//! `GET /metrics` over plain HTTP for both daemons (axum on the hyper tonic already builds): a
//! prometheus-client registry in the Prometheus text format (0.0.4), which every Prometheus and
//! `promtool check metrics` read.

use std::sync::Arc;

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus_client::{encoding::prometheus_text, registry::Registry};

/// Serves `registry` on `listener` until the task is dropped. Encoding runs off the async
/// workers: collectors may make syscalls (the agent's pinned maps) or query SQLite (the
/// controller's gateways).
pub async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let text = tokio::task::spawn_blocking(move || encode(&registry)).await;
                match text {
                    Ok(Ok(text)) => (
                        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
                        text,
                    )
                        .into_response(),
                    _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics endpoint stopped");
    }
}

/// The registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}
