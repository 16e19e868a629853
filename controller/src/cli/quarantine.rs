//! `wardctl quarantine`: the SOC's emergency quarantine requests, listed, and approved by an
//! engineer (the SOC files them with `wardctl mode DEVICE quarantine --reason R`).

use clap::Subcommand;
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    assign::print_write,
    output::{self, OutputFormat},
    remote::Remote,
};
use crate::words;

#[derive(Subcommand)]
pub enum QuarantineCmd {
    /// The requests still waiting for an engineer.
    Requests,
    /// Approve request ID: the device is quarantined now (audited under both names).
    Approve {
        id: i64,
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(cmd: QuarantineCmd, remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(remote.channel().await?);
    match cmd {
        QuarantineCmd::Requests => {
            let list = c
                .list_quarantine_requests(pb::ListQuarantineRequestsRequest {})
                .await?
                .into_inner()
                .requests;
            match out {
                OutputFormat::Json => output::json(
                    &list
                        .iter()
                        .map(|r| {
                            serde_json::json!({
                                "id": r.id, "device": r.device, "reason": r.reason,
                                "requested_by": r.requested_by,
                                "requested_unix_ms": r.requested_unix_ms,
                                "for_minutes": r.for_minutes,
                            })
                        })
                        .collect::<Vec<_>>(),
                )?,
                OutputFormat::Human if list.is_empty() => {
                    println!("no quarantine requests waiting")
                }
                OutputFormat::Human => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|r| {
                            vec![
                                r.id.to_string(),
                                r.device.clone(),
                                r.requested_by.clone(),
                                words::when(r.requested_unix_ms, false),
                                format!("{} min", r.for_minutes),
                                r.reason.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        output::table(&["ID", "DEVICE", "BY", "WHEN", "FOR", "REASON"], &rows)
                    );
                }
            }
        }
        QuarantineCmd::Approve { id, reason } => {
            let w = c
                .approve_quarantine(pb::ApproveQuarantineRequest { id, reason })
                .await?
                .into_inner();
            print_write(&w, out)?;
        }
    }
    Ok(())
}
