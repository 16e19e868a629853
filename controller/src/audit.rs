//! The audit trail: every write records who, when, what (a diff), and why. Entries are
//! hash-chained: each hash covers the previous hash and the entry, so an edited, inserted or
//! deleted entry breaks the chain at that point.

use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub unix_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub diff: String,
    pub reason: String,
    pub prev_hash: String,
    pub hash: String,
}

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditEntry {
    /// The hash of this entry's content and the previous hash (hex sha256); `hash` itself is
    /// not covered.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        for field in [
            self.prev_hash.as_str(),
            &self.seq.to_string(),
            &self.unix_ms.to_string(),
            &self.actor,
            &self.action,
            &self.target,
            &self.diff,
            &self.reason,
        ] {
            // Length-prefixed, so moving bytes between fields changes the hash.
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Checks the chain; `Err` names the first entry where it breaks.
pub fn verify(entries: &[AuditEntry]) -> Result<usize, String> {
    let mut prev = GENESIS.to_string();
    let first = entries.first().map_or(1, |e| e.seq);
    if first != 1 {
        return Err(format!(
            "the trail starts at entry {first}: entries before it were deleted"
        ));
    }
    for (expected_seq, e) in (1..).zip(entries) {
        if e.seq != expected_seq {
            return Err(format!(
                "entry {expected_seq} is missing (next is {})",
                e.seq
            ));
        }
        if e.prev_hash != prev {
            return Err(format!(
                "entry {} does not follow entry {}: an entry was deleted or replaced",
                e.seq,
                e.seq - 1
            ));
        }
        if e.content_hash() != e.hash {
            return Err(format!(
                "entry {} was edited (its hash does not match its content)",
                e.seq
            ));
        }
        prev = e.hash.clone();
    }
    Ok(entries.len())
}
