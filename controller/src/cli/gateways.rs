//! `wardctl gateways`: each gateway's latest and applied policy generation (an applied
//! generation of another store epoch is marked: its number is not comparable).

use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

pub async fn run(remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(remote.channel().await?);
    let gws = c
        .list_gateways(pb::ListGatewaysRequest {})
        .await?
        .into_inner()
        .gateways;
    match out {
        OutputFormat::Json => output::json(
            &gws.iter()
                .map(|g| serde_json::json!({"name": g.name, "interfaces": g.interfaces, "latest_generation": g.latest_generation, "applied_generation": g.applied_generation, "last_error": g.last_error, "applied_epoch": g.applied_epoch, "epoch": g.epoch}))
                .collect::<Vec<_>>(),
        )?,
        OutputFormat::Human => {
            println!("{:<16} {:>7} {:>8}  interfaces / last error", "gateway", "latest", "applied");
            for g in &gws {
                let other = if !g.applied_epoch.is_empty() && g.applied_epoch != g.epoch {
                    format!(" (applied from another store, epoch {})", g.applied_epoch)
                } else {
                    String::new()
                };
                println!("{:<16} {:>7} {:>8}  {} {}{other}", g.name, g.latest_generation, g.applied_generation, g.interfaces.join(","), g.last_error);
            }
        }
    }
    Ok(())
}
