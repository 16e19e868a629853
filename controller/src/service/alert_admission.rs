//! Which alerts of a gateway's agent the controller stores. An agent (or whoever holds its
//! certificate) may only speak for its own gateway and the devices behind it, as its flow
//! reports already must: an alert naming another gateway, or a device the inventory puts on
//! another gateway, is refused (permission_denied), and so is one whose fields are out of
//! bounds (invalid_argument: `wardgate_proto::finding::admit`). A refused alert is answered in
//! the stream's acknowledgement (`AlertAck.refused`), not by ending the stream: the agent's
//! outbox re-sends whatever is unacknowledged after every reconnect, so an error status would
//! make it retry the same alert forever, and hold back every good alert queued behind it.

use wardgate_analysis::detect::Finding;
use wardgate_proto::{finding::admit, v1 as pb};

use crate::{alerts, error::Result, store::Store};

pub const PERMISSION_DENIED: &str = "permission_denied";
pub const INVALID_ARGUMENT: &str = "invalid_argument";

/// The finding to store for `a` from `gateway`'s agent at `now_ns`, enriched from the
/// inventory, or the refusal to send back. The outer error is the store failing (the stream
/// ends with it, and the agent retries later).
pub fn admit_alert(
    store: &dyn Store,
    gateway: &str,
    a: &pb::Alert,
    now_ns: u64,
) -> Result<std::result::Result<Finding, pb::RefusedAlert>> {
    let refuse = |code: &str, reason: String| pb::RefusedAlert {
        id: a.id.clone(),
        code: code.into(),
        reason,
    };
    if !a.gateway.is_empty() && a.gateway != gateway {
        return Ok(Err(refuse(
            PERMISSION_DENIED,
            format!("names gateway {}, certificate is {gateway}", a.gateway),
        )));
    }
    let mut f = match admit::admit(a, now_ns) {
        Ok(f) => f,
        Err(e) => return Ok(Err(refuse(INVALID_ARGUMENT, e.to_string()))),
    };
    if !f.device.name.is_empty()
        && let Some(d) = store.device(&f.device.name)?
        && d.gateway != gateway
    {
        return Ok(Err(refuse(
            PERMISSION_DENIED,
            format!(
                "device `{}` is on gateway `{}`, not `{gateway}`",
                d.name, d.gateway
            ),
        )));
    }
    f.gateway = Some(gateway.to_string());
    alerts::enrich(store, &mut f)?;
    Ok(Ok(f))
}
