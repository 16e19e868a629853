//! A real rsyslogd for the SOC tests (Debian `rsyslog`, `rsyslog-gnutls`, installed by
//! `cargo xtask setup`): its own configuration, imtcp on loopback, every message written to a
//! file with what rsyslog parsed of it.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real rsyslogd with its own configuration: imtcp on loopback (a plain listener and, with
/// certificates, a TLS one), every message written to `out` with what rsyslog parsed of it.
pub struct Rsyslog {
    child: Child,
    pub out: PathBuf,
}

impl Rsyslog {
    pub fn start(dir: &Path, plain: u16, tls: Option<(u16, &Path)>) -> Rsyslog {
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let out = dir.join("received.log");
        let mut conf = format!("global(workDirectory=\"{}\"", work.display());
        if let Some((_, certs)) = tls {
            conf += &format!(
                " DefaultNetstreamDriverCAFile=\"{0}/ca.pem\" DefaultNetstreamDriverCertFile=\"{0}/server.pem\" DefaultNetstreamDriverKeyFile=\"{0}/server.key\"",
                certs.display()
            );
        }
        conf += ")\nmodule(load=\"imtcp\")\n";
        // What rsyslog itself parsed (RFC 5424 version, host, app, msgid, severity), then the
        // message exactly as received (the frame's payload).
        conf += "template(name=\"t\" type=\"string\" string=\"%inputname% %protocol-version% %hostname% %app-name% %msgid% %syslogseverity%|%rawmsg%\\n\")\n";
        conf += &format!(
            "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{plain}\" name=\"plain\")\n"
        );
        if let Some((port, _)) = tls {
            conf += &format!(
                "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" name=\"tls\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"x509/certvalid\")\n"
            );
        }
        conf += &format!(
            "action(type=\"omfile\" file=\"{}\" template=\"t\")\n",
            out.display()
        );
        let _ = std::fs::remove_file(dir.join("rsyslog.pid"));
        let path = dir.join("rsyslog.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&path)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stderr(std::fs::File::create(dir.join("rsyslog.err")).unwrap())
            .spawn()
            .expect("rsyslogd (Debian rsyslog, installed by `cargo xtask setup`)");
        let ports: Vec<u16> = std::iter::once(plain).chain(tls.map(|t| t.0)).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in ports {
            while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "rsyslogd did not listen on {p}: {}",
                    std::fs::read_to_string(dir.join("rsyslog.err")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Rsyslog { child, out }
    }

    /// Stops it as a service manager would (SIGTERM: it closes its connections).
    pub fn stop(mut self) {
        // Safety: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
