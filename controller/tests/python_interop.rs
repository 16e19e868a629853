//! Interoperability: a Python grpcio client, with stubs generated from proto/wardgate/v1 by
//! grpcio-tools, lists devices and assigns a profile over mTLS; a viewer is refused. The Python
//! packages come from `cargo xtask setup`; without them this test fails and says so.

use std::{path::PathBuf, process::Command};

use serde_json::Value;
use wardgate_controller::{lab::LabController, store::Store};

const GW: &str = "gw-ward-3";

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_lists_devices_and_assigns_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::with_demo_site(
        dir.path(),
        &[GW.to_string()],
        &[("eve", "engineer"), ("vic", "viewer")],
        "eve",
    )
    .await
    .unwrap();
    let before = lab.store.latest_generation(GW).unwrap();

    let script = root().join("controller/tests/python/interop.py");
    let out = tokio::task::spawn_blocking({
        let addr = format!("127.0.0.1:{}", lab.addr.port());
        let certs = lab.certs().to_path_buf();
        move || {
            Command::new("python3")
                .arg(&script)
                .args(["--addr", &addr, "--certs"])
                .arg(&certs)
                .arg("--proto-root")
                .arg(root().join("proto"))
                .args([
                    "--device",
                    "us-3a-portable",
                    "--profile",
                    "ct",
                    "--reason",
                    "INC-12 from the python client",
                ])
                .output()
                .expect("python3 runs")
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(3),
        "grpcio / grpcio-tools are not installed for python3 (run `cargo xtask setup`): {stderr}"
    );
    assert!(out.status.success(), "python client failed: {stderr}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    println!("{lines:#?}");

    let mut names: Vec<&str> = lines[0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    let mut stored: Vec<String> = lab
        .store
        .snapshot()
        .unwrap()
        .devices
        .into_iter()
        .map(|d| d.name)
        .collect();
    stored.sort_unstable();
    assert_eq!(names, stored, "python sees the devices the store holds");
    assert!(names.contains(&"us-3a-portable"));

    let assigned = &lines[1]["assigned"];
    let generation = assigned["generations"][GW].as_u64().unwrap() as u32;
    assert_eq!(
        generation,
        before + 1,
        "the assignment compiled a generation"
    );
    assert_eq!(lab.store.latest_generation(GW).unwrap(), generation);
    assert_eq!(lines[2]["device"]["profile"], "ct");

    let audit = lab.store.audit().unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.reason.as_str()),
        ("user:eve", "INC-12 from the python client")
    );
    assert_eq!(last.seq, assigned["audit_seq"].as_u64().unwrap());
    assert_eq!(lines[3]["viewer_assign"], "PERMISSION_DENIED");
    assert_eq!(
        lab.store.audit().unwrap().len(),
        audit.len(),
        "the refused viewer wrote nothing"
    );
    lab.shutdown().await.unwrap();
}
