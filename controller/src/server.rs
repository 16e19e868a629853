//! The controller server: the three services over mTLS (see `listener`: revocation list,
//! handshake timeout, connection limit), message size limits, graceful shutdown.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use tonic::transport::Server;
use wardgate_proto::v1::{
    admin_service_server::AdminServiceServer, agent_service_server::AgentServiceServer,
    alert_service_server::AlertServiceServer, enroll_service_server::EnrollServiceServer,
};

use crate::{
    listener,
    metrics::ControllerMetrics,
    push::Push,
    service::{Ctx, admin::Admin, agent::Agent, alerts::Alerts, enroll::Enroll},
    store::Store,
};

/// Largest request the controller decodes (a profile or an alert batch is far smaller).
pub const MAX_MESSAGE: usize = wardgate_proto::MAX_REQUEST_BYTES;

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

/// Server settings beyond where to listen and which files to read; flags of
/// `wardgate-controller` (defaults for a small site).
#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// Emergency quarantine by the SOC role: `request` (an engineer approves each one) or
    /// `direct` (at once, for at most --soc-quarantine-max, audited, the sinks told).
    #[arg(long, value_enum, default_value_t = SocQuarantineMode::Request)]
    pub soc_quarantine: SocQuarantineMode,
    /// How long a SOC quarantine lasts at most (then the device goes back to its mode before).
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
    pub soc_quarantine_max: Duration,
    /// A TLS handshake not finished within this time is cut (a client that opens TCP and
    /// never speaks).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Open connections (handshakes included) beyond this are closed at once.
    #[arg(long, default_value_t = 2048)]
    pub max_connections: usize,
    /// Refuse to start unless the server certificate is issued for this name (the name agents
    /// and wardctl check).
    #[arg(long)]
    pub server_name: Option<String>,
    /// The revocation list (`wardctl certs revoke` writes it); reloaded when it changes.
    /// Default: crl.pem in the certificate directory. Required: a list that is missing or
    /// does not load stops the start, and later refuses new connections until it loads again.
    #[arg(long)]
    pub crl: Option<PathBuf>,
    /// The audit head file: every write appends the chain head (sequence, hash) to it, and
    /// `audit verify` checks the store against it. Default: audit-head.log in the data
    /// directory; put it where the store's writer cannot rewrite it (another volume, chattr +a).
    #[arg(long)]
    pub audit_head: Option<PathBuf>,
    /// Days of flow records kept (aggregated per device, peer, port and day); older days are
    /// pruned as new records arrive.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3660))]
    pub flow_retention_days: u32,
    /// Distinct flow rows (direction, peer, protocol, port) kept per device per UTC day;
    /// records that would make more are counted per device and day (`wardctl devices
    /// baseline` shows them), not stored, so no gateway can grow the store without bound.
    #[arg(long, default_value_t = crate::store::DEFAULT_ROWS_PER_DEVICE_DAY,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub flow_rows_per_device_day: u32,
    /// Where gateways enroll (`wardgate-agent enroll --controller https://HOST:PORT`): TLS
    /// without a client certificate, the enrollment service only. Default: no enrollment.
    #[arg(long)]
    pub enroll_listen: Option<std::net::SocketAddr>,
    /// Lifetime of the gateway certificates the controller issues at enrollment and renewal
    /// (agents renew at two thirds of it).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub gateway_cert_lifetime: Duration,
    /// Enrollment attempts per client address at once; refilled at `--enroll-per-minute`
    /// (all addresses together: ten times both).
    #[arg(long, default_value_t = 5)]
    pub enroll_burst: u32,
    #[arg(long, default_value_t = 6)]
    pub enroll_per_minute: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 2048,
            server_name: None,
            crl: None,
            audit_head: None,
            flow_retention_days: 30,
            flow_rows_per_device_day: crate::store::DEFAULT_ROWS_PER_DEVICE_DAY,
            enroll_listen: None,
            gateway_cert_lifetime: crate::issuing::DEFAULT_LIFETIME,
            enroll_burst: 5,
            enroll_per_minute: 6,
            soc_quarantine: SocQuarantineMode::Request,
            soc_quarantine_max: Duration::from_secs(4 * 3600),
        }
    }
}

impl Settings {
    /// The revocation list: as configured, or `crl.pem` in `certs`.
    pub fn crl_path(&self, certs: &Path) -> PathBuf {
        self.crl.clone().unwrap_or_else(|| certs.join("crl.pem"))
    }

    /// Every revocation list the listener needs: the root's, and the issuing CA's when `certs`
    /// holds an issuing CA.
    pub fn crl_paths(&self, certs: &Path) -> Vec<PathBuf> {
        let mut v = vec![self.crl_path(certs)];
        if certs.join(crate::issuing::ISSUING_CERT).exists() {
            v.push(certs.join(crate::issuing::ISSUING_CRL));
        }
        v
    }

    /// The fleet settings and the issuing CA of `certs`.
    pub fn fleet(&self, certs: &Path) -> anyhow::Result<crate::fleet::Fleet> {
        if self.gateway_cert_lifetime < Duration::from_secs(1) {
            anyhow::bail!("--gateway-cert-lifetime must be at least 1s");
        }
        Ok(crate::fleet::Fleet {
            issuing: crate::issuing::IssuingCa::load(certs).with_context(|| {
                format!(
                    "the issuing CA in {} (the controller's user must be able to read \
                     issuing-ca.key, as it reads server.key: chgrp wardgate-controller; chmod 640)",
                    certs.display()
                )
            })?,
            lifetime: self.gateway_cert_lifetime,
            limiter: crate::fleet::RateLimiter::new(self.enroll_burst, self.enroll_per_minute),
        })
    }

    /// The audit head file for the store in `data`.
    pub fn audit_head_path(&self, data: &Path) -> PathBuf {
        self.audit_head
            .clone()
            .unwrap_or_else(|| data.join(crate::audit::head::FILE_NAME))
    }
}

/// Checks that the server certificate is issued for `name` (a DNS or IP subject alternative
/// name), so a misconfigured name fails at start rather than at every client.
pub fn check_server_name(files: &TlsFiles, name: &str) -> anyhow::Result<()> {
    let pem =
        std::fs::read(&files.cert).with_context(|| format!("reading {}", files.cert.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not PEM: {e}", files.cert.display()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{}: not a certificate: {e}", files.cert.display()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    let ip = match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip).map(std::net::IpAddr::from).ok(),
                        16 => <[u8; 16]>::try_from(*ip).map(std::net::IpAddr::from).ok(),
                        _ => None,
                    };
                    names.extend(ip.map(|i| i.to_string()));
                }
                _ => {}
            }
        }
    }
    let wanted = name
        .parse::<std::net::IpAddr>()
        .map_or_else(|_| name.to_ascii_lowercase(), |ip| ip.to_string());
    if names.iter().any(|n| n.to_ascii_lowercase() == wanted) {
        Ok(())
    } else {
        anyhow::bail!(
            "{} is issued for [{}], not the configured server name `{name}`",
            files.cert.display(),
            names.join(", ")
        )
    }
}

/// The services' shared context for `store`, counting into `metrics`.
pub fn context(store: Arc<dyn Store>, metrics: Arc<ControllerMetrics>, settings: &Settings) -> Ctx {
    Ctx {
        store,
        push: Arc::new(Push::default()),
        metrics,
        flow_limits: crate::store::FlowLimits {
            retention_days: settings.flow_retention_days,
            rows_per_device_day: settings.flow_rows_per_device_day,
        },
        fleet: Arc::default(),
        soc_quarantine: crate::service::quarantine::SocQuarantine {
            direct: settings.soc_quarantine == SocQuarantineMode::Direct,
            max: settings.soc_quarantine_max,
        },
        availability: Default::default(),
        writes: Arc::default(),
    }
}

/// What the SOC may do about quarantine (`--soc-quarantine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SocQuarantineMode {
    /// The SOC files a request; an engineer approves it.
    #[default]
    Request,
    /// The SOC quarantines at once (time-limited, audited, the sinks told).
    Direct,
}

/// Serves until `shutdown` resolves; the services count into `metrics`.
pub async fn serve(
    store: Arc<dyn Store>,
    metrics: Arc<ControllerMetrics>,
    tls: &TlsFiles,
    settings: &Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let ctx = context(store, metrics, settings);
    serve_with(ctx, tls, settings, listener, shutdown).await
}

/// As [`serve`], with a context shared with the console (its writes wake the same agents'
/// streams).
pub async fn serve_with(
    ctx: Ctx,
    tls: &TlsFiles,
    settings: &Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let enroll = match settings.enroll_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("enrollment listener on {addr}"))?,
        ),
        None => None,
    };
    serve_enrolling(ctx, tls, settings, listener, enroll, shutdown).await
}

/// A task that ends when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// As [`serve_with`], with the enrollment service on `enroll` when given (its own listener:
/// the mTLS one never takes a connection without a client certificate).
pub async fn serve_enrolling(
    mut ctx: Ctx,
    tls: &TlsFiles,
    settings: &Settings,
    listener: tokio::net::TcpListener,
    enroll: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    if settings.max_connections == 0 {
        anyhow::bail!("--max-connections must be at least 1");
    }
    if let Some(name) = &settings.server_name {
        check_server_name(tls, name)?;
    }
    let certs_dir = tls.ca.parent().unwrap_or(Path::new("."));
    ctx.fleet = Arc::new(settings.fleet(certs_dir)?);
    // Other controllers' writes on a shared store reach this one's agents too; ends with the
    // serving (an aborted task when dropped).
    let _follow = AbortOnDrop(tokio::spawn(crate::push::follow(
        ctx.store.clone(),
        ctx.push.clone(),
    )));
    let limits = listener::Limits {
        handshake_timeout: settings.handshake_timeout,
        max_connections: settings.max_connections,
    };
    let incoming = listener::incoming(
        listener,
        tls.clone(),
        settings.crl_paths(certs_dir),
        limits.clone(),
    )?;
    let (stop_enroll, enroll_stopped) = tokio::sync::oneshot::channel::<()>();
    let enroll_task = match enroll {
        Some(l) => {
            if ctx.fleet.issuing.is_none() {
                tracing::warn!(
                    "enrollment listener without an issuing CA in {}: every enrollment is refused",
                    certs_dir.display()
                );
            }
            let incoming = listener::incoming_enroll(l, tls, limits)?;
            let svc =
                EnrollServiceServer::new(Enroll(ctx.clone())).max_decoding_message_size(64 << 10);
            Some(tokio::spawn(
                Server::builder()
                    .add_service(svc)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = enroll_stopped.await;
                    }),
            ))
        }
        None => None,
    };
    // SOC quarantines end on time while the controller serves.
    let timers = tokio::spawn(crate::service::quarantine::expire_loop(
        ctx.clone(),
        std::time::Duration::from_secs(5),
    ));
    let served = Server::builder()
        .add_service(
            AgentServiceServer::new(Agent(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                // Policy bundles: the limit agents decode with (writes over it are refused).
                .max_encoding_message_size(wardgate_proto::MAX_BUNDLE_BYTES),
        )
        .add_service(
            // A site push is one request (one transaction).
            AdminServiceServer::new(Admin(ctx.clone()))
                .max_decoding_message_size(wardgate_proto::MAX_SITE_BYTES),
        )
        .add_service(AlertServiceServer::new(Alerts(ctx)).max_decoding_message_size(MAX_MESSAGE))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("serving gRPC");
    timers.abort();
    let _ = stop_enroll.send(());
    if let Some(t) = enroll_task {
        t.await
            .context("the enrollment server task")?
            .context("serving enrollment")?;
    }
    served
}
