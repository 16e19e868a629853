//! `wardctl changes`: four eyes on a device's profile. One engineer submits a candidate
//! profile for a device, another reviews it (`show`: the rule diff and the simulation) and
//! approves it, which applies it; the controller refuses an approval by the submitter. The
//! console's approval pages call the same service (`crate::service::changes`).

pub mod approve;
pub mod list;
pub mod show;
pub mod submit;

use clap::Subcommand;
use wardgate_proto::v1::admin_service_client::AdminServiceClient;

use super::{output::OutputFormat, remote::Remote};

#[derive(Subcommand)]
pub enum ChangesCmd {
    /// Submit a profile for a device, for another engineer to approve.
    Submit(submit::SubmitArgs),
    /// Changes waiting for approval (--all: decided ones too), newest first.
    List(list::ListArgs),
    /// One change: its profile, what approving it would change and what it would block.
    Show { id: i64 },
    /// Approve another engineer's change; it is applied at once.
    Approve(approve::ApproveArgs),
}

pub async fn run(cmd: ChangesCmd, remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let c = AdminServiceClient::new(remote.channel().await?);
    match cmd {
        ChangesCmd::Submit(a) => submit::run(c, a, out).await,
        ChangesCmd::List(a) => list::run(c, a, out).await,
        ChangesCmd::Show { id } => show::run(c, id, out).await,
        ChangesCmd::Approve(a) => approve::run(c, a, out).await,
    }
}

/// The admin client the subcommands share.
pub(crate) type Client = AdminServiceClient<tonic::transport::Channel>;

/// A change as JSON (`--output json`).
pub(crate) fn json(p: &wardgate_proto::v1::PendingChange) -> serde_json::Value {
    serde_json::json!({
        "id": p.id, "device": p.device, "profile": p.profile, "reason": p.reason,
        "proposer": p.proposer, "proposed_unix_ms": p.proposed_unix_ms,
        "approver": p.approver, "decided_unix_ms": p.decided_unix_ms,
    })
}
