//! WAL checkpoints off the write path. With SQLite's automatic checkpoint, the commit that
//! takes the WAL past 1,000 pages copies them into the database and fsyncs it before it
//! returns: about one write in a hundred paid several milliseconds (a gateway's generation is
//! several pages at 40 devices per gateway), which was the whole p99 of an assignment. Here
//! the store's connection never checkpoints; a thread with its own connection runs a PASSIVE
//! checkpoint every [`EVERY`] (it copies what no reader still needs and never blocks a
//! writer) and a TRUNCATE one when the store closes.

use std::{
    path::Path,
    sync::mpsc::{self, RecvTimeoutError},
    thread::JoinHandle,
    time::Duration,
};

use rusqlite::Connection;

use crate::error::{Error, Result};

/// How often the WAL is copied into the database.
pub const EVERY: Duration = Duration::from_secs(1);

/// The checkpoint thread of one store file; stopped (after a last checkpoint) when dropped.
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing `db` (a WAL-mode database) every `every`.
    pub fn start(db: &Path, every: Duration) -> Result<Checkpointer> {
        let conn = Connection::open(db)?;
        // Another checkpoint (an operator's sqlite3, a second controller refused later) may
        // hold the checkpoint lock for a moment.
        conn.busy_timeout(Duration::from_millis(200))?;
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    // A message or a hang-up (the store dropped) is the last round.
                    let last = !matches!(rx.recv_timeout(every), Err(RecvTimeoutError::Timeout));
                    let mode = if last { "TRUNCATE" } else { "PASSIVE" };
                    match checkpoint(&conn, mode) {
                        Ok(()) => failing = false,
                        // Logged once per run of failures: the next one may succeed, and the
                        // WAL only grows meanwhile.
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!("store WAL checkpoint ({mode}) failed: {e}");
                        }
                        Err(_) => {}
                    }
                    if last {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("starting the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<()> {
    // (busy, WAL frames, frames checkpointed); busy is not an error for PASSIVE.
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|_| ())
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
