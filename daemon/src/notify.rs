//! systemd notifications (`Type=notify`): READY=1 once the daemon does its job, STOPPING=1 on
//! the way out, and WATCHDOG=1 pings from the loop whose health they vouch for. Without
//! `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "systemd notification not sent");
    }
}

/// The daemon is serving; `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The daemon is shutting down (finishing what it has, taking nothing new).
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// The service manager's watchdog (`WatchdogSec=`): how often to ping it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watchdog {
    every: Duration,
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC`, for this process if `WATCHDOG_PID` is
    /// set), pinged at half its timeout as sd_watchdog_enabled(3) advises; `None` without one.
    pub fn from_env() -> Option<Watchdog> {
        Watchdog::for_timeout(sd_notify::watchdog_enabled()?)
    }

    fn for_timeout(timeout: Duration) -> Option<Watchdog> {
        (!timeout.is_zero()).then_some(Watchdog { every: timeout / 2 })
    }

    pub fn every(&self) -> Duration {
        self.every
    }

    /// Tells systemd the daemon is alive; call only from the loop that must not get stuck.
    pub fn ping(&self) {
        send(&[NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_timeout_and_a_zero_timeout_is_no_watchdog() {
        assert_eq!(
            Watchdog::for_timeout(Duration::from_secs(30)).map(|w| w.every()),
            Some(Duration::from_secs(15))
        );
        assert_eq!(Watchdog::for_timeout(Duration::ZERO), None);
    }
}
