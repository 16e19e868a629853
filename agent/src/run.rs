//! The agent daemon: load or adopt the datapath, attach, apply the desired state (and re-apply
//! when its file changes or on SIGHUP), log events, and exit on SIGTERM leaving enforcement in
//! place (links and maps stay pinned).

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use wardgate_common::GatewayConfig;
use wardgate_policy::DesiredState;

use crate::{
    alerts::{AlertQueue, Outbox},
    config::{Action, AgentConfig, VlanAction},
    datapath::{ApplyOutcome, Datapath},
};

fn gateway_config(cfg: &AgentConfig) -> GatewayConfig {
    let action = |a: Action| match a {
        Action::Pass => wardgate_common::ACTION_PASS,
        Action::Drop => wardgate_common::ACTION_DROP,
    };
    GatewayConfig {
        unknown_action: action(cfg.unknown_devices),
        non_ip_action: action(cfg.non_ip),
        event_rate: cfg.events.rate_per_s,
        event_burst: cfg.events.burst,
        vlan_action: match cfg.vlan_tagged {
            VlanAction::Enforce => wardgate_common::ACTION_PASS,
            VlanAction::Drop => wardgate_common::ACTION_DROP,
        },
        _pad: 0,
    }
}

/// Loads a desired-state file; a missing file is `None` (nothing to apply yet).
pub fn read_desired(path: &Path) -> anyhow::Result<Option<DesiredState>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let state = DesiredState::from_json(&text)
        .with_context(|| format!("parsing desired state {}", path.display()))?;
    Ok(Some(state))
}

/// Sets up the datapath for `cfg` (load/adopt, config, management allowlist, attach).
pub fn prepare(cfg: &AgentConfig) -> anyhow::Result<Datapath> {
    let mut dp = Datapath::load(&cfg.pin_root)?;
    dp.set_gateway_config(&gateway_config(cfg))?;
    dp.set_management(&cfg.management)?;
    for iface in &cfg.interfaces {
        let outcome = dp.attach(iface)?;
        tracing::info!(iface, ?outcome, "datapath attached");
    }
    let (slot, generation) = dp.active()?;
    tracing::info!(slot, generation, "active policy generation");
    Ok(dp)
}

fn apply_file(
    dp: &mut Datapath,
    path: &Path,
    tx: &watch::Sender<Option<Arc<DesiredState>>>,
) -> anyhow::Result<()> {
    let Some(state) = read_desired(path)? else {
        tracing::warn!(path = %path.display(), "no desired state yet; keeping what is enforced");
        return Ok(());
    };
    match dp.apply(&state)? {
        ApplyOutcome::Unchanged { generation } => {
            tracing::info!(generation, "desired state already active")
        }
        ApplyOutcome::Switched {
            from,
            to,
            slot,
            entries,
        } => {
            tracing::info!(from, to, slot, entries, "policy generation switched")
        }
    }
    tx.send_replace(Some(Arc::new(state)));
    Ok(())
}

fn mtime(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The alert outbox at `path`. One that cannot be opened must not stop enforcement: the agent
/// says so and keeps alerts in memory only.
fn open_outbox(path: &Path) -> Arc<AlertQueue> {
    let outbox = match Outbox::open(path) {
        Ok(o) => {
            tracing::info!(path = %path.display(), pending = o.len(), "alert outbox opened");
            o
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "alert outbox unusable; alerts are kept in memory only until it is fixed"
            );
            Outbox::default()
        }
    };
    AlertQueue::new(outbox)
}

pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let mut dp = prepare(&cfg)?;
    let (tx, rx) = watch::channel(None);
    let ring = dp.take_events()?;
    // Alerts go to the controller only when there is one; the agent logs every event anyway.
    let alerts = cfg
        .controller
        .as_ref()
        .map(|c| open_outbox(&c.outbox_path(&cfg.desired_state)));
    let reader_alerts = alerts.clone();
    let reader = tokio::spawn(async move {
        if let Err(e) = crate::events::read_events(ring, rx, reader_alerts).await {
            tracing::error!(error = format!("{e:#}"), "event reader stopped");
        }
    });

    // A bad desired state is logged and the current policy stays: never fail open or closed
    // because a file was wrong.
    if let Err(e) = apply_file(&mut dp, &cfg.desired_state, &tx) {
        tracing::error!(error = format!("{e:#}"), "desired state not applied");
    }
    // Policy sync: the sync task writes bundles to the desired-state file and wakes us; we are
    // still the only map writer, and tell it what got applied.
    let (notify_tx, mut notify_rx) = tokio::sync::mpsc::channel::<()>(4);
    let (applied_tx, applied_rx) = tokio::sync::mpsc::channel(4);
    let sync = cfg.controller.clone().zip(alerts).map(|(c, alerts)| {
        let active = dp.active().map_or(0, |(_, g)| g);
        tokio::spawn(crate::sync::run(
            c,
            cfg.desired_state.clone(),
            active,
            notify_tx,
            applied_rx,
            alerts,
        ))
    });
    let mut seen = mtime(&cfg.desired_state);
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let (reapply, from_controller) = tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => (true, false),
            Some(()) = notify_rx.recv() => (true, true),
            _ = tick.tick() => {
                let now = mtime(&cfg.desired_state);
                let changed = now != seen;
                seen = now;
                (changed, false)
            }
        };
        if !reapply {
            continue;
        }
        seen = mtime(&cfg.desired_state);
        let result = apply_file(&mut dp, &cfg.desired_state, &tx);
        if let Err(e) = &result {
            tracing::error!(error = format!("{e:#}"), "desired state not applied");
        }
        if from_controller {
            let active = dp.active().map_or(0, |(_, g)| g);
            let error = result.err().map(|e| format!("{e:#}")).unwrap_or_default();
            let _ = applied_tx.try_send(crate::sync::Applied {
                generation: active,
                error,
            });
        }
    }
    if let Some(s) = sync {
        s.abort();
    }
    reader.abort();
    tracing::info!("stopping; datapath stays attached and enforcing (pinned)");
    Ok(())
}
