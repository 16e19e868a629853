//! The wardgate gateway agent: loads or adopts the eBPF datapath, is the only writer of its
//! maps, applies desired states (from a file or synced from the controller), and turns
//! datapath events into log records and alerts for the controller.

pub mod alerts;
pub mod beat;
pub mod config;
pub mod datapath;
pub mod dns;
pub mod downgrade;
pub mod enroll;
pub mod events;
pub mod flow_report;
pub mod flows;
pub mod health;
pub mod identity;
pub mod learn;
pub mod limits;
pub mod lkg;
pub mod metrics;
pub mod netns;
pub mod paths;
pub mod renew;
pub mod replay;
pub mod run;
pub mod sync;
