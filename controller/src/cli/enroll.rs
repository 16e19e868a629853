//! `wardctl gateways enroll NAME`: a one-time enrollment token for a gateway (engineer role,
//! audited), printed with the command the gateway runs. The controller keeps only its hash:
//! this is the one time it is shown.

use std::time::Duration;

use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

#[derive(Clone, Debug, clap::Args)]
pub struct EnrollArgs {
    /// The gateway's name (its certificate will say `gateway:NAME`).
    pub name: String,
    /// How long the token can be used (once), e.g. `2h`, `3d`; at most 30 days.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub valid_for: Duration,
    /// Why (a reason or ticket id for the audit trail).
    #[arg(long, default_value = "gateway commissioning")]
    pub reason: String,
    /// The enrollment address gateways reach (`wardgate-controller --enroll-listen`), only to
    /// print the command to run on the gateway.
    #[arg(long, default_value = "https://CONTROLLER:7444")]
    pub enroll_url: String,
}

pub async fn run(a: EnrollArgs, remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(remote.channel().await?);
    let r = c
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            gateway: a.name.clone(),
            valid_for_seconds: a.valid_for.as_secs().max(1),
            reason: a.reason.clone(),
        })
        .await?
        .into_inner();
    let expires = std::time::UNIX_EPOCH + Duration::from_millis(r.expires_unix_ms.max(0) as u64);
    match out {
        OutputFormat::Json => output::json(&serde_json::json!({
            "gateway": a.name,
            "token": r.token,
            "expires_unix_ms": r.expires_unix_ms,
            "ca_fingerprint": r.ca_fingerprint,
            "audit_seq": r.audit_seq,
        }))?,
        OutputFormat::Human => {
            println!(
                "enrollment token for {} (one use, until {}; audit entry {}):\n  {}\n\n\
                 on the gateway:\n  wardgate-agent enroll --controller {} --token {} \
                 --ca-fingerprint {}",
                a.name,
                humantime::format_rfc3339_seconds(expires),
                r.audit_seq,
                r.token,
                a.enroll_url,
                r.token,
                r.ca_fingerprint
            );
        }
    }
    Ok(())
}
