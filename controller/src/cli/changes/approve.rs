//! `wardctl changes approve ID --reason R`: a second engineer approves change ID; the
//! controller applies it at once (proposer and approver in the audit entry) and refuses an
//! approval by the submitter.

use wardgate_proto::v1 as pb;

use super::Client;
use crate::cli::{assign::print_write, output::OutputFormat};

#[derive(clap::Args)]
pub struct ApproveArgs {
    pub id: i64,
    /// A reason or ticket id, added to the submitter's in the audit trail.
    #[arg(long)]
    pub reason: String,
    /// Confirm the availability warning: the change cuts off traffic seen recently on more
    /// than the configured share of a class's devices on a ward (the controller says which).
    #[arg(long)]
    pub accept_impact: bool,
}

pub async fn run(mut c: Client, a: ApproveArgs, out: OutputFormat) -> anyhow::Result<()> {
    let w = c
        .approve_change(pb::ApproveChangeRequest {
            id: a.id,
            reason: a.reason,
            accept_impact: a.accept_impact,
        })
        .await?
        .into_inner();
    print_write(&w, out)
}
