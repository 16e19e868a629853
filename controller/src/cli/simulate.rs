//! `wardctl simulate --profile FILE --device NAME [--since 7d]`: what a candidate profile would
//! have blocked among the device's recorded flows, replayed by the controller through the
//! datapath's lowering and lookup.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    baseline::utc_ms,
    output::{self, OutputFormat},
    remote::Remote,
};

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// The candidate profile (YAML).
    #[arg(long)]
    pub profile: PathBuf,
    #[arg(long)]
    pub device: String,
    /// Replay the flows of this last span (e.g. 7d, 12h); default: every flow kept.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn run(a: SimulateArgs, out: OutputFormat) -> anyhow::Result<()> {
    let yaml = std::fs::read_to_string(&a.profile).with_context(|| {
        format!(
            "reading the candidate profile {} (--profile)",
            a.profile.display()
        )
    })?;
    let mut c = AdminServiceClient::new(a.remote.channel().await?);
    let r = c
        .simulate(pb::SimulateRequest {
            device: a.device.clone(),
            yaml,
            since_s: a.since.map_or(0, |d| d.as_secs().max(1)),
        })
        .await?
        .into_inner();
    // "0 of 0 would be blocked" is no answer: say why there is nothing to judge.
    if r.flows == 0 {
        let span = a.since.map_or(String::new(), |d| {
            format!(" in the last {}", humantime::format_duration(d))
        });
        anyhow::bail!(
            "no recorded flows of `{}`{span}: nothing to simulate {} against (flows are \
             recorded by the device's gateway with recording on; `wardctl devices baseline {}` \
             shows what is kept)",
            a.device,
            a.profile.display(),
            a.device
        );
    }
    match out {
        OutputFormat::Json => output::json(&serde_json::json!({
            "device": a.device,
            "flows": r.flows,
            "blocked": r.blocked.iter().map(|b| serde_json::json!({
                "direction": b.direction, "peer": b.peer, "peer_group": b.peer_group,
                "proto": b.proto, "port": b.port, "flows": b.flows, "bytes": b.bytes,
                "last_seen_unix_ms": b.last_seen_unix_ms,
            })).collect::<Vec<_>>(),
        }))?,
        OutputFormat::Human => {
            let blocked: u64 = r.blocked.iter().map(|b| b.flows).sum();
            println!(
                "{}: {} of {} recorded flows would be blocked by {}",
                a.device,
                blocked,
                r.flows,
                a.profile.display()
            );
            if !r.blocked.is_empty() {
                println!(
                    "  {:<12} {:<40} {:<14} {:<7} {:>6} {:>8} {:>12}  last seen",
                    "direction", "peer", "group", "proto", "port", "flows", "bytes"
                );
            }
            for b in &r.blocked {
                println!(
                    "  {:<12} {:<40} {:<14} {:<7} {:>6} {:>8} {:>12}  {}",
                    b.direction,
                    b.peer,
                    if b.peer_group.is_empty() {
                        "-"
                    } else {
                        &b.peer_group
                    },
                    wardgate_analysis::baseline::proto_name(b.proto as u8),
                    b.port,
                    b.flows,
                    b.bytes,
                    utc_ms(b.last_seen_unix_ms)
                );
            }
        }
    }
    Ok(())
}
