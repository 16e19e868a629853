//! What a candidate profile would have blocked: recorded flows replayed through the same
//! validation, compilation, lowering and lookup the datapath's maps come from
//! (`policy::validate_input`, `policy::compile_valid`, then `policy::lower::lookup`). The
//! simulated devices go in typed; only the site's groups are read from it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr},
};

use serde::Serialize;
use wardgate_policy::{
    Mode, Profile, ProfileSet, Site, SiteInput, desired::MacAddr, site::Gateway, span::Located,
    valid::DeviceInput,
};

use crate::flow::{FlowDirection, FlowRecord};

const GATEWAY: &str = "simulation";

/// Flows of one kind the candidate would have dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Blocked {
    pub device: String,
    pub direction: FlowDirection,
    pub peer: IpAddr,
    pub proto: u8,
    pub port: u16,
    pub flows: u64,
    pub bytes: u64,
    pub last_seen_ns: u64,
    /// The port is allowed but the application rule would refuse the flows: what they named
    /// (`dicom CT9 -> PACS`, `hl7 LAB|HOSP|EHR|ORU^R01`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("the candidate profile does not validate:\n{0}")]
    Invalid(wardgate_policy::Diagnostics),
    #[error("the candidate profile does not compile: {0}")]
    Compile(#[from] wardgate_policy::CompileError),
}

/// Replays `records` (every device in them is put under `profile`, enforced) and lists what
/// would have been blocked, most flows first. `site` gives the groups the profile names.
pub fn simulate(
    profile: &Profile,
    site: Option<&Site>,
    records: &[FlowRecord],
) -> Result<Vec<Blocked>, SimulateError> {
    simulate_weighted(
        profile,
        site,
        &records.iter().map(|r| (r, 1)).collect::<Vec<_>>(),
    )
}

/// As [`simulate`], over records that each stand for a number of flows (the controller's
/// aggregates, see [`crate::aggregate::FlowAggregate::records`]).
pub fn simulate_weighted(
    profile: &Profile,
    site: Option<&Site>,
    records: &[(&FlowRecord, u64)],
) -> Result<Vec<Blocked>, SimulateError> {
    let names: BTreeSet<&str> = records
        .iter()
        .map(|(r, _)| r.device.name.as_str())
        .collect();
    // The devices' own addresses and MACs do not take part in the lookup: synthetic unique
    // ones keep two discovered devices sharing an address from failing validation.
    let devices = names
        .iter()
        .enumerate()
        .map(|(i, name)| DeviceInput {
            id: i as u32 + 1,
            name: Located::new(name.to_string()),
            mac: Located::new(Ok(MacAddr([
                0x02,
                0,
                0,
                (i >> 16) as u8,
                (i >> 8) as u8,
                i as u8,
            ]))),
            addresses: vec![Located::new(Ok(IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0,
                0,
                0,
                0,
                0,
                ((i + 1) >> 16) as u16,
                (i + 1) as u16,
            ))))],
            profile: profile.name.clone(),
            mode: Some(Mode::Enforce),
            gateway: Located::new(GATEWAY.to_string()),
            location: String::new(),
            asset_id: String::new(),
        })
        .collect();
    // A `dns:` peer needs resolvers to validate; which ones does not change a replay (the
    // records carry the names), so a site without a `dns` group gets a stand-in (a group may
    // not be empty; the address is a documentation one no record comes from).
    let mut groups = site.map_or_else(BTreeMap::new, |s| s.groups.clone());
    groups
        .entry("dns".to_string())
        .or_insert_with(|| vec![Located::new("192.0.2.53/32".to_string())]);
    let gateways = [Gateway {
        name: Located::new(GATEWAY.to_string()),
        interfaces: vec!["sim0".to_string()],
        location: String::new(),
    }];
    let sim = SiteInput {
        name: GATEWAY,
        groups: &groups,
        gateways: &gateways,
        devices,
    };
    let mut set = ProfileSet::default();
    let mut diags = wardgate_policy::Diagnostics::default();
    set.insert("<candidate>", profile.clone(), &mut diags);
    let valid = wardgate_policy::validate_input("<site>", &sim, &set);
    let valid = match valid {
        Ok(v) if diags.is_empty() => v,
        Ok(_) => return Err(SimulateError::Invalid(diags)),
        Err(d) => {
            diags.extend(d);
            return Err(SimulateError::Invalid(diags));
        }
    };
    let ids = wardgate_policy::StableIds::positional_of(&valid)?;
    let state = wardgate_policy::compile_valid(&valid, &ids, GATEWAY, 1)?.state;
    let policy: BTreeMap<&str, u32> = state
        .devices
        .iter()
        .map(|d| (d.name.as_str(), d.policy_id))
        .collect();
    let mut blocked: BTreeMap<(String, FlowDirection, IpAddr, u8, u16), Blocked> = BTreeMap::new();
    for &(r, n) in records {
        let Some(&pid) = policy.get(r.device.name.as_str()) else {
            continue;
        };
        // By address, else (as the datapath) by the name the device resolved the peer from.
        let allowed = wardgate_policy::lower::lookup(
            &state,
            pid,
            r.direction.to_policy(),
            r.peer,
            r.proto,
            r.port,
        )
        .or_else(|| {
            wardgate_policy::dns::lookup_name(
                &state,
                pid,
                r.direction.to_policy(),
                r.peer_name.as_deref()?,
                r.proto,
                r.port,
            )
        });
        // The rule's application check, on the identity the record carries (a record without
        // one, not inspected, is taken as passing: nothing says otherwise).
        let refused = allowed
            .and_then(|rule_id| state.rule(rule_id))
            .and_then(|(_, rule)| rule.app.as_ref())
            .and_then(|app| app_refused(app, r.app.as_ref()?));
        if allowed.is_some() && refused.is_none() {
            continue;
        }
        let key = (r.device.name.clone(), r.direction, r.peer, r.proto, r.port);
        let b = blocked.entry(key).or_insert_with(|| Blocked {
            device: r.device.name.clone(),
            direction: r.direction,
            peer: r.peer,
            proto: r.proto,
            port: r.port,
            flows: 0,
            bytes: 0,
            last_seen_ns: 0,
            app: None,
        });
        if b.app.is_none() {
            b.app = refused;
        }
        b.flows += n;
        b.bytes += r.bytes();
        b.last_seen_ns = b.last_seen_ns.max(r.last_seen_ns);
    }
    let mut out: Vec<Blocked> = blocked.into_values().collect();
    out.sort_by(|a, b| b.flows.cmp(&a.flows).then(a.device.cmp(&b.device)));
    Ok(out)
}

/// What a first message named, when `app` would refuse it (the datapath's decision).
fn app_refused(
    app: &wardgate_policy::desired::AppRule,
    id: &crate::app::AppIdentity,
) -> Option<String> {
    match id {
        crate::app::AppIdentity::Dicom(a) => (!app.allows_dicom(&a.calling_ae, &a.called_ae))
            .then(|| format!("dicom {} -> {}", a.calling_ae, a.called_ae)),
        crate::app::AppIdentity::Hl7(h) => (!app.allows_hl7(
            &h.sending_application,
            &h.sending_facility,
            &h.receiving_application,
            &h.message_type,
        ))
        .then(|| {
            format!(
                "hl7 {}|{}|{}|{}",
                h.sending_application, h.sending_facility, h.receiving_application, h.message_type
            )
        }),
    }
}
