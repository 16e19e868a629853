//! DNS tunnelling: a device asking one registered domain for many distinct names whose
//! subdomains carry data. iodine, dnscat2 and DNS exfiltration tools encode their payload in
//! the labels left of a domain they control (`nbswy3dpeb3w64tm....t.example.com`), so each
//! query is a new name with a long, random-looking first label, often of type TXT or NULL for
//! the room an answer gives. A device's ordinary lookups are a few names (its servers, NTP, an
//! update host) asked again and again.
//!
//! Keyed by (device, registered domain: the last two labels, or three under a two-level public
//! suffix such as `co.uk`; [`crate::dns::registered_domain`]). Raised when the distinct names
//! under one domain in `window_s` reach the threshold (tighter for site devices, scaled by
//! sensitivity) and at least one sign of encoded data holds over those names: a mean first
//! label of `min_label_len` characters or more, a mean Shannon entropy of the subdomain part of
//! `min_entropy` bits per character or more, or at least `min_tunnel_type_share` of them asked as
//! TXT or NULL. Raised again only after as many more new names. The finding's peer is the
//! resolver, so the aggregator keeps one per (device, resolver); the domain is in the summary and
//! the evidence's first name.

use std::{
    collections::{HashMap, VecDeque},
    hash::BuildHasher,
};

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, NS, Observation, Threshold,
    finding::{Finding, Matrix, Metric, Severity, Technique},
    scan,
};
use crate::dns::{self, qtype};

/// (device, domain) pairs tracked at once; past it, pairs with nothing in their window go.
const MAX_KEYS: usize = 4_096;
/// Distinct names held per pair (the count is exact up to it; far above any threshold).
const MAX_NAMES: usize = 256;
/// Names quoted in a finding's evidence.
const MAX_SAMPLES: usize = 8;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsTunnelConfig {
    /// The window names are counted over (default 300 s).
    pub window_s: u64,
    /// Distinct names under one domain that, with a sign of encoding, make a tunnel (default:
    /// hosts 30, site devices 20).
    pub names: Threshold,
    /// Mean length of the names' first label at or over which they carry data (default 20).
    pub min_label_len: f64,
    /// Mean Shannon entropy of the subdomain part, bits per character (default 3.5).
    pub min_entropy: f64,
    /// Share of the names asked as TXT or NULL (default 0.5).
    pub min_tunnel_type_share: f64,
    /// Registered domains never judged (default the reverse zones `in-addr.arpa`, `ip6.arpa`).
    pub ignore: Vec<String>,
}

impl Default for DnsTunnelConfig {
    fn default() -> Self {
        DnsTunnelConfig {
            window_s: 300,
            names: Threshold {
                host: 30,
                device: 20,
            },
            min_label_len: 20.0,
            min_entropy: 3.5,
            min_tunnel_type_share: 0.5,
            ignore: vec!["in-addr.arpa".into(), "ip6.arpa".into()],
        }
    }
}

/// What is kept of one distinct name.
struct Name {
    last_ns: u64,
    label_len: u16,
    entropy: f32,
    tunnel_type: bool,
}

#[derive(Default)]
struct Domain {
    names: HashMap<u64, Name>,
    /// (time, name hash) in time order; stale entries of re-seen names are skipped.
    order: VecDeque<(u64, u64)>,
    samples: Vec<String>,
    since_raised: u32,
}

impl Domain {
    fn expire(&mut self, now_ns: u64, window_ns: u64) {
        let cutoff = now_ns.saturating_sub(window_ns);
        while let Some(&(t, h)) = self.order.front() {
            if t >= cutoff {
                break;
            }
            self.order.pop_front();
            if self.names.get(&h).is_some_and(|n| n.last_ns == t) {
                self.names.remove(&h);
            }
        }
    }

    fn first_ns(&self) -> Option<u64> {
        self.order.front().map(|(t, _)| *t)
    }
}

pub struct DnsTunnel {
    cfg: DnsTunnelConfig,
    hasher: foldhash::quality::RandomState,
    keys: HashMap<(String, String), Domain>,
}

impl DnsTunnel {
    pub fn new(cfg: DnsTunnelConfig) -> Self {
        DnsTunnel {
            cfg,
            hasher: Default::default(),
            keys: HashMap::new(),
        }
    }

    fn forget_idle(&mut self, now_ns: u64) {
        let window = self.cfg.window_s * NS;
        self.keys.retain(|_, d| {
            d.order
                .back()
                .is_some_and(|(t, _)| now_ns.saturating_sub(*t) <= window)
        });
    }
}

impl Detector for DnsTunnel {
    fn name(&self) -> &'static str {
        "dns_tunnel"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Dns(e) = obs else { return };
        let domain = dns::registered_domain(&e.name);
        // The domain itself (or a bare name) carries no subdomain to encode data in.
        if domain.len() >= e.name.len() || self.cfg.ignore.iter().any(|d| d == domain) {
            return;
        }
        let now = e.ts_ns;
        if self.keys.len() >= MAX_KEYS {
            self.forget_idle(now);
        }
        let key = (e.device.name.clone(), domain.to_string());
        if !self.keys.contains_key(&key) && self.keys.len() >= MAX_KEYS {
            return;
        }
        let window = self.cfg.window_s * NS;
        let h = self.hasher.hash_one(&e.name);
        let d = self.keys.entry(key).or_default();
        d.expire(now, window);
        let full = d.names.len() >= MAX_NAMES;
        match d.names.get_mut(&h) {
            Some(n) => n.last_ns = now,
            None if full => return,
            None => {
                let sub = &e.name[..e.name.len() - domain.len() - 1];
                let first = sub.split('.').next().unwrap_or_default();
                let letters: String = sub.chars().filter(|c| *c != '.').collect();
                d.names.insert(
                    h,
                    Name {
                        last_ns: now,
                        label_len: u16::try_from(first.len()).unwrap_or(u16::MAX),
                        entropy: dns::entropy(&letters) as f32,
                        tunnel_type: matches!(e.qtype, qtype::TXT | qtype::NULL),
                    },
                );
                d.since_raised += 1;
                if d.samples.len() < MAX_SAMPLES {
                    d.samples.push(e.name.clone());
                }
            }
        }
        d.order.push_back((now, h));
        if d.order.len() > 4 * MAX_NAMES {
            let names = &d.names;
            d.order
                .retain(|(t, h)| names.get(h).is_some_and(|n| n.last_ns == *t));
        }
        let facts = ctx.facts(&e.device);
        let limit = self.cfg.names.for_device(&facts, "dns_tunnel");
        let n = d.names.len() as u32;
        if n < limit || d.since_raised < limit {
            return;
        }
        let count = f64::from(n);
        let label_len = d
            .names
            .values()
            .map(|n| f64::from(n.label_len))
            .sum::<f64>()
            / count;
        let entropy = d.names.values().map(|n| f64::from(n.entropy)).sum::<f64>() / count;
        let tunnel_types = d.names.values().filter(|n| n.tunnel_type).count();
        let share = tunnel_types as f64 / count;
        let signs = [
            label_len >= self.cfg.min_label_len,
            entropy >= self.cfg.min_entropy,
            share >= self.cfg.min_tunnel_type_share,
        ];
        let held = signs.iter().filter(|s| **s).count();
        if held == 0 {
            return;
        }
        d.since_raised = 0;
        let first = d.first_ns().unwrap_or(now);
        let severity = if facts.is_site_device() {
            Severity::High
        } else {
            Severity::Medium
        };
        let mut f = Finding::new(
            "dns_tunnel",
            &e.device,
            now,
            severity,
            scan::confidence(n, limit) + 0.1 * (held - 1) as f64,
            Technique::new(
                "T1071.004",
                "Application Layer Protocol: DNS",
                Matrix::Enterprise,
            ),
        );
        f.peer = Some(e.resolver);
        f.summary = format!(
            "{} asked {} for {n} distinct names under {domain} in {} s (first label {label_len:.0} characters, {entropy:.1} bits per character, {tunnel_types} asked as TXT or NULL): data carried in DNS queries",
            e.device.name,
            e.resolver,
            now.saturating_sub(first) / NS
        );
        if let Some(a) = scan::action(&e.device, &facts) {
            f.action = a;
        }
        f.evidence.window_start_ns = first;
        f.evidence.window_end_ns = now;
        f.evidence.metrics = vec![
            Metric::new("distinct_names", count).threshold(f64::from(limit)),
            Metric::new("mean_first_label_length", label_len).threshold(self.cfg.min_label_len),
            Metric::new("mean_entropy_bits", entropy).threshold(self.cfg.min_entropy),
            Metric::new("tunnel_type_share", share).threshold(self.cfg.min_tunnel_type_share),
        ];
        f.evidence.ports = vec![dns::PORT];
        f.evidence.peers = vec![e.resolver];
        f.evidence.names = std::iter::once(domain.to_string())
            .chain(std::mem::take(&mut d.samples))
            .collect();
        out.push(f);
    }
}
