//! The agent's link to the controller: watch the gateway's generations over mTLS, cache each
//! bundle as the desired-state file (so a restart during a controller outage still has it),
//! hand it to the map writer, and report what was applied; stream alerts from the outbox and
//! drop them once acknowledged. Reconnects with a bounded backoff, resumes from the last
//! generation applied, and re-sends every unacknowledged alert.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use wardgate_proto::v1::{
    AlertBatch, RegisterRequest, StatusReport, WatchPolicyRequest,
    agent_service_client::AgentServiceClient,
};

use crate::{alerts::AlertQueue, config::ControllerConfig, metrics::Live};

/// Applied generation (or the error) reported back by the map writer.
pub struct Applied {
    pub generation: u32,
    pub error: String,
}

async fn connect(cfg: &ControllerConfig) -> anyhow::Result<AgentServiceClient<Channel>> {
    let read = |name: String| {
        let p = cfg.certs.join(&name);
        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())?))
        .identity(Identity::from_pem(
            read(format!("gateway-{}.pem", cfg.gateway))?,
            read(format!("gateway-{}.key", cfg.gateway))?,
        ))
        .domain_name(cfg.server_name.clone());
    let ch = Channel::from_shared(cfg.address.clone())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {}", cfg.address))?;
    Ok(AgentServiceClient::new(ch))
}

fn write_atomic(path: &PathBuf, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// What one connection works with; it outlives connections.
struct Link<'a> {
    cfg: &'a ControllerConfig,
    desired: &'a PathBuf,
    last_applied: u32,
    notify: &'a mpsc::Sender<()>,
    applied: &'a mut mpsc::Receiver<Applied>,
    alerts: Arc<AlertQueue>,
    metrics: Live,
    /// The last session got as far as registering: the next retry starts from the shortest delay.
    connected: bool,
}

/// Runs forever: `last_applied` is where to resume, `notify` wakes the map writer after a new
/// desired state was written, `applied` carries the writer's result back for reporting, and
/// `alerts` is the outbox the event reader adds to.
pub async fn run(
    cfg: ControllerConfig,
    desired: PathBuf,
    last_applied: u32,
    notify: mpsc::Sender<()>,
    mut applied: mpsc::Receiver<Applied>,
    alerts: Arc<AlertQueue>,
    metrics: Live,
) {
    let mut link = Link {
        cfg: &cfg,
        desired: &desired,
        last_applied,
        notify: &notify,
        applied: &mut applied,
        alerts,
        metrics,
        connected: false,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        link.connected = false;
        let ended = session(&mut link).await;
        link.metrics.controller_connected.set(0);
        match ended {
            Ok(()) => tracing::warn!("controller closed the policy stream; reconnecting"),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff, "controller unreachable; enforcing the last policy")
            }
        }
        if link.connected {
            backoff = Duration::from_secs(1);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            // The agent is stopping and wants its alerts delivered: retry now.
            () = link.alerts.hurried() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Sends every alert of the outbox not yet sent on this connection.
async fn flush(queue: &AlertQueue, out: &mpsc::Sender<AlertBatch>) -> anyhow::Result<()> {
    loop {
        let alerts = queue.lock().next_batch();
        if alerts.is_empty() {
            return Ok(());
        }
        out.send(AlertBatch { alerts })
            .await
            .context("alert stream closed")?;
    }
}

async fn session(link: &mut Link<'_>) -> anyhow::Result<()> {
    let cfg = link.cfg;
    let mut client = connect(cfg).await?;
    let reg = client
        .register(RegisterRequest {
            gateway: cfg.gateway.clone(),
            interfaces: vec![],
            agent_version: env!("CARGO_PKG_VERSION").into(),
        })
        .await?
        .into_inner();
    link.connected = true;
    link.metrics.controller_connects.inc();
    link.metrics.controller_connected.set(1);
    link.metrics
        .controller_generation
        .set(i64::from(reg.latest_generation));
    tracing::info!(
        gateway = cfg.gateway,
        latest = reg.latest_generation,
        resume_after = link.last_applied,
        pending_alerts = link.alerts.lock().len(),
        "connected to controller"
    );
    let mut stream = client
        .watch_policy(WatchPolicyRequest {
            gateway: cfg.gateway.clone(),
            last_applied_generation: link.last_applied,
        })
        .await?
        .into_inner();
    let (out, out_rx) = mpsc::channel::<AlertBatch>(8);
    let mut acks = client
        .clone()
        .report_alerts(ReceiverStream::new(out_rx))
        .await?
        .into_inner();
    link.alerts.lock().reconnected();
    flush(&link.alerts, &out).await?;
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(bundle) = msg? else { return Ok(()) };
                // Validate before caching: a bad bundle is reported, never written.
                if let Err(e) = wardgate_policy::DesiredState::from_json(&bundle.desired_state_json) {
                    let error = format!("generation {} does not parse: {e}", bundle.generation);
                    client.report_status(StatusReport { gateway: cfg.gateway.clone(), applied_generation: link.last_applied, error }).await?;
                    continue;
                }
                write_atomic(link.desired, &bundle.desired_state_json).with_context(|| format!("writing {}", link.desired.display()))?;
                tracing::info!(generation = bundle.generation, reason = bundle.reason, "policy received from controller");
                link.metrics.controller_generation.set(i64::from(bundle.generation));
                let _ = link.notify.send(()).await;
            }
            Some(done) = link.applied.recv() => {
                if done.error.is_empty() {
                    link.last_applied = done.generation;
                }
                client
                    .report_status(StatusReport { gateway: cfg.gateway.clone(), applied_generation: done.generation, error: done.error })
                    .await?;
            }
            () = link.alerts.added() => flush(&link.alerts, &out).await?,
            ack = acks.message() => {
                let Some(ack) = ack? else { return Ok(()) };
                link.alerts.ack(&ack.ids);
            }
        }
    }
}
