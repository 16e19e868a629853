//! `wardctl alerts`: tail (live, resumed by sequence number), list, acknowledge, suppress.

use clap::Subcommand;
use wardgate_proto::v1::{self as pb, alert_service_client::AlertServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// Stream unacknowledged alerts, then new ones and updates, until interrupted. Each line
    /// starts with the alert's store sequence number; a lost connection is resumed after the
    /// last one received (nothing lost, nothing repeated).
    Tail {
        #[arg(long, default_value = "")]
        min_severity: String,
        /// Start after this sequence number (the last one a previous tail printed; 0 = from
        /// the oldest stored alert).
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
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
        "{}{} {:<8} {:<14} {:<10} {} {}:{} -> {}:{} proto {} {} {}",
        if a.seq == 0 {
            String::new()
        } else {
            format!("#{} ", a.seq)
        },
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
        AlertsCmd::Tail {
            min_severity,
            after_seq,
        } => tail(remote, c, min_severity, after_seq, out).await?,
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

/// Reconnect delays of `alerts tail`: doubling from the first to the last.
const RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(500);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Follows the alert stream from `after_seq`; when the connection is lost, subscribes again
/// after the last sequence number printed. A refusal (bad filter, no permission) ends it.
async fn tail(
    remote: &Remote,
    mut c: AlertServiceClient<tonic::transport::Channel>,
    min_severity: String,
    mut after_seq: u64,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let mut delay = RETRY_MIN;
    loop {
        let filter = pb::AlertFilter {
            min_severity: min_severity.clone(),
            after_seq,
            ..Default::default()
        };
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
                                OutputFormat::Human => println!("{}", line(&a)),
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
