//! Do-not-disrupt (issue 21 point 5): a generation that denies an established flow keeps it
//! passing as `PassGrace` for the device's grace; quarantine, the grace's end and grace 0 cut
//! it, new flows follow the new generation at once.

use super::*;

const PACS: &str = "198.51.100.10:104";

/// A completed handshake of the pump's DICOM flow from `port` (SYN, SYN-ACK, ACK).
fn establish(dp: &mut Datapath, port: u16) -> (Vec<u8>, Vec<u8>) {
    let pump = format!("192.0.2.10:{port}");
    let syn = frame(PUMP_MAC, &pump, PACS, L4::Syn);
    expect(dp, true, &syn, TC_ACT_OK, Reason::PassPolicy);
    let syn_ack = syn_ack_frame(GW_MAC, PUMP_MAC, PACS, &pump, 5000);
    expect(dp, false, &syn_ack, TC_ACT_OK, Reason::PassReply);
    let ack = frame(PUMP_MAC, &pump, PACS, L4::Ack);
    let reply = data_frame(GW_MAC, PUMP_MAC, PACS, &pump, 5001, &[]);
    expect(dp, true, &ack, TC_ACT_OK, Reason::PassEstablished);
    (ack, reply)
}

/// The reference rules without the pump's DICOM rule (1001): the PACS is removed.
fn without_pacs() -> Vec<wardgate_policy::desired::Rule> {
    reference_rules()
        .into_iter()
        .filter(|r| r.rule_id != 1001)
        .collect()
}

fn with_pump(
    f: impl FnOnce(&mut wardgate_policy::desired::DeviceEntry),
) -> Vec<wardgate_policy::desired::DeviceEntry> {
    let mut devices = reference_devices();
    f(&mut devices[0]);
    devices
}

/// The pump's conntrack entries' grace ends (0: not on grace).
fn grace_ends(dp: &mut Datapath) -> Vec<u64> {
    conntrack_values(dp)
        .iter()
        .filter(|v| v.device_id == 1)
        .map(|v| v.grace_until_ns)
        .collect()
}

#[test]
fn a_tightening_generation_keeps_an_established_flow_on_grace() {
    let (_pin, mut dp) = datapath("grace");
    let (ack, reply) = establish(&mut dp, 40100);
    let before = coarse_now_ns();
    dp.apply(&state_with(2, reference_devices(), without_pacs()))
        .unwrap();
    // Both ways, packet after packet: the flow cache never takes it over.
    for _ in 0..3 {
        expect(&mut dp, true, &ack, TC_ACT_OK, Reason::PassGrace);
        expect(&mut dp, false, &reply, TC_ACT_OK, Reason::PassGrace);
    }
    let ends = grace_ends(&mut dp);
    let max = u64::from(wardgate_common::DEFAULT_GRACE_S) * 1_000_000_000;
    assert!(
        ends.len() == 1 && ends[0] >= before + max && ends[0] <= coarse_now_ns() + max,
        "grace ends {ends:?}, switch at {before}"
    );
    // A new flow to the removed peer follows the new generation at once.
    let syn = frame(PUMP_MAC, "192.0.2.10:40101", PACS, L4::Syn);
    expect(&mut dp, true, &syn, TC_ACT_SHOT, Reason::DropPolicy);
    // A SYN reusing the grace flow's tuple is a new flow too.
    let reuse = frame(PUMP_MAC, "192.0.2.10:40100", PACS, L4::Syn);
    expect(&mut dp, true, &reuse, TC_ACT_SHOT, Reason::DropPolicy);
}

#[test]
fn a_generation_that_allows_the_flow_again_makes_it_ordinary() {
    let (_pin, mut dp) = datapath("grace-again");
    let (ack, reply) = establish(&mut dp, 40110);
    dp.apply(&state_with(2, reference_devices(), without_pacs()))
        .unwrap();
    expect(&mut dp, true, &ack, TC_ACT_OK, Reason::PassGrace);
    dp.apply(&reference_state(3)).unwrap();
    expect(&mut dp, false, &reply, TC_ACT_OK, Reason::PassReply);
    expect(&mut dp, true, &ack, TC_ACT_OK, Reason::PassEstablished);
    assert_eq!(grace_ends(&mut dp), vec![0]);
}

#[test]
fn a_flow_that_never_completed_its_handshake_gets_no_grace() {
    let (_pin, mut dp) = datapath("grace-syn");
    let syn = frame(PUMP_MAC, "192.0.2.10:40120", PACS, L4::Syn);
    expect(&mut dp, true, &syn, TC_ACT_OK, Reason::PassPolicy);
    let ack = frame(PUMP_MAC, "192.0.2.10:40120", PACS, L4::Ack);
    dp.apply(&state_with(2, reference_devices(), without_pacs()))
        .unwrap();
    expect(&mut dp, true, &ack, TC_ACT_SHOT, Reason::DropPolicy);
    // UDP: a query never answered gets none, an answered one does.
    let lone = frame(PUMP_MAC, "192.0.2.10:40121", "198.51.100.53:53", L4::Udp);
    let asked = frame(PUMP_MAC, "192.0.2.10:40122", "198.51.100.53:53", L4::Udp);
    let answer = frame(GW_MAC, "198.51.100.53:53", "192.0.2.10:40122", L4::Udp);
    dp.apply(&reference_state(3)).unwrap();
    expect(&mut dp, true, &lone, TC_ACT_OK, Reason::PassPolicy);
    expect(&mut dp, true, &asked, TC_ACT_OK, Reason::PassPolicy);
    expect(&mut dp, false, &answer, TC_ACT_OK, Reason::PassReply);
    let no_dns: Vec<_> = reference_rules()
        .into_iter()
        .filter(|r| r.rule_id != 1002)
        .collect();
    dp.apply(&state_with(4, reference_devices(), no_dns))
        .unwrap();
    expect(&mut dp, true, &lone, TC_ACT_SHOT, Reason::DropPolicy);
    expect(&mut dp, true, &asked, TC_ACT_OK, Reason::PassGrace);
}

#[test]
fn quarantine_ends_the_grace() {
    let (_pin, mut dp) = datapath("grace-quarantine");
    let (ack, reply) = establish(&mut dp, 40130);
    dp.apply(&state_with(2, reference_devices(), without_pacs()))
        .unwrap();
    expect(&mut dp, true, &ack, TC_ACT_OK, Reason::PassGrace);
    let quarantined = with_pump(|d| d.mode = Mode::Quarantine);
    dp.apply(&state_with(3, quarantined, without_pacs()))
        .unwrap();
    expect(&mut dp, false, &reply, TC_ACT_SHOT, Reason::DropQuarantine);
    expect(&mut dp, true, &ack, TC_ACT_SHOT, Reason::DropQuarantine);
    // Out of quarantine, the grace does not come back.
    dp.apply(&state_with(4, reference_devices(), without_pacs()))
        .unwrap();
    expect(&mut dp, true, &ack, TC_ACT_SHOT, Reason::DropPolicy);
}

#[test]
fn the_grace_ends_at_its_max() {
    let (_pin, mut dp) = datapath("grace-max");
    let (ack, reply) = establish(&mut dp, 40140);
    let one_second = with_pump(|d| d.grace_s = 1);
    dp.apply(&state_with(2, one_second.clone(), without_pacs()))
        .unwrap();
    expect(&mut dp, true, &ack, TC_ACT_OK, Reason::PassGrace);
    // A later generation that also denies it does not start the grace again.
    std::thread::sleep(std::time::Duration::from_millis(600));
    dp.apply(&state_with(3, one_second, without_pacs()))
        .unwrap();
    expect(&mut dp, false, &reply, TC_ACT_OK, Reason::PassGrace);
    std::thread::sleep(std::time::Duration::from_millis(600));
    expect(&mut dp, true, &ack, TC_ACT_SHOT, Reason::DropPolicy);
    expect(&mut dp, false, &reply, TC_ACT_SHOT, Reason::DropPolicy);
}

#[test]
fn grace_zero_cuts_at_once() {
    let (_pin, mut dp) = datapath("grace-zero");
    let (ack, reply) = establish(&mut dp, 40150);
    let none = with_pump(|d| d.grace_s = 0);
    dp.apply(&state_with(2, none.clone(), without_pacs()))
        .unwrap();
    expect(&mut dp, false, &reply, TC_ACT_SHOT, Reason::DropPolicy);
    expect(&mut dp, true, &ack, TC_ACT_SHOT, Reason::DropPolicy);
    // A grace in progress ends once a generation sets the device's grace to 0.
    dp.apply(&reference_state(3)).unwrap();
    let (ack, reply) = establish(&mut dp, 40151);
    dp.apply(&state_with(4, reference_devices(), without_pacs()))
        .unwrap();
    expect(&mut dp, true, &ack, TC_ACT_OK, Reason::PassGrace);
    dp.apply(&state_with(5, none, without_pacs())).unwrap();
    expect(&mut dp, false, &reply, TC_ACT_SHOT, Reason::DropPolicy);
    expect(&mut dp, true, &ack, TC_ACT_SHOT, Reason::DropPolicy);
}
