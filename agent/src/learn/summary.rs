//! The per-device table `learn` prints.

use std::io::Write;

use super::Learned;

pub fn print_summary(l: &Learned, out: &mut impl Write) -> std::io::Result<()> {
    for f in &l.files {
        write!(
            out,
            "{}: {} {} frames, {} malformed, {} not IP",
            f.file.display(),
            f.end.format,
            f.end.frames,
            f.malformed,
            f.not_ip
        )?;
        match &f.end.cut {
            Some(cut) => writeln!(out, "; {cut} (read up to the cut)")?,
            None => writeln!(out)?,
        }
    }
    for m in &l.malformed_listed {
        writeln!(
            out,
            "  malformed packet {} in {}: {}",
            m.number,
            m.file.display(),
            m.error
        )?;
    }
    let t = &l.table;
    writeln!(
        out,
        "{} flows ({} identified by first bytes, {} without a device end), {} records",
        t.flows, t.flows_identified, t.flows_without_device, l.records
    )?;
    if t.dropped_table_full > 0 {
        writeln!(
            out,
            "{} packets of new flows dropped: flow table full",
            t.dropped_table_full
        )?;
    }
    if !l.routers.is_empty() {
        let macs: Vec<String> = l.routers.iter().map(ToString::to_string).collect();
        writeln!(out, "left out as routers: {}", macs.join(", "))?;
    }
    writeln!(
        out,
        "{:<32} {:<24} {:>6} {:>6} {:>8} {:>12}  apps",
        "device", "vendor", "flows", "peers", "services", "bytes"
    )?;
    for b in &l.baselines {
        let vendor = l
            .devices
            .iter()
            .find(|d| d.name == b.device.name)
            .and_then(|d| d.vendor.clone())
            .unwrap_or_default();
        let apps: Vec<&str> = b.apps.iter().map(|a| a.identity.as_str()).collect();
        writeln!(
            out,
            "{:<32} {:<24} {:>6} {:>6} {:>8} {:>12}  {}",
            b.device.name,
            vendor.chars().take(24).collect::<String>(),
            b.flows,
            format!(
                "{}{}",
                b.peers.len(),
                if b.peers_overflow > 0 { "+" } else { "" }
            ),
            b.services.len(),
            b.bytes_out + b.bytes_in,
            apps.join("; ")
        )?;
    }
    for p in &l.proposed {
        writeln!(out, "proposed {}", p.display())?;
    }
    if let Some(sim) = &l.simulation {
        let blocked: u64 = sim.blocked.iter().map(|b| b.flows).sum();
        writeln!(
            out,
            "simulating profile {} on {} ({} flows): would have blocked {blocked} flows",
            sim.profile,
            sim.devices.join(", "),
            sim.flows
        )?;
        for b in &sim.blocked {
            let dir = match b.direction {
                wardgate_analysis::FlowDirection::Opened => "->",
                wardgate_analysis::FlowDirection::Received => "<-",
            };
            writeln!(
                out,
                "  {} {dir} {} {}/{}: {} flows, {} bytes, last seen {}",
                b.device,
                b.peer,
                wardgate_analysis::baseline::proto_name(b.proto),
                b.port,
                b.flows,
                b.bytes,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(b.last_seen_ns)
                )
            )?;
            // The port is allowed; the application rule refuses what these flows named.
            if let Some(app) = &b.app {
                writeln!(out, "    refused by the application rule: {app}")?;
            }
        }
    }
    Ok(())
}
