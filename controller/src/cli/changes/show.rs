//! `wardctl changes show ID`: what approving change ID would do, computed now by the
//! controller: the rule diff for the device and what the profile would block among its
//! recorded flows.

use wardgate_proto::v1 as pb;

use super::Client;
use crate::cli::{
    baseline::utc_ms,
    output::{self, OutputFormat},
};

pub async fn run(mut c: Client, id: i64, out: OutputFormat) -> anyhow::Result<()> {
    let r = c
        .get_change(pb::GetChangeRequest { id })
        .await?
        .into_inner();
    let p = r.change.clone().unwrap_or_default();
    let blocked: u64 = r.blocked.iter().map(|b| b.flows).sum();
    match out {
        OutputFormat::Json => output::json(&serde_json::json!({
            "change": super::json(&p), "yaml": p.yaml, "rule_changes": r.rule_changes,
            "flows": r.flows, "blocked_flows": blocked,
            "blocked": r.blocked.iter().map(|b| serde_json::json!({
                "direction": b.direction, "peer": b.peer, "peer_group": b.peer_group,
                "proto": b.proto, "port": b.port, "flows": b.flows,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Human => {
            println!(
                "change {}: {} -> profile {}, submitted by {} at {}: {}",
                p.id,
                p.device,
                p.profile,
                p.proposer,
                utc_ms(p.proposed_unix_ms),
                p.reason
            );
            if !p.approver.is_empty() {
                println!(
                    "approved by {} at {}",
                    p.approver,
                    utc_ms(p.decided_unix_ms)
                );
                return Ok(());
            }
            println!("what approving it changes:");
            if r.rule_changes.is_empty() {
                println!("  no rule of the device changes");
            }
            for c in &r.rule_changes {
                for l in c.lines() {
                    println!("  {l}");
                }
            }
            println!(
                "simulation: {blocked} of {} recorded flows would be blocked",
                r.flows
            );
            for b in &r.blocked {
                println!(
                    "  {} {} {} port {}: {} flows",
                    b.direction,
                    wardgate_analysis::baseline::proto_name(b.proto as u8),
                    if b.peer_group.is_empty() {
                        b.peer.clone()
                    } else {
                        format!("{} ({})", b.peer_group, b.peer)
                    },
                    b.port,
                    b.flows
                );
            }
            Ok(())
        }
    }
}
