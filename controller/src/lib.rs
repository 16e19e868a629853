//! The wardgate controller library: gRPC services (agent, admin, alerts), the browser console,
//! the store and its audit trail, access control, policy push, and the wardctl CLI commands.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod certs;
pub mod cli;
pub mod compile;
pub mod config;
pub mod console;
pub mod error;
pub mod fleet;
pub mod generation;
pub mod impact;
pub mod import;
pub mod issuing;
pub mod listener;
pub mod metrics;
pub mod offline;
pub mod preview;
pub mod push;
pub mod server;
pub mod service;
pub mod sinks;
pub mod store;
pub mod words;
pub mod write;
