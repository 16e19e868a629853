//! Connecting wardctl to a controller: mTLS with the caller's certificate.

use std::path::PathBuf;

use anyhow::Context as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Where the controller is and who we are.
#[derive(clap::Args, Clone, Debug)]
pub struct Remote {
    /// Controller address.
    #[arg(
        long,
        env = "WARDGATE_CONTROLLER",
        default_value = "https://localhost:7443"
    )]
    pub controller: String,
    /// Directory with ca.pem and our certificate (`wardctl certs init` layout).
    #[arg(long, env = "WARDGATE_CERTS", default_value = "/etc/wardgate/certs")]
    pub certs: PathBuf,
    /// Which certificate to use: `user-NAME` or `gateway-NAME` (files NAME.pem / NAME.key).
    #[arg(long = "as", env = "WARDGATE_AS", default_value = "user-admin")]
    pub identity: String,
    /// The name the controller's certificate must carry (`wardctl certs init --server-name`);
    /// "localhost" suits the demo only.
    #[arg(long, env = "WARDGATE_SERVER_NAME", default_value = "localhost")]
    pub server_name: String,
}

/// What reading a certificate file failed on, with the flags that choose it.
pub fn certificate_context(p: &std::path::Path) -> String {
    format!(
        "reading {} (chosen by --certs / WARDGATE_CERTS and --as / WARDGATE_AS; `wardctl certs \
         init` writes them)",
        p.display()
    )
}

impl Remote {
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let read = |name: String| {
            let p = self.certs.join(&name);
            std::fs::read(&p).with_context(|| certificate_context(&p))
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem".into())?))
            .identity(Identity::from_pem(
                read(format!("{}.pem", self.identity))?,
                read(format!("{}.key", self.identity))?,
            ))
            .domain_name(self.server_name.clone());
        Channel::from_shared(self.controller.clone())
            .context("controller address")?
            .tls_config(tls)?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.controller))
    }
}
