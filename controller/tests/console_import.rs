//! The inventory import in the console over real HTTPS: an engineer uploads a CMMS CSV export
//! with its column mapping (multipart), sees the diff (new, changed, unmatched, refused), and
//! confirms it with a reason: the devices are in the store (new ones learning), the audit
//! entry names the file and its SHA-256, each field keeps its source, and the device page
//! shows it with its charts. A viewer gets 403, an upload without its CSRF token 403, and a
//! confirmation of a diff that no longer holds writes nothing.

mod console_harness;

use console_harness::*;
use hyper::StatusCode;
use wardgate_controller::{auth::Role, store::Store};
use wardgate_policy::Mode;

const FILE: &str = "gmao-export.csv";

const CSV: &str = "N° inventaire;Désignation;Type;Fabricant;Modèle;Service;Adresse MAC;IP\r\n\
BIO-00000;pump-0000;Infusion pump;B. Braun;Space;ICU 3;02:00:00:00:00:00;\r\n\
BIO-09001;pump-new-1;Infusion pump;B. Braun;Space;ward 3;00-1A-2B-3C-4D-01;192.0.2.200\r\n\
BIO-09002;pump-bad;Infusion pump;B. Braun;Space;ward 3;00-1A-2B-3C-4D;192.0.2.201\r\n";

const MAPPING: &str = "mac = Adresse MAC\nname = Désignation\ntype = Type\n\
manufacturer = Fabricant\nmodel = Modèle\nward = Service\nasset_id = N° inventaire\naddress = IP";

fn multipart(fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let b = "----wardgateTestBoundary7MA4YWxk";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{FILE}\"\r\n\
             Content-Type: text/csv\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

/// The value of hidden field `name`, unescaped.
fn hidden(body: &str, name: &str) -> String {
    let key = format!(r#"name="{name}" value=""#);
    let at = body
        .find(&key)
        .unwrap_or_else(|| panic!("no {name}: {body}"))
        + key.len();
    let raw = body[at..].split('"').next().unwrap();
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find("&#") {
        out.push_str(&rest[..i]);
        let semi = i + rest[i..].find(';').unwrap();
        out.push(char::from_u32(rest[i + 2..semi].parse().unwrap()).unwrap());
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engineer_imports_a_csv_sees_the_diff_and_confirms() {
    let c = Console::start(4, 900).await;
    let (mut viewer, vcsrf) = c.browser_as("val", Role::Viewer);
    assert_eq!(viewer.get("/import").await.status, StatusCode::FORBIDDEN);
    let (ct, body) = multipart(&[("csrf", &vcsrf), ("mapping", MAPPING)], CSV.as_bytes());
    assert_eq!(
        viewer.post_raw("/import", &ct, body).await.status,
        StatusCode::FORBIDDEN
    );

    let (mut b, csrf) = c.browser_as("eve", Role::Engineer);
    let form = b.get("/import").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(r#"enctype="multipart/form-data""#));
    // Without the CSRF token: refused, nothing parsed.
    let (ct, body) = multipart(&[("mapping", MAPPING)], CSV.as_bytes());
    assert_eq!(
        b.post_raw("/import", &ct, body).await.status,
        StatusCode::FORBIDDEN
    );

    let audit_before = c.store.audit().unwrap().len();
    let (ct, body) = multipart(&[("csrf", &csrf), ("mapping", MAPPING)], CSV.as_bytes());
    let diff = b.post_raw("/import", &ct, body).await;
    assert_eq!(diff.status, StatusCode::OK, "{}", diff.body);
    let page = &diff.body;
    assert_eq!(page.matches(r#"<tr class="new">"#).count(), 1, "{page}");
    assert!(
        page.contains("<td>pump-new-1</td><td>00:1a:2b:3c:4d:01</td>"),
        "{page}"
    );
    // pump-0000 matched by MAC: its ward and the imported type, maker, model.
    assert!(
        page.contains("<td>pump-0000</td><td>location</td><td><del>ward 3 bed 0</del></td><td><ins>ICU 3</ins></td>"),
        "{page}"
    );
    assert!(
        page.contains(r#"<tr class="refused"><td>line 4</td><td>mac: "#),
        "{page}"
    );
    for unmatched in ["monitor-0001", "pump-0002", "monitor-0003"] {
        assert!(page.contains(&format!(">{unmatched}</a>")), "{unmatched}");
    }
    assert_eq!(
        c.store.audit().unwrap().len(),
        audit_before,
        "a diff writes nothing"
    );
    assert!(c.store.device("pump-new-1").unwrap().is_none());

    // The confirmation form as the diff page wrote it, with a reason.
    let fields: Vec<(String, String)> = [
        "format",
        "file_name",
        "content",
        "mapping",
        "gateway",
        "profile",
        "digest",
    ]
    .iter()
    .map(|n| (n.to_string(), hidden(&diff.body, n)))
    .chain([
        ("csrf".to_string(), csrf.clone()),
        ("reason".to_string(), "CHG-7 ICU inventory".to_string()),
    ])
    .collect();
    let form: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // No reason: refused.
    let no_reason: Vec<(&str, &str)> = form
        .iter()
        .map(|(k, v)| if *k == "reason" { (*k, "") } else { (*k, *v) })
        .collect();
    assert_eq!(
        b.send("POST", "/import/confirm", Some(&no_reason))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let done = b.send("POST", "/import/confirm", Some(&form)).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(
        done.location().starts_with("/import?audit="),
        "{}",
        done.location()
    );
    let shown = b.get(done.location()).await;
    assert!(shown.body.contains(r#"id="import-done""#), "{}", shown.body);

    let new = c.store.device("pump-new-1").unwrap().unwrap();
    assert_eq!(
        (
            new.mode,
            new.gateway.as_str(),
            new.profile.as_str(),
            new.location.as_str()
        ),
        (Mode::Learn, "gw-ward-3", "infusion-pump", "ward 3")
    );
    assert_eq!(
        new.addresses,
        vec!["192.0.2.200".parse::<std::net::IpAddr>().unwrap()]
    );
    let old = c.store.device("pump-0000").unwrap().unwrap();
    assert_eq!(old.location, "ICU 3");
    assert_eq!(old.mode, Mode::Enforce, "an import does not touch a mode");

    let sha = wardgate_controller::import::sha256(CSV.as_bytes());
    let audit = c.store.audit().unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.target.as_str()),
        ("import_devices", FILE)
    );
    assert!(last.diff.contains(&sha), "{}", last.diff);
    assert!(
        last.reason
            .starts_with("CHG-7 ICU inventory (import of gmao-export.csv")
    );
    assert_eq!(last.actor, "user:eve");
    assert!(audit.len() > audit_before);

    let fields = c.store.device_fields(Some("pump-new-1")).unwrap();
    let model = fields.iter().find(|f| f.field == "model").unwrap();
    assert_eq!(
        (
            model.value.as_str(),
            model.source.as_str(),
            model.file.as_str(),
            model.sha256.as_str()
        ),
        ("Space", "csv", FILE, sha.as_str())
    );
    let kept = c.store.device_fields(Some("pump-0000")).unwrap();
    assert!(
        kept.iter()
            .any(|f| f.field == "location" && f.value == "ICU 3")
    );

    // The same confirmation again: its diff no longer holds (pump-new-1 exists now).
    let n = c.store.audit().unwrap().len();
    let again = b.send("POST", "/import/confirm", Some(&form)).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert_eq!(c.store.audit().unwrap().len(), n);

    // The device page: each field's source, and the charts from its flow rows.
    report_flows(&c, "pump-0000");
    let p = b.get("/devices/pump-0000").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.body
            .contains("<td>location</td><td>ICU 3</td><td>csv</td>"),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains("<td>manufacturer</td><td>B. Braun</td><td>csv</td>")
    );
    assert!(
        p.body.contains("site file or API (not recorded)"),
        "the MAC's source"
    );
    assert!(p.body.contains(r#"<svg id="traffic-chart""#));
    assert!(p.body.contains(r#"<title id="traffic-title">"#));
    // Two flows of 400 + 800 bytes: 2400 bytes and 2 flows on one day of the table.
    assert!(p.body.contains("<td>2400</td>"), "{}", p.body);
    assert!(
        p.body.contains(r#"<svg id="baseline-chart""#),
        "a learning baseline"
    );
    assert!(!p.body.contains("style="), "no inline style under the CSP");
}
