//! `wardctl alerts`: tail (live, resumed by sequence number), list, acknowledge, suppress,
//! list and remove suppressions.

use clap::Subcommand;
use wardgate_proto::v1::{self as pb, alert_service_client::AlertServiceClient};

use wardgate_analysis::baseline::proto_name;

use super::{
    output::{self, OutputFormat, or_dash},
    remote::Remote,
};
use crate::words;

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// Stream unacknowledged alerts, then new ones and updates, until interrupted. Each line
    /// starts with the alert's store sequence number; a lost connection is resumed after the
    /// last one received (nothing lost, nothing repeated).
    Tail {
        /// Only alerts of this severity or higher (info, low, medium, high, critical).
        #[arg(long)]
        min_severity: Option<wardgate_analysis::detect::Severity>,
        /// Start after this sequence number (the last one a previous tail printed; 0 = from
        /// the oldest stored alert).
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
    },
    /// Unacknowledged alerts, newest last (--all: acknowledged ones too). Alerts a suppression
    /// held back are left out, as `tail` and the SOC sinks leave them out, unless
    /// --include-suppressed.
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        include_suppressed: bool,
    },
    /// One alert as a page: its summary, device, flow, evidence. ID as `list` prints it.
    Show { id: String },
    Ack {
        ids: Vec<String>,
        #[arg(long)]
        reason: String,
    },
    /// Acknowledge a pattern: alerts of DETECTOR on DEVICE (about PEER, if given) are still
    /// stored but no longer sent to the SOC sinks. Audited.
    Suppress {
        #[arg(long)]
        device: String,
        #[arg(long)]
        detector: String,
        #[arg(long, default_value = "")]
        peer: String,
        #[arg(long)]
        reason: String,
    },
    /// Every suppression: device, detector, peer, who made it, when and why.
    Suppressions,
    /// Remove a suppression, named as `suppressions` lists it: later alerts of that kind reach
    /// the SOC sinks, `tail` and `list` again. Audited.
    Unsuppress {
        #[arg(long)]
        device: String,
        #[arg(long)]
        detector: String,
        #[arg(long, default_value = "")]
        peer: String,
        #[arg(long)]
        reason: String,
    },
}

/// The alert's one line for people: its summary, or what happened on which flow.
pub fn summary(a: &pb::Alert) -> String {
    if !a.summary.trim().is_empty() {
        return a.summary.trim().to_string();
    }
    let what = if a.detector.is_empty() {
        &a.kind
    } else {
        &a.detector
    };
    format!("{what}: {}", flow(a))
}

/// `tcp 192.0.2.10:40000 -> 198.51.100.30:8443` (`no flow` for an alert about none: a
/// gateway's watchdog).
fn flow(a: &pb::Alert) -> String {
    if a.src.is_empty() && a.dst.is_empty() {
        return "no flow".to_string();
    }
    let end = |addr: &str, port: u32| {
        if port == 0 {
            addr.to_string()
        } else if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        }
    };
    format!(
        "{} {} -> {}",
        proto_name(a.protocol as u8),
        end(&a.src, a.src_port),
        end(&a.dst, a.dst_port)
    )
}

/// One line of `alerts tail` and `alerts list`: time, severity, detector, device, summary.
fn line(a: &pb::Alert, utc: bool) -> String {
    format!(
        "{}{}  {:<8} {:<16} {:<16} {}  (id {}{}{})",
        if a.seq == 0 {
            String::new()
        } else {
            format!("#{} ", a.seq)
        },
        words::when(a.observed_unix_ms, utc),
        a.severity_name(),
        if a.detector.is_empty() {
            &a.kind
        } else {
            &a.detector
        },
        a.device,
        summary(a),
        a.id,
        if a.acknowledged { ", acknowledged" } else { "" },
        if a.suppressed { ", suppressed" } else { "" },
    )
}

/// `alerts show` for people: the alert's summary, where and when, the flow, the evidence.
pub fn page(a: &pb::Alert, utc: bool) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{} alert {}", a.severity_name(), a.id);
    let _ = writeln!(s, "  {}", summary(a));
    let ns_ms = |ns: u64| (ns / 1_000_000) as i64;
    let mut rows: Vec<(&str, String)> = vec![
        ("when", words::when(a.observed_unix_ms, utc)),
        (
            "device",
            format!(
                "{} (profile {}, mode {})",
                or_dash(&a.device),
                or_dash(&a.profile),
                or_dash(&a.mode_name())
            ),
        ),
        ("location", or_dash(&a.location)),
        ("asset id", or_dash(&a.asset_id)),
        ("gateway", or_dash(&a.gateway)),
        (
            "detector",
            or_dash(if a.detector.is_empty() {
                &a.kind
            } else {
                &a.detector
            }),
        ),
        ("flow", flow(a)),
    ];
    if !a.peer.is_empty() {
        rows.push(("peer", a.peer.clone()));
    }
    if !a.rule_name.is_empty() {
        rows.push(("rule", a.rule_name.clone()));
    }
    if !a.mitre_technique.is_empty() {
        rows.push((
            "technique",
            format!("{} {}", a.mitre_technique, a.technique_name)
                .trim()
                .to_string(),
        ));
    }
    if a.count > 1 {
        rows.push((
            "seen",
            format!(
                "{} times, {} .. {}",
                a.count,
                words::when(ns_ms(a.first_seen_unix_ns), utc),
                words::when(ns_ms(a.last_seen_unix_ns), utc)
            ),
        ));
    }
    rows.push((
        "state",
        if a.acknowledged {
            format!("acknowledged by {}", or_dash(&a.acknowledged_by))
        } else {
            "not acknowledged".to_string()
        },
    ));
    if !a.action.is_empty() {
        rows.push(("action", a.action.clone()));
    }
    for (k, v) in rows {
        let _ = writeln!(s, "  {k:<10} {v}");
    }
    if let Some(e) = &a.evidence {
        let mut ev = Vec::new();
        for m in &e.metrics {
            let mut t = format!("{} {}", m.name, m.observed);
            if let Some(b) = m.baseline {
                let _ = write!(t, " (baseline {b}");
                if let Some(sp) = m.baseline_spread {
                    let _ = write!(t, " +- {sp}");
                }
                t.push(')');
            }
            if let Some(th) = m.threshold {
                let _ = write!(t, ", threshold {th}");
            }
            ev.push(t);
        }
        if !e.ports.is_empty() {
            let p: Vec<String> = e.ports.iter().map(u32::to_string).collect();
            ev.push(format!("ports {}", p.join(", ")));
        }
        if !e.peers.is_empty() {
            ev.push(format!("peers {}", e.peers.join(", ")));
        }
        if !e.names.is_empty() {
            ev.push(format!("names {}", e.names.join(", ")));
        }
        if !ev.is_empty() {
            let _ = writeln!(s, "evidence");
            for x in ev {
                let _ = writeln!(s, "  {x}");
            }
        }
    }
    if !a.flows.is_empty() {
        let _ = writeln!(s, "flows");
        for f in &a.flows {
            let _ = writeln!(
                s,
                "  {} {} {}:{} {} {}:{}, {} packets, {} bytes, last {}",
                f.direction,
                proto_name(f.protocol as u8),
                f.device_addr,
                f.device_port,
                if f.direction == "opened" { "->" } else { "<-" },
                f.peer,
                f.peer_port,
                f.packets,
                f.bytes,
                words::when(ns_ms(f.last_seen_unix_ns), utc)
            );
        }
    }
    s.trim_end().to_string()
}

fn json(a: &pb::Alert) -> serde_json::Value {
    crate::alerts::to_json(a)
}

/// `utc`: times in UTC rather than this machine's time zone.
pub async fn run(
    cmd: AlertsCmd,
    remote: &Remote,
    out: OutputFormat,
    utc: bool,
) -> anyhow::Result<()> {
    let mut c = AlertServiceClient::new(remote.channel().await?);
    match cmd {
        AlertsCmd::Tail {
            min_severity,
            after_seq,
        } => tail(remote, c, min_severity, after_seq, out, utc).await?,
        AlertsCmd::List {
            all,
            include_suppressed,
        } => {
            let alerts = c
                .list(pb::AlertFilter {
                    include_acknowledged: all,
                    include_suppressed,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .alerts;
            match out {
                OutputFormat::Json => output::json(&alerts.iter().map(json).collect::<Vec<_>>())?,
                OutputFormat::Human => alerts.iter().for_each(|a| println!("{}", line(a, utc))),
            }
        }
        AlertsCmd::Show { id } => {
            let alerts = c
                .list(pb::AlertFilter {
                    include_acknowledged: true,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .alerts;
            let Some(a) = alerts.iter().find(|a| a.id == id) else {
                anyhow::bail!(
                    "no alert `{id}` among the {} newest stored alerts (`wardctl alerts list \
                     --all` prints their ids)",
                    alerts.len()
                );
            };
            match out {
                OutputFormat::Json => output::json(&json(a))?,
                OutputFormat::Human => println!("{}", page(a, utc)),
            }
        }
        AlertsCmd::Ack { ids, reason } => {
            let w = c
                .acknowledge(pb::AcknowledgeRequest { ids, reason })
                .await?
                .into_inner();
            println!("acknowledged (audit entry {})", w.audit_seq);
        }
        AlertsCmd::Suppress {
            device,
            detector,
            peer,
            reason,
        } => {
            let w = c
                .suppress(pb::SuppressRequest {
                    device,
                    detector,
                    peer,
                    reason,
                })
                .await?
                .into_inner();
            println!("suppressed (audit entry {})", w.audit_seq);
        }
        AlertsCmd::Suppressions => {
            let list = c
                .list_suppressions(pb::ListSuppressionsRequest {})
                .await?
                .into_inner()
                .suppressions;
            match out {
                OutputFormat::Json => output::json(
                    &list
                        .iter()
                        .map(|s| {
                            serde_json::json!({
                                "device": s.device, "detector": s.detector, "peer": s.peer,
                                "made_by": s.made_by, "made_unix_ms": s.made_unix_ms,
                                "reason": s.reason,
                            })
                        })
                        .collect::<Vec<_>>(),
                )?,
                OutputFormat::Human if list.is_empty() => println!("no suppressions"),
                OutputFormat::Human => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|s| {
                            vec![
                                s.device.clone(),
                                s.detector.clone(),
                                if s.peer.is_empty() {
                                    "any".into()
                                } else {
                                    s.peer.clone()
                                },
                                or_dash(&s.made_by),
                                if s.made_unix_ms == 0 {
                                    "-".into()
                                } else {
                                    words::when(s.made_unix_ms, utc)
                                },
                                or_dash(&s.reason),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        output::table(
                            &["DEVICE", "DETECTOR", "PEER", "BY", "SINCE", "REASON"],
                            &rows,
                        )
                    );
                }
            }
        }
        AlertsCmd::Unsuppress {
            device,
            detector,
            peer,
            reason,
        } => {
            let w = c
                .unsuppress(pb::SuppressRequest {
                    device,
                    detector,
                    peer,
                    reason,
                })
                .await?
                .into_inner();
            println!("suppression removed (audit entry {})", w.audit_seq);
        }
    }
    Ok(())
}

/// Reconnect delays of `alerts tail`: doubling from the first to the last.
const RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(500);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Follows the alert stream from `after_seq`; when the connection is lost, subscribes again
/// after the last sequence number printed. A refusal (bad filter, no permission) ends it.
async fn tail(
    remote: &Remote,
    mut c: AlertServiceClient<tonic::transport::Channel>,
    min_severity: Option<wardgate_analysis::detect::Severity>,
    mut after_seq: u64,
    out: OutputFormat,
    utc: bool,
) -> anyhow::Result<()> {
    let mut delay = RETRY_MIN;
    loop {
        let mut filter = pb::AlertFilter {
            after_seq,
            ..Default::default()
        };
        filter.set_min_severity(min_severity);
        let ended = match c.subscribe(filter).await {
            Ok(s) => {
                let mut s = s.into_inner();
                loop {
                    match s.message().await {
                        Ok(Some(a)) => {
                            delay = RETRY_MIN;
                            after_seq = after_seq.max(a.seq);
                            match out {
                                OutputFormat::Json => println!("{}", json(&a)),
                                OutputFormat::Human => println!("{}", line(&a, utc)),
                            }
                        }
                        Ok(None) => break tonic::Status::unavailable("the stream ended"),
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => e,
        };
        if !matches!(
            ended.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ) {
            return Err(ended.into());
        }
        eprintln!(
            "alert stream lost ({}); resuming after #{after_seq} in {delay:?}",
            ended.message()
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
        if let Ok(ch) = remote.channel().await {
            c = AlertServiceClient::new(ch);
        }
    }
}
