//! The pure policy layer of wardgate: profile schema, site model, validation, MUD import, and the
//! compiler from profiles + site to the desired state of each gateway. No I/O beyond reading the
//! files it is asked to parse; this is where most of the tests live.

pub mod compile;
pub mod desired;
pub mod diag;
pub mod diff;
pub mod ids;
pub mod lower;
pub mod mud;
pub mod profile;
pub mod schema;
pub mod site;
pub mod span;
pub mod validate;

pub use compile::{
    CompileError, Compiled, compile, compile_detailed, compile_validated, compile_with_ids,
};
pub use desired::{DesiredState, Direction, Mode, Proto};
pub use diag::{Diagnostic, Diagnostics};
pub use diff::{StateDiff, diff};
pub use ids::StableIds;
pub use profile::{Profile, ProfileSet, parse_profile};
pub use site::{Site, parse_site};
pub use validate::{validate, validate_all, validate_profile};
