//! The history's store: runs and events as the history keeps them, its
//! cursor in the event stream, and the queries of `GET /v1/runs`.
//!
//! [`HistoryStore`] is a cheap, cloneable handle picked from a URL in one
//! place ([`HistoryStore::open`]), like the engine's `store::Store`; the
//! backend behind it is SQLite (`history.db`, embedded) or PostgreSQL. It is the history's
//! own: the engine never reads it, and the history reads nothing else but the
//! bus. `tests/history_store.rs` is the suite every backend passes.

use super::postgres::PostgresHistory;
use super::sqlite::SqliteHistory;
use crate::schema::{Migrated, Mode};

pub use super::population::{Member, PopulationCounts, PopulationPage, PopulationQuery};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("history database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Schema(#[from] crate::schema::Error),
    #[error("invalid cursor")]
    BadCursor,
    /// The stored cursor is not where the batch was read from: another
    /// consumer wrote since (this one was paused past its lease); nothing
    /// was written.
    #[error(
        "the history's cursor is at {stored}, not at {from} where this batch was read from: another consumer wrote since"
    )]
    Overtaken { stored: i64, from: i64 },
    #[error(
        "unsupported history store URL `{0}`: use sqlite://PATH or postgres://USER@HOST/DATABASE (postgresql:// too)"
    )]
    Url(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The history store handle.
#[derive(Debug, Clone)]
pub enum HistoryStore {
    Sqlite(SqliteHistory),
    Postgres(PostgresHistory),
}

impl HistoryStore {
    /// Opens the history store at `url`: `sqlite://PATH` (created and
    /// upgraded as needed), or `postgres://…` / `postgresql://…` (its tables
    /// made if it has none; another version refused), as the engine's
    /// store does (see [`crate::schema`]).
    pub async fn open(url: &str) -> Result<HistoryStore> {
        Ok(Self::open_as(url, Mode::Check).await?.0)
    }

    /// Applies the migrations the history store at `url` lacks (`eflow migrate`).
    pub async fn migrate(url: &str) -> Result<Migrated> {
        let (store, migrated) = Self::open_as(url, Mode::Migrate).await?;
        store.close().await;
        Ok(migrated)
    }

    async fn open_as(url: &str, mode: Mode) -> Result<(HistoryStore, Migrated)> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let (s, m) = SqliteHistory::open(path).await?;
            return Ok((HistoryStore::Sqlite(s), m));
        }
        if crate::store::is_postgres(url) {
            let (s, m) = PostgresHistory::open(url, mode).await?;
            return Ok((HistoryStore::Postgres(s), m));
        }
        Err(Error::Url(url.to_string()))
    }

    pub async fn close(&self) {
        match self {
            HistoryStore::Sqlite(s) => s.close().await,
            HistoryStore::Postgres(s) => s.close().await,
        }
    }
}

/// Every operation of the history store, forwarded to the backend.
macro_rules! forward {
    ($($(#[$doc:meta])* pub async fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl HistoryStore {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        HistoryStore::Sqlite(s) => s.$name($($arg),*).await,
                        HistoryStore::Postgres(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

forward! {
    /// The position in the event stream of the last event written (0 at first).
    pub async fn cursor(&self) -> Result<i64>;
    /// The runs among `ids` that the store holds, in no particular order.
    pub async fn runs_of(&self, ids: &[&str]) -> Result<Vec<RunRecord>>;
    /// Writes a batch and moves the cursor, in one transaction. A run already
    /// held keeps its tenant, flow, version, parent, key and creation time and
    /// its error unless the batch has one; an event already held is kept as
    /// it is. The population's rows and counts move in the same transaction.
    pub async fn write(&self, batch: &HistoryWrite) -> Result<()>;
    /// A page of runs, newest first; `next` continues after its last run.
    pub async fn runs(&self, q: &RunQuery) -> Result<RunPage>;
    /// How the backend answers `q`: for BENCHMARKS.md and a test that every
    /// filter reads through an index in page order.
    pub async fn explain_runs(&self, q: &RunQuery) -> Result<Vec<String>>;
    /// Deletes every run and event of `tenant`, and its population; returns
    /// how many rows.
    pub async fn purge(&self, tenant: &str) -> Result<u64>;
    /// The run `id` with its final state, if the store holds it.
    pub async fn final_run(&self, id: &str) -> Result<Option<RunRecord>>;
    /// Up to `limit` events of run `id` after `after_seq`, in order.
    pub async fn events_of(&self, id: &str, after_seq: Option<u64>, limit: u32) -> Result<Vec<EventRecord>>;
    /// Up to `limit` of `tenant`'s runs that finished before `before`, oldest first.
    pub async fn expired(&self, tenant: &str, before: u64, limit: u32) -> Result<Vec<String>>;
    /// Deletes runs `ids` and their events; returns how many rows. The
    /// population keeps its rows (a key's latest run may be one of them).
    pub async fn forget(&self, ids: &[&str]) -> Result<u64>;
    /// How many runs `tenant`'s flow `flow` has on `version`, counted up to
    /// `at_most` (one range of the index `h_runs_version`, never more rows).
    pub async fn version_runs(&self, tenant: &str, flow: &str, version: &str, at_most: u32) -> Result<u64>;
    /// How the backend answers [`HistoryStore::version_runs`]: for the test
    /// that it reads an index range.
    pub async fn explain_version_runs(&self) -> Result<Vec<String>>;
    /// The tenants the store holds runs of.
    pub async fn tenants(&self) -> Result<Vec<String>>;
    /// A page of a flow's population: its keys with their latest runs
    /// (see [`super::population`]), read through an index in page order.
    pub async fn population(&self, q: &PopulationQuery) -> Result<PopulationPage>;
    /// How the backend answers `q`: for the test that every filter reads
    /// through an index in page order.
    pub async fn explain_population(&self, q: &PopulationQuery) -> Result<Vec<String>>;
    /// How many keys of `flow` (of `tenant`, or of every tenant) have their
    /// latest run in each status and on each version: the kept counts, read
    /// as they are.
    pub async fn population_counts(&self, flow: &str, tenant: Option<&str>) -> Result<PopulationCounts>;
    /// Makes every write committed so far durable (on SQLite, whose commits
    /// are not synced one by one: a checkpoint, which syncs the log first;
    /// on PostgreSQL every commit is synced already):
    /// the sweeper lets runs leave the engine's store only up to a cursor
    /// read before this.
    pub async fn sync(&self) -> Result<()>;
}

/// What `GET /v1/runs` asks.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub tenant: Option<String>,
    pub flow: Option<String>,
    pub version: Option<String>,
    pub status: Option<String>,
    pub step: Option<String>,
    pub error: Option<String>,
    /// Runs of this key (`h_runs_key`).
    pub key: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub cursor: Option<String>,
    pub limit: u32,
}

/// A run as the history keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunRecord {
    pub id: String,
    pub tenant: String,
    pub flow: String,
    pub version: String,
    pub status: String,
    pub parent: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    pub error_code: Option<String>,
    pub failed_step: Option<String>,
    /// The bundle it ran on and the schedule that started it.
    pub bundle: Option<String>,
    pub schedule: Option<String>,
    /// What it belongs to (a model, a customer): the population's key.
    pub key: Option<String>,
    /// Its final state (the engine's compact JSON) once it finished: what
    /// its view is made from after it left the engine's store. Lists and
    /// `runs_of` leave it out; [`HistoryStore::final_run`] reads it.
    pub state: Option<Vec<u8>>,
}

/// An event as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Its position in the event stream.
    pub pos: i64,
    pub run: String,
    pub seq: u64,
    pub tenant: String,
    pub at: u64,
    /// The event's type (`started`, `step_failed`, …).
    pub kind: String,
    /// The step it concerns, if any.
    pub step: Option<String>,
    pub status: String,
    /// The event as the engine stored it.
    pub body: Vec<u8>,
}

/// One batch of the consumer: written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct HistoryWrite {
    pub runs: Vec<RunRecord>,
    pub events: Vec<EventRecord>,
    /// The stream position of the batch's last event.
    pub cursor: i64,
    /// The cursor the batch was read after. A batch is written only while
    /// the stored cursor is there, so no batch read before another's write
    /// lands after it; otherwise it is refused whole ([`Error::Overtaken`]).
    pub from: i64,
    /// Runs retried in this batch (a `retry_requested` event): the error
    /// the store holds of them is cleared before `runs` are written, so a
    /// run retried and then succeeded is no longer found by its old error.
    pub retried: Vec<String>,
}

/// A page of runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPage {
    pub items: Vec<RunRecord>,
    /// Where the next page starts, if there is one.
    pub next: Option<String>,
}
