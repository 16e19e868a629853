//! `wardgate.v1` protobuf packages and their generated tonic/prost code.

#[allow(clippy::all, clippy::pedantic, reason = "generated code")]
pub mod v1 {
    tonic::include_proto!("wardgate.v1");
}

/// The .proto files, for clients in other languages (e.g. the Python interop test).
pub const PROTO_ROOT: &str = env!("CARGO_MANIFEST_DIR");
