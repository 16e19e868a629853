//! `wardctl profile propose --device NAME [--out FILE] [--include-incomplete]`: a profile
//! proposed by the controller from the device's baseline (its flows in the learning window),
//! validated before it is written. Only completed flows become rules unless
//! `--include-incomplete`; the flows left out and the rules widened beyond what was seen are
//! printed (stderr, so stdout stays the YAML) and are in the YAML's header comment.

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
    /// Also make rules from flows that did not complete (refused, unanswered, denied by the
    /// datapath, unknown): scans and failed attempts become allowed flows.
    #[arg(long)]
    pub include_incomplete: bool,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn run(a: ProposeArgs, out: OutputFormat) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(a.remote.channel().await?);
    let p = c
        .propose_profile(pb::ProposeProfileRequest {
            device: a.device.clone(),
            include_incomplete: a.include_incomplete,
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
            "left_out_flows": p.left_out_flows,
            "left_out": p.left_out.iter().map(|l| serde_json::json!({
                "direction": l.direction, "peer": l.peer, "proto": l.proto, "ports": l.ports,
                "outcome": l.outcome, "flows": l.flows, "last_seen_unix_ms": l.last_seen_unix_ms,
            })).collect::<Vec<_>>(),
            "widened": p.widened,
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
    if out != OutputFormat::Json {
        eprint!("{}", summary(&p));
    }
    Ok(())
}

/// What the proposal left out and where it allows more than was seen, for a person.
fn summary(p: &pb::ProposeProfileResponse) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if p.left_out.is_empty() {
        let _ = writeln!(s, "left out: nothing (every flow completed)");
    } else {
        let _ = writeln!(
            s,
            "left out: {} flows that did not complete (--include-incomplete to use them):",
            p.left_out_flows
        );
        for l in &p.left_out {
            let _ = writeln!(s, "  {}", l.summary);
        }
    }
    for w in &p.widened {
        let _ = writeln!(s, "WIDENED: {w}");
    }
    s
}
