//! Signed audit checkpoints: the chain head (sequence, hash) and the time, signed with the
//! controller's key (`signing`) and sent to the SOC sinks (`sinks::checkpoints`). What the SOC
//! received is out of the controller's reach: a store and head file rewritten together on the
//! controller's disk still disagree with a checkpoint that already left, and a trail cut
//! after a checkpoint falls short of it.
//!
//! The message, anywhere in a line (a syslog line, an OCSF JSON line):
//! `wardgate-audit-checkpoint v1 seq=N hash=HEX unix_ms=T key=KEYID sig=HEX`; the signature
//! covers everything before ` sig=`.

use std::path::Path;

use super::{AuditEntry, GENESIS, signing::PublicKey};

pub const MARKER: &str = "wardgate-audit-checkpoint v1 ";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub unix_ms: i64,
}

/// A checkpoint with the id of the key that signed it and the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub checkpoint: Checkpoint,
    pub key_id: String,
    pub signature: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("expected `{0}=`")]
    Missing(&'static str),
    #[error("`{0}` is not {1}")]
    Bad(String, &'static str),
}

impl Checkpoint {
    /// What is signed.
    fn signed_text(&self, key_id: &str) -> String {
        format!(
            "{MARKER}seq={} hash={} unix_ms={} key={key_id}",
            self.seq, self.hash, self.unix_ms
        )
    }

    pub fn sign(self, key: &super::signing::SigningKey) -> Signed {
        let key_id = key.public().id();
        let signature = key.sign(self.signed_text(&key_id).as_bytes());
        Signed {
            checkpoint: self,
            key_id,
            signature,
        }
    }
}

impl Signed {
    /// The message the sinks carry.
    pub fn message(&self) -> String {
        format!(
            "{} sig={}",
            self.checkpoint.signed_text(&self.key_id),
            hex::encode(&self.signature)
        )
    }

    /// The checkpoint message in `line`, if it holds one.
    pub fn find(line: &str) -> Option<Result<Signed, ParseError>> {
        let at = line.find(MARKER)?;
        Some(Self::parse(&line[at + MARKER.len()..]))
    }

    fn parse(rest: &str) -> Result<Signed, ParseError> {
        let mut words = rest.split([' ', '"', '\\']);
        let mut field = |name: &'static str| -> Result<&str, ParseError> {
            words
                .next()
                .and_then(|w| w.strip_prefix(name))
                .and_then(|w| w.strip_prefix('='))
                .ok_or(ParseError::Missing(name))
        };
        let seq = field("seq")?;
        let hash = field("hash")?;
        let unix_ms = field("unix_ms")?;
        let key_id = field("key")?;
        let sig = field("sig")?;
        let bad = |w: &str, what| ParseError::Bad(w.escape_debug().to_string(), what);
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(hash, "a sha256 hash"));
        }
        Ok(Signed {
            checkpoint: Checkpoint {
                seq: seq.parse().map_err(|_| bad(seq, "a sequence number"))?,
                hash: hash.to_ascii_lowercase(),
                unix_ms: unix_ms.parse().map_err(|_| bad(unix_ms, "a time"))?,
            },
            key_id: key_id.to_string(),
            signature: hex::decode(sig).map_err(|_| bad(sig, "a hex signature"))?,
        })
    }

    /// Whether `key` signed this checkpoint (and the message names that key).
    pub fn verifies(&self, key: &PublicKey) -> bool {
        self.key_id == key.id()
            && key.verifies(
                self.checkpoint.signed_text(&self.key_id).as_bytes(),
                &self.signature,
            )
    }
}

/// A checkpoint found in a SOC file, with its line number.
#[derive(Clone, Debug)]
pub struct Received {
    pub line: usize,
    pub signed: Signed,
}

/// The checkpoints in a file the SOC kept (any lines; those without the marker are skipped).
/// A line with the marker that does not parse is an error naming it.
pub fn read(path: &Path) -> Result<Vec<Received>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the checkpoints in {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(signed) = Signed::find(line) {
            let signed = signed.map_err(|e| {
                format!(
                    "{}:{}: an audit checkpoint that does not read: {e}",
                    path.display(),
                    i + 1
                )
            })?;
            out.push(Received {
                line: i + 1,
                signed,
            });
        }
    }
    Ok(out)
}

/// What a check against checkpoints found intact.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointReport {
    /// Checkpoints read (repeats included: sinks deliver at least once).
    pub checkpoints: usize,
    /// The newest checkpoint's entry: the trail is known to reach it.
    pub highest_seq: u64,
}

/// Checks every checkpoint's signature against `key`, then that the chain (`entries`, itself
/// checked) holds each checkpoint's hash at its sequence and reaches the highest one. `Err`
/// says what is wrong and which line of `source` showed it. No checkpoint at all is an error:
/// it would check nothing.
pub fn verify(
    entries: &[AuditEntry],
    received: &[Received],
    key: &PublicKey,
    source: &Path,
) -> Result<CheckpointReport, String> {
    let at = |r: &Received| format!("{}:{}", source.display(), r.line);
    if received.is_empty() {
        return Err(format!(
            "no audit checkpoint in {}: nothing to check the trail against",
            source.display()
        ));
    }
    for r in received {
        if !r.signed.verifies(key) {
            let named = if r.signed.key_id == key.id() {
                String::new()
            } else {
                format!(" (it names key {})", r.signed.key_id)
            };
            return Err(format!(
                "{}: the checkpoint of entry {} does not verify with key {}{named}: forged or altered",
                at(r),
                r.signed.checkpoint.seq,
                key.id(),
            ));
        }
    }
    super::verify(entries)?;
    let store_seq = entries.last().map_or(0, |e| e.seq);
    let highest = received
        .iter()
        .max_by_key(|r| r.signed.checkpoint.seq)
        .expect("not empty");
    if highest.signed.checkpoint.seq > store_seq {
        return Err(format!(
            "the trail ends at entry {store_seq}, but the SOC holds a signed checkpoint of entry {} ({}): entries {}..{} were deleted (the trail was cut after the checkpoint left)",
            highest.signed.checkpoint.seq,
            at(highest),
            store_seq + 1,
            highest.signed.checkpoint.seq
        ));
    }
    for r in received {
        let c = &r.signed.checkpoint;
        let stored = if c.seq == 0 {
            GENESIS
        } else {
            entries[(c.seq - 1) as usize].hash.as_str()
        };
        if stored != c.hash {
            return Err(format!(
                "entry {} does not match the signed checkpoint the SOC holds ({}): the chain was rewritten",
                c.seq,
                at(r)
            ));
        }
    }
    Ok(CheckpointReport {
        checkpoints: received.len(),
        highest_seq: highest.signed.checkpoint.seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::signing::SigningKey;

    #[test]
    fn a_message_reads_back_from_syslog_and_json_lines_and_verifies_only_unaltered() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(&dir.path().join("k")).unwrap();
        let signed = Checkpoint {
            seq: 7,
            hash: "ab".repeat(32),
            unix_ms: 1_700_000_000_000,
        }
        .sign(&key);
        let m = signed.message();
        let syslog = format!("<110>1 2026-01-01T00:00:00Z ctl wardgate - audit_checkpoint - {m}");
        let json = serde_json::json!({"message": m}).to_string();
        for line in [syslog, json] {
            let back = Signed::find(&line).unwrap().unwrap();
            assert_eq!(back, signed);
            assert!(back.verifies(key.public()));
        }
        let forged = m.replace("seq=7", "seq=9");
        assert!(
            !Signed::find(&forged)
                .unwrap()
                .unwrap()
                .verifies(key.public())
        );
        assert_eq!(
            Signed::find(&m.replace(" key=", " kee=")).unwrap(),
            Err(ParseError::Missing("key"))
        );
        assert!(Signed::find("an alert line").is_none());
    }
}
