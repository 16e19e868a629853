//! `wardgate-controller` subcommands that work on a controller's files rather than through its
//! API (wardctl talks to the API only): `audit verify --data DIR` checks a store, opened
//! read-only (a stopped controller's, or a copy taken for an auditor), against its head file.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{
    cli::{audit::print_verify, output::OutputFormat},
    store::{SqliteStore, Store as _},
};

/// Verifies the store in `data` against the audit head file (`head`, default
/// `DATA/audit-head.log`) and prints the outcome; an error if the trail is broken or there is
/// no store in `data`.
pub fn audit_verify(data: &Path, head: Option<PathBuf>, out: OutputFormat) -> anyhow::Result<()> {
    let store = SqliteStore::open_read_only(data)
        .with_context(|| format!("verifying the store in {}", data.display()))?;
    let head = head.unwrap_or_else(|| data.join(crate::audit::head::FILE_NAME));
    match crate::store::verify_audit(&store, &head)? {
        Ok(r) => print_verify(out, true, r.entries as u64, "", Some(&r)),
        Err(problem) => print_verify(out, false, store.audit()?.len() as u64, &problem, None),
    }
}
