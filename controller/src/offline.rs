//! `wardgate-controller` subcommands that work on a controller's files rather than through its
//! API (wardctl talks to the API only): `audit verify --data DIR` checks a store, opened
//! read-only (a stopped controller's, or a copy taken for an auditor), against its head file
//! and, with `--checkpoints FILE --checkpoint-key PUB`, against the signed checkpoints the SOC
//! kept.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{
    audit::{
        checkpoint::{self, CheckpointReport},
        signing::PublicKey,
    },
    cli::{audit::print_verify, output::OutputFormat},
    store::{SqliteStore, Store as _},
};

/// Signed checkpoints the SOC kept, and the public key to check them with.
pub struct CheckpointSource {
    /// A file the SOC kept (a syslog file, an OCSF file): lines holding checkpoints are read,
    /// the others skipped.
    pub file: PathBuf,
    /// The controller's checkpoint public key, as the SOC keeps it (not read from the
    /// controller's disk).
    pub key: PathBuf,
}

/// Verifies the store in `data` against the audit head file (`head`, default
/// `DATA/audit-head.log`) and, with `checkpoints`, against the signed checkpoints the SOC
/// received; prints the outcome; an error if the trail is broken or there is no store in
/// `data`.
pub fn audit_verify(
    data: &Path,
    head: Option<PathBuf>,
    checkpoints: Option<&CheckpointSource>,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let store = SqliteStore::open_read_only(data)
        .with_context(|| format!("verifying the store in {}", data.display()))?;
    let head = head.unwrap_or_else(|| data.join(crate::audit::head::FILE_NAME));
    let entries = store.audit()?.len() as u64;
    let report = match crate::audit::verify_store(&store, &head)? {
        Ok(r) => r,
        Err(problem) => return print_verify(out, false, entries, &problem, None, None),
    };
    let Some(src) = checkpoints else {
        return print_verify(out, true, entries, "", Some(&report), None);
    };
    match against_checkpoints(&store.audit()?, src)? {
        Ok(c) => print_verify(out, true, entries, "", Some(&report), Some(&c)),
        Err(problem) => print_verify(out, false, entries, &problem, None, None),
    }
}

/// Checks `entries` against the checkpoints in `src`. The outer error is a key that does not
/// read; the inner one what is wrong with the trail or the checkpoints.
pub fn against_checkpoints(
    entries: &[crate::audit::AuditEntry],
    src: &CheckpointSource,
) -> anyhow::Result<Result<CheckpointReport, String>> {
    let key = PublicKey::from_pem_file(&src.key).context("the checkpoint public key")?;
    Ok(checkpoint::read(&src.file)
        .and_then(|received| checkpoint::verify(entries, &received, &key, &src.file)))
}
