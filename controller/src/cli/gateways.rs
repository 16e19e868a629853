//! `wardctl gateways`: each gateway's latest and applied policy generation.

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
                .map(|g| serde_json::json!({"name": g.name, "interfaces": g.interfaces, "latest_generation": g.latest_generation, "applied_generation": g.applied_generation, "last_error": g.last_error}))
                .collect::<Vec<_>>(),
        )?,
        OutputFormat::Human => {
            println!("{:<16} {:>7} {:>8}  interfaces / last error", "gateway", "latest", "applied");
            for g in &gws {
                println!("{:<16} {:>7} {:>8}  {} {}", g.name, g.latest_generation, g.applied_generation, g.interfaces.join(","), g.last_error);
            }
        }
    }
    Ok(())
}
