//! `wardctl alerts`: tail (live), list, acknowledge.

use clap::Subcommand;
use wardgate_proto::v1::{self as pb, alert_service_client::AlertServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// Stream unacknowledged alerts, then new ones, until interrupted.
    Tail {
        #[arg(long, default_value = "")]
        min_severity: String,
    },
    List {
        #[arg(long)]
        all: bool,
    },
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
}

fn line(a: &pb::Alert) -> String {
    let what = if a.detector.is_empty() {
        &a.kind
    } else {
        &a.detector
    };
    format!(
        "{} {:<8} {:<14} {:<10} {} {}:{} -> {}:{} proto {} {} {}",
        a.id,
        a.severity,
        what,
        a.gateway,
        a.device,
        a.src,
        a.src_port,
        a.dst,
        a.dst_port,
        a.protocol,
        a.mitre_technique,
        a.location
    )
}

fn json(a: &pb::Alert) -> serde_json::Value {
    crate::alerts::to_json(a)
}

pub async fn run(cmd: AlertsCmd, remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let mut c = AlertServiceClient::new(remote.channel().await?);
    match cmd {
        AlertsCmd::Tail { min_severity } => {
            let mut s = c
                .subscribe(pb::AlertFilter {
                    min_severity,
                    ..Default::default()
                })
                .await?
                .into_inner();
            while let Some(a) = s.message().await? {
                match out {
                    OutputFormat::Json => println!("{}", json(&a)),
                    OutputFormat::Human => println!("{}", line(&a)),
                }
            }
        }
        AlertsCmd::List { all } => {
            let alerts = c
                .list(pb::AlertFilter {
                    include_acknowledged: all,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .alerts;
            match out {
                OutputFormat::Json => output::json(&alerts.iter().map(json).collect::<Vec<_>>())?,
                OutputFormat::Human => alerts.iter().for_each(|a| println!("{}", line(a))),
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
    }
    Ok(())
}
