//! wardctl subcommands, one file each.

pub mod output;
pub mod profile;
pub mod site;
