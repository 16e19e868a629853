//! `wardctl devices baseline NAME`: a device's learned baseline (peers with their site groups,
//! services, protocols, app identities, hourly volume, state and window), and
//! `--freeze | --approve | --relearn` to move it (audited writes).

use anyhow::bail;
use wardgate_analysis::baseline::{Baseline, proto_name};
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

#[derive(clap::Args)]
pub struct BaselineArgs {
    /// The device.
    pub name: String,
    /// Stop learning: the baseline keeps what it learned so far.
    #[arg(long, conflicts_with_all = ["approve", "relearn"])]
    pub freeze: bool,
    /// Sign off a frozen baseline.
    #[arg(long, conflicts_with = "relearn")]
    pub approve: bool,
    /// Clear the baseline and the device's recorded flows, and learn again.
    #[arg(long)]
    pub relearn: bool,
    /// With --relearn: the new learning window in days (default: the current one).
    #[arg(long, requires = "relearn")]
    pub window_days: Option<u32>,
    /// Why (a reason or ticket id; required with --freeze, --approve, --relearn).
    #[arg(long, default_value = "")]
    pub reason: String,
}

pub(crate) fn utc_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn utc_ns(ns: u64) -> String {
    utc_ms((ns / 1_000_000) as i64)
}

pub async fn run(a: BaselineArgs, remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(remote.channel().await?);
    let action = match (a.freeze, a.approve, a.relearn) {
        (true, _, _) => Some("freeze"),
        (_, true, _) => Some("approve"),
        (_, _, true) => Some("relearn"),
        _ => None,
    };
    if let Some(action) = action {
        if a.reason.trim().is_empty() {
            bail!("--{action} needs --reason (a reason or ticket id for the audit trail)");
        }
        let w = c
            .set_baseline_state(pb::SetBaselineStateRequest {
                device: a.name.clone(),
                action: action.into(),
                window_days: a.window_days.unwrap_or(0),
                reason: a.reason,
            })
            .await?
            .into_inner();
        match out {
            OutputFormat::Json => output::json(
                &serde_json::json!({"device": a.name, "action": action, "audit_seq": w.audit_seq}),
            )?,
            OutputFormat::Human => {
                println!("baseline of {}: {action} (audit #{})", a.name, w.audit_seq)
            }
        }
        return Ok(());
    }
    let r = c
        .get_baseline(pb::GetBaselineRequest { device: a.name })
        .await?
        .into_inner();
    let b: Baseline = serde_json::from_str(&r.baseline_json)?;
    match out {
        OutputFormat::Json => output::json(&serde_json::json!({
            "device": r.device,
            "state": r.state,
            "window": {
                "start_unix_ms": r.window_start_unix_ms,
                "end_unix_ms": r.window_end_unix_ms,
                "days": r.window_days,
            },
            "changed_unix_ms": r.changed_unix_ms,
            "rows_per_day_cap": r.rows_per_day_cap,
            "over_cap": r.over_cap.iter().map(|d| serde_json::json!({
                "day_start_unix_ms": d.day_start_unix_ms, "flows": d.flows,
            })).collect::<Vec<_>>(),
            "baseline": b,
        }))?,
        OutputFormat::Human => print_table(&r, &b),
    }
    Ok(())
}

fn print_table(r: &pb::BaselineResponse, b: &Baseline) {
    println!(
        "{}: {} (window {} .. {}, {} days)",
        r.device,
        r.state,
        utc_ms(r.window_start_unix_ms),
        utc_ms(r.window_end_unix_ms),
        r.window_days
    );
    println!(
        "{} flows, {} bytes out, {} bytes in",
        b.flows, b.bytes_out, b.bytes_in
    );
    for d in &r.over_cap {
        println!(
            "over the cap of {} flow rows per day on {}: {} flow records not stored",
            r.rows_per_day_cap,
            &utc_ms(d.day_start_unix_ms)[..10],
            d.flows
        );
    }
    println!("\npeers");
    println!(
        "  {:<40} {:<22} {:>8} {:>12} {:<21} period",
        "address", "group", "flows", "bytes", "last seen"
    );
    for p in &b.peers {
        let period = p.period.as_ref().map_or("-".to_string(), |x| {
            format!(
                "{:.0}s +-{:.0}s{}",
                x.median_s,
                x.mad_s,
                if x.periodic { " (periodic)" } else { "" }
            )
        });
        println!(
            "  {:<40} {:<22} {:>8} {:>12} {:<21} {period}",
            p.addr.to_string(),
            p.group.as_deref().unwrap_or("-"),
            p.flows,
            p.bytes,
            utc_ns(p.last_seen_ns),
        );
    }
    if b.peers_overflow > 0 {
        println!("  ({} flows to peers not listed)", b.peers_overflow);
    }
    println!("\nservices");
    println!(
        "  {:<12} {:<7} {:>6} {:>8} {:>12} {:>6}",
        "direction", "proto", "port", "flows", "bytes", "peers"
    );
    for s in &b.services {
        let dir = match s.direction {
            wardgate_analysis::FlowDirection::Opened => "from-device",
            wardgate_analysis::FlowDirection::Received => "to-device",
        };
        println!(
            "  {:<12} {:<7} {:>6} {:>8} {:>12} {:>6}",
            dir,
            proto_name(s.proto),
            s.port,
            s.flows,
            s.bytes,
            s.peers
        );
    }
    let protocols: Vec<String> = b
        .protocols
        .iter()
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    println!("\nprotocols: {}", protocols.join(", "));
    if !b.apps.is_empty() {
        println!("\napp identities");
        for a in &b.apps {
            println!("  {:<60} port {:<5} {} flows", a.identity, a.port, a.flows);
        }
    }
    println!("\nhourly volume (UTC; median +- MAD over the window's days)");
    println!(
        "  {:<4} {:>4} {:>22} {:>16}",
        "hour", "days", "bytes", "flows"
    );
    for h in &b.hourly {
        if h.bytes_median == 0.0 && h.flows_median == 0.0 && h.bytes_mad == 0.0 {
            continue;
        }
        println!(
            "  {:<4} {:>4} {:>22} {:>16}",
            h.hour,
            h.days,
            format!("{:.0} +- {:.0}", h.bytes_median, h.bytes_mad),
            format!("{:.1} +- {:.1}", h.flows_median, h.flows_mad)
        );
    }
}
