//! Changes made by other controllers on the same database: write transactions `NOTIFY` on
//! [`CHANNEL`] (PostgreSQL delivers a notification at its transaction's commit, never for a
//! rollback), and a connection of the store's own `LISTEN`s and turns each notification into
//! a [`StoreEvent`]. A lost listening connection is opened again; every (re)opened one first
//! reports [`StoreEvent::Resync`], since what was committed meanwhile was not heard.

use std::time::Duration;

use super::Db;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

use super::Sql;
use crate::{error::Result, store::StoreEvent};

/// The notification channel.
pub(super) const CHANNEL: &str = "wardgate_changes";
/// How long a lost listening connection waits before connecting again.
const RELISTEN: Duration = Duration::from_millis(250);
/// Events kept for a slow receiver before it is told to resync.
pub(super) const BACKLOG: usize = 1024;

/// The notification that says `gateway` has `generation` (sent at the commit of the
/// transaction that stored it, `site::insert_generation`).
pub(super) fn generation(gateway: &str, generation: u32) -> String {
    format!("g {generation} {gateway}")
}

/// Says, at this transaction's commit, that alerts were stored.
pub(super) fn alerts(c: &Db) -> Result<()> {
    c.exec("SELECT pg_notify($1, 'alerts')", &[&CHANNEL])?;
    Ok(())
}

fn parse(payload: &str) -> Option<StoreEvent> {
    if payload == "alerts" {
        return Some(StoreEvent::Alerts);
    }
    let rest = payload.strip_prefix("g ")?;
    let (generation, gateway) = rest.split_once(' ')?;
    Some(StoreEvent::Generation {
        gateway: gateway.to_string(),
        generation: generation.parse().ok()?,
    })
}

/// Listens until the store's runtime stops (runs on it). `ready` is told once the first
/// `LISTEN` is in place (or the first attempt failed: the store works without it meanwhile).
pub(super) async fn run(
    cfg: tokio_postgres::Config,
    events: broadcast::Sender<StoreEvent>,
    ready: std::sync::mpsc::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        match cfg.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                // The connection's messages, notifications among them, until it closes.
                let driver = tokio::spawn(async move {
                    while let Some(m) = std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match m {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %super::describe(&e), "PostgreSQL listening connection closed");
                                return;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                        let _ = events.send(StoreEvent::Resync);
                        // Ends when the connection does (its driver drops the sender).
                        while let Some(p) = rx.recv().await {
                            match parse(&p) {
                                Some(e) => {
                                    let _ = events.send(e);
                                }
                                None => tracing::warn!(payload = %p, "unknown store notification"),
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %super::describe(&e), "LISTEN on PostgreSQL failed")
                    }
                }
                driver.abort();
            }
            Err(e) => {
                tracing::warn!(error = %super::describe(&e), "connecting the PostgreSQL listener")
            }
        }
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        tokio::time::sleep(RELISTEN).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back() {
        assert_eq!(parse("alerts"), Some(StoreEvent::Alerts));
        assert_eq!(
            parse("g 7 gw a"),
            Some(StoreEvent::Generation {
                gateway: "gw a".into(),
                generation: 7
            })
        );
        assert_eq!(parse("g x gw"), None);
        assert_eq!(parse("other"), None);
    }
}
