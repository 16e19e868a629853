//! JSON Schemas generated from the Rust types, so editors validate profiles and sites.

use crate::{profile::Profile, site::Site};

pub fn profile_schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(Profile)).expect("schema serializes") + "\n"
}

pub fn site_schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(Site)).expect("schema serializes") + "\n"
}
