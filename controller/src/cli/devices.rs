//! `wardctl devices`: list and show devices.

use clap::Subcommand;
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

#[derive(Subcommand)]
pub enum DevicesCmd {
    /// List devices (optionally of one gateway or profile).
    List {
        #[arg(long, default_value = "")]
        gateway: String,
        #[arg(long, default_value = "")]
        profile: String,
    },
    /// Show one device.
    Show { name: String },
    /// A device's learned baseline; --freeze, --approve, --relearn move it.
    Baseline(super::baseline::BaselineArgs),
}

fn row(d: &pb::Device) -> serde_json::Value {
    serde_json::json!({
        "name": d.name, "id": d.id, "mac": d.mac, "addresses": d.addresses, "profile": d.profile,
        "mode": d.mode, "gateway": d.gateway, "location": d.location, "asset_id": d.asset_id,
    })
}

pub async fn run(cmd: DevicesCmd, remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let cmd = match cmd {
        DevicesCmd::Baseline(a) => return super::baseline::run(a, remote, out).await,
        other => other,
    };
    let mut c = AdminServiceClient::new(remote.channel().await?);
    match cmd {
        DevicesCmd::List { gateway, profile } => {
            let devices = c
                .list_devices(pb::ListDevicesRequest { gateway, profile })
                .await?
                .into_inner()
                .devices;
            match out {
                OutputFormat::Json => output::json(&devices.iter().map(row).collect::<Vec<_>>())?,
                OutputFormat::Human => {
                    println!(
                        "{:<4} {:<20} {:<20} {:<10} {:<12} {:<18} addresses",
                        "id", "name", "profile", "mode", "gateway", "mac"
                    );
                    for d in &devices {
                        println!(
                            "{:<4} {:<20} {:<20} {:<10} {:<12} {:<18} {}",
                            d.id,
                            d.name,
                            d.profile,
                            d.mode,
                            d.gateway,
                            d.mac,
                            d.addresses.join(", ")
                        );
                    }
                }
            }
        }
        DevicesCmd::Show { name } => {
            let d = c
                .get_device(pb::GetDeviceRequest { name })
                .await?
                .into_inner();
            match out {
                OutputFormat::Json => output::json(&row(&d))?,
                OutputFormat::Human => println!("{}", serde_json::to_string_pretty(&row(&d))?),
            }
        }
        DevicesCmd::Baseline(_) => unreachable!("handled above"),
    }
    Ok(())
}
