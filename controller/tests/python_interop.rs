//! Interoperability: a Python grpcio client, with stubs generated from proto/wardgate/v1 by
//! grpcio-tools, lists devices and assigns a profile over mTLS; a viewer is refused; as the
//! gateway's agent it receives and decodes the typed policy bundle. The Python
//! packages come from `cargo xtask setup`; without them this test fails and says so.

use std::{path::PathBuf, process::Command};

use serde_json::Value;
use wardgate_controller::store::Store;
use wardgate_testkit::controller::LabController;

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
                    "--gateway",
                    GW,
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

    // The viewer's refused assign is recorded as a `refused` entry; the last write is eve's.
    let audit: Vec<_> = lab
        .store
        .audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.action != "refused")
        .collect();
    let last = audit.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.reason.as_str()),
        ("user:eve", "INC-12 from the python client")
    );
    assert_eq!(last.seq, assigned["audit_seq"].as_u64().unwrap());
    assert_eq!(lines[3]["viewer_assign"], "PERMISSION_DENIED");
    let all = lab.store.audit().unwrap();
    assert_eq!(
        all.iter().filter(|e| e.action != "refused").count(),
        audit.len(),
        "the refused viewer wrote nothing"
    );
    assert!(
        all.iter()
            .any(|e| e.action == "refused" && e.actor == "user:vic"),
        "the viewer's attempt is recorded"
    );

    // The typed bundle as Python decodes it is the stored generation.
    let b = &lines[4]["bundle"];
    let latest = lab.store.latest(GW).unwrap().unwrap();
    let epoch = lab.store.epoch().unwrap();
    let state = latest.state(&epoch).unwrap();
    assert_eq!(b["gateway"], GW);
    assert_eq!(b["generation"].as_u64().unwrap() as u32, generation);
    assert_eq!(b["epoch"], epoch.as_str());
    assert_eq!(b["registered_epoch"], epoch.as_str());
    assert_eq!(b["content_hash"], latest.content_hash().as_str());
    assert_eq!(b["ports"].as_u64().unwrap() as usize, state.ports.len());
    let rules: usize = state.policies.iter().map(|p| p.rules.len()).sum();
    assert_eq!(b["rules"].as_u64().unwrap() as usize, rules);
    let devices = b["devices"].as_object().unwrap();
    assert_eq!(devices.len(), state.devices.len());
    for d in &state.devices {
        let p = &devices[&d.name];
        assert_eq!(p["id"].as_u64().unwrap() as u32, d.device_id, "{}", d.name);
        let policy = state
            .policies
            .iter()
            .find(|x| x.policy_id == d.policy_id)
            .unwrap();
        assert_eq!(p["profile"], policy.profile.as_str());
        assert_eq!(
            p["profile_version"].as_u64().unwrap() as u32,
            policy.profile_version
        );
        assert_eq!(p["mac"], d.mac.to_string().replace(':', "").as_str());
        let addrs: Vec<String> = d
            .addrs
            .iter()
            .map(|a| match a {
                std::net::IpAddr::V4(a) => hex_of(&a.octets()),
                std::net::IpAddr::V6(a) => hex_of(&a.octets()),
            })
            .collect();
        assert_eq!(p["addrs"], serde_json::json!(addrs));
    }
    assert_eq!(devices["us-3a-portable"]["profile"], "ct");
    lab.shutdown().await.unwrap();
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
