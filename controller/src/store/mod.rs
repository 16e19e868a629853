//! The store: devices, profile versions, groups, gateways, generations per gateway, alerts and
//! the audit trail, persisted and read as typed rows. `Store` is the interface; `SqliteStore`
//! is the embedded default (one file in the data directory, WAL, migrations), `PgStore` the
//! PostgreSQL one (`store: { postgres: URL }`, `postgres/`).
//!
//! The store does no policy work: what a write does, in which order (ids, compiling, the bundle
//! limit, generation numbers, audit entries and their hashes, the head file) is the write
//! service's (`crate::write`), which drives a [`StoreTx`].

pub mod checkpoint;
mod console;
mod console_alerts;
mod fleet;
mod learning;
pub mod migrate;
pub(crate) mod migrations;
mod pending;
mod postgres;
pub(crate) use postgres::connection_lost;
mod provenance;
mod quarantine;
mod reader;
mod sqlite;
mod sqlite_tx;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

pub use console_alerts::{AlertPage, AlertPageQuery, AlertState, ConsoleAlert};
pub use learning::oldest_day;
pub use postgres::PgStore;
use serde::{Deserialize, Serialize};
pub use sqlite::SqliteStore;
use thiserror::Error;
use wardgate_analysis::{
    FlowRecord,
    aggregate::FlowAggregate,
    baseline::lifecycle::{Action, Lifecycle},
};
use wardgate_policy::{Mode, desired::MacAddr};

use crate::{
    audit::{AuditEntry, head::HeadFile},
    error::Result,
};

/// What the store itself can fail with.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL query or connection error (connection failures are reported by
    /// `PgStore` with the host they were for).
    #[error("postgres: {}", postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A stored row that does not parse: reported by table and name, never read as empty.
    #[error("corrupt row `{name}` in table `{table}`: {problem}")]
    Corrupt {
        table: &'static str,
        name: String,
        problem: String,
    },
}

impl StoreError {
    pub fn corrupt(table: &'static str, name: &str, problem: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            table,
            name: name.to_string(),
            problem: problem.to_string(),
        }
    }
}

/// A device as stored: MAC, addresses and mode parsed at the store's edge (stored in their
/// canonical text, so the store can look up a MAC or an address).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRow {
    pub name: String,
    pub id: u32,
    pub mac: MacAddr,
    pub addresses: Vec<IpAddr>,
    pub profile: String,
    pub mode: Mode,
    pub gateway: String,
    pub location: String,
    pub asset_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRow {
    pub name: String,
    pub version: u32,
    pub yaml: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRow {
    pub name: String,
    pub interfaces: Vec<String>,
    pub location: String,
    pub applied_generation: u32,
    pub last_error: String,
    /// The store epoch of the generation the agent applied ('' before it reported one).
    #[serde(default)]
    pub applied_epoch: String,
}

/// What a gateway's agent reports of its health with its status (`StatusReport.health`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentHealth {
    /// The agent's release (MAJOR.MINOR.PATCH).
    pub agent_version: String,
    /// The fail-open watchdog has fired and not recovered.
    pub watchdog_fired: bool,
    /// Watchdog transitions the datapath counted: to fired, and back.
    pub watchdog_fired_count: u32,
    pub watchdog_recovered_count: u32,
    /// Enforced devices of the applied policy whose profile fails open (only monitored while
    /// the watchdog has fired).
    pub fail_open_devices: u32,
    /// Age of the agent's heartbeat when it reported (ms; `None`: it never beat).
    pub heartbeat_age_ms: Option<u64>,
}

/// A gateway's last reported health as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthRow {
    pub health: AgentHealth,
    /// When the report came (Unix ms, the controller's clock).
    pub received_ms: i64,
    /// When the first report of the watchdog's current firing came (`None` while not fired).
    pub watchdog_fired_since_ms: Option<i64>,
}

/// A gateway's latest generation and the one its agent last reported applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayGenerations {
    pub gateway: String,
    pub latest: u32,
    pub applied: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationRow {
    pub gateway: String,
    pub generation: u32,
    pub content: GenerationContent,
    pub reason: String,
}

/// A generation's content as stored; `crate::generation` hashes and decodes it.
///
/// Generations are stored as the canonical policy-bundle bytes, so what the audit chain hashes
/// is exactly what is stored and a serde change cannot move a hash. Generations stored before
/// migration 9 keep the pretty JSON their audit entries hashed (column `format` says which):
/// rewriting them would break the chain they are in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenerationContent {
    /// `format = 'json'`: written before migration 9, read only.
    LegacyJson(String),
    /// `format = 'bundle-v1'`: the canonical bundle bytes (`crate::generation::canonical_bytes`).
    Bundle(Vec<u8>),
}

/// What the compiler reads, inside the write transaction: the devices it asks for, and the
/// rest of the site whole.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub devices: Vec<DeviceRow>,
    pub profiles: Vec<ProfileRow>,
    pub groups: BTreeMap<String, Vec<String>>,
    pub gateways: Vec<GatewayRow>,
    /// Stable ids: profile name -> policy id, (profile, flow key) -> rule id.
    pub policy_ids: BTreeMap<String, u32>,
    pub rule_ids: BTreeMap<(String, String), u32>,
}

/// Which stored alerts to read. Empty strings match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertQuery {
    pub gateway: String,
    pub device: String,
    /// Lowest severity rank (0 = low .. 3 = critical).
    pub min_severity: u8,
    pub include_acknowledged: bool,
    /// List only: also the alerts a suppression held back (every reader leaves them out
    /// otherwise, as the sinks do).
    pub include_suppressed: bool,
    pub limit: u32,
}

impl AlertQuery {
    /// The newest `limit` alerts, acknowledged or not.
    pub fn recent(limit: u32) -> Self {
        AlertQuery {
            include_acknowledged: true,
            limit,
            ..Default::default()
        }
    }
}

/// An alert to store: its body is the analysis crate's `Finding` as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAlert {
    pub id: String,
    pub device: String,
    /// Rank (0 = info or low .. 3 = critical).
    pub severity: u8,
    pub body: String,
    /// For suppressions: the detector and the peer ('' when none).
    pub detector: String,
    pub peer: String,
    /// Aggregation: a copy with a higher count, or the same count and a later last seen,
    /// replaces the stored one; an older or equal copy is ignored.
    pub count: u64,
    pub last_seen_ns: u64,
}

/// A stored alert as the SOC sinks read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAlert {
    /// The store's sequence number: grows with every stored alert and every update of one,
    /// never reused (an update takes a new one).
    pub seq: i64,
    /// The sequence number the alert was first stored under (its creation row).
    pub first_seq: i64,
    pub gateway: String,
    pub id: String,
    pub body: String,
    pub acknowledged: bool,
    pub acknowledged_by: String,
}

impl StoredAlert {
    /// Whether this row is an update of an alert stored before (a reader that reads every row
    /// in order has delivered its creation row already).
    pub fn is_update(&self) -> bool {
        self.seq != self.first_seq
    }
}

/// A stored alert as listings read it (its latest version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertRow {
    pub gateway: String,
    /// The analysis crate's `Finding` as JSON.
    pub body: String,
    pub acknowledged: bool,
    pub acknowledged_by: String,
    /// Held back by a suppression when it was stored.
    pub suppressed: bool,
}

/// A console session as stored (`crate::console::session` decides what it means): the id is
/// only ever stored hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 (hex) of the opaque id the browser holds.
    pub id_hash: String,
    pub user: String,
    pub role: crate::auth::Role,
    /// How the user logged in: `local` (the break-glass admin) or `oidc:ISSUER`.
    pub source: String,
    /// The identity provider's subject and authentication context ('' for a local login).
    pub subject: String,
    pub acr: String,
    /// The session's CSRF token (every POST carries it).
    pub csrf: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// A profile change for a device awaiting a second engineer's approval, as stored
/// (`crate::console::approval` decides who may approve).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingChangeRow {
    /// Given by the store (0 in a [`Change::SubmitChange`]).
    pub id: i64,
    pub device: String,
    /// The profile the device moves to, and its YAML.
    pub profile: String,
    pub yaml: String,
    /// The proposer's reason or ticket.
    pub reason: String,
    /// The proposer's user name.
    pub proposer: String,
    pub proposed_ms: i64,
    /// Who approved it, and when (`None`: pending).
    pub approver: Option<String>,
    pub decided_ms: Option<i64>,
    /// Closed without being applied (then `decided_ms` is when), by whom and why.
    pub closed: Option<Closure>,
    pub closed_by: Option<String>,
    pub close_reason: String,
}

impl PendingChangeRow {
    /// Neither approved nor closed.
    pub fn is_pending(&self) -> bool {
        self.approver.is_none() && self.closed.is_none()
    }
}

/// How a pending change was closed without being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Closure {
    /// By its proposer.
    Withdrawn,
    /// By another engineer, with a reason.
    Rejected,
}

impl Closure {
    pub fn as_str(self) -> &'static str {
        match self {
            Closure::Withdrawn => "withdrawn",
            Closure::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Closure> {
        match s {
            "withdrawn" => Some(Closure::Withdrawn),
            "rejected" => Some(Closure::Rejected),
            _ => None,
        }
    }
}

/// One page of the console's inventory: filters (empty = any), run in the query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InventoryQuery {
    /// Substring of the name, MAC, an address, the asset id or the location.
    pub search: String,
    pub profile: String,
    pub gateway: String,
    pub mode: Option<Mode>,
    /// A baseline state (`learning`, `frozen`, `approved`) or `none` (no flow seen yet).
    pub baseline: String,
    pub offset: u64,
    pub limit: u32,
}

/// A device as the inventory lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryRow {
    pub device: DeviceRow,
    /// The baseline state (`None`: no flow stored yet).
    pub baseline: Option<String>,
    /// The last flow stored for it (ns since the Unix epoch).
    pub last_seen_ns: Option<u64>,
}

/// What [`Store::inventory`] answers: the page, how many match, and the values the filters
/// offer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InventoryPage {
    pub rows: Vec<InventoryRow>,
    pub total: u64,
    pub profiles: Vec<String>,
    pub gateways: Vec<String>,
}

/// What applying a change found before it, for its audit entry (the write service words it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A device change: the device's row before it (none for a new device).
    Device(Option<DeviceRow>),
    /// A profile's new version and the latest one before it.
    Profile {
        before: Option<ProfileRow>,
        version: u32,
    },
    /// A group's CIDRs before (none for a new group).
    Group(Option<Vec<String>>),
    /// A baseline's lifecycle before (none: nothing recorded yet) and after, and the flow rows
    /// cleared.
    Baseline {
        before: Option<Lifecycle>,
        after: Lifecycle,
        cleared: usize,
    },
    /// A change whose entry does not record a before (gateways, suppressions, acknowledgements).
    Recorded,
}

/// One change an engineer (or the SOC) makes.
#[derive(Clone, Debug)]
pub enum Change {
    UpsertDevice(DeviceRow),
    AssignProfile {
        device: String,
        profile: String,
    },
    SetMode {
        device: String,
        mode: Mode,
    },
    SetLocation {
        device: String,
        location: String,
    },
    UpsertProfile {
        name: String,
        yaml: String,
    },
    UpsertGroup {
        name: String,
        cidrs: Vec<String>,
    },
    UpsertGateway(GatewayRow),
    /// Alert ids, each `GATEWAY/ID` or a bare id that only one gateway uses.
    AcknowledgeAlerts {
        ids: Vec<String>,
        /// Who acknowledged them (the actor, `user:NAME`), kept on each alert.
        by: String,
    },
    /// Freeze, approve or relearn a device's baseline at `now_ns`.
    SetBaseline {
        device: String,
        action: Action,
        now_ns: u64,
    },
    /// Alerts of `detector` on `device` (about `peer`, '' = any) are stored from now on but
    /// not sent to the SOC sinks.
    SuppressAlerts {
        device: String,
        detector: String,
        peer: String,
        /// Who made it, when (ms since the epoch) and why, for listing it.
        made_by: String,
        made_ms: i64,
        reason: String,
    },
    /// Removes a suppression (exactly as it was made); not found is an error.
    UnsuppressAlerts {
        device: String,
        detector: String,
        peer: String,
    },
    /// A one-time enrollment token for `gateway`, stored as its SHA-256 only; refused for a
    /// revoked gateway.
    IssueEnrollmentToken {
        gateway: String,
        token_hash: String,
        expires_ms: i64,
    },
    /// The token `token_hash` spent on a certificate for `gateway`: refused
    /// (`Error::Denied`, the reason for the audit trail) unless the token is unused, unexpired
    /// at `now_ms`, of that gateway, and the gateway is not revoked.
    Enroll {
        gateway: String,
        token_hash: String,
        cert: IssuedCert,
        now_ms: i64,
    },
    /// A renewed certificate for `gateway`; refused (`Error::Denied`) once it is revoked.
    RenewCertificate {
        gateway: String,
        cert: IssuedCert,
    },
    /// An enrollment or renewal refused: recorded in the audit trail only.
    RefuseCertificate {
        gateway: String,
        kind: CertRequest,
        why: String,
    },
    /// No enrollment, renewal or sync for `gateway` from now on; the certificates issued to it
    /// go on the issuing CA's revocation list.
    RevokeGateway {
        gateway: String,
    },
    /// A profile change submitted for a second engineer's approval (stored pending).
    SubmitChange(PendingChangeRow),
    /// `approver`'s approval of pending change `id`, proposed by `proposer` (the same write
    /// then applies it).
    ApproveChange {
        id: i64,
        device: String,
        proposer: String,
        approver: String,
        at_ms: i64,
    },
    /// Pending change `id` (of `device`, proposed by `proposer`) closed unapplied by `by`:
    /// withdrawn (`by` must be the proposer) or rejected (`by` must not be), with `why`.
    CloseChange {
        id: i64,
        device: String,
        proposer: String,
        by: String,
        closure: Closure,
        why: String,
        at_ms: i64,
    },
    /// A console login, failed login or logout: an audit entry, nothing else stored.
    ConsoleLogin {
        /// The user's name (for a failed login, the name that was tried, or the provider's
        /// subject).
        user: String,
        event: LoginEvent,
        /// `local` or `oidc:ISSUER`.
        source: String,
        /// The client's address as the console saw it.
        address: String,
        /// Why a login failed ('' otherwise).
        why: String,
    },
    /// The SOC asks for `device` to be quarantined for `minutes` (an engineer approves).
    RequestQuarantine {
        device: String,
        reason: String,
        by: String,
        at_ms: i64,
        minutes: u32,
    },
    /// `approver` approved quarantine request `id` (refused if it is not pending or is their
    /// own); the same write quarantines the device.
    ApproveQuarantine {
        id: i64,
        device: String,
        approver: String,
        at_ms: i64,
    },
    /// A SOC quarantine of `device` ends at `until_ms`, back to `restore_mode` (replaces one
    /// set before).
    QuarantineTimer {
        device: String,
        until_ms: i64,
        restore_mode: Mode,
        set_by: String,
    },
    /// The timer of `device` is done (expired, or the device's mode was set since).
    ClearQuarantineTimer {
        device: String,
    },
    /// A write refused for want of a role: an audit entry, nothing else stored.
    Refused {
        action: String,
        target: String,
        why: String,
    },
    /// An inventory import (`crate::import`): the fields it set on each device, kept with
    /// their source (format, file name, SHA-256) as each field's provenance.
    RecordImport {
        source: ImportSource,
        fields: Vec<ImportedFields>,
    },
}

/// The file an import read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSource {
    /// `fhir` or `csv`.
    pub format: String,
    pub file: String,
    pub sha256: String,
}

/// The fields an import set on one device: (field, value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedFields {
    pub device: String,
    pub fields: Vec<(String, String)>,
}

/// Where one field of a device came from (`device_fields`): its value as set, the source
/// (`fhir`, `csv`, `console`, ...), the file and its SHA-256 (empty when not a file), when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRow {
    pub device: String,
    pub field: String,
    pub value: String,
    pub source: String,
    pub file: String,
    pub sha256: String,
    pub set_ms: i64,
}

/// What a [`Change::ConsoleLogin`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginEvent {
    Login,
    Failed,
    Logout,
}

impl LoginEvent {
    /// The audit entry's action.
    pub fn action(self) -> &'static str {
        match self {
            LoginEvent::Login => "console_login",
            LoginEvent::Failed => "console_login_failed",
            LoginEvent::Logout => "console_logout",
        }
    }
}

/// A SOC quarantine request as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineRequestRow {
    pub id: i64,
    pub device: String,
    pub reason: String,
    pub requested_by: String,
    pub requested_ms: i64,
    pub minutes: u32,
    pub approver: Option<String>,
}

/// When a SOC quarantine ends, and the mode the device goes back to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineTimerRow {
    pub device: String,
    pub until_ms: i64,
    pub restore_mode: Mode,
    pub set_by: String,
}

/// One suppression as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuppressionRow {
    pub device: String,
    pub detector: String,
    /// '' = any peer.
    pub peer: String,
    pub made_by: String,
    pub made_ms: i64,
    pub reason: String,
}

/// A certificate the controller issued, as `gateway_certs` keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// Hex.
    pub serial: String,
    pub not_after_ms: i64,
}

/// One device's flows with one peer over some days, with the device's class (profile): what
/// the console's policy matrix checks against the class's profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedFlow {
    pub profile: String,
    pub device: String,
    pub direction: wardgate_analysis::FlowDirection,
    pub peer: IpAddr,
    pub proto: u8,
    pub port: u16,
    pub flows: u64,
}

/// Which certificate request a refusal answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertRequest {
    Enroll,
    Renew,
}

/// What a batch of flow records did to the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowsStored {
    /// Records folded into the aggregates.
    pub stored: u32,
    /// Records of devices the store does not hold (not stored).
    pub unknown_device: u32,
    /// Records older than the retention (not stored).
    pub expired: u32,
    /// Records that would have made a new row for a device and day at the row cap (counted
    /// per device and day in the store, not stored).
    pub over_cap: u32,
    /// Aggregate rows deleted past the retention.
    pub pruned: usize,
}

/// Bounds on what flow reports may store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLimits {
    /// Days kept (at least 1).
    pub retention_days: u32,
    /// Distinct rows (direction, peer, protocol, port) per device per UTC day; records that
    /// would make more are counted, not stored.
    pub rows_per_device_day: u32,
}

/// Distinct flow rows a device may have per day by default: a pump or a monitor talks to a
/// handful of services; ten thousand is a scan or a flood, not a baseline.
pub const DEFAULT_ROWS_PER_DEVICE_DAY: u32 = 10_000;

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            retention_days: 30,
            rows_per_device_day: DEFAULT_ROWS_PER_DEVICE_DAY,
        }
    }
}

/// Reads the site inside a write's transaction, after its changes: the compiler reads the
/// devices it needs, not every row.
pub trait SiteReader {
    /// Profiles (latest versions), groups and stable ids; no gateways, no devices.
    fn base(&self) -> Result<Snapshot>;
    /// The gateways of `names` that exist, by name.
    fn gateways(&self, names: &BTreeSet<String>) -> Result<Vec<GatewayRow>>;
    /// Every gateway's name (a group change reaches them all).
    fn gateway_names(&self) -> Result<Vec<String>>;
    /// Devices on any of `gateways` or using any of `profiles`, by id.
    fn devices_of(
        &self,
        gateways: &BTreeSet<String>,
        profiles: &BTreeSet<String>,
    ) -> Result<Vec<DeviceRow>>;
    fn device(&self, name: &str) -> Result<Option<DeviceRow>>;
}

impl Change {
    /// The device a change is about, if it is about one.
    pub fn device(&self) -> Option<&str> {
        match self {
            Change::UpsertDevice(d) => Some(&d.name),
            Change::AssignProfile { device, .. }
            | Change::SetMode { device, .. }
            | Change::SetLocation { device, .. }
            | Change::SetBaseline { device, .. } => Some(device),
            _ => None,
        }
    }

    /// The device whose profile, mode or location the change sets (its row's other columns
    /// stay as they are), if it is one of those changes.
    pub fn device_update(&self) -> Option<&str> {
        match self {
            Change::AssignProfile { device, .. }
            | Change::SetMode { device, .. }
            | Change::SetLocation { device, .. } => Some(device),
            _ => None,
        }
    }
}

/// The audit trail, and the head file's lines or why they could not be read.
pub type AuditWithHead = (
    Vec<AuditEntry>,
    std::result::Result<Vec<crate::audit::head::HeadLine>, String>,
);

/// One write transaction: typed rows in and out, nothing decided here. Dropped without
/// [`StoreTx::commit`], it rolls back. The site reads (`SiteReader`) see the changes applied so
/// far. A backend holds its writer lock from `Store::begin` to commit or drop, so the audit
/// chain head read here is the one the new entries follow.
pub trait StoreTx: SiteReader {
    /// Writes one change's rows; returns what they were before. Row constraints (a device
    /// that must exist, a MAC or address used by another device, an ambiguous alert id) are
    /// checked here. `UpsertDevice` is stored with the id it carries.
    fn apply(&mut self, change: &Change) -> Result<Applied>;
    /// The highest device id stored (0: none).
    fn max_device_id(&self) -> Result<u32>;
    fn insert_policy_id(&mut self, profile: &str, id: u32) -> Result<()>;
    fn insert_rule_id(&mut self, profile: &str, flow: &str, id: u32) -> Result<()>;
    /// The store's epoch (see [`Store::epoch`]).
    fn epoch(&self) -> Result<String>;
    /// The newest generation of `gateway`, if it has one.
    fn latest(&self, gateway: &str) -> Result<Option<GenerationRow>>;
    fn insert_generation(&mut self, row: &GenerationRow) -> Result<()>;
    /// The last audit entry's sequence and hash (0 and the genesis hash when empty).
    fn audit_chain_head(&self) -> Result<(u64, String)>;
    fn insert_audit(&mut self, entry: &AuditEntry) -> Result<()>;
    /// A hint before several writes in this transaction (a group: `crate::write::group`):
    /// the devices they change. A backend whose every read is a round trip may read ahead
    /// what those writes will read (the devices, their gateways' devices and rows, those
    /// gateways' latest generations) in a few statements instead of several per write; a read
    /// it then serves must return what reading would.
    fn read_ahead(&mut self, _devices: &[&str]) -> Result<()> {
        Ok(())
    }
    fn commit(self: Box<Self>) -> Result<()>;
}

/// A change committed to a shared store (by any controller on it), reported by
/// [`Store::changes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// A new generation of a gateway.
    Generation { gateway: String, generation: u32 },
    /// Alerts were stored.
    Alerts,
    /// Changes may have been missed (the store's listening connection was lost and is back,
    /// or a receiver fell behind): re-read what matters.
    Resync,
}

pub trait Store: Send + Sync {
    /// The file this store's writes append their audit chain heads to, if any (the write
    /// service runs the protocol: `crate::write`).
    fn audit_head(&self) -> Option<&HeadFile> {
        None
    }
    /// The path of [`Store::audit_head`].
    fn audit_head_path(&self) -> Option<std::path::PathBuf> {
        self.audit_head().map(|h| h.path().to_path_buf())
    }
    /// Starts a write transaction; writes wait for each other.
    fn begin(&self) -> Result<Box<dyn StoreTx + '_>>;
    /// A consistent read of the site (one snapshot of it) for a caller that writes nothing:
    /// a backend whose writes wait for each other across connections gives one that does not
    /// wait for them. By default a write transaction, dropped unwritten.
    fn read_site(&self) -> Result<Box<dyn SiteReader + '_>> {
        Ok(self.begin()?)
    }
    /// Everything: every device too (listings; writes read only what they change).
    fn snapshot(&self) -> Result<Snapshot>;
    fn device(&self, name: &str) -> Result<Option<DeviceRow>>;
    /// The site's groups (name -> CIDRs), without the rest of the snapshot.
    fn groups(&self) -> Result<BTreeMap<String, Vec<String>>> {
        Ok(self.snapshot()?.groups)
    }
    fn gateway(&self, name: &str) -> Result<Option<GatewayRow>>;
    fn profile(&self, name: &str) -> Result<Option<ProfileRow>>;
    /// The store's epoch: a random id made when the store was created, sent with every
    /// bundle (generation numbers of two stores are not comparable).
    fn epoch(&self) -> Result<String>;
    /// Generations of `gateway` after `after`, oldest first.
    fn generations_after(&self, gateway: &str, after: u32) -> Result<Vec<GenerationRow>>;
    /// The newest generation of `gateway`, if it has one.
    fn latest(&self, gateway: &str) -> Result<Option<GenerationRow>>;
    fn latest_generation(&self, gateway: &str) -> Result<u32>;
    /// One generation of `gateway`, if stored.
    fn generation(&self, gateway: &str, generation: u32) -> Result<Option<GenerationRow>> {
        Ok(self
            .generations_after(gateway, generation.saturating_sub(1))?
            .into_iter()
            .find(|g| g.generation == generation))
    }
    /// Every gateway with its latest generation and the one its agent last reported applied
    /// (for metrics: read at every scrape, so backends should answer it in one query).
    fn gateway_generations(&self) -> Result<Vec<GatewayGenerations>> {
        self.snapshot()?
            .gateways
            .into_iter()
            .map(|g| {
                Ok(GatewayGenerations {
                    latest: self.latest_generation(&g.name)?,
                    applied: g.applied_generation,
                    gateway: g.name,
                })
            })
            .collect()
    }
    /// What the gateway's agent applied: generation, the epoch of the store it came from,
    /// and the error (empty when it applied cleanly); and its health, which replaces the last
    /// one (`None`, from an agent that reports none, clears it).
    fn report_status(
        &self,
        gateway: &str,
        applied: u32,
        epoch: &str,
        error: &str,
        health: Option<&AgentHealth>,
    ) -> Result<()>;
    /// Each gateway's last reported health, for those whose last status carried one.
    fn gateway_health(&self) -> Result<BTreeMap<String, HealthRow>>;
    /// Stores `gateway`'s alerts (one alert per id within the gateway: a copy with a higher
    /// count, or as many and a later last seen, becomes its latest version under a new
    /// sequence number, keeping the acknowledgement, while its creation row stays; an older or
    /// equal copy is ignored); returns the ids now stored (new, updated or already there).
    fn insert_alerts(&self, gateway: &str, alerts: &[NewAlert]) -> Result<Vec<String>>;
    /// Up to `limit` stored alerts with a sequence number above `after`, oldest first, leaving
    /// out suppressed ones (what a SOC sink delivers next).
    fn alerts_after(&self, after: i64, limit: u32) -> Result<Vec<StoredAlert>> {
        self.alerts_since(&AlertQuery::recent(limit), after)
    }
    /// Up to `q.limit` stored alerts matching `q` with a sequence number above `after`,
    /// oldest first, leaving out suppressed ones: filtered in the query (what a cursor reader,
    /// a sink or a Subscribe stream, reads next).
    fn alerts_since(&self, q: &AlertQuery, after: i64) -> Result<Vec<StoredAlert>>;
    /// How many stored alerts a sink whose cursor is at `after` has yet to deliver (not
    /// suppressed, sequence number above `after`).
    fn alerts_pending(&self, after: i64) -> Result<u64>;
    /// The last sequence number `sink` delivered (0: none yet, it starts with the oldest
    /// stored alert).
    fn sink_cursor(&self, sink: &str) -> Result<i64>;
    /// Records that `sink` delivered everything up to `seq` (never moves a cursor back).
    fn advance_sink_cursor(&self, sink: &str, seq: i64) -> Result<()>;
    /// Takes or renews this store's lease on `sink` for `ttl`: true while this store holds
    /// it (several controllers on one database deliver each alert once: only the holder
    /// delivers). A lease not renewed within `ttl` (its controller died) is taken over.
    /// One controller alone (SQLite) always holds it.
    fn hold_sink_lease(&self, _sink: &str, _ttl: std::time::Duration) -> Result<bool> {
        Ok(true)
    }
    /// [`Store::advance_sink_cursor`] only while this store holds `sink`'s lease (false, and
    /// the cursor unchanged, when it lost it).
    fn advance_held_sink_cursor(&self, sink: &str, seq: i64) -> Result<bool> {
        self.advance_sink_cursor(sink, seq).map(|()| true)
    }
    /// Changes committed by other controllers on the same database, as they commit (None:
    /// this store has no other writers). See [`StoreEvent`].
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        None
    }
    /// Alerts dropped past `gateway`'s quota, per severity rank (low .. critical).
    fn alert_drops(&self, gateway: &str) -> Result<[u64; 4]>;
    /// Alerts matching `q`, newest first: filtered in the query, then limited.
    fn alerts(&self, q: &AlertQuery) -> Result<Vec<AlertRow>>;
    /// Every suppression, by device, detector and peer.
    fn suppressions(&self) -> Result<Vec<SuppressionRow>>;
    /// Quarantine request `id`, pending or decided.
    fn quarantine_request(&self, id: i64) -> Result<Option<QuarantineRequestRow>>;
    /// The quarantine requests still waiting for an engineer, oldest first.
    fn pending_quarantines(&self) -> Result<Vec<QuarantineRequestRow>>;
    /// SOC quarantine timers that end at or before `now_ms`.
    fn due_quarantine_timers(&self, now_ms: i64) -> Result<Vec<QuarantineTimerRow>>;
    fn audit(&self) -> Result<Vec<AuditEntry>>;
    /// The chain head: the last entry's sequence and hash (0 and the genesis hash when empty).
    fn audit_chain_head(&self) -> Result<(u64, String)> {
        Ok(self.audit()?.last().map_or_else(
            || (0, crate::audit::GENESIS.to_string()),
            |e| (e.seq, e.hash.clone()),
        ))
    }
    /// The trail and the audit head file at `head`, read at one point (no write between).
    fn audit_with_head(&self, head: &std::path::Path) -> Result<AuditWithHead> {
        Ok((self.audit()?, crate::audit::head::read(head)))
    }
    /// Folds flow records (already checked) of `gateway`'s devices into the per-day
    /// aggregates, in one transaction: a device of another gateway refuses the batch; records
    /// of unknown devices or older than the retention at `now_ns` are counted, not stored, and
    /// so are records that would make a row past the device's row cap for their day (counted
    /// per device and day, see [`Store::flow_overflow`]); days past the retention are pruned.
    /// A device's baseline starts with its first flow.
    fn insert_flows(
        &self,
        gateway: &str,
        records: &[FlowRecord],
        now_ns: u64,
        limits: FlowLimits,
    ) -> Result<FlowsStored>;
    /// `device`'s days whose records went past the row cap, with the records not stored,
    /// oldest first.
    fn flow_overflow(&self, device: &str) -> Result<Vec<(u32, u64)>>;
    /// Deletes aggregate rows past `retention_days` at `now_ns`; returns how many.
    fn prune_flows(&self, now_ns: u64, retention_days: u32) -> Result<usize>;
    /// `device`'s aggregate rows with flows in [from_ns, to_ns].
    fn flow_aggregates(&self, device: &str, from_ns: u64, to_ns: u64)
    -> Result<Vec<FlowAggregate>>;
    /// `device`'s baseline lifecycle and when it last changed (Unix ms); None before its
    /// first flow.
    fn baseline_lifecycle(&self, device: &str) -> Result<Option<(Lifecycle, i64)>>;
    /// One page of devices matching `q`, by name, filtered and counted in the query (the
    /// console's inventory: 20,000 devices are never read whole).
    fn inventory(&self, q: &InventoryQuery) -> Result<InventoryPage>;
    /// Stores a new console session.
    fn insert_session(&self, s: &SessionRow) -> Result<()>;
    /// The session whose id hashes to `id_hash`, revoked or not.
    fn session(&self, id_hash: &str) -> Result<Option<SessionRow>>;
    /// Records a request of the session at `now_ms` (the idle timeout counts from it).
    fn touch_session(&self, id_hash: &str, now_ms: i64) -> Result<()>;
    /// Revokes the session at `now_ms`; false if it was not there or already revoked.
    fn revoke_session(&self, id_hash: &str, now_ms: i64) -> Result<bool>;
    /// `user`'s sessions, newest first.
    fn sessions_of(&self, user: &str) -> Result<Vec<SessionRow>>;
    /// Deletes sessions started before `before_ms`; returns how many.
    fn prune_sessions(&self, before_ms: i64) -> Result<usize>;

    /// Whether `gateway` was revoked (`Change::RevokeGateway`).
    fn gateway_revoked(&self, gateway: &str) -> Result<bool>;
    /// Serials (hex) of every certificate issued to a revoked gateway: the issuing CA's
    /// revocation list.
    fn revoked_serials(&self) -> Result<Vec<String>>;
    /// Pending (or decided) change `id`.
    fn pending_change(&self, id: i64) -> Result<Option<PendingChangeRow>>;
    /// `device`'s latest `limit` submitted changes, newest first.
    fn pending_changes(&self, device: &str, limit: u32) -> Result<Vec<PendingChangeRow>>;
    /// One page of alerts matching `q`, newest first, and how many match (the console's
    /// alert list: filtered, counted and paged in the query).
    fn alert_page(&self, q: &AlertPageQuery) -> Result<AlertPage>;
    /// The alert first stored under `first_seq`, in its latest version.
    fn console_alert(&self, first_seq: i64) -> Result<Option<ConsoleAlert>>;
    /// Each field's provenance: of `device`, or of every device (`None`), by device and field.
    fn device_fields(&self, device: Option<&str>) -> Result<Vec<FieldRow>>;
    /// Every device's flows from UTC day `from_day` on, summed per device, direction, peer,
    /// protocol and port, with the device's profile.
    fn observed_flows(&self, from_day: u32) -> Result<Vec<ObservedFlow>>;
    /// Each gateway's latest certificate expiry (Unix ms) among those this controller issued.
    fn cert_expiry(&self) -> Result<BTreeMap<String, i64>>;
    /// Every device's latest `limit` submitted changes, newest first (only the pending ones
    /// if `pending_only`).
    fn latest_changes(&self, pending_only: bool, limit: u32) -> Result<Vec<PendingChangeRow>>;
}
