//! Act 3, the engineer's loop with four eyes: `wardctl profile propose` from what the
//! ultrasound did, `wardctl simulate` (nothing it did is blocked), `wardctl changes submit`
//! (eve), `wardctl changes show` and `approve` (ana; eve's own approval is refused), then
//! `wardctl mode ... enforce`.

use std::path::Path;

use anyhow::{Context as _, bail};

use super::{GATEWAY, Wardctl};
use crate::demo::learn::DEVICE;

fn show(out: &str) {
    for line in out.lines() {
        println!("   {line}");
    }
}

pub fn run(wardctl: &Wardctl, work: &Path) -> anyhow::Result<()> {
    // The gateway records the DNS and NTP exchanges as not completed (a UDP flow has no
    // handshake), so a proposal from completed flows alone would leave them out; every flow
    // of this lab is the device's clinical work, so all are used.
    println!(
        "\n== wardctl profile propose --device {DEVICE} --include-incomplete (eve): a profile from its baseline"
    );
    let yaml = wardctl.run(&[
        "profile",
        "propose",
        "--device",
        DEVICE,
        "--include-incomplete",
    ])?;
    show(&yaml);
    let file = work.join("proposed.yaml");
    std::fs::write(&file, &yaml)?;
    let file_s = file.display().to_string();

    println!("\n== wardctl simulate --profile proposed.yaml --device {DEVICE}");
    show(&wardctl.run(&["simulate", "--profile", &file_s, "--device", DEVICE])?);
    let sim: serde_json::Value = serde_json::from_str(&wardctl.run(&[
        "--output",
        "json",
        "simulate",
        "--profile",
        &file_s,
        "--device",
        DEVICE,
    ])?)?;
    let blocked = sim["blocked"].as_array().map_or(0, Vec::len);
    if blocked != 0 {
        bail!("the proposed profile would block {blocked} kinds of the flows it was learned from");
    }

    println!("\n== wardctl changes submit (eve, engineer)");
    let out = wardctl.run(&[
        "changes",
        "submit",
        "--device",
        DEVICE,
        "--profile",
        &file_s,
        "--reason",
        "CHG-2 ultrasound learned on ward 3",
    ])?;
    show(&out);
    let id = out
        .strip_prefix("change ")
        .and_then(|s| s.split(' ').next())
        .context("no change id in wardctl's answer")?
        .to_string();

    println!("\n== wardctl changes show {id} (ana, the reviewer)");
    show(&wardctl.run_as("user-ana", &["changes", "show", &id])?);

    println!("\n== wardctl changes approve {id} as eve: refused, she submitted it");
    match wardctl.run(&["changes", "approve", &id, "--reason", "self-approval"]) {
        Ok(_) => bail!("eve approved her own change"),
        Err(e) => println!("   {}", e.to_string().trim()),
    }
    println!("\n== wardctl changes approve {id} as ana (engineer)");
    show(&wardctl.run_as(
        "user-ana",
        &["changes", "approve", &id, "--reason", "CAB-12 reviewed"],
    )?);
    let devices: serde_json::Value =
        serde_json::from_str(&wardctl.run(&["--output", "json", "devices", "list"])?)?;
    let profile = devices
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["name"] == DEVICE))
        .and_then(|d| d["profile"].as_str())
        .unwrap_or_default()
        .to_string();
    let proposed = yaml
        .lines()
        .find_map(|l| l.strip_prefix("name: "))
        .unwrap_or_default()
        .trim()
        .to_string();
    if profile != proposed {
        bail!("after the approval {DEVICE} has profile `{profile}`, not the approved `{proposed}`");
    }
    println!("   {DEVICE} now has profile {profile}");

    println!("\n== wardctl mode {DEVICE} enforce --reason 'CHG-2 enforce after approval'");
    let generation = wardctl.set_mode(DEVICE, "enforce", "CHG-2 enforce after approval")?;
    let took = wardctl.wait_applied(generation)?;
    println!(
        "   generation {generation} compiled, pushed to {GATEWAY}, written to the maps and reported applied in {} ms",
        took.as_millis()
    );
    Ok(())
}
