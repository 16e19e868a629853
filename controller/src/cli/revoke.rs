//! `wardctl gateways revoke NAME`: no enrollment, renewal or policy sync for the gateway from
//! now on, and the certificates the controller issued to it on its revocation list (engineer
//! role, audited). Certificates from `wardctl certs init` also go through `wardctl certs
//! revoke` (the root's list, with the offline key).

use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

#[derive(Clone, Debug, clap::Args)]
pub struct RevokeArgs {
    pub name: String,
    /// Why (a reason or ticket id for the audit trail).
    #[arg(long)]
    pub reason: String,
}

pub async fn run(a: RevokeArgs, remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(remote.channel().await?);
    let r = c
        .revoke_gateway(pb::RevokeGatewayRequest {
            gateway: a.name.clone(),
            reason: a.reason,
        })
        .await?
        .into_inner();
    match out {
        OutputFormat::Json => output::json(&serde_json::json!({
            "gateway": a.name,
            "revoked": true,
            "audit_seq": r.audit_seq,
        }))?,
        OutputFormat::Human => println!(
            "gateway {} revoked (audit entry {}): it can no longer enroll, renew or sync",
            a.name, r.audit_seq
        ),
    }
    Ok(())
}
