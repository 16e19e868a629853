//! `wardctl changes list [--device D] [--all]`: changes waiting for approval.

use wardgate_proto::v1 as pb;

use super::Client;
use crate::cli::{
    baseline::utc_ms,
    output::{self, OutputFormat, or_dash},
};

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only this device's changes.
    #[arg(long, default_value = "")]
    pub device: String,
    /// Approved changes too.
    #[arg(long)]
    pub all: bool,
}

pub async fn run(mut c: Client, a: ListArgs, out: OutputFormat) -> anyhow::Result<()> {
    let changes = c
        .list_changes(pb::ListChangesRequest {
            device: a.device,
            all: a.all,
            limit: 0,
        })
        .await?
        .into_inner()
        .changes;
    match out {
        OutputFormat::Json => output::json(&changes.iter().map(super::json).collect::<Vec<_>>()),
        OutputFormat::Human => {
            let rows: Vec<Vec<String>> = changes
                .iter()
                .map(|p| {
                    vec![
                        p.id.to_string(),
                        p.device.clone(),
                        p.profile.clone(),
                        p.proposer.clone(),
                        utc_ms(p.proposed_unix_ms),
                        or_dash(&p.approver),
                        p.reason.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &[
                        "id",
                        "device",
                        "profile",
                        "submitted by",
                        "at",
                        "approved by",
                        "reason"
                    ],
                    &rows
                )
            );
            Ok(())
        }
    }
}
