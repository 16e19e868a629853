//! `wardctl site push`: load a site file and a profile directory into the controller (gateways,
//! groups, profiles, devices) in one transaction, each object audited with the given reason.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use tonic::transport::Channel;
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{output::OutputFormat, remote::Remote};

/// What [`load`] wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct Loaded {
    pub gateways: usize,
    pub groups: usize,
    pub profiles: usize,
    pub devices: usize,
    /// Audit sequence number of the last entry the push wrote.
    pub last_audit: u64,
    /// Gateways given a new generation.
    pub generations: usize,
}

/// Parses and validates a site and a profile directory; nothing is sent if either has an error.
pub fn read(
    site_path: &Path,
    profiles: &Path,
) -> anyhow::Result<(wardgate_policy::Site, wardgate_policy::ProfileSet)> {
    let file = site_path.display().to_string();
    let text = std::fs::read_to_string(site_path)
        .with_context(|| format!("reading the site file {file} (--site)"))?;
    if !profiles.is_dir() {
        anyhow::bail!(
            "no profile directory {} (--profiles: a directory of profile files, such as the \
             packaged library /usr/share/wardgate/profiles)",
            profiles.display()
        );
    }
    let set = wardgate_policy::ProfileSet::load_dir(profiles).map_err(|d| anyhow!("{d}"))?;
    let site = wardgate_policy::parse_site(&file, &text).map_err(|d| anyhow!("{d}"))?;
    let d = wardgate_policy::validate(&file, &site, &set);
    if !d.is_empty() {
        return Err(anyhow!("{d}"));
    }
    Ok((site, set))
}

/// Writes a validated site's gateways, groups, profiles and devices through the admin API, in
/// one call: one transaction on the controller, all or nothing.
pub async fn load(
    c: &mut AdminServiceClient<Channel>,
    site: &wardgate_policy::Site,
    set: &wardgate_policy::ProfileSet,
    reason: &str,
) -> anyhow::Result<Loaded> {
    let w = apply(c, site, set, reason, false).await?;
    Ok(Loaded {
        gateways: site.gateways.len(),
        groups: site.groups.len(),
        profiles: set.profiles.len(),
        devices: site.devices.len(),
        last_audit: w.audit_seq,
        generations: w.generations.len(),
    })
}

/// The `ApplySite` call of [`load`]; with `dry_run`, what it would change and nothing written.
pub async fn apply(
    c: &mut AdminServiceClient<Channel>,
    site: &wardgate_policy::Site,
    set: &wardgate_policy::ProfileSet,
    reason: &str,
    dry_run: bool,
) -> anyhow::Result<pb::WriteResponse> {
    let mut profiles = Vec::new();
    for (file, _) in set.profiles.values() {
        profiles.push(std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?);
    }
    let devices = site
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            // The profile's default mode; none for an unknown profile, which the controller
            // refuses naming the device.
            let mode = d
                .mode
                .or_else(|| set.get(&d.profile.value).map(|p| p.default_mode));
            let mut device = pb::Device {
                name: d.name.value.clone(),
                id: site.device_id(i),
                mac: d.mac.value.clone(),
                addresses: d.addresses.iter().map(|a| a.value.clone()).collect(),
                profile: d.profile.value.clone(),
                gateway: d.gateway.value.clone(),
                location: d.location.clone(),
                asset_id: d.asset_id.clone(),
                ..Default::default()
            };
            device.set_mode(mode);
            device
        })
        .collect();
    let w = c
        .apply_site(pb::ApplySiteRequest {
            gateways: site
                .gateways
                .iter()
                .map(|g| pb::Gateway {
                    name: g.name.value.clone(),
                    interfaces: g.interfaces.clone(),
                    location: g.location.clone(),
                    ..Default::default()
                })
                .collect(),
            groups: site
                .groups
                .iter()
                .map(|(name, cidrs)| pb::Group {
                    name: name.clone(),
                    cidrs: cidrs.iter().map(|x| x.value.clone()).collect(),
                })
                .collect(),
            profiles,
            devices,
            reason: reason.to_string(),
            dry_run,
            // `site push` is the initial load; a site over the share is refused with the
            // warning (assign, mode and profiles upsert take --accept-impact).
            accept_impact: false,
        })
        .await?
        .into_inner();
    Ok(w)
}

pub async fn run(
    site_path: &Path,
    profiles: &Path,
    reason: &str,
    dry_run: bool,
    remote: &Remote,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let (site, set) = read(site_path, profiles)?;
    let mut c = AdminServiceClient::new(remote.channel().await?);
    if dry_run {
        let w = apply(&mut c, &site, &set, reason, true).await?;
        return super::assign::print_write(&w, out);
    }
    let l = load(&mut c, &site, &set, reason).await?;
    println!(
        "pushed {} gateways, {} groups, {} profiles, {} devices in one transaction: {} new generations (last audit entry {})",
        l.gateways, l.groups, l.profiles, l.devices, l.generations, l.last_audit
    );
    Ok(())
}
