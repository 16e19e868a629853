//! Packet captures for the namespace tests, taken by Debian's `dumpcap` (the capture engine
//! tshark runs underneath). `dumpcap` prints `File:` only once the interface is open, so what is
//! sent after [`Capture::start`] returns is in the file. tshark prints "Capturing on" before it
//! has even started dumpcap: waiting for that lost the first DICOM association of a run in CI.
// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The file format written.
#[derive(Clone, Copy, Debug)]
pub enum FileFormat {
    Pcap,
    Pcapng,
}

/// A running capture; killed on drop if not stopped.
pub struct Capture {
    child: Option<Child>,
}

impl Capture {
    /// Captures `iface` in namespace `ns` into `file`; returns once the interface is open.
    /// `dlt`: the link type to write (`-y`, e.g. `LINUX_SLL2`), when not the interface's default.
    pub fn start(
        ns: &str,
        iface: &str,
        dlt: Option<&str>,
        format: FileFormat,
        file: &Path,
    ) -> Capture {
        let log = file.with_extension("dumpcap.log");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "dumpcap", "-i", iface]);
        if let Some(dlt) = dlt {
            c.args(["-y", dlt]);
        }
        if let FileFormat::Pcap = format {
            c.arg("-P");
        }
        c.arg("-w")
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let cap = Capture {
            child: Some(
                c.spawn()
                    .expect("dumpcap (tshark) is installed by `cargo xtask setup`"),
            ),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("File:") {
                return cap;
            }
            assert!(
                Instant::now() < deadline,
                "dumpcap never opened {iface} in {ns}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops with SIGINT (dumpcap then writes out and closes the file), bounded.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        // Safety: kill on the pid of a child this test started and has not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("dumpcap did not stop on SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
