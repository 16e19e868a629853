//! A gateway's next generation: numbered after its latest, skipped when the compiled policy
//! did not change, refused past the bundle limit, stored as canonical bytes.

use wardgate_policy::DesiredState;

use crate::{
    audit::enforcement::{self, GatewayChange},
    error::{Error, Result},
    generation,
    store::{GenerationContent, GenerationRow},
};

/// A generation to store, its part of the audit entry and the state as it travels.
pub(super) struct NewGeneration {
    pub row: GenerationRow,
    pub change: GatewayChange,
    /// Epoch and content hash set.
    pub state: DesiredState,
}

/// The generation `state` (compiled for its gateway) makes after `latest`, or None when it
/// holds the same policy.
pub(super) fn next(
    latest: Option<&GenerationRow>,
    mut state: DesiredState,
    reason: &str,
    epoch: &str,
) -> Result<Option<NewGeneration>> {
    let prev = latest.and_then(|l| match generation::decode(&l.content) {
        Ok(s) => Some(s),
        // Compiled anew in full either way; only the entry's diff loses its before.
        Err(problem) => {
            tracing::warn!(
                gateway = l.gateway,
                generation = l.generation,
                "the latest stored generation does not decode: {problem}"
            );
            None
        }
    });
    if let (Some(l), Some(prev)) = (latest, &prev) {
        state.generation = l.generation;
        if prev == &state {
            return Ok(None);
        }
    }
    state.generation = latest.map_or(1, |l| l.generation + 1);
    // Refuse what the gateway could not receive: measured with an epoch and a content hash
    // in, as it travels.
    state.epoch = epoch.to_string();
    state.content_hash = "0".repeat(64);
    let len = wardgate_proto::bundle_len(&state, reason);
    if len > wardgate_proto::MAX_BUNDLE_BYTES {
        return Err(Error::TooLarge(format!(
            "the policy of gateway `{}` would be a {len}-byte bundle, over the {}-byte limit \
             agents receive; refusing the change (split the gateway, or use fewer or smaller \
             peer groups per profile)",
            state.gateway,
            wardgate_proto::MAX_BUNDLE_BYTES
        )));
    }
    let content = GenerationContent::Bundle(generation::canonical_bytes(&state));
    let hash = generation::content_hash(&content);
    state.epoch.clear();
    state.content_hash.clear();
    let change = enforcement::gateway_change(prev.as_ref(), &state, &content, hash.clone());
    state.epoch = epoch.to_string();
    state.content_hash = hash;
    Ok(Some(NewGeneration {
        row: GenerationRow {
            gateway: state.gateway.clone(),
            generation: state.generation,
            content,
            reason: reason.to_string(),
        },
        change,
        state,
    }))
}

#[cfg(test)]
mod tests {
    use wardgate_policy::desired::Mode;

    use super::*;
    use crate::audit::enforcement::ContentFormat;

    fn compiled(mode: Mode) -> DesiredState {
        crate::generation::one_pump("gw-3a", 1, mode)
    }

    #[test]
    fn numbered_after_the_latest_skipped_when_unchanged_whatever_its_stored_form() {
        let first = next(None, compiled(Mode::Monitor), "r", "ep")
            .unwrap()
            .unwrap();
        assert_eq!(first.row.generation, 1);
        assert_eq!(first.state.epoch, "ep");
        assert_eq!(first.state.content_hash, first.row.content_hash());
        assert_eq!(first.change.content_sha256, first.row.content_hash());
        assert_eq!(first.change.content_format, ContentFormat::Bundle);
        assert!(
            next(Some(&first.row), compiled(Mode::Monitor), "r", "ep")
                .unwrap()
                .is_none()
        );
        let second = next(Some(&first.row), compiled(Mode::Enforce), "r", "ep")
            .unwrap()
            .unwrap();
        assert_eq!(second.row.generation, 2);
        assert_eq!(second.change.devices_changed, ["pump"]);
        // A generation stored as JSON before the migration compares by its policy too.
        let mut old = compiled(Mode::Monitor);
        old.generation = 5;
        let legacy = GenerationRow {
            gateway: "gw-3a".into(),
            generation: 5,
            content: GenerationContent::LegacyJson(old.to_json()),
            reason: "r".into(),
        };
        assert!(
            next(Some(&legacy), compiled(Mode::Monitor), "r", "ep")
                .unwrap()
                .is_none()
        );
        let after = next(Some(&legacy), compiled(Mode::Enforce), "r", "ep")
            .unwrap()
            .unwrap();
        assert_eq!(after.row.generation, 6);
        assert!(matches!(after.row.content, GenerationContent::Bundle(_)));
    }
}
