//! `wardctl profile propose --device NAME [--out FILE]`: a profile proposed by the controller
//! from the device's baseline (its flows in the learning window), validated before it is written.

use std::path::PathBuf;

use anyhow::Context as _;
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

#[derive(clap::Args)]
pub struct ProposeArgs {
    #[arg(long)]
    pub device: String,
    /// Write the profile here (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn run(a: ProposeArgs, out: OutputFormat) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(a.remote.channel().await?);
    let p = c
        .propose_profile(pb::ProposeProfileRequest {
            device: a.device.clone(),
        })
        .await?
        .into_inner();
    // The controller validated it; check again here so a file written is a file that loads.
    let parsed = wardgate_policy::parse_profile("proposal", &p.yaml)
        .map_err(|d| anyhow::anyhow!("the proposal does not parse: {d}"))?;
    let problems = wardgate_policy::validate_profile("proposal", &parsed);
    anyhow::ensure!(
        problems.is_empty(),
        "the proposal does not validate: {problems}"
    );
    match (&a.out, out) {
        (_, OutputFormat::Json) => output::json(&serde_json::json!({
            "device": a.device, "profile": p.profile, "flows": p.flows, "yaml": p.yaml,
        }))?,
        (Some(path), _) => {
            std::fs::write(path, &p.yaml).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {} (profile {}, from {} flows of {})",
                path.display(),
                p.profile,
                p.flows,
                a.device
            );
        }
        (None, _) => print!("{}", p.yaml),
    }
    Ok(())
}
