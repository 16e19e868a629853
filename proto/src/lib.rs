//! `wardgate.v1` protobuf packages and their generated tonic/prost code, the conversions of the
//! compiled policy between its protobuf form and the policy crate's types, and the transport
//! limit both ends of the policy stream use; flow records between their protobuf form and the
//! analysis crate's (`flows`).

#[allow(clippy::all, clippy::pedantic, reason = "generated code")]
pub mod v1 {
    tonic::include_proto!("wardgate.v1");
}

pub mod bundle;
pub mod compat;
pub mod enums;
pub mod finding;
pub mod flows;

pub use bundle::{BundleError, bundle_len};
pub use enums::FieldError;
pub use finding::AlertError;

/// The .proto files, for clients in other languages (e.g. the Python interop test).
pub const PROTO_ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Largest policy bundle (one `PolicyBundle` message) on the wire. The controller sets it as
/// its encoding limit and the agent as its decoding limit, and the controller refuses, at
/// write time, a change that would compile a bigger bundle, so a gateway never waits for a
/// policy it cannot receive. A gateway whose maps are full (IPv6 everywhere) is 12.5 MB (see
/// the `a_full_gateway_fits_the_transport_limit` test); what can exceed this is a profile
/// whose rules repeat large groups.
pub const MAX_BUNDLE_BYTES: usize = 32 << 20;

/// Largest request the controller decodes (a profile, an alert batch or a status report is far
/// smaller); the agent encodes with the same limit.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Largest admin request the controller decodes: a whole site in one `ApplySite` (one
/// transaction), about 100 bytes a device, so some 100,000 devices.
pub const MAX_SITE_BYTES: usize = 16 << 20;
