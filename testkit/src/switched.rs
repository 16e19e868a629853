//! The demo's ward with a switch: the infusion pump and the portable ultrasound, each in its
//! own namespace with its MAC and addresses from `device-profiles/sites/demo-ward.yaml`,
//! plugged into a bridge ("the ward's switch", a namespace of its own) whose uplink is the
//! gateway's `DEV_IF`. The hospital side is [`Ward`]'s, with an NTP server address more.
//! Everything is removed on drop.

use std::process::Command;

use crate::ward::{DEV_IF, Ward, ip};

pub struct SwitchedWard {
    /// `dev` is the pump's namespace.
    pub ward: Ward,
    /// The ultrasound's namespace.
    pub us: String,
    sw: String,
}

/// The NTP server's address on the hospital side (the site's `ntp` group).
pub const NTP: &str = "198.51.100.123";

impl SwitchedWard {
    /// Builds the namespaces; `tag` keeps parallel runs apart (max 6 chars).
    pub fn new(tag: &str) -> SwitchedWard {
        let n = std::process::id() % 100_000;
        let w = SwitchedWard {
            ward: Ward {
                dev: format!("wgd-{tag}-{n}"),
                gw: format!("wgg-{tag}-{n}"),
                srv: format!("wgs-{tag}-{n}"),
            },
            us: format!("wgu-{tag}-{n}"),
            sw: format!("wgw-{tag}-{n}"),
        };
        let (gw, sw) = (w.ward.gw.as_str(), w.sw.as_str());
        for ns in [&w.ward.dev, gw, &w.ward.srv, &w.us, sw] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
        }
        ip(&["-n", sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", sw, "link", "set", "br0", "up"]);
        ip(&[
            "-n", gw, "link", "add", DEV_IF, "type", "veth", "peer", "name", "up0", "netns", sw,
        ]);
        ip(&["-n", sw, "link", "set", "up0", "master", "br0", "up"]);
        ip(&["-n", gw, "link", "set", DEV_IF, "up"]);
        ip(&["-n", gw, "addr", "add", "192.0.2.1/24", "dev", DEV_IF]);
        ip(&[
            "-n",
            gw,
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            DEV_IF,
            "nodad",
        ]);
        for (ns, port, mac, v4, v6) in [
            (
                w.ward.dev.as_str(),
                "p-pump",
                "02:00:00:00:00:0a",
                "192.0.2.10/24",
                "2001:db8:1::10/64",
            ),
            (
                w.us.as_str(),
                "p-us",
                "02:00:00:00:00:0c",
                "192.0.2.12/24",
                "2001:db8:1::12/64",
            ),
        ] {
            ip(&[
                "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", sw,
            ]);
            ip(&["-n", sw, "link", "set", port, "master", "br0", "up"]);
            ip(&["-n", ns, "link", "set", "eth0", "address", mac]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", v4, "dev", "eth0"]);
            ip(&["-n", ns, "addr", "add", v6, "dev", "eth0", "nodad"]);
            ip(&["-n", ns, "route", "add", "default", "via", "192.0.2.1"]);
            ip(&[
                "-n",
                ns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "2001:db8:1::1",
            ]);
        }
        w.ward.add_server_side();
        ip(&[
            "-n",
            &w.ward.srv,
            "addr",
            "add",
            &format!("{NTP}/24"),
            "dev",
            "eth0",
        ]);
        w.ward.wait_reachable(&w.ward.dev);
        w.ward.wait_reachable(&w.us);
        w
    }
}

impl Drop for SwitchedWard {
    fn drop(&mut self) {
        // The ward's own namespaces go when `ward` drops, after this.
        for ns in [&self.us, &self.sw] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
