//! The pure policy layer of wardgate: profile schema, site model, validation, MUD import, and the
//! compiler from profiles + site to the desired state of each gateway. No I/O beyond reading the
//! files it is asked to parse; this is where most of the tests live.

pub mod compile;
pub mod desired;
pub mod detection;
pub mod diag;
pub mod diff;
pub mod dns;
pub mod ids;
pub mod inventory;
pub mod lower;
pub mod matrix;
pub mod mud;
pub mod profile;
pub mod schema;
pub mod site;
pub mod span;
pub mod valid;
pub mod validate;

pub use compile::{
    CompileError, Compiled, compile, compile_detailed, compile_valid, compile_with_ids,
};
pub use desired::{DesiredState, Direction, Mode, Proto, UnknownMode};
pub use diag::{Diagnostic, Diagnostics};
pub use diff::{StateDiff, diff};
pub use ids::StableIds;
pub use profile::{Profile, ProfileSet, parse_profile};
pub use site::{Site, parse_site};
pub use valid::{ValidDevice, ValidFlow, ValidGateway, ValidPeer, ValidProfile, ValidSite};
pub use validate::{
    SiteInput, validate, validate_all, validate_input, validate_profile, validate_site,
};
