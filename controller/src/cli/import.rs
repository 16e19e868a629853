//! `wardctl devices import FILE`: an inventory import (FHIR R4 Bundle of Devices, or a CMMS
//! CSV export with a column mapping). The controller computes the diff (new, changed,
//! unmatched, refused); `--dry-run` prints it and writes nothing; otherwise the diff is printed
//! and then written, exactly that diff (its digest goes with the confirmation) or nothing.

use anyhow::Context as _;
use clap::Args;
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};
use crate::import::plan::Plan;

#[derive(Args)]
pub struct ImportArgs {
    /// The file: a FHIR R4 Bundle (.json) or a CSV export.
    pub file: std::path::PathBuf,
    /// fhir or csv (default: .json is FHIR, anything else CSV).
    #[arg(long, default_value = "")]
    pub format: String,
    /// CSV column mapping: a file of `field = Header` lines (mac, name, type, manufacturer,
    /// model, location or ward, asset_id, address), or the mapping itself (`mac=MAC;name=Name`).
    #[arg(long, default_value = "")]
    pub map: String,
    /// Gateway for new devices (default: the gateway whose location is the device's ward).
    #[arg(long, default_value = "")]
    pub gateway: String,
    /// Profile for new devices (default: the profile named like the device's type).
    #[arg(long, default_value = "")]
    pub profile: String,
    /// Why (a reason or ticket id; required to write).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Print the diff; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The diff for people, the same sections as the console's diff page.
pub fn words(file: &str, sha256: &str, p: &Plan) -> String {
    let mut s = format!("import of {file} (sha256 {sha256})\n");
    s += &format!("new devices (learn mode): {}\n", p.new.len());
    for n in &p.new {
        s += &format!(
            "  + {} {} {} profile={} gateway={} location={:?} type={:?}\n",
            n.row.name,
            n.row.mac,
            n.row
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            n.row.profile,
            n.row.gateway,
            n.row.location,
            n.entry.device_type
        );
    }
    s += &format!("changed devices: {}\n", p.changed.len());
    for c in &p.changed {
        for f in &c.fields {
            s += &format!(
                "  ~ {} {}: {:?} -> {:?} ({})\n",
                c.device, f.field, f.old, f.new, c.at
            );
        }
    }
    s += &format!("unchanged: {}\n", p.unchanged);
    s += &format!("unmatched (left as they are): {}\n", p.unmatched.len());
    for u in &p.unmatched {
        s += &format!("  ? {u}\n");
    }
    s += &format!("refused: {}\n", p.refused.len());
    for r in &p.refused {
        s += &format!("  ! {}: {}\n", r.at, r.why);
    }
    s
}

pub async fn run(a: ImportArgs, remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let content =
        std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let mapping = if !a.map.is_empty() && std::path::Path::new(&a.map).is_file() {
        std::fs::read_to_string(&a.map).with_context(|| format!("reading {}", a.map))?
    } else {
        a.map.clone()
    };
    let file_name = a.file.file_name().map_or_else(
        || a.file.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    if !a.dry_run && a.reason.trim().is_empty() {
        anyhow::bail!("--reason is required to write (or use --dry-run)");
    }
    let mut req = pb::ImportDevicesRequest {
        file_name: file_name.clone(),
        content,
        format: a.format,
        mapping,
        gateway: a.gateway,
        profile: a.profile,
        reason: a.reason,
        confirm_digest: String::new(),
    };
    let mut c = AdminServiceClient::new(remote.channel().await?);
    let diff = c.import_devices(req.clone()).await?.into_inner();
    let plan: Plan = serde_json::from_str(&diff.plan_json).context("the controller's diff")?;
    let mut written = None;
    if !a.dry_run && !plan.is_empty() {
        req.confirm_digest = diff.digest.clone();
        written = Some(c.import_devices(req).await?.into_inner().audit_seq);
    }
    match out {
        OutputFormat::Json => output::json(&serde_json::json!({
            "file": file_name, "sha256": diff.sha256, "dry_run": a.dry_run,
            "diff": plan, "audit_seq": written,
        }))?,
        OutputFormat::Human => {
            print!("{}", words(&file_name, &diff.sha256, &plan));
            match written {
                Some(seq) => println!("written (audit entry #{seq})"),
                None if a.dry_run => println!("dry run: nothing written"),
                None => println!("nothing to write"),
            }
        }
    }
    Ok(())
}
