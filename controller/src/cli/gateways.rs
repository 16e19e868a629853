//! `wardctl gateways`: each gateway's state in words (connected or not, which policy
//! generation it applied of the latest), its interfaces and last error, and what its agent
//! reports: release and fail-open watchdog ("not reported" by an agent that reports none). An
//! applied generation of another store epoch is marked: its number is not comparable.

use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

use super::{
    output::{self, OutputFormat, or_dash},
    remote::Remote,
};

/// A gateway's state in words: `never connected`, `connected, up to date (generation 4)`.
pub fn status(g: &pb::Gateway) -> String {
    let other_store = !g.applied_epoch.is_empty() && g.applied_epoch != g.epoch;
    let link = if g.connected {
        "connected"
    } else if g.applied_generation == 0 && !other_store {
        return "never connected".to_string();
    } else {
        "not connected"
    };
    if other_store {
        return format!(
            "{link}, enforcing generation {} of another store (epoch {}); latest here {}",
            g.applied_generation, g.applied_epoch, g.latest_generation
        );
    }
    if g.applied_generation == 0 {
        return format!("{link}, no policy applied yet");
    }
    if g.applied_generation == g.latest_generation {
        format!("{link}, up to date (generation {})", g.applied_generation)
    } else {
        format!(
            "{link}, applied generation {} of {}",
            g.applied_generation, g.latest_generation
        )
    }
}

/// The watchdog as its agent reported it: `ok (fired 2, recovered 2)`, `FIRED since
/// 2026-12-06 20:01:02 UTC, 3 fail-open devices only monitored (fired 3, recovered 2)`, or
/// `not reported`.
pub fn watchdog(g: &pb::Gateway) -> String {
    let Some(h) = &g.health else {
        return "not reported".to_string();
    };
    let counts = format!(
        "(fired {}, recovered {})",
        h.watchdog_fired_count, h.watchdog_recovered_count
    );
    if !h.watchdog_fired {
        return format!("ok {counts}");
    }
    let since = match g.watchdog_fired_since_unix_ms {
        0 => String::new(),
        ms => format!(" since {}", crate::words::when(ms, false)),
    };
    format!(
        "FIRED{since}, {} fail-open devices only monitored {counts}",
        h.fail_open_devices
    )
}

/// A gateway as `--output json` gives it; the health fields are null when not reported.
fn json(g: &pb::Gateway) -> serde_json::Value {
    let h = g.health.as_ref();
    let ms = |v: i64| (v != 0).then_some(v);
    serde_json::json!({
        "name": g.name,
        "interfaces": g.interfaces,
        "latest_generation": g.latest_generation,
        "applied_generation": g.applied_generation,
        "last_error": g.last_error,
        "applied_epoch": g.applied_epoch,
        "epoch": g.epoch,
        "agent_version": h.map(|h| &h.agent_version),
        "watchdog": h.map(|h| serde_json::json!({
            "fired": h.watchdog_fired,
            "fired_since_unix_ms": ms(g.watchdog_fired_since_unix_ms),
            "fired_count": h.watchdog_fired_count,
            "recovered_count": h.watchdog_recovered_count,
            "fail_open_devices": h.fail_open_devices,
            "heartbeat_age_ms": h.heartbeat_age_ms,
        })),
        "health_received_unix_ms": ms(g.health_received_unix_ms),
    })
}

/// `wardctl gateways [list | enroll NAME | revoke NAME]`.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum GatewaysCmd {
    /// Each gateway's state (the default).
    List,
    /// A one-time enrollment token for a new gateway.
    Enroll(super::enroll::EnrollArgs),
    /// Revoke a gateway: no enrollment, renewal or sync under its name from now on.
    Revoke(super::revoke::RevokeArgs),
}

pub async fn run_cmd(
    cmd: Option<GatewaysCmd>,
    remote: &Remote,
    out: OutputFormat,
) -> anyhow::Result<()> {
    match cmd.unwrap_or(GatewaysCmd::List) {
        GatewaysCmd::List => run(remote, out).await,
        GatewaysCmd::Enroll(a) => super::enroll::run(a, remote, out).await,
        GatewaysCmd::Revoke(a) => super::revoke::run(a, remote, out).await,
    }
}

pub async fn run(remote: &Remote, out: OutputFormat) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(remote.channel().await?);
    let gws = c
        .list_gateways(pb::ListGatewaysRequest {})
        .await?
        .into_inner()
        .gateways;
    match out {
        OutputFormat::Json => output::json(&gws.iter().map(json).collect::<Vec<_>>())?,
        OutputFormat::Human => {
            let rows: Vec<Vec<String>> = gws
                .iter()
                .map(|g| {
                    vec![
                        g.name.clone(),
                        status(g),
                        or_dash(&g.location),
                        g.interfaces.join(","),
                        or_dash(&g.last_error),
                        g.health
                            .as_ref()
                            .map_or("not reported".into(), |h| or_dash(&h.agent_version)),
                        watchdog(g),
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(
                    &[
                        "gateway",
                        "state",
                        "location",
                        "interfaces",
                        "last error",
                        "release",
                        "watchdog"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_that_never_connected_says_so() {
        let mut g = pb::Gateway {
            name: "gw".into(),
            latest_generation: 3,
            epoch: "e1".into(),
            ..Default::default()
        };
        assert_eq!(status(&g), "never connected");
        g.connected = true;
        assert_eq!(status(&g), "connected, no policy applied yet");
        g.applied_generation = 2;
        g.applied_epoch = "e1".into();
        assert_eq!(status(&g), "connected, applied generation 2 of 3");
        g.applied_generation = 3;
        assert_eq!(status(&g), "connected, up to date (generation 3)");
        g.connected = false;
        assert_eq!(status(&g), "not connected, up to date (generation 3)");
        g.applied_epoch = "e0".into();
        assert!(status(&g).contains("of another store (epoch e0)"));
    }

    #[test]
    fn the_watchdog_says_what_the_agent_reported() {
        let mut g = pb::Gateway {
            name: "gw".into(),
            ..Default::default()
        };
        assert_eq!(watchdog(&g), "not reported");
        assert!(json(&g)["agent_version"].is_null());
        assert!(json(&g)["watchdog"].is_null());
        g.health = Some(pb::GatewayHealth {
            agent_version: "0.9.1".into(),
            watchdog_fired_count: 2,
            watchdog_recovered_count: 2,
            fail_open_devices: 3,
            ..Default::default()
        });
        g.health_received_unix_ms = 1_765_000_000_000;
        assert_eq!(watchdog(&g), "ok (fired 2, recovered 2)");
        g.health.as_mut().unwrap().watchdog_fired = true;
        g.health.as_mut().unwrap().watchdog_fired_count = 3;
        g.watchdog_fired_since_unix_ms = 1_765_000_000_000;
        let w = watchdog(&g);
        assert!(w.starts_with("FIRED since "), "{w}");
        assert!(
            w.ends_with(", 3 fail-open devices only monitored (fired 3, recovered 2)"),
            "{w}"
        );
        let j = json(&g);
        assert_eq!(j["agent_version"], "0.9.1");
        assert_eq!(j["watchdog"]["fired"], true);
        assert_eq!(j["watchdog"]["fired_since_unix_ms"], 1_765_000_000_000_i64);
        assert_eq!(j["health_received_unix_ms"], 1_765_000_000_000_i64);
    }
}
