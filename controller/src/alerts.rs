//! Alerts as the controller keeps them: the analysis crate's `Finding` (the one alert type),
//! enriched from the inventory when it is stored, kept as JSON, and read back for the API
//! (`pb::Alert`, converted in proto/src/finding.rs) and the SOC sinks.

use wardgate_analysis::detect::Finding;
use wardgate_proto::v1 as pb;

use crate::{
    error::{Error, Result},
    store::{NewAlert, Store, StoredAlert},
};

/// Adds what the inventory knows about the finding's device: location and asset id (the
/// inventory's, whatever the agent said), its stable id and class (profile) when the agent
/// named none, and the class's current profile version when the finding has no version of its
/// own (the agent's comes from the generation that raised it, and is kept). A device the
/// inventory does not hold is left as it is.
pub fn enrich(store: &dyn Store, f: &mut Finding) -> Result<()> {
    if f.device.name.is_empty() {
        return Ok(());
    }
    let Some(d) = store.device(&f.device.name)? else {
        return Ok(());
    };
    f.location = Some(d.location).filter(|s| !s.is_empty());
    f.asset_id = Some(d.asset_id).filter(|s| !s.is_empty());
    f.device.id = f.device.id.or(Some(d.id));
    if f.device.mac.is_none() {
        f.device.mac = Some(wardgate_analysis::mac::Mac(d.mac.0));
    }
    if f.class.is_none() && !d.profile.is_empty() {
        f.class = Some(d.profile);
    }
    if f.profile_version.is_none()
        && let Some(class) = &f.class
    {
        f.profile_version = store.profile(class)?.map(|p| p.version);
    }
    Ok(())
}

/// The row to store for `f` (already enriched).
pub fn new_row(f: &Finding) -> NewAlert {
    NewAlert {
        id: f.id.clone(),
        device: f.device.name.clone(),
        // Ranked in the store, filters and quotas (`Severity::rank`).
        severity: f.severity.rank(),
        body: serde_json::to_string(f).expect("findings serialize"),
        detector: f.detector.clone(),
        peer: f.peer.map(|p| p.to_string()).unwrap_or_default(),
        count: f.count,
        last_seen_ns: f.last_seen_ns,
    }
}

/// A stored body as a finding of `gateway`. Bodies stored before findings (the alert fields
/// as JSON) convert as their agent's alert would.
pub fn from_body(gateway: &str, body: &str) -> Result<Finding> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| Error::Internal(format!("stored alert of {gateway} is not JSON: {e}")))?;
    let mut f = if v.get("detector").is_some() {
        serde_json::from_value::<Finding>(v)
            .map_err(|e| Error::Internal(format!("stored alert of {gateway} does not read: {e}")))?
    } else {
        Finding::try_from(legacy_alert(&v)).map_err(|e| {
            Error::Internal(format!("stored alert of {gateway} does not convert: {e}"))
        })?
    };
    f.gateway = Some(gateway.to_string());
    Ok(f)
}

/// A stored alert for a SOC sink, named `GATEWAY/ID` as acknowledgements name it (agents'
/// ids are unique only on their gateway).
pub fn for_sink(a: &StoredAlert) -> Result<Finding> {
    let mut f = from_body(&a.gateway, &a.body)?;
    f.id = format!("{}/{}", a.gateway, a.id);
    Ok(f)
}

/// The API's alert of a stored row: with its sequence number, and marked as an update when
/// it is one (not the alert's creation row).
pub fn stored_to_api(r: &StoredAlert) -> Result<pb::Alert> {
    let mut a = to_api(
        &r.gateway,
        &r.body,
        r.acknowledged,
        r.acknowledged_by.clone(),
    )?;
    a.seq = u64::try_from(r.seq).unwrap_or(0);
    a.update = r.is_update();
    Ok(a)
}

/// The API's alert of a stored body.
pub fn to_api(gateway: &str, body: &str, acknowledged: bool, by: String) -> Result<pb::Alert> {
    let mut a = pb::Alert::from(&from_body(gateway, body)?);
    a.acknowledged = acknowledged;
    a.acknowledged_by = by;
    Ok(a)
}

/// The fields of a body stored before findings.
fn legacy_alert(v: &serde_json::Value) -> pb::Alert {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let n = |k: &str| v[k].as_u64().unwrap_or_default() as u32;
    pb::Alert {
        id: s("id"),
        gateway: s("gateway"),
        device: s("device"),
        profile: s("profile"),
        rule_id: n("rule_id"),
        kind: s("kind"),
        severity: s("severity"),
        mode: s("mode"),
        src: s("src"),
        src_port: n("src_port"),
        dst: s("dst"),
        dst_port: n("dst_port"),
        protocol: n("protocol"),
        mitre_technique: s("mitre_technique"),
        observed_unix_ms: v["observed_unix_ms"].as_i64().unwrap_or_default(),
        generation: n("generation"),
        rule_name: s("rule_name"),
        profile_version: n("profile_version"),
        ..Default::default()
    }
}

/// An alert as wardctl prints it in JSON.
pub fn to_json(a: &pb::Alert) -> serde_json::Value {
    let f = Finding::try_from(a).ok();
    serde_json::json!({
        "id": a.id, "gateway": a.gateway, "seq": a.seq, "update": a.update,
        "acknowledged": a.acknowledged,
        "acknowledged_by": a.acknowledged_by, "kind": a.kind, "finding": f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use wardgate_analysis::detect::Severity;

    #[test]
    fn a_body_stored_before_findings_still_reads() {
        let body = r#"{"id":"17-1","gateway":"gw","device":"pump","profile":"infusion-pump",
            "rule_id":0,"kind":"spoof","severity":"critical","mode":"enforce","src":"192.0.2.10",
            "src_port":0,"dst":"192.0.2.1","dst_port":0,"protocol":1,"mitre_technique":"T0830",
            "observed_unix_ms":1700000000000,"generation":3,"rule_name":"","profile_version":2}"#;
        let f = from_body("gw", body).unwrap();
        assert_eq!(
            (f.detector.as_str(), f.severity),
            ("spoof", Severity::Critical)
        );
        assert_eq!(f.technique.id, "T0830");
        assert_eq!((f.generation, f.profile_version), (Some(3), Some(2)));
        let a = to_api("gw", body, true, "sam".into()).unwrap();
        assert_eq!((a.kind.as_str(), a.acknowledged), ("spoof", true));
        assert!(from_body("gw", "{not json").is_err());
    }

    #[test]
    fn a_device_the_inventory_does_not_hold_is_left_as_it_is() {
        let store = SqliteStore::in_memory().unwrap();
        let device = wardgate_analysis::flow::DeviceRef {
            name: "ghost".into(),
            id: None,
            mac: None,
        };
        let mut f = Finding::new(
            "scan_vertical",
            &device,
            1,
            Severity::High,
            0.9,
            wardgate_analysis::detect::Technique::new(
                "T0846",
                "Remote System Discovery",
                wardgate_analysis::detect::Matrix::Ics,
            ),
        );
        f.location = Some("agent said".into());
        let before = f.clone();
        enrich(&store, &mut f).unwrap();
        assert_eq!(f, before);
    }
}
