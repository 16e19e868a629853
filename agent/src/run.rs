//! The agent daemon: load or adopt the datapath, apply the last known desired state, and only
//! then attach (so no packet crosses an interface before the policy is in the maps); re-apply
//! when the file changes or on SIGHUP; keep every configured interface attached, with wardgate
//! first on its hooks (missing interfaces are retried, re-created ones re-attached); log events;
//! tell systemd when it is ready and, from the map-writer loop, that it is alive; on SIGTERM
//! take no new work, finish the flows the live table holds, flush the alert outbox and the flow
//! records (bounded), leave the conntrack entries in the previous release's layout too (for a
//! downgrade), and exit leaving enforcement in place (links and maps stay pinned).

use std::{
    collections::BTreeMap,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use wardgate_common::GatewayConfig;
use wardgate_policy::DesiredState;

use crate::{
    alerts::{AlertQueue, Outbox, OutboxLimits},
    beat::Beat,
    config::{Action, AgentConfig, FailMode, MgmtRule, VlanAction},
    datapath::{ApplyOutcome, Datapath, HookPosition},
};

/// How often every configured interface is checked (present, attached, wardgate first);
/// link changes reported by netlink wake the check at once.
pub const INTERFACE_POLL: Duration = Duration::from_secs(1);

/// On SIGTERM, how long the agent tries to deliver pending alerts before it exits (what is
/// left stays in the outbox file). The units' TimeoutStopSec leaves room for it.
pub const STOP_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// On SIGTERM, how long the flow reader may take to finish the flows it holds.
pub const FLOWS_STOP_LIMIT: Duration = Duration::from_secs(2);

/// A missing interface is logged again this often while it stays missing.
const MISSING_REMINDER: Duration = Duration::from_secs(60);

/// How long the start (before the map-writer loop beats) and the stop (after it) may keep the
/// heartbeat alive from a thread of their own ([`Beat`]); a start that takes longer lets the
/// fail-open watchdog fire. Loading the programs takes about a second.
pub const STARTUP_BEAT_LIMIT: Duration = Duration::from_secs(60);

/// At most this many netlink messages are read per wake-up of the map-writer loop: a flood of
/// link changes cannot keep it from beating (what is left is read on its next turn).
pub const LINK_MSGS_PER_WAKE: usize = 64;

/// Worker threads of the agent's runtime (at most; fewer on a smaller machine) and threads for
/// blocking work: the agent's threads stay well under the unit's `TasksMax=` on any gateway
/// (tokio would otherwise start one worker per CPU).
pub const WORKER_THREADS: usize = 4;
pub const BLOCKING_THREADS: usize = 8;

/// The runtime `wardgate-agent run` runs on: a bounded number of threads.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus.clamp(1, WORKER_THREADS))
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
}

/// The gateway config written to the datapath; `held`: no policy is in the maps yet and
/// `fail_mode` holds device traffic (unknown devices dropped, and non-IP too when closed).
fn gateway_config(cfg: &AgentConfig, held: bool) -> GatewayConfig {
    let action = |a: Action| match a {
        Action::Pass => wardgate_common::ACTION_PASS,
        Action::Drop => wardgate_common::ACTION_DROP,
    };
    let (unknown, non_ip) = match (held, cfg.fail_mode) {
        (false, _) | (true, FailMode::Open) => (cfg.unknown_devices, cfg.non_ip),
        (true, FailMode::Hold) => (Action::Drop, cfg.non_ip),
        (true, FailMode::Closed) => (Action::Drop, Action::Drop),
    };
    GatewayConfig {
        unknown_action: action(unknown),
        non_ip_action: action(non_ip),
        event_rate: cfg.events.rate_per_s,
        event_burst: cfg.events.burst,
        vlan_action: match cfg.vlan_tagged {
            VlanAction::Enforce => wardgate_common::ACTION_PASS,
            VlanAction::Drop => wardgate_common::ACTION_DROP,
        },
        heartbeat_limit_ms: cfg.watchdog.heartbeat_limit_ms,
        recording_off: u32::from(!cfg.recording.enabled),
        _pad: 0,
        inspect_ports_be: crate::datapath::convert::inspect_ports(&cfg.recording.inspect_ports),
    }
}

/// What a device needs from the gateway before its policy arrives and `fail_mode: hold`
/// drops everything else: DHCPv4 (server port 67, client port 68) and DHCPv6 (547, 546), as
/// management flows (any address: a DISCOVER comes from 0.0.0.0 to 255.255.255.255, a renewal
/// goes to the server's address). ARP and IPv6 ND pass in the datapath without a policy.
fn dhcp_rules() -> Vec<MgmtRule> {
    let any4: ipnet::IpNet = "0.0.0.0/0".parse().expect("valid prefix");
    let any6: ipnet::IpNet = "::/0".parse().expect("valid prefix");
    [(any4, 67), (any4, 68), (any6, 547), (any6, 546)]
        .into_iter()
        .map(|(cidr, port)| MgmtRule {
            cidr,
            proto: wardgate_policy::Proto::Udp,
            port,
        })
        .collect()
}

/// The management allowlist written to the datapath: the configured one, and DHCP while
/// `fail_mode: hold` holds device traffic.
fn management(cfg: &AgentConfig, held: bool) -> Vec<MgmtRule> {
    let mut rules = cfg.management.clone();
    if held && cfg.fail_mode == FailMode::Hold {
        rules.extend(dhcp_rules());
    }
    rules
}

/// Whether device traffic is held (`fail_mode` hold or closed, and no generation in the
/// maps), and ending that once the first generation is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held(pub bool);

impl Held {
    /// After a successful apply: a generation is in the maps now, so the configured defaults
    /// (`unknown_devices`, `non_ip`, the management allowlist without DHCP) take over.
    fn release(&mut self, dp: &mut Datapath, cfg: &AgentConfig) -> anyhow::Result<()> {
        if !self.0 {
            return Ok(());
        }
        let (_, generation) = dp.active()?;
        if generation == 0 {
            return Ok(());
        }
        dp.set_gateway_config(&gateway_config(cfg, false))
            .context("releasing held device traffic: gateway config")?;
        dp.set_management(&management(cfg, false))
            .context("releasing held device traffic: management allowlist")?;
        self.0 = false;
        tracing::info!(
            generation,
            fail_mode = cfg.fail_mode.name(),
            unknown_devices = ?cfg.unknown_devices,
            "first policy generation applied: device traffic no longer held"
        );
        Ok(())
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

/// Sets up the datapath for `cfg`, in the order that leaves no unfiltered window: load/adopt
/// the maps, gateway config, management allowlist, the last known desired state (the file, if
/// any), and only then attach. An interface that does not exist yet is left to the interface
/// checks; another TCX program running before wardgate on a hook refuses the start.
///
/// With no generation in the maps (first boot: empty bpffs) and none in the file, `fail_mode`
/// hold or closed makes unknown devices (every device, without a policy) dropped until the
/// first generation is applied ([`Held::release`]).
///
/// `starting` is the start's beat thread; on a first boot there is none (no pinned heartbeat
/// before the load) and one starts right after the load, so the rest of the start (applying
/// the file, attaching, opening the outbox) cannot let the heartbeat go stale either.
pub fn prepare(
    cfg: &AgentConfig,
    tx: &watch::Sender<Option<Arc<DesiredState>>>,
    starting: &mut Option<Beat>,
) -> anyhow::Result<(Datapath, Interfaces, Held)> {
    let mut dp = Datapath::load(&cfg.pin_root)?;
    // Beat before the config turns the watchdog on, so a restart never looks like a stall.
    dp.heartbeat()?;
    if starting.is_none() {
        *starting = Beat::start(
            &cfg.pin_root,
            cfg.watchdog.beat_every(),
            STARTUP_BEAT_LIMIT,
            "start",
        );
    }
    let (_, adopted) = dp.active()?;
    let mut held = Held(adopted == 0 && cfg.fail_mode != FailMode::Open);
    dp.set_gateway_config(&gateway_config(cfg, held.0))?;
    dp.set_management(&management(cfg, held.0))?;
    // A bad desired state is logged and the current policy stays: never fail open or closed
    // because a file was wrong.
    if let Err(e) = apply_file(&mut dp, &cfg.desired_state, tx) {
        tracing::error!(error = format!("{e:#}"), "desired state not applied");
    }
    held.release(&mut dp, cfg)?;
    if held.0 {
        let until = if cfg.controller.is_some() {
            "the controller's first generation".to_string()
        } else {
            format!("{} holds a valid generation", cfg.desired_state.display())
        };
        tracing::warn!(
            "no last-known-good policy: holding device traffic until {until} (fail_mode: {})",
            cfg.fail_mode.name()
        );
    }
    let mut interfaces = Interfaces::new(&cfg.interfaces);
    interfaces.start(&mut dp)?;
    // Every interface runs this release's programs now: what the previous release's opened
    // meanwhile is copied too, and its conntrack map unpinned.
    if let Some(m) = dp.finish_migration()? {
        tracing::info!(
            copied = m.copied,
            "conntrack migration finished; previous release's map unpinned"
        );
    }
    let (slot, generation) = dp.active()?;
    tracing::info!(slot, generation, "active policy generation");
    Ok((dp, interfaces, held))
}

/// What the agent last saw of one configured interface.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// Not checked yet.
    Unknown,
    /// No such interface; `logged` is when that was last said, `was` the index it had when
    /// it was last attached (if it ever was).
    Missing { logged: Instant, was: Option<u32> },
    /// Attached at this index, wardgate first on both hooks.
    Enforcing { ifindex: u32 },
    /// Attached at this index, but another program runs first on a hook; what was logged
    /// about it, and when.
    Preceded {
        ifindex: u32,
        message: String,
        logged: Instant,
    },
}

/// While another program runs before wardgate, the error is repeated this often (and at once
/// when it changes); every check counts it.
const PRECEDED_REMINDER: Duration = Duration::from_secs(60);

/// Keeps every configured interface attached, with wardgate first on both hooks.
#[derive(Debug)]
pub struct Interfaces {
    seen: BTreeMap<String, Seen>,
    /// Checks that found another TCX program before wardgate (each hook, each check).
    pub order_violations: u64,
}

impl Interfaces {
    pub fn new(names: &[String]) -> Self {
        Interfaces {
            seen: names.iter().map(|n| (n.clone(), Seen::Unknown)).collect(),
            order_violations: 0,
        }
    }

    /// The first check, at start: attaches what exists, and refuses to run if another program
    /// precedes wardgate on any hook. Missing interfaces are logged and left to `check`.
    pub fn start(&mut self, dp: &mut Datapath) -> anyhow::Result<()> {
        let names: Vec<String> = self.seen.keys().cloned().collect();
        for iface in names {
            if let Some(refusal) = self.check_one(dp, &iface, true)? {
                anyhow::bail!(refusal);
            }
        }
        Ok(())
    }

    /// A later check (every `INTERFACE_POLL`, and on netlink link changes): attaches interfaces
    /// that appeared, re-attaches re-created ones, and logs (loudly, and counts) any program
    /// that runs before wardgate. Errors are logged and retried on the next check.
    pub fn check(&mut self, dp: &mut Datapath) {
        let names: Vec<String> = self.seen.keys().cloned().collect();
        for iface in names {
            if let Err(e) = self.check_one(dp, &iface, false) {
                tracing::error!(
                    iface,
                    error = format!("{e:#}"),
                    "interface check failed; retrying"
                );
            }
        }
    }

    /// Checks one interface; at start an error is fatal, and `Some(message)` is a refusal.
    fn check_one(
        &mut self,
        dp: &mut Datapath,
        iface: &str,
        at_start: bool,
    ) -> anyhow::Result<Option<String>> {
        let before = self.seen[iface].clone();
        let Some(mut hooks) = dp.hooks(iface)? else {
            let now = Instant::now();
            let (say, was) = match before {
                Seen::Missing { logged, was } => {
                    (now.duration_since(logged) >= MISSING_REMINDER, was)
                }
                Seen::Enforcing { ifindex } | Seen::Preceded { ifindex, .. } => {
                    (true, Some(ifindex))
                }
                Seen::Unknown => (true, None),
            };
            if say {
                tracing::warn!(
                    iface,
                    retry_every = ?INTERFACE_POLL,
                    "interface does not exist; enforcing the other interfaces and attaching \
                     this one as soon as it appears"
                );
            }
            let logged = match before {
                Seen::Missing { logged, .. } if !say => logged,
                _ => now,
            };
            self.seen
                .insert(iface.to_string(), Seen::Missing { logged, was });
            return Ok(None);
        };
        let absent = |hooks: &crate::datapath::InterfaceHooks| -> Vec<&'static str> {
            hooks
                .hooks
                .iter()
                .filter(|(_, p)| *p == HookPosition::Absent)
                .map(|(h, _)| *h)
                .collect()
        };
        let missing = absent(&hooks);
        if !missing.is_empty() {
            let ifindex = hooks.ifindex;
            // A pinned link that still reaches the interface is adopted (its program replaced in
            // place, no gap): at start, where our freshly loaded programs are on no hook yet, and
            // if another process replaced ours. One left defunct by a deleted interface cannot
            // be updated: its pin is removed and a new link attached first and pinned.
            let outcome = dp.attach(iface)?;
            let Some(mut now) = dp.hooks(iface)? else {
                // Gone again already; the next check sees it.
                return Ok(None);
            };
            let still = absent(&now);
            if !still.is_empty() {
                // An adopted link that no longer reaches its interface.
                dp.reattach(iface, &still)?;
                now = dp
                    .hooks(iface)?
                    .ok_or_else(|| anyhow::anyhow!("{iface} vanished"))?;
            }
            match before {
                Seen::Enforcing { ifindex: old }
                | Seen::Preceded { ifindex: old, .. }
                | Seen::Missing { was: Some(old), .. }
                    if old != ifindex =>
                {
                    tracing::warn!(iface, old_ifindex = old, ifindex, hooks = ?missing,
                        "interface re-created; datapath re-attached")
                }
                Seen::Enforcing { .. }
                | Seen::Preceded { .. }
                | Seen::Missing { was: Some(_), .. } => {
                    tracing::warn!(iface, ifindex, hooks = ?missing,
                        "datapath was detached from the interface; re-attached")
                }
                Seen::Missing { .. } => {
                    tracing::info!(
                        iface,
                        ifindex,
                        ?outcome,
                        "interface appeared; datapath attached"
                    )
                }
                Seen::Unknown => tracing::info!(iface, ifindex, ?outcome, "datapath attached"),
            }
            hooks = now;
        }
        let mut messages = Vec::new();
        for (hook, position) in &hooks.hooks {
            match position {
                HookPosition::First => {}
                HookPosition::Absent => {
                    anyhow::bail!("{iface} {hook}: still not attached after attaching")
                }
                HookPosition::After(others) => {
                    self.order_violations += 1;
                    let list = others
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    messages.push(format!(
                        "{iface} {hook}: TCX program {list} runs before wardgate; wardgate must \
                         be first on the hook (a program before it decides what devices can \
                         reach). Detach it (`bpftool net show dev {iface}`)"
                    ));
                }
            }
        }
        let ifindex = hooks.ifindex;
        if messages.is_empty() {
            if matches!(before, Seen::Preceded { .. }) {
                tracing::info!(iface, "wardgate is first on the interface's hooks again");
            }
            self.seen
                .insert(iface.to_string(), Seen::Enforcing { ifindex });
            return Ok(None);
        }
        let message = messages.join("; ");
        if at_start {
            let refusal = format!("{message}; then start the agent again. Refusing to start");
            tracing::error!(iface, "{refusal}");
            return Ok(Some(refusal));
        }
        let now = Instant::now();
        let logged = match &before {
            Seen::Preceded {
                message: said,
                logged,
                ..
            } if *said == message && now.duration_since(*logged) < PRECEDED_REMINDER => *logged,
            _ => {
                tracing::error!(
                    iface,
                    violations = self.order_violations,
                    "{message}; still enforcing behind it, checked again every {INTERFACE_POLL:?}"
                );
                now
            }
        };
        self.seen.insert(
            iface.to_string(),
            Seen::Preceded {
                ifindex,
                message,
                logged,
            },
        );
        Ok(None)
    }
}

/// A netlink socket subscribed to link changes (RTMGRP_LINK) in the agent's network
/// namespace, so a new or re-created interface is attached at once rather than at the next
/// poll. `None` if it cannot be opened (the poll still covers it).
fn link_changes() -> Option<tokio::io::unix::AsyncFd<OwnedFd>> {
    // Safety: plain socket calls; the fd is owned by OwnedFd from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "no netlink link events; polling only");
        return None;
    }
    // Safety: fd is a fresh socket we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Safety: zeroed sockaddr_nl is valid; we set family and groups.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = libc::RTMGRP_LINK as u32;
    // Safety: valid fd and address of the right size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "no netlink link events; polling only");
        return None;
    }
    // Safety: the OwnedFd is moved into the AsyncFd and stays open, the same socket, until
    // the AsyncFd drops.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .inspect_err(|e| tracing::warn!(error = %e, "no netlink link events; polling only"))
        .ok()
}

/// Waits for link changes and reads them, at most `LINK_MSGS_PER_WAKE` (their content does not
/// matter: any change triggers a check of every interface); if more are waiting the socket
/// stays ready, so the map-writer loop comes back for them after its other work. Never
/// resolves without a socket.
async fn link_changed(nl: Option<&tokio::io::unix::AsyncFd<OwnedFd>>) {
    let Some(nl) = nl else {
        return std::future::pending().await;
    };
    let Ok(mut guard) = nl.readable().await else {
        return std::future::pending().await;
    };
    let mut buf = [0u8; 8192];
    for _ in 0..LINK_MSGS_PER_WAKE {
        // Safety: valid fd and buffer.
        let n = unsafe {
            libc::recv(
                nl.get_ref().as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                guard.clear_ready();
                return;
            }
            // ENOBUFS (events overflowed): a check follows anyway.
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                guard.clear_ready();
                return;
            }
        }
    }
    // More may be waiting: the socket stays ready and is read again on a later turn.
}

/// Applies the desired-state file. A file whose generation is the active one but whose content
/// differs from what was applied from it (edited without raising the generation), or at start
/// from what the pinned maps hold ([`Datapath::holds`]), is applied as a replacement
/// ([`Datapath::replace`]: written in full into the other slot, switched, flows re-checked),
/// and said so: the maps, the event names and the detectors' site then all hold the
/// new content. Never half-published: the state goes to the other tasks only once the maps
/// hold it.
fn apply_file(
    dp: &mut Datapath,
    path: &Path,
    tx: &watch::Sender<Option<Arc<DesiredState>>>,
) -> anyhow::Result<()> {
    let Some(state) = read_desired(path)? else {
        tracing::warn!(path = %path.display(), "no desired state yet; keeping what is enforced");
        return Ok(());
    };
    let (_, active) = dp.active()?;
    let applied = tx.borrow().clone();
    let replace = if state.generation != active {
        false
    } else if let Some(cur) = applied {
        // Edited since this agent applied it, keeping the number.
        let edited = cur.generation == state.generation && *cur != state;
        if edited {
            tracing::warn!(
                path = %path.display(),
                generation = state.generation,
                "desired state file changed but kept the active generation number: applying its \
                 content as a replacement of generation {} (raise the generation with each \
                 change)",
                state.generation
            );
        }
        edited
    } else {
        // At start: the pinned maps hold this number; read back whether they hold this content
        // (a file edited while the agent was stopped, or a copy of another store's generation).
        let differs = !dp
            .holds(&state)
            .with_context(|| format!("comparing {} with the pinned maps", path.display()))?;
        if differs {
            tracing::warn!(
                path = %path.display(),
                generation = state.generation,
                "the pinned maps hold generation {} with other content than the desired state \
                 file: applying the file as a replacement (raise the generation with each change)",
                state.generation
            );
        }
        differs
    };
    let outcome = if replace {
        dp.replace(&state)
    } else {
        dp.apply(&state)
    }
    .with_context(|| {
        format!(
            "applying generation {} from {}",
            state.generation,
            path.display()
        )
    })?;
    match outcome {
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

/// What is enforced, as the controller names it: the last applied state's generation, epoch
/// and content hash when it is the active generation, else the active generation alone (the
/// controller then sends its latest).
fn holding(
    dp: &mut Datapath,
    tx: &watch::Sender<Option<Arc<DesiredState>>>,
) -> crate::sync::Holding {
    let active = dp.active().map_or(0, |(_, g)| g);
    match tx.borrow().as_deref() {
        Some(s) if s.generation == active => crate::sync::Holding::of(s),
        _ => crate::sync::Holding {
            generation: active,
            ..Default::default()
        },
    }
}

/// Applies a bundle from the controller. A generation whose number is the active one but whose
/// epoch or content differs (another store) replaces it.
fn apply_bundle(
    dp: &mut Datapath,
    state: &Arc<DesiredState>,
    tx: &watch::Sender<Option<Arc<DesiredState>>>,
) -> anyhow::Result<()> {
    let same = tx
        .borrow()
        .as_deref()
        .is_some_and(|cur| crate::sync::Holding::of(cur) == crate::sync::Holding::of(state));
    let outcome = if same {
        dp.apply(state)?
    } else {
        dp.replace(state)?
    };
    match outcome {
        ApplyOutcome::Unchanged { generation } => {
            tracing::info!(generation, "policy already active")
        }
        ApplyOutcome::Switched {
            from,
            to,
            slot,
            entries,
        } => {
            tracing::info!(
                from,
                to,
                slot,
                entries,
                epoch = state.epoch,
                "policy generation switched"
            )
        }
    }
    tx.send_replace(Some(state.clone()));
    Ok(())
}

/// Keeps an applied generation as the last-known-good file (written and fsynced only once it
/// is in the maps, within `limits.state_bytes`). A write that is refused or fails is counted
/// and returned, but enforcement never waits for it.
fn keep_last_known_good(
    state: &DesiredState,
    path: &Path,
    budget: u64,
    live: &crate::metrics::Live,
) -> anyhow::Result<()> {
    crate::lkg::write(path, state, budget)
        .map(drop)
        .inspect_err(|_| live.disk_write_refused(crate::limits::FILE_STATE, 1))
        .context("policy applied, but the last-known-good copy was not written")
}

fn mtime(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The alert outbox at `path`, bounded by `limits`. One that cannot be opened must not stop
/// enforcement: the agent says so and keeps alerts in memory only.
fn open_outbox(path: &Path, limits: OutboxLimits) -> Arc<AlertQueue> {
    let outbox = match Outbox::open_with(path, limits) {
        Ok(o) => {
            tracing::info!(path = %path.display(), pending = o.len(), "alert outbox opened");
            o
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "alert outbox unusable; alerts are kept in memory only until it is fixed"
            );
            Outbox::with_limits(limits)
        }
    };
    AlertQueue::new(outbox)
}

/// How often each device's live flows are recounted: the walk of the conntrack map
/// (`datapath::count_live`) runs on a blocking thread, off the map-writer loop (in the loop it
/// delayed the heartbeat by hundreds of ms: the netns restart test at a 300 ms heartbeat limit
/// saw the watchdog fire), and the loop applies its counts (`Datapath::apply_recount`). Every
/// 30 s, and not in the first 30 s after a start.
const FLOW_RECOUNT_EVERY: Duration = Duration::from_secs(30);

/// Flows on grace (do-not-disrupt) as the recount found them: the gauge, and one log line per
/// generation that leaves flows on grace (and one when the last grace ended). A log line, not
/// an alert: a grace is the policy working as the operator configured it, nothing a SOC
/// must triage; the datapath grants it flow by flow, and the recount is where the agent sees
/// them all at once, so one line per generation says how many and on which devices
/// (`wardgate-agent status` lists each flow).
#[derive(Debug, Default)]
struct GraceReport {
    /// The generation last reported with flows on grace (0: none on grace).
    reported: u32,
}

impl GraceReport {
    fn report(
        &mut self,
        counts: &crate::datapath::LiveCounts,
        generation: u32,
        gauge: &prometheus_client::metrics::gauge::Gauge,
    ) {
        let n = counts.on_grace();
        gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
        if n == 0 {
            if self.reported != 0 {
                tracing::info!(generation, "no flow left on grace");
            }
            self.reported = 0;
        } else if self.reported != generation {
            self.reported = generation;
            let devices: Vec<String> = counts
                .grace
                .iter()
                .map(|(d, n)| format!("{d}:{n}"))
                .collect();
            tracing::warn!(
                generation,
                flows = n,
                devices = devices.join(","),
                "generation {generation} denies {n} established flows kept on grace \
                 (do-not-disrupt; `wardgate-agent status` lists them)"
            );
        }
    }
}

pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    // SIGTERM and SIGHUP are taken first: one that comes during the start (systemd stopping an
    // agent that is still loading) is handled when the map-writer loop begins, a clean stop,
    // instead of the default action killing the process half started.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    // The open-file limit of the config (the unit sets the same as LimitNOFILE=): a leak of
    // descriptors fails the agent's own opens, never the datapath, which holds none of them.
    match crate::limits::set_open_files(cfg.limits.open_files) {
        Ok(n) if n < cfg.limits.open_files => tracing::warn!(
            limit = n,
            configured = cfg.limits.open_files,
            "open-file limit lower than limits.open_files (the hard limit): raise LimitNOFILE="
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "open-file limit not set"),
    }
    // A restart: the pinned heartbeat is written at once, before the programs are verified and
    // loaded, and kept beating until the map-writer loop takes over, so fail-open devices stay
    // enforced across it.
    let mut starting = Beat::start(
        &cfg.pin_root,
        cfg.watchdog.beat_every(),
        STARTUP_BEAT_LIMIT,
        "start",
    );
    let (tx, rx) = watch::channel(None);
    // Subscribed before the first check, so no link change between the two is missed.
    let nl = link_changes();
    let (mut dp, mut interfaces, mut held) = prepare(&cfg, &tx, &mut starting)?;
    let ring = dp.take_events()?;
    let flow_rings = crate::flows::Rings {
        flows: dp.take_flows()?,
        payload: dp.take_payload()?,
    };
    let ct = crate::flows::CtReader::open(dp.pin_root())?.with_cache(dp.take_flow_cache()?);
    // `dns:` peers: the held answers' reader, the only writer of the learned-address map.
    let dns_ring = dp.take_dns_answers()?;
    let learner = crate::dns::Learner::new(
        cfg.dns,
        crate::datapath::dns::LearnedAddrs::open(dp.pin_root())?,
    )
    .map_err(|e| anyhow::anyhow!("opening the DNS answer socket: {e}"))?;
    let dns_state = tx.subscribe();
    tokio::spawn(async move {
        if let Err(e) = crate::dns::run(dns_ring, learner, dns_state).await {
            tracing::error!(error = format!("{e:#}"), "DNS learner stopped");
        }
    });
    let detection = detection(&cfg.detection)?;
    // Alerts go to the controller only when there is one; the agent logs every event anyway.
    let alerts = cfg.controller.as_ref().map(|c| {
        open_outbox(
            &c.outbox_path(&cfg.desired_state),
            OutboxLimits::of(&cfg.limits),
        )
    });
    let live = crate::metrics::Live::default();
    crate::metrics::start(&cfg, &live, alerts.clone(), tx.subscribe()).await;
    let grace_gauge = live.flows_on_grace.clone();
    // A passive copy of the devices' DNS messages: the detectors observe them, and the
    // resolvers' answers name the flows that follow them.
    let names = crate::dns::names::shared();
    let names_state = tx.subscribe();
    let (names_table, names_ifaces) = (names.clone(), cfg.interfaces.clone());
    let (dns_tx, dns_rx) = tokio::sync::mpsc::channel(crate::flows::DNS_QUEUE);
    let to_detectors = crate::dns::names::ToDetectors {
        queue: dns_tx,
        dropped: live.dns_messages_dropped.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) =
            crate::dns::names::run(names_ifaces, names_table, to_detectors, names_state).await
        {
            tracing::error!(error = format!("{e:#}"), "DNS name watcher stopped");
        }
    });
    let flow_alerts = alerts.clone();
    // Flow records go to the controller when there is one.
    let flow_queue = cfg
        .controller
        .as_ref()
        .map(|_| crate::flow_report::FlowQueue::new(cfg.limits.flow_records, live.clone()));
    // Usage of every bounded resource, into the metrics, warned at 80% of its limit.
    let usage = tokio::spawn(
        crate::limits::Usage::new(
            cfg.limits,
            live.clone(),
            alerts.clone(),
            flow_queue.clone(),
            cfg.controller.as_ref().map(|_| cfg.desired_state.clone()),
        )
        .run(),
    );
    let flow_reporter = cfg
        .controller
        .clone()
        .zip(flow_queue.clone())
        .map(|(c, q)| {
            let every = c.flow_report_every();
            tokio::spawn(crate::flow_report::Reporter::new(c, q).run(every))
        });
    let report_queue = flow_queue.clone();
    let flow_state = tx.subscribe();
    let (claims_tx, claims_rx) = tokio::sync::mpsc::channel(crate::flows::CLAIMS_QUEUE);
    let (flows_stop, stop_rx) = tokio::sync::oneshot::channel();
    let mut flows = tokio::spawn(async move {
        let cfg = crate::flows::LiveConfig::default();
        if let Err(e) = crate::flows::run(
            flow_rings,
            ct,
            crate::flows::Inputs {
                state: flow_state,
                claims: claims_rx,
                dns: dns_rx,
                stop: stop_rx,
            },
            crate::flows::Outputs {
                alerts: flow_alerts,
                records: report_queue,
                names: Some(names),
            },
            detection,
            cfg,
        )
        .await
        {
            tracing::error!(error = format!("{e:#}"), "flow reader stopped");
        }
    });
    let reader_alerts = alerts.clone();
    let reader_live = live.clone();
    let outbox = alerts.clone();
    let reader = tokio::spawn(async move {
        if let Err(e) =
            crate::events::read_events(ring, rx, reader_alerts, reader_live, claims_tx).await
        {
            tracing::error!(error = format!("{e:#}"), "event reader stopped");
        }
    });

    // Policy sync: the sync task hands each converted bundle to this loop, still the only map
    // writer, which applies it, keeps it as the last-known-good file, and says what got applied.
    // With a controller the file is only read at start; without one it is the operator's
    // input, re-read when it changes or on SIGHUP.
    let (bundle_tx, mut bundle_rx) = tokio::sync::mpsc::channel::<Arc<DesiredState>>(4);
    let (applied_tx, applied_rx) = tokio::sync::mpsc::channel(4);
    let managed = cfg.controller.is_some();
    let writer_live = live.clone();
    let sync = cfg.controller.clone().zip(alerts).map(|(c, alerts)| {
        let holding = holding(&mut dp, &tx);
        let health = crate::health::HealthSource::pinned(cfg.pin_root.clone(), tx.subscribe());
        tokio::spawn(crate::sync::run(
            c, holding, bundle_tx, applied_rx, alerts, live, health,
        ))
    });
    let mut seen = mtime(&cfg.desired_state);
    // systemd's watchdog is pinged from this loop, after a heartbeat that was written: a stuck
    // or failing map writer stops the pings and systemd restarts the agent.
    let watchdog = wardgate_daemon::notify::Watchdog::from_env();
    let mut wd_tick = watchdog.map(|w| tokio::time::interval(w.every()));
    // The datapath is loaded or adopted, the last desired state applied, and the interfaces
    // that exist attached (`prepare`), and SIGTERM is handled: only now is the agent ready.
    let (_, generation) = dp.active()?;
    wardgate_daemon::notify::ready(&if held.0 {
        format!(
            "holding device traffic until the first policy (fail_mode: {})",
            cfg.fail_mode.name()
        )
    } else {
        format!("enforcing generation {generation}")
    });
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut iface_tick = tokio::time::interval(INTERFACE_POLL);
    iface_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The heartbeat comes from this loop, the one map writer: if it is stuck, beats stop.
    let mut beat = tokio::time::interval(cfg.watchdog.beat_every());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The loop's first tick beats at once: the start's beat thread can stop.
    beat.tick().await;
    let mut beat_ok = dp
        .heartbeat()
        .inspect_err(|e| tracing::error!(error = format!("{e:#}"), "heartbeat not written"))
        .is_ok();
    drop(starting);
    // Flows that idled out or were evicted give their device's flow budget its place back.
    // Not at once: the first walk waits a period, off the start's busy seconds.
    let mut recount = tokio::time::interval_at(
        tokio::time::Instant::now() + FLOW_RECOUNT_EVERY,
        FLOW_RECOUNT_EVERY,
    );
    recount.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One walk at a time; its counts come back to the loop here.
    let (counted_tx, mut counted_rx) =
        tokio::sync::mpsc::channel::<Result<crate::datapath::LiveCounts, String>>(1);
    let mut walking = false;
    let mut grace = GraceReport::default();
    loop {
        let reapply = tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = beat.tick() => {
                beat_ok = dp.heartbeat().inspect_err(|e| tracing::error!(error = format!("{e:#}"), "heartbeat not written")).is_ok();
                false
            }
            () = tick_opt(wd_tick.as_mut()) => {
                if let (Some(w), true) = (watchdog, beat_ok) {
                    w.ping();
                }
                false
            }
            _ = recount.tick() => {
                if !walking {
                    walking = true;
                    let pin_root = cfg.pin_root.clone();
                    let tx = counted_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let counted = crate::datapath::count_live(&pin_root).map_err(|e| format!("{e:#}"));
                        let _ = tx.blocking_send(counted);
                    });
                }
                false
            }
            Some(counted) = counted_rx.recv() => {
                walking = false;
                if let Ok(c) = &counted {
                    grace.report(c, dp.active().map_or(0, |(_, g)| g), &grace_gauge);
                }
                if let Err(e) = counted.and_then(|c| dp.apply_recount(&c).map(drop).map_err(|e| format!("{e:#}"))) {
                    tracing::warn!(error = e, "flow budgets not recounted");
                }
                false
            }
            _ = iface_tick.tick() => {
                interfaces.check(&mut dp);
                false
            }
            () = link_changed(nl.as_ref()) => {
                interfaces.check(&mut dp);
                false
            }
            _ = hup.recv() => {
                if managed {
                    tracing::info!("SIGHUP ignored: the policy comes from the controller");
                }
                !managed
            }
            Some(state) = bundle_rx.recv() => {
                // Enforcement first: the maps, and held traffic released; only then the file,
                // so a full disk never keeps a generation from being enforced.
                let error = match apply_bundle(&mut dp, &state, &tx)
                    .and_then(|()| held.release(&mut dp, &cfg))
                    .and_then(|()| keep_last_known_good(&state, &cfg.desired_state, cfg.limits.state_bytes.0, &writer_live))
                {
                    Ok(()) => String::new(),
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "policy from the controller not applied");
                        format!("{e:#}")
                    }
                };
                let _ = applied_tx.try_send(crate::sync::Applied {
                    holding: holding(&mut dp, &tx),
                    error,
                });
                false
            }
            _ = tick.tick(), if !managed => {
                let now = mtime(&cfg.desired_state);
                let changed = now != seen;
                seen = now;
                changed
            }
        };
        if !reapply {
            continue;
        }
        seen = mtime(&cfg.desired_state);
        if let Err(e) =
            apply_file(&mut dp, &cfg.desired_state, &tx).and_then(|()| held.release(&mut dp, &cfg))
        {
            tracing::error!(error = format!("{e:#}"), "desired state not applied");
        }
    }
    // Stop taking work: no more events read, nothing applied; then hand pending alerts over.
    // The heartbeat goes on until the process exits (bounded), so a restart does not look like
    // a stalled agent to the watchdog.
    let _stopping = Beat::start(
        &cfg.pin_root,
        cfg.watchdog.beat_every(),
        STARTUP_BEAT_LIMIT,
        "stop",
    );
    wardgate_daemon::notify::stopping("delivering pending alerts");
    reader.abort();
    // The flow reader finishes every flow it holds (their alerts join the outbox, their
    // records the reporter's queue, both sent below), bounded.
    let _ = flows_stop.send(());
    if tokio::time::timeout(FLOWS_STOP_LIMIT, &mut flows)
        .await
        .is_err()
    {
        tracing::warn!(limit = ?FLOWS_STOP_LIMIT, "flow reader did not finish its flows in time");
        flows.abort();
    }
    if let (Some(queue), Some(_)) = (&outbox, &sync) {
        let pending = queue.lock().len();
        let started = Instant::now();
        let left = queue.drain(STOP_FLUSH_LIMIT).await;
        tracing::info!(
            pending,
            delivered = pending - left,
            left,
            took_ms = started.elapsed().as_millis() as u64,
            "alert outbox flushed at stop; what is left is kept for the next start"
        );
    }
    if let Some(s) = sync {
        s.abort();
    }
    if let (Some(reporter), Some(queue), Some(c)) = (flow_reporter, flow_queue, &cfg.controller) {
        reporter.abort();
        let pending = queue.len();
        let left = crate::flow_report::Reporter::new(c.clone(), queue)
            .drain(STOP_FLUSH_LIMIT)
            .await;
        tracing::info!(pending, left, "flow records sent at stop");
    }
    usage.abort();
    // A downgrade (the binary on disk is now an older release's): new flows held first, so
    // that none opens in this release's map alone after the copy below.
    if let Some(older) = crate::downgrade::next_is_older() {
        match dp.hold_new_flows() {
            Ok(()) => tracing::info!(
                older,
                "downgrade: new flows held until the older agent's slow path is in place"
            ),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "downgrade: new flows not held"),
        }
    }
    // Last, so that it misses as few flows as it can: the conntrack entries in the previous
    // release's layout, should the next start be a downgrade (`migrate.rs`).
    match dp.keep_for_previous() {
        Ok(k) => tracing::info!(
            entries = k.entries,
            written = k.written,
            took_ms = k.took.as_millis() as u64,
            "conntrack kept in the previous release's layout"
        ),
        Err(e) => tracing::warn!(
            error = format!("{e:#}"),
            "conntrack not kept for the previous release: a downgrade would start its flows again"
        ),
    }
    tracing::info!("stopping; datapath stays attached and enforcing (pinned)");
    Ok(())
}

/// The detectors as configured: their parameters and the baselines, if any. A file that cannot
/// be read stops the start (the operator asked for it).
fn detection(
    cfg: &crate::config::DetectionConfig,
) -> anyhow::Result<(
    wardgate_analysis::detect::DetectConfig,
    wardgate_analysis::detect::Baselines,
)> {
    let params = match &cfg.config {
        Some(p) => crate::replay::read_config(p)?,
        None => wardgate_analysis::detect::DetectConfig::default(),
    };
    let baselines = match &cfg.baselines {
        Some(p) => {
            let b = crate::replay::read_baselines(p)?;
            tracing::info!(devices = b.len(), file = %p.display(), "baselines loaded");
            // The parse's scratch (each baseline's full form, freed as it is converted) leaves
            // free chunks that glibc keeps in its heap: give back what it can.
            // Safety: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
            b
        }
        None => wardgate_analysis::detect::Baselines::default(),
    };
    Ok((params, baselines))
}

/// The next tick of an optional interval (never, without one).
async fn tick_opt(tick: Option<&mut tokio::time::Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::GraceReport;
    use crate::datapath::LiveCounts;

    #[test]
    fn flows_on_grace_set_the_gauge_and_are_reported_once_per_generation() {
        let gauge = prometheus_client::metrics::gauge::Gauge::default();
        let mut report = GraceReport::default();
        let mut counts = LiveCounts::default();
        counts.grace.insert(1, 2);
        counts.grace.insert(4, 1);
        report.report(&counts, 7, &gauge);
        assert_eq!((gauge.get(), report.reported), (3, 7));
        // The same generation again: already reported.
        counts.grace.insert(1, 1);
        report.report(&counts, 7, &gauge);
        assert_eq!((gauge.get(), report.reported), (2, 7));
        // A later generation that leaves flows on grace is reported again.
        report.report(&counts, 8, &gauge);
        assert_eq!(report.reported, 8);
        report.report(&LiveCounts::default(), 8, &gauge);
        assert_eq!((gauge.get(), report.reported), (0, 0));
    }
}
