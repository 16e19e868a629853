//! The wardgate controller library: gRPC services, store, audit trail and the wardctl CLI commands.

pub mod cli;
