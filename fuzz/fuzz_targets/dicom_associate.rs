//! The DICOM A-ASSOCIATE-RQ parser over any bytes: never a panic, output bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_analysis::dicom;

fuzz_target!(|data: &[u8]| {
    if let Ok(rq) = dicom::parse_associate_rq(data) {
        assert!(rq.abstract_syntaxes.len() <= dicom::MAX_SYNTAXES);
        assert!(rq.calling_ae.len() <= 64 * 3 && rq.called_ae.len() <= 64 * 3);
    }
    let _ = wardgate_analysis::app::identify(104, data);
});
