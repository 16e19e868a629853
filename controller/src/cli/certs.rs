//! `wardctl certs init | issuing-ca | revoke`: a CA, certificates and a revocation list for a demo or lab.

use std::path::PathBuf;

use clap::Subcommand;

use crate::certs::{self, InitOptions, Lifetimes};

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Create ca, issuing CA, server, gateway and user certificates in DIR (the CA key in
    /// CA_DIR; the issuing CA's, which the controller signs enrolled gateways with, in DIR).
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Where the CA key goes, apart from what gateways read (default: DIR-ca beside DIR).
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// Gateway names (certificate CN gateway:NAME).
        #[arg(long = "gateway")]
        gateways: Vec<String>,
        /// Users as NAME:ROLE, role engineer | soc | viewer (CN user:NAME, OU ROLE).
        #[arg(long = "user", value_parser = parse_user)]
        users: Vec<(String, String)>,
        /// A DNS name or address the controller is reached by (repeat; default localhost,
        /// 127.0.0.1, ::1). Agents and wardctl check this name (`server_name`, --server-name).
        #[arg(long = "server-name")]
        server_names: Vec<String>,
        #[command(flatten)]
        lifetimes: Lifetimes,
    },
    /// Add (or replace) the issuing CA the controller signs enrolled and renewed gateways with,
    /// in a DIR written before issuing CAs existed; needs the root key (CA_DIR).
    IssuingCa {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Where the CA key is (default: DIR-ca beside DIR).
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// Days the issuing CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Revoke certificates (NAME = gateway-X or user-Y in DIR): adds them to DIR/crl.pem, which
    /// the controller reloads; their connections are cut and new ones refused.
    Revoke {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Where the CA key is (default: DIR-ca beside DIR).
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    let (name, role) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected NAME:ROLE"))?;
    if !["engineer", "soc", "viewer"].contains(&role) {
        return Err(format!("role `{role}` is not engineer, soc or viewer"));
    }
    certs::validate_name("user", name)?;
    Ok((name.to_string(), role.to_string()))
}

pub fn run(cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::Init {
            dir,
            ca_dir,
            gateways,
            users,
            server_names,
            lifetimes,
        } => {
            let mut opts = InitOptions {
                ca_dir: ca_dir.clone(),
                lifetimes,
                ..InitOptions::default()
            };
            if !server_names.is_empty() {
                opts.server_names = server_names;
            }
            certs::init(&dir, &gateways, &users, &opts)?;
            let root = std::fs::read_to_string(dir.join("ca.pem"))?;
            let root = pem::parse(&root)?;
            println!(
                "wrote CA, issuing CA, server ({}), {} gateway and {} user certificates to {}; \
                 the CA key to {} (keep it offline: the controller signs with the issuing CA)\n\
                 CA fingerprint (SHA-256, for `wardgate-agent enroll --ca-fingerprint`): {}",
                opts.server_names.join(", "),
                gateways.len(),
                users.len(),
                dir.display(),
                certs::ca_dir_for(&dir, ca_dir.as_deref())?.display(),
                crate::issuing::fingerprint(root.contents())
            );
            Ok(())
        }
        CertsCmd::IssuingCa { dir, ca_dir, days } => {
            certs::add_issuing_ca(&dir, ca_dir.as_deref(), days)?;
            println!(
                "wrote the issuing CA ({} and {}) and its revocation list to {}; restart the \
                 controller to use it",
                crate::issuing::ISSUING_CERT,
                crate::issuing::ISSUING_KEY,
                dir.display()
            );
            Ok(())
        }
        CertsCmd::Revoke { dir, ca_dir, names } => {
            let r = certs::revoke(&dir, ca_dir.as_deref(), &names)?;
            println!(
                "revoked {} certificate(s) ({}); {} lists {} in all",
                r.added.len(),
                if r.added.is_empty() {
                    "already listed".to_string()
                } else {
                    r.added.join(", ")
                },
                dir.join("crl.pem").display(),
                r.total
            );
            Ok(())
        }
    }
}
