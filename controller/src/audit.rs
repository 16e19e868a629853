//! The audit trail: every write records who, when, what (a diff, with the enforcement it
//! changed), and why. Entries are hash-chained: each hash covers the previous hash and the
//! entry, so an edited, inserted or deleted entry breaks the chain at that point; the head of
//! the chain also leaves the database on every write (`head`), which shows a deleted tail, a
//! rewritten chain and an emptied table.

pub mod checkpoint;
pub mod enforcement;
pub mod head;
pub mod signing;

use sha2::{Digest, Sha256};

use self::{enforcement::ContentFormat, head::HeadLine};
use crate::{
    error::Result as StoreResult,
    generation,
    store::{GenerationContent, Store},
};

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

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

/// What a full verification found intact.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub entries: usize,
    /// The last head the head file records.
    pub head_seq: u64,
    /// The head file began at this entry (0: with the store); entries up to it are checked by
    /// the chain only.
    pub anchored_from: u64,
    /// Generations whose stored content matched the hash in their audit entry.
    pub generations: usize,
}

/// Looks up a stored generation's content: `(gateway, generation)` -> content, `None` if absent.
pub type GenerationLookup<'a> = &'a dyn Fn(&str, u32) -> Result<Option<GenerationContent>, String>;

/// Checks the chain, the chain against the head file's lines, and each generation recorded
/// in an entry against the stored generation. `Err` says what is wrong and where.
pub fn verify_with_head(
    entries: &[AuditEntry],
    head: &[HeadLine],
    generation: GenerationLookup<'_>,
) -> Result<Report, String> {
    let live: Vec<&HeadLine> = self::head::live(head).collect();
    let (Some(first), Some(last)) = (live.first(), live.iter().max_by_key(|h| h.seq)) else {
        return Err("the audit head file has no lines".into());
    };
    let store_seq = entries.last().map_or(0, |e| e.seq);
    if entries.is_empty() && last.seq > 0 {
        return Err(format!(
            "the audit table is empty, but the head file records {} entries (line {}): the table was emptied",
            last.seq, last.line
        ));
    }
    verify(entries)?;
    if last.seq > store_seq {
        return Err(format!(
            "the trail ends at entry {store_seq}, but the head file records entry {} (line {}): entries {}..{} were deleted (truncated)",
            last.seq,
            last.line,
            store_seq + 1,
            last.seq
        ));
    }
    // The chain is contiguous from 1 (checked above).
    let stored = |seq: u64| -> Option<&str> {
        if seq == 0 {
            Some(GENESIS)
        } else {
            entries.get((seq - 1) as usize).map(|e| e.hash.as_str())
        }
    };
    for h in &live {
        if stored(h.seq) != Some(h.hash.as_str()) {
            return Err(format!(
                "entry {} does not match the head file (line {}): the chain was rewritten",
                h.seq, h.line
            ));
        }
    }
    // A write whose heads were cancelled never committed: the store holding one of them means
    // the abort is not what it says.
    if let Some(h) = head
        .iter()
        .find(|h| h.aborted && stored(h.seq) == Some(h.hash.as_str()))
    {
        return Err(format!(
            "entry {} is in the store, but the head file cancels it as aborted (line {}): the head file was tampered with",
            h.seq, h.line
        ));
    }
    let tail = live.last().map_or(0, |h| h.seq);
    if store_seq > tail {
        return Err(format!(
            "entries {}..{store_seq} are not in the head file: written outside the controller, or the head file lost lines",
            tail + 1
        ));
    }
    let generations = verify_generations(entries, generation)?;
    Ok(Report {
        entries: entries.len(),
        head_seq: tail,
        anchored_from: if first.adopted { first.seq } else { 0 },
        generations,
    })
}

/// Checks each generation an entry records (`enforcement` in its diff) against the stored
/// one: present, in the recorded format, with the recorded content hash. How many matched.
pub fn verify_generations(
    entries: &[AuditEntry],
    generation: GenerationLookup<'_>,
) -> Result<usize, String> {
    let mut generations = 0;
    for e in entries {
        let changes = enforcement::of_diff(&e.diff).map_err(|p| format!("entry {}: {p}", e.seq))?;
        for (gateway, c) in changes {
            match generation(&gateway, c.generation)? {
                None => {
                    return Err(format!(
                        "generation {} of {gateway} (audit entry {}) is missing from the store",
                        c.generation, e.seq
                    ));
                }
                Some(content) if ContentFormat::of(&content) != c.content_format => {
                    return Err(format!(
                        "generation {} of {gateway} is stored as {:?}, but its audit entry {} recorded {:?}: the stored policy was changed",
                        c.generation,
                        ContentFormat::of(&content),
                        e.seq,
                        c.content_format
                    ));
                }
                Some(content) if generation::content_hash(&content) != c.content_sha256 => {
                    return Err(format!(
                        "generation {} of {gateway} does not match its audit entry {}: the stored policy was changed",
                        c.generation, e.seq
                    ));
                }
                Some(_) => generations += 1,
            }
        }
    }
    Ok(generations)
}

/// Verifies a store's audit trail against the head file at `head` (see [`verify_with_head`]),
/// generations old and new (each hashed in the form it was stored in). The outer error is a
/// store that cannot be read; the inner one says how the trail is broken.
pub fn verify_store(
    store: &dyn Store,
    head: &std::path::Path,
) -> StoreResult<Result<Report, String>> {
    let (entries, lines) = store.audit_with_head(head)?;
    let lines = match lines {
        Ok(l) => l,
        Err(problem) => return Ok(Err(problem)),
    };
    let lookup = |gateway: &str, g: u32| -> Result<Option<GenerationContent>, String> {
        Ok(store
            .generation(gateway, g)
            .map_err(|e| format!("reading generation {g} of {gateway}: {e}"))?
            .map(|row| row.content))
    };
    Ok(verify_with_head(&entries, &lines, &lookup))
}
