//! The controller server: TLS with required client certificates (mTLS), the three services,
//! message size limits, graceful shutdown.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use wardgate_proto::v1::{
    admin_service_server::AdminServiceServer, agent_service_server::AgentServiceServer,
    alert_service_server::AlertServiceServer,
};

use crate::{
    metrics::ControllerMetrics,
    push::Push,
    service::{Ctx, admin::Admin, agent::Agent, alerts::Alerts},
    store::Store,
};

/// Largest request the controller decodes (a profile or an alert batch is far smaller).
pub const MAX_MESSAGE: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The layout `wardctl certs init` writes.
    pub fn in_dir(dir: &std::path::Path) -> Self {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

pub fn tls_config(files: &TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?))
        .client_ca_root(Certificate::from_pem(read(&files.ca)?))
        .client_auth_optional(false))
}

/// Serves until `shutdown` resolves; the services count into `metrics`.
pub async fn serve(
    store: Arc<dyn Store>,
    metrics: Arc<ControllerMetrics>,
    tls: &TlsFiles,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let ctx = Ctx {
        store,
        push: Arc::new(Push::default()),
        metrics,
    };
    // Nagle off: a response written in pieces must not wait for the client's delayed ACK
    // (measured: 40 ms per admin call with it on).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            if let Ok(c) = &conn {
                let _ = c.set_nodelay(true);
            }
            conn
        },
    );
    Server::builder()
        .tls_config(tls_config(tls)?)?
        .add_service(
            AgentServiceServer::new(Agent(ctx.clone())).max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            AdminServiceServer::new(Admin(ctx.clone())).max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(AlertServiceServer::new(Alerts(ctx)).max_decoding_message_size(MAX_MESSAGE))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("serving gRPC")
}
