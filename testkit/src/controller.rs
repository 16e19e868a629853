//! A controller in-process on loopback with real mTLS and a real store (SQLite, or any
//! [`Store`] given, e.g. PostgreSQL), for tests, the controller bench and the demo: lab
//! certificates, the server task, its metrics endpoint, and clients per identity.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use wardgate_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient, agent_service_client::AgentServiceClient,
    alert_service_client::AlertServiceClient,
};

use wardgate_controller::{
    certs,
    cli::remote::Remote,
    metrics::{self, ControllerMetrics},
    server::{self, Settings, TlsFiles},
    store::{SqliteStore, Store},
};

/// Writes lab certificates for `gateways` and `users` (name, role) under `dir/certs`: that
/// directory.
fn lab_certs(dir: &Path, gateways: &[String], users: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    let cert_dir = dir.join("certs");
    let users: Vec<_> = users
        .iter()
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect();
    certs::init(&cert_dir, gateways, &users, &certs::InitOptions::default())
        .context("writing lab certificates")?;
    Ok(cert_dir)
}

/// A running controller on a store of type `S` (SQLite unless started on another); stops when
/// dropped.
pub struct LabController<S: ?Sized = SqliteStore> {
    pub addr: SocketAddr,
    pub store: Arc<S>,
    /// Where `GET /metrics` is served (plain HTTP, loopback).
    pub metrics_addr: SocketAddr,
    /// The metrics the server and the sinks update.
    pub metrics: Arc<ControllerMetrics>,
    /// The enrollment listener (TLS without client certificates), when started with one.
    pub enroll_addr: Option<SocketAddr>,
    certs: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    metrics_task: JoinHandle<()>,
    sinks: Option<wardgate_controller::sinks::Sinks>,
}

impl LabController {
    /// Writes lab certificates for `gateways` and `users` (name, role) under `dir/certs`, opens
    /// the store in `dir/data` and serves on an ephemeral loopback port (metrics on another).
    pub async fn start(
        dir: &Path,
        gateways: &[String],
        users: &[(&str, &str)],
    ) -> anyhow::Result<LabController> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        LabController::serve_on(dir, gateways, users, listener, &Settings::default()).await
    }

    /// [`LabController::start`] on `listen` (e.g. the port of a controller that was stopped,
    /// so its agents reconnect to a new store).
    pub async fn start_at(
        dir: &Path,
        gateways: &[String],
        users: &[(&str, &str)],
        listen: &str,
    ) -> anyhow::Result<LabController> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        LabController::start_on(dir, gateways, users, listener).await
    }

    /// As `start`, with server settings (limits, revocation list, audit head file).
    pub async fn start_with(
        dir: &Path,
        gateways: &[String],
        users: &[(&str, &str)],
        settings: &Settings,
    ) -> anyhow::Result<LabController> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        LabController::serve_on(dir, gateways, users, listener, settings).await
    }

    /// As `start`, with SOC sinks (reading the store in `dir/data` from their cursors).
    pub async fn start_with_sinks(
        dir: &Path,
        gateways: &[String],
        users: &[(&str, &str)],
        sinks: &[wardgate_controller::config::SinkConfig],
    ) -> anyhow::Result<LabController> {
        LabController::start_with_soc(dir, gateways, users, sinks, None).await
    }

    /// As `start_with_sinks`, the sinks also sending signed audit checkpoints (the key as
    /// configured, default `dir/data/audit-checkpoint.key`).
    pub async fn start_with_soc(
        dir: &Path,
        gateways: &[String],
        users: &[(&str, &str)],
        sinks: &[wardgate_controller::config::SinkConfig],
        checkpoints: Option<&wardgate_controller::config::CheckpointConfig>,
    ) -> anyhow::Result<LabController> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut lab =
            LabController::serve_on(dir, gateways, users, listener, &Settings::default()).await?;
        let store: Arc<dyn Store> = lab.store.clone();
        let latest = match checkpoints {
            None => None,
            Some(c) => {
                let key = wardgate_controller::audit::signing::SigningKey::load_or_create(
                    &c.key_path(&dir.join("data")),
                )?;
                Some(wardgate_controller::sinks::checkpoints::start(
                    store.clone(),
                    key,
                    c,
                ))
            }
        };
        lab.sinks = Some(wardgate_controller::sinks::Sinks::start_with_checkpoints(
            store,
            sinks,
            latest,
            lab.metrics.clone(),
        )?);
        Ok(lab)
    }

    /// As `start`, serving on `listener` (a controller that comes up at a known address).
    pub async fn start_on(
        dir: &Path,
        gateways: &[String],
        users: &[(&str, &str)],
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<LabController> {
        LabController::serve_on(dir, gateways, users, listener, &Settings::default()).await
    }

    async fn serve_on(
        dir: &Path,
        gateways: &[String],
        users: &[(&str, &str)],
        listener: tokio::net::TcpListener,
        settings: &Settings,
    ) -> anyhow::Result<LabController> {
        lab_certs(dir, gateways, users)?;
        LabController::serve_existing(dir, listener, None, settings).await
    }

    /// A controller with an enrollment listener (both on ephemeral loopback ports), lab
    /// certificates for `users` and `gateways` (from the root, as before enrollment existed):
    /// other gateways enroll.
    pub async fn start_fleet(
        dir: &Path,
        gateways: &[String],
        users: &[(&str, &str)],
        settings: &Settings,
    ) -> anyhow::Result<LabController> {
        lab_certs(dir, gateways, users)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let enroll = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        LabController::serve_existing(dir, listener, Some(enroll), settings).await
    }

    /// The controller of `dir` again (its certificates and store kept) at `addr` and, if
    /// given, `enroll_addr`: a controller restart. Waits up to 5 s for the ports to be free.
    pub async fn restart(
        dir: &Path,
        addr: SocketAddr,
        enroll_addr: Option<SocketAddr>,
        settings: &Settings,
    ) -> anyhow::Result<LabController> {
        let bind = |a: SocketAddr| async move {
            for _ in 0..100 {
                if let Ok(l) = tokio::net::TcpListener::bind(a).await {
                    return Ok(l);
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("listening on {a}"))
        };
        let listener = bind(addr).await?;
        let enroll = match enroll_addr {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        LabController::serve_existing(dir, listener, enroll, settings).await
    }

    /// Serves the certificates and store already in `dir`.
    async fn serve_existing(
        dir: &Path,
        listener: tokio::net::TcpListener,
        enroll: Option<tokio::net::TcpListener>,
        settings: &Settings,
    ) -> anyhow::Result<LabController> {
        let data = dir.join("data");
        let store = Arc::new(
            SqliteStore::open_with_head(&data, &settings.audit_head_path(&data))
                .context("opening the store")?,
        );
        let shared: Arc<dyn Store> = store.clone();
        LabController::serve_store(dir.join("certs"), store, shared, listener, enroll, settings)
            .await
    }

    /// A second controller on this one's store and certificates, on its own ephemeral loopback
    /// port (and metrics port): a replica, as two controller processes on one database are.
    /// Each has its own server context, so a write wakes the agent streams of the replica it
    /// went through only.
    pub async fn replica(&self) -> anyhow::Result<LabController> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let shared: Arc<dyn Store> = self.store.clone();
        LabController::serve_store(
            self.certs.clone(),
            self.store.clone(),
            shared,
            listener,
            None,
            &Settings::default(),
        )
        .await
    }

    /// A controller with this one's certificates on another, new store in `data` (another
    /// epoch): a standby that is not a replica (a store rebuilt or restored elsewhere).
    pub async fn beside(&self, data: &Path) -> anyhow::Result<LabController> {
        let settings = Settings::default();
        let store = Arc::new(
            SqliteStore::open_with_head(data, &settings.audit_head_path(data))
                .context("opening the store")?,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let shared: Arc<dyn Store> = store.clone();
        LabController::serve_store(self.certs.clone(), store, shared, listener, None, &settings)
            .await
    }

    /// A controller holding the demo site (`device-profiles/sites/demo-ward.yaml`) and the
    /// profile library, loaded through the API by `engineer` (who must be among `users`).
    pub async fn with_demo_site(
        dir: &Path,
        gateways: &[String],
        users: &[(&str, &str)],
        engineer: &str,
    ) -> anyhow::Result<LabController> {
        let lab = LabController::start(dir, gateways, users).await?;
        lab.push_demo_site(engineer, "CHG-1 commissioning").await?;
        Ok(lab)
    }
}

impl LabController<dyn Store> {
    /// Lab certificates for `gateways` and `users` under `dir/certs`, serving `store` (opened
    /// by the caller: a PostgreSQL database, say) on an ephemeral loopback port.
    pub async fn start_on_store(
        dir: &Path,
        gateways: &[String],
        users: &[(&str, &str)],
        store: Arc<dyn Store>,
    ) -> anyhow::Result<LabController<dyn Store>> {
        let cert_dir = lab_certs(dir, gateways, users)?;
        LabController::serve_dyn(cert_dir, store).await
    }

    /// Serves `store` with the certificates in `cert_dir` on an ephemeral loopback port.
    async fn serve_dyn(
        cert_dir: PathBuf,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<LabController<dyn Store>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        LabController::serve_store(
            cert_dir,
            store.clone(),
            store,
            listener,
            None,
            &Settings::default(),
        )
        .await
    }
}

impl<S: ?Sized + Send + Sync + 'static> LabController<S> {
    /// A replica on `store`, another connection to this one's database (a second
    /// `PgStore` on the same URL), with this one's certificates: as a second controller
    /// process is. Its server follows the store's changes (`push::follow`), so a write
    /// through either replica reaches the agents of both, when the store reports changes.
    pub async fn replica_on(
        &self,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<LabController<dyn Store>> {
        LabController::serve_dyn(self.certs.clone(), store).await
    }

    /// Serves `store` (which is `shared`, as the server sees it) with the certificates in
    /// `cert_dir`.
    async fn serve_store(
        cert_dir: PathBuf,
        store: Arc<S>,
        shared: Arc<dyn Store>,
        listener: tokio::net::TcpListener,
        enroll: Option<tokio::net::TcpListener>,
        settings: &Settings,
    ) -> anyhow::Result<LabController<S>> {
        let enroll_addr = enroll.as_ref().map(|l| l.local_addr()).transpose()?;
        let settings = settings.clone();
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let tls = TlsFiles::in_dir(&cert_dir);
        let counters = Arc::new(ControllerMetrics::default());
        let registry = Arc::new(counters.registry(shared.clone()));
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let metrics_addr = metrics_listener.local_addr()?;
        let metrics_task = tokio::spawn(metrics::serve(metrics_listener, registry));
        let served = counters.clone();
        let task = tokio::spawn(async move {
            let ctx = server::context(shared, served, &settings);
            server::serve_enrolling(ctx, &tls, &settings, listener, enroll, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(LabController {
            addr,
            store,
            metrics_addr,
            metrics: counters,
            enroll_addr,
            certs: cert_dir,
            stop: Some(stop),
            task: Some(task),
            metrics_task,
            sinks: None,
        })
    }

    /// Loads the demo site (`device-profiles/sites/demo-ward.yaml`) and the profile library
    /// through the API, as `engineer`, with `reason`.
    pub async fn push_demo_site(
        &self,
        engineer: &str,
        reason: &str,
    ) -> anyhow::Result<wardgate_controller::cli::push::Loaded> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        self.push_site(
            engineer,
            &root.join("device-profiles/sites/demo-ward.yaml"),
            &root.join("device-profiles"),
            reason,
        )
        .await
    }

    pub fn certs(&self) -> &Path {
        &self.certs
    }

    /// Where gateways enroll (`wardgate-agent enroll --controller`), if this controller listens
    /// for enrollments.
    pub fn enroll_url(&self) -> Option<String> {
        self.enroll_addr
            .map(|a| format!("https://localhost:{}", a.port()))
    }

    /// The address clients dial; the server certificate is issued for `localhost`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// wardctl's connection settings for `identity` (`user-NAME` or `gateway-NAME`).
    pub fn remote(&self, identity: &str) -> Remote {
        Remote::to(self.url(), self.certs.clone(), identity, "localhost")
    }

    pub async fn channel(&self, identity: &str) -> anyhow::Result<Channel> {
        self.remote(identity).channel().await
    }

    pub async fn admin(&self, user: &str) -> anyhow::Result<AdminServiceClient<Channel>> {
        Ok(AdminServiceClient::new(
            self.channel(&format!("user-{user}")).await?,
        ))
    }

    pub async fn alerts(&self, user: &str) -> anyhow::Result<AlertServiceClient<Channel>> {
        Ok(AlertServiceClient::new(
            self.channel(&format!("user-{user}")).await?,
        ))
    }

    pub async fn agent(&self, gateway: &str) -> anyhow::Result<AgentServiceClient<Channel>> {
        // The codec limits of a real agent (agent/src/sync.rs).
        Ok(
            AgentServiceClient::new(self.channel(&format!("gateway-{gateway}")).await?)
                .max_decoding_message_size(wardgate_proto::MAX_BUNDLE_BYTES)
                .max_encoding_message_size(wardgate_proto::MAX_REQUEST_BYTES),
        )
    }

    /// Makes `gateway`'s compiled policy large, as a ward with many services to a big address
    /// group would: a group `big-hosts` of `hosts` IPv6 hosts, then for each of `profiles` a
    /// profile of `flows` flows to that group and a new device on `gateway` using it. Returns
    /// each device's write (the last ones may be refused) and stops at the first refusal.
    pub async fn grow_policy(
        &self,
        user: &str,
        gateway: &str,
        profiles: usize,
        flows: usize,
        hosts: usize,
    ) -> anyhow::Result<Vec<Result<pb::WriteResponse, tonic::Status>>> {
        use std::fmt::Write as _;
        let mut admin = self.admin(user).await?;
        admin
            .upsert_group(pb::UpsertGroupRequest {
                group: Some(pb::Group {
                    name: "big-hosts".into(),
                    cidrs: (0..hosts)
                        .map(|i| format!("2001:db8:77::{i:x}/128"))
                        .collect(),
                }),
                reason: "grow".into(),
            })
            .await?;
        let mut out = Vec::new();
        for p in 0..profiles {
            let mut yaml = format!(
                "name: big-{p}\ndescription: many services\ndefault_mode: enforce\nflows:\n"
            );
            for f in 0..flows {
                writeln!(
                    yaml,
                    "  - {{name: svc-{f}, direction: from-device, protocol: tcp, \
                     peers: [group:big-hosts], ports: {}}}",
                    10_000 + f
                )?;
            }
            admin
                .upsert_profile(pb::UpsertProfileRequest {
                    accept_impact: false,
                    yaml,
                    reason: "grow".into(),
                    dry_run: false,
                })
                .await?;
            let r = admin
                .upsert_device(pb::UpsertDeviceRequest {
                    accept_impact: false,
                    device: Some(pb::Device {
                        name: format!("big-device-{p}"),
                        mac: format!("02:00:00:77:00:{p:02x}"),
                        addresses: vec![format!("2001:db8:78::{p:x}")],
                        profile: format!("big-{p}"),
                        mode: "enforce".into(),
                        mode_enum: pb::DeviceMode::Enforce.into(),
                        gateway: gateway.into(),
                        ..Default::default()
                    }),
                    reason: "grow".into(),
                })
                .await
                .map(tonic::Response::into_inner);
            let refused = r.is_err();
            out.push(r);
            if refused {
                break;
            }
        }
        Ok(out)
    }

    /// Loads a site file and a profile directory through the admin API, as `wardctl push` does.
    pub async fn push_site(
        &self,
        user: &str,
        site: &Path,
        profiles: &Path,
        reason: &str,
    ) -> anyhow::Result<wardgate_controller::cli::push::Loaded> {
        let (site, set) = wardgate_controller::cli::push::read(site, profiles)?;
        let mut admin = self.admin(user).await?;
        wardgate_controller::cli::push::load(&mut admin, &site, &set, reason).await
    }

    /// Stops serving: waits up to 5 s for open calls (a watch stream never ends by itself),
    /// then drops the server.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(sinks) = self.sinks.take() {
            sinks.stop().await;
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), &mut task).await {
            Ok(done) => done.context("server task")?,
            Err(_) => {
                task.abort();
                Ok(())
            }
        }
    }
}

impl<S: ?Sized> Drop for LabController<S> {
    fn drop(&mut self) {
        self.metrics_task.abort();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
