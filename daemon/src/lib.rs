//! What both wardgate daemons (agent and controller) share with the service manager: the log
//! format (`--log-format text|json`) and systemd readiness, stop and watchdog notifications; and
//! the checks their tests run on the systemd units.

pub mod log;
pub mod metrics;
pub mod notify;
pub mod unit_file;
