//! wardgate-controller: the gRPC server over the embedded store. Thin over the library.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use wardgate_controller::{
    config::{ControllerConfig, Overrides},
    metrics::{self, ControllerMetrics},
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
    /// Configuration file (YAML; unknown keys are refused). If this default path does not
    /// exist, the built-in defaults apply; a path given explicitly must exist.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `listen` in the file; default 127.0.0.1:7443).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory, the SQLite store lives in <data>/wardgate.db (overrides `data`;
    /// default /var/lib/wardgate-controller).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Directory with ca.pem, server.pem and server.key, as written by `wardctl certs init`
    /// (overrides `certs`; default /etc/wardgate/certs).
    #[arg(long)]
    certs: Option<PathBuf>,
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
    let cfg = ControllerConfig::resolve(
        cli.config.as_deref(),
        Overrides {
            listen: cli.listen,
            data: cli.data,
            certs: cli.certs,
        },
    )?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with_head(&cfg.data, &cli.settings.audit_head_path(&cfg.data))
            .with_context(|| format!("opening store in {}", cfg.data.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let counters = Arc::new(ControllerMetrics::default());
    if let Some(m) = cfg.metrics {
        let metrics_listener = tokio::net::TcpListener::bind(m.listen)
            .await
            .with_context(|| format!("binding the metrics endpoint {}", m.listen))?;
        tracing::info!(listen = %m.listen, "metrics served on /metrics");
        let registry = Arc::new(counters.registry(store.clone()));
        tokio::spawn(metrics::serve(metrics_listener, registry));
    }
    tracing::info!(listen = %listener.local_addr()?, data = %cfg.data.display(), "controller serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down");
    };
    server::serve(
        store,
        counters,
        &TlsFiles::in_dir(&cfg.certs),
        &cli.settings,
        listener,
        shutdown,
    )
    .await
}
