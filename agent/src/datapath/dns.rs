//! `WG_DNSADDR_V1`, the addresses devices learned from their resolvers' answers: written here
//! only, by the DNS learner (`crate::dns`), which owns this handle (the policy maps' writer
//! never touches it, and it is not slotted: an address learned stays learned across
//! generations, its name id being a hash of the name). Byte order: `convert`.

use std::path::Path;

use aya::maps::{HashMap, Map, MapData, RingBuf};
use wardgate_common::{DnsAddrKey, DnsAddrValue, map_names};

use super::{Datapath, DatapathError, convert, map_err, pinned};
use crate::dns::table::Write;

pub struct LearnedAddrs {
    map: HashMap<MapData, DnsAddrKey, DnsAddrValue>,
}

impl LearnedAddrs {
    pub fn open(pin_root: &Path) -> Result<Self, DatapathError> {
        let data = pinned::open(pin_root, map_names::DNS_ADDRS)?;
        Ok(LearnedAddrs {
            map: HashMap::try_from(Map::HashMap(data)).map_err(map_err(map_names::DNS_ADDRS))?,
        })
    }

    /// Applies the writes; returns how many failed (a full map: the address stays unlearned).
    pub fn apply(&mut self, writes: &[Write]) -> usize {
        let mut failed = 0;
        for w in writes {
            let ok = match *w {
                Write::Put {
                    device_id,
                    addr,
                    name_id,
                    expires_ns,
                } => self
                    .map
                    .insert(
                        &convert::dns_addr_key(device_id, addr),
                        &DnsAddrValue {
                            expires_ns,
                            name_id,
                            _pad: 0,
                        },
                        0,
                    )
                    .is_ok(),
                Write::Remove { device_id, addr } => {
                    // Already gone is fine.
                    let _ = self.map.remove(&convert::dns_addr_key(device_id, addr));
                    true
                }
            };
            if !ok {
                failed += 1;
            }
        }
        failed
    }

    /// Entries in the map now (for tests and status).
    pub fn len(&self) -> usize {
        self.map.keys().filter(Result::is_ok).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Datapath {
    /// Takes the held-DNS-answer ring buffer out (once), for the DNS learner.
    pub fn take_dns_answers(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        let map = self
            .ebpf
            .take_map(map_names::DNS_ANSWERS)
            .ok_or(DatapathError::MissingMap {
                name: map_names::DNS_ANSWERS,
            })?;
        RingBuf::try_from(map).map_err(map_err(map_names::DNS_ANSWERS))
    }
}
