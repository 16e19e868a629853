//! The controller on loopback with real mTLS: policy push to a watching agent, resume after a
//! reconnect, every refusal with its gRPC status (and nothing written), the audit chain, alerts.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::{
    Code, Request,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use wardgate_controller::store::{SqliteStore, Store};
use wardgate_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient, agent_service_client::AgentServiceClient,
    alert_service_client::AlertServiceClient,
};
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";

struct Controller {
    _dir: tempfile::TempDir,
    lab: LabController,
    store: Arc<SqliteStore>,
}

impl Controller {
    /// A controller with the demo site and the profile library loaded through the API, and a
    /// second gateway with no devices.
    async fn start() -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let lab = LabController::with_demo_site(
            dir.path(),
            &[GW.to_string(), "gw-other".to_string()],
            &[
                ("eve", "engineer"),
                ("sam", "soc"),
                ("vic", "viewer"),
                ("rob", "nurse"),
            ],
            "eve",
        )
        .await
        .unwrap();
        lab.admin("eve")
            .await
            .unwrap()
            .upsert_gateway(pb::UpsertGatewayRequest {
                gateway: Some(pb::Gateway {
                    name: "gw-other".into(),
                    interfaces: vec!["wg-dev0".into()],
                    ..Default::default()
                }),
                reason: "CHG-1 commissioning".into(),
            })
            .await
            .unwrap();
        let store = lab.store.clone();
        Controller {
            _dir: dir,
            lab,
            store,
        }
    }

    /// A TLS channel as `who` (a certificate name), or with no client certificate at all.
    async fn channel(&self, who: Option<&str>) -> Result<Channel, tonic::transport::Error> {
        let certs = self.lab.certs();
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(
                std::fs::read(certs.join("ca.pem")).unwrap(),
            ))
            .domain_name("localhost");
        if let Some(who) = who {
            let cert = std::fs::read(certs.join(format!("{who}.pem"))).unwrap();
            let key = std::fs::read(certs.join(format!("{who}.key"))).unwrap();
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Channel::from_shared(self.lab.url())
            .unwrap()
            .tls_config(tls)?
            .timeout(Duration::from_secs(10))
            .connect()
            .await
    }

    async fn admin(&self, who: &str) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel(Some(who)).await.unwrap())
    }

    async fn agent(&self, gw: &str) -> AgentServiceClient<Channel> {
        self.lab.agent(gw).await.unwrap()
    }

    /// Audit entries other than recorded refusals, and each gateway's latest generation.
    fn counts(&self) -> (usize, u32, u32) {
        let audit = self
            .store
            .audit()
            .unwrap()
            .iter()
            .filter(|e| e.action != "refused")
            .count();
        (
            audit,
            self.store.latest_generation(GW).unwrap(),
            self.store.latest_generation("gw-other").unwrap(),
        )
    }
}

async fn next_bundle(s: &mut tonic::Streaming<pb::PolicyBundle>) -> pb::PolicyBundle {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("bundle within 5 s")
        .unwrap()
        .unwrap()
}

fn profile_of(bundle: &pb::PolicyBundle, device: &str) -> String {
    let state = wardgate_policy::DesiredState::try_from(bundle.clone()).unwrap();
    let d = state.devices.iter().find(|d| d.name == device).unwrap();
    state
        .policies
        .iter()
        .find(|p| p.policy_id == d.policy_id)
        .unwrap()
        .profile
        .clone()
}

/// Version skew (issue 23 point 4): the previous release (0.1.0) and an agent that sends no
/// version register; an agent two minor releases away is refused with FailedPrecondition naming
/// both releases, and nothing about the gateway is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_release_this_controller_cannot_serve_is_refused_naming_both() {
    let c = Controller::start().await;
    let mut agent = c.agent(GW).await;
    let this = wardgate_proto::compat::VERSION;
    for version in ["", "0.1.0", this] {
        let reg = agent
            .register(pb::RegisterRequest {
                gateway: GW.into(),
                agent_version: version.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("agent `{version}` refused: {e}"))
            .into_inner();
        assert_eq!(reg.controller_version, this);
        assert!(reg.latest_generation >= 1);
    }
    for version in ["0.9.0", "1.2.0", "0.2"] {
        let e = agent
            .register(pb::RegisterRequest {
                gateway: GW.into(),
                agent_version: version.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{version}: {e}");
        assert!(
            e.message().contains(&format!("agent {version}"))
                && e.message().contains(&format!("controller {this}")),
            "{version}: {}",
            e.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_reaches_a_watching_agent_and_a_reconnect_resumes() {
    let c = Controller::start().await;
    let mut agent = c.agent(GW).await;
    let reg = agent
        .register(pb::RegisterRequest {
            gateway: GW.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reg.latest_generation >= 1, "seeding compiled generations");
    let mut watch = agent
        .watch_policy(pb::WatchPolicyRequest {
            gateway: GW.into(),
            last_applied_generation: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Bundles are full states: a fresh agent gets the latest only, typed, with the epoch.
    let first = next_bundle(&mut watch).await;
    assert_eq!(first.generation, reg.latest_generation);
    assert_eq!(first.epoch, reg.epoch);
    let stored = c.store.latest(GW).unwrap().unwrap();
    assert_eq!(first.content_hash, stored.content_hash());
    assert_eq!(
        wardgate_policy::DesiredState::try_from(first.clone()).unwrap(),
        stored.state(&reg.epoch).unwrap()
    );

    let mut eve = c.admin("user-eve").await;
    let t = Instant::now();
    let w = eve
        .assign_profile(pb::AssignProfileRequest {
            accept_impact: false,
            device: "us-3a-portable".into(),
            profile: "ct".into(),
            reason: "INC-7 relabelled".into(),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    let g = w.generations[GW];
    assert!(
        !w.generations.contains_key("gw-other"),
        "only the affected gateway gets a generation"
    );
    let b = next_bundle(&mut watch).await;
    println!("assign -> received: {:?}", t.elapsed());
    assert_eq!(b.generation, g);
    assert_eq!(b.reason, "INC-7 relabelled");
    assert_eq!(profile_of(&b, "us-3a-portable"), "ct");

    // Disconnect, two more changes, reconnect from the last applied generation.
    drop(watch);
    eve.set_mode(pb::SetModeRequest {
        accept_impact: false,
        device: "us-3a-portable".into(),
        mode: "enforce".into(),
        reason: "CHG-9".into(),
        dry_run: false,
        for_minutes: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    eve.set_mode(pb::SetModeRequest {
        accept_impact: false,
        device: "monitor-3a-bed12".into(),
        mode: "enforce".into(),
        reason: "CHG-9".into(),
        dry_run: false,
        for_minutes: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut watch = agent
        .watch_policy(pb::WatchPolicyRequest {
            gateway: GW.into(),
            last_applied_generation: g,
            epoch: b.epoch.clone(),
            content_hash: b.content_hash.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // Only the newest of what it missed.
    assert_eq!(next_bundle(&mut watch).await.generation, g + 2);
    // A change that compiles to the same policy makes no generation.
    let w = eve
        .set_location(pb::SetLocationRequest {
            device: "us-3a-portable".into(),
            location: "Ward 3B".into(),
            reason: "moved".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(w.generations.is_empty());
    agent
        .report_status(pb::StatusReport {
            gateway: GW.into(),
            applied_generation: g + 2,
            error: String::new(),
            epoch: reg.epoch.clone(),
            health: None,
        })
        .await
        .unwrap();
    let gws = eve
        .list_gateways(pb::ListGatewaysRequest {})
        .await
        .unwrap()
        .into_inner()
        .gateways;
    let gw = gws.iter().find(|x| x.name == GW).unwrap();
    assert_eq!(
        (gw.latest_generation, gw.applied_generation),
        (g + 2, g + 2)
    );
    assert_eq!((&gw.applied_epoch, &gw.epoch), (&reg.epoch, &reg.epoch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_the_right_status_and_write_nothing() {
    let c = Controller::start().await;
    let before = c.counts();

    // No client certificate: the TLS handshake is refused, no RPC happens.
    let no_cert = match c.channel(None).await {
        Err(e) => format!("connect: {e}"),
        Ok(ch) => {
            let r = AdminServiceClient::new(ch)
                .list_devices(pb::ListDevicesRequest::default())
                .await;
            let s = r.expect_err("a client without a certificate must be refused");
            // TLS 1.3 lets the client finish its half of the handshake before the server checks
            // the certificate, so the refusal surfaces on the first call, as a closed or failed
            // connection (Unavailable, Unknown or Cancelled by timing), never from a handler.
            let from_transport = std::error::Error::source(&s)
                .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
            assert!(
                from_transport && s.code() != Code::Ok,
                "refused by the TLS layer, not answered: {s:?}"
            );
            format!("{:?}", s.code())
        }
    };
    println!("no certificate -> {no_cert}");

    // A certificate with no known role.
    let mut rob = c.admin("user-rob").await;
    let s = rob
        .list_devices(pb::ListDevicesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // Wrong gateway: gw-other's agent may not watch or report for gw-ward-3.
    let mut other = c.agent("gw-other").await;
    let s = other
        .watch_policy(pb::WatchPolicyRequest {
            gateway: GW.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let s = other
        .report_status(pb::StatusReport {
            gateway: GW.into(),
            applied_generation: 9,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    // Wrong role.
    let assign = |device: &str, profile: &str, reason: &str| pb::AssignProfileRequest {
        accept_impact: false,
        device: device.into(),
        profile: profile.into(),
        reason: reason.into(),
        dry_run: false,
    };
    let mut vic = c.admin("user-vic").await;
    let s = vic
        .assign_profile(assign("pump-3a-bed12", "ct", "x"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let mut sam = c.admin("user-sam").await;
    let s = sam
        .set_mode(pb::SetModeRequest {
            accept_impact: false,
            device: "pump-3a-bed12".into(),
            mode: "learn".into(),
            reason: "x".into(),
            dry_run: false,
            for_minutes: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let mut gw_as_admin =
        AdminServiceClient::new(c.channel(Some("gateway-gw-ward-3")).await.unwrap());
    let s = gw_as_admin
        .list_devices(pb::ListDevicesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let mut vic_alerts = AlertServiceClient::new(c.channel(Some("user-vic")).await.unwrap());
    let s = vic_alerts
        .acknowledge(pb::AcknowledgeRequest {
            ids: vec!["a".into()],
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    // Unknown device or profile.
    let mut eve = c.admin("user-eve").await;
    let s = eve
        .assign_profile(assign("no-such-pump", "ct", "x"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = eve
        .assign_profile(assign("pump-3a-bed12", "no-such-profile", "x"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = eve
        .get_device(pb::GetDeviceRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");

    // Invalid requests.
    let s = eve
        .assign_profile(assign("pump-3a-bed12", "ct", "  "))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "no reason: {s:?}");
    assert!(s.message().contains("reason"));
    let s = eve
        .set_mode(pb::SetModeRequest {
            accept_impact: false,
            device: "pump-3a-bed12".into(),
            mode: "block".into(),
            reason: "x".into(),
            dry_run: false,
            for_minutes: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = eve.upsert_profile(pb::UpsertProfileRequest { accept_impact: false, yaml: "name: bad\nflows:\n  - direction: from-device\n    protocol: tcp\n    peers: [any]\n    ports: 70000\n".into(), reason: "x".into(), dry_run: false, }).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("request:6:12"), "{}", s.message());
    // A device whose profile uses a group the site lacks: refused by the compiler, nothing stored.
    let s = eve
        .upsert_profile(pb::UpsertProfileRequest { accept_impact: false,
            yaml: "name: pump-x\nflows:\n  - direction: from-device\n    protocol: tcp\n    peers: [group:nowhere]\n    ports: 443\n".into(),
            reason: "x".into(), dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    // Oversized message.
    let huge = "#".repeat(2 << 20);
    let s = eve
        .upsert_profile(pb::UpsertProfileRequest {
            accept_impact: false,
            yaml: huge,
            reason: "x".into(),
            dry_run: false,
        })
        .await
        .unwrap_err();
    println!("oversized -> {:?}", s.code());
    assert!(
        matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{s:?}"
    );

    assert_eq!(
        c.counts(),
        before,
        "no refused request wrote anything (audit entries, generations)"
    );
    // Refusals for want of a role are recorded, each as one `refused` entry naming who tried.
    let refused: Vec<_> = c
        .store
        .audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "refused")
        .collect();
    assert!(!refused.is_empty());
    assert!(
        refused
            .iter()
            .all(|e| e.actor.starts_with("user:") || e.actor.starts_with("gateway:"))
    );
    assert!(c.store.profile("pump-x").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_detects_edits_and_deletions() {
    let c = Controller::start().await;
    let mut eve = c.admin("user-eve").await;
    eve.set_mode(pb::SetModeRequest {
        accept_impact: false,
        device: "pump-3a-bed12".into(),
        mode: "monitor".into(),
        reason: "INC-42 false positives".into(),
        dry_run: false,
        for_minutes: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let entries = eve
        .list_audit(pb::ListAuditRequest { limit: 1 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let last = &entries[0];
    assert_eq!(
        (
            last.actor.as_str(),
            last.action.as_str(),
            last.reason.as_str()
        ),
        ("user:eve", "set_mode", "INC-42 false positives")
    );
    assert!(
        last.diff.contains("\"enforce\"") && last.diff.contains("\"monitor\""),
        "{}",
        last.diff
    );
    let v = eve
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(v.intact, "{}", v.problem);

    c.store
        .execute_raw("UPDATE audit SET reason = 'nothing to see' WHERE seq = 3")
        .unwrap();
    let v = eve
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        !v.intact && v.problem.contains("entry 3 was edited"),
        "{}",
        v.problem
    );
    c.store
        .execute_raw("DELETE FROM audit WHERE seq = 3")
        .unwrap();
    let v = eve
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        !v.intact && v.problem.contains("entry 3 is missing"),
        "{}",
        v.problem
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_stored_once_streamed_to_the_soc_and_acknowledged() {
    let c = Controller::start().await;
    let mut soc = AlertServiceClient::new(c.channel(Some("user-sam")).await.unwrap());
    let mut sub = soc
        .subscribe(pb::AlertFilter {
            min_severity: "high".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let mut agent = c.agent(GW).await;
    let alert = |id: &str, severity: &str| pb::Alert {
        id: id.into(),
        device: "pump-3a-bed12".into(),
        profile: "infusion-pump".into(),
        kind: "deny".into(),
        severity: severity.into(),
        mode: "enforce".into(),
        src: "192.0.2.10".into(),
        src_port: 40000,
        dst: "198.51.100.10".into(),
        dst_port: 445,
        protocol: 6,
        mitre_technique: "T0866".into(),
        observed_unix_ms: now_ms(),
        ..Default::default()
    };
    let batches = vec![
        pb::AlertBatch {
            alerts: vec![alert("a-1", "high"), alert("a-2", "low")],
        },
        // At-least-once: the agent re-sends a-1 after a lost ack.
        pb::AlertBatch {
            alerts: vec![alert("a-1", "high"), alert("a-3", "critical")],
        },
    ];
    let mut acks = agent
        .report_alerts(Request::new(tokio_stream::iter(batches)))
        .await
        .unwrap()
        .into_inner();
    let a1 = acks.message().await.unwrap().unwrap();
    let a2 = acks.message().await.unwrap().unwrap();
    assert_eq!(
        (a1.ids, a2.ids),
        (
            vec!["a-1".to_string(), "a-2".into()],
            vec!["a-1".to_string(), "a-3".into()]
        )
    );

    let first = tokio::time::timeout(Duration::from_secs(5), sub.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.id.as_str(), first.gateway.as_str(), first.dst_port),
        ("a-1", GW, 445)
    );
    let list = soc
        .list(pb::AlertFilter::default())
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(list.len(), 3, "a-1 stored once");
    soc.acknowledge(pb::AcknowledgeRequest {
        ids: vec!["a-1".into()],
        reason: "SOC-77 known scanner".into(),
    })
    .await
    .unwrap();
    let list = soc
        .list(pb::AlertFilter::default())
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(
        list.iter()
            .map(|a| a.id.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        ["a-2", "a-3"].into()
    );
    let s = soc
        .acknowledge(pb::AcknowledgeRequest {
            ids: vec!["a-404".into()],
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    // An agent may not report alerts for another gateway.
    let mut other = c.agent("gw-other").await;
    let mut bad = alert("b-1", "high");
    bad.gateway = GW.into();
    let mut acks = other
        .report_alerts(Request::new(tokio_stream::iter(vec![pb::AlertBatch {
            alerts: vec![bad],
        }])))
        .await
        .unwrap()
        .into_inner();
    // Refused by id in the acknowledgement (the agent drops it), never stored.
    let ack = acks.message().await.unwrap().unwrap();
    assert!(ack.ids.is_empty());
    assert_eq!(
        (ack.refused[0].id.as_str(), ack.refused[0].code.as_str()),
        ("b-1", "permission_denied")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_profile_peer_recompiles_every_gateway_holding_that_profile() {
    let c = Controller::start().await;
    let mut eve = c.admin("user-eve").await;
    eve.upsert_profile(pb::UpsertProfileRequest { accept_impact: false,
        yaml: "name: pump-peers\nflows:\n  - direction: from-device\n    protocol: tcp\n    peers: [same-profile]\n    ports: 8443\n".into(),
        reason: "CHG-5 pumps sync drug libraries peer to peer".into(), dry_run: false,
    })
    .await
    .unwrap();
    let w = eve
        .upsert_device(pb::UpsertDeviceRequest {
            accept_impact: false,
            device: Some(pb::Device {
                name: "pump-other".into(),
                id: 50,
                mac: "02:00:00:00:00:50".into(),
                addresses: vec!["192.0.2.50".into()],
                profile: "pump-peers".into(),
                mode: "enforce".into(),
                gateway: "gw-other".into(),
                ..Default::default()
            }),
            reason: "CHG-5".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        w.generations.keys().collect::<Vec<_>>(),
        ["gw-other"],
        "gw-ward-3 holds no pump-peers device yet"
    );
    // A device on gw-ward-3 joins the profile: its address enters gw-other's rules too.
    let w = eve
        .assign_profile(pb::AssignProfileRequest {
            accept_impact: false,
            device: "us-3a-portable".into(),
            profile: "pump-peers".into(),
            reason: "CHG-5".into(),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut gateways: Vec<&str> = w.generations.keys().map(String::as_str).collect();
    gateways.sort_unstable();
    assert_eq!(gateways, ["gw-other", GW], "both gateways recompiled");
    let rows = c
        .store
        .generations_after("gw-other", w.generations["gw-other"] - 2)
        .unwrap();
    let [before, after] = [&rows[0], &rows[1]].map(|r| r.state("").unwrap());
    assert!(
        after.peers.len() > before.peers.len(),
        "gw-other's policy gained the new peer's addresses: {} -> {} peer entries",
        before.peers.len(),
        after.peers.len()
    );
}

/// Device, policy and rule ids of `GW`'s latest generation, by name.
type Ids = (
    std::collections::BTreeMap<String, u32>,
    std::collections::BTreeMap<String, (u32, u32)>,
    std::collections::BTreeMap<(String, String), u32>,
);

fn ids(c: &Controller) -> Ids {
    let s = c.store.latest(GW).unwrap().unwrap().state("").unwrap();
    (
        s.devices
            .iter()
            .map(|d| (d.name.clone(), d.device_id))
            .collect(),
        s.policies
            .iter()
            .map(|p| (p.profile.clone(), (p.policy_id, p.profile_version)))
            .collect(),
        s.policies
            .iter()
            .flat_map(|p| {
                p.rules
                    .iter()
                    .map(|r| ((p.profile.clone(), r.name.clone()), r.rule_id))
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_survive_unrelated_edits_and_a_reordered_site() {
    let c = Controller::start().await;
    let (devices, policies, rules) = ids(&c);
    assert!(
        devices.len() >= 3 && rules.len() >= 10,
        "{devices:?} {rules:?}"
    );
    let mut eve = c.admin("user-eve").await;

    // A new device class whose name sorts before every other, on this gateway; the request's
    // id (taken by the pump) is not the device's id.
    eve.upsert_profile(pb::UpsertProfileRequest {
        accept_impact: false,
        yaml: "name: aaa-scale\ndescription: a scale\nflows:\n  - {name: results, \
               direction: from-device, protocol: tcp, peers: [group:his], ports: 2575}\n"
            .into(),
        reason: "CHG-20".into(),
        dry_run: false,
    })
    .await
    .unwrap();
    eve.upsert_device(pb::UpsertDeviceRequest {
        accept_impact: false,
        device: Some(pb::Device {
            name: "scale-3a".into(),
            id: devices["pump-3a-bed12"],
            mac: "02:00:00:00:00:5c".into(),
            addresses: vec!["192.0.2.60".into()],
            profile: "aaa-scale".into(),
            mode: "enforce".into(),
            gateway: GW.into(),
            ..Default::default()
        }),
        reason: "CHG-20".into(),
    })
    .await
    .unwrap();
    // A new flow at the top of the pump's own profile.
    let pump = c.store.profile("infusion-pump").unwrap().unwrap();
    let yaml = pump.yaml.replacen(
        "flows:\n",
        "flows:\n  - name: firmware from the vendor mirror\n    direction: from-device\n    \
         protocol: tcp\n    peers: [group:infusion-server]\n    ports: 8443\n",
        1,
    );
    assert_ne!(yaml, pump.yaml);
    eve.upsert_profile(pb::UpsertProfileRequest {
        accept_impact: false,
        yaml,
        reason: "CHG-21".into(),
        dry_run: false,
    })
    .await
    .unwrap();

    let (d2, p2, r2) = ids(&c);
    for (name, id) in &devices {
        assert_eq!(d2[name], *id, "device {name}");
    }
    for (name, (id, _)) in &policies {
        assert_eq!(p2[name].0, *id, "policy of {name}");
    }
    for (key, id) in &rules {
        assert_eq!(r2[key], *id, "rule {key:?}");
    }
    let new_rule = r2[&(
        "infusion-pump".to_string(),
        "firmware from the vendor mirror".to_string(),
    )];
    assert!(!rules.values().any(|&r| r == new_rule), "a fresh rule id");
    assert!(
        !devices.values().any(|&d| d == d2["scale-3a"]),
        "a fresh device id"
    );
    assert!(
        !policies.values().any(|&(p, _)| p == p2["aaa-scale"].0),
        "a fresh policy id"
    );
    assert_eq!(
        p2["infusion-pump"].1,
        policies["infusion-pump"].1 + 1,
        "profile version"
    );

    // The site pushed again by positions (no ids) with a new device first: nobody is
    // renumbered.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("device-profiles/sites/demo-ward.yaml")).unwrap();
    // `  - id: N` / `    name: X` becomes `  - name: X`.
    let mut lines = Vec::new();
    let mut item = false;
    for l in text.lines() {
        if l.starts_with("  - id: ") {
            item = true;
        } else if item {
            lines.push(l.replacen("    ", "  - ", 1));
            item = false;
        } else {
            lines.push(l.to_string());
        }
    }
    let text = lines.join("\n").replace(
        "devices:\n",
        "devices:\n  - name: pump-3a-bed14\n    mac: 02:00:00:00:00:5d\n    addresses: [192.0.2.61]\n    \
         profile: infusion-pump\n    mode: enforce\n    gateway: gw-ward-3\n",
    );
    assert!(!text.contains("id: 1\n"), "{text}");
    let site = c._dir.path().join("reordered.yaml");
    std::fs::write(&site, text).unwrap();
    c.lab
        .push_site("eve", &site, &root.join("device-profiles"), "CHG-22")
        .await
        .unwrap();
    let (d3, p3, r3) = ids(&c);
    for (name, id) in &d2 {
        assert_eq!(d3[name], *id, "device {name} after the re-push");
    }
    for (name, (id, _)) in &policies {
        assert_eq!(p3[name].0, *id, "policy of {name} after the re-push");
    }
    for (key, id) in &rules {
        assert_eq!(r3[key], *id, "rule {key:?} after the re-push");
    }
    assert!(!d2.values().any(|&d| d == d3["pump-3a-bed14"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_too_big_to_send_is_refused_and_nothing_is_written() {
    let c = Controller::start().await;
    // Two profiles of 400 flows to a group of 2,000 IPv6 hosts: ~18 MB of bundle each.
    let writes = c.lab.grow_policy("eve", GW, 2, 400, 2_000).await.unwrap();
    assert_eq!(writes.len(), 2);
    let first = writes[0].as_ref().unwrap().generations[GW];
    let stored = c.store.latest(GW).unwrap().unwrap();
    assert_eq!(stored.generation, first);
    let before = c.counts();
    let s = writes[1].as_ref().unwrap_err();
    println!("refused: {s:?}");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    for part in [
        "gw-ward-3",
        "bundle",
        "limit",
        &wardgate_proto::MAX_BUNDLE_BYTES.to_string(),
    ] {
        assert!(s.message().contains(part), "{part}: {}", s.message());
    }
    assert_eq!(c.counts(), before, "no audit entry, no generation");
    assert!(
        c.store.device("big-device-1").unwrap().is_none(),
        "the device is not stored"
    );
}

/// Sends `alerts` as `gw`'s agent, one batch each, and waits for every acknowledgement.
async fn report(c: &Controller, gw: &str, alerts: Vec<pb::Alert>) {
    let n = alerts.chunks(100).count();
    let batches: Vec<pb::AlertBatch> = alerts
        .chunks(100)
        .map(|a| pb::AlertBatch { alerts: a.to_vec() })
        .collect();
    let mut acks = c
        .agent(gw)
        .await
        .report_alerts(Request::new(tokio_stream::iter(batches)))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..n {
        acks.message().await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_ids_are_per_gateway_filters_run_before_the_limit_and_limits_are_capped() {
    let c = Controller::start().await;
    let alert = |id: String, severity: &str, device: &str| pb::Alert {
        id,
        device: device.into(),
        kind: "deny".into(),
        severity: severity.into(),
        observed_unix_ms: now_ms(),
        ..Default::default()
    };
    // Two gateways whose agents started in the same millisecond use the same ids.
    report(
        &c,
        GW,
        vec![alert("1000-1".into(), "critical", "pump-3a-bed12")],
    )
    .await;
    report(
        &c,
        "gw-other",
        vec![alert("1000-1".into(), "low", "pump-other")],
    )
    .await;
    // Then a flood of newer low alerts.
    tokio::time::sleep(Duration::from_millis(5)).await;
    report(
        &c,
        GW,
        (0..1_200)
            .map(|i| alert(format!("2000-{i}"), "low", "us-3a-portable"))
            .collect(),
    )
    .await;

    let mut soc = AlertServiceClient::new(c.channel(Some("user-sam")).await.unwrap());
    let reader = soc.clone();
    let list = |f: pb::AlertFilter| {
        let mut soc = reader.clone();
        async move { soc.list(f).await.unwrap().into_inner().alerts }
    };
    // Both gateways' 1000-1 are kept, each under its gateway.
    let other: Vec<(String, String)> = list(pb::AlertFilter {
        gateway: "gw-other".into(),
        ..Default::default()
    })
    .await
    .into_iter()
    .map(|a| (a.id, a.severity))
    .collect();
    assert_eq!(other, [("1000-1".to_string(), "low".to_string())]);
    // The old critical alert is found under a small limit: filters run before the limit.
    let critical = list(pb::AlertFilter {
        min_severity: "critical".into(),
        limit: 5,
        ..Default::default()
    })
    .await;
    assert_eq!(
        critical
            .iter()
            .map(|a| (a.gateway.as_str(), a.id.as_str()))
            .collect::<Vec<_>>(),
        [(GW, "1000-1")]
    );
    let by_device = list(pb::AlertFilter {
        device: "pump-other".into(),
        limit: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(by_device.len(), 1);
    assert_eq!(by_device[0].gateway, "gw-other");

    // Any limit is capped by the server.
    let all = list(pb::AlertFilter {
        limit: 100_000,
        ..Default::default()
    })
    .await;
    assert_eq!(all.len(), 1000);

    // A bare id two gateways use must name its gateway.
    let s = soc
        .acknowledge(pb::AcknowledgeRequest {
            ids: vec!["1000-1".into()],
            reason: "triaged".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("GATEWAY/1000-1"), "{s:?}");
    soc.acknowledge(pb::AcknowledgeRequest {
        ids: vec![format!("{GW}/1000-1"), "2000-7".into()],
        reason: "triaged".into(),
    })
    .await
    .unwrap();
    let open_critical = list(pb::AlertFilter {
        min_severity: "critical".into(),
        ..Default::default()
    })
    .await;
    assert!(open_critical.is_empty(), "{open_critical:?}");
    let other = list(pb::AlertFilter {
        gateway: "gw-other".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(other.len(), 1, "gw-other's 1000-1 stays open");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Device modes travel as the `DeviceMode` enum beside the string: a 0.1.0 wardctl's device
/// (the string alone) is read, the enum wins where both are sent, answers carry both, and an
/// unknown name or number is InvalidArgument naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_modes_travel_as_enum_and_string_and_a_0_1_0_peer_still_works() {
    let c = Controller::start().await;
    let mut eve = c.admin("user-eve").await;
    let device = |mode: &str, mode_enum: i32| pb::Device {
        name: "pump-enum".into(),
        id: 61,
        mac: "02:00:00:00:00:61".into(),
        addresses: vec!["192.0.2.61".into()],
        profile: "infusion-pump".into(),
        mode: mode.into(),
        mode_enum,
        gateway: "gw-other".into(),
        ..Default::default()
    };
    let upsert = |d: pb::Device| pb::UpsertDeviceRequest {
        accept_impact: false,
        device: Some(d),
        reason: "CHG-7".into(),
    };
    let stored = |eve: &mut AdminServiceClient<Channel>| {
        let mut eve = eve.clone();
        async move {
            eve.get_device(pb::GetDeviceRequest {
                name: "pump-enum".into(),
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    // A 0.1.0 wardctl: the string alone.
    eve.upsert_device(upsert(device("monitor", 0)))
        .await
        .unwrap();
    let d = stored(&mut eve).await;
    assert_eq!(
        (d.mode.as_str(), d.mode_enum()),
        ("monitor", pb::DeviceMode::Monitor),
        "answered in both forms"
    );
    // Both sent: the enum is what counts.
    eve.upsert_device(upsert(device("monitor", pb::DeviceMode::Learn.into())))
        .await
        .unwrap();
    let d = stored(&mut eve).await;
    assert_eq!(
        (d.mode.as_str(), d.mode_enum()),
        ("learn", pb::DeviceMode::Learn)
    );
    // Unknown: refused, naming the field, nothing changed.
    for (mode, mode_enum, says) in [
        ("lockdown", 0, "lockdown"),
        ("", 0, "mode"),
        ("learn", 9, "9"),
    ] {
        let s = eve
            .upsert_device(upsert(device(mode, mode_enum)))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{mode}/{mode_enum}: {s:?}");
        assert!(
            s.message().contains("mode: ") && s.message().contains(says),
            "{mode}/{mode_enum}: {}",
            s.message()
        );
    }
    assert_eq!(stored(&mut eve).await.mode_enum(), pb::DeviceMode::Learn);
    // A dry run's preview carries both forms of each mode.
    let w = eve
        .set_mode(pb::SetModeRequest {
            accept_impact: false,
            device: "pump-enum".into(),
            mode: "monitor".into(),
            reason: "CHG-7".into(),
            dry_run: true,
            for_minutes: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let p = w.preview.iter().find(|p| p.device == "pump-enum").unwrap();
    assert_eq!(
        (
            p.mode_before.as_str(),
            p.mode_before_enum(),
            p.mode_after.as_str(),
            p.mode_after_enum()
        ),
        (
            "learn",
            pb::DeviceMode::Learn,
            "monitor",
            pb::DeviceMode::Monitor
        )
    );
}
