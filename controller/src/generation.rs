//! What a stored generation's content is, and its hash: the one place that says so.
//!
//! A generation is stored as its canonical bytes: the prost encoding of its policy bundle with
//! the fields that are not its content cleared (the epoch, added per store on the way out; the
//! content hash, which is this hash; the reason, stored beside it and recorded in the audit
//! entry). prost writes fields in field-number order and repeated fields in the order the
//! compiler produced them, and the bundle has no map fields, so the bytes depend on the policy
//! only: a serde or formatting change cannot move a hash. The hash is over exactly the stored
//! bytes, so `audit verify` needs no decoding to check a generation.
//!
//! Generations stored before (`GenerationContent::LegacyJson`) keep the JSON their audit entries
//! hashed, and are hashed that old way ([`legacy_json_hash`]) for as long as they are kept.

use prost::Message as _;
use sha2::{Digest, Sha256};
use wardgate_policy::DesiredState;
use wardgate_proto::v1 as pb;

use crate::{
    error::{Error, Result},
    store::{GenerationContent, GenerationRow},
};

/// The canonical bytes of `state` (see the module doc); its epoch and content hash are left
/// out whatever they hold.
pub fn canonical_bytes(state: &DesiredState) -> Vec<u8> {
    let mut b = wardgate_proto::bundle::to_bundle(state, "");
    b.epoch.clear();
    b.content_hash.clear();
    b.encode_to_vec()
}

/// SHA-256 (hex) of a generation's stored content: what its audit entry records, and what an
/// agent reports back to say which content it holds (a generation number reused after a
/// restore is not mistaken for the same one).
pub fn content_hash(content: &GenerationContent) -> String {
    match content {
        GenerationContent::Bundle(bytes) => hex::encode(Sha256::digest(bytes)),
        GenerationContent::LegacyJson(text) => legacy_json_hash(text),
    }
}

/// The hash of a generation stored as pretty JSON before migration 9: SHA-256 of the stored
/// text. Kept only to verify (and serve) those generations; nothing new is hashed this way.
pub fn legacy_json_hash(stored: &str) -> String {
    hex::encode(Sha256::digest(stored.as_bytes()))
}

/// The desired state a stored content holds (epoch and content hash empty).
pub fn decode(content: &GenerationContent) -> std::result::Result<DesiredState, String> {
    match content {
        GenerationContent::Bundle(bytes) => {
            let b = pb::PolicyBundle::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
            DesiredState::try_from(b).map_err(|e| e.to_string())
        }
        GenerationContent::LegacyJson(text) => {
            DesiredState::from_json(text).map_err(|e| e.to_string())
        }
    }
}

impl GenerationRow {
    /// The hash of this generation's stored content (see [`content_hash`]).
    pub fn content_hash(&self) -> String {
        content_hash(&self.content)
    }

    /// The stored state with this store's epoch and its content hash: what travels to agents.
    pub fn state(&self, epoch: &str) -> Result<DesiredState> {
        let mut s = decode(&self.content).map_err(|problem| {
            Error::Internal(format!(
                "stored generation {} of {} does not parse: {problem}",
                self.generation, self.gateway
            ))
        })?;
        s.epoch = epoch.to_string();
        s.content_hash = self.content_hash();
        Ok(s)
    }
}

/// A gateway's state with one pump (192.0.2.12) on a profile without rules: the fixture of the
/// generation, write and store tests.
#[cfg(test)]
pub(crate) fn one_pump(
    gateway: &str,
    generation: u32,
    mode: wardgate_policy::desired::Mode,
) -> DesiredState {
    use wardgate_policy::desired::{DeviceEntry, MacAddr, PolicyEntry};
    DesiredState {
        gateway: gateway.into(),
        generation,
        epoch: String::new(),
        content_hash: String::new(),
        devices: vec![DeviceEntry {
            device_id: 1,
            name: "pump".into(),
            addrs: vec![std::net::IpAddr::from([192, 0, 2, 12])],
            mac: MacAddr([2, 0, 0, 0, 0, 12]),
            policy_id: 1,
            mode,
            max_flows: 0,
            fail_open: false,
            grace_s: wardgate_policy::profile::DEFAULT_GRACE_MAX_S,
        }],
        policies: vec![PolicyEntry {
            policy_id: 1,
            profile: "pump".into(),
            profile_version: 1,
            rules: Vec::new(),
            sensitivity: Default::default(),
            detection: Default::default(),
        }],
        peers: Vec::new(),
        ports: Vec::new(),
        groups: Default::default(),
        dns: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use wardgate_policy::desired::Mode;

    use super::*;

    fn state() -> DesiredState {
        one_pump("gw-3a", 7, Mode::Monitor)
    }

    #[test]
    fn the_hash_is_over_the_policy_not_its_json() {
        let s = state();
        let canonical = GenerationContent::Bundle(canonical_bytes(&s));
        let hash = content_hash(&canonical);
        // The same state written as JSON in two serde forms: two legacy hashes, one new hash.
        let pretty = s.to_json();
        let compact = serde_json::to_string(&s).unwrap();
        assert_ne!(legacy_json_hash(&pretty), legacy_json_hash(&compact));
        for text in [pretty, compact] {
            let parsed = DesiredState::from_json(&text).unwrap();
            assert_eq!(
                content_hash(&GenerationContent::Bundle(canonical_bytes(&parsed))),
                hash
            );
        }
        // Epoch and content hash are not content; the policy is.
        let mut travelling = s.clone();
        travelling.epoch = "0123".into();
        travelling.content_hash = hash.clone();
        assert_eq!(canonical_bytes(&travelling), canonical_bytes(&s));
        let mut enforced = s.clone();
        enforced.devices[0].mode = Mode::Enforce;
        assert_ne!(
            content_hash(&GenerationContent::Bundle(canonical_bytes(&enforced))),
            hash
        );
    }

    #[test]
    fn stored_content_decodes_to_the_state_in_both_forms() {
        let s = state();
        assert_eq!(
            decode(&GenerationContent::Bundle(canonical_bytes(&s))).unwrap(),
            s
        );
        assert_eq!(
            decode(&GenerationContent::LegacyJson(s.to_json())).unwrap(),
            s
        );
        assert!(decode(&GenerationContent::Bundle(vec![0xff, 0xff])).is_err());
    }
}
