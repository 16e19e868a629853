//! `GET /metrics` over plain HTTP (axum on the hyper tonic already builds): the registry in
//! the Prometheus text format (0.0.4), which every Prometheus and `promtool check metrics`
//! read.

use std::sync::Arc;

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus_client::{encoding::prometheus_text, registry::Registry};

/// Serves until the task is dropped.
pub(super) async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                // The collectors read pinned maps (syscalls): off the async workers.
                let text = tokio::task::spawn_blocking(move || {
                    let mut text = String::new();
                    prometheus_text::encode(&mut text, &registry).map(|()| text)
                })
                .await;
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
