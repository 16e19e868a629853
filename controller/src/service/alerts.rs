//! AlertService: the SOC's view. Subscribe (stored unacknowledged alerts, then live ones),
//! list, acknowledge (audited).

use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};
use wardgate_proto::v1::{self as pb, alert_service_server::AlertService};

use super::{Ctx, severity_rank};
use crate::{
    alerts,
    auth::{self, Role},
    store::{AlertQuery, Change},
};

pub struct Alerts(pub Ctx);

const READ: &[Role] = &[Role::Engineer, Role::Soc, Role::Viewer];
const ACK: &[Role] = &[Role::Soc];

fn matches(f: &pb::AlertFilter, a: &pb::Alert, min: u8) -> bool {
    (f.gateway.is_empty() || a.gateway == f.gateway)
        && (f.device.is_empty() || a.device == f.device)
        && severity_rank(&a.severity).unwrap_or(0) >= min
        && (f.include_acknowledged || !a.acknowledged)
}

/// Most alerts one List or Subscribe backlog returns, whatever the request asks (0 = this).
pub const MAX_ALERTS: u32 = 1000;

impl Alerts {
    fn stored(&self, f: &pb::AlertFilter) -> Result<Vec<pb::Alert>, Status> {
        // Filtered in the query, then limited: an older unacknowledged critical alert is not
        // hidden by newer ones the filter drops.
        let q = AlertQuery {
            gateway: f.gateway.clone(),
            device: f.device.clone(),
            min_severity: severity_rank(&f.min_severity)?,
            include_acknowledged: f.include_acknowledged,
            limit: if f.limit == 0 {
                MAX_ALERTS
            } else {
                f.limit.min(MAX_ALERTS)
            },
        };
        let rows = tokio::task::block_in_place(|| self.0.store.alerts(&q))?;
        Ok(rows
            .into_iter()
            .map(|(gateway, body, ack, by)| alerts::to_api(&gateway, &body, ack, by))
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
        let min = severity_rank(&f.min_severity)?;
        // Live first, then the backlog, so nothing arriving in between is lost (duplicates of
        // the same id are possible and harmless).
        let live = tokio_stream::wrappers::BroadcastStream::new(self.0.push.alerts());
        let backlog = self.stored(&f)?;
        let f2 = f.clone();
        let live = live.filter_map(move |a| match a {
            Ok(a) if matches(&f2, &a, min) => Some(Ok(a)),
            Ok(_) => None,
            Err(_) => Some(Err(Status::data_loss(
                "subscriber fell behind; list to catch up",
            ))),
        });
        let backlog = tokio_stream::iter(backlog.into_iter().rev().map(Ok));
        Ok(Response::new(Box::pin(backlog.chain(live))))
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
        let who = auth::require_role(&req, ACK)?;
        let r = req.into_inner();
        if r.ids.is_empty() {
            return Err(Status::invalid_argument("no alert ids to acknowledge"));
        }
        Ok(Response::new(self.0.write(
            &who.actor(),
            &r.reason,
            Change::AcknowledgeAlerts { ids: r.ids },
        )?))
    }

    async fn suppress(
        &self,
        req: Request<pb::SuppressRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = auth::require_role(&req, ACK)?;
        let r = req.into_inner();
        if r.device.is_empty() || r.detector.is_empty() {
            return Err(Status::invalid_argument(
                "a suppression names a device and a detector",
            ));
        }
        // Stored as the alert rows name peers, so the match is exact.
        let peer = match r.peer.as_str() {
            "" => String::new(),
            p => p
                .parse::<std::net::IpAddr>()
                .map_err(|_| Status::invalid_argument(format!("peer `{p}` is not an IP address")))?
                .to_string(),
        };
        Ok(Response::new(self.0.write(
            &who.actor(),
            &r.reason,
            Change::SuppressAlerts {
                device: r.device,
                detector: r.detector,
                peer,
            },
        )?))
    }
}
