//! Read connections of a store file, beside the one connection every write goes through.
//!
//! Writes are serialized on the store's connection (behind its mutex, `sqlite.rs`). A read on
//! that connection holds the same mutex for as long as it runs, so a heavy read (a proposal or
//! a simulation reading a device's every flow row: tens of thousands of rows, each with JSON to
//! parse) made every write wait behind it. Reads that can be long go through these
//! connections instead: each opens read-only, and in WAL mode a reader sees the last commit and
//! never blocks the writer, nor the writer it. Connections are opened on demand and a few idle
//! ones are kept for the next reads.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use rusqlite::{Connection, OpenFlags};

use crate::error::Result;

/// Idle read connections kept for reuse (more may be open at once; the rest are closed).
const KEEP_IDLE: usize = 4;

pub struct Readers {
    db: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Read connections of the WAL database `db` (which must exist).
    pub fn new(db: &Path) -> Readers {
        Readers {
            db: db.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> Result<Connection> {
        let c = Connection::open_with_flags(
            &self.db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // A TRUNCATE checkpoint at close may hold the WAL for a moment.
        c.busy_timeout(Duration::from_secs(5))?;
        c.pragma_update(None, "query_only", true)?;
        Ok(c)
    }

    /// Runs `f` on a read connection (an idle one, or a new one), never on the write one.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let c = match idle {
            Some(c) => c,
            None => self.open()?,
        };
        let out = f(&c);
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < KEEP_IDLE {
            idle.push(c);
        }
        out
    }
}
