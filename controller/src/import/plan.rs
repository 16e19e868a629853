//! What an import would do, against the store: new devices, changed fields (old -> new),
//! devices the file does not name (unmatched: left as they are), and entries refused (with
//! why). Pure: the store's rows in, the plan out; [`changes`] turns a plan into the write.
//!
//! An entry matches the stored device with its MAC, else the one with its name (then its MAC
//! changes). A field the file leaves empty keeps its stored value. A new device lands in
//! `learn` mode, on the gateway named for the import, else the gateway whose location is the
//! entry's ward, else the site's only gateway; with the profile named for the import, else the
//! profile named like its type (`Infusion pump` -> `infusion-pump`); without both it is
//! refused, as is one with no address (the datapath matches a device by MAC and address).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use wardgate_policy::desired::Mode;

use super::{Entry, Parsed, Refused};
use crate::store::{Change, DeviceRow, GatewayRow, ImportSource, ImportedFields};

/// Where new devices go when the file does not say.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Gateway for new devices ('' = by ward, or the only one).
    pub gateway: String,
    /// Profile for new devices ('' = named like the device's type).
    pub profile: String,
}

/// A field's stored and imported values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: String,
    pub new: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub device: String,
    pub at: String,
    pub fields: Vec<FieldChange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct New {
    pub row: DeviceRow,
    pub entry: Entry,
}

/// The diff shown before anything is written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub new: Vec<New>,
    pub changed: Vec<Changed>,
    /// Entries that match a device and change nothing.
    pub unchanged: usize,
    /// Stored devices the file does not name (not removed).
    pub unmatched: Vec<String>,
    pub refused: Vec<Refused>,
}

impl Plan {
    /// A digest of the plan: a confirmation applies the plan it saw, or nothing.
    pub fn digest(&self) -> String {
        super::sha256(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }

    pub fn is_empty(&self) -> bool {
        self.new.is_empty() && self.changed.is_empty()
    }
}

/// The imported (non-row) fields each device has stored: device -> field -> value.
pub type StoredFields = BTreeMap<String, BTreeMap<String, String>>;

/// The fields kept beside the device row (their values and provenance in `device_fields`).
pub const EXTRA_FIELDS: [&str; 3] = ["type", "manufacturer", "model"];

/// `s` as a profile name: lowercase words joined by `-`.
pub fn slug(s: &str) -> String {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

fn extra(e: &Entry, field: &str) -> String {
    match field {
        "type" => e.device_type.clone(),
        "manufacturer" => e.manufacturer.clone(),
        _ => e.model.clone(),
    }
}

/// Compares `parsed` with the stored devices, their imported fields, gateways and profiles.
pub fn plan(
    parsed: Parsed,
    devices: &[DeviceRow],
    stored: &StoredFields,
    gateways: &[GatewayRow],
    profiles: &BTreeSet<String>,
    opts: &Options,
) -> Plan {
    let by_mac: BTreeMap<_, _> = devices.iter().map(|d| (d.mac, d)).collect();
    let by_name: BTreeMap<_, _> = devices.iter().map(|d| (d.name.as_str(), d)).collect();
    let used_addresses: BTreeMap<_, _> = devices
        .iter()
        .flat_map(|d| d.addresses.iter().map(move |a| (*a, d.name.as_str())))
        .collect();
    let mut out = Plan {
        refused: parsed.refused,
        ..Plan::default()
    };
    let mut seen_mac = BTreeMap::new();
    let mut seen_name = BTreeMap::new();
    let mut matched = BTreeSet::new();
    for e in parsed.entries {
        let refuse = |why: String| Refused {
            at: e.at.clone(),
            why,
        };
        if let Some(first) = seen_mac.insert(e.mac, e.at.clone()) {
            out.refused
                .push(refuse(format!("mac: {} is also at {first}", e.mac)));
            continue;
        }
        if let Some(first) = seen_name.insert(e.name.clone(), e.at.clone()) {
            out.refused
                .push(refuse(format!("name: `{}` is also at {first}", e.name)));
            continue;
        }
        let existing = by_mac
            .get(&e.mac)
            .or_else(|| by_name.get(e.name.as_str()))
            .copied();
        match existing {
            Some(d) => {
                if !matched.insert(d.name.clone()) {
                    out.refused.push(refuse(format!(
                        "matches `{}`, which another entry already matched",
                        d.name
                    )));
                    continue;
                }
                let mut fields = Vec::new();
                let mut diff = |field: &str, old: &str, new: &str| {
                    if !new.is_empty() && old != new {
                        fields.push(FieldChange {
                            field: field.into(),
                            old: old.into(),
                            new: new.into(),
                        });
                    }
                };
                diff("mac", &d.mac.to_string(), &e.mac.to_string());
                diff("location", &d.location, &e.location);
                diff("asset_id", &d.asset_id, &e.asset_id);
                let none = BTreeMap::new();
                let kept = stored.get(&d.name).unwrap_or(&none);
                for f in EXTRA_FIELDS {
                    diff(f, kept.get(f).map_or("", String::as_str), &extra(&e, f));
                }
                if fields.is_empty() {
                    out.unchanged += 1;
                } else {
                    out.changed.push(Changed {
                        device: d.name.clone(),
                        at: e.at.clone(),
                        fields,
                    });
                }
            }
            None => match new_row(&e, gateways, profiles, opts, &used_addresses) {
                Ok(row) => out.new.push(New { row, entry: e }),
                Err(why) => out.refused.push(refuse(why)),
            },
        }
    }
    // In file order: the parser's refusals and the plan's, by entry or line number.
    out.refused
        .sort_by_key(|r| r.at.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()));
    out.unmatched = devices
        .iter()
        .filter(|d| !matched.contains(&d.name))
        .map(|d| d.name.clone())
        .collect();
    out
}

fn new_row(
    e: &Entry,
    gateways: &[GatewayRow],
    profiles: &BTreeSet<String>,
    opts: &Options,
    used: &BTreeMap<std::net::IpAddr, &str>,
) -> Result<DeviceRow, String> {
    let Some(address) = e.address else {
        return Err("address: a new device needs one (CSV address column, FHIR Device.url)".into());
    };
    if let Some(other) = used.get(&address) {
        return Err(format!("address: {address} is already `{other}`'s"));
    }
    let gateway = if !opts.gateway.is_empty() {
        if !gateways.iter().any(|g| g.name == opts.gateway) {
            return Err(format!("gateway: no gateway `{}`", opts.gateway));
        }
        opts.gateway.clone()
    } else if let Some(g) = gateways
        .iter()
        .find(|g| !e.location.is_empty() && g.location.eq_ignore_ascii_case(&e.location))
    {
        g.name.clone()
    } else if let [only] = gateways {
        only.name.clone()
    } else {
        return Err(format!(
            "gateway: none at location `{}`; name one for the import",
            e.location
        ));
    };
    let profile = if !opts.profile.is_empty() {
        opts.profile.clone()
    } else {
        slug(&e.device_type)
    };
    if !profiles.contains(&profile) {
        return Err(if opts.profile.is_empty() {
            format!(
                "profile: no profile named `{profile}` for type `{}`; name one for the import",
                e.device_type
            )
        } else {
            format!("profile: no profile `{profile}`")
        });
    }
    Ok(DeviceRow {
        name: e.name.clone(),
        id: 0, // the write service allocates it
        mac: e.mac,
        addresses: vec![address],
        profile,
        mode: Mode::Learn,
        gateway,
        location: e.location.clone(),
        asset_id: e.asset_id.clone(),
    })
}

/// The write of `plan`: one device upsert per new or changed device, then one record of the
/// import (file, hash, every field it set, for provenance), all in one audited write.
pub fn changes(plan: &Plan, devices: &[DeviceRow], source: ImportSource) -> Vec<Change> {
    let by_name: BTreeMap<_, _> = devices.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut out = Vec::new();
    let mut fields = Vec::new();
    for n in &plan.new {
        out.push(Change::UpsertDevice(n.row.clone()));
        let e = &n.entry;
        let mut set = vec![
            ("name".to_string(), n.row.name.clone()),
            ("mac".to_string(), e.mac.to_string()),
            (
                "address".to_string(),
                e.address.map(|a| a.to_string()).unwrap_or_default(),
            ),
        ];
        for (f, v) in [
            ("location", &e.location),
            ("asset_id", &e.asset_id),
            ("type", &e.device_type),
            ("manufacturer", &e.manufacturer),
            ("model", &e.model),
        ] {
            set.push((f.to_string(), v.clone()));
        }
        set.retain(|(_, v)| !v.is_empty());
        fields.push(ImportedFields {
            device: n.row.name.clone(),
            fields: set,
        });
    }
    for c in &plan.changed {
        let Some(d) = by_name.get(c.device.as_str()) else {
            continue;
        };
        let mut row = (*d).clone();
        let mut row_changed = false;
        for f in &c.fields {
            match f.field.as_str() {
                "mac" => {
                    if let Ok(m) = f.new.parse() {
                        row.mac = m;
                        row_changed = true;
                    }
                }
                "location" => {
                    row.location = f.new.clone();
                    row_changed = true;
                }
                "asset_id" => {
                    row.asset_id = f.new.clone();
                    row_changed = true;
                }
                _ => {}
            }
        }
        if row_changed {
            out.push(Change::UpsertDevice(row));
        }
        fields.push(ImportedFields {
            device: c.device.clone(),
            fields: c
                .fields
                .iter()
                .map(|f| (f.field.clone(), f.new.clone()))
                .collect(),
        });
    }
    out.push(Change::RecordImport { source, fields });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::{cmms, parse_mac};

    fn device(name: &str, mac: &str, addr: &str, location: &str) -> DeviceRow {
        DeviceRow {
            name: name.into(),
            id: 1,
            mac: parse_mac(mac).unwrap(),
            addresses: vec![addr.parse().unwrap()],
            profile: "infusion-pump".into(),
            mode: Mode::Enforce,
            gateway: "gw-icu".into(),
            location: location.into(),
            asset_id: String::new(),
        }
    }

    fn gateway(name: &str, location: &str) -> GatewayRow {
        GatewayRow {
            name: name.into(),
            interfaces: vec![],
            location: location.into(),
            applied_generation: 0,
            last_error: String::new(),
            applied_epoch: String::new(),
        }
    }

    #[test]
    fn new_changed_unmatched_refused() {
        let csv = "name,mac,type,manufacturer,ward,address\n\
            pump-1,00:1a:2b:3c:4d:01,Infusion pump,B. Braun,ICU 3,\n\
            pump-2,00:1a:2b:3c:4d:02,Infusion pump,B. Braun,ICU 2,\n\
            pump-3,00:1a:2b:3c:4d:03,Infusion pump,B. Braun,ICU 3,192.0.2.33\n\
            scope-4,00:1a:2b:3c:4d:04,Endoscope,Olympus,ICU 3,192.0.2.34\n\
            pump-5,00:1a:2b:3c:4d:05,Infusion pump,,ICU 9,192.0.2.11\n\
            pump-6,00:1a:2b:3c:4d:03,Infusion pump,,ICU 3,192.0.2.36\n";
        let parsed = cmms::parse(csv.as_bytes(), &cmms::Mapping::default()).unwrap();
        let devices = vec![
            device("pump-1", "00:1a:2b:3c:4d:01", "192.0.2.10", "ICU 3"),
            device(
                "pump-2-old-name",
                "00:1a:2b:3c:4d:02",
                "192.0.2.12",
                "ICU 3",
            ),
            device("pump-9", "00:1a:2b:3c:4d:09", "192.0.2.11", "ICU 3"),
        ];
        let stored = StoredFields::from([(
            "pump-1".to_string(),
            BTreeMap::from([
                ("type".to_string(), "Infusion pump".to_string()),
                ("manufacturer".to_string(), "B. Braun".to_string()),
            ]),
        )]);
        let gateways = [gateway("gw-icu", "ICU 3"), gateway("gw-other", "ICU 1")];
        let profiles = BTreeSet::from(["infusion-pump".to_string()]);
        let p = plan(
            parsed,
            &devices,
            &stored,
            &gateways,
            &profiles,
            &Options::default(),
        );
        // pump-1: same as stored; pump-2 (matched by MAC): its ward and imported fields.
        assert_eq!(p.unchanged, 1);
        assert_eq!(p.changed.len(), 1);
        assert_eq!(p.changed[0].device, "pump-2-old-name");
        assert_eq!(
            p.changed[0].fields[0],
            FieldChange {
                field: "location".into(),
                old: "ICU 3".into(),
                new: "ICU 2".into()
            }
        );
        assert_eq!(
            p.changed[0]
                .fields
                .iter()
                .map(|f| f.field.as_str())
                .collect::<Vec<_>>(),
            ["location", "type", "manufacturer"]
        );
        // pump-3 new, on the ICU 3 gateway, profile by type, learning.
        assert_eq!(p.new.len(), 1);
        let row = &p.new[0].row;
        assert_eq!(
            (
                row.name.as_str(),
                row.gateway.as_str(),
                row.profile.as_str(),
                row.mode
            ),
            ("pump-3", "gw-icu", "infusion-pump", Mode::Learn)
        );
        assert_eq!(p.unmatched, ["pump-9"]);
        let why: Vec<_> = p
            .refused
            .iter()
            .map(|r| (r.at.as_str(), r.why.as_str()))
            .collect();
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(
            why[0]
                .1
                .starts_with("profile: no profile named `endoscope`"),
            "{why:?}"
        );
        assert!(
            why[1].1.contains("192.0.2.11 is already `pump-9`"),
            "{why:?}"
        );
        assert_eq!(
            why[2],
            ("line 7", "mac: 00:1a:2b:3c:4d:03 is also at line 4")
        );

        let source = ImportSource {
            format: "csv".into(),
            file: "icu.csv".into(),
            sha256: "ab".into(),
        };
        let ch = changes(&p, &devices, source);
        assert_eq!(ch.len(), 3); // pump-3 new, pump-2 row (location), the record
        match &ch[1] {
            Change::UpsertDevice(d) => {
                assert_eq!(
                    (d.name.as_str(), d.location.as_str()),
                    ("pump-2-old-name", "ICU 2")
                );
                assert_eq!(d.mode, Mode::Enforce, "an import does not change a mode");
            }
            c => panic!("{c:?}"),
        }
        let Change::RecordImport { fields, .. } = &ch[2] else {
            panic!("{:?}", ch[2]);
        };
        assert_eq!(fields.len(), 2);
        assert!(
            fields[0]
                .fields
                .contains(&("manufacturer".into(), "B. Braun".into()))
        );
        // A named gateway that does not exist refuses the new devices.
        let parsed = cmms::parse(csv.as_bytes(), &cmms::Mapping::default()).unwrap();
        let opts = Options {
            gateway: "gw-none".into(),
            profile: String::new(),
        };
        let p2 = plan(parsed, &devices, &stored, &gateways, &profiles, &opts);
        assert!(p2.new.is_empty());
        assert_ne!(p.digest(), p2.digest());
    }
}
