//! What a write changed in enforcement, for its audit entry: per gateway, the new generation,
//! the hash of its stored content (so the policy a gateway enforces is inside the chain) and
//! the devices and rules added and removed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wardgate_policy::DesiredState;

use crate::store::GenerationContent;

/// Which stored form of a generation an entry's `content_sha256` is over (see
/// `crate::generation`). Inside the chain, so a generation's row cannot be swapped to the other
/// form unseen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentFormat {
    /// Entries written before migration 9 name no format: the pretty JSON.
    #[default]
    #[serde(rename = "json")]
    LegacyJson,
    #[serde(rename = "bundle-v1")]
    Bundle,
}

impl ContentFormat {
    pub fn of(content: &GenerationContent) -> Self {
        match content {
            GenerationContent::LegacyJson(_) => ContentFormat::LegacyJson,
            GenerationContent::Bundle(_) => ContentFormat::Bundle,
        }
    }

    fn is_legacy(&self) -> bool {
        *self == ContentFormat::LegacyJson
    }
}

/// One gateway's part of an audit entry's enforcement diff.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayChange {
    pub generation: u32,
    pub content_sha256: String,
    #[serde(default, skip_serializing_if = "ContentFormat::is_legacy")]
    pub content_format: ContentFormat,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices_added: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices_removed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices_changed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules_added: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules_removed: Vec<String>,
    /// What changed for each device, in words, rules compared by what they allow (a renamed
    /// profile's rules are not removed and re-added): `pump on gw: profile a -> b` then
    /// `  + tcp/8443 to infusion-server` lines (`crate::preview`). `audit list` prints it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_words: Vec<String>,
}

/// The `enforcement` member of an audit entry's diff, by gateway.
pub type Enforcement = BTreeMap<String, GatewayChange>;

/// The change from `prev` (none: the gateway's first generation) to `next`, stored as
/// `stored` (whose hash is `content_sha256`).
pub fn gateway_change(
    prev: Option<&DesiredState>,
    next: &DesiredState,
    stored: &GenerationContent,
    content_sha256: String,
) -> GatewayChange {
    let empty = DesiredState {
        gateway: next.gateway.clone(),
        generation: 0,
        epoch: String::new(),
        content_hash: String::new(),
        devices: Vec::new(),
        policies: Vec::new(),
        peers: Vec::new(),
        ports: Vec::new(),
        groups: Default::default(),
        dns: Default::default(),
    };
    let d = wardgate_policy::diff(prev.unwrap_or(&empty), next);
    let groups: Vec<(String, Vec<ipnet::IpNet>)> = next
        .groups
        .iter()
        .map(|(g, nets)| (g.clone(), nets.clone()))
        .collect();
    let in_words = crate::preview::device_changes(prev, next, &groups)
        .into_iter()
        .map(|mut c| {
            // The availability warning is for the person about to write; the trail keeps what
            // was done.
            c.warning.clear();
            crate::preview::render(&c)
        })
        .collect();
    GatewayChange {
        generation: next.generation,
        content_sha256,
        content_format: ContentFormat::of(stored),
        devices_added: d.devices_added,
        devices_removed: d.devices_removed,
        devices_changed: d.devices_changed,
        rules_added: d.rules_added,
        rules_removed: d.rules_removed,
        in_words,
    }
}

/// The enforcement recorded in an audit entry's diff (JSON with an `enforcement` member);
/// entries without one (older entries, writes that changed no generation) give an empty map.
pub fn of_diff(diff: &str) -> Result<Enforcement, String> {
    let v: serde_json::Value = match serde_json::from_str(diff) {
        Ok(v) => v,
        Err(_) => return Ok(Enforcement::new()), // entries before the diff was JSON throughout
    };
    match v.get("enforcement") {
        None => Ok(Enforcement::new()),
        Some(e) => serde_json::from_value(e.clone()).map_err(|e| format!("enforcement: {e}")),
    }
}
