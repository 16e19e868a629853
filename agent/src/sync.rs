//! The agent's link to the controller: watch the gateway's policy over mTLS, convert each
//! typed bundle (checking every field), hand it to the map writer in memory, and report what
//! was applied, with the controller store's epoch; stream alerts from the outbox and drop them
//! once acknowledged. Reconnects with a bounded backoff, telling the controller what it holds
//! (generation, epoch, content hash) so only a newer or different policy is sent, and re-sends
//! every unacknowledged alert. The map writer, not this task, keeps the last-known-good file.
//! `report_flows` sends flow records in acknowledged batches. The gateway's certificate is
//! renewed beside the link (`renew`), which then reconnects with the new one. Each status
//! carries the gateway's health (`health`): reported on connecting, with each generation,
//! every `health_report_every_ms`, and as soon as the watchdog fires or recovers, all through
//! `ReportStatus` with the generation and error last reported.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use wardgate_analysis::FlowRecord;
use wardgate_policy::DesiredState;
use wardgate_proto::{
    compat,
    v1::{
        AlertBatch, GatewayHealth, RegisterRequest, StatusReport, WatchPolicyRequest,
        agent_service_client::AgentServiceClient,
    },
};

use crate::{alerts::AlertQueue, config::ControllerConfig, health::HealthSource, metrics::Live};

/// How often the watchdog is looked at between health reports, so that a change is reported
/// within a second (one `pinned::status` read: a few dozen map lookups).
const WATCHDOG_POLL: Duration = Duration::from_secs(1);

/// What the agent enforces, as the controller names it: generation, the epoch of the store it
/// came from and its content hash (empty when unknown: the controller then sends its latest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub generation: u32,
    pub epoch: String,
    pub content_hash: String,
}

impl Holding {
    pub fn of(state: &DesiredState) -> Self {
        Holding {
            generation: state.generation,
            epoch: state.epoch.clone(),
            content_hash: state.content_hash.clone(),
        }
    }
}

/// What the map writer did with a bundle: what is enforced now, and the error if the bundle
/// was not applied (empty when it was).
pub struct Applied {
    pub holding: Holding,
    pub error: String,
}

/// A client of the controller's agent service as `cfg`'s gateway (mTLS), with the transport
/// limits both ends use: the first of `cfg`'s addresses that connects, each tried within
/// `connect_timeout` (certificate renewal and flow reports; the policy link picks its own).
pub async fn connect(cfg: &ControllerConfig) -> anyhow::Result<AgentServiceClient<Channel>> {
    let mut last = None;
    for address in cfg.address.as_slice() {
        match connect_to(cfg, address).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("controller.address is never empty"))
}

/// A client of the controller at `address`, connected within `cfg.connect_timeout()` (TCP and
/// TLS). The HTTP/2 keep-alive pings make a controller that vanished without closing the
/// connection (a host powered off, a cable pulled) a broken stream within about
/// `KEEPALIVE_EVERY + KEEPALIVE_TIMEOUT`, so the link moves on to a replica.
pub async fn connect_to(
    cfg: &ControllerConfig,
    address: &str,
) -> anyhow::Result<AgentServiceClient<Channel>> {
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
    let endpoint = Channel::from_shared(address.to_string())
        .with_context(|| format!("controller address `{address}`"))?
        .tls_config(tls)?
        .connect_timeout(cfg.connect_timeout())
        .http2_keep_alive_interval(KEEPALIVE_EVERY)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let ch = tokio::time::timeout(cfg.connect_timeout(), endpoint.connect())
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", cfg.connect_timeout()))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("connecting to {address}"))?;
    // The limits the controller uses: bundles up to MAX_BUNDLE_BYTES (it refuses writes that
    // would compile bigger ones), requests up to MAX_REQUEST_BYTES.
    Ok(AgentServiceClient::new(ch)
        .max_decoding_message_size(wardgate_proto::MAX_BUNDLE_BYTES)
        .max_encoding_message_size(wardgate_proto::MAX_REQUEST_BYTES))
}

/// HTTP/2 pings on the controller connection, and how long one may go unanswered.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one connection works with; it outlives connections.
struct Link<'a> {
    cfg: &'a ControllerConfig,
    holding: Holding,
    writer: &'a mpsc::Sender<Arc<DesiredState>>,
    applied: &'a mut mpsc::Receiver<Applied>,
    alerts: Arc<AlertQueue>,
    metrics: Live,
    /// The last session got as far as registering: the next retry starts from the shortest delay.
    connected: bool,
    /// The controller address of the current (or last) session.
    address: String,
    /// Bumped by the renewal task after each new certificate: the session ends and the next
    /// one connects with it.
    renewed: watch::Receiver<u64>,
    health: HealthSource,
    /// The error of the last status reported (empty: none), sent again with each health
    /// report so that one does not clear it.
    error: String,
    /// When the last status was reported and the watchdog it said.
    reported: Option<(Instant, Option<Watchdog>)>,
}

/// The watchdog as a health report says it: fired now, transitions to fired and back.
type Watchdog = (bool, u32, u32);

fn watchdog(h: Option<&GatewayHealth>) -> Option<Watchdog> {
    h.map(|h| {
        (
            h.watchdog_fired,
            h.watchdog_fired_count,
            h.watchdog_recovered_count,
        )
    })
}

/// Whether a status with `health` is due: none reported on this connection yet, the last
/// `every` old, or the watchdog changed since.
fn health_due(
    reported: Option<(Instant, Option<Watchdog>)>,
    health: Option<&GatewayHealth>,
    every: Duration,
) -> bool {
    reported.is_none_or(|(at, said)| at.elapsed() >= every || said != watchdog(health))
}

/// Runs forever: `holding` is what the map writer enforces at start (from the last-known-good
/// file), `writer` takes each converted bundle to the map writer, `applied` carries the
/// writer's result back for reporting, `alerts` is the outbox the event reader adds to, and
/// `health` what each status says of the gateway's health.
pub async fn run(
    cfg: ControllerConfig,
    holding: Holding,
    writer: mpsc::Sender<Arc<DesiredState>>,
    mut applied: mpsc::Receiver<Applied>,
    alerts: Arc<AlertQueue>,
    metrics: Live,
    health: HealthSource,
) {
    let (renewed_tx, renewed) = watch::channel(0u64);
    // In this task: stopping the link stops its renewals too.
    let renewal = async {
        if cfg.renewal.enabled {
            crate::renew::run(cfg.clone(), metrics.clone(), renewed_tx).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let link = Link {
        cfg: &cfg,
        holding,
        writer: &writer,
        applied: &mut applied,
        alerts,
        metrics: metrics.clone(),
        connected: false,
        address: String::new(),
        renewed,
        health,
        error: String::new(),
        reported: None,
    };
    tokio::select! {
        () = renewal => {}
        () = links(link) => {}
    }
}

/// Sessions one after the other over the configured addresses: after a session ends (its
/// stream broke, the controller closed it, refused this release) or an attempt fails, the
/// next address in order is tried at once; after a full round of addresses without a
/// registered session, the bounded backoff. A certificate renewal reconnects to the same one.
async fn links(mut link: Link<'_>) {
    let cfg = link.cfg;
    let addresses = cfg.address.as_slice();
    link.metrics.controller_at(addresses, None);
    let mut rotation = Rotation::new(addresses.len());
    loop {
        let address = &addresses[rotation.at];
        link.connected = false;
        link.address = address.clone();
        let ended = match session(&mut link).await {
            Ok(Ended::Renewed) => {
                link.metrics.controller_at(addresses, None);
                tracing::info!(address, "gateway certificate renewed: reconnecting with it");
                continue;
            }
            Ok(Ended::Closed) => Ok(()),
            Err(e) => Err(e),
        };
        link.metrics.controller_at(addresses, None);
        let wait = rotation.ended(link.connected);
        let next = &addresses[rotation.at];
        let left = if link.connected {
            "left controller"
        } else {
            "controller not reached"
        };
        match ended {
            Ok(()) => {
                tracing::warn!(address, next, retry_in = ?wait, "{left}: it closed the policy stream")
            }
            Err(e) if release_refused(&e) => {
                tracing::error!(address, next, error = format!("{e:#}"), retry_in = ?wait, "{left}: agent and controller releases are incompatible; no policy taken from it, enforcing the last policy")
            }
            Err(e) => {
                tracing::warn!(address, next, error = format!("{e:#}"), retry_in = ?wait, "{left}: unreachable or stream broken; enforcing the last policy")
            }
        }
        let Some(wait) = wait else { continue };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // The agent is stopping and wants its alerts delivered: retry now.
            () = link.alerts.hurried() => {}
        }
    }
}

/// Which controller address the link tries next, and when: round robin over `n` addresses,
/// the next one at once after an attempt or a session ends, the backoff (1 s doubling to 30 s,
/// back to 1 s after a registered session) only after a whole round without a session.
#[derive(Debug)]
struct Rotation {
    n: usize,
    /// The address to try next.
    at: usize,
    /// Attempts since the last registered session or the last wait.
    tries: usize,
    backoff: Duration,
}

impl Rotation {
    fn new(n: usize) -> Self {
        Rotation {
            n,
            at: 0,
            tries: 0,
            backoff: Duration::from_secs(1),
        }
    }

    /// The attempt at `at` ended (`connected`: it got as far as registering): moves to the
    /// next address and says how long to wait before trying it.
    fn ended(&mut self, connected: bool) -> Option<Duration> {
        if connected {
            self.backoff = Duration::from_secs(1);
            self.tries = 0;
        }
        self.tries += 1;
        self.at = (self.at + 1) % self.n;
        if self.tries < self.n {
            return None;
        }
        self.tries = 0;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        Some(wait)
    }
}

/// The session ended on a release mismatch: this agent refused the controller's release, or
/// the controller refused this agent's (the only FailedPrecondition of an agent session).
fn release_refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<compat::Incompatible>().is_some()
        || e.downcast_ref::<tonic::Status>()
            .is_some_and(|s| s.code() == tonic::Code::FailedPrecondition)
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

/// Why a session ended without an error.
enum Ended {
    /// The controller closed a stream.
    Closed,
    /// A new certificate is installed: reconnect with it now.
    Renewed,
}

async fn session(link: &mut Link<'_>) -> anyhow::Result<Ended> {
    let cfg = link.cfg;
    // Whatever renewal happened before this connection, it uses the files as they are now.
    link.renewed.borrow_and_update();
    let address = link.address.clone();
    // Connecting and registering, bounded: a controller that accepts and never answers is
    // left for the next address.
    let (mut client, reg) = tokio::time::timeout(cfg.connect_timeout(), async {
        let mut client = connect_to(cfg, &address).await?;
        let reg = client
            .register(RegisterRequest {
                gateway: cfg.gateway.clone(),
                interfaces: vec![],
                agent_version: compat::VERSION.into(),
            })
            .await?
            .into_inner();
        anyhow::Ok((client, reg))
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "{address}: not registered within {:?}",
            cfg.connect_timeout()
        )
    })??;
    // A controller this release cannot follow: stop before asking for policy (retried with
    // backoff, so upgrading either side resumes the session).
    compat::check(compat::VERSION, &reg.controller_version)?;
    link.connected = true;
    link.metrics.controller_connects.inc();
    link.metrics
        .controller_at(cfg.address.as_slice(), Some(&address));
    link.metrics
        .controller_generation
        .set(i64::from(reg.latest_generation));
    tracing::info!(
        address,
        gateway = cfg.gateway,
        latest = reg.latest_generation,
        epoch = reg.epoch,
        holding = link.holding.generation,
        holding_epoch = link.holding.epoch,
        pending_alerts = link.alerts.lock().len(),
        "connected to controller"
    );
    if !link.holding.epoch.is_empty() && link.holding.epoch != reg.epoch {
        tracing::warn!(
            gateway = cfg.gateway,
            from = link.holding.epoch,
            to = reg.epoch,
            holding = link.holding.generation,
            latest = reg.latest_generation,
            "controller store epoch changed (store recreated or replaced): taking its latest \
             generation whatever its number"
        );
    }
    let mut stream = client
        .watch_policy(WatchPolicyRequest {
            gateway: cfg.gateway.clone(),
            last_applied_generation: link.holding.generation,
            epoch: link.holding.epoch.clone(),
            content_hash: link.holding.content_hash.clone(),
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
    // The controller hears this agent's health at once, with what it enforces.
    link.reported = None;
    let mut poll = tokio::time::interval(WATCHDOG_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(bundle) = msg? else { return Ok(Ended::Closed) };
                let (generation, reason) = (bundle.generation, bundle.reason.clone());
                // Checked field by field before it goes anywhere near the maps; a bad bundle is
                // reported and the enforced policy stays.
                let state = match DesiredState::try_from(bundle) {
                    Ok(s) if s.gateway != cfg.gateway => {
                        Err(format!("generation {generation} is for gateway `{}`", s.gateway))
                    }
                    Ok(s) => Ok(s),
                    Err(e) => Err(e.to_string()),
                };
                let state = match state {
                    Ok(s) => s,
                    Err(error) => {
                        tracing::error!(error, "policy bundle refused");
                        link.error = error;
                        report(&mut client, link).await?;
                        continue;
                    }
                };
                if state.epoch != link.holding.epoch {
                    tracing::warn!(from = link.holding.epoch, to = state.epoch, generation, "policy from a new store epoch");
                }
                tracing::info!(generation, epoch = state.epoch, reason, "policy received from controller");
                link.metrics.controller_generation.set(i64::from(generation));
                link.writer.send(Arc::new(state)).await.context("the map writer stopped")?;
            }
            Some(done) = link.applied.recv() => {
                link.holding = done.holding;
                link.error = done.error;
                report(&mut client, link).await?;
            }
            _ = poll.tick() => {
                let health = link.health.read();
                if health_due(link.reported, health.as_ref(), cfg.health_report_every()) {
                    send_status(&mut client, link, health).await?;
                }
            }
            () = link.alerts.added() => flush(&link.alerts, &out).await?,
            Ok(()) = link.renewed.changed() => return Ok(Ended::Renewed),
            ack = acks.message() => {
                let Some(ack) = ack? else { return Ok(Ended::Closed) };
                link.alerts.ack(&ack.ids);
                // Refused for what they hold: sending them again gets the same answer.
                if let Some(first) = ack.refused.first() {
                    tracing::warn!(
                        refused = ack.refused.len(),
                        first_id = first.id,
                        first_code = first.code,
                        first_reason = first.reason,
                        "controller refused alerts; dropped from the outbox"
                    );
                    let ids: Vec<String> = ack.refused.into_iter().map(|r| r.id).collect();
                    link.alerts.ack(&ids);
                }
            }
        }
    }
}

/// Reports what the agent enforces and its last error, with its health read now.
async fn report(
    client: &mut AgentServiceClient<Channel>,
    link: &mut Link<'_>,
) -> anyhow::Result<()> {
    let health = link.health.read();
    send_status(client, link, health).await
}

async fn send_status(
    client: &mut AgentServiceClient<Channel>,
    link: &mut Link<'_>,
    health: Option<GatewayHealth>,
) -> anyhow::Result<()> {
    let said = watchdog(health.as_ref());
    let before = link.reported.and_then(|(_, w)| w);
    if let (Some(now), Some(was)) = (said, before)
        && now.0 != was.0
    {
        tracing::info!(fired = now.0, "fail-open watchdog changed: reporting it");
    }
    client
        .report_status(status_report(
            &link.cfg.gateway,
            &link.holding,
            &link.error,
            health,
        ))
        .await?;
    link.reported = Some((Instant::now(), said));
    Ok(())
}

/// The status of `gateway`: what it enforces, its last error, its health.
fn status_report(
    gateway: &str,
    holding: &Holding,
    error: &str,
    health: Option<GatewayHealth>,
) -> StatusReport {
    StatusReport {
        gateway: gateway.to_string(),
        applied_generation: holding.generation,
        error: error.to_string(),
        epoch: holding.epoch.clone(),
        health,
    }
}

/// What the controller did with flow records sent by [`report_flows`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowsReported {
    /// Records (a prefix of those given) in batches the controller acknowledged: they may be
    /// dropped.
    pub acknowledged: usize,
    /// Of those, folded into the store / of devices it does not know / past its retention.
    pub stored: u64,
    pub unknown_device: u64,
    pub expired: u64,
}

/// A batch of flow records the controller did not acknowledge.
#[derive(Debug, thiserror::Error)]
#[error("flow records: batch refused after {} acknowledged: {status}", .reported.acknowledged)]
pub struct FlowReportError {
    /// What was acknowledged before the refusal.
    pub reported: FlowsReported,
    pub status: tonic::Status,
}

impl FlowReportError {
    /// Whether sending the same records again can succeed (the controller or the link was
    /// down); a batch refused for what it holds (a bad record, a device of another gateway)
    /// will be refused again and should be logged and dropped.
    pub fn retryable(&self) -> bool {
        !matches!(
            self.status.code(),
            tonic::Code::InvalidArgument
                | tonic::Code::PermissionDenied
                | tonic::Code::OutOfRange
                | tonic::Code::ResourceExhausted
        )
    }
}

/// Sends `records` to the controller (`ReportFlows`) in batches within the transport limits
/// (`wardgate_proto::flows::batches`), one at a time, each acknowledged once stored. Stops at
/// the first batch not acknowledged: the error says how many records were.
pub async fn report_flows(
    client: &mut AgentServiceClient<Channel>,
    gateway: &str,
    records: &[FlowRecord],
) -> Result<FlowsReported, FlowReportError> {
    let mut done = FlowsReported::default();
    for batch in wardgate_proto::flows::batches(gateway, records) {
        let n = batch.records.len();
        match client.report_flows(batch).await {
            Ok(ack) => {
                let ack = ack.into_inner();
                done.acknowledged += n;
                done.stored += u64::from(ack.stored);
                done.unknown_device += u64::from(ack.unknown_device);
                done.expired += u64::from(ack.expired);
            }
            Err(status) => {
                return Err(FlowReportError {
                    reported: done,
                    status,
                });
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(fired: bool, fired_count: u32) -> GatewayHealth {
        GatewayHealth {
            agent_version: "0.9.1".into(),
            watchdog_fired: fired,
            watchdog_fired_count: fired_count,
            watchdog_recovered_count: 1,
            fail_open_devices: 2,
            heartbeat_age_ms: Some(6_000),
        }
    }

    #[test]
    fn the_status_carries_the_health_it_is_given() {
        let holding = Holding {
            generation: 7,
            epoch: "e1".into(),
            content_hash: "abc".into(),
        };
        let h = health(true, 2);
        let r = status_report("gw-ward-3", &holding, "bad bundle", Some(h.clone()));
        assert_eq!(
            r,
            StatusReport {
                gateway: "gw-ward-3".into(),
                applied_generation: 7,
                error: "bad bundle".into(),
                epoch: "e1".into(),
                health: Some(h),
            }
        );
        // A source that reads the pins and the applied policy gives what it read.
        let source = HealthSource::from_fn(|| Some(health(false, 4)));
        let r = status_report("gw-ward-3", &holding, "", source.read());
        assert_eq!(r.health, Some(health(false, 4)));
        let r = status_report(
            "gw-ward-3",
            &holding,
            "",
            HealthSource::from_fn(|| None).read(),
        );
        assert_eq!(r.health, None, "unread: no health, not a made-up one");
    }

    #[test]
    fn the_rotation_tries_every_address_before_it_backs_off() {
        let s = Duration::from_secs;
        // One address: as before replicas, the backoff after every failed attempt.
        let mut one = Rotation::new(1);
        let waits: Vec<_> = (0..7).map(|_| one.ended(false)).collect();
        assert_eq!(
            waits,
            [1, 2, 4, 8, 16, 30, 30].map(|n| Some(s(n))),
            "doubling to 30 s"
        );
        assert_eq!(one.ended(true), Some(s(1)), "after a session: 1 s again");
        assert_eq!(one.at, 0);
        // Three: the next at once, the backoff once per round.
        let mut three = Rotation::new(3);
        let mut seen = Vec::new();
        for _ in 0..6 {
            let wait = three.ended(false);
            seen.push((three.at, wait));
        }
        assert_eq!(
            seen,
            [
                (1, None),
                (2, None),
                (0, Some(s(1))),
                (1, None),
                (2, None),
                (0, Some(s(2)))
            ]
        );
        // A session on the first breaks: the second and third at once, then 1 s.
        assert_eq!(three.ended(true), None);
        assert_eq!(three.at, 1);
        assert_eq!((three.ended(false), three.at), (None, 2));
        assert_eq!((three.ended(false), three.at), (Some(s(1)), 0));
    }

    #[test]
    fn health_is_due_first_then_periodically_and_at_once_when_the_watchdog_changes() {
        let every = Duration::from_secs(60);
        let ok = health(false, 1);
        assert!(health_due(None, Some(&ok), every), "nothing reported yet");
        let now = Instant::now();
        let said = Some((now, watchdog(Some(&ok))));
        assert!(!health_due(said, Some(&ok), every), "reported just now");
        assert!(health_due(said, Some(&health(true, 2)), every), "fired");
        assert!(
            health_due(said, Some(&health(false, 2)), every),
            "fired and recovered between two looks"
        );
        assert!(health_due(said, None, every), "pins no longer read");
        let old = Some((now - every, watchdog(Some(&ok))));
        assert!(health_due(old, Some(&ok), every), "a minute old");
    }
}
