//! A FHIR R4 `Bundle` of `Device` resources (JSON), as a hospital's device registry exports it
//! (`GET [base]/Device?_count=...` answers a `searchset` Bundle; a `collection` or
//! `transaction` Bundle reads the same).
//!
//! Per `Device` (FHIR R4, hl7.org/fhir/R4/device.html):
//! - MAC: the `identifier` whose `system` is an EUI-48 system: `urn:ietf:rfc:7042` (the IETF's
//!   EUI-48 registry RFC), `http://hl7.org/fhir/sid/eui-48/ethernet`, or THO's
//!   `http://terminology.hl7.org/NamingSystem/ethernet-address-identifier`; or whose
//!   `type.coding` has code `ETHMAC` (Continua device identifier types, the Personal Health
//!   Device IG). Bluetooth MACs (`BTMAC`) are not a network port and are ignored.
//! - name: `deviceName` of type `user-friendly-name`, else the first `deviceName`.
//! - type: `type.text`, else the first `type.coding[].display`, else its `code`.
//! - manufacturer: `manufacturer`; model: `modelNumber`.
//! - location: `location.display` (a `Reference` to a `Location`).
//! - asset id: an `identifier` with `use` `official` and no `system` (the hospital's own
//!   inventory tag; a registry with a system for it is not read as one).
//! - address: `url` ("network address to contact device"), when its host is an IP address.

use serde_json::Value;

use super::{Entry, ImportError, Parsed, Refused, device_name, parse_mac};

/// The `identifier.system` values read as EUI-48 (Ethernet MAC) identifiers.
pub const EUI48_SYSTEMS: &[&str] = &[
    "urn:ietf:rfc:7042",
    "http://hl7.org/fhir/sid/eui-48/ethernet",
    "http://terminology.hl7.org/NamingSystem/ethernet-address-identifier",
];

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("").trim()
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Whether `identifier` is an Ethernet MAC.
fn is_eui48(identifier: &Value) -> bool {
    let system = str_at(identifier, "system");
    if EUI48_SYSTEMS.iter().any(|s| s.eq_ignore_ascii_case(system)) {
        return true;
    }
    identifier
        .get("type")
        .map(|t| array(t, "coding"))
        .unwrap_or(&[])
        .iter()
        .any(|c| str_at(c, "code") == "ETHMAC")
}

/// A `CodeableConcept` in words: its text, else its first coding's display, else its code.
fn concept(v: &Value) -> String {
    let text = str_at(v, "text");
    if !text.is_empty() {
        return text.to_string();
    }
    let codings = array(v, "coding");
    codings
        .iter()
        .map(|c| str_at(c, "display"))
        .find(|d| !d.is_empty())
        .or_else(|| {
            codings
                .iter()
                .map(|c| str_at(c, "code"))
                .find(|d| !d.is_empty())
        })
        .unwrap_or("")
        .to_string()
}

fn name(device: &Value) -> String {
    let names = array(device, "deviceName");
    let friendly = names
        .iter()
        .find(|n| str_at(n, "type") == "user-friendly-name")
        .or_else(|| names.first());
    friendly
        .map(|n| device_name(str_at(n, "name")))
        .unwrap_or_default()
}

/// The IP address in `Device.url` (`http://192.0.2.10/`, `192.0.2.10`, `[2001:db8::1]`).
fn address(url: &str) -> Option<std::net::IpAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    if let Ok(a) = host.parse() {
        return Some(a);
    }
    host.rsplit_once(':').and_then(|(h, _)| h.parse().ok())
}

/// One `Device` resource (`at` names it in messages).
fn device(at: String, d: &Value) -> Result<Entry, Refused> {
    let refuse = |why: String| Refused {
        at: at.clone(),
        why,
    };
    let macs: Vec<&Value> = array(d, "identifier")
        .iter()
        .filter(|i| is_eui48(i))
        .collect();
    let mac = match macs.as_slice() {
        [] => {
            return Err(refuse(
                "no identifier with an EUI-48 system (urn:ietf:rfc:7042) for its MAC".into(),
            ));
        }
        [one] => parse_mac(str_at(one, "value"))
            .map_err(|e| refuse(format!("identifier (EUI-48) value: {e}")))?,
        _ => return Err(refuse("more than one EUI-48 identifier".into())),
    };
    let asset_id = array(d, "identifier")
        .iter()
        .find(|i| str_at(i, "use") == "official" && str_at(i, "system").is_empty())
        .map(|i| str_at(i, "value").to_string())
        .unwrap_or_default();
    let mut name = name(d);
    if name.is_empty() {
        name = device_name(str_at(d, "id"));
    }
    if name.is_empty() {
        return Err(refuse("no deviceName and no id to name the device".into()));
    }
    Ok(Entry {
        at,
        mac,
        name,
        device_type: d.get("type").map(concept).unwrap_or_default(),
        manufacturer: str_at(d, "manufacturer").to_string(),
        model: str_at(d, "modelNumber").to_string(),
        location: d
            .get("location")
            .map(|l| str_at(l, "display").to_string())
            .unwrap_or_default(),
        asset_id,
        address: address(str_at(d, "url")),
    })
}

/// Reads a Bundle of Device resources; resources of other types are refused by entry.
pub fn parse(content: &[u8]) -> Result<Parsed, ImportError> {
    let bundle: Value =
        serde_json::from_slice(content).map_err(|e| ImportError::Fhir(format!("not JSON: {e}")))?;
    match str_at(&bundle, "resourceType") {
        "Bundle" => {}
        "" => {
            return Err(ImportError::Fhir(
                "no resourceType (expected Bundle)".into(),
            ));
        }
        other => {
            return Err(ImportError::Fhir(format!(
                "resourceType is {other}, expected Bundle"
            )));
        }
    }
    let entries = match bundle.get("entry") {
        None => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => return Err(ImportError::Fhir("Bundle.entry is not an array".into())),
    };
    let mut out = Parsed::default();
    for (i, e) in entries.iter().enumerate() {
        let at = format!("entry {}", i + 1);
        let Some(resource) = e.get("resource").filter(|r| r.is_object()) else {
            out.refused.push(Refused {
                at,
                why: "no resource".into(),
            });
            continue;
        };
        let kind = str_at(resource, "resourceType");
        if kind != "Device" {
            out.refused.push(Refused {
                at,
                why: format!("resourceType is {kind:?}, not Device"),
            });
            continue;
        }
        match device(at, resource) {
            Ok(d) => out.entries.push(d),
            Err(r) => out.refused.push(r),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bundles_are_errors_or_refused_entries_never_panics() {
        assert!(matches!(parse(b"{"), Err(ImportError::Fhir(m)) if m.contains("not JSON")));
        assert!(
            matches!(parse(br#"{"resourceType":"Device"}"#), Err(ImportError::Fhir(m)) if m.contains("expected Bundle"))
        );
        assert!(parse(br#"{"resourceType":"Bundle","entry":{}}"#).is_err());
        let p = parse(
            br#"{"resourceType":"Bundle","entry":[1,{"resource":{"resourceType":"Device",
            "identifier":[{"system":"urn:ietf:rfc:7042","value":"nope"}],"deviceName":[{"name":"x"}]}}]}"#,
        )
        .unwrap();
        assert!(p.entries.is_empty());
        assert_eq!(p.refused[0].why, "no resource");
        assert_eq!(p.refused[1].at, "entry 2");
        assert!(p.refused[1].why.contains("identifier (EUI-48) value"));
        assert_eq!(
            parse(br#"{"resourceType":"Bundle"}"#).unwrap(),
            Parsed::default()
        );
    }

    #[test]
    fn addresses_from_device_url() {
        assert_eq!(
            address("http://192.0.2.7:8080/x"),
            Some("192.0.2.7".parse().unwrap())
        );
        assert_eq!(
            address("[2001:db8::7]"),
            Some("2001:db8::7".parse().unwrap())
        );
        assert_eq!(address("https://pump.example/"), None);
    }
}
