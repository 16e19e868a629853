//! The login rate limit: failed logins counted per source address (every kind of login) and
//! per break-glass name (from anywhere), over a sliding window. A key at its limit is refused
//! before any password is checked, until its oldest failure leaves the window. In memory: a
//! restart forgets (the audit trail keeps every failure).

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::LoginLimit;

/// Keys kept at most; past it, keys without a failure in the window are dropped first, then
/// the whole table (a flood of addresses must not grow memory without bound).
const MAX_KEYS: usize = 100_000;

/// What failures are counted against.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// A source address; IPv6 by its /64 (one host usually holds a whole /64).
    Address(IpAddr),
    /// A break-glass login name.
    Name(String),
}

impl Key {
    pub fn address(a: IpAddr) -> Key {
        match a {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::Address(IpAddr::V4(v4)),
                None => {
                    let mut o = v6.octets();
                    o[8..].fill(0);
                    Key::Address(IpAddr::from(o))
                }
            },
            v4 => Key::Address(v4),
        }
    }
}

/// Failed logins by key.
pub struct Limiter {
    limit: LoginLimit,
    failures: Mutex<BTreeMap<Key, VecDeque<Instant>>>,
}

impl Limiter {
    pub fn new(limit: LoginLimit) -> Limiter {
        Limiter {
            limit,
            failures: Mutex::new(BTreeMap::new()),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.limit.window_seconds)
    }

    fn cap(&self, key: &Key) -> usize {
        let n = match key {
            Key::Address(_) => self.limit.per_address,
            Key::Name(_) => self.limit.per_name,
        };
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// `None` if none of `keys` is locked out at `now`; else how long until the first of them
    /// is free again.
    pub fn locked(&self, keys: &[Key], now: Instant) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .filter_map(|k| {
                let recent: Vec<Instant> = map
                    .get(k)?
                    .iter()
                    .copied()
                    .filter(|t| now.saturating_duration_since(*t) < self.window())
                    .collect();
                if recent.len() < self.cap(k) {
                    return None;
                }
                let oldest = *recent.first()?;
                Some(
                    self.window()
                        .saturating_sub(now.saturating_duration_since(oldest)),
                )
            })
            .max()
    }

    /// Counts a failed login against each of `keys` at `now`.
    pub fn failed(&self, keys: &[Key], now: Instant) {
        let window = self.window();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS {
            map.retain(|_, times| {
                times.retain(|t| now.saturating_duration_since(*t) < window);
                !times.is_empty()
            });
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        for k in keys {
            let cap = self.cap(k);
            let times = map.entry(k.clone()).or_default();
            times.retain(|t| now.saturating_duration_since(*t) < window);
            times.push_back(now);
            while times.len() > cap {
                times.pop_front();
            }
        }
    }

    /// A successful login clears its name's failures (not its address's: one good password
    /// must not reset an address trying many names).
    pub fn succeeded(&self, name: &Key) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_locked_at_its_limit_until_its_oldest_failure_leaves_the_window() {
        let l = Limiter::new(LoginLimit {
            per_address: 3,
            per_name: 2,
            window_seconds: 60,
        });
        let t0 = Instant::now();
        let addr = Key::address("192.0.2.7".parse().unwrap());
        let name = Key::Name("admin".into());
        let keys = [addr.clone(), name.clone()];
        assert_eq!(l.locked(&keys, t0), None);
        l.failed(&keys, t0);
        assert_eq!(l.locked(&keys, t0), None);
        l.failed(&keys, t0 + Duration::from_secs(10));
        // The name is at 2 of 2: locked for 60 s from its first failure.
        assert_eq!(
            l.locked(&keys, t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        // The address alone (another name) is still allowed: 2 of 3.
        assert_eq!(l.locked(std::slice::from_ref(&addr), t0), None);
        // Past the window of the first failure, the name may try again.
        assert_eq!(l.locked(&keys, t0 + Duration::from_secs(61)), None);
        // A success clears the name, not the address.
        l.failed(std::slice::from_ref(&addr), t0 + Duration::from_secs(11));
        l.succeeded(&name);
        assert_eq!(
            l.locked(&keys, t0 + Duration::from_secs(12)),
            Some(Duration::from_secs(48))
        );
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_v4_as_v4() {
        assert_eq!(
            Key::address("2001:db8::1".parse().unwrap()),
            Key::address("2001:db8::ffff:2".parse().unwrap())
        );
        assert_ne!(
            Key::address("2001:db8::1".parse().unwrap()),
            Key::address("2001:db8:0:1::1".parse().unwrap())
        );
        assert_eq!(
            Key::address("::ffff:192.0.2.1".parse().unwrap()),
            Key::address("192.0.2.1".parse().unwrap())
        );
    }
}
