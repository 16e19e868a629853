//! Map fill levels and devices at their flow cap, sampled in the background.
//!
//! The kernel keeps no element count for hash maps and LPM tries, so counting means walking
//! the keys: one syscall per entry, up to 262,144 for conntrack (measured with a full
//! conntrack map on a busy 2-core VM: 0.78 s for the whole sample, the attach tier's
//! `a_full_conntrack_map_is_counted...` test prints it). A scrape must not pay that, so a
//! blocking task walks every map once per `map_fill_every_s` (default 60 s: about 1.3% of
//! one core at worst) and scrapes serve the last sample. The
//! walk is bounded by each map's capacity: an LRU map changing underneath can restart the key
//! walk, so a count stops at capacity rather than loop.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, Map, MapData, MapError, lpm_trie::LpmTrie};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, gauge::ConstGauge},
};
use wardgate_common::{
    CtKey, CtValue, DeviceInfo, DeviceKey, FlowCapState, FragKey, FragValue, HostPortKey, MacKey,
    MgmtKey, PeerKey, PeerValue, PortKey, RateKey, RateState, RuleValue, map_names,
};

use crate::datapath::{DatapathError, map_err, pinned};

/// Counts the keys of a pinned map, at most its capacity.
type Count = fn(MapData, usize) -> Result<usize, MapError>;

/// The maps counted: label, pin name and how to walk it. Policy maps hold both slots (the
/// active policy and the one before or next), as their capacity does.
const MAPS: [(&str, &str, Count); 11] = [
    (
        "devices",
        map_names::DEVICES,
        count_hash::<{ size_of::<DeviceKey>() }, { size_of::<DeviceInfo>() }>,
    ),
    (
        "macs",
        map_names::MACS,
        count_hash::<{ size_of::<MacKey>() }, { size_of::<DeviceInfo>() }>,
    ),
    (
        "peers",
        map_names::PEERS,
        count_lpm::<{ size_of::<PeerKey>() }, { size_of::<PeerValue>() }>,
    ),
    (
        "peer_hosts",
        map_names::PEERS_HOST,
        count_hash::<{ size_of::<PeerKey>() }, { size_of::<PeerValue>() }>,
    ),
    (
        "ports",
        map_names::PORTS,
        count_lpm::<{ size_of::<PortKey>() }, { size_of::<RuleValue>() }>,
    ),
    (
        "ports_exact",
        map_names::PORTS_EXACT,
        count_hash::<{ size_of::<PortKey>() }, { size_of::<RuleValue>() }>,
    ),
    (
        "host_ports",
        map_names::HOST_PORTS,
        count_hash::<{ size_of::<HostPortKey>() }, { size_of::<RuleValue>() }>,
    ),
    (
        "management",
        map_names::MGMT,
        count_lpm::<{ size_of::<MgmtKey>() }, { size_of::<u32>() }>,
    ),
    (
        "conntrack",
        map_names::CONNTRACK,
        count_hash::<{ size_of::<CtKey>() }, { size_of::<CtValue>() }>,
    ),
    (
        "fragments",
        map_names::FRAGMENTS,
        count_hash::<{ size_of::<FragKey>() }, { size_of::<FragValue>() }>,
    ),
    (
        "event_budgets",
        map_names::RATE,
        count_hash::<{ size_of::<RateKey>() }, { size_of::<RateState>() }>,
    ),
];

// Keys and values are walked as bytes of the right size (the kernel checks the sizes); what
// they hold does not matter for a count.
fn count_hash<const K: usize, const V: usize>(
    data: MapData,
    cap: usize,
) -> Result<usize, MapError> {
    let map: HashMap<MapData, [u8; K], [u8; V]> = HashMap::try_from(Map::from_map_data(data)?)?;
    Ok(map.keys().take(cap).filter(Result::is_ok).count())
}

fn count_lpm<const K: usize, const V: usize>(data: MapData, cap: usize) -> Result<usize, MapError> {
    let map: LpmTrie<MapData, [u8; K], [u8; V]> = LpmTrie::try_from(Map::from_map_data(data)?)?;
    Ok(map.keys().take(cap).filter(Result::is_ok).count())
}

/// One map's fill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// One sample of every map.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub maps: Vec<MapFill>,
    /// Devices whose flow budget is spent (the cap was reported and the budget has not come
    /// back above half).
    pub devices_at_flow_cap: u64,
    /// Flows that passed untracked (devices over their cap), and flow-open records a device's
    /// share of the ring refused, summed over the devices' budget slots.
    pub flows_untracked: u64,
    pub flow_records_refused: u64,
    /// How long the walk took.
    pub took: Duration,
}

/// The last sample, shared by the sampler and the scrapes.
#[derive(Debug, Default)]
pub struct Fill(Mutex<Option<Sample>>);

impl Fill {
    pub fn last(&self) -> Option<Sample> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, s: Sample) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s);
    }
}

/// Walks every map once.
pub fn sample(pin_root: &Path) -> Result<Sample, DatapathError> {
    let start = Instant::now();
    let mut maps = Vec::with_capacity(MAPS.len());
    for (label, name, count) in MAPS {
        let data = pinned::open(pin_root, name)?;
        let capacity = data.info().map_err(map_err(name))?.max_entries() as usize;
        let entries = count(data, capacity).map_err(map_err(name))?;
        maps.push(MapFill {
            map: label,
            entries: entries as u64,
            capacity: capacity as u64,
        });
    }
    let caps: Array<MapData, FlowCapState> =
        Array::try_from(Map::Array(pinned::open(pin_root, map_names::FLOW_CAP)?))
            .map_err(map_err(map_names::FLOW_CAP))?;
    let slots: Vec<FlowCapState> = caps
        .iter()
        .filter_map(Result::ok)
        .filter(|s| s.device_id != 0)
        .collect();
    let devices_at_flow_cap = slots.iter().filter(|s| s.reported != 0).count() as u64;
    Ok(Sample {
        maps,
        devices_at_flow_cap,
        flows_untracked: slots.iter().map(|s| u64::from(s.untracked)).sum(),
        flow_records_refused: slots.iter().map(|s| u64::from(s.rec_lost)).sum(),
        took: start.elapsed(),
    })
}

/// Samples now and then every `every`, until the runtime stops.
pub(super) fn spawn_sampler(pin_root: PathBuf, every: Duration, fill: Arc<Fill>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let root = pin_root.clone();
            match tokio::task::spawn_blocking(move || sample(&root)).await {
                Ok(Ok(s)) => fill.set(s),
                Ok(Err(e)) => {
                    tracing::warn!(error = format!("{e:#}"), "metrics: map fill not sampled")
                }
                Err(e) => tracing::warn!(error = %e, "metrics: map fill sampler failed"),
            }
        }
    });
}

#[derive(Debug)]
pub(super) struct FillCollector(pub Arc<Fill>);

impl Collector for FillCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Before the first sample there is nothing to say (no made-up zeros).
        let Some(s) = self.0.last() else {
            return Ok(());
        };
        let mut m = encoder.encode_descriptor(
            "wardgate_agent_map_entries",
            "Entries in a datapath map at the last fill sample (conntrack: tracked flows).",
            None,
            MetricType::Gauge,
        )?;
        for f in &s.maps {
            ConstGauge::new(f.entries as i64).encode(m.encode_family(&[("map", f.map)])?)?;
        }
        let mut m = encoder.encode_descriptor(
            "wardgate_agent_map_capacity_entries",
            "Capacity of a datapath map (max_entries).",
            None,
            MetricType::Gauge,
        )?;
        for f in &s.maps {
            ConstGauge::new(f.capacity as i64).encode(m.encode_family(&[("map", f.map)])?)?;
        }
        ConstGauge::new(s.devices_at_flow_cap as i64).encode(encoder.encode_descriptor(
            "wardgate_agent_devices_at_flow_cap",
            "Devices at their live-flow cap (cap reported, not yet back below half).",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(s.flows_untracked as i64).encode(encoder.encode_descriptor(
            "wardgate_agent_flows_untracked",
            "Flows that passed untracked because their device was over its flow cap (learn, \
             monitor), summed over the devices the datapath holds; one in 16 is recorded.",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(s.flow_records_refused as i64).encode(encoder.encode_descriptor(
            "wardgate_agent_flow_records_refused",
            "Flow-open records a device's share of the ring refused (its record budget was \
             spent), summed over the devices the datapath holds.",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(s.took.as_secs_f64()).encode(encoder.encode_descriptor(
            "wardgate_agent_map_fill_sample_duration_seconds",
            "How long the last map fill sample took.",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}
