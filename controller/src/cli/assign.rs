//! `wardctl assign DEVICE PROFILE --reason R` and `wardctl mode DEVICE MODE --reason R`.

use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

/// Prints what a write did: its audit entry and the generations it compiled.
pub fn print_write(w: &pb::WriteResponse, out: OutputFormat) -> anyhow::Result<()> {
    match out {
        OutputFormat::Json => output::json(
            &serde_json::json!({"audit_seq": w.audit_seq, "generations": w.generations}),
        ),
        OutputFormat::Human => {
            println!("recorded as audit entry {}", w.audit_seq);
            for (g, n) in &w.generations {
                println!("gateway {g}: new policy generation {n}");
            }
            Ok(())
        }
    }
}

pub async fn assign(
    device: String,
    profile: String,
    reason: String,
    remote: &Remote,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(remote.channel().await?);
    let w = c
        .assign_profile(pb::AssignProfileRequest {
            device,
            profile,
            reason,
        })
        .await?
        .into_inner();
    print_write(&w, out)
}

pub async fn mode(
    device: String,
    mode: String,
    reason: String,
    remote: &Remote,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(remote.channel().await?);
    let w = c
        .set_mode(pb::SetModeRequest {
            device,
            mode,
            reason,
        })
        .await?
        .into_inner();
    print_write(&w, out)
}
