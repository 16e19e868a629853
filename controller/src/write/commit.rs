//! The head-file protocol around a write's commit: each entry's chain head leaves the database
//! before the write commits (a write whose head cannot be written is refused), its fsync runs
//! beside the commit's, and a write that does not commit cancels its lines.

use crate::{
    audit::{AuditEntry, head::HeadFile},
    error::{Error, Result},
    store::StoreTx,
};

/// Commits `tx`, whose new audit entries are `entries` (at `ts`), with their heads in `head`.
pub(super) fn commit(
    tx: Box<dyn StoreTx + '_>,
    head: Option<&HeadFile>,
    entries: &[AuditEntry],
    ts: i64,
) -> Result<()> {
    let heads: Vec<(u64, &str)> = entries.iter().map(|e| (e.seq, e.hash.as_str())).collect();
    // One line per entry, so verify names the first entry of a rewrite. On failure the
    // transaction rolls back when `tx` is dropped.
    if let Some(head) = head {
        for (i, (seq, hash)) in heads.iter().enumerate() {
            if let Err(err) = head.append(*seq, hash, ts) {
                abort(head, &heads[..i], ts);
                return Err(Error::Internal(format!(
                    "recording the audit head in {}: {err}; nothing was written",
                    head.path().display()
                )));
            }
        }
    }
    // The head file's fsync runs beside the store's commit (its own fsync): one after the
    // other they added 1.8-5 ms to every write on a busy 2-core machine.
    let (committed, synced) = std::thread::scope(|s| {
        let sync = head.map(|h| s.spawn(|| h.sync()));
        let committed = tx.commit();
        (committed, sync.map(|j| j.join()))
    });
    if let Err(err) = committed {
        if let Some(head) = head {
            abort(head, &heads, ts);
        }
        return Err(err);
    }
    let seq = heads.last().map_or(0, |h| h.0);
    match synced {
        Some(Ok(Err(err))) => tracing::error!(
            seq,
            "audit entry stored, but its head may not be on disk in the head file: {err}"
        ),
        Some(Err(_)) => tracing::error!(seq, "the audit head sync panicked"),
        _ => {}
    }
    Ok(())
}

/// Cancels the head lines of a write that did not commit, newest first.
fn abort(head: &HeadFile, heads: &[(u64, &str)], ts: i64) {
    for (seq, hash) in heads.iter().rev() {
        if let Err(h) = head.abort(*seq, hash, ts) {
            tracing::error!(
                seq,
                "the audit head file keeps a head that did not commit: {h}"
            );
        }
    }
}
