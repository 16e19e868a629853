//! `learn --propose DIR`: one candidate profile per device from its completed flows (what was
//! left out is listed in the file's header), checked before it is written: it parses,
//! validates, and blocks none of the flows it was made from.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use wardgate_analysis::{baseline::Groups, propose, simulate};

use super::Learned;

pub fn write(
    dir: &Path,
    l: &Learned,
    groups: &Groups,
    site: Option<&wardgate_policy::Site>,
    include_incomplete: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for b in &l.baselines {
        let device = &b.device.name;
        let opts = propose::ProposeOptions { include_incomplete };
        let text =
            propose::propose_weighted(device, l.flows.iter().map(|r| (r, 1)), groups, opts).yaml;
        let name = propose::profile_name(device);
        let path = dir.join(format!("{name}.yaml"));
        let file = path.display().to_string();
        let profile = wardgate_policy::parse_profile(&file, &text)
            .map_err(|d| anyhow::anyhow!("proposal for {device} does not parse (a bug):\n{d}"))?;
        let own: Vec<_> = l
            .flows
            .iter()
            .filter(|r| {
                &r.device.name == device && (include_incomplete || r.outcome.is_completed())
            })
            .cloned()
            .collect();
        let blocked = simulate::simulate(&profile, site, &own)
            .with_context(|| format!("proposal for {device} (a bug)"))?;
        anyhow::ensure!(
            blocked.is_empty(),
            "proposal for {device} would block its own flows (a bug): {blocked:?}"
        );
        std::fs::write(&path, text).with_context(|| format!("writing {file}"))?;
        written.push(path);
    }
    Ok(written)
}
