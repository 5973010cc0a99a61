//! The engine's store: flows, runs and their event log, the outbox, timers,
//! schedules, approvals, the registry, tenants and tokens.
//!
//! [`Store`] is a cheap, cloneable handle picked from a URL in one place
//! ([`Store::open`]); the backend behind it is SQLite (embedded, the default).
//! The engine writes through [`Commit`]: everything one batch of transitions
//! changes, in one transaction.

mod sqlite;

use serde::{Deserialize, Serialize};

pub use sqlite::{NewEntry, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("the lease of shard {shard} was taken over by another worker")]
    LeaseLost { shard: u32 },
    #[error("unsupported store URL `{0}`: use sqlite://PATH")]
    Url(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How hard SQLite pushes commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// fsync on every commit: a committed transition survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a crash of the process (kill -9),
    /// may lose the last commits on power loss.
    Normal,
}

/// The store handle.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqliteStore),
}

impl Store {
    /// Opens (creating and migrating) the store at `url`: `sqlite://PATH`.
    pub async fn open(url: &str, durability: Durability) -> Result<Store> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(Store::Sqlite(SqliteStore::open(path, durability).await?));
        }
        Err(Error::Url(url.to_string()))
    }

    pub fn sqlite(&self) -> &SqliteStore {
        match self {
            Store::Sqlite(s) => s,
        }
    }
}

/// A run row without its state: what the engine needs to route and load it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMeta {
    pub id: String,
    pub tenant: String,
    pub bundle: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub created_at: u64,
}

/// A run's state as the engine writes it.
#[derive(Debug, Clone)]
pub struct RunWrite {
    pub meta: RunMeta,
    pub status: &'static str,
    pub updated_at: u64,
    pub state: Vec<u8>,
}

/// One applied event.
#[derive(Debug, Clone)]
pub struct EventWrite {
    pub run: String,
    pub seq: u64,
    pub id: String,
    pub at: u64,
    pub status: &'static str,
    pub body: Vec<u8>,
}

/// A timer row: deliver `event` to `run` at `due_at`.
#[derive(Debug, Clone)]
pub struct TimerWrite {
    pub run: String,
    pub timer: String,
    pub partition: u32,
    pub due_at: u64,
    /// Set when the engine delivers it itself (a short simulated step): no
    /// loader takes it before then, and after then a loader does, in case the
    /// process died first.
    pub claimed_until: u64,
    pub event: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct ApprovalWrite {
    pub run: String,
    pub step: String,
    pub attempt: u32,
    pub tenant: String,
    pub contract: String,
    pub request: Vec<u8>,
    pub requested_at: u64,
    pub expires_at: Option<u64>,
}

/// Everything one batch of transitions changes, committed in one transaction.
#[derive(Debug, Default)]
pub struct Commit {
    /// The shard and fencing token: the commit fails if the lease moved on.
    pub lease: Option<(u32, i64)>,
    pub runs: Vec<RunWrite>,
    pub events: Vec<EventWrite>,
    pub timers: Vec<TimerWrite>,
    pub timers_deleted: Vec<(String, String)>,
    pub outbox: Vec<(i64, String, Vec<u8>)>,
    pub outbox_deleted: Vec<i64>,
    pub approvals: Vec<ApprovalWrite>,
    /// (run, step, attempt) of approvals no longer awaited.
    pub approvals_closed: Vec<(String, String, u32, u64)>,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.events.is_empty()
            && self.timers.is_empty()
            && self.timers_deleted.is_empty()
            && self.outbox.is_empty()
            && self.outbox_deleted.is_empty()
            && self.approvals.is_empty()
            && self.approvals_closed.is_empty()
    }
}

/// A due timer a loader claimed.
#[derive(Debug, Clone)]
pub struct DueTimer {
    pub run: String,
    pub timer: String,
    pub due_at: u64,
    pub event: Vec<u8>,
}

/// A deployed flow version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRow {
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub bundle: String,
    pub deployed_at: u64,
    pub head: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRow {
    pub id: String,
    pub created_at: u64,
    pub max_active_runs: Option<i64>,
    pub max_starts_per_sec: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRow {
    pub id: String,
    pub tenant: String,
    pub flow: String,
    pub bundle: String,
    pub position: u32,
    pub spec: Vec<u8>,
    pub paused: bool,
    pub last_fire: Option<u64>,
    pub next_due: Option<u64>,
    pub buffered: Option<u64>,
    pub partition: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRow {
    pub run: String,
    pub step: String,
    pub attempt: u32,
    pub tenant: String,
    pub contract: String,
    pub request: serde_json::Value,
    pub requested_at: u64,
    pub expires_at: Option<u64>,
    pub decided_at: Option<u64>,
    pub decision: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryRow {
    pub tenant: String,
    pub kind: String,
    pub name: String,
    pub version: i64,
    pub entry: serde_json::Value,
    pub run: String,
    pub step: String,
    pub inputs: serde_json::Value,
    pub registered_at: u64,
}

/// A stored event of a run, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub pos: i64,
    pub run: String,
    pub seq: u64,
    pub id: String,
    pub at: u64,
    pub status: String,
    pub body: serde_json::Value,
}

/// Which shard owns a run: a stable hash of its id (FNV-1a), so every process
/// agrees without asking anyone.
pub fn shard_of(run: &str, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in run.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}
