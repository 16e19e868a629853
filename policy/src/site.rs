//! The site file: named address groups, gateways with their device-facing interfaces, and
//! devices (MAC, addresses, profile, mode, location, asset id, gateway).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    desired::Mode,
    diag::{Diagnostics, from_yaml_error},
    span::Located,
};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Name of the site (hospital, campus).
    pub site: String,
    /// Named groups of CIDRs (IPv4 and IPv6): `pacs`, `dns`, `ntp`, `his`, ...
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<Located<String>>>,
    #[serde(default)]
    pub gateways: Vec<Gateway>,
    #[serde(default)]
    pub devices: Vec<Device>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub name: Located<String>,
    /// Device-facing interfaces the datapath attaches to.
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub location: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Stable numeric id reported in events; default: position in the file (1-based).
    #[serde(default)]
    pub id: Option<u32>,
    pub name: Located<String>,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: Located<String>,
    pub addresses: Vec<Located<String>>,
    pub profile: Located<String>,
    /// Default: the profile's `default_mode`.
    #[serde(default)]
    pub mode: Option<Mode>,
    pub gateway: Located<String>,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub asset_id: String,
}

pub const SITE_KEYS: &[&str] = &[
    "site",
    "groups",
    "gateways",
    "devices",
    "name",
    "interfaces",
    "location",
    "id",
    "mac",
    "addresses",
    "profile",
    "mode",
    "gateway",
    "asset_id",
];

pub fn parse_site(file: &str, text: &str) -> Result<Site, Diagnostics> {
    serde_saphyr::from_str::<Site>(text)
        .map_err(|e| Diagnostics(vec![from_yaml_error(file, &e, SITE_KEYS)]))
}

impl Site {
    /// The device's numeric id (explicit, or its 1-based position).
    pub fn device_id(&self, index: usize) -> u32 {
        self.devices[index].id.unwrap_or(index as u32 + 1)
    }
}
