//! Vendor names for MAC prefixes of medical device makers (24, 28 and 36-bit IEEE assignments).

use std::sync::OnceLock;

use crate::mac::Mac;

const TABLE: &str = include_str!("../../data/medical_oui.tsv");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vendor {
    /// Eight-letter short name (Wireshark's).
    pub short: &'static str,
    pub name: &'static str,
}

struct Prefix {
    value: u64,
    bits: u32,
    vendor: Vendor,
}

fn table() -> &'static [Prefix] {
    static T: OnceLock<Vec<Prefix>> = OnceLock::new();
    T.get_or_init(|| {
        let mut v: Vec<Prefix> = TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("oui_prefix"))
            .filter_map(|l| {
                let mut f = l.split('\t');
                let (prefix, short, name) = (f.next()?, f.next()?, f.next()?);
                let (hex, bits) = match prefix.split_once('/') {
                    Some((h, b)) => (h, b.parse().ok()?),
                    None => (prefix, 24),
                };
                let mut value = 0u64;
                let mut n = 0;
                for o in hex.split(':') {
                    value = value << 8 | u64::from(u8::from_str_radix(o, 16).ok()?);
                    n += 1;
                }
                value <<= 8 * (6 - n);
                Some(Prefix {
                    value,
                    bits,
                    vendor: Vendor { short, name },
                })
            })
            .collect();
        // Longest prefix first.
        v.sort_by_key(|p| std::cmp::Reverse(p.bits));
        v
    })
}

/// The medical vendor owning `mac`'s prefix, if it is in the curated list.
pub fn vendor(mac: Mac) -> Option<Vendor> {
    let m = mac.0.iter().fold(0u64, |a, &o| a << 8 | u64::from(o));
    table()
        .iter()
        .find(|p| {
            let mask = !0u64 << (48 - p.bits) & 0xffff_ffff_ffff;
            m & mask == p.value & mask
        })
        .map(|p| p.vendor.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_prefixes_and_longest_match() {
        assert_eq!(table().len(), 139);
        let icu = vendor("00:03:b1:12:34:56".parse().unwrap()).unwrap();
        assert_eq!(icu.name, "ICU Medical, Inc.");
        // A 36-bit assignment inside the IEEE's 00:50:C2 block.
        let r = vendor("00:50:c2:05:b1:23".parse().unwrap()).unwrap();
        assert_eq!(r.short, "Radiomet");
        assert!(vendor("00:50:c2:05:c1:23".parse().unwrap()).is_none());
        assert!(vendor("02:00:00:00:00:01".parse().unwrap()).is_none());
    }
}
