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
    settings: server::Settings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with_head(&cli.data, &cli.settings.audit_head_path(&cli.data))
            .with_context(|| format!("opening store in {}", cli.data.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    tracing::info!(listen = %listener.local_addr()?, data = %cli.data.display(), "controller serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down");
    };
    let tls = TlsFiles::in_dir(&cli.certs);
    server::serve(store, &tls, &cli.settings, listener, shutdown).await
}
