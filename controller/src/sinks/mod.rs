//! SOC sinks: each reads the alert store from its own cursor (the last sequence number it
//! delivered, kept in the store's `sink_cursors`), delivers a batch, then advances the cursor.
//! A controller restart therefore neither loses nor repeats: alerts stored while a sink (or
//! the controller) was down are delivered when it is back, and what was delivered is not sent
//! again. A crash between a delivery and its cursor update would send that one batch again:
//! an OCSF file says what it holds (each line carries its store sequence number), so the
//! controller that delivers next moves the cursor past it first ([`resume`]) and the file gets
//! each alert exactly once. A syslog collector cannot be asked: it gets the batch again
//! (at-least-once), and drops the repeat by its id (CEF `externalId`), which is `GATEWAY/ID`
//! and never changes. An aggregated alert that grows is
//! stored again under a new sequence number (its creation row stays), so each sink delivers
//! the alert once as new and each update once as an update.
//!
//! Several controllers on one database (PostgreSQL) each run every configured sink, but a
//! sink delivers only while its controller holds the sink's lease in the store, and moves its
//! cursor only while it still does: each alert goes out once across the controllers, and a
//! dead controller's sinks are taken over [`LEASE`] after its last renewal (its batch cut off
//! between delivery and cursor is resumed as after a restart).
//!
//! The formats are the analysis crate's (pure); the sinks here are I/O only. Each sink runs in
//! its own task with its own bounded reconnect backoff, so one that is down holds up neither
//! the others nor the controller.

pub mod checkpoints;
mod ocsf;
mod syslog;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;

use tokio::{sync::watch, task::JoinHandle};
use wardgate_analysis::detect::Finding;

use crate::{
    alerts,
    audit::checkpoint::Signed,
    config::{SinkConfig, SinkKind},
    metrics::ControllerMetrics,
    store::Store,
};

/// Alerts read and delivered in one step.
pub const BATCH: u32 = 200;
/// How often an idle sink looks for new alerts.
const POLL: Duration = Duration::from_millis(200);
/// A sink's lease (several controllers on one database: only its holder delivers, see
/// `Store::hold_sink_lease`): renewed every step, so at every [`POLL`] while idle; a dead
/// holder's sink is taken over this long after its last renewal.
pub const LEASE: Duration = Duration::from_secs(5);
/// Reconnect backoff: doubles from the first to the last.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a stopping controller waits for a sink's delivery in flight.
const STOP_GRACE: Duration = Duration::from_secs(5);

enum Sink {
    Syslog(syslog::SyslogSink),
    Ocsf(ocsf::OcsfSink),
}

impl Sink {
    fn open(cfg: &SinkConfig) -> anyhow::Result<Sink> {
        Ok(match cfg.kind {
            SinkKind::Syslog => Sink::Syslog(syslog::SyslogSink::new(cfg)?),
            SinkKind::Ocsf => Sink::Ocsf(ocsf::OcsfSink::new(cfg)),
        })
    }

    async fn deliver(&mut self, alerts: &[Outgoing]) -> anyhow::Result<()> {
        match self {
            Sink::Syslog(s) => s.deliver(alerts).await,
            Sink::Ocsf(s) => tokio::task::block_in_place(|| s.deliver(alerts)),
        }
    }

    async fn deliver_checkpoint(&mut self, checkpoint: &Signed) -> anyhow::Result<()> {
        match self {
            Sink::Syslog(s) => s.deliver_checkpoint(checkpoint).await,
            Sink::Ocsf(s) => tokio::task::block_in_place(|| s.deliver_checkpoint(checkpoint)),
        }
    }

    /// Drops the connection or file after a failure; the next delivery opens a new one.
    fn reset(&mut self) {
        match self {
            Sink::Syslog(s) => s.reset(),
            Sink::Ocsf(s) => s.reset(),
        }
    }
}

/// One alert as a sink delivers it: the finding, named `GATEWAY/ID`, and whether this sink
/// delivered it before (an aggregated alert that grew: OCSF activity Update, the same CEF
/// `externalId` with a higher `cnt`).
pub struct Outgoing {
    pub finding: Finding,
    pub update: bool,
    /// The store's sequence number of this row (a file sink writes it down, see [`resume`]).
    pub seq: i64,
}

/// The running sinks.
pub struct Sinks {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sinks {
    /// Starts one task per configured sink. Configuration that cannot work (a TLS CA that does
    /// not read) is an error now; a collector that is down is not (the sink retries).
    pub fn start(
        store: Arc<dyn Store>,
        configs: &[SinkConfig],
        metrics: Arc<ControllerMetrics>,
    ) -> anyhow::Result<Sinks> {
        Self::start_with_checkpoints(store, configs, None, metrics)
    }

    /// As `start`, each sink also sending the signed audit checkpoints of `checkpoints`.
    pub fn start_with_checkpoints(
        store: Arc<dyn Store>,
        configs: &[SinkConfig],
        checkpoints: Option<checkpoints::Latest>,
        metrics: Arc<ControllerMetrics>,
    ) -> anyhow::Result<Sinks> {
        let (stop, stopped) = watch::channel(false);
        let mut opened = Vec::new();
        for cfg in configs {
            opened.push((cfg.name(), Sink::open(cfg)?));
        }
        let tasks = opened
            .into_iter()
            .map(|(name, sink)| {
                tracing::info!(sink = %name, "SOC sink started");
                metrics.sink_started(&name);
                tokio::spawn(run(
                    name,
                    sink,
                    store.clone(),
                    metrics.clone(),
                    checkpoints.clone(),
                    stopped.clone(),
                ))
            })
            .collect();
        Ok(Sinks { stop, tasks })
    }

    /// Stops every sink after the batch it is delivering (at most `STOP_GRACE`; a batch cut
    /// off is sent again at the next start).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(STOP_GRACE, t).await.is_err() {
                abort.abort();
            }
        }
    }
}

async fn run(
    name: String,
    mut sink: Sink,
    store: Arc<dyn Store>,
    metrics: Arc<ControllerMetrics>,
    mut checkpoints: Option<checkpoints::Latest>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    // The newest checkpoint this sink has yet to send.
    let mut pending: Option<Arc<Signed>> = None;
    // Whether this controller held the lease at the last step (a change is logged, so an
    // operator sees which replica delivers).
    let mut held = false;
    // Whether the sink's own record has been read since this controller took the lease or
    // a delivery failed (see `resume`).
    let mut resumed = false;
    while !*stop.borrow() {
        let holds = tokio::task::block_in_place(|| store.hold_sink_lease(&name, LEASE));
        if let Ok(now) = holds
            && now != held
        {
            held = now;
            resumed = false;
            if now {
                tracing::info!(sink = %name, "holding the SOC sink's lease: this controller delivers it");
            } else {
                tracing::info!(sink = %name, "the SOC sink's lease is held by another controller");
            }
        }
        match holds {
            Ok(true) => {}
            // Another controller delivers this sink; this one takes over if it stops renewing.
            Ok(false) => {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    changed = stop.changed() => if changed.is_err() { return },
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(sink = %name, error = %e, "taking the SOC sink's lease failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    changed = stop.changed() => if changed.is_err() { return },
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        }
        if let Some(rx) = checkpoints.as_mut()
            && rx.has_changed().unwrap_or(false)
        {
            pending = rx.borrow_and_update().clone();
        }
        // What the sink already holds first (once per lease and after each failure); a
        // failure here is a delivery failure (backoff, and read again next time).
        let ready = if resumed {
            Ok(())
        } else {
            resume(&name, &mut sink, store.as_ref())
                .context("reading what the SOC sink already holds")
        };
        resumed = ready.is_ok();
        let sent = match (ready, &pending) {
            (Err(e), _) => Err(e),
            (Ok(()), None) => Ok(()),
            (Ok(()), Some(c)) => sink
                .deliver_checkpoint(c)
                .await
                .context("sending an audit checkpoint"),
        };
        let stepped = match sent {
            Ok(()) => {
                pending = None;
                step(&name, &mut sink, store.as_ref()).await
            }
            Err(e) => Err(e),
        };
        let wait = match stepped {
            Ok((0, _)) => POLL,
            Ok((_, delivered)) => {
                metrics.sink_delivered(&name, delivered as u64);
                backoff = BACKOFF_MIN;
                continue;
            }
            Err(e) => {
                metrics.sink_failed(&name);
                tracing::warn!(sink = %name, error = %format!("{e:#}"), retry_in = ?backoff, "SOC sink delivery failed");
                sink.reset();
                resumed = false;
                let wait = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // A dropped `Sinks` stops its tasks too.
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}

/// Moves `name`'s cursor past what its sink already holds: the alerts a controller delivered
/// and died (or lost the lease) before recording. Only an OCSF file can say (its last alert
/// line's sequence number and id); the cursor moves only when the store's alert at that
/// sequence is that very event, so a file from another installation or an older database
/// moves nothing. A syslog collector cannot be asked (its batch is sent again).
fn resume(name: &str, sink: &mut Sink, store: &dyn Store) -> anyhow::Result<()> {
    let Sink::Ocsf(file) = sink else {
        return Ok(());
    };
    tokio::task::block_in_place(|| {
        let Some(last) = file.last_delivered()? else {
            return Ok(());
        };
        let cursor = store.sink_cursor(name)?;
        if last.seq <= cursor {
            return Ok(());
        }
        let rows = store.alerts_after(last.seq - 1, 1)?;
        let stored = rows.first().filter(|r| r.seq == last.seq).and_then(|r| {
            let finding = alerts::for_sink(r).ok()?;
            let o = Outgoing {
                finding,
                update: r.is_update(),
                seq: r.seq,
            };
            ocsf::event(&o)["metadata"]["uid"]
                .as_str()
                .map(str::to_string)
        });
        if stored.as_deref() != Some(last.uid.as_str()) {
            tracing::warn!(
                sink = %name,
                seq = last.seq,
                uid = %last.uid,
                "the OCSF file's last alert is not this store's alert at its sequence number: delivering from the store's cursor"
            );
            return Ok(());
        }
        if store.advance_held_sink_cursor(name, last.seq)? {
            tracing::info!(
                sink = %name,
                from = cursor,
                to = last.seq,
                "the OCSF file already holds alerts its cursor did not record (their controller stopped first): not sent again"
            );
        }
        Ok(())
    })
}

/// Delivers the next batch after the sink's cursor; returns how many store rows it covered
/// and how many alerts it delivered.
async fn step(name: &str, sink: &mut Sink, store: &dyn Store) -> anyhow::Result<(usize, usize)> {
    let rows = tokio::task::block_in_place(|| {
        let after = store.sink_cursor(name)?;
        store.alerts_after(after, BATCH)
    })?;
    let Some(last) = rows.last().map(|r| r.seq) else {
        return Ok((0, 0));
    };
    let mut batch = Vec::with_capacity(rows.len());
    for r in &rows {
        // A row that does not read is skipped (and said), never retried forever.
        match alerts::for_sink(r) {
            Ok(finding) => batch.push(Outgoing {
                finding,
                update: r.is_update(),
                seq: r.seq,
            }),
            Err(e) => {
                tracing::error!(sink = %name, seq = r.seq, error = %e, "skipping a stored alert")
            }
        }
    }
    sink.deliver(&batch).await?;
    // Delivered: if the controller dies here, this batch goes out again after the restart
    // (or from the controller that takes the sink's lease over).
    if !tokio::task::block_in_place(|| store.advance_held_sink_cursor(name, last))? {
        tracing::warn!(
            sink = %name,
            "the SOC sink's lease was lost during a delivery: its new holder sends this batch again"
        );
    }
    Ok((rows.len(), batch.len()))
}

#[cfg(test)]
mod tests;
