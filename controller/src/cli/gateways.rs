//! `wardctl gateways`: each gateway's state in words (connected or not, which policy
//! generation it applied of the latest), its interfaces and last error. An applied generation
//! of another store epoch is marked: its number is not comparable.

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
        OutputFormat::Json => output::json(
            &gws.iter()
                .map(|g| serde_json::json!({"name": g.name, "interfaces": g.interfaces, "latest_generation": g.latest_generation, "applied_generation": g.applied_generation, "last_error": g.last_error, "applied_epoch": g.applied_epoch, "epoch": g.epoch}))
                .collect::<Vec<_>>(),
        )?,
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
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(&["gateway", "state", "location", "interfaces", "last error"], &rows)
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
}
