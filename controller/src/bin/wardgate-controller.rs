//! wardgate-controller: the gRPC server over the embedded store, and the offline checks of a
//! controller's files (`wardgate-controller audit verify --data DIR`). Thin over the library.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wardgate_controller::{
    audit::signing::SigningKey,
    cli::output::OutputFormat,
    config::{ControllerConfig, Overrides},
    listener::TlsState,
    metrics::{self, ControllerMetrics},
    server::{self, TlsFiles},
    sinks::{Sinks, checkpoints},
    store::{PgStore, SqliteStore, Store},
};

#[derive(Parser)]
#[command(
    name = "wardgate-controller",
    version,
    about = "wardgate controller (gRPC, mTLS, embedded SQLite store)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Without a subcommand the controller serves.
    #[command(subcommand)]
    command: Option<Offline>,
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
    #[command(flatten)]
    log: wardgate_daemon::log::LogArgs,
}

/// Work on a controller's files instead of serving (the controller need not run).
#[derive(Subcommand)]
enum Offline {
    /// The audit trail of a store directory.
    #[command(subcommand)]
    Audit(OfflineAudit),
    /// The browser console.
    #[command(subcommand)]
    Console(OfflineConsole),
}

#[derive(Subcommand)]
enum OfflineConsole {
    /// Read a password on standard input (one line) and print its argon2 hash, for
    /// `console.admin.password_hash` in the controller config.
    HashPassword,
}

#[derive(Subcommand)]
enum OfflineAudit {
    /// Verify the store's chain against the head file, and each generation against its entry,
    /// reading the store read-only; exits non-zero if an entry was edited, inserted or deleted,
    /// the tail deleted, the chain rewritten, the table emptied, a stored generation changed,
    /// or there is no store in DATA.
    Verify {
        /// The controller's data directory (the store is DATA/wardgate.db).
        #[arg(long)]
        data: PathBuf,
        /// The audit head file (default DATA/audit-head.log).
        #[arg(long)]
        audit_head: Option<PathBuf>,
        /// Also check the trail against the signed audit checkpoints in this file (what the
        /// SOC received: syslog or OCSF lines; other lines are skipped).
        #[arg(long, requires = "checkpoint_key")]
        checkpoints: Option<PathBuf>,
        /// The controller's checkpoint public key (PEM) as the SOC keeps it: not the copy on
        /// the controller's disk.
        #[arg(long, requires = "checkpoints")]
        checkpoint_key: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Offline::Console(OfflineConsole::HashPassword)) = cli.command {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password on standard input")?;
        let password = line.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            anyhow::bail!("an empty password");
        }
        println!("{}", wardgate_controller::console::hash_password(password)?);
        return Ok(());
    }
    if let Some(Offline::Audit(OfflineAudit::Verify {
        data,
        audit_head,
        checkpoints,
        checkpoint_key,
        output,
    })) = cli.command
    {
        let source = checkpoints
            .zip(checkpoint_key)
            .map(|(file, key)| wardgate_controller::offline::CheckpointSource { file, key });
        return wardgate_controller::offline::audit_verify(
            &data,
            audit_head,
            source.as_ref(),
            output,
        );
    }
    wardgate_daemon::log::init(cli.log.log_format);
    let cfg = ControllerConfig::resolve(
        cli.config.as_deref(),
        Overrides {
            listen: cli.listen,
            data: cli.data,
            certs: cli.certs,
        },
    )?;
    let store: Arc<dyn Store> = match &cfg.store.postgres {
        // Connecting waits on the store's own runtime: off this worker (block_in_place).
        Some(url) => Arc::new(
            tokio::task::block_in_place(|| PgStore::connect(url))
                .context("opening the PostgreSQL store (store.postgres)")?,
        ),
        None => Arc::new(
            SqliteStore::open_with_head(&cfg.data, &cli.settings.audit_head_path(&cfg.data))
                .with_context(|| format!("opening store in {}", cfg.data.display()))?,
        ),
    };
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
    // SOC sinks: a collector that is down is retried; a CA that does not read stops here.
    // Signed audit checkpoints, on by default: to every sink, so the SOC holds what the trail
    // is checked against (`audit verify --checkpoints`).
    let c = &cfg.audit_checkpoints;
    let checkpoints = if cfg.sinks.is_empty() {
        if c.enabled {
            tracing::info!("no SOC sinks: no audit checkpoint leaves the controller");
        }
        None
    } else if !c.enabled {
        tracing::warn!(
            "audit checkpoints are off (audit_checkpoints.enabled: false): a cut or rewritten \
             trail cannot be detected by the SOC"
        );
        None
    } else {
        let key = SigningKey::load_or_create(&c.key_path(&cfg.data))
            .context("the audit checkpoint key")?;
        Some(checkpoints::start(store.clone(), key, c))
    };
    let sinks =
        Sinks::start_with_checkpoints(store.clone(), &cfg.sinks, checkpoints, counters.clone())
            .context("starting the SOC sinks")?;
    let tls = TlsFiles::in_dir(&cfg.certs);
    // Certificates (and the revocation list) checked before READY=1: a controller that cannot
    // serve TLS never says ready.
    TlsState::load(&tls, &cli.settings.crl_paths(&cfg.certs))?;
    let mut ctx = server::context(store, counters, &cli.settings);
    ctx.availability = cfg.availability;
    // The browser console, on its own HTTPS listener, sharing the services' context.
    let console = match &cfg.console {
        None => None,
        Some(c) => {
            let l = tokio::net::TcpListener::bind(c.listen)
                .await
                .with_context(|| format!("binding the console {}", c.listen))?;
            tracing::info!(listen = %c.listen, "console served (HTTPS)");
            let (ctx, c, tls) = (ctx.clone(), c.clone(), tls.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = wardgate_controller::console::serve(ctx, &c, &tls, l).await {
                    tracing::error!(error = %e, "console stopped");
                }
            }))
        }
    };
    let listen = listener.local_addr()?;
    // Handled before READY=1: a SIGTERM right after it is a clean stop.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tracing::info!(%listen, data = %cfg.data.display(), "controller serving");
    wardgate_daemon::notify::ready(&format!("serving on {listen}"));
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down");
        wardgate_daemon::notify::stopping("finishing open calls");
    };
    let served = server::serve_with(ctx, &tls, &cli.settings, listener, shutdown).await;
    if let Some(c) = console {
        c.abort();
    }
    sinks.stop().await;
    served
}
