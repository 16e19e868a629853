use super::*;

fn item(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![kind, 0];
    v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn ae(s: &str) -> [u8; 16] {
    let mut a = [b' '; 16];
    a[..s.len()].copy_from_slice(s.as_bytes());
    a
}

/// An A-ASSOCIATE-RQ as a DICOM client (dcmtk's echoscu) sends it.
pub(crate) fn associate_rq(calling: &str, called: &str, syntaxes: &[&str]) -> Vec<u8> {
    let mut body = vec![0, 1, 0, 0];
    body.extend_from_slice(&ae(called));
    body.extend_from_slice(&ae(calling));
    body.extend_from_slice(&[0; 32]);
    body.extend(item(0x10, b"1.2.840.10008.3.1.1.1"));
    for (i, s) in syntaxes.iter().enumerate() {
        let mut pc = vec![(2 * i + 1) as u8, 0, 0, 0];
        pc.extend(item(0x30, s.as_bytes()));
        pc.extend(item(0x40, b"1.2.840.10008.1.2\0"));
        body.extend(item(0x20, &pc));
    }
    let mut ui = item(0x51, &16384u32.to_be_bytes());
    ui.extend(item(0x52, b"1.2.276.0.7230010.3.0.3.6.8\0"));
    ui.extend(item(0x55, b"OFFIS_DCMTK_368"));
    body.extend(item(0x50, &ui));
    let mut pdu = vec![0x01, 0];
    pdu.extend_from_slice(&(body.len() as u32).to_be_bytes());
    pdu.extend(body);
    pdu
}

#[test]
fn reads_titles_contexts_and_implementation() {
    let pdu = associate_rq(
        "ECHOSCU",
        "ANY-SCP",
        &["1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.2.2.1"],
    );
    let rq = parse_associate_rq(&pdu).unwrap();
    assert_eq!(rq.calling_ae, "ECHOSCU");
    assert_eq!(rq.called_ae, "ANY-SCP");
    assert_eq!(rq.application_context, "1.2.840.10008.3.1.1.1");
    assert_eq!(
        rq.abstract_syntaxes,
        vec!["1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.2.2.1"]
    );
    assert_eq!(
        rq.implementation_class_uid.as_deref(),
        Some("1.2.276.0.7230010.3.0.3.6.8")
    );
    assert_eq!(
        rq.implementation_version.as_deref(),
        Some("OFFIS_DCMTK_368")
    );
    assert!(!rq.truncated);
    assert!(looks_like(&pdu));
}

#[test]
fn a_cut_pdu_gives_what_is_there() {
    let pdu = associate_rq("CT1", "PACS", &["1.2.840.10008.1.1"]);
    for cut in 0..pdu.len() {
        match parse_associate_rq(&pdu[..cut]) {
            Err(DicomError::Incomplete) => assert!(cut < FIXED, "cut at {cut}"),
            Ok(rq) => {
                assert!(cut >= FIXED);
                assert!(rq.truncated);
                assert_eq!(
                    (rq.calling_ae.as_str(), rq.called_ae.as_str()),
                    ("CT1", "PACS")
                );
            }
            Err(e) => panic!("cut at {cut}: {e}"),
        }
    }
}

#[test]
fn syntaxes_are_bounded_and_deduplicated() {
    let many: Vec<String> = (0..40).map(|i| format!("1.2.3.{}", i % 30)).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let rq = parse_associate_rq(&associate_rq("A", "B", &refs)).unwrap();
    assert_eq!(rq.abstract_syntaxes.len(), MAX_SYNTAXES);
    assert_eq!(rq.syntaxes_not_listed, 40 - MAX_SYNTAXES as u32);
}

#[test]
fn refuses_other_pdus() {
    let mut pdu = associate_rq("A", "B", &[]);
    pdu[0] = 0x02;
    assert!(matches!(
        parse_associate_rq(&pdu),
        Err(DicomError::NotAssociateRq(_))
    ));
    let mut pdu = associate_rq("A", "B", &[]);
    pdu[7] = 0;
    assert!(matches!(
        parse_associate_rq(&pdu),
        Err(DicomError::NotAssociateRq(_))
    ));
    let mut pdu = associate_rq("A", "B", &[]);
    pdu[2..6].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(
        parse_associate_rq(&pdu),
        Err(DicomError::NotAssociateRq(_))
    ));
}

proptest::proptest! {
    #[test]
    fn any_bytes_parse_without_panic(mut b in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        if let Some(x) = b.first_mut() { *x = 1; }
        if let Ok(rq) = parse_associate_rq(&b) {
            proptest::prop_assert!(rq.abstract_syntaxes.len() <= MAX_SYNTAXES);
            proptest::prop_assert!(rq.calling_ae.len() <= 64 && rq.called_ae.len() <= 64);
        }
    }
}
