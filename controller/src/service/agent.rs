//! AgentService: register, watch policy (resumable), report alerts (acknowledged by id), report
//! status. Every call is checked against the gateway named in the client certificate.

use std::{pin::Pin, sync::Arc};

use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};
use wardgate_proto::{
    compat,
    v1::{
        self as pb, AlertAck, AlertBatch, FlowAck, FlowBatch, PolicyBundle, RegisterRequest,
        RegisterResponse, RenewRequest, RenewResponse, StatusAck, StatusReport, WatchPolicyRequest,
        agent_service_server::AgentService,
    },
};

use super::{Ctx, alert_admission};
use crate::{alerts, auth, error::Error, metrics::WriteKind, push::Published, store::AgentHealth};

pub struct Agent(pub Ctx);

type Stream2<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn known_gateway(ctx: &Ctx, gateway: &str) -> Result<(), Error> {
    if ctx.store.gateway(gateway)?.is_some() {
        Ok(())
    } else {
        Err(Error::NotFound {
            what: "gateway",
            name: gateway.to_string(),
        })
    }
}

#[tonic::async_trait]
impl AgentService for Agent {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let gateway = req.get_ref().gateway.clone();
        auth::require_gateway(&req, &gateway)?;
        known_gateway(&self.0, &gateway)?;
        // Before anything else is asked for: an agent this release cannot serve stops here, with
        // nothing sent to it.
        let agent_version = &req.get_ref().agent_version;
        if let Err(e) = compat::check(agent_version, compat::VERSION) {
            tracing::warn!(gateway, agent_version, error = %e, "agent release refused");
            return Err(Error::Precondition(e.to_string()).into());
        }
        // A revoked name's certificates from the root (`certs init`) are not on the issuing
        // CA's list: the name itself is refused.
        if self.0.store.gateway_revoked(&gateway)? {
            return Err(Error::Denied(format!("gateway {gateway} is revoked")).into());
        }
        let latest = self.0.store.latest_generation(&gateway)?;
        let epoch = self.0.store.epoch()?;
        tracing::info!(
            gateway,
            latest,
            epoch,
            agent_version = req.get_ref().agent_version,
            "agent registered"
        );
        Ok(Response::new(RegisterResponse {
            latest_generation: latest,
            epoch,
            controller_version: compat::VERSION.into(),
        }))
    }

    type WatchPolicyStream = Stream2<PolicyBundle>;

    async fn watch_policy(
        &self,
        req: Request<WatchPolicyRequest>,
    ) -> Result<Response<Self::WatchPolicyStream>, Status> {
        let WatchPolicyRequest {
            gateway,
            last_applied_generation,
            epoch: agent_epoch,
            content_hash,
        } = req.get_ref().clone();
        auth::require_gateway(&req, &gateway)?;
        known_gateway(&self.0, &gateway)?;
        let ctx = self.0.clone();
        let epoch = ctx.store.epoch()?;
        // What the agent holds, if it is a generation of this store. Generation numbers of
        // another store (recreated, or restored and then changed) say nothing: the agent gets
        // the latest whatever its number.
        let mut holds = if agent_epoch == epoch {
            Some((last_applied_generation, content_hash))
        } else {
            if !agent_epoch.is_empty() {
                tracing::warn!(
                    gateway,
                    agent_epoch,
                    epoch,
                    last_applied_generation,
                    "agent enforces a generation of another store; sending this store's latest"
                );
            }
            None
        };
        // Subscribe before reading the latest, so nothing compiled in between is missed.
        let mut rx = ctx.push.watch(&gateway);
        let (tx, out) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            // The gateway counts as connected while this stream is open.
            let _watching = ctx.metrics.watching(&gateway);
            loop {
                // Bundles are full states: only the newest matters, and only if the agent
                // does not hold exactly it (same generation and content). The newest is the
                // one announced (built once by the write), or, when none was announced since
                // the controller started, the store's, announced for the next watcher.
                let announced = rx.borrow_and_update().clone();
                let latest = match announced {
                    Some(p) => Ok(Some(p)),
                    None => tokio::task::block_in_place(|| -> Result<_, Error> {
                        let Some(row) = ctx.store.latest(&gateway)? else {
                            return Ok(None);
                        };
                        let p = Arc::new(Published {
                            generation: row.generation,
                            content_hash: row.content_hash(),
                            bundle: wardgate_proto::bundle::to_bundle(
                                &row.state(&epoch)?,
                                &row.reason,
                            ),
                        });
                        ctx.push.generation(&gateway, p.clone());
                        Ok(Some(p))
                    }),
                };
                let bundle = latest.map(|p| {
                    p.filter(|p| {
                        !holds
                            .as_ref()
                            .is_some_and(|(g, h)| *g == p.generation && *h == p.content_hash)
                    })
                    .map(|p| {
                        holds = Some((p.generation, p.content_hash.clone()));
                        p.bundle.clone()
                    })
                });
                match bundle {
                    Ok(Some(b)) => {
                        if tx.send(Ok(b)).await.is_err() {
                            return; // the agent went away
                        }
                        ctx.metrics.bundle_sent();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
                // A watch that ends (the agent went away) ends the task now, not at the next
                // generation: the gateway stops counting as connected.
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    type ReportAlertsStream = Stream2<AlertAck>;

    async fn report_alerts(
        &self,
        req: Request<Streaming<AlertBatch>>,
    ) -> Result<Response<Self::ReportAlertsStream>, Status> {
        let gateway = match auth::identity(&req)? {
            auth::Identity::Gateway(g) => g,
            auth::Identity::User { name, .. } => {
                return Err(Error::Denied(format!("{name} is not a gateway agent")).into());
            }
        };
        let ctx = self.0.clone();
        let mut input = req.into_inner();
        let output = async_stream(move |tx| async move {
            while let Some(batch) = input.next().await {
                let batch = match batch {
                    Ok(b) => b,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                let mut rows = Vec::new();
                let mut refused = Vec::new();
                let now = super::learning::now_ns();
                for a in batch.alerts {
                    // No id, nothing to acknowledge or refuse by: the stream ends.
                    if a.id.is_empty() {
                        let _ = tx
                            .send(Err(Status::invalid_argument("alert without id")))
                            .await;
                        return;
                    }
                    // Refused alerts are answered by id, so the agent drops them.
                    let admitted = tokio::task::block_in_place(|| {
                        alert_admission::admit_alert(ctx.store.as_ref(), &gateway, &a, now)
                    });
                    match admitted {
                        Ok(Ok(f)) => rows.push(f),
                        Ok(Err(r)) => {
                            ctx.metrics.alert_refused(&gateway, &r.code);
                            refused.push(r);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    }
                }
                if let Some(first) = refused.first() {
                    tracing::warn!(
                        gateway,
                        refused = refused.len(),
                        first_id = first.id,
                        first_code = first.code,
                        first_reason = first.reason,
                        "alerts refused (answered, not stored)"
                    );
                }
                let stored: Vec<_> = rows.iter().map(alerts::new_row).collect();
                let inserted = if stored.is_empty() {
                    Ok(Vec::new())
                } else {
                    tokio::task::block_in_place(|| {
                        ctx.metrics.time_write(WriteKind::Alerts, || {
                            ctx.store.insert_alerts(&gateway, &stored)
                        })
                    })
                };
                match inserted {
                    Ok(ids) => {
                        for f in &rows {
                            ctx.metrics.alerts_received(&gateway, f.severity.as_str());
                        }
                        ctx.push.alerts_stored();
                        if tx.send(Ok(AlertAck { ids, refused })).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(output))
    }

    async fn renew_certificate(
        &self,
        req: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let gateway = req.get_ref().gateway.clone();
        auth::require_gateway(&req, &gateway)?;
        let (issued, ca) = self
            .0
            .fleet
            .renew(&self.0, &gateway, &req.get_ref().csr_pem)?;
        Ok(Response::new(RenewResponse {
            certificate_chain_pem: issued.chain_pem,
            ca_pem: ca.root_pem().to_string(),
            not_after_unix: issued.not_after.unix_timestamp(),
        }))
    }

    async fn report_flows(&self, req: Request<FlowBatch>) -> Result<Response<FlowAck>, Status> {
        let gateway = match auth::identity(&req)? {
            auth::Identity::Gateway(g) => g,
            auth::Identity::User { name, .. } => {
                return Err(Error::Denied(format!("{name} is not a gateway agent")).into());
            }
        };
        let ack = super::learning::report_flows(&self.0, &gateway, req.into_inner())?;
        Ok(Response::new(ack))
    }

    async fn report_status(
        &self,
        req: Request<StatusReport>,
    ) -> Result<Response<StatusAck>, Status> {
        let r = req.get_ref().clone();
        auth::require_gateway(&req, &r.gateway)?;
        let epoch = self.0.store.epoch()?;
        if !r.epoch.is_empty() && r.epoch != epoch {
            tracing::warn!(
                gateway = r.gateway,
                applied_epoch = r.epoch,
                epoch,
                applied = r.applied_generation,
                "agent reports a generation of another store"
            );
        }
        let health = r.health.map(agent_health).transpose()?;
        self.0.metrics.time_write(WriteKind::Status, || {
            self.0.store.report_status(
                &r.gateway,
                r.applied_generation,
                &r.epoch,
                &r.error,
                health.as_ref(),
            )
        })?;
        Ok(Response::new(StatusAck {}))
    }
}

/// The longest release string an agent may report (MAJOR.MINOR.PATCH with a tail).
const MAX_VERSION_LEN: usize = 64;

/// A status's health as the store keeps it; a release that is not printable ASCII of at most
/// `MAX_VERSION_LEN` bytes is refused (it is shown on the console and by wardctl).
fn agent_health(h: pb::GatewayHealth) -> Result<AgentHealth, Error> {
    if h.agent_version.len() > MAX_VERSION_LEN
        || !h.agent_version.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::Invalid(format!(
            "health.agent_version: not a release (printable ASCII, at most {MAX_VERSION_LEN} bytes)"
        )));
    }
    Ok(AgentHealth {
        agent_version: h.agent_version,
        watchdog_fired: h.watchdog_fired,
        watchdog_fired_count: h.watchdog_fired_count,
        watchdog_recovered_count: h.watchdog_recovered_count,
        fail_open_devices: h.fail_open_devices,
        heartbeat_age_ms: h.heartbeat_age_ms,
    })
}

/// A response stream fed by a task.
fn async_stream<T, F, Fut>(f: F) -> Stream2<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
