//! wardctl subcommands, one file each.

pub mod output;
