//! `wardctl audit`: list entries, verify the hash chain, through the controller's API. The same
//! check on a stopped controller's files is `wardgate-controller audit verify --data DIR`
//! (`crate::offline`); both print with [`print_verify`].

use clap::Subcommand;
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat},
    remote::Remote,
};

#[derive(Subcommand)]
pub enum AuditCmd {
    /// The newest entries, oldest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only the entries about this device (or other object: a profile, group, gateway).
        #[arg(long)]
        device: Option<String>,
        /// Times in UTC (default: this machine's time zone).
        #[arg(long)]
        utc: bool,
    },
    /// Verify the chain against the head file, and each generation against its entry; exits
    /// non-zero if an entry was edited, inserted or deleted, the tail deleted, the chain
    /// rewritten, the table emptied or a stored generation changed. With `--checkpoints`,
    /// also checks the trail (read through the API) against the signed checkpoints the SOC
    /// kept.
    Verify {
        /// A file the SOC kept (syslog or OCSF lines) holding the controller's signed audit
        /// checkpoints.
        #[arg(long, requires = "checkpoint_key")]
        checkpoints: Option<std::path::PathBuf>,
        /// The controller's checkpoint public key (PEM), as the SOC keeps it.
        #[arg(long, requires = "checkpoints")]
        checkpoint_key: Option<std::path::PathBuf>,
    },
}

pub async fn run(cmd: AuditCmd, remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::List { limit, device, utc } => {
            let mut c = AdminServiceClient::new(remote.channel().await?);
            // Filtered here, then limited: ask for every entry when filtering.
            let mut entries = c
                .list_audit(pb::ListAuditRequest {
                    limit: if device.is_some() { 0 } else { limit },
                })
                .await?
                .into_inner()
                .entries;
            if let Some(d) = &device {
                entries.retain(|e| &e.target == d);
                if entries.is_empty() {
                    anyhow::bail!("no audit entry is about `{d}`");
                }
                if limit > 0 {
                    let skip = entries.len().saturating_sub(limit as usize);
                    entries.drain(..skip);
                }
            }
            match out {
                OutputFormat::Json => {
                    for e in &entries {
                        println!(
                            "{}",
                            serde_json::json!({"seq": e.seq, "unix_ms": e.unix_ms, "actor": e.actor, "action": e.action, "target": e.target, "diff": e.diff, "reason": e.reason, "hash": e.hash})
                        );
                    }
                }
                OutputFormat::Human => {
                    let rows: Vec<Vec<String>> = entries
                        .iter()
                        .map(|e| {
                            vec![
                                e.seq.to_string(),
                                crate::words::when(e.unix_ms, utc),
                                e.actor.clone(),
                                e.action.replace('_', " "),
                                e.target.clone(),
                                e.reason.clone(),
                            ]
                        })
                        .collect();
                    // Each entry's row, then what it changed for each device in words.
                    let table = output::table(&["#", "when", "who", "what", "on", "reason"], &rows);
                    let mut lines = table.lines();
                    if let Some(header) = lines.next() {
                        println!("{header}");
                    }
                    for (line, e) in lines.zip(&entries) {
                        println!("{line}");
                        for words in in_words(&e.diff, device.as_deref()) {
                            for l in words.lines() {
                                println!("    {l}");
                            }
                        }
                    }
                }
            }
            Ok(())
        }
        AuditCmd::Verify {
            checkpoints,
            checkpoint_key,
        } => {
            let mut c = AdminServiceClient::new(remote.channel().await?);
            let v = c
                .verify_audit(pb::VerifyAuditRequest {})
                .await?
                .into_inner();
            let (Some(file), Some(key), true) = (checkpoints, checkpoint_key, v.intact) else {
                return print_verify(out, v.intact, v.entries, &v.problem, None, None);
            };
            let entries = trail(&mut c).await?;
            let src = crate::offline::CheckpointSource { file, key };
            match crate::offline::against_checkpoints(&entries, &src)? {
                Ok(r) => print_verify(out, true, v.entries, "", None, Some(&r)),
                Err(problem) => print_verify(out, false, v.entries, &problem, None, None),
            }
        }
    }
}

/// The whole trail through the API, each entry's previous hash taken from the entry before
/// (the chain check recomputes every hash).
async fn trail(
    c: &mut AdminServiceClient<tonic::transport::Channel>,
) -> anyhow::Result<Vec<crate::audit::AuditEntry>> {
    let listed = c
        .list_audit(pb::ListAuditRequest { limit: 0 })
        .await?
        .into_inner()
        .entries;
    let mut prev = crate::audit::GENESIS.to_string();
    Ok(listed
        .into_iter()
        .map(|e| crate::audit::AuditEntry {
            seq: e.seq,
            unix_ms: e.unix_ms,
            actor: e.actor,
            action: e.action,
            target: e.target,
            diff: e.diff,
            reason: e.reason,
            prev_hash: std::mem::replace(&mut prev, e.hash.clone()),
            hash: e.hash,
        })
        .collect())
}

/// Prints a verification's outcome; an error if the trail is broken (so the exit code says it).
/// `report`: the details an offline check has; `checkpoints`: what a check against the SOC's
/// signed checkpoints found.
pub fn print_verify(
    out: OutputFormat,
    intact: bool,
    entries: u64,
    problem: &str,
    report: Option<&crate::audit::Report>,
    checkpoints: Option<&crate::audit::checkpoint::CheckpointReport>,
) -> anyhow::Result<()> {
    match out {
        OutputFormat::Json => output::json(
            &serde_json::json!({"intact": intact, "entries": entries, "problem": problem, "report": report, "checkpoints": checkpoints}),
        )?,
        OutputFormat::Human if intact => {
            match report {
                Some(r) => println!(
                    "audit trail intact: {entries} entries; the head file agrees up to entry {} (kept since entry {}); {} generations match their entries",
                    r.head_seq, r.anchored_from, r.generations
                ),
                None => println!("audit trail intact: {entries} entries"),
            }
            if let Some(c) = checkpoints {
                println!(
                    "signed checkpoints: {} verified, the trail matches each and reaches the newest (entry {})",
                    c.checkpoints, c.highest_seq
                );
            }
        }
        OutputFormat::Human => eprintln!("audit trail BROKEN: {problem}"),
    }
    if intact {
        Ok(())
    } else {
        anyhow::bail!("audit trail broken")
    }
}

/// What an entry changed for each device (only `device`, when given), in words (entries
/// written before the words were recorded have none).
fn in_words(diff: &str, device: Option<&str>) -> Vec<String> {
    crate::audit::enforcement::of_diff(diff)
        .map(|e| {
            e.into_values()
                .flat_map(|g| g.in_words)
                .filter(|w| device.is_none_or(|d| w.starts_with(&format!("{d} on "))))
                .collect()
        })
        .unwrap_or_default()
}
