//! `wardctl devices`: list devices (by gateway, profile or asset id) and show one as a page:
//! its profile's allowed flows in words, its gateway's state and its recent alerts.

use anyhow::Context as _;
use clap::Subcommand;
use tonic::transport::Channel;
use wardgate_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient, alert_service_client::AlertServiceClient,
};

use super::{
    gateways::status,
    output::{self, OutputFormat, or_dash},
    remote::Remote,
};
use crate::words;

/// How many of a device's alerts `devices show` prints.
const RECENT_ALERTS: u32 = 5;

#[derive(Subcommand)]
pub enum DevicesCmd {
    /// List devices (optionally of one gateway, profile or asset id).
    List {
        #[arg(long, default_value = "")]
        gateway: String,
        #[arg(long, default_value = "")]
        profile: String,
        /// Only the device with this asset id (the inventory number on its label).
        #[arg(long)]
        asset_id: Option<String>,
    },
    /// Show one device, by name or asset id.
    Show { name: String },
    /// A device's learned baseline; --freeze, --approve, --relearn move it.
    Baseline(super::baseline::BaselineArgs),
    /// Import an inventory (FHIR R4 Bundle of Devices, or CSV with --map): prints the diff,
    /// then writes it (--dry-run: nothing written).
    Import(super::import::ImportArgs),
}

fn row(d: &pb::Device) -> serde_json::Value {
    serde_json::json!({
        "name": d.name, "id": d.id, "mac": d.mac, "addresses": d.addresses, "profile": d.profile,
        "mode": d.mode_name(), "gateway": d.gateway, "location": d.location, "asset_id": d.asset_id,
    })
}

/// The devices table for people.
pub fn table(devices: &[pb::Device]) -> String {
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.name.clone(),
                d.profile.clone(),
                d.mode_name(),
                d.gateway.clone(),
                or_dash(&d.location),
                or_dash(&d.asset_id),
                d.addresses.join(", "),
            ]
        })
        .collect();
    output::table(
        &[
            "id",
            "name",
            "profile",
            "mode",
            "gateway",
            "location",
            "asset id",
            "addresses",
        ],
        &rows,
    )
}

pub async fn run(cmd: DevicesCmd, remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let cmd = match cmd {
        DevicesCmd::Baseline(a) => return super::baseline::run(a, remote, out).await,
        DevicesCmd::Import(a) => return super::import::run(a, remote, out).await,
        other => other,
    };
    let channel = remote.channel().await?;
    let mut c = AdminServiceClient::new(channel.clone());
    match cmd {
        DevicesCmd::List {
            gateway,
            profile,
            asset_id,
        } => {
            let filter = match (gateway.as_str(), profile.as_str()) {
                ("", "") => String::new(),
                (g, "") => format!(" on gateway {g}"),
                ("", p) => format!(" with profile {p}"),
                (g, p) => format!(" on gateway {g} with profile {p}"),
            };
            let mut devices = c
                .list_devices(pb::ListDevicesRequest { gateway, profile })
                .await?
                .into_inner()
                .devices;
            if let Some(a) = &asset_id {
                devices.retain(|d| d.asset_id.eq_ignore_ascii_case(a.trim()));
                if devices.is_empty() {
                    anyhow::bail!("no device has asset id `{a}`");
                }
            }
            match out {
                OutputFormat::Json => output::json(&devices.iter().map(row).collect::<Vec<_>>())?,
                // A known gateway or profile that no device has is an answer: said in words,
                // not an empty table.
                OutputFormat::Human if devices.is_empty() => println!("no devices{filter}"),
                OutputFormat::Human => println!("{}", table(&devices)),
            }
        }
        DevicesCmd::Show { name } => {
            let d = find(&mut c, &name).await?;
            match out {
                OutputFormat::Json => output::json(&row(&d))?,
                OutputFormat::Human => println!("{}", page(&mut c, channel, &d).await?),
            }
        }
        DevicesCmd::Baseline(_) | DevicesCmd::Import(_) => unreachable!("handled above"),
    }
    Ok(())
}

/// The device named `name`, or else the one whose asset id it is.
async fn find(c: &mut AdminServiceClient<Channel>, name: &str) -> anyhow::Result<pb::Device> {
    match c
        .get_device(pb::GetDeviceRequest { name: name.into() })
        .await
    {
        Ok(d) => Ok(d.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => {
            let all = c
                .list_devices(pb::ListDevicesRequest::default())
                .await?
                .into_inner()
                .devices;
            all.into_iter()
                .find(|d| !d.asset_id.is_empty() && d.asset_id.eq_ignore_ascii_case(name.trim()))
                .ok_or_else(|| anyhow::anyhow!("no device is named `{name}` or has it as asset id"))
        }
        Err(s) => Err(s.into()),
    }
}

/// `devices show` for people.
async fn page(
    c: &mut AdminServiceClient<Channel>,
    channel: Channel,
    d: &pb::Device,
) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{} (device {})", d.name, d.id);
    let mode = match d.mode_value() {
        Ok(Some(m)) => format!("{}: {}", m.as_str(), words::mode_meaning(m)),
        _ => d.mode_name(),
    };
    let gateways = c
        .list_gateways(pb::ListGatewaysRequest {})
        .await?
        .into_inner()
        .gateways;
    let gateway = match gateways.iter().find(|g| g.name == d.gateway) {
        Some(g) => format!("{}: {}", g.name, status(g)),
        None => format!("{} (not on the controller)", d.gateway),
    };
    for (k, v) in [
        ("profile", d.profile.clone()),
        ("mode", mode),
        ("gateway", gateway),
        ("location", or_dash(&d.location)),
        ("asset id", or_dash(&d.asset_id)),
        ("mac", or_dash(&d.mac)),
        ("addresses", d.addresses.join(", ")),
    ] {
        let _ = writeln!(s, "  {k:<10} {v}");
    }
    let profile = c
        .get_profile(pb::GetProfileRequest {
            name: d.profile.clone(),
        })
        .await
        .with_context(|| format!("reading profile `{}`", d.profile))?
        .into_inner();
    let _ = writeln!(
        s,
        "\nallowed flows (profile {} version {})",
        profile.name, profile.version
    );
    match wardgate_policy::parse_profile(&profile.name, &profile.yaml) {
        Ok(p) if p.flows.is_empty() => {
            let _ = writeln!(s, "  none");
        }
        Ok(p) => {
            for f in &p.flows {
                let _ = writeln!(s, "  {:<40} {}", words::profile_flow(f), f.name);
            }
        }
        Err(e) => {
            let _ = writeln!(s, "  (the stored profile does not parse: {e})");
        }
    }
    let alerts = AlertServiceClient::new(channel)
        .list(pb::AlertFilter {
            device: d.name.clone(),
            include_acknowledged: true,
            limit: RECENT_ALERTS,
            ..Default::default()
        })
        .await?
        .into_inner()
        .alerts;
    let _ = writeln!(s, "\nrecent alerts");
    if alerts.is_empty() {
        let _ = write!(s, "  none");
    }
    for a in &alerts {
        let _ = writeln!(
            s,
            "  {}  {:<8} {}{}",
            words::when(a.observed_unix_ms, false),
            a.severity_name(),
            super::alerts::summary(a),
            if a.acknowledged {
                " (acknowledged)"
            } else {
                ""
            }
        );
    }
    Ok(s.trim_end().to_string())
}
