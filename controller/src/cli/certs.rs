//! `wardctl certs init`: a CA and certificates for a demo or lab.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Create ca, server, gateway and user certificates in DIR.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Gateway names (certificate CN gateway:NAME).
        #[arg(long = "gateway")]
        gateways: Vec<String>,
        /// Users as NAME:ROLE, role engineer | soc | viewer (CN user:NAME, OU ROLE).
        #[arg(long = "user", value_parser = parse_user)]
        users: Vec<(String, String)>,
    },
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    let (name, role) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected NAME:ROLE"))?;
    if !["engineer", "soc", "viewer"].contains(&role) {
        return Err(format!("role `{role}` is not engineer, soc or viewer"));
    }
    Ok((name.to_string(), role.to_string()))
}

pub fn run(cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::Init {
            dir,
            gateways,
            users,
        } => {
            crate::certs::init(&dir, &gateways, &users)?;
            println!(
                "wrote CA, server, {} gateway and {} user certificates to {}",
                gateways.len(),
                users.len(),
                dir.display()
            );
            Ok(())
        }
    }
}
