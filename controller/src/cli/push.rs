//! `wardctl site push`: load a site file and a profile directory into the controller (gateways,
//! groups, profiles, devices), each write audited with the given reason.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use tonic::transport::Channel;
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::remote::Remote;

/// What [`load`] wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct Loaded {
    pub gateways: usize,
    pub groups: usize,
    pub profiles: usize,
    pub devices: usize,
    /// Audit sequence number of the last write.
    pub last_audit: u64,
}

/// Parses and validates a site and a profile directory; nothing is sent if either has an error.
pub fn read(
    site_path: &Path,
    profiles: &Path,
) -> anyhow::Result<(wardgate_policy::Site, wardgate_policy::ProfileSet)> {
    let set = wardgate_policy::ProfileSet::load_dir(profiles).map_err(|d| anyhow!("{d}"))?;
    let file = site_path.display().to_string();
    let text = std::fs::read_to_string(site_path).with_context(|| format!("reading {file}"))?;
    let site = wardgate_policy::parse_site(&file, &text).map_err(|d| anyhow!("{d}"))?;
    let d = wardgate_policy::validate(&file, &site, &set);
    if !d.is_empty() {
        return Err(anyhow!("{d}"));
    }
    Ok((site, set))
}

/// Writes a validated site's gateways, groups, profiles and devices through the admin API.
pub async fn load(
    c: &mut AdminServiceClient<Channel>,
    site: &wardgate_policy::Site,
    set: &wardgate_policy::ProfileSet,
    reason: &str,
) -> anyhow::Result<Loaded> {
    let reason = reason.to_string();
    for g in &site.gateways {
        c.upsert_gateway(pb::UpsertGatewayRequest {
            gateway: Some(pb::Gateway {
                name: g.name.value.clone(),
                interfaces: g.interfaces.clone(),
                location: g.location.clone(),
                ..Default::default()
            }),
            reason: reason.clone(),
        })
        .await?;
    }
    for (name, cidrs) in &site.groups {
        c.upsert_group(pb::UpsertGroupRequest {
            group: Some(pb::Group {
                name: name.clone(),
                cidrs: cidrs.iter().map(|x| x.value.clone()).collect(),
            }),
            reason: reason.clone(),
        })
        .await?;
    }
    for (file, _) in set.profiles.values() {
        let yaml = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        c.upsert_profile(pb::UpsertProfileRequest {
            yaml,
            reason: reason.clone(),
        })
        .await?;
    }
    let mut last = pb::WriteResponse::default();
    for (i, d) in site.devices.iter().enumerate() {
        let profile = set.get(&d.profile.value).expect("validated");
        let mode = d.mode.unwrap_or(profile.default_mode);
        last = c
            .upsert_device(pb::UpsertDeviceRequest {
                device: Some(pb::Device {
                    name: d.name.value.clone(),
                    id: site.device_id(i),
                    mac: d.mac.value.clone(),
                    addresses: d.addresses.iter().map(|a| a.value.clone()).collect(),
                    profile: d.profile.value.clone(),
                    mode: format!("{mode:?}").to_lowercase(),
                    gateway: d.gateway.value.clone(),
                    location: d.location.clone(),
                    asset_id: d.asset_id.clone(),
                }),
                reason: reason.clone(),
            })
            .await?
            .into_inner();
    }
    Ok(Loaded {
        gateways: site.gateways.len(),
        groups: site.groups.len(),
        profiles: set.profiles.len(),
        devices: site.devices.len(),
        last_audit: last.audit_seq,
    })
}

pub async fn run(
    site_path: &Path,
    profiles: &Path,
    reason: &str,
    remote: &Remote,
) -> anyhow::Result<()> {
    let (site, set) = read(site_path, profiles)?;
    let mut c = AdminServiceClient::new(remote.channel().await?);
    let l = load(&mut c, &site, &set, reason).await?;
    println!(
        "pushed {} gateways, {} groups, {} profiles, {} devices (last audit entry {})",
        l.gateways, l.groups, l.profiles, l.devices, l.last_audit
    );
    Ok(())
}
