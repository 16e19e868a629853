//! `wardctl changes submit --device D --profile FILE --reason R`: the candidate profile is
//! checked (it must compile for the device's gateway) and stored pending.

use std::path::PathBuf;

use anyhow::Context as _;
use wardgate_proto::v1 as pb;

use super::Client;
use crate::cli::output::{self, OutputFormat};

#[derive(clap::Args)]
pub struct SubmitArgs {
    #[arg(long)]
    pub device: String,
    /// The candidate profile (YAML), e.g. from `wardctl profile propose --out FILE`.
    #[arg(long)]
    pub profile: PathBuf,
    /// A reason or ticket id (the approver sees it; it goes in the audit trail).
    #[arg(long)]
    pub reason: String,
    /// Confirm the availability warning: the change cuts off traffic seen recently on more
    /// than the configured share of a class's devices on a ward (the controller says which).
    #[arg(long)]
    pub accept_impact: bool,
}

pub async fn run(mut c: Client, a: SubmitArgs, out: OutputFormat) -> anyhow::Result<()> {
    let yaml = std::fs::read_to_string(&a.profile)
        .with_context(|| format!("reading {} (--profile)", a.profile.display()))?;
    let w = c
        .submit_change(pb::SubmitChangeRequest {
            device: a.device.clone(),
            yaml,
            reason: a.reason,
            accept_impact: a.accept_impact,
        })
        .await?
        .into_inner();
    // The change's id is the newest pending change of the device (the write answers its audit
    // entry only).
    let latest = c
        .list_changes(pb::ListChangesRequest {
            device: a.device.clone(),
            all: false,
            limit: 1,
        })
        .await?
        .into_inner()
        .changes;
    let id = latest.first().map_or(0, |p| p.id);
    match out {
        OutputFormat::Json => output::json(&serde_json::json!({
            "id": id, "device": a.device, "audit_seq": w.audit_seq,
        })),
        OutputFormat::Human => {
            println!(
                "change {id} submitted for {} (audit entry {}); another engineer approves it: \
                 wardctl changes approve {id} --reason ...",
                a.device, w.audit_seq
            );
            Ok(())
        }
    }
}
