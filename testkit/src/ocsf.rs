//! OCSF output judged twice: by the official schema of the version it claims (the
//! ocsf-schema repository at its release tag, `testkit/ocsf/`, compiled by the OCSF project's
//! ocsf-lib and checked by `tools/ocsf_check.py`: unknown attributes refused, types, enums,
//! required attributes), and by py-ocsf-models' pydantic classes (both from PyPI, installed by
//! `cargo xtask setup`).

use std::{path::Path, process::Command};

/// The OCSF schema release the output must follow (`analysis` `OCSF_VERSION`).
pub const SCHEMA: &str = "ocsf/ocsf-schema-1.5.0.tar.gz";

/// Checks each line of `jsonl` against the official OCSF schema (`SCHEMA`); panics with every
/// problem (event number, attribute path, what is wrong) if any. Returns how many events were
/// checked.
pub fn validate_against_schema(jsonl: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("tools/ocsf_check.py"))
        .arg(root.join(SCHEMA))
        .arg(&input)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the OCSF schema ({SCHEMA}, compiled by ocsf-lib, installed by `cargo xtask setup`) \
         refused the output:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the checker prints a count")
}

/// Validates each line of `jsonl` as an OCSF Detection Finding against the official schema
/// ([`validate_against_schema`]) and with py-ocsf-models (class 2004, activity Create or
/// Update, type 200401 or 200402, the finding's uid kept, product wardgate); panics with the
/// complaint if any is refused. Returns how many lines were validated.
pub fn validate_detection_findings(jsonl: &str) -> usize {
    let checked = validate_against_schema(jsonl);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("findings.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    let script = r#"
import json, sys
from py_ocsf_models.events.findings.detection_finding import DetectionFinding
n = 0
for line in open(sys.argv[1]):
    v = json.loads(line)
    m = DetectionFinding.model_validate(v)
    assert m.class_uid == 2004 and m.activity_id in (1, 2), (m.class_uid, m.activity_id)
    assert m.type_uid == 2004 * 100 + m.activity_id, (m.type_uid, m.activity_id)
    assert m.finding_info.uid == v["finding_info"]["uid"]
    assert m.metadata.product.name == "wardgate"
    n += 1
print(n)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&input)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "py-ocsf-models (installed by `cargo xtask setup`) refused the output:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: usize = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the validator prints a count");
    assert_eq!(n, checked, "both validators read every line");
    n
}
