//! A controller in-process on loopback with real mTLS and a real SQLite store, for tests, the
//! controller bench and the demo: lab certificates, the server task, its metrics endpoint, and
//! clients per identity.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use wardgate_proto::v1::{
    admin_service_client::AdminServiceClient, agent_service_client::AgentServiceClient,
    alert_service_client::AlertServiceClient,
};

use crate::{
    certs,
    cli::remote::Remote,
    metrics::{self, ControllerMetrics},
    server::{self, Settings, TlsFiles},
    store::{SqliteStore, Store},
};

/// A running controller; stops when dropped.
pub struct LabController {
    pub addr: SocketAddr,
    pub store: Arc<SqliteStore>,
    /// Where `GET /metrics` is served (plain HTTP, loopback).
    pub metrics_addr: SocketAddr,
    certs: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    metrics_task: JoinHandle<()>,
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
        let cert_dir = dir.join("certs");
        let users: Vec<_> = users
            .iter()
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect();
        certs::init(&cert_dir, gateways, &users, &certs::InitOptions::default())
            .context("writing lab certificates")?;
        let data = dir.join("data");
        let store = Arc::new(
            SqliteStore::open_with_head(&data, &settings.audit_head_path(&data))
                .context("opening the store")?,
        );
        let settings = settings.clone();
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let tls = TlsFiles::in_dir(&cert_dir);
        let shared: Arc<dyn Store> = store.clone();
        let counters = Arc::new(ControllerMetrics::default());
        let registry = Arc::new(counters.registry(shared.clone()));
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let metrics_addr = metrics_listener.local_addr()?;
        let metrics_task = tokio::spawn(metrics::serve(metrics_listener, registry));
        let task = tokio::spawn(async move {
            server::serve(shared, counters, &tls, &settings, listener, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(LabController {
            addr,
            store,
            metrics_addr,
            certs: cert_dir,
            stop: Some(stop),
            task: Some(task),
            metrics_task,
        })
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
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        lab.push_site(
            engineer,
            &root.join("device-profiles/sites/demo-ward.yaml"),
            &root.join("device-profiles"),
            "CHG-1 commissioning",
        )
        .await?;
        Ok(lab)
    }

    pub fn certs(&self) -> &Path {
        &self.certs
    }

    /// The address clients dial; the server certificate is issued for `localhost`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// wardctl's connection settings for `identity` (`user-NAME` or `gateway-NAME`).
    pub fn remote(&self, identity: &str) -> Remote {
        Remote {
            controller: self.url(),
            certs: self.certs.clone(),
            identity: identity.to_string(),
            server_name: "localhost".into(),
        }
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
        Ok(AgentServiceClient::new(
            self.channel(&format!("gateway-{gateway}")).await?,
        ))
    }

    /// Loads a site file and a profile directory through the admin API, as `wardctl push` does.
    pub async fn push_site(
        &self,
        user: &str,
        site: &Path,
        profiles: &Path,
        reason: &str,
    ) -> anyhow::Result<crate::cli::push::Loaded> {
        let (site, set) = crate::cli::push::read(site, profiles)?;
        let mut admin = self.admin(user).await?;
        crate::cli::push::load(&mut admin, &site, &set, reason).await
    }

    /// Stops serving: waits up to 5 s for open calls (a watch stream never ends by itself),
    /// then drops the server.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
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

impl Drop for LabController {
    fn drop(&mut self) {
        self.metrics_task.abort();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
