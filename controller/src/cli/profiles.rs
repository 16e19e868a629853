//! `wardctl profiles`: the profiles the controller holds (list, get), checking a file against
//! it, and uploading a new version (audited, recompiles the gateways that use it).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

#[derive(Subcommand)]
pub enum ProfilesCmd {
    /// List the controller's profiles and their versions.
    List,
    /// Print the current version of one profile (its YAML).
    Get { name: String },
    /// Check a profile file with the controller's validator (nothing is stored).
    Validate { file: PathBuf },
    /// Upload a profile file as a new version.
    Upsert {
        file: PathBuf,
        /// Why (a reason or ticket id for the audit trail); not needed with --dry-run.
        #[arg(long)]
        reason: Option<String>,
        /// Show what would change for each device on this profile; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply it even though it would cut off traffic seen recently on more than the
        /// controller's share of a device class on a ward (the availability warning).
        #[arg(long)]
        accept_impact: bool,
    },
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

pub async fn run(cmd: ProfilesCmd, remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(remote.channel().await?);
    match cmd {
        ProfilesCmd::List => {
            let profiles = c
                .list_profiles(pb::ListProfilesRequest {})
                .await?
                .into_inner()
                .profiles;
            match out {
                OutputFormat::Json => output::json(
                    &profiles
                        .iter()
                        .map(|p| serde_json::json!({"name": p.name, "version": p.version}))
                        .collect::<Vec<_>>(),
                )?,
                OutputFormat::Human => {
                    println!("{:<24} {:>7}", "profile", "version");
                    for p in &profiles {
                        println!("{:<24} {:>7}", p.name, p.version);
                    }
                }
            }
        }
        ProfilesCmd::Get { name } => {
            let p = c
                .get_profile(pb::GetProfileRequest { name })
                .await?
                .into_inner();
            match out {
                OutputFormat::Json => output::json(
                    &serde_json::json!({"name": p.name, "version": p.version, "yaml": p.yaml}),
                )?,
                OutputFormat::Human => print!("{}", p.yaml),
            }
        }
        ProfilesCmd::Validate { file } => {
            let r = c
                .validate_profile(pb::ValidateProfileRequest { yaml: read(&file)? })
                .await?
                .into_inner();
            for p in &r.problems {
                let at = match (p.line, p.column) {
                    (0, _) => String::new(),
                    (l, c) => format!(":{l}:{c}"),
                };
                let hint = match p.hint.as_str() {
                    "" => String::new(),
                    h => format!(" ({h})"),
                };
                eprintln!("{}{at}: {}{hint}", file.display(), p.message);
            }
            if !r.valid {
                bail!("{} problem(s) in {}", r.problems.len(), file.display());
            }
            println!("{}: valid", file.display());
        }
        ProfilesCmd::Upsert {
            file,
            reason,
            dry_run,
            accept_impact,
        } => {
            let w = c
                .upsert_profile(pb::UpsertProfileRequest {
                    yaml: read(&file)?,
                    reason: super::assign::reason(reason, dry_run)?,
                    dry_run,
                    accept_impact,
                })
                .await?
                .into_inner();
            super::assign::print_write(&w, out)?;
        }
    }
    Ok(())
}
