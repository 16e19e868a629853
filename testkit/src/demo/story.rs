//! The whole story, act by act: commissioning ([`super::commission`]), learning
//! ([`super::learn`]), four eyes and enforce ([`super::approve`]), a scan caught
//! ([`super::enforce`]), the audit trail, the console ([`super::console`]).

use anyhow::bail;

use super::{Bins, PIN_ROOT, approve, commission, console, enforce, learn};
use crate::switched::SwitchedWard;

pub fn run(bins: &Bins, keep: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let work = tempfile::tempdir()?;
    let _ = std::fs::remove_dir_all(PIN_ROOT);
    println!(
        "== building the ward: the ward's switch with pump-3a-bed12 (192.0.2.10) and us-3a-portable \
         (192.0.2.12) | gateway gw-ward-3 | hospital 198.51.100.0/24"
    );
    let ward = SwitchedWard::new("demo");
    let c = commission::run(bins, &ward, work.path())?;
    let peers = learn::Peers::start(&ward, &work.path().join("peers"))?;
    learn::run(&peers, &ward, &c.wardctl, work.path())?;
    approve::run(&c.wardctl, work.path())?;
    let all_ok = enforce::run(&peers, &ward, &c.wardctl, &c.syslog_file, &c.ocsf_file)?;

    println!("\n== wardctl audit list (who, what, why) and verify");
    let audit = c.wardctl.run(&["audit", "list"])?;
    let lines: Vec<&str> = audit.lines().collect();
    for line in &lines[lines.len().saturating_sub(8)..] {
        println!("   {line}");
    }
    println!("   {}", c.wardctl.run(&["audit", "verify"])?.trim());
    console::check(&ward.ward.srv, &c.admin_password)?;
    println!("\n== the story took {} s", started.elapsed().as_secs());
    if keep {
        console::keep(&ward.ward.srv)?;
    }
    let agent_log = c.agent_log.clone();
    drop(c);
    drop(peers);
    let _ = std::fs::remove_dir_all(PIN_ROOT);
    drop(ward);
    if !all_ok {
        bail!(
            "the demo ward did not behave as expected (agent log: {})",
            agent_log.display()
        );
    }
    println!("\nall flows behaved as the policy says; namespaces and pins removed");
    Ok(())
}
