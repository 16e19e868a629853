//! Robust statistics: median and median absolute deviation (MAD), and inter-arrival regularity.

use serde::{Deserialize, Serialize};

/// Median of `v` (sorted in place); 0 for no values.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median and MAD (median of absolute deviations from the median, unscaled).
pub fn median_mad(values: &[f64]) -> (f64, f64) {
    let mut v = values.to_vec();
    let m = median(&mut v);
    let mut dev: Vec<f64> = values.iter().map(|x| (x - m).abs()).collect();
    (m, median(&mut dev))
}

/// How regular a peer's flow starts are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Periodicity {
    /// Inter-arrival intervals measured.
    pub intervals: u32,
    pub median_s: f64,
    pub mad_s: f64,
    /// At least MIN_INTERVALS intervals with MAD under REGULAR of the median: a timer, not a person.
    pub periodic: bool,
}

const MIN_INTERVALS: usize = 4;
const REGULAR: f64 = 0.1;

/// From flow start times (ns, any order); `None` with fewer than two starts.
pub fn periodicity(starts_ns: &[u64]) -> Option<Periodicity> {
    let mut s = starts_ns.to_vec();
    s.sort_unstable();
    let gaps: Vec<f64> = s
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e9)
        .filter(|g| *g > 0.0)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    let (m, mad) = median_mad(&gaps);
    Some(Periodicity {
        intervals: gaps.len() as u32,
        median_s: m,
        mad_s: mad,
        periodic: gaps.len() >= MIN_INTERVALS && mad <= REGULAR * m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad() {
        assert_eq!(median_mad(&[]), (0.0, 0.0));
        assert_eq!(median_mad(&[5.0]), (5.0, 0.0));
        assert_eq!(median_mad(&[1.0, 2.0, 3.0, 4.0]), (2.5, 1.0));
        // One outlier moves neither.
        assert_eq!(median_mad(&[10.0, 10.0, 11.0, 9.0, 1000.0]), (10.0, 1.0));
    }

    #[test]
    fn timers_are_periodic_people_are_not() {
        let s = 1_000_000_000u64;
        let timer: Vec<u64> = (0..10).map(|i| i * 60 * s + (i % 2) * s / 10).collect();
        let p = periodicity(&timer).unwrap();
        assert!(p.periodic, "{p:?}");
        assert!((p.median_s - 60.0).abs() < 0.2);
        let human = [0, 3, 50, 51, 400, 2000, 2001].map(|x| x * s);
        assert!(!periodicity(&human).unwrap().periodic);
        assert!(periodicity(&[s]).is_none());
    }
}
