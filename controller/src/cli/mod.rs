//! wardctl subcommands, one file each.

pub mod alerts;
pub mod assign;
pub mod audit;
pub mod baseline;
pub mod certs;
pub mod changes;
pub mod config;
pub mod devices;
pub mod enroll;
pub mod errors;
pub mod gateways;
pub mod import;
pub mod output;
pub mod profile;
pub mod profiles;
pub mod propose;
pub mod push;
pub mod quarantine;
pub mod remote;
pub mod revoke;
pub mod simulate;
pub mod site;
pub mod store;
