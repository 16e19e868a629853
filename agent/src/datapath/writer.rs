//! Applying a desired state: the new generation is written in full into the inactive slot, its
//! metadata last, and then one 4-byte write of `WG_ACTIVE_V1` makes it visible. A packet reads the
//! active slot once and uses only that slot, so no packet ever sees half a policy.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use aya::maps::{
    Array, HashMap, MapData,
    lpm_trie::{Key, LpmTrie},
};
use wardgate_common::{
    AppKey, CtKey, CtValue, DeviceInfo, DeviceKey, DnsNameKey, DnsResolverKey, HostPortKey, MacKey,
    PEER_HAS_PREFIX_PORTS, PeerKey, PeerValue, PortKey, RuleValue, active_word, capacity,
    map_names,
};
use wardgate_policy::{
    DesiredState,
    desired::{PeerEntry, PortEntry},
};

use super::{Datapath, DatapathError, convert, map_err};

/// After a switch, packets that read the old slot may still be running: wait this long before
/// rewriting it. Programs run for microseconds; this is generous.
const GRACE: Duration = Duration::from_millis(50);

/// `BPF_EXIST` (linux/bpf.h): update an entry only if it is still there.
const BPF_EXIST: u64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The active slot already holds this generation (e.g. agent restart): nothing written.
    Unchanged { generation: u32 },
    Switched {
        from: u32,
        to: u32,
        slot: u32,
        entries: usize,
    },
}

impl Datapath {
    pub fn apply(&mut self, state: &DesiredState) -> Result<ApplyOutcome, DatapathError> {
        self.apply_inner(state, false)
    }

    /// Like [`Datapath::apply`], but writes and switches even when the active slot holds the
    /// same generation number: for a generation of another controller store (new epoch) or of
    /// a restored store that diverged, whose number says nothing about its content. Conntrack
    /// entries checked under the old content carry that same number, so they are marked for a
    /// re-check (generation 0, never active), as any switch would make them; a flow-cache slot
    /// goes on answering for at most its one-second sync period before it asks conntrack.
    pub fn replace(&mut self, state: &DesiredState) -> Result<ApplyOutcome, DatapathError> {
        let (_, current) = self.active()?;
        let out = self.apply_inner(state, true)?;
        if current == state.generation {
            let marked = self.recheck_conntrack(state.generation)?;
            tracing::info!(
                generation = state.generation,
                marked,
                "same generation number, new content: tracked flows re-checked"
            );
        }
        Ok(out)
    }

    /// Marks every conntrack entry checked under `generation` for a re-check; returns how many.
    fn recheck_conntrack(&mut self, generation: u32) -> Result<usize, DatapathError> {
        let mut ct: HashMap<&mut MapData, CtKey, CtValue> = self.typed(map_names::CONNTRACK)?;
        let keys: Vec<CtKey> = ct.keys().filter_map(Result::ok).collect();
        let mut n = 0;
        for k in keys {
            // An entry may idle out or be evicted meanwhile: then there is nothing to mark.
            let Ok(mut v) = ct.get(&k, 0) else { continue };
            if v.generation == generation {
                v.generation = 0;
                if ct.insert(&k, &v, BPF_EXIST).is_ok() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn apply_inner(
        &mut self,
        state: &DesiredState,
        force: bool,
    ) -> Result<ApplyOutcome, DatapathError> {
        if state.generation == 0 {
            return Err(DatapathError::GenerationZero {
                gateway: state.gateway.clone(),
            });
        }
        if state.generation > u32::MAX >> 1 {
            return Err(DatapathError::GenerationTooLarge {
                generation: state.generation,
            });
        }
        let (active, current) = self.active()?;
        if current == state.generation && !force {
            return Ok(ApplyOutcome::Unchanged {
                generation: current,
            });
        }
        if let Some(t) = self.last_switch {
            let since = t.elapsed();
            if since < GRACE {
                std::thread::sleep(GRACE - since);
            }
        }
        let slot = active ^ 1;
        self.clear_slot(slot)?;
        let entries = self.write_slot(slot, state)?;
        // One 4-byte write makes the slot and its generation visible together.
        let mut switch: Array<&mut MapData, u32> = self.typed(map_names::ACTIVE)?;
        switch
            .set(0, &active_word(state.generation, slot), 0)
            .map_err(map_err(map_names::ACTIVE))?;
        self.last_switch = Some(Instant::now());
        Ok(ApplyOutcome::Switched {
            from: current,
            to: state.generation,
            slot,
            entries,
        })
    }

    fn clear_slot(&mut self, slot: u32) -> Result<(), DatapathError> {
        let slot = slot as u8;
        self.clear_hash::<DeviceKey, DeviceInfo>(map_names::DEVICES, |k| k.slot == slot)?;
        self.clear_hash::<MacKey, DeviceInfo>(map_names::MACS, |k| k.slot == slot)?;
        self.clear_lpm::<PeerKey, PeerValue>(map_names::PEERS, |k| k.slot == slot)?;
        self.clear_lpm::<PortKey, RuleValue>(map_names::PORTS, |k| k.slot == slot)?;
        self.clear_hash::<PeerKey, PeerValue>(map_names::PEERS_HOST, |k| k.slot == slot)?;
        self.clear_hash::<PortKey, RuleValue>(map_names::PORTS_EXACT, |k| k.slot == slot)?;
        self.clear_hash::<HostPortKey, RuleValue>(map_names::HOST_PORTS, |k| k.slot == slot)?;
        self.clear_hash::<AppKey, u32>(map_names::APP_VALUES, |k| k.slot == slot)?;
        self.clear_hash::<DnsNameKey, PeerValue>(map_names::DNS_NAMES, |k| k.slot == slot)?;
        self.clear_lpm::<DnsResolverKey, u32>(map_names::DNS_RESOLVERS, |k| k.slot == slot)
    }

    /// Removes the entries of hash map `name` whose key `in_slot` selects.
    fn clear_hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        in_slot: impl Fn(&K) -> bool,
    ) -> Result<(), DatapathError> {
        let mut map: HashMap<&mut MapData, K, V> = self.typed(name)?;
        let stale: Vec<_> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| in_slot(k))
            .collect();
        for k in stale {
            map.remove(&k).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Removes the entries of LPM trie `name` whose key data `in_slot` selects.
    fn clear_lpm<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        in_slot: impl Fn(&K) -> bool,
    ) -> Result<(), DatapathError> {
        let mut map: LpmTrie<&mut MapData, K, V> = self.typed(name)?;
        let stale: Vec<_> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| in_slot(&k.data()))
            .collect();
        for k in stale {
            map.remove(&k).map_err(map_err(name))?;
        }
        Ok(())
    }

    fn write_slot(&mut self, slot: u32, state: &DesiredState) -> Result<usize, DatapathError> {
        let e = Entries::of(slot, state);
        let n = e.len();
        // Allowed application values before the rules that name them.
        let mut apps: HashMap<&mut MapData, AppKey, u32> = self.typed(map_names::APP_VALUES)?;
        for (k, v) in &e.apps {
            apps.insert(k, v, 0)
                .map_err(map_err(map_names::APP_VALUES))?;
        }
        let mut devices: HashMap<&mut MapData, DeviceKey, DeviceInfo> =
            self.typed(map_names::DEVICES)?;
        for (k, v) in &e.devices {
            devices
                .insert(k, v, 0)
                .map_err(map_err(map_names::DEVICES))?;
        }
        let mut macs: HashMap<&mut MapData, MacKey, DeviceInfo> = self.typed(map_names::MACS)?;
        for (k, v) in &e.macs {
            macs.insert(k, v, 0).map_err(map_err(map_names::MACS))?;
        }
        let mut hosts: HashMap<&mut MapData, PeerKey, PeerValue> =
            self.typed(map_names::PEERS_HOST)?;
        for (k, v) in &e.hosts {
            hosts
                .insert(k, v, 0)
                .map_err(map_err(map_names::PEERS_HOST))?;
        }
        let mut peers: LpmTrie<&mut MapData, PeerKey, PeerValue> = self.typed(map_names::PEERS)?;
        for (k, v) in &e.peers {
            peers.insert(k, v, 0).map_err(map_err(map_names::PEERS))?;
        }
        let mut exact: HashMap<&mut MapData, PortKey, RuleValue> =
            self.typed(map_names::PORTS_EXACT)?;
        for (k, v) in &e.exact {
            exact
                .insert(k, v, 0)
                .map_err(map_err(map_names::PORTS_EXACT))?;
        }
        let mut ports: LpmTrie<&mut MapData, PortKey, RuleValue> = self.typed(map_names::PORTS)?;
        for (k, v) in &e.ports {
            ports.insert(k, v, 0).map_err(map_err(map_names::PORTS))?;
        }
        let mut pairs: HashMap<&mut MapData, HostPortKey, RuleValue> =
            self.typed(map_names::HOST_PORTS)?;
        for (k, v) in &e.pairs {
            pairs
                .insert(k, v, 0)
                .map_err(map_err(map_names::HOST_PORTS))?;
        }
        let mut names: HashMap<&mut MapData, DnsNameKey, PeerValue> =
            self.typed(map_names::DNS_NAMES)?;
        for (k, v) in &e.dns_names {
            names
                .insert(k, v, 0)
                .map_err(map_err(map_names::DNS_NAMES))?;
        }
        let mut resolvers: LpmTrie<&mut MapData, DnsResolverKey, u32> =
            self.typed(map_names::DNS_RESOLVERS)?;
        for (k, v) in &e.dns_resolvers {
            resolvers
                .insert(k, v, 0)
                .map_err(map_err(map_names::DNS_RESOLVERS))?;
        }
        Ok(n)
    }

    /// Whether the active slot holds exactly `state`: its generation, and every entry of the
    /// device, MAC, peer and port maps of that slot as writing `state` would make them (read
    /// back from the maps, one lookup per entry). A restart cannot otherwise know what content
    /// pinned maps hold for a generation number.
    pub fn holds(&mut self, state: &DesiredState) -> Result<bool, DatapathError> {
        let (slot, generation) = self.active()?;
        if generation != state.generation {
            return Ok(false);
        }
        let want = Entries::of(slot, state).raw();
        let s = slot as u8;
        let mut have = RawSlot::default();
        let devices: HashMap<&mut MapData, DeviceKey, DeviceInfo> =
            self.typed(map_names::DEVICES)?;
        read_hash(&devices, |k| k.slot == s, &mut have.devices);
        let macs: HashMap<&mut MapData, MacKey, DeviceInfo> = self.typed(map_names::MACS)?;
        read_hash(&macs, |k| k.slot == s, &mut have.macs);
        let hosts: HashMap<&mut MapData, PeerKey, PeerValue> = self.typed(map_names::PEERS_HOST)?;
        read_hash(&hosts, |k| k.slot == s, &mut have.hosts);
        let exact: HashMap<&mut MapData, PortKey, RuleValue> =
            self.typed(map_names::PORTS_EXACT)?;
        read_hash(&exact, |k| k.slot == s, &mut have.exact);
        let pairs: HashMap<&mut MapData, HostPortKey, RuleValue> =
            self.typed(map_names::HOST_PORTS)?;
        read_hash(&pairs, |k| k.slot == s, &mut have.pairs);
        let apps: HashMap<&mut MapData, AppKey, u32> = self.typed(map_names::APP_VALUES)?;
        read_hash(&apps, |k| k.slot == s, &mut have.apps);
        let peers: LpmTrie<&mut MapData, PeerKey, PeerValue> = self.typed(map_names::PEERS)?;
        for k in peers.keys().filter_map(Result::ok) {
            if k.data().slot == s
                && let Ok(v) = peers.get(&k, 0)
            {
                have.peers.insert(raw(&k), raw(&v));
            }
        }
        let ports: LpmTrie<&mut MapData, PortKey, RuleValue> = self.typed(map_names::PORTS)?;
        for k in ports.keys().filter_map(Result::ok) {
            if k.data().slot == s
                && let Ok(v) = ports.get(&k, 0)
            {
                have.ports.insert(raw(&k), raw(&v));
            }
        }
        let names: HashMap<&mut MapData, DnsNameKey, PeerValue> =
            self.typed(map_names::DNS_NAMES)?;
        read_hash(&names, |k| k.slot == s, &mut have.dns_names);
        let resolvers: LpmTrie<&mut MapData, DnsResolverKey, u32> =
            self.typed(map_names::DNS_RESOLVERS)?;
        for k in resolvers.keys().filter_map(Result::ok) {
            if k.data().slot == s
                && let Ok(v) = resolvers.get(&k, 0)
            {
                have.dns_resolvers.insert(raw(&k), raw(&v));
            }
        }
        Ok(want == have)
    }
}

/// What writing a desired state into a slot puts in each map, in write order.
struct Entries {
    devices: Vec<(DeviceKey, DeviceInfo)>,
    macs: Vec<(MacKey, DeviceInfo)>,
    hosts: Vec<(PeerKey, PeerValue)>,
    peers: Vec<(Key<PeerKey>, PeerValue)>,
    exact: Vec<(PortKey, RuleValue)>,
    ports: Vec<(Key<PortKey>, RuleValue)>,
    /// Host peers joined with the single ports of their peer set (`convert::host_port_pairs`).
    pairs: Vec<(HostPortKey, RuleValue)>,
    apps: Vec<(AppKey, u32)>,
    dns_names: Vec<(DnsNameKey, PeerValue)>,
    dns_resolvers: Vec<(Key<DnsResolverKey>, u32)>,
}

impl Entries {
    fn of(slot: u32, state: &DesiredState) -> Self {
        let mut devices = Vec::new();
        for d in &state.devices {
            let info = convert::device_info(d);
            for addr in &d.addrs {
                devices.push((convert::device_key(slot, *addr), info));
            }
        }
        let macs = state
            .devices
            .iter()
            .map(|d| (convert::mac_key(slot, d), convert::device_info(d)))
            .collect();
        // Peer sets that need the port LPM (anything but single ports).
        let with_prefixes: BTreeSet<u32> = state
            .ports
            .iter()
            .filter(|e| !convert::is_exact(e))
            .map(|e| e.peer_set)
            .collect();
        let value = |e: &PeerEntry| PeerValue {
            peer_set: e.peer_set,
            flags: if with_prefixes.contains(&e.peer_set) {
                PEER_HAS_PREFIX_PORTS
            } else {
                0
            },
        };
        // Each rule's application check: its datapath bits and its allowed values.
        let mut app_flags: BTreeMap<u32, u32> = BTreeMap::new();
        let mut apps = Vec::new();
        for r in state.policies.iter().flat_map(|p| &p.rules) {
            let flags = convert::app_flags(r.app.as_ref());
            if flags == 0 {
                continue;
            }
            app_flags.insert(r.rule_id, flags);
            if let Some(a) = &r.app {
                apps.extend(
                    convert::app_keys(slot, r.rule_id, a)
                        .into_iter()
                        .map(|k| (k, 1u32)),
                );
            }
        }
        let app = |e: &PortEntry| app_flags.get(&e.rule_id).copied().unwrap_or(0);
        let hosts: Vec<_> = state
            .peers
            .iter()
            .filter(|e| convert::is_host(e))
            .map(|e| (convert::peer_key(slot, e).data(), value(e)))
            .collect();
        let exact: Vec<_> = state
            .ports
            .iter()
            .filter(|e| convert::is_exact(e))
            .map(|e| {
                (
                    convert::exact_port_key(slot, e),
                    convert::rule_value(e, app(e)),
                )
            })
            .collect();
        Entries {
            dns_names: state
                .dns
                .names
                .iter()
                .map(|n| {
                    let set = PeerValue {
                        peer_set: n.peer_set,
                        flags: if with_prefixes.contains(&n.peer_set) {
                            PEER_HAS_PREFIX_PORTS
                        } else {
                            0
                        },
                    };
                    (convert::dns_name_key(slot, n), set)
                })
                .collect(),
            dns_resolvers: state
                .dns
                .resolvers
                .iter()
                .map(|r| (convert::dns_resolver_key(slot, r), 1u32))
                .collect(),
            apps,
            devices,
            macs,
            pairs: convert::host_port_pairs(&hosts, &exact, capacity::HOST_PORTS as usize),
            hosts,
            peers: state
                .peers
                .iter()
                .filter(|e| !convert::is_host(e))
                .map(|e| (convert::peer_key(slot, e), value(e)))
                .collect(),
            exact,
            ports: state
                .ports
                .iter()
                .filter(|e| !convert::is_exact(e))
                .map(|e| (convert::port_key(slot, e), convert::rule_value(e, app(e))))
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.devices.len()
            + self.macs.len()
            + self.hosts.len()
            + self.peers.len()
            + self.exact.len()
            + self.ports.len()
            + self.pairs.len()
            + self.apps.len()
            + self.dns_names.len()
            + self.dns_resolvers.len()
    }

    /// As the maps hold them: by key bytes (a key written twice holds its last value).
    fn raw(&self) -> RawSlot {
        fn map<K: aya::Pod, V: aya::Pod>(e: &[(K, V)]) -> RawMap {
            e.iter().map(|(k, v)| (raw(k), raw(v))).collect()
        }
        RawSlot {
            devices: map(&self.devices),
            macs: map(&self.macs),
            hosts: map(&self.hosts),
            peers: map(&self.peers),
            exact: map(&self.exact),
            ports: map(&self.ports),
            pairs: map(&self.pairs),
            apps: map(&self.apps),
            dns_names: map(&self.dns_names),
            dns_resolvers: map(&self.dns_resolvers),
        }
    }
}

type RawMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// One slot of the policy maps as bytes, for comparing what is written with what is wanted.
#[derive(Default, PartialEq, Eq)]
struct RawSlot {
    devices: RawMap,
    macs: RawMap,
    hosts: RawMap,
    peers: RawMap,
    exact: RawMap,
    ports: RawMap,
    pairs: RawMap,
    apps: RawMap,
    dns_names: RawMap,
    dns_resolvers: RawMap,
}

/// The bytes of a map key or value (`Pod`: plain data without implicit padding, as the kernel
/// reads and writes it).
fn raw<T: aya::Pod>(t: &T) -> Vec<u8> {
    // Safety: `T: Pod` is plain data of `size_of::<T>()` initialized bytes.
    unsafe { std::slice::from_raw_parts((t as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// The entries of a hash map whose key `keep` selects, as bytes (one lookup each; an entry
/// removed meanwhile is left out).
fn read_hash<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<&mut MapData, K, V>,
    keep: impl Fn(&K) -> bool,
    out: &mut RawMap,
) {
    for k in map.keys().filter_map(Result::ok) {
        if keep(&k)
            && let Ok(v) = map.get(&k, 0)
        {
            out.insert(raw(&k), raw(&v));
        }
    }
}
