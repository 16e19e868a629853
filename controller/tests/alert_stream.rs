//! The SOC's gRPC alert stream (`AlertService.Subscribe`) as a cursor over the alert store: a
//! client that reconnects with the last sequence number it received gets exactly what it
//! missed, an aggregated alert that grew comes again once as an update (a client from the
//! start gets its creation, then the update), a slow client loses
//! nothing however far behind it falls, and filters run in the store's query.

use std::{collections::BTreeSet, time::Duration};

use tonic::{Request, Streaming};
use wardgate_analysis::{
    detect::{Finding, Matrix, Severity, Technique},
    flow::DeviceRef,
};
use wardgate_proto::v1 as pb;
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";
const T0: u64 = 1_764_745_200_000_000_000;

fn finding(id: &str, device: &str, severity: Severity, count: u64) -> Finding {
    let device = DeviceRef {
        name: device.into(),
        id: None,
        mac: None,
    };
    let mut f = Finding::new(
        "scan_vertical",
        &device,
        T0 + count,
        severity,
        0.9,
        Technique::new("T0846", "Remote System Discovery", Matrix::Ics),
    );
    f.id = id.into();
    f.first_seen_ns = T0;
    f.count = count;
    f.peer = Some("198.51.100.10".parse().unwrap());
    f
}

fn scan(id: &str) -> Finding {
    finding(id, "pump-3a-bed12", Severity::High, 1)
}

/// Reports `findings` as the gateway's agent, in batches of 100, and waits for every ack.
async fn report(lab: &LabController, findings: &[Finding]) {
    let batches: Vec<pb::AlertBatch> = findings
        .chunks(100)
        .map(|c| pb::AlertBatch {
            alerts: c.iter().map(pb::Alert::from).collect(),
        })
        .collect();
    let n = batches.len();
    let mut acks = lab
        .agent(GW)
        .await
        .unwrap()
        .report_alerts(Request::new(tokio_stream::iter(batches)))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..n {
        acks.message().await.unwrap().unwrap();
    }
}

async fn lab(dir: &std::path::Path) -> LabController {
    LabController::start(dir, &[GW.to_string()], &[("sam", "soc")])
        .await
        .unwrap()
}

async fn subscribe(lab: &LabController, filter: pb::AlertFilter) -> Streaming<pb::Alert> {
    lab.alerts("sam")
        .await
        .unwrap()
        .subscribe(filter)
        .await
        .unwrap()
        .into_inner()
}

/// The next `n` alerts of the stream (each within 10 s).
async fn take(s: &mut Streaming<pb::Alert>, n: usize) -> Vec<pb::Alert> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let a = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} alerts arrived", out.len()))
            .unwrap()
            .expect("the stream ended");
        out.push(a);
    }
    out
}

/// Asserts nothing more arrives for a moment.
async fn quiet(s: &mut Streaming<pb::Alert>) {
    if let Ok(more) = tokio::time::timeout(Duration::from_millis(500), s.message()).await {
        panic!("unexpected: {more:?}");
    }
}

fn ids(v: &[pb::Alert]) -> Vec<&str> {
    v.iter().map(|a| a.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_resumes_after_its_last_seq_gets_exactly_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path()).await;
    let first: Vec<Finding> = (1..=10).map(|i| scan(&format!("s-{i}"))).collect();
    report(&lab, &first).await;

    let mut s = subscribe(&lab, pb::AlertFilter::default()).await;
    let got = take(&mut s, 4).await;
    assert_eq!(ids(&got), ["s-1", "s-2", "s-3", "s-4"]);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "{got:?}");
    assert!(got.iter().all(|a| !a.update));
    let last = got[3].seq;
    drop(s);

    // While the client is away: ten more, and s-2 (already received) grows to count 7.
    let more: Vec<Finding> = (11..=20).map(|i| scan(&format!("s-{i}"))).collect();
    report(&lab, &more).await;
    report(&lab, &[finding("s-2", "pump-3a-bed12", Severity::High, 7)]).await;

    let mut s = subscribe(
        &lab,
        pb::AlertFilter {
            after_seq: last,
            ..Default::default()
        },
    )
    .await;
    let got = take(&mut s, 17).await;
    let want: Vec<String> = (5..=20)
        .map(|i| format!("s-{i}"))
        .chain(["s-2".to_string()])
        .collect();
    assert_eq!(ids(&got), want, "the missing ones in order, none repeated");
    let s2 = &got[16];
    assert_eq!((s2.count, s2.update), (7, true), "s-2 again, as an update");
    assert!(got[..16].iter().all(|a| !a.update));
    quiet(&mut s).await;
    // Live: stored after the subscription, delivered at once.
    report(&lab, &[scan("s-21")]).await;
    assert_eq!(ids(&take(&mut s, 1).await), ["s-21"]);
    quiet(&mut s).await;

    // A fresh subscriber from 0 sees each alert once as new, and s-2's update once.
    let mut s = subscribe(&lab, pb::AlertFilter::default()).await;
    let all = take(&mut s, 22).await;
    let created: BTreeSet<&str> = all
        .iter()
        .filter(|a| !a.update)
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(created.len(), 21);
    let s2: Vec<(u64, bool)> = all
        .iter()
        .filter(|a| a.id == "s-2")
        .map(|a| (a.count, a.update))
        .collect();
    assert_eq!(s2, [(1, false), (7, true)]);
    quiet(&mut s).await;
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_far_behind_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path()).await;
    // Subscribed before anything is stored, then not reading while 5,000 alerts arrive: more
    // than the 4,096 the old broadcast channel held before it cut a subscriber off.
    let mut s = subscribe(&lab, pb::AlertFilter::default()).await;
    let n = 5_000;
    let sent: Vec<Finding> = (0..n).map(|i| scan(&format!("slow-{i}"))).collect();
    report(&lab, &sent).await;
    let got = take(&mut s, n).await;
    let want: Vec<String> = (0..n).map(|i| format!("slow-{i}")).collect();
    assert_eq!(ids(&got), want);
    quiet(&mut s).await;
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_run_in_the_query_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path()).await;
    report(
        &lab,
        &[
            finding("a", "pump-3a-bed12", Severity::Low, 1),
            finding("b", "pump-3a-bed12", Severity::Critical, 1),
            finding("c", "monitor-3a-bed12", Severity::Critical, 1),
            finding("d", "pump-3a-bed12", Severity::High, 1),
        ],
    )
    .await;
    let mut soc = lab.alerts("sam").await.unwrap();
    soc.acknowledge(pb::AcknowledgeRequest {
        ids: vec!["d".into()],
        reason: "SOC-1 triaged".into(),
    })
    .await
    .unwrap();
    let mut s = subscribe(
        &lab,
        pb::AlertFilter {
            device: "pump-3a-bed12".into(),
            min_severity: "high".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&take(&mut s, 1).await), ["b"]);
    quiet(&mut s).await;
    let mut s = subscribe(
        &lab,
        pb::AlertFilter {
            min_severity: "high".into(),
            include_acknowledged: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&take(&mut s, 3).await), ["b", "c", "d"]);
    // The enum form (this release's clients send both; the enum wins over the name).
    let mut s = subscribe(
        &lab,
        pb::AlertFilter {
            min_severity: "low".into(),
            min_severity_enum: pb::Severity::Critical.into(),
            include_acknowledged: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&take(&mut s, 2).await), ["b", "c"]);
    quiet(&mut s).await;

    let bad = soc
        .subscribe(pb::AlertFilter {
            min_severity: "loud".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let bad = soc
        .subscribe(pb::AlertFilter {
            min_severity_enum: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("min_severity"), "{bad:?}");
    let bad = soc
        .subscribe(pb::AlertFilter {
            after_seq: u64::MAX,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    lab.shutdown().await.unwrap();
}
