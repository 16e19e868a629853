//! Stable ids, decided here and stored as rows: a device keeps its id, a profile its policy id
//! and a (profile, flow key) its rule id, forever; a new one takes the next unused number (an
//! id is never reused for another name).

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
};

use crate::{
    compile,
    error::{Error, Result},
    store::{Change, DeviceRow, Snapshot, StoreTx},
};

/// Ids travel in 32-bit map fields (the datapath keeps a flag bit beside some): stay well
/// inside them.
const MAX_ID: u32 = u32::MAX >> 1;

/// `change` with the device id the store keeps: the stored device's for its name, the next
/// free one for a new device, whatever the request says (positions in a site file are not
/// stable). Other changes are returned as they are.
pub(super) fn with_device_id<'c>(
    tx: &dyn StoreTx,
    change: &'c Change,
    stored: Option<&DeviceRow>,
) -> Result<Cow<'c, Change>> {
    let Change::UpsertDevice(d) = change else {
        return Ok(Cow::Borrowed(change));
    };
    let id = match stored {
        Some(s) => s.id,
        None => next(tx.max_device_id()?, "device")?,
    };
    Ok(Cow::Owned(Change::UpsertDevice(DeviceRow {
        id,
        ..d.clone()
    })))
}

fn next(max: u32, what: &str) -> Result<u32> {
    max.checked_add(1)
        .filter(|id| *id <= MAX_ID)
        .ok_or_else(|| Error::Internal(format!("{what} ids exhausted")))
}

/// The ids to add: policy ids by profile, rule ids by (profile, flow key), in allocation order.
#[derive(Debug, Default, PartialEq, Eq)]
struct NewIds {
    policies: Vec<(String, u32)>,
    rules: Vec<(String, String, u32)>,
}

/// Gives each profile of `keys` (with its flow keys) the ids it lacks, numbering on from the
/// highest id held.
fn plan(
    policies: &BTreeMap<String, u32>,
    rules: &BTreeMap<(String, String), u32>,
    keys: &[(String, Vec<String>)],
) -> Result<NewIds> {
    let mut out = NewIds::default();
    let mut last_policy = policies.values().copied().max().unwrap_or(0);
    let mut last_rule = rules.values().copied().max().unwrap_or(0);
    let mut given = BTreeSet::new();
    for (profile, flows) in keys {
        if !policies.contains_key(profile) {
            last_policy = next(last_policy, "policy")?;
            out.policies.push((profile.clone(), last_policy));
        }
        for flow in flows {
            let key = (profile.clone(), flow.clone());
            if rules.contains_key(&key) || !given.insert(key) {
                continue;
            }
            last_rule = next(last_rule, "rule")?;
            out.rules.push((profile.clone(), flow.clone(), last_rule));
        }
    }
    Ok(out)
}

/// Stores the ids the profiles written (`written`) lack, and those of profiles stored before
/// ids existed (they get theirs with the first write after).
pub(super) fn allocate(tx: &mut dyn StoreTx, written: &BTreeSet<String>) -> Result<()> {
    let base = tx.base()?;
    let profiles: Vec<_> = base
        .profiles
        .iter()
        .filter(|p| written.contains(&p.name) || !base.policy_ids.contains_key(&p.name))
        .cloned()
        .collect();
    if profiles.is_empty() {
        return Ok(());
    }
    let keys = compile::flow_keys(&Snapshot {
        profiles,
        ..Snapshot::default()
    })?;
    let new = plan(&base.policy_ids, &base.rule_ids, &keys)?;
    for (profile, id) in &new.policies {
        tx.insert_policy_id(profile, *id)?;
    }
    for (profile, flow, id) in &new.rules {
        tx.insert_rule_id(profile, flow, *id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        k.iter()
            .map(|(p, f)| (p.to_string(), f.iter().map(|f| f.to_string()).collect()))
            .collect()
    }

    #[test]
    fn new_names_number_on_and_held_ids_stay() {
        let policies = BTreeMap::from([("pump".to_string(), 3)]);
        let rules = BTreeMap::from([(("pump".to_string(), "dns".to_string()), 9)]);
        let new = plan(
            &policies,
            &rules,
            &keys(&[("pump", &["dns", "ntp", "ntp"]), ("ct", &["dicom"])]),
        )
        .unwrap();
        assert_eq!(new.policies, [("ct".to_string(), 4)]);
        assert_eq!(
            new.rules,
            [
                ("pump".to_string(), "ntp".to_string(), 10),
                ("ct".to_string(), "dicom".to_string(), 11)
            ]
        );
    }

    #[test]
    fn ids_past_31_bits_are_refused() {
        let policies = BTreeMap::from([("pump".to_string(), MAX_ID)]);
        let err = plan(&policies, &BTreeMap::new(), &keys(&[("ct", &[])])).unwrap_err();
        assert!(err.to_string().contains("policy ids exhausted"), "{err}");
        assert!(next(MAX_ID - 1, "device").is_ok());
        assert!(next(u32::MAX, "device").is_err());
    }
}
