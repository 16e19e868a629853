//! Connecting wardctl to a controller: mTLS with the caller's certificate. Each setting comes
//! from its flag (or environment variable), else the wardctl config file (`super::config`),
//! else its default; the identity defaults to the one user certificate in the certs directory.

use std::path::PathBuf;

use anyhow::Context as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::config::{self, WardctlConfig};

/// Where the controller is and who we are, as given on the command line.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Remote {
    /// wardctl config file (default ~/.config/wardgate/wardctl.yaml, if it exists).
    #[arg(long, env = "WARDCTL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Controller address [config `controller`; default https://localhost:7443].
    #[arg(long, env = "WARDGATE_CONTROLLER")]
    pub controller: Option<String>,
    /// Directory with ca.pem and our certificate (`wardctl certs init` layout) [config
    /// `certs`; default /etc/wardgate/certs].
    #[arg(long, env = "WARDGATE_CERTS")]
    pub certs: Option<PathBuf>,
    /// The CA certificate the controller's must chain to [config `ca`; default CERTS/ca.pem].
    #[arg(long, env = "WARDGATE_CA")]
    pub ca: Option<PathBuf>,
    /// Which certificate to use: `user-NAME` or `gateway-NAME` (files NAME.pem / NAME.key)
    /// [config `identity`; default the one user-*.pem in CERTS].
    #[arg(long = "as", env = "WARDGATE_AS")]
    pub identity: Option<String>,
    /// The name the controller's certificate must carry (`wardctl certs init --server-name`)
    /// [config `server_name`; default localhost, which suits a lab only].
    #[arg(long, env = "WARDGATE_SERVER_NAME")]
    pub server_name: Option<String>,
}

/// The settings a connection uses, every one decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub controller: String,
    pub certs: PathBuf,
    pub ca: PathBuf,
    pub identity: String,
    pub server_name: String,
}

/// What reading a certificate file failed on, with the flags that choose it.
pub fn certificate_context(p: &std::path::Path) -> String {
    format!(
        "reading {} (chosen by --certs / WARDGATE_CERTS and --as / WARDGATE_AS, or the wardctl \
         config; `wardctl certs init` writes them)",
        p.display()
    )
}

impl Remote {
    /// Explicit settings (tests, the demo): nothing read from a config file.
    pub fn to(controller: String, certs: PathBuf, identity: &str, server_name: &str) -> Remote {
        Remote {
            config: None,
            controller: Some(controller),
            certs: Some(certs),
            ca: None,
            identity: Some(identity.to_string()),
            server_name: Some(server_name.to_string()),
        }
    }

    /// Flags over the config file over the defaults.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        // Everything given on the command line: no file needed.
        let all_given = self.controller.is_some()
            && self.certs.is_some()
            && self.identity.is_some()
            && self.server_name.is_some();
        let file = if all_given && self.config.is_none() {
            WardctlConfig::default()
        } else {
            WardctlConfig::find(self.config.as_deref(), config::default_path().as_deref())?
        };
        Ok(self.over(file)?)
    }

    /// These flags over `file`.
    pub fn over(&self, file: WardctlConfig) -> Result<Resolved, config::ConfigError> {
        let certs = self
            .certs
            .clone()
            .or(file.certs)
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CERTS));
        let identity = match self.identity.clone().or(file.identity) {
            Some(i) => i,
            None => config::default_identity(&certs)?,
        };
        Ok(Resolved {
            controller: self
                .controller
                .clone()
                .or(file.controller)
                .unwrap_or_else(|| config::DEFAULT_CONTROLLER.to_string()),
            ca: self
                .ca
                .clone()
                .or(file.ca)
                .unwrap_or_else(|| certs.join("ca.pem")),
            certs,
            identity,
            server_name: self
                .server_name
                .clone()
                .or(file.server_name)
                .unwrap_or_else(|| config::DEFAULT_SERVER_NAME.to_string()),
        })
    }

    pub async fn channel(&self) -> anyhow::Result<Channel> {
        self.resolve()?.channel().await
    }
}

impl Resolved {
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let read = |p: PathBuf| std::fs::read(&p).with_context(|| certificate_context(&p));
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(self.ca.clone())?))
            .identity(Identity::from_pem(
                read(self.certs.join(format!("{}.pem", self.identity)))?,
                read(self.certs.join(format!("{}.key", self.identity)))?,
            ))
            .domain_name(self.server_name.clone());
        Channel::from_shared(self.controller.clone())
            .with_context(|| {
                format!(
                    "`{}` is not a controller address like https://HOST:7443 (--controller or \
                     `controller:` in the wardctl config)",
                    self.controller
                )
            })?
            .tls_config(tls)?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.controller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_the_file_the_defaults() {
        let file = WardctlConfig {
            controller: Some("https://file:7443".into()),
            certs: Some("/file/certs".into()),
            ca: None,
            identity: Some("user-file".into()),
            server_name: None,
        };
        let none = Remote::default();
        let r = none.over(file.clone()).unwrap();
        assert_eq!(r.controller, "https://file:7443");
        assert_eq!(r.ca, PathBuf::from("/file/certs/ca.pem"));
        assert_eq!(r.identity, "user-file");
        assert_eq!(r.server_name, "localhost");
        let flags = Remote {
            controller: Some("https://flag:1".into()),
            identity: Some("user-flag".into()),
            ca: Some("/flag/ca.pem".into()),
            ..Remote::default()
        };
        let r = flags.over(file).unwrap();
        assert_eq!(
            (r.controller.as_str(), r.identity.as_str()),
            ("https://flag:1", "user-flag")
        );
        assert_eq!(r.certs, PathBuf::from("/file/certs"));
        assert_eq!(r.ca, PathBuf::from("/flag/ca.pem"));
    }
}
