//! A real PostgreSQL server for tests (Debian `postgresql`, installed by `cargo xtask setup`):
//! its own temporary data directory (`initdb -A trust`), its own free port on 127.0.0.1 and its
//! own unix socket directory, so it never touches a system cluster. As root the server runs as
//! the `postgres` user (PostgreSQL refuses root), its directories chowned to it.
//!
//! [`Server::shared`] is one server per test process, started on first use; each test takes a
//! new empty database of it with [`Server::fresh_database`], so tests stay independent and run
//! in parallel. [`Server::start`] starts another one (for HA tests: a primary and a standby),
//! stopped and its directory removed when dropped.

mod standby;

pub use standby::Standby;

use std::{
    ffi::CString,
    fs::File,
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

/// Where Debian puts each major version's server binaries: `<ROOT>/<version>/bin`.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";
/// How long a server may take to accept connections before the test fails with its log.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long an immediate stop may take before the server is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// Settings of every test server: a throwaway cluster needs no durability, and the tests of
/// one process share it (each store may hold a few connections).
const SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "300"),
    ("shared_buffers", "64MB"),
];

/// The newest installed major version's binary directory, or why there is none.
pub fn bin_dir() -> Result<PathBuf, String> {
    let missing = || {
        format!(
            "no PostgreSQL server binaries under {DEBIAN_ROOT}/<version>/bin (Debian package \
             `postgresql`): run `cargo xtask setup`"
        )
    };
    let versions = std::fs::read_dir(DEBIAN_ROOT).map_err(|_| missing())?;
    versions
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file())
                .then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .ok_or_else(missing)
}

/// The user and group the server runs as: the `postgres` user when we are root, else none
/// (the server runs as we do).
fn server_user() -> Option<(u32, u32)> {
    // Safety: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new("postgres").expect("no NUL");
    // Safety: getpwnam returns null or a pointer to a static record we read at once (the
    // tests look up no other user concurrently).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root, and there is no `postgres` user to run PostgreSQL as (PostgreSQL \
         refuses root; Debian's `postgresql` creates the user): run `cargo xtask setup`"
    );
    // Safety: checked non-null above.
    let pw = unsafe { &*pw };
    Some((pw.pw_uid, pw.pw_gid))
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to the postgres user: {e}", path.display()));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port on 127.0.0.1")
        .port()
}

/// A PostgreSQL server of the test's own. Dropped, it is stopped (immediate shutdown) and its
/// directory removed.
pub struct Server {
    bin: PathBuf,
    user: Option<(u32, u32)>,
    port: u16,
    /// The postmaster's pid (a new one after [`Server::restart`]).
    pid: AtomicU32,
    /// The extra settings it was started with (a restart uses them again).
    settings: Vec<(String, String)>,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    /// The server process and its directory, taken by [`Server::stop`].
    running: Mutex<Option<(Child, tempfile::TempDir)>>,
    /// Dropped by `stop`: the thread that spawned the server ends, and with it the
    /// parent-death signal's hold (see `spawn_server`).
    keeper: Mutex<Option<mpsc::Sender<()>>>,
    databases: AtomicU32,
}

static SHARED: OnceLock<Server> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(s) = SHARED.get() {
        s.stop();
    }
}

impl Server {
    /// This test process's server, started on first use, stopped and removed when the
    /// process exits.
    pub fn shared() -> &'static Server {
        SHARED.get_or_init(|| {
            let server = Server::start();
            // Statics are never dropped: stop it when the process exits. Were the process
            // killed instead, the parent-death signal still stops it.
            // Safety: registering a function that takes no argument.
            unsafe { libc::atexit(stop_shared) };
            server
        })
    }

    /// A new server of its own (a second one for HA tests), with the test settings.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// [`Server::start`] with more settings (`-c name=value`, after the test ones).
    pub fn start_with(settings: &[(&str, &str)]) -> Server {
        let bin = bin_dir().unwrap_or_else(|e| panic!("{e}"));
        let user = server_user();
        // A port taken between finding it free and the server binding it: try another.
        let mut last = String::new();
        for _ in 0..3 {
            match Server::try_start(&bin, user, settings) {
                Ok(server) => return server,
                Err(log) if log.contains("could not bind") => last = log,
                Err(log) => panic!("PostgreSQL did not start:\n{log}"),
            }
        }
        panic!("PostgreSQL could not bind a free port in 3 tries:\n{last}")
    }

    /// Starts a server; `Err` is its log when it exited before accepting connections.
    fn try_start(
        bin: &Path,
        user: Option<(u32, u32)>,
        settings: &[(&str, &str)],
    ) -> Result<Server, String> {
        let dir = tempfile::Builder::new()
            .prefix("wardgate-pg-")
            .tempdir()
            .expect("creating the server's temporary directory");
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        std::fs::create_dir(&socket_dir).expect("creating the socket directory");
        if let Some(user) = user {
            chown(dir.path(), user);
            chown(&socket_dir, user);
        }
        let log = dir.path().join("server.log");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data_dir)
            // C.UTF-8, not C: a locale that folds and orders non-ASCII letters, as a
            // production database's may, so a store relying on the database's locale (where
            // SQLite's LIKE folds ASCII only and orders bytewise) shows up in tests.
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .args(["--no-sync", "--no-instructions"]);
        let out = as_user(&mut initdb, user)
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {}/initdb: {e}", bin.display()));
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let server = Server {
            bin: bin.to_path_buf(),
            user,
            port: free_port(),
            pid: AtomicU32::new(0),
            settings: settings
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            data_dir,
            socket_dir,
            log,
            running: Mutex::new(None),
            keeper: Mutex::new(None),
            databases: AtomicU32::new(0),
        };
        let (child, keeper) = spawn_server(server.command(dir.path()), bin);
        server.pid.store(child.id(), Ordering::Relaxed);
        *server.running.lock().unwrap() = Some((child, dir));
        *server.keeper.lock().unwrap() = Some(keeper);
        server.wait_ready()?;
        Ok(server)
    }

    /// The postmaster's command line: its data directory, port, socket directory, settings,
    /// its log appended to, run as the server user, in `dir`.
    fn command(&self, dir: &Path) -> Command {
        let mut postgres = Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir.display()
            ));
        let extra = self.settings.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        for (name, value) in SETTINGS.iter().copied().chain(extra) {
            postgres.arg("-c").arg(format!("{name}={value}"));
        }
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the server log");
        postgres
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("cloning the log file"))
            .stderr(log_file);
        as_user(&mut postgres, self.user);
        postgres
    }

    /// Stops the server (fast shutdown: its connections are closed) and starts it again on
    /// the same port and data directory, as after a failover or a crash the clients must
    /// reconnect across. Panics if it does not come back.
    pub fn restart(&self) {
        let mut running = self.running.lock().unwrap();
        let (mut child, dir) = running.take().expect("restarting a stopped server");
        // Safety: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(self.pid() as i32, libc::SIGINT) };
        let deadline = Instant::now() + STOP_LIMIT;
        while child.try_wait().expect("waiting on the server").is_none() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not stop within {STOP_LIMIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (child, keeper) = spawn_server(self.command(dir.path()), &self.bin);
        self.pid.store(child.id(), Ordering::Relaxed);
        *running = Some((child, dir));
        *self.keeper.lock().unwrap() = Some(keeper);
        drop(running);
        if let Err(log) = self.wait_ready() {
            panic!("PostgreSQL did not start again:\n{log}");
        }
    }

    /// Waits until the server accepts connections; `Err` (its log) if it exited first.
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let exited = {
                let mut running = self.running.lock().unwrap();
                let (child, _) = running.as_mut().expect("just started");
                child.try_wait().expect("waiting on the server")
            };
            if let Some(status) = exited {
                return Err(format!("exited ({status}):\n{}", self.log()));
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-d", "postgres", "-t", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("running pg_isready");
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "PostgreSQL did not accept connections within {START_LIMIT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server (postmaster) process id.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The directory of the server's binaries (`pg_basebackup`, `pg_ctl`, ... for HA tests).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The user and group the server runs as (`None`: the test's own).
    pub fn user(&self) -> Option<(u32, u32)> {
        self.user
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The URL of `database` on this server (user `postgres`, trusted on loopback).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new empty database of its own: its URL.
    pub fn fresh_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("wardgate_test_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs `sql` in `database` with psql (unaligned, tuples only); its output. Panics with
    /// psql's error when it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out: Output = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", database, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql `{sql}` on {database} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Stops the server at once (immediate shutdown: SIGQUIT, then SIGKILL past
    /// [`STOP_LIMIT`]) and removes its directory; a second call does nothing.
    pub fn stop(&self) {
        let Some((mut child, dir)) = self.running.lock().unwrap().take() else {
            return;
        };
        // Safety: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(self.pid() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + STOP_LIMIT;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.keeper.lock().unwrap().take();
        drop(dir);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` as `user` (as `runuser -u postgres` would: group, no supplementary groups, user).
fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Spawns the server from a thread of its own that lives as long as the server (until the
/// returned sender is dropped): the server gets SIGQUIT (immediate shutdown) when that thread
/// ends, so a test process that dies without stopping it does not leave it running.
fn spawn_server(mut cmd: Command, bin: &Path) -> (Child, mpsc::Sender<()>) {
    // Safety: prctl is async-signal-safe; it runs in the child after the user change (which
    // would clear it) and before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (child_tx, child_rx) = mpsc::channel();
    let (keep_tx, keep_rx) = mpsc::channel::<()>();
    let program = bin.join("postgres");
    std::thread::Builder::new()
        .name("postgres-keeper".into())
        .spawn(move || {
            let _ = child_tx.send(cmd.spawn());
            // Returns when the sender is dropped (the server stopped).
            let _ = keep_rx.recv();
        })
        .expect("spawning the server's thread");
    let child = child_rx
        .recv()
        .expect("the server's thread")
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    (child, keep_tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // Safety: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as i32, 0) == 0 }
    }

    /// The uid a process runs as, from /proc.
    fn uid_of(pid: u32) -> u32 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_server_of_its_own_serves_distinct_fresh_databases_and_is_gone_when_dropped() {
        let server = Server::start();
        let (pid, port, data) = (server.pid(), server.port(), server.data_dir().to_path_buf());
        let root = data.parent().unwrap().to_path_buf();
        assert!(data.join("PG_VERSION").is_file(), "initdb made {data:?}");
        assert!(
            server
                .socket_dir()
                .join(format!(".s.PGSQL.{port}"))
                .exists()
        );
        // Safety: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let (uid, _) = server.user().expect("as root it runs as postgres");
            assert_ne!(uid, 0);
            assert_eq!(uid_of(pid), uid, "the server runs as the postgres user");
        }
        assert_eq!(server.psql("postgres", "SELECT 1 + 1"), "2");

        let (a, b) = (server.fresh_database(), server.fresh_database());
        assert_ne!(a, b);
        let name = |url: &str| url.rsplit('/').next().unwrap().to_string();
        let (a, b) = (name(&a), name(&b));
        server.psql(&a, "CREATE TABLE t (x INT); INSERT INTO t VALUES (7)");
        assert_eq!(server.psql(&a, "SELECT x FROM t"), "7");
        assert_eq!(
            server.psql(&b, "SELECT count(*) FROM pg_tables WHERE tablename = 't'"),
            "0",
            "a fresh database is empty"
        );
        assert_eq!(
            server.psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_database WHERE datname IN ('{a}', '{b}')")
            ),
            "2"
        );

        drop(server);
        assert!(!alive(pid), "the server process is gone");
        assert!(!root.exists(), "its directory is removed");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens on its port"
        );
    }

    /// Set in the child test process of the test below: it starts the shared server, says
    /// which it is, and exits (`exit`) or waits to be killed (`kill`).
    const CHILD: &str = "WARDGATE_TESTKIT_PG_CHILD";
    const SELF: &str = "postgres::tests::the_shared_server_goes_with_its_process";

    /// Runs this test in a child process in `mode`; the shared server's pid and directory.
    fn child(mode: &str) -> (std::process::Child, u32, PathBuf) {
        use std::io::BufRead as _;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", SELF, "--nocapture", "--test-threads=1"])
            .env(CHILD, mode)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines
            .by_ref()
            .map_while(std::result::Result::ok)
            .find_map(|l| Some(l.split_once("shared-server ")?.1.to_string()))
            .expect("the child names its server");
        // The rest is read, or the child's next print would fail on a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let mut words = line.split(' ');
        let pid = words.next().unwrap().parse().unwrap();
        let dir = PathBuf::from(words.next().unwrap());
        (child, pid, dir)
    }

    #[test]
    fn the_shared_server_goes_with_its_process() {
        if let Some(mode) = std::env::var_os(CHILD) {
            let s = Server::shared();
            println!("shared-server {} {}", s.pid(), s.data_dir().display());
            if mode == "kill" {
                std::thread::sleep(Duration::from_secs(60));
            }
            return;
        }
        // Exiting: stopped and removed at exit.
        let (mut exiting, pid, data) = child("exit");
        assert!(exiting.wait().unwrap().success());
        assert!(!alive(pid), "stopped when its process exits");
        assert!(!data.exists(), "its directory is removed");
        // Killed: no exit handler runs, the parent-death signal stops the server.
        let (mut killed, pid, data) = child("kill");
        assert!(alive(pid));
        killed.kill().unwrap();
        killed.wait().unwrap();
        let deadline = Instant::now() + STOP_LIMIT;
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "the server outlived its killed process"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // What a killed process cannot remove.
        std::fs::remove_dir_all(data.parent().unwrap()).unwrap();
    }

    #[test]
    fn two_servers_run_side_by_side_and_the_shared_one_is_one() {
        let (one, two) = (Server::shared(), Server::start());
        assert!(std::ptr::eq(one, Server::shared()));
        assert_ne!(one.port(), two.port());
        assert_ne!(one.data_dir(), two.data_dir());
        let port = |s: &Server| s.psql("postgres", "SHOW port");
        assert_eq!(port(one), one.port().to_string());
        assert_eq!(port(&two), two.port().to_string());
    }
}
