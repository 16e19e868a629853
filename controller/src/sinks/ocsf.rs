//! OCSF sink: one JSON object per line (analysis `format::ocsf::event`: Detection Finding, or
//! Network Activity for a datapath deny), appended to a file rotated by size, or written to
//! standard output. Each batch is flushed to disk (`fdatasync`) before the cursor moves.
//! Each alert line carries its store sequence number (`metadata.sequence`), so a controller
//! that takes the file over after a crash knows which alerts are already in it
//! ([`OcsfSink::last_delivered`]).

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use wardgate_analysis::detect::format::ocsf;

use crate::{audit::checkpoint::Signed, config::SinkConfig};

/// A checkpoint as an OCSF Event Log Activity (1008, activity Other: "Audit checkpoint"), the
/// signed message in `message`, its fields in `unmapped`.
pub fn checkpoint_event(checkpoint: &Signed) -> serde_json::Value {
    let c = &checkpoint.checkpoint;
    serde_json::json!({
        "class_uid": 1008,
        "class_name": "Event Log Activity",
        "category_uid": 1,
        "category_name": "System Activity",
        "activity_id": 99,
        "activity_name": "Audit checkpoint",
        "type_uid": 100_899,
        "severity_id": 1,
        "severity": "Informational",
        "time": c.unix_ms,
        "message": checkpoint.message(),
        "metadata": {
            "version": wardgate_analysis::detect::format::ocsf::OCSF_VERSION,
            "log_name": "wardgate audit trail",
            "product": {"name": "wardgate", "vendor_name": "wardgate"},
        },
        "unmapped": {"seq": c.seq, "hash": c.hash, "key": checkpoint.key_id},
    })
}

pub struct OcsfSink {
    /// `None`: standard output.
    path: Option<PathBuf>,
    rotate_bytes: u64,
    keep: u32,
    file: Option<File>,
}

impl OcsfSink {
    pub fn new(cfg: &SinkConfig) -> OcsfSink {
        OcsfSink {
            path: cfg.path.clone().filter(|p| p != Path::new("-")),
            rotate_bytes: cfg.rotate_bytes,
            keep: cfg.keep,
            file: None,
        }
    }

    pub fn deliver(&mut self, alerts: &[super::Outgoing]) -> anyhow::Result<()> {
        let mut text = String::new();
        for o in alerts {
            text.push_str(&event(o).to_string());
            text.push('\n');
        }
        self.write(&text)
    }

    /// The last alert this sink's file holds (the current file, or the newest rotated one when
    /// the current has none yet); `None` on standard output or with no alert written. A last
    /// line cut short (its writer killed in the middle) is cut off first: the caller holds the
    /// sink's lease, so no other controller writes the file.
    pub fn last_delivered(&mut self) -> anyhow::Result<Option<Delivered>> {
        let Some(path) = self.path.clone() else {
            return Ok(None);
        };
        self.file = None;
        if let Some(d) = last_in(&path, true)? {
            return Ok(Some(d));
        }
        last_in(&rotated(&path, 1), false)
    }

    /// The checkpoint as one line (`checkpoint_event`).
    pub fn deliver_checkpoint(&mut self, checkpoint: &Signed) -> anyhow::Result<()> {
        self.write(&format!("{}\n", checkpoint_event(checkpoint)))
    }

    fn write(&mut self, text: &str) -> anyhow::Result<()> {
        let Some(path) = self.path.clone() else {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            return Ok(out.flush()?);
        };
        let file = self.file(&path)?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("syncing {}", path.display()))
    }

    /// The open file, rotated first when it has reached `rotate_bytes`.
    fn file(&mut self, path: &Path) -> anyhow::Result<&mut File> {
        let len = match &self.file {
            Some(f) => f.metadata()?.len(),
            None => std::fs::metadata(path).map_or(0, |m| m.len()),
        };
        if len >= self.rotate_bytes {
            self.file = None;
            rotate(path, self.keep)?;
        }
        if self.file.is_none() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            );
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    pub fn reset(&mut self) {
        self.file = None;
    }
}

/// An alert line as the sink writes it: the analysis crate's event, with the store's sequence
/// number in `metadata.sequence`.
pub fn event(o: &super::Outgoing) -> serde_json::Value {
    let mut e = ocsf::event(&o.finding, o.update);
    e["metadata"]["sequence"] = o.seq.into();
    e
}

/// An alert line found in the file: its store sequence number and its `metadata.uid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub seq: i64,
    pub uid: String,
}

/// How much of a file's end is read for its last alert: a batch of long findings fits.
const TAIL: u64 = 4 << 20;

/// The last alert line in `path`'s last [`TAIL`] bytes, cutting off a partial last line when
/// `cut` (none when the file does not exist).
fn last_in(path: &Path, cut: bool) -> anyhow::Result<Option<Delivered>> {
    let mut file = match OpenOptions::new().read(true).write(cut).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if cut && whole < buf.len() && (whole > 0 || start == 0) {
        let keep = start + whole as u64;
        tracing::warn!(
            path = %path.display(),
            cut = buf.len() - whole,
            "the OCSF file ended in a line cut short (its writer stopped mid-write): cut off"
        );
        file.set_len(keep)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cutting the partial last line of {}", path.display()))?;
    }
    let mut lines: Vec<&[u8]> = buf[..whole].split(|b| *b == b'\n').collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // may begin mid-line
    }
    for line in lines.iter().rev() {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let m = &v["metadata"];
        if let (Some(seq), Some(uid)) = (m["sequence"].as_i64(), m["uid"].as_str()) {
            return Ok(Some(Delivered {
                seq,
                uid: uid.to_string(),
            }));
        }
    }
    Ok(None)
}

/// `PATH.N`: the Nth newest rotated file.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Shifts `PATH.1..` up by one (the oldest beyond `keep` is removed) and moves `PATH` to
/// `PATH.1`.
fn rotate(path: &Path, keep: u32) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(rotated(path, keep));
    for n in (1..keep).rev() {
        let from = rotated(path, n);
        if from.exists() {
            std::fs::rename(&from, rotated(path, n + 1))
                .with_context(|| format!("rotating {}", from.display()))?;
        }
    }
    std::fs::rename(path, rotated(path, 1))
        .with_context(|| format!("rotating {}", path.display()))?;
    tracing::info!(path = %path.display(), "OCSF file rotated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SinkKind;

    #[test]
    fn files_rotate_by_size_and_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soc/ocsf.jsonl");
        let mut sink = OcsfSink::new(&SinkConfig {
            kind: SinkKind::Ocsf,
            name: None,
            address: None,
            tls: None,
            path: Some(path.clone()),
            rotate_bytes: 1,
            keep: 2,
        });
        let device = wardgate_analysis::flow::DeviceRef {
            name: "pump".into(),
            id: None,
            mac: None,
        };
        for i in 0..4 {
            let mut f = wardgate_analysis::detect::Finding::new(
                "scan_vertical",
                &device,
                1,
                wardgate_analysis::detect::Severity::High,
                1.0,
                wardgate_analysis::detect::Technique::new(
                    "T0846",
                    "Remote System Discovery",
                    wardgate_analysis::detect::Matrix::Ics,
                ),
            );
            f.id = format!("gw/{i}");
            sink.deliver(&[super::super::Outgoing {
                finding: f,
                update: false,
                seq: i64::from(i) + 1,
            }])
            .unwrap();
        }
        let uid = |p: &Path| -> String {
            let v: serde_json::Value =
                serde_json::from_str(std::fs::read_to_string(p).unwrap().trim()).unwrap();
            v["finding_info"]["uid"].as_str().unwrap().to_string()
        };
        assert_eq!(uid(&path), "gw/3");
        assert_eq!(uid(&rotated(&path, 1)), "gw/2");
        assert_eq!(uid(&rotated(&path, 2)), "gw/1");
        assert!(!rotated(&path, 3).exists(), "only `keep` rotated files");
    }
}
