//! OCSF output judged by the schema's own models (py-ocsf-models from PyPI, installed by
//! `cargo xtask setup`).

use std::process::Command;

/// Validates each line of `jsonl` as an OCSF Detection Finding (class 2004, activity Create or
/// Update, type 200401 or 200402, the finding's uid kept, product wardgate) with
/// py-ocsf-models; panics with Python's complaint if any is refused. Returns how many lines
/// were validated.
pub fn validate_detection_findings(jsonl: &str) -> usize {
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
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the validator prints a count")
}
