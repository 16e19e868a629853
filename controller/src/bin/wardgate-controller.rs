//! wardgate-controller: the gRPC server over the embedded store. Thin over the library.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use wardgate_controller::{
    server::{self, TlsFiles},
    store::{SqliteStore, Store},
};

#[derive(Parser)]
#[command(
    name = "wardgate-controller",
    version,
    about = "wardgate controller (gRPC, mTLS, embedded SQLite store)"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// Data directory (the SQLite store lives in <data>/wardgate.db).
    #[arg(long, default_value = "/var/lib/wardgate-controller")]
    data: PathBuf,
    /// Directory with ca.pem, server.pem and server.key (as written by `wardctl certs init`).
    #[arg(long, default_value = "/etc/wardgate/certs")]
    certs: PathBuf,
    #[command(flatten)]
    log: wardgate_daemon::log::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    wardgate_daemon::log::init(cli.log.log_format);
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&cli.data)
            .with_context(|| format!("opening store in {}", cli.data.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let tls = TlsFiles::in_dir(&cli.certs);
    // Certificates checked before READY=1: a controller that cannot serve TLS never says ready.
    server::tls_config(&tls)?;
    let listen = listener.local_addr()?;
    // Handled before READY=1: a SIGTERM right after it is a clean stop.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tracing::info!(%listen, data = %cli.data.display(), "controller serving");
    wardgate_daemon::notify::ready(&format!("serving on {listen}"));
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down");
        wardgate_daemon::notify::stopping("finishing open calls");
    };
    server::serve(store, &tls, listener, shutdown).await
}
