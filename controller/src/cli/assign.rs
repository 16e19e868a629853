//! `wardctl assign DEVICE PROFILE --reason R` and `wardctl mode DEVICE MODE --reason R`;
//! with `--dry-run`, what would change for each affected device, in words, and nothing
//! written (the controller computes it: the console shows the same).

use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

/// The reason, required unless this is a dry run.
pub fn reason(reason: Option<String>, dry_run: bool) -> anyhow::Result<String> {
    match reason {
        Some(r) => Ok(r),
        None if dry_run => Ok(String::new()),
        None => anyhow::bail!(
            "--reason is required (a reason or ticket id for the audit trail); --dry-run shows \
             what would change without one"
        ),
    }
}

/// A device change as the API gives it, for people.
fn render(c: &pb::DeviceChange) -> String {
    crate::preview::render(&crate::preview::DeviceChange {
        gateway: c.gateway.clone(),
        device: c.device.clone(),
        change: match c.change.as_str() {
            "added" => "added",
            "removed" => "removed",
            _ => "changed",
        },
        mode_before: c.mode_before_name(),
        mode_after: c.mode_after_name(),
        profile_before: c.profile_before.clone(),
        profile_after: c.profile_after.clone(),
        allowed_added: c.allowed_added.clone(),
        allowed_removed: c.allowed_removed.clone(),
        warning: c.warning.clone(),
    })
}

/// A write's reason and flags, as given on the command line.
pub struct Write {
    pub reason: String,
    pub dry_run: bool,
    /// `--accept-impact`: apply it despite the availability warning.
    pub accept_impact: bool,
}

/// The availability warning as the controller sent it, in the words the controller uses.
pub fn impact_words(w: &pb::WriteResponse) -> String {
    crate::service::impact::from_pb(&w.impact).render()
}

fn impact_json(w: &pb::WriteResponse) -> serde_json::Value {
    serde_json::json!({
        "over_threshold": w.impact_over_threshold,
        "wards": crate::service::impact::from_pb(&w.impact).wards,
    })
}

/// Prints what a write did (its audit entry and the generations it compiled), or for a dry
/// run what it would change.
pub fn print_write(w: &pb::WriteResponse, out: OutputFormat) -> anyhow::Result<()> {
    if w.dry_run {
        return match out {
            OutputFormat::Json => output::json(&serde_json::json!({
                "dry_run": true,
                "devices": w.preview.iter().map(|c| serde_json::json!({
                    "gateway": c.gateway, "device": c.device, "change": c.change,
                    "mode_before": c.mode_before_name(), "mode_after": c.mode_after_name(),
                    "profile_before": c.profile_before, "profile_after": c.profile_after,
                    "allowed_added": c.allowed_added, "allowed_removed": c.allowed_removed,
                    "warning": c.warning,
                })).collect::<Vec<_>>(),
                "impact": impact_json(w),
            })),
            OutputFormat::Human => {
                println!("dry run: nothing was changed");
                if w.preview.is_empty() {
                    println!("no device's policy would change");
                }
                for c in &w.preview {
                    println!("{}", render(c));
                }
                if !w.impact.is_empty() {
                    println!("availability warning:");
                    print!("{}", impact_words(w));
                    if w.impact_over_threshold {
                        println!("applying it needs --accept-impact (over the controller's share)");
                    }
                }
                Ok(())
            }
        };
    }
    match out {
        OutputFormat::Json => output::json(
            &serde_json::json!({"audit_seq": w.audit_seq, "generations": w.generations, "note": w.note,
                "impact": impact_json(w)}),
        ),
        OutputFormat::Human => {
            if !w.note.is_empty() {
                println!("{}", w.note);
            }
            if w.impact_over_threshold {
                println!("availability impact accepted (recorded in the audit entry):");
                print!("{}", impact_words(w));
            }
            println!("recorded as audit entry {}", w.audit_seq);
            for (g, n) in &w.generations {
                println!("gateway {g}: new policy generation {n}");
            }
            Ok(())
        }
    }
}

pub async fn assign(
    device: String,
    profile: String,
    w: Write,
    remote: &Remote,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(remote.channel().await?);
    let w = c
        .assign_profile(pb::AssignProfileRequest {
            device,
            profile,
            reason: w.reason,
            dry_run: w.dry_run,
            accept_impact: w.accept_impact,
        })
        .await?
        .into_inner();
    print_write(&w, out)
}

pub async fn mode(
    device: String,
    mode: String,
    w: Write,
    for_minutes: u32,
    remote: &Remote,
    out: OutputFormat,
) -> anyhow::Result<()> {
    // Read here, so that a mistyped mode is named before anything is sent.
    let mode: wardgate_policy::Mode = mode.parse()?;
    let mut req = pb::SetModeRequest {
        device,
        reason: w.reason,
        dry_run: w.dry_run,
        for_minutes,
        accept_impact: w.accept_impact,
        ..Default::default()
    };
    req.set_mode(mode);
    let mut c = AdminServiceClient::new(remote.channel().await?);
    let w = c.set_mode(req).await?.into_inner();
    print_write(&w, out)
}
