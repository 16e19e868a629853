//! The pure policy layer of wardgate: profile schema, site model, validation, MUD import, and the
//! compiler from profiles + site to the desired state of each gateway. No I/O beyond reading the
//! files it is asked to parse; this is where most of the tests live.

pub mod desired;
pub mod lower;

pub use desired::{DesiredState, Direction, Mode, Proto};
