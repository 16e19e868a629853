//! The audit head file: the chain head (sequence, hash) of every write, appended outside the
//! database. The store's chain alone cannot show a deleted tail, a chain recomputed from
//! scratch or an emptied table (anyone who can write the database can recompute every hash);
//! a head that already left the database can.
//!
//! One line per write, `SEQ HASH UNIX_MS`, appended before the write commits (a write whose
//! head cannot be written is refused) and fsynced while the store's commit is. A line with a fourth word `adopted` starts
//! a head file on a store that already had entries (entries before it are checked only by the
//! chain); `aborted` cancels the line right before it with the same sequence, hash and time
//! (the commit failed; a write of several entries cancels them newest first, each abort right
//! after the previous one). Any other `aborted` line is reported as tampering (`read`).
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
    /// Cancelled by the `aborted` line(s) right after its write (the commit failed): the
    /// store must not hold this entry.
    pub aborted: bool,
}

/// The line read before the current one.
enum Prev {
    None,
    /// A head line (index into the lines read).
    Head(usize),
    /// An `aborted` line that cancelled this head line (index).
    Abort(usize),
}

/// Reads a head file. Every line is returned in order, the ones an `aborted` line cancels
/// marked `aborted`. Aborts are held to how the controller writes them, and anything else is
/// an error naming the line: a failed write cancels its head lines at once, newest first, so an
/// `aborted` line must repeat (sequence, hash, time) of the head line directly before it, or,
/// in a run of aborts, of the line before the one the previous abort cancelled (same write:
/// same time, sequence one less, adjacent in the file); and the next head line after the run
/// must reuse the first cancelled sequence (the store never had it). An abort appended later,
/// for an entry that later lines follow or with another time, is tampering. Errors name the
/// file and line.
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
    let mut prev = Prev::None;
    // The first sequence of the last run of aborts, until a head line follows it.
    let mut reuse: Option<(u64, usize)> = None;
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
            None | Some("adopted") => {
                if let Some((first, line)) = reuse.take()
                    && seq != first
                {
                    return Err(format!(
                        "{}: entry {seq} follows the aborted write of entry {first} (line {line}), which the next write would have reused: the `aborted` lines are not the controller's (the head file was tampered with)",
                        at()
                    ));
                }
                out.push(HeadLine {
                    line: i + 1,
                    seq,
                    hash: hash.to_string(),
                    unix_ms,
                    adopted: tag.is_some(),
                    aborted: false,
                });
                prev = Prev::Head(out.len() - 1);
            }
            Some("aborted") => {
                // The head line this abort may cancel: the one right before it, or the one
                // before the line the previous abort of the same run cancelled.
                let target = match prev {
                    Prev::None => None,
                    Prev::Head(t) => Some(t),
                    Prev::Abort(j) => j.checked_sub(1).filter(|&t| {
                        let (a, b) = (&out[t], &out[j]);
                        a.line + 1 == b.line && a.seq + 1 == b.seq && a.unix_ms == b.unix_ms
                    }),
                };
                let Some(t) = target.filter(|&t| {
                    let h = &out[t];
                    !h.adopted
                        && !h.aborted
                        && h.seq == seq
                        && h.hash == *hash
                        && h.unix_ms == unix_ms
                }) else {
                    return Err(format!(
                        "{}: an `aborted` line for entry {seq} that does not directly follow that entry's head line (the controller cancels a failed write's heads at once, newest first): the head file was tampered with",
                        at()
                    ));
                };
                out[t].aborted = true;
                reuse = Some((seq, i + 1));
                prev = Prev::Abort(t);
            }
            Some(t) => return Err(format!("{}: unknown tag `{}`", at(), t.escape_debug())),
        }
    }
    Ok(out)
}

/// The lines no `aborted` line cancelled.
pub fn live(lines: &[HeadLine]) -> impl Iterator<Item = &HeadLine> {
    lines.iter().filter(|l| !l.aborted)
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
                Ok(lines) => match live(&lines).last() {
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
            live(&lines).map(|l| (l.seq, l.adopted)).collect::<Vec<_>>(),
            vec![(0, true), (1, false)]
        );
        assert_eq!(lines[1].hash, H1);
        assert_eq!(lines[1].line, 2);
        assert!(lines[2].aborted && lines[2].seq == 2);

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

    const H3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    fn lines_of(text: &str) -> Result<Vec<HeadLine>, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        std::fs::write(&p, text).unwrap();
        read(&p)
    }

    #[test]
    fn an_abort_counts_only_right_after_the_heads_of_its_own_write() {
        // A failed write of two entries, cancelled newest first; the next write reuses 2.
        let ok = lines_of(&format!(
            "1 {H1} 10\n2 {H2} 20\n3 {H3} 20\n3 {H3} 20 aborted\n2 {H2} 20 aborted\n2 {H3} 30\n"
        ))
        .unwrap();
        assert_eq!(
            live(&ok).map(|l| (l.seq, l.line)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 6)]
        );
        // The attack: aborts appended later for the last entries (time 0).
        let e = lines_of(&format!("1 {H1} 10\n2 {H2} 20\n2 {H2} 0 aborted\n")).unwrap_err();
        assert!(
            e.contains(":3: an `aborted` line for entry 2") && e.contains("tampered"),
            "{e}"
        );
        // Even with the right time, an abort for an entry of an earlier write.
        let e = lines_of(&format!(
            "1 {H1} 10\n2 {H2} 20\n2 {H2} 20 aborted\n1 {H1} 10 aborted\n"
        ))
        .unwrap_err();
        assert!(e.contains(":4: an `aborted` line for entry 1"), "{e}");
        // Not directly after its head line.
        let e = lines_of(&format!("1 {H1} 10\n2 {H2} 20\n1 {H1} 10 aborted\n")).unwrap_err();
        assert!(e.contains(":3: an `aborted` line for entry 1"), "{e}");
        // An abort as the first line, or of an adopted line.
        assert!(lines_of(&format!("1 {H1} 10 aborted\n")).is_err());
        assert!(lines_of(&format!("1 {H1} 10 adopted\n1 {H1} 10 aborted\n")).is_err());
        // Later entries after an aborted one that do not reuse its sequence.
        let e = lines_of(&format!(
            "1 {H1} 10\n2 {H2} 20\n2 {H2} 20 aborted\n3 {H3} 30\n"
        ))
        .unwrap_err();
        assert!(
            e.contains(":4: entry 3 follows the aborted write of entry 2"),
            "{e}"
        );
    }
}
