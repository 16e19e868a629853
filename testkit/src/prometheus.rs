//! Checks of Prometheus text scrapes for the metrics tests: Debian's `promtool` as the judge of
//! the format, and the samples as a map to compare before and after.

use std::{
    collections::BTreeMap,
    io::Write as _,
    process::{Command, Stdio},
};

/// `GET http://LISTEN/metrics` from inside network namespace `ns` with curl (a plain HTTP
/// client; bounded: 5 s); panics if the scrape fails.
pub fn scrape_in(ns: &str, listen: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "5",
        ])
        .arg(format!("http://{listen}/metrics"))
        .output()
        .expect("curl runs (apt package curl)");
    assert!(
        out.status.success(),
        "scrape failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Pipes `text` through `promtool check metrics`; panics with its complaints.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt package prometheus; `cargo xtask setup` installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scraped ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Samples of the Prometheus text format: `name{labels}` -> value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line has a value");
            (series.to_string(), value.parse().expect("numeric value"))
        })
        .collect()
}

/// The value of `series`; panics listing what there is if it is missing.
pub fn value(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("no series {series} in {s:#?}"))
}
