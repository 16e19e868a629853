//! The console's HTTPS listener: rustls with the controller's server certificate (no client
//! certificate: people log in), HTTP/1.1, each connection in its own task with a handshake
//! timeout and a cap on open connections.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    },
};

use super::{Console, router};
use crate::{config::ConsoleConfig, server::TlsFiles, service::Ctx};

/// A handshake or a request head not done within this is cut.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Open console connections; more are closed at once.
const MAX_CONNECTIONS: usize = 512;

fn server_config(tls: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading {}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("reading {}", tls.key.display()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("{} and {}", tls.cert.display(), tls.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves the console on `listener` until the task is dropped; fails at once if the
/// certificate does not load.
pub async fn serve(
    ctx: Ctx,
    cfg: &ConsoleConfig,
    tls: &TlsFiles,
    listener: TcpListener,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(tls)?));
    let app = router(Arc::new(Console::new(ctx, cfg)?));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if cfg.admin.is_none() && cfg.oidc.is_none() {
        tracing::warn!("console: neither `console.admin` nor `console.oidc`: nobody can log in");
    }
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "console: accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed
        };
        let acceptor = acceptor.clone();
        // The client's address for the login rate limit and the audit trail.
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await else {
                return;
            };
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "console: connection");
            }
        });
    }
}
