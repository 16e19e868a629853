//! `wardgate.v1` protobuf packages (generated with tonic/prost).
