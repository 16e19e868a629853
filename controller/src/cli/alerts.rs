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
}

fn line(a: &pb::Alert) -> String {
    format!(
        "{} {:<8} {:<10} {:<10} {} {}:{} -> {}:{} proto {} {}",
        a.id,
        a.severity,
        a.kind,
        a.gateway,
        a.device,
        a.src,
        a.src_port,
        a.dst,
        a.dst_port,
        a.protocol,
        a.mitre_technique
    )
}

fn json(a: &pb::Alert) -> serde_json::Value {
    crate::service::agent::alert_json(a)
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
    }
    Ok(())
}
