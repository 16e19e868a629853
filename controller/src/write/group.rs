//! Group commit: writes that arrive while another is being committed wait, and the next of
//! them to lead runs all that waited in one transaction (each with its own audit entries,
//! generations and outcome, in arrival order), then commits once.
//!
//! Why: every write holds the store's write lock (on PostgreSQL, the advisory lock that keeps
//! one audit chain across replicas) from its BEGIN to its COMMIT's flush. One at a time, 500
//! writes in flight pay 500 lock hand-offs, BEGINs and flushes one after the other (3.5 ms a
//! write on PostgreSQL here, docs/benchmarks.md); in groups they pay each once per group.
//!
//! What a write sees does not change: it is applied after the writes before it, as it would be
//! alone. A write that fails in a group (a missing device, a compile error, the bundle limit)
//! must not take the others down, and a statement error ends a PostgreSQL transaction: so on
//! any error before the commit the group is rolled back and its writes run again one by one,
//! each in its own transaction, as without grouping; so does a commit the database refused
//! (rolled back). A commit whose connection was lost fails every write of the group, as it
//! would fail the one write alone (whether it took is then unknown to them all).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
};

use super::{Compiler, Staged, WriteOutcome, commit, stage_write, write_noted};
use crate::{
    error::{Error, Result},
    store::{Change, Store, connection_lost},
};

/// One write, owned (the leader runs it on its thread).
#[derive(Debug)]
pub struct Job {
    pub actor: String,
    pub reason: String,
    pub changes: Vec<Change>,
    /// An availability impact the writer accepted (see [`super::write_noted`]).
    pub accepted_impact: Option<serde_json::Value>,
}

/// The writes of one store waiting to be committed; one per store, shared by its callers.
pub struct Groups {
    state: Mutex<State>,
    done: Condvar,
    /// At most this many writes in one transaction.
    max: usize,
}

#[derive(Default)]
struct State {
    next: u64,
    queue: VecDeque<(u64, Job)>,
    /// A leader is running a group now.
    leading: bool,
    results: HashMap<u64, Result<WriteOutcome>>,
    stats: GroupStats,
}

/// What the groups have done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Groups run, of one write or more.
    pub groups: u64,
    /// Writes in them.
    pub writes: u64,
    /// The most writes one group held.
    pub largest: usize,
    /// Groups rolled back and run again one write at a time (a write of them was refused).
    pub one_by_one: u64,
}

/// Writes per transaction by default: a group holds the write lock while it runs, so a large
/// one delays the other replicas' writes and the store's other writers (alerts, learning).
pub const MAX_GROUP: usize = 64;

impl Default for Groups {
    fn default() -> Self {
        Groups::new(MAX_GROUP)
    }
}

impl Groups {
    pub fn new(max: usize) -> Groups {
        Groups {
            state: Mutex::new(State::default()),
            done: Condvar::new(),
            max: max.max(1),
        }
    }

    /// Writes waiting for a leader to take them.
    pub fn waiting(&self) -> usize {
        self.state().queue.len()
    }

    pub fn stats(&self) -> GroupStats {
        self.state().stats
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `job` (as [`super::write_noted`] would), in a group with the writes waiting
    /// beside it; blocks until it is committed or refused. `compile` is used for the whole
    /// group, so every caller of one `Groups` passes the same compiler.
    pub fn write(
        &self,
        store: &dyn Store,
        job: Job,
        compile: Compiler<'_>,
    ) -> Result<WriteOutcome> {
        let mut state = self.state();
        let ticket = state.next;
        state.next += 1;
        state.queue.push_back((ticket, job));
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return result;
            }
            if state.leading {
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.leading = true;
            let n = state.queue.len().min(self.max);
            let group: Vec<(u64, Job)> = state.queue.drain(..n).collect();
            state.stats.groups += 1;
            state.stats.writes += n as u64;
            state.stats.largest = state.stats.largest.max(n);
            drop(state);
            let mut lead = Lead {
                groups: self,
                tickets: group.iter().map(|(t, _)| *t).collect(),
                results: None,
            };
            let (results, one_by_one) = run(store, group, compile);
            lead.results = Some(results);
            if one_by_one {
                self.state().stats.one_by_one += 1;
            }
            drop(lead); // hands the results over and wakes the waiting writers
            state = self.state();
        }
    }
}

/// A leader's group: hands its results over when dropped, or (its leader panicked) an
/// error for each of its writes, so that nobody waits forever and a next leader can run.
struct Lead<'a> {
    groups: &'a Groups,
    tickets: Vec<u64>,
    results: Option<Vec<(u64, Result<WriteOutcome>)>>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let results = self.results.take().unwrap_or_else(|| {
            self.tickets
                .iter()
                .map(|t| {
                    let e = Error::Internal("the write group's leader panicked".into());
                    (*t, Err(e))
                })
                .collect()
        });
        let mut state = self.groups.state();
        state.results.extend(results);
        state.leading = false;
        drop(state);
        self.groups.done.notify_all();
    }
}

/// Runs a group: together in one transaction, or one by one if a write of it fails (then true).
fn run(
    store: &dyn Store,
    group: Vec<(u64, Job)>,
    compile: Compiler<'_>,
) -> (Vec<(u64, Result<WriteOutcome>)>, bool) {
    let alone = |(ticket, job): (u64, Job)| {
        let out = write_noted(
            store,
            &job.actor,
            &job.reason,
            &job.changes,
            compile,
            job.accepted_impact,
        );
        (ticket, out)
    };
    if group.len() == 1 {
        return (group.into_iter().map(alone).collect(), false);
    }
    let started = std::time::Instant::now();
    let tried = together(store, &group, compile);
    tracing::debug!(
        writes = group.len(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        committed = tried.is_ok(),
        "write group"
    );
    let results = match tried {
        Ok(outcomes) => group
            .iter()
            .map(|(t, _)| *t)
            .zip(outcomes.into_iter().map(Ok))
            .collect(),
        Err(Failed::Before(e)) => {
            tracing::debug!(
                writes = group.len(),
                "a write of a group failed ({e}); its writes run one by one"
            );
            return (group.into_iter().map(alone).collect(), true);
        }
        // Refused at the commit (a held-back statement, a constraint): rolled back, so as
        // any refusal before it.
        Err(Failed::Commit(e)) if !unknown_outcome(&e) => {
            tracing::debug!(
                writes = group.len(),
                "a group's commit failed ({e}); its writes run one by one"
            );
            return (group.into_iter().map(alone).collect(), true);
        }
        Err(Failed::Commit(e)) => group.iter().map(|(t, _)| (*t, Err(again(&e)))).collect(),
    };
    (results, false)
}

enum Failed {
    /// Nothing was committed: a write of the group was refused, or the transaction failed.
    Before(Error),
    /// The commit (or the transaction's start) failed: on a lost connection whether it took
    /// is unknown and the writes get this error; else nothing was committed.
    Commit(Error),
}

/// The database connection went away during the commit: it may or may not have taken.
fn unknown_outcome(e: &Error) -> bool {
    match e {
        Error::Unavailable(_) => true,
        Error::Store(crate::store::StoreError::Postgres(p)) => connection_lost(p),
        _ => false,
    }
}

/// The group's writes in one transaction, committed once.
fn together(
    store: &dyn Store,
    group: &[(u64, Job)],
    compile: Compiler<'_>,
) -> std::result::Result<Vec<WriteOutcome>, Failed> {
    let mut tx = store.begin().map_err(Failed::Commit)?;
    // What the group's assignments will read, in a few statements for all of them.
    let devices: Vec<&str> = group
        .iter()
        .flat_map(|(_, job)| &job.changes)
        .filter_map(Change::device_update)
        .collect();
    tx.read_ahead(&devices).map_err(Failed::Before)?;
    let mut entries = Vec::new();
    let mut outcomes = Vec::with_capacity(group.len());
    let mut ts = 0;
    for (_, job) in group {
        let Staged {
            outcome,
            entries: chain,
            ts: at,
        } = stage_write(
            tx.as_mut(),
            &job.actor,
            &job.reason,
            &job.changes,
            compile,
            job.accepted_impact.clone(),
        )
        .map_err(Failed::Before)?;
        entries.extend(chain);
        outcomes.push(outcome);
        ts = at;
    }
    commit::commit(tx, store.audit_head(), &entries, ts).map_err(Failed::Commit)?;
    Ok(outcomes)
}

/// The group's one commit error, for each of its writes (errors do not clone: a store error
/// becomes what its status would say).
fn again(e: &Error) -> Error {
    let msg = e.to_string();
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::Store(crate::store::StoreError::Postgres(p)) if connection_lost(p) => {
            Error::Unavailable(msg)
        }
        Error::Invalid(m) => Error::Invalid(m.clone()),
        Error::Precondition(m) => Error::Precondition(m.clone()),
        Error::TooLarge(m) => Error::TooLarge(m.clone()),
        _ => Error::Internal(msg),
    }
}
