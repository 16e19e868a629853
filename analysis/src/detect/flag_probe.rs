//! Probes whose TCP flags alone betray them: an opening packet with no flag, FIN alone, the
//! Xmas set (FIN, PSH, URG), or SYN with FIN (`flow::probe::flag_probe`). No TCP stack opens a
//! connection that way; scanners send them to slip past filters that only look at SYNs. One
//! is enough: raised at once, the opener as subject (a device probing out, or the host probing
//! a device), the target and the flags as evidence.

use super::{
    Context, Detector, Observation,
    finding::{Finding, FlowRef, Matrix, Metric, Technique},
    scan,
};
use crate::flow::probe::{self, flag_probe};

/// How sure one probe makes the finding: the flags cannot come from a real connection, but a
/// broken middlebox or a capture that lost the first packets can look the same.
const CONFIDENCE: f64 = 0.9;

#[derive(Default)]
pub struct FlagProbe;

impl Detector for FlagProbe {
    fn name(&self) -> &'static str {
        "scan_flag_probe"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        let Some(kind) = flag_probe(r) else { return };
        let (_, target) = probe::opener_and_target(r);
        let (subject, facts) = scan::opener(r, ctx);
        let mut f = Finding::new(
            "scan_flag_probe",
            &subject,
            r.first_seen_ns,
            scan::severity(&facts, r, ctx),
            CONFIDENCE,
            Technique::new("T1046", "Network Service Discovery", Matrix::Enterprise),
        );
        f.peer = Some(target);
        let first = r.tcp_flags.map_or(0, |t| t.first);
        f.summary = format!(
            "{} sent a TCP {} probe (flags 0x{first:02x}) to {target}:{}: no TCP stack opens a connection that way",
            subject.name,
            kind.as_str(),
            r.port
        );
        if let Some(a) = scan::action(&subject, &facts) {
            f.action = a;
        }
        f.flows.push(FlowRef::from_opener(r));
        f.evidence.window_start_ns = r.first_seen_ns;
        f.evidence.window_end_ns = r.last_seen_ns;
        f.evidence.metrics = vec![Metric::new("opening_tcp_flags", f64::from(first))];
        f.evidence.ports = vec![r.port];
        f.evidence.peers = vec![target];
        f.evidence.names = vec![format!("tcp-{}", kind.as_str().to_ascii_lowercase())];
        out.push(f);
    }
}
