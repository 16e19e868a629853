//! What a group of writes will read, read ahead in their transaction
//! (`StoreTx::read_ahead`): each write of a group of assignments read its device, its
//! gateway's devices and row and that gateway's latest generation, one round trip each, while
//! holding the write lock; read ahead, a group pays three round trips for all of them.
//!
//! Served only while it is what reading would return: the transaction holds the write lock
//! (no other writer changes these rows), a device a write updates is patched in, generations
//! the transaction inserts are read before these (`PgTx::latest`), and any other change drops
//! it all.

use std::collections::{BTreeSet, HashMap};

use super::{Db, site};
use crate::{
    error::Result,
    store::{DeviceRow, GatewayRow, GenerationRow},
};

pub(super) struct Ahead {
    /// Every device on the gateways read ahead, and the names asked for that are not stored
    /// (None).
    devices: HashMap<String, Option<DeviceRow>>,
    /// The devices of each gateway read ahead, by name.
    on_gateway: HashMap<String, BTreeSet<String>>,
    /// Those gateways' rows (None: not stored).
    gateways: HashMap<String, Option<GatewayRow>>,
    /// Those gateways' latest generations as stored (None: none yet).
    latest: HashMap<String, Option<GenerationRow>>,
}

impl Ahead {
    /// Reads what writes to `names` will read.
    pub(super) fn read(c: &Db, names: &[&str]) -> Result<Ahead> {
        let rows = site::devices_where(
            c,
            "WHERE gateway IN (SELECT gateway FROM devices WHERE name = ANY($1))",
            &[&names],
        )?;
        let mut ahead = Ahead {
            devices: names.iter().map(|n| (n.to_string(), None)).collect(),
            on_gateway: HashMap::new(),
            gateways: HashMap::new(),
            latest: HashMap::new(),
        };
        for d in rows {
            ahead
                .on_gateway
                .entry(d.gateway.clone())
                .or_default()
                .insert(d.name.clone());
            ahead.devices.insert(d.name.clone(), Some(d));
        }
        let gateways: Vec<&str> = ahead.on_gateway.keys().map(String::as_str).collect();
        for g in &gateways {
            ahead.gateways.insert(g.to_string(), None);
            ahead.latest.insert(g.to_string(), None);
        }
        for g in site::gateways_where(c, "WHERE name = ANY($1)", &[&gateways])? {
            ahead.gateways.insert(g.name.clone(), Some(g));
        }
        // The newest of each: by the primary key, one index probe per gateway.
        for g in site::generations_where(
            c,
            "WHERE (gateway, generation) IN (SELECT w, (SELECT MAX(generation) FROM \
             generations WHERE gateway = w) FROM UNNEST($1::TEXT[]) AS w)",
            &[&gateways],
        )? {
            ahead.latest.insert(g.gateway.clone(), Some(g));
        }
        Ok(ahead)
    }

    /// Device `name`, if it was read ahead (Some(None): it is not stored).
    pub(super) fn device(&self, name: &str) -> Option<Option<DeviceRow>> {
        self.devices.get(name).cloned()
    }

    /// The devices of `gateways`, by id, if every one was read ahead.
    pub(super) fn devices_on(&self, gateways: &BTreeSet<String>) -> Option<Vec<DeviceRow>> {
        let mut out = Vec::new();
        for g in gateways {
            for name in self.on_gateway_or_none(g)? {
                out.extend(self.devices.get(name).cloned().flatten());
            }
        }
        out.sort_by_key(|d| d.id);
        Some(out)
    }

    /// The names on gateway `g`; a gateway read ahead that has no device has none.
    fn on_gateway_or_none(&self, g: &str) -> Option<impl Iterator<Item = &String>> {
        self.gateways.contains_key(g).then(|| {
            self.on_gateway
                .get(g)
                .into_iter()
                .flat_map(|names| names.iter())
        })
    }

    /// The stored rows of `names`, by name, if every one was read ahead.
    pub(super) fn gateways(&self, names: &BTreeSet<String>) -> Option<Vec<GatewayRow>> {
        names
            .iter()
            .map(|n| self.gateways.get(n).cloned())
            .collect::<Option<Vec<_>>>()
            .map(|rows| rows.into_iter().flatten().collect())
    }

    /// The latest stored generation of `gateway`, if it was read ahead.
    pub(super) fn latest(&self, gateway: &str) -> Option<Option<GenerationRow>> {
        self.latest.get(gateway).cloned()
    }

    /// A device row as a write in the transaction left it.
    pub(super) fn wrote(&mut self, row: &DeviceRow) {
        if let Some(Some(old)) = self.devices.get(&row.name)
            && old.gateway != row.gateway
            && let Some(names) = self.on_gateway.get_mut(&old.gateway)
        {
            names.remove(&row.name);
        }
        if self.gateways.contains_key(&row.gateway) {
            self.on_gateway
                .entry(row.gateway.clone())
                .or_default()
                .insert(row.name.clone());
        }
        self.devices.insert(row.name.clone(), Some(row.clone()));
    }
}
