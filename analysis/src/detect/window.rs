//! A sliding-window distinct set: which keys were seen in the last `window_ns`, with a bound on
//! how many are held (a scan of 65,535 ports keeps at most `cap` entries; the count stays exact
//! up to the cap).

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
};

#[derive(Clone, Debug)]
pub struct WindowSet<K> {
    window_ns: u64,
    cap: usize,
    last: HashMap<K, u64>,
    order: VecDeque<(u64, K)>,
    /// Time of the first key still in the window.
    start_ns: u64,
}

impl<K: Copy + Eq + Hash> WindowSet<K> {
    pub fn new(window_ns: u64, cap: usize) -> Self {
        WindowSet {
            window_ns,
            cap: cap.max(1),
            last: HashMap::new(),
            order: VecDeque::new(),
            start_ns: 0,
        }
    }

    /// Records `key` at `now_ns` (times must not go backwards by more than the window); returns
    /// whether it was new in the window.
    pub fn insert(&mut self, now_ns: u64, key: K) -> bool {
        self.expire(now_ns);
        let new = !self.last.contains_key(&key);
        if new && self.last.len() >= self.cap {
            return false;
        }
        if self.last.is_empty() {
            self.start_ns = now_ns;
        }
        self.last.insert(key, now_ns);
        self.order.push_back((now_ns, key));
        // Re-seen keys leave stale entries behind; compact when they dominate.
        if self.order.len() > 4 * self.cap {
            let last = &self.last;
            self.order.retain(|(t, k)| last.get(k) == Some(t));
        }
        new
    }

    /// Forgets keys older than the window at `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        let cutoff = now_ns.saturating_sub(self.window_ns);
        while let Some((t, k)) = self.order.front().copied() {
            if t >= cutoff {
                break;
            }
            self.order.pop_front();
            if self.last.get(&k) == Some(&t) {
                self.last.remove(&k);
            }
        }
        if let Some((t, _)) = self.order.front() {
            self.start_ns = self.start_ns.max(*t).min(now_ns);
        }
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// The earliest time still in the window.
    pub fn start_ns(&self) -> u64 {
        self.order.front().map(|(t, _)| *t).unwrap_or(self.start_ns)
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.last.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_keys_in_the_window_only() {
        let s = 1_000_000_000u64;
        let mut w = WindowSet::new(10 * s, 100);
        assert!(w.insert(0, 1u16));
        assert!(!w.insert(s, 1));
        assert!(w.insert(2 * s, 2));
        assert_eq!(w.len(), 2);
        // Key 1 was last seen at 1 s: gone at 11.5 s; key 2 (2 s) stays.
        assert!(w.insert(11 * s + s / 2, 3));
        assert_eq!(w.len(), 2);
        assert_eq!(w.start_ns(), 2 * s);
        let mut k: Vec<u16> = w.keys().copied().collect();
        k.sort();
        assert_eq!(k, vec![2, 3]);
    }

    #[test]
    fn the_cap_bounds_memory() {
        let mut w = WindowSet::new(u64::MAX, 10);
        for p in 0..1000u16 {
            w.insert(u64::from(p), p);
        }
        assert_eq!(w.len(), 10);
        assert!(w.order.len() <= 40);
    }
}
