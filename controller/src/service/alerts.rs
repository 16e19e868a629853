//! AlertService: the SOC's view. Subscribe (a cursor over the alert store: stored alerts after
//! the client's last sequence number, then new ones as they are stored), list, acknowledge
//! and suppress (audited).

use tonic::{Request, Response, Status};
use wardgate_proto::v1::{self as pb, alert_service_server::AlertService};

use super::Ctx;
use crate::{
    alerts,
    auth::{self, Identity, Role},
    error::Error,
    store::{AlertQuery, Change},
};

pub struct Alerts(pub Ctx);

const READ: &[Role] = &[Role::Engineer, Role::Soc, Role::Viewer];
/// Who may acknowledge and suppress alerts (the console's SOC pages check the same).
pub const ACK: &[Role] = &[Role::Soc];

/// Most alerts one List returns, whatever the request asks (0 = this).
pub const MAX_ALERTS: u32 = 1000;

/// Alerts a Subscribe stream reads from the store in one query.
pub const SUBSCRIBE_PAGE: u32 = 100;

/// Alerts a Subscribe stream holds ready for a slow client (then it waits).
const SUBSCRIBE_BUFFER: usize = 16;

/// The store query of a filter (filters run in the query, before any limit).
fn query(f: &pb::AlertFilter, limit: u32) -> Result<AlertQuery, Status> {
    Ok(AlertQuery {
        gateway: f.gateway.clone(),
        device: f.device.clone(),
        min_severity: f.min_severity_value()?.map_or(0, |s| s.rank()),
        include_acknowledged: f.include_acknowledged,
        include_suppressed: f.include_suppressed,
        limit,
    })
}

impl Alerts {
    fn stored(&self, f: &pb::AlertFilter) -> Result<Vec<pb::Alert>, Status> {
        // Filtered in the query, then limited: an older unacknowledged critical alert is not
        // hidden by newer ones the filter drops.
        let q = query(
            f,
            if f.limit == 0 {
                MAX_ALERTS
            } else {
                f.limit.min(MAX_ALERTS)
            },
        )?;
        let rows = tokio::task::block_in_place(|| self.0.store.alerts(&q))?;
        Ok(rows
            .into_iter()
            .map(|a| {
                let mut api =
                    alerts::to_api(&a.gateway, &a.body, a.acknowledged, a.acknowledged_by)?;
                api.suppressed = a.suppressed;
                Ok(api)
            })
            .collect::<crate::error::Result<Vec<_>>>()?)
    }
}

#[tonic::async_trait]
impl AlertService for Alerts {
    type SubscribeStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Alert, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<pb::AlertFilter>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        auth::require_role(&req, READ)?;
        let f = req.into_inner();
        let q = query(&f, SUBSCRIBE_PAGE)?;
        let after = i64::try_from(f.after_seq).map_err(|_| {
            Status::invalid_argument("after_seq is past the largest sequence number")
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBE_BUFFER);
        tokio::spawn(follow(
            self.0.store.clone(),
            self.0.push.alerts(),
            q,
            after,
            tx,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list(
        &self,
        req: Request<pb::AlertFilter>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        auth::require_role(&req, READ)?;
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: self.stored(req.get_ref())?,
        }))
    }

    async fn acknowledge(
        &self,
        req: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self.0.require_write(&req, ACK, "acknowledge", "")?;
        let r = req.into_inner();
        Ok(Response::new(acknowledge(&self.0, &who, r.ids, &r.reason)?))
    }

    async fn suppress(
        &self,
        req: Request<pb::SuppressRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self.0.require_write(&req, ACK, "suppress", "")?;
        Ok(Response::new(suppress(&self.0, &who, req.get_ref())?))
    }

    async fn list_suppressions(
        &self,
        req: Request<pb::ListSuppressionsRequest>,
    ) -> Result<Response<pb::ListSuppressionsResponse>, Status> {
        auth::require_role(&req, READ)?;
        let rows = tokio::task::block_in_place(|| self.0.store.suppressions())?;
        Ok(Response::new(pb::ListSuppressionsResponse {
            suppressions: rows
                .into_iter()
                .map(|s| pb::Suppression {
                    device: s.device,
                    detector: s.detector,
                    peer: s.peer,
                    made_by: s.made_by,
                    made_unix_ms: s.made_ms,
                    reason: s.reason,
                })
                .collect(),
        }))
    }

    async fn unsuppress(
        &self,
        req: Request<pb::SuppressRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self.0.require_write(&req, ACK, "unsuppress", "")?;
        let r = req.into_inner();
        let (device, detector, peer) = suppression(&r)?;
        Ok(Response::new(self.0.write(
            &who.actor(),
            &r.reason,
            Change::UnsuppressAlerts {
                device,
                detector,
                peer,
            },
        )?))
    }
}

/// Acknowledges alerts `ids` (`GATEWAY/ID`, or an id one gateway uses) as `who`, whose
/// role the caller checked: `AlertService.Acknowledge` and the console's button.
pub fn acknowledge(
    ctx: &Ctx,
    who: &Identity,
    ids: Vec<String>,
    reason: &str,
) -> crate::error::Result<pb::WriteResponse> {
    if ids.is_empty() {
        return Err(Error::Invalid("no alert ids to acknowledge".into()));
    }
    ctx.write(
        &who.actor(),
        reason,
        Change::AcknowledgeAlerts {
            ids,
            by: who.actor(),
        },
    )
}

/// Suppresses the alerts `r` scopes (device, detector, peer or any) as `who`, whose role the
/// caller checked: `AlertService.Suppress` and the console's form.
pub fn suppress(
    ctx: &Ctx,
    who: &Identity,
    r: &pb::SuppressRequest,
) -> crate::error::Result<pb::WriteResponse> {
    let (device, detector, peer) = suppression(r)?;
    ctx.write(
        &who.actor(),
        &r.reason,
        Change::SuppressAlerts {
            device,
            detector,
            peer,
            made_by: who.actor(),
            made_ms: crate::audit::now_ms(),
            reason: r.reason.clone(),
        },
    )
}

/// A suppression's (device, detector, peer) as stored: a known detector, the peer as alert
/// rows name it, so the match is exact.
fn suppression(r: &pb::SuppressRequest) -> crate::error::Result<(String, String, String)> {
    if r.device.is_empty() || r.detector.is_empty() {
        return Err(Error::Invalid(
            "a suppression names a device and a detector".into(),
        ));
    }
    // A mistyped detector would suppress nothing, audited as if it did: refused.
    if !wardgate_analysis::detect::format::DETECTORS.contains(&r.detector.as_str()) {
        let e = Error::unknown(
            "detector",
            &r.detector,
            wardgate_analysis::detect::format::DETECTORS,
        );
        return Err(Error::Invalid(format!(
            "{e}; detectors: {}",
            wardgate_analysis::detect::format::DETECTORS.join(", ")
        )));
    }
    let peer = match r.peer.as_str() {
        "" => String::new(),
        p => p
            .parse::<std::net::IpAddr>()
            .map_err(|_| Error::Invalid(format!("peer `{p}` is not an IP address")))?
            .to_string(),
    };
    Ok((r.device.clone(), r.detector.clone(), peer))
}

/// One Subscribe stream: pages through the store after the cursor, each alert sent before the
/// next is read (a client that does not read holds the stream up, and loses nothing), then
/// waits until alerts are stored. Ends when the client goes away or the store fails.
async fn follow(
    store: std::sync::Arc<dyn crate::store::Store>,
    mut stored: tokio::sync::watch::Receiver<u64>,
    q: AlertQuery,
    mut after: i64,
    tx: tokio::sync::mpsc::Sender<Result<pb::Alert, Status>>,
) {
    loop {
        // Seen before reading: an insert committed after the read wakes the wait below.
        stored.borrow_and_update();
        let rows = match tokio::task::block_in_place(|| store.alerts_since(&q, after)) {
            Ok(rows) => rows,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let full = rows.len() as u32 == q.limit;
        for r in rows {
            // A row that does not read is skipped (and said), as the sinks do.
            match alerts::stored_to_api(&r) {
                Ok(a) => {
                    if tx.send(Ok(a)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!(seq = r.seq, error = %e, "skipping a stored alert"),
            }
            after = r.seq;
        }
        if full {
            continue;
        }
        tokio::select! {
            changed = stored.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
        }
    }
}
