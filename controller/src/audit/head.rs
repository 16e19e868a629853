//! The audit head file: the chain head (sequence, hash) of every write, appended outside the
//! database. The store's chain alone cannot show a deleted tail, a chain recomputed from
//! scratch or an emptied table (anyone who can write the database can recompute every hash);
//! a head that already left the database can.
//!
//! One line per write, `SEQ HASH UNIX_MS`, appended before the write commits (a write whose
//! head cannot be written is refused) and fsynced while the store's commit is. A line with a fourth word `adopted` starts
//! a head file on a store that already had entries (entries before it are checked only by the
//! chain); `aborted` cancels the line before it with the same sequence (the commit failed).
//! The controller only ever appends; keep the file on another volume or `chattr +a` it.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// The default file name, in the data directory.
pub const FILE_NAME: &str = "audit-head.log";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadLine {
    /// 1-based line number in the file.
    pub line: usize,
    pub seq: u64,
    pub hash: String,
    pub unix_ms: i64,
    pub adopted: bool,
}

/// Reads a head file; `aborted` lines are applied (the line they cancel is dropped). Errors
/// name the file and line.
pub fn read(path: &Path) -> Result<Vec<HeadLine>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "no audit head file at {}: the chain cannot be checked for a deleted tail, a rewrite or an emptied table",
                path.display()
            )
        } else {
            format!("reading {}: {e}", path.display())
        }
    })?;
    let mut out: Vec<HeadLine> = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let words: Vec<&str> = l.split(' ').collect();
        let (seq, hash, ms, tag) = match words.as_slice() {
            [s, h, m] => (s, h, m, None),
            [s, h, m, t] => (s, h, m, Some(*t)),
            _ => return Err(format!("{}: expected `SEQ HASH UNIX_MS [TAG]`", at())),
        };
        let seq: u64 = seq.parse().map_err(|_| {
            format!(
                "{}: `{}` is not a sequence number",
                at(),
                seq.escape_debug()
            )
        })?;
        let unix_ms: i64 = ms
            .parse()
            .map_err(|_| format!("{}: `{}` is not a time", at(), ms.escape_debug()))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{}: `{}` is not a sha256 hash",
                at(),
                hash.escape_debug()
            ));
        }
        match tag {
            None | Some("adopted") => out.push(HeadLine {
                line: i + 1,
                seq,
                hash: hash.to_string(),
                unix_ms,
                adopted: tag.is_some(),
            }),
            Some("aborted") => {
                if let Some(pos) = out.iter().rposition(|h| h.seq == seq && h.hash == *hash) {
                    out.remove(pos);
                }
            }
            Some(t) => return Err(format!("{}: unknown tag `{}`", at(), t.escape_debug())),
        }
    }
    Ok(out)
}

/// The open head file of a running store.
pub struct HeadFile {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl HeadFile {
    /// Opens `path` for appending. A missing or empty file starts with the store's current
    /// head `(seq, hash)` marked `adopted`; a file whose last line is not the store's head is
    /// reported (the store changed outside the controller, or the file lost lines) and kept.
    pub fn open(path: &Path, current: (u64, &str)) -> std::io::Result<HeadFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let fresh = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
        if !fresh {
            match read(path) {
                Ok(lines) => match lines.last() {
                    Some(l) if l.seq == current.0 && l.hash == current.1 => {}
                    last => tracing::error!(
                        head = %path.display(),
                        head_seq = last.map_or(0, |l| l.seq),
                        store_seq = current.0,
                        "the audit head file and the store disagree: run `wardctl audit verify`"
                    ),
                },
                Err(e) => tracing::error!("{e}"),
            }
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?;
        let head = HeadFile {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        };
        if fresh {
            head.write_line(&format!(
                "{} {} {} adopted",
                current.0,
                current.1,
                crate::audit::now_ms()
            ))?;
        }
        Ok(head)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self) -> std::sync::MutexGuard<'_, std::fs::File> {
        self.file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_line(&self, line: &str) -> std::io::Result<()> {
        self.write_unsynced(line)?;
        self.sync()
    }

    /// One write per line (O_APPEND).
    fn write_unsynced(&self, line: &str) -> std::io::Result<()> {
        self.file().write_all(format!("{line}\n").as_bytes())
    }

    /// Records a new head; `sync` puts it on disk.
    pub fn append(&self, seq: u64, hash: &str, unix_ms: i64) -> std::io::Result<()> {
        self.write_unsynced(&format!("{seq} {hash} {unix_ms}"))
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.file().sync_data()
    }

    /// Cancels the head just appended (its write did not commit).
    pub fn abort(&self, seq: u64, hash: &str, unix_ms: i64) -> std::io::Result<()> {
        self.write_line(&format!("{seq} {hash} {unix_ms} aborted"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn lines_are_read_with_aborts_applied_and_errors_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let head = HeadFile::open(&p, (0, crate::audit::GENESIS)).unwrap();
        head.append(1, H1, 10).unwrap();
        head.append(2, H2, 20).unwrap();
        head.abort(2, H2, 20).unwrap();
        head.sync().unwrap();
        let lines = read(&p).unwrap();
        assert_eq!(
            lines.iter().map(|l| (l.seq, l.adopted)).collect::<Vec<_>>(),
            vec![(0, true), (1, false)]
        );
        assert_eq!(lines[1].hash, H1);
        assert_eq!(lines[1].line, 2);

        std::fs::write(&p, format!("1 {H1} 10\n2 nothex 20\n")).unwrap();
        let e = read(&p).unwrap_err();
        assert!(
            e.ends_with(&format!("{}:2: `nothex` is not a sha256 hash", p.display())),
            "{e}"
        );
        std::fs::write(&p, format!("1 {H1} 10 forged\n")).unwrap();
        assert!(read(&p).unwrap_err().contains(":1: unknown tag `forged`"));
        let e = read(&dir.path().join("absent")).unwrap_err();
        assert!(e.starts_with("no audit head file at"), "{e}");
    }
}
