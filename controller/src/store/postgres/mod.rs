//! PostgreSQL store (`store: { postgres: URL }`): the same rows and the same observable
//! behaviour as [`super::SqliteStore`], for controllers that keep their state in a database
//! server (several replicas on one database later, a primary that fails over).
//!
//! The runtime. `Store` is synchronous and is called from tokio worker threads (inside
//! `block_in_place` or not), from `spawn_blocking`, from plain threads and tests. The store
//! owns a thread of its own running a current-thread tokio runtime; the connections'
//! `Connection` futures (the sockets) run there and nowhere else. A sync method takes a
//! client from the pool and waits on the client's future with `futures_executor::block_on`:
//! that future only talks to its connection task over a channel, so it needs no runtime on
//! the calling thread and never starts one ("Cannot start a runtime from within a runtime"
//! cannot happen). Connecting needs tokio's sockets, so it is spawned on the store's runtime
//! and waited for over a std channel.
//!
//! Writers. Where the SQLite store relies on its single writer (the audit chain head read and
//! the entries after it, `max_device_id`, generation numbers, alert sequence numbers taken in
//! commit order, the read-merge-write of flow rows), every write transaction here takes one
//! transaction-scoped advisory lock first ([`WRITE_LOCK`]): two controllers on one database
//! write one after the other, so neither forks the chain nor reuses a number. The transactions
//! are READ COMMITTED: each statement after the lock sees every commit made before it (a
//! REPEATABLE READ snapshot would be taken by the lock statement itself, before the wait).
//!
//! Replicas. Several controllers on one database: writes wait for each other (above); each
//! write transaction NOTIFYs what it committed and every store LISTENs (`listen`), so a
//! controller republishes the generations others wrote ([`super::Store::changes`],
//! `crate::push::follow`); SOC sinks deliver under a lease per sink (`lease`). A call whose
//! connection was lost (a restart, a failover to a promoted standby named in a multi-host URL
//! with `target_session_attrs=read-write`) is tried once more on a new connection.
//!
//! The audit head file. [`super::Store::audit_head`] is None: that file guards one SQLite file
//! on one disk against a cut tail; for PostgreSQL the signed audit checkpoints sent to the SOC
//! sinks are what guards the trail.
//!
//! TLS to the server is not supported yet (`sslmode=require` fails to connect): the URL is
//! for a server on the host or a trusted network.

mod ahead;
mod alerts;
mod console;
mod fleet;
mod import;
mod learning;
mod lease;
mod listen;
mod locked;
mod pending;
mod provenance;
mod quarantine;
mod schema;
mod site;
mod store_impl;
#[cfg(test)]
pub(in crate::store) mod tests;
mod tx;

use std::{
    sync::{Condvar, Mutex, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio_postgres::{Client, NoTls, Row, Statement, types::ToSql};

use super::StoreError;
use crate::error::{Error, Result};

/// The advisory lock every write transaction holds until it ends ("wardgate" in ASCII).
pub(super) const WRITE_LOCK: i64 = 0x7761_7264_6761_7465;
/// The advisory lock migrations run under, so replicas starting together do not race.
const SCHEMA_LOCK: i64 = WRITE_LOCK + 1;

/// Connections for reads and single statements: they run in parallel.
const READERS: usize = 4;
/// Connections for write transactions, apart from the readers': writes wait for each other on
/// the write lock, and a writer waiting there holds its connection, so on a shared pool 500
/// writes in flight held every connection and the reads before each write (the device, the
/// profile, the impact) queued behind them: writes reached the lock one at a time and it sat
/// idle between them (hand-offs of 4 ms at p90, measured). Two: one holds the lock, the next
/// waits for it in the database, so the hand-off is the database's own.
const WRITERS: usize = 2;
/// How long a caller waits for a free connection, and a connection attempt, before failing.
const CHECKOUT_WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

use super::sqlite::ALERT_QUOTA;

/// The store. See the module doc for the runtime and the writers' lock.
pub struct PgStore {
    pool: Pool,
    /// Write transactions' connections (see [`WRITERS`]).
    writers: Pool,
    alert_quota: u32,
    /// Commits heard on the database (see `listen`).
    events: tokio::sync::broadcast::Sender<super::StoreEvent>,
    /// This store's name as a sink lease holder (random, one per connected store).
    holder: String,
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Store(e.into())
    }
}

/// A PostgreSQL error with its causes (the server's message, the socket's error): the error's
/// own text is only its kind ("db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Waits for a client future on the calling thread (see the module doc).
pub(super) fn wait<F: std::future::Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}

/// Statements kept prepared per connection: the SQL texts are the modules' constants and a few
/// `format!`ed filters, so this bound is never reached in practice (past it, the cache starts
/// over).
const STATEMENTS_KEPT: usize = 512;

/// A connection and the statements prepared on it. `query(&str)` prepares an unnamed statement
/// each call (a round trip of its own, and a parse and plan on the server); a statement kept
/// here is parsed once per connection, so each later call is one round trip.
pub(super) struct Db {
    client: Client,
    prepared: Mutex<std::collections::HashMap<String, Statement>>,
}

impl std::ops::Deref for Db {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Db {
    fn new(client: Client) -> Db {
        Db {
            client,
            prepared: Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Statement>> {
        self.prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `sql` prepared on this connection, once.
    pub(super) fn statement(&self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.kept().get(sql) {
            return Ok(s.clone());
        }
        let s = wait(self.client.prepare(sql))?;
        let mut kept = self.kept();
        if kept.len() >= STATEMENTS_KEPT {
            kept.clear();
        }
        kept.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// Sync queries on a connection: what the area modules write their SQL with.
pub(super) trait Sql {
    fn rows(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>>;
    fn opt(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>>;
    fn one(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Row>;
    /// Rows changed.
    fn exec(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<u64>;
    fn batch(&self, sql: &str) -> Result<()>;
}

impl Sql for Db {
    fn rows(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        Ok(wait(self.client.query(&self.statement(sql)?, p))?)
    }
    fn opt(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        Ok(wait(self.client.query_opt(&self.statement(sql)?, p))?)
    }
    fn one(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        Ok(wait(self.client.query_one(&self.statement(sql)?, p))?)
    }
    fn exec(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        Ok(wait(self.client.execute(&self.statement(sql)?, p))?)
    }
    fn batch(&self, sql: &str) -> Result<()> {
        Ok(wait(self.batch_execute(sql))?)
    }
}

/// A count, time or id for a BIGINT column (past i64::MAX is i64::MAX).
pub(super) fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A BIGINT column read back as unsigned (a negative value, never written, reads as 0).
pub(super) fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A BIGINT column that holds a u32 (an id, a version, a generation).
pub(super) fn u32_of(table: &'static str, name: &str, v: i64) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| StoreError::corrupt(table, name, format!("{v} is out of range")).into())
}

/// The hosts and ports of a connection string, for messages (never its password).
fn where_to(cfg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = cfg.get_ports();
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        })
        .collect();
    let db = cfg.get_dbname().unwrap_or("(default database)");
    format!("{} database {db}", hosts.join(","))
}

/// The thread that runs the connections (see the module doc); stops when dropped.
struct Runner {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Runner {
    fn start() -> Result<Runner> {
        let (tx, rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wardgate-pg".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                // Spawned connection tasks run while this waits; dropping the store ends it.
                let _ = rt.block_on(stopped);
            })
            .map_err(|e| Error::Internal(format!("starting the PostgreSQL thread: {e}")))?;
        let handle = rx
            .recv()
            .map_err(|_| Error::Internal("the PostgreSQL thread stopped at start".into()))?
            .map_err(|e| Error::Internal(format!("the PostgreSQL runtime: {e}")))?;
        Ok(Runner {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Slots {
    idle: Vec<Db>,
    /// Connections open, idle or checked out.
    open: usize,
}

/// A few connections, opened on demand; a closed one (the server went away, a failover) is
/// dropped and the next checkout connects again, to whichever host the URL's
/// `target_session_attrs` picks then.
struct Pool {
    cfg: tokio_postgres::Config,
    /// Connections open at most.
    size: usize,
    slots: Mutex<Slots>,
    freed: Condvar,
    // Declared last: dropped after the clients, so their sockets close on their own task.
    runner: Runner,
}

/// A client checked out of the pool, returned when dropped.
pub(super) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Db>,
    /// Set when the connection is in an unknown state (a failed rollback): closed, not reused.
    broken: bool,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.client.as_ref().expect("a checked-out client")
    }
}

impl Conn<'_> {
    /// Not given back to the pool (its connection was lost): the next checkout connects anew.
    fn forget(mut self) {
        self.broken = true;
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let Some(c) = self.client.take() else { return };
        let mut s = self.pool.slots();
        if self.broken || c.is_closed() {
            s.open -= 1;
        } else {
            s.idle.push(c);
        }
        self.pool.freed.notify_one();
    }
}

impl Pool {
    fn new(cfg: tokio_postgres::Config, size: usize) -> Result<Pool> {
        Ok(Pool {
            cfg,
            size,
            slots: Mutex::new(Slots {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            runner: Runner::start()?,
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self) -> Result<Conn<'_>> {
        let deadline = Instant::now() + CHECKOUT_WAIT;
        let mut s = self.slots();
        loop {
            while let Some(c) = s.idle.pop() {
                if c.is_closed() {
                    s.open -= 1;
                    continue;
                }
                return Ok(Conn {
                    pool: self,
                    client: Some(c),
                    broken: false,
                });
            }
            if s.open < self.size {
                s.open += 1;
                drop(s);
                return match self.connect() {
                    Ok(c) => Ok(Conn {
                        pool: self,
                        client: Some(c),
                        broken: false,
                    }),
                    Err(e) => {
                        self.slots().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Unavailable(format!(
                    "no free PostgreSQL connection to {} within {}s",
                    where_to(&self.cfg),
                    CHECKOUT_WAIT.as_secs()
                )));
            }
            s = self
                .freed
                .wait_timeout(s, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Opens one connection on the store's runtime and waits for it.
    fn connect(&self) -> Result<Db> {
        let cfg = self.cfg.clone();
        let (tx, rx) = mpsc::channel();
        self.runner.handle.spawn(async move {
            match cfg.connect(NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::warn!(error = %e, "PostgreSQL connection closed");
                        }
                    });
                    let _ = tx.send(Ok(client));
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let named = |e: String| {
            Error::Unavailable(format!(
                "connecting to PostgreSQL at {}: {e}",
                where_to(&self.cfg)
            ))
        };
        match rx.recv_timeout(CONNECT_TIMEOUT + Duration::from_secs(5)) {
            Ok(Ok(c)) => Ok(Db::new(c)),
            Ok(Err(e)) => Err(named(describe(&e))),
            Err(_) => Err(named("timed out".into())),
        }
    }
}

/// Whether `e` says the connection was lost (its socket closed, the server shutting down,
/// a server that is a standby now) rather than the statement failing: worth once more on a
/// new connection.
fn lost(e: &Error) -> bool {
    match e {
        Error::Store(StoreError::Postgres(p)) => connection_lost(p),
        _ => false,
    }
}

/// Whether PostgreSQL error `p` is the connection going away, not the statement failing (the
/// API answers UNAVAILABLE for it).
pub(crate) fn connection_lost(p: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    let gone = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ];
    p.is_closed()
        || p.code().is_some_and(|c| gone.contains(c))
        || std::error::Error::source(p).is_some_and(|s| s.is::<std::io::Error>())
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB` or the
    /// `key=value` form, several hosts allowed), applies pending migrations under an advisory
    /// lock, and makes the store's epoch if it has none.
    pub fn connect(url: &str) -> Result<Self> {
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| {
            // The parser's message does not repeat the URL (which may hold a password).
            Error::Invalid(format!(
                "store.postgres is not a PostgreSQL connection string: {e}"
            ))
        })?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("wardgate-controller");
        }
        let store = PgStore {
            pool: Pool::new(cfg.clone(), READERS)?,
            writers: Pool::new(cfg, WRITERS)?,
            alert_quota: ALERT_QUOTA,
            events: tokio::sync::broadcast::channel(listen::BACKLOG).0,
            holder: lease::holder()?,
        };
        schema::migrate(&*store.conn()?)?;
        // Listening before the first write through this store, so no commit after it is missed.
        let (ready, listening) = mpsc::channel();
        store.pool.runner.handle.spawn(listen::run(
            store.pool.cfg.clone(),
            store.events.clone(),
            ready,
        ));
        let _ = listening.recv_timeout(CONNECT_TIMEOUT + Duration::from_secs(5));
        Ok(store)
    }

    /// This store with another per-gateway alert quota (tests).
    pub fn with_alert_quota(mut self, quota: u32) -> Self {
        self.alert_quota = quota;
        self
    }

    /// Runs raw SQL (tests use it to tamper with rows).
    pub fn execute_raw(&self, sql: &str) -> Result<()> {
        self.conn()?.batch(sql)
    }

    pub(super) fn conn(&self) -> Result<Conn<'_>> {
        self.pool.get()
    }

    /// Runs `f` on a pooled connection; if it fails because that connection was lost (the
    /// server went away: a restart, a failover), once more on a fresh one, which connects to
    /// whichever host of the URL is the primary now. A second failure is the caller's.
    pub(super) fn on<T>(&self, f: impl Fn(&Db) -> Result<T>) -> Result<T> {
        let first = {
            let c = self.conn()?;
            let out = f(&c);
            if out.as_ref().is_err_and(lost) {
                c.forget();
            }
            out
        };
        match first {
            Err(e) if lost(&e) => {
                tracing::warn!(error = %e, "PostgreSQL connection lost; once more on a new one");
                f(&*self.conn()?)
            }
            out => out,
        }
    }

    /// Runs `f` in a transaction that holds the write lock (see the module doc). A
    /// transaction whose connection was lost before its COMMIT was sent is retried once on a
    /// fresh connection (nothing of it was committed); one lost during its COMMIT is not (it
    /// may have committed): that error is the caller's.
    pub(super) fn write<T>(&self, f: impl Fn(&Db) -> Result<T>) -> Result<T> {
        // The error, and whether it came before the COMMIT on a lost connection.
        let once = || -> std::result::Result<T, (Error, bool)> {
            let tx = self.begin_once().map_err(|e| {
                let retry = lost(&e);
                (e, retry)
            })?;
            let out = f(&tx.conn).map_err(|e| {
                let retry = lost(&e);
                (e, retry)
            })?;
            tx.finish().map_err(|e| (e, false))?;
            Ok(out)
        };
        match once() {
            Err((e, true)) => {
                tracing::warn!(error = %e, "PostgreSQL connection lost in a write; once more on a new one");
                once().map_err(|(again, _)| again)
            }
            out => out.map_err(|(e, _)| e),
        }
    }

    /// A transaction begun by `begin` on a reader's connection, on a fresh one if the first
    /// turns out lost.
    fn on_reader<'s, T>(&'s self, begin: impl Fn(Conn<'s>) -> Result<T>) -> Result<T> {
        once_more(|| begin(self.conn()?))
    }

    fn begin_once(&self) -> Result<tx::PgTx<'_>> {
        tx::PgTx::begin(self.writers.get()?)
    }

    /// Starts a write transaction for the write service, on a fresh connection if the first
    /// one turns out lost.
    fn begin_tx(&self) -> Result<tx::PgTx<'_>> {
        once_more(|| self.begin_once())
    }
}

/// Begins a transaction with `begin`, once more if the connection it got turns out lost (a
/// closed connection is not given back to its pool, so the second gets a new one).
fn once_more<T>(begin: impl Fn() -> Result<T>) -> Result<T> {
    match begin() {
        Err(e) if lost(&e) => {
            tracing::warn!(error = %e, "PostgreSQL connection lost; beginning once more on a new one");
            begin()
        }
        out => out,
    }
}
