//! What the console tests share: a controller's console over real HTTPS on loopback (rustls,
//! the lab CA trusted, the controller's server certificate) with a site written through the
//! write service, a cookie-keeping browser, and a mock Pro Santé Connect (`psc.rs`).

#![allow(dead_code, reason = "each test crate uses part of the harness")]

pub mod psc;

use std::{collections::BTreeMap, net::SocketAddr, path::Path, sync::Arc};

use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request, StatusCode,
    body::Bytes,
    header::{self, HeaderMap},
};
use hyper_util::rt::TokioIo;
use tokio_rustls::{
    TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, ServerName, pem::PemObject as _},
    },
};
use tonic::transport::Channel;
use wardgate_analysis::{FlowDirection, FlowOutcome, FlowRecord, TcpOutcome, flow::DeviceRef};
use wardgate_controller::service::learning;
use wardgate_controller::{
    auth::Role,
    certs,
    cli::remote::Remote,
    config::{ConsoleConfig, LocalAdmin},
    console::{
        self,
        session::{self, LoginSource, Principal},
    },
    metrics::ControllerMetrics,
    server::{self, Settings, TlsFiles},
    service::Ctx,
    store::{Change, DeviceRow, GatewayRow, SqliteStore, Store},
};
use wardgate_policy::Mode;
use wardgate_proto::v1::{self as pb, agent_service_client::AgentServiceClient};

pub const PASSWORD: &str = "correct horse battery staple";

/// An agent's client of the controller's gRPC services; they stop when it is dropped.
pub struct AgentLink {
    pub client: AgentServiceClient<Channel>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for AgentLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Console {
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub store: Arc<SqliteStore>,
    pub ctx: Ctx,
    pub ca_pem: std::path::PathBuf,
    tls: TlsConnector,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Console {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn profile(name: &str) -> Change {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../device-profiles")
        .join(format!("{name}.yaml"));
    Change::UpsertProfile {
        name: name.into(),
        yaml: std::fs::read_to_string(path).unwrap(),
    }
}

/// Device `i`'s address, from documentation ranges only: 192.0.2.(i+1) for the first 250,
/// 203.0.113.(i-249) for the next 250, then 2001:db8:3::i (hex).
pub fn address(i: u32) -> std::net::IpAddr {
    match i {
        0..250 => format!("192.0.2.{}", i + 1),
        250..500 => format!("203.0.113.{}", i - 249),
        _ => format!("2001:db8:3::{i:x}"),
    }
    .parse()
    .unwrap()
}

/// Device `i`: `pump-NNNN` (infusion-pump) or `monitor-NNNN` (patient-monitor) by parity, on
/// gw-ward-3 (`i % 4` is 0 or 1) or gw-ward-4, enforcing when `i % 10 == 0`.
pub fn device(i: u32) -> DeviceRow {
    let (kind, profile) = if i.is_multiple_of(2) {
        ("pump", "infusion-pump")
    } else {
        ("monitor", "patient-monitor")
    };
    DeviceRow {
        name: format!("{kind}-{i:04}"),
        id: 0,
        mac: format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256)
            .parse()
            .unwrap(),
        addresses: vec![address(i)],
        profile: profile.into(),
        mode: if i.is_multiple_of(10) {
            Mode::Enforce
        } else {
            Mode::Learn
        },
        gateway: if i % 4 < 2 { "gw-ward-3" } else { "gw-ward-4" }.into(),
        location: format!("ward 3 bed {i}"),
        asset_id: format!("BIO-{i:05}"),
    }
}

impl Console {
    /// A console with `devices` devices loaded through the write service in one write, the
    /// break-glass `admin` account, and sessions idle for `idle_s` seconds ended.
    pub async fn start(devices: u32, idle_s: u64) -> Console {
        Console::start_with(devices, |cfg, _| cfg.idle_timeout_seconds = idle_s).await
    }

    /// As [`Console::start`], the config then changed by `configure` (given the console's
    /// address, for an OIDC redirect URL).
    pub async fn start_with(
        devices: u32,
        configure: impl FnOnce(&mut ConsoleConfig, SocketAddr),
    ) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let cert_dir = dir.path().join("certs");
        certs::init(
            &cert_dir,
            &["gw-ward-3".to_string(), "gw-ward-4".to_string()],
            &[],
            &certs::InitOptions::default(),
        )
        .unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("data")).unwrap());
        let ctx = server::context(
            store.clone(),
            Arc::new(ControllerMetrics::default()),
            &Settings::default(),
        );
        let mut site = Vec::new();
        for g in ["gw-ward-3", "gw-ward-4"] {
            site.push(Change::UpsertGateway(GatewayRow {
                name: g.into(),
                interfaces: vec!["wg-dev0".into()],
                location: "ward 3".into(),
                applied_generation: 0,
                last_error: String::new(),
                applied_epoch: String::new(),
            }));
        }
        for (g, cidr) in [
            ("infusion-server", "198.51.100.30/32"),
            ("dns", "198.51.100.53/32"),
            ("ntp", "198.51.100.123/32"),
            ("syslog", "198.51.100.114/32"),
            ("central-station", "198.51.100.40/32"),
        ] {
            site.push(Change::UpsertGroup {
                name: g.into(),
                cidrs: vec![cidr.into()],
            });
        }
        site.push(profile("infusion-pump"));
        site.push(profile("patient-monitor"));
        site.extend((0..devices).map(|i| Change::UpsertDevice(device(i))));
        tokio::task::block_in_place(|| ctx.write_all("user:eve", "CHG-1 commissioning", site))
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut cfg = ConsoleConfig {
            admin: Some(LocalAdmin {
                name: "admin".into(),
                password_hash: console::hash_password(PASSWORD).unwrap(),
            }),
            ..ConsoleConfig::new(addr)
        };
        configure(&mut cfg, addr);
        let tls_files = TlsFiles::in_dir(&cert_dir);
        let served = ctx.clone();
        let task =
            tokio::spawn(async move { console::serve(served, &cfg, &tls_files, listener).await });
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(cert_dir.join("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Console {
            ca_pem: cert_dir.join("ca.pem"),
            _dir: dir,
            addr,
            store,
            ctx,
            tls: TlsConnector::from(Arc::new(config)),
            task,
        }
    }

    /// The controller's gRPC services over mTLS on loopback with the console's context (as
    /// `wardgate-controller` serves both), and an agent's client as `gateway` (its lab
    /// certificate): what a real agent reaches.
    pub async fn agent(&self, gateway: &str) -> AgentLink {
        let certs = self.ca_pem.parent().unwrap().to_path_buf();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let (ctx, tls) = (self.ctx.clone(), TlsFiles::in_dir(&certs));
        let task = tokio::spawn(async move {
            server::serve_with(
                ctx,
                &tls,
                &Settings::default(),
                listener,
                std::future::pending(),
            )
            .await
        });
        let channel = Remote::to(url, certs, &format!("gateway-{gateway}"), "localhost")
            .channel()
            .await
            .unwrap();
        AgentLink {
            client: AgentServiceClient::new(channel),
            task,
        }
    }

    pub fn browser(&self) -> Browser<'_> {
        Browser {
            console: self,
            cookies: BTreeMap::new(),
            lang: "en-GB,en;q=0.9",
        }
    }

    /// A browser holding a session started as an identity provider's login would start it.
    pub fn browser_as(&self, name: &str, role: Role) -> (Browser<'_>, String) {
        let (id, s) = session::start(
            self.store.as_ref(),
            Principal {
                name: name.into(),
                role,
                source: LoginSource::Oidc {
                    issuer: "https://idp.example".into(),
                    subject: format!("sub-{name}"),
                    acr: "eidas1".into(),
                },
            },
        )
        .unwrap();
        let mut b = self.browser();
        b.cookies.insert(session::COOKIE.into(), id);
        (b, s.csrf)
    }
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map_or("", |v| v.to_str().unwrap())
    }

    /// The value of the first `csrf` hidden field.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a csrf field")
            + 19;
        self.body[at..].split('"').next().unwrap().to_string()
    }

    pub fn rows(&self) -> usize {
        self.body.matches(r#"<tr class="device">"#).count()
    }
}

pub struct Browser<'a> {
    console: &'a Console,
    pub cookies: BTreeMap<String, String>,
    pub lang: &'static str,
}

impl Browser<'_> {
    pub async fn send(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        self.send_with(method, path, form, &[]).await
    }

    pub async fn send_with(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&[(&str, &str)]>,
        extra: &[(&str, &str)],
    ) -> Page {
        let tcp = tokio::net::TcpStream::connect(self.console.addr)
            .await
            .unwrap();
        let tls = self
            .console
            .tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let body = form.map_or_else(String::new, |fields| {
            fields
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect::<Vec<_>>()
                .join("&")
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT_LANGUAGE, self.lang);
        if form.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        if !self.cookies.is_empty() {
            let c = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.header(header::COOKIE, c);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        for c in headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.into(), v.into());
            }
        }
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, None).await
    }

    pub async fn login(&mut self, name: &str, password: &str) -> Page {
        let form = self.get("/login").await;
        assert_eq!(form.status, StatusCode::OK);
        let csrf = form.csrf();
        self.send(
            "POST",
            "/login",
            Some(&[("csrf", &csrf), ("name", name), ("password", password)]),
        )
        .await
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Browser<'_> {
    /// Starts an OIDC login and follows the provider's auto-approval: the callback path (with
    /// its query) the provider sends the browser back to.
    pub async fn oidc_authorize(&mut self) -> String {
        let start = self.get("/login/oidc").await;
        assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let at_idp = http.get(start.location()).send().await.unwrap();
        assert_eq!(
            at_idp.status(),
            reqwest::StatusCode::SEE_OTHER,
            "{at_idp:?}"
        );
        let back = at_idp.headers()[reqwest::header::LOCATION]
            .to_str()
            .unwrap()
            .to_string();
        let back = url::Url::parse(&back).unwrap();
        format!("{}?{}", back.path(), back.query().unwrap_or(""))
    }

    /// A whole OIDC login: the callback's answer.
    pub async fn oidc_login(&mut self) -> Page {
        let back = self.oidc_authorize().await;
        self.get(&back).await
    }
}

/// The console's OIDC config for `psc`, with its callback on the console at `addr`: roles
/// from `SubjectNameID`, `eidas1` required.
pub fn oidc_config(
    psc: &psc::MockPsc,
    addr: SocketAddr,
    engineers: &[&str],
    viewers: &[&str],
) -> wardgate_controller::config::OidcConfig {
    let redirect = format!("https://localhost:{}/login/oidc/callback", addr.port());
    psc.register(&redirect);
    wardgate_controller::config::OidcConfig {
        issuer: psc.issuer.clone(),
        discovery_url: Some(psc.discovery_url()),
        client_id: psc::CLIENT_ID.into(),
        client_secret: Some(psc::CLIENT_SECRET.into()),
        client_secret_file: None,
        redirect_url: redirect,
        required_acr: Some("eidas1".into()),
        scopes: vec!["scope_all".into()],
        name_claim: "SubjectNameID".into(),
        roles: wardgate_controller::config::RoleMapping {
            claim: "SubjectNameID".into(),
            engineer: engineers.iter().map(|s| s.to_string()).collect(),
            soc: Vec::new(),
            viewer: viewers.iter().map(|s| s.to_string()).collect(),
        },
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `device` (on gw-ward-3) talked to the infusion server (198.51.100.30) on tcp/8443 and to
/// the DNS, an hour ago: flows in its learning window to propose from.
pub fn report_flows(c: &Console, device: &str) {
    let d = c.store.device(device).unwrap().unwrap();
    let t = now_ns() - 3_600_000_000_000;
    let flow = |peer: &str, proto: u8, port: u16| FlowRecord {
        device: DeviceRef {
            name: device.into(),
            id: None,
            mac: None,
        },
        direction: FlowDirection::Opened,
        device_addr: d.addresses[0],
        device_port: 40_000,
        peer: peer.parse().unwrap(),
        peer_port: port,
        proto,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: 4,
        bytes_out: 400,
        packets_in: 4,
        bytes_in: 800,
        first_seen_ns: t,
        last_seen_ns: t + 1_000_000_000,
        tcp: (proto == 6).then_some(TcpOutcome::Established),
        outcome: FlowOutcome::Established,
        rule: None,
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    };
    let records = [
        flow("198.51.100.30", 6, 8443),
        flow("198.51.100.53", 17, 53),
    ];
    let ack = tokio::task::block_in_place(|| {
        learning::report_flows(
            &c.ctx,
            "gw-ward-3",
            pb::FlowBatch {
                gateway: String::new(),
                records: records.iter().map(pb::FlowRecord::from).collect(),
            },
        )
    })
    .unwrap();
    assert_eq!(ack.stored, 2);
}

impl Browser<'_> {
    /// A POST of `body` as `content_type` (a multipart upload), with the session's cookies.
    pub async fn post_raw(&mut self, path: &str, content_type: &str, body: Vec<u8>) -> Page {
        let tcp = tokio::net::TcpStream::connect(self.console.addr)
            .await
            .unwrap();
        let tls = self
            .console
            .tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let cookies = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let req = Request::builder()
            .method("POST")
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT_LANGUAGE, self.lang)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::COOKIE, cookies)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }
}
