//! The write service: one audited write, start to end. It owns the order of a write and every
//! decision in it (device, policy and rule ids; compiling; the bundle limit; generation numbers
//! and the no-change skip; the audit entries and their hash chain; the head-file protocol); the
//! store only persists and reads typed rows through a [`crate::store::StoreTx`].
//!
//! The order: apply each change (one audit entry each), give new profiles and flows their ids,
//! compile the gateways the changes reach, keep each state that changed as a new generation
//! (refused past the bundle limit), chain the entries (the generations go in the last one),
//! record the heads in the head file, then commit beside the head file's sync.

mod commit;
mod entries;
mod generations;
pub mod group;
mod ids;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;

use wardgate_policy::DesiredState;

use crate::{
    audit::{enforcement::Enforcement, now_ms},
    error::{Error, Result},
    generation,
    store::{Change, DeviceRow, SiteReader, Store, StoreTx},
};

/// Compiles the desired states (by gateway) that `changes` may have altered, reading the site
/// after them, with each device change's row before it (`before[i]` for `changes[i]`); gateways
/// left out keep their generation. Errors refuse the write. `crate::compile::affected` is the
/// controller's; tests pass their own.
pub type Compiler<'a> = &'a dyn Fn(
    &dyn SiteReader,
    &[Option<DeviceRow>],
    &[Change],
) -> Result<BTreeMap<String, DesiredState>>;

/// Applies `changes` in `tx` (their audit descriptions) and compiles the gateways they reach:
/// the steps a write and its preview share.
fn stage(
    tx: &mut dyn StoreTx,
    changes: &[Change],
    compile: Compiler<'_>,
) -> Result<(Vec<entries::Described>, BTreeMap<String, DesiredState>)> {
    if changes.is_empty() {
        return Err(Error::Invalid("nothing to write".into()));
    }
    let mut before = Vec::with_capacity(changes.len());
    let mut described = Vec::with_capacity(changes.len());
    let mut written_profiles = std::collections::BTreeSet::new();
    for change in changes {
        let prior = match change.device() {
            Some(name) => tx.device(name)?,
            None => None,
        };
        let change = ids::with_device_id(&*tx, change, prior.as_ref())?;
        let applied = tx.apply(&change)?;
        described.push(entries::describe(&change, applied)?);
        if let Change::UpsertProfile { name, .. } = change.as_ref() {
            written_profiles.insert(name.clone());
        }
        before.push(prior);
    }
    // Ids before compiling: the compiler reads them. Any error below rolls everything back.
    ids::allocate(tx, &written_profiles)?;
    let states = compile(&*tx, &before, changes)?;
    Ok((described, states))
}

/// What a write would compile, gateway by gateway, and the site's groups after it.
#[derive(Clone, Debug, Default)]
pub struct Preview {
    /// Each reached gateway's latest stored state (`None`: none yet, or it does not decode)
    /// and the state the write would store; gateways whose policy would not change are left
    /// out.
    pub gateways: BTreeMap<String, (Option<DesiredState>, DesiredState)>,
    /// Group name and networks, as the write would leave them (to name peers in words).
    pub groups: Vec<(String, Vec<ipnet::IpNet>)>,
}

/// A dry run of [`write`]: the same steps in a transaction that is rolled back, so nothing is
/// stored, audited or pushed. Refused where the write would be (a missing device, a row
/// constraint, a compile error); only the bundle limit is left to the write.
pub fn preview(store: &dyn Store, changes: &[Change], compile: Compiler<'_>) -> Result<Preview> {
    let mut tx = store.begin()?;
    let (_, states) = stage(tx.as_mut(), changes, compile)?;
    let mut out = Preview::default();
    for (gateway, mut state) in states {
        let prev = match tx.latest(&gateway)? {
            Some(row) => generation::decode(&row.content).ok().map(|mut p| {
                state.generation = row.generation;
                p.generation = row.generation;
                p
            }),
            None => None,
        };
        if prev.as_ref() == Some(&state) {
            continue;
        }
        out.gateways.insert(gateway, (prev, state));
    }
    out.groups = tx
        .base()?
        .groups
        .into_iter()
        .map(|(name, cidrs)| {
            let nets = cidrs.iter().filter_map(|c| parse_net(c)).collect();
            (name, nets)
        })
        .collect();
    drop(tx); // rolled back: a preview writes nothing
    Ok(out)
}

/// A group member as stored: a network, or an address (its host network).
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// What a write did.
#[derive(Clone, Debug, Default)]
pub struct WriteOutcome {
    /// The sequence number of the write's last audit entry.
    pub audit_seq: u64,
    pub generations: BTreeMap<String, u32>,
    /// The new generations as they travel (epoch and content hash set), so the push can encode
    /// each once.
    pub states: BTreeMap<String, DesiredState>,
}

/// Applies `changes` in order in one transaction, appends one audit entry per change and
/// stores at most one new generation per affected gateway: if a change, the compile, the
/// bundle limit or the head file fails, nothing is written.
pub fn write(
    store: &dyn Store,
    actor: &str,
    reason: &str,
    changes: &[Change],
    compile: Compiler<'_>,
) -> Result<WriteOutcome> {
    write_noted(store, actor, reason, changes, compile, None)
}

/// [`write`], with an availability impact the writer accepted (`crate::impact`): its summary
/// goes in the first entry as `impact_accepted`.
pub fn write_noted(
    store: &dyn Store,
    actor: &str,
    reason: &str,
    changes: &[Change],
    compile: Compiler<'_>,
    accepted_impact: Option<serde_json::Value>,
) -> Result<WriteOutcome> {
    let mut tx = store.begin()?;
    let staged = stage_write(
        tx.as_mut(),
        actor,
        reason,
        changes,
        compile,
        accepted_impact,
    )?;
    commit::commit(tx, store.audit_head(), &staged.entries, staged.ts)?;
    Ok(staged.outcome)
}

/// One write's rows in a transaction that is not yet committed, and what it will have done.
struct Staged {
    outcome: WriteOutcome,
    /// Its audit entries, chained after whatever the transaction held before it.
    entries: Vec<crate::audit::AuditEntry>,
    ts: i64,
}

/// Everything of one write up to its commit: the changes, the generations and the audit
/// entries, in `tx` (which may hold other writes before it: [`group`]).
fn stage_write(
    tx: &mut dyn StoreTx,
    actor: &str,
    reason: &str,
    changes: &[Change],
    compile: Compiler<'_>,
    accepted_impact: Option<serde_json::Value>,
) -> Result<Staged> {
    let (described, states) = stage(tx, changes, compile)?;
    let epoch = tx.epoch()?;
    let mut out = WriteOutcome::default();
    let mut enforced = Enforcement::new();
    for (gateway, state) in states {
        let latest = tx.latest(&gateway)?;
        let Some(new) = generations::next(latest.as_ref(), state, reason, &epoch)? else {
            continue; // this gateway's policy did not change
        };
        tx.insert_generation(&new.row)?;
        enforced.insert(gateway.clone(), new.change);
        out.generations.insert(gateway.clone(), new.row.generation);
        out.states.insert(gateway, new.state);
    }
    let ts = now_ms();
    let mut described = described;
    if let (Some(first), Some(impact)) = (described.first_mut(), accepted_impact) {
        first.note_impact(impact);
    }
    let chain = entries::chain(
        tx.audit_chain_head()?,
        described,
        enforced,
        actor,
        reason,
        ts,
    );
    for e in &chain {
        tx.insert_audit(e)?;
    }
    out.audit_seq = chain.last().map_or(0, |e| e.seq);
    Ok(Staged {
        outcome: out,
        entries: chain,
        ts,
    })
}
