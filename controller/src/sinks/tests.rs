//! A file sink resumes after a controller that died between delivery and cursor: what the file
//! holds is not written again; a file that is not this store's moves nothing; a line cut short
//! by the death is cut off and sent again whole.

use std::path::Path;

use wardgate_analysis::{
    detect::{Finding, Matrix, Severity, Technique},
    flow::DeviceRef,
};

use super::*;
use crate::{
    config::SinkKind,
    store::{NewAlert, SqliteStore},
};

const GW: &str = "gw-1";

fn finding(id: &str) -> Finding {
    let device = DeviceRef {
        name: "pump".into(),
        id: None,
        mac: None,
    };
    let mut f = Finding::new(
        "scan_vertical",
        &device,
        1,
        Severity::High,
        1.0,
        Technique::new("T0846", "Remote System Discovery", Matrix::Ics),
    );
    f.id = id.into();
    f
}

fn store_with(dir: &Path, n: usize) -> SqliteStore {
    let store = SqliteStore::open(&dir.join("data")).unwrap();
    let alerts: Vec<NewAlert> = (1..=n)
        .map(|i| {
            let f = finding(&format!("a{i}"));
            NewAlert {
                id: f.id.clone(),
                device: "pump".into(),
                severity: 2,
                body: serde_json::to_string(&f).unwrap(),
                detector: f.detector.clone(),
                peer: String::new(),
                count: 1,
                last_seen_ns: 1,
            }
        })
        .collect();
    store.insert_alerts(GW, &alerts).unwrap();
    store
}

fn file_sink(path: &Path) -> Sink {
    Sink::Ocsf(ocsf::OcsfSink::new(&SinkConfig {
        kind: SinkKind::Ocsf,
        name: Some("soc".into()),
        address: None,
        tls: None,
        path: Some(path.to_path_buf()),
        rotate_bytes: u64::MAX,
        keep: 1,
    }))
}

/// What a controller delivers and dies before recording: the next `n` rows after the cursor.
async fn deliver_without_cursor(sink: &mut Sink, store: &dyn Store, n: u32) {
    let rows = store
        .alerts_after(store.sink_cursor("soc").unwrap(), n)
        .unwrap();
    let batch: Vec<Outgoing> = rows
        .iter()
        .map(|r| Outgoing {
            finding: alerts::for_sink(r).unwrap(),
            update: r.is_update(),
            seq: r.seq,
        })
        .collect();
    sink.deliver(&batch).await.unwrap();
}

/// The alert ids in the file, in order.
fn ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["finding_info"]["uid"].as_str().unwrap().to_string()
        })
        .collect()
}

fn want(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("{GW}/a{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_dead_holder_wrote_is_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 5);
    let path = dir.path().join("ocsf.jsonl");
    let mut sink = file_sink(&path);
    deliver_without_cursor(&mut sink, &store, 3).await;
    assert_eq!(store.sink_cursor("soc").unwrap(), 0);

    // The controller that delivers next (a restart, or the lease's next holder).
    let mut next = file_sink(&path);
    resume("soc", &mut next, &store).unwrap();
    assert_eq!(
        store.sink_cursor("soc").unwrap(),
        3,
        "moved past the file's alerts"
    );
    assert_eq!(step("soc", &mut next, &store).await.unwrap(), (2, 2));
    assert_eq!(ids(&path), want(1..=5), "each alert once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_this_stores_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocsf.jsonl");
    // Another installation's file: its last alert is at sequence 2, with another id.
    let other = store_with(&dir.path().join("other"), 2);
    let mut sink = file_sink(&path);
    let rows = other.alerts_after(0, 10).unwrap();
    let mut batch: Vec<Outgoing> = rows
        .iter()
        .map(|r| Outgoing {
            finding: alerts::for_sink(r).unwrap(),
            update: false,
            seq: r.seq,
        })
        .collect();
    batch[1].finding.id = "elsewhere/b2".into();
    sink.deliver(&batch).await.unwrap();

    let store = store_with(dir.path(), 3);
    let mut next = file_sink(&path);
    resume("soc", &mut next, &store).unwrap();
    assert_eq!(store.sink_cursor("soc").unwrap(), 0, "the cursor stays");
    assert_eq!(step("soc", &mut next, &store).await.unwrap(), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_cut_short_is_cut_off_and_its_alert_sent_again_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 4);
    let path = dir.path().join("ocsf.jsonl");
    let mut sink = file_sink(&path);
    deliver_without_cursor(&mut sink, &store, 2).await;
    // The holder died writing its next batch: half of alert 3's line is on disk.
    let row = &store.alerts_after(2, 1).unwrap()[0];
    let line = ocsf::event(&Outgoing {
        finding: alerts::for_sink(row).unwrap(),
        update: false,
        seq: row.seq,
    })
    .to_string();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&line[..line.len() / 2]);
    std::fs::write(&path, text).unwrap();

    let mut next = file_sink(&path);
    resume("soc", &mut next, &store).unwrap();
    assert_eq!(store.sink_cursor("soc").unwrap(), 2);
    assert_eq!(step("soc", &mut next, &store).await.unwrap(), (2, 2));
    assert_eq!(ids(&path), want(1..=4), "every line whole, each alert once");
}
