//! The engine's store: flows, runs and their event log, the outbox, timers,
//! schedules, approvals, the registry, tenants and tokens.
//!
//! [`Store`] is a cheap, cloneable handle picked from a URL in one place
//! ([`Store::open`]); the backend behind it is SQLite (embedded, the default)
//! or PostgreSQL (shared by the processes of a cluster).
//! The engine writes through [`Commit`]: everything one batch of transitions
//! changes, in one transaction.

pub(crate) mod postgres;
pub(crate) mod sqlite;
/// Also for the history's SQLite file, which holds tenants' data too.
pub(crate) use sqlite::create_private;

use serde::{Deserialize, Serialize};

use crate::schema::{Migrated, Mode};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Schema(#[from] crate::schema::Error),
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("the lease of shard {shard} was taken over by another worker")]
    LeaseLost { shard: u32 },
    #[error(
        "unsupported store URL `{0}`: use sqlite://PATH or postgres://USER@HOST/DATABASE (postgresql:// too)"
    )]
    Url(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How hard the store pushes commits to disk (PostgreSQL: `synchronous_commit`
/// on or off for eflow's sessions).
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
    Postgres(PostgresStore),
}

impl Store {
    /// The time by the store's clock, in ms since the epoch: PostgreSQL's,
    /// which every process of a cluster sets its own clock right by
    /// ([`crate::clock::Corrected`]). `None` on SQLite, whose processes
    /// share one machine and its clock.
    pub async fn clock_ms(&self) -> Result<Option<u64>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => s.clock_ms().await.map(Some),
        }
    }

    /// Opens the store at `url`: `sqlite://PATH` (created and upgraded as
    /// needed: the file is this process's), or `postgres://…` /
    /// `postgresql://…` (a database that exists; its tables are made if it
    /// has none, and a schema at another version than this eflow's is
    /// refused: see [`crate::schema`]).
    pub async fn open(url: &str, durability: Durability) -> Result<Store> {
        Ok(Self::open_as(url, durability, Mode::Check).await?.0)
    }

    /// Applies the migrations the store at `url` lacks (`eflow migrate`).
    pub async fn migrate(url: &str) -> Result<Migrated> {
        let (store, migrated) = Self::open_as(url, Durability::Full, Mode::Migrate).await?;
        store.close().await;
        Ok(migrated)
    }

    async fn open_as(url: &str, durability: Durability, mode: Mode) -> Result<(Store, Migrated)> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let (s, m) = SqliteStore::open(path, durability).await?;
            return Ok((Store::Sqlite(s), m));
        }
        if is_postgres(url) {
            let (s, m) = PostgresStore::open(url, durability, mode).await?;
            return Ok((Store::Postgres(s), m));
        }
        Err(Error::Url(url.to_string()))
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

/// Every operation of the store, forwarded to the backend: callers never
/// name a backend, so a second one is a new variant, not a rewrite.
macro_rules! forward {
    ($($(#[$doc:meta])* pub async fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        Store::Sqlite(s) => s.$name($($arg),*).await,
                        Store::Postgres(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

forward! {
    /// Writes a batch in one transaction.
    pub async fn commit(&self, c: &Commit) -> Result<()>;
    /// A run's routing data, status and encoded state.
    pub async fn load_run(&self, id: &str) -> Result<Option<(RunMeta, String, Vec<u8>)>>;
    /// `load_run` for many runs at once, in no particular order; runs that do
    /// not exist are left out.
    pub async fn load_runs(&self, ids: &[&str]) -> Result<Vec<(RunMeta, String, Vec<u8>)>>;
    /// Runs not finished yet, per tenant and parent (`None`: top-level
    /// runs): the quota's starting point.
    pub async fn active_runs(&self) -> Result<Vec<(String, Option<String>, i64)>>;
    pub async fn active_runs_of_schedule(&self, schedule: &str) -> Result<Vec<String>>;
    /// Up to `limit` stored outputs of fan-out `node` of `run`, with their
    /// index, in input order, after index `after`.
    pub async fn fanout_results(&self, run: &str, node: &str, after: Option<u32>, limit: u32) -> Result<Vec<(u32, serde_json::Value)>>;
    /// Tenant `tenant`'s values kept by reference with these hashes, decoded;
    /// a hash it does not hold is left out.
    pub async fn values(&self, tenant: &str, hashes: &[String]) -> Result<Vec<(String, serde_json::Value)>>;
    /// One of tenant `tenant`'s values, as stored (compact JSON).
    pub async fn value_body(&self, tenant: &str, hash: &str) -> Result<Option<Vec<u8>>>;
    /// Deletes up to `limit` values kept before `before` (ms) that no run of
    /// their tenant refers to (uploads never used, values of runs gone);
    /// answers how many.
    pub async fn drop_unreferenced_values(&self, before: u64, limit: u32) -> Result<u64>;
    /// The size of one of tenant `tenant`'s values, if it holds it.
    pub async fn value_size(&self, tenant: &str, hash: &str) -> Result<Option<u64>>;
    /// Whether run `run` refers to the value with this hash.
    pub async fn run_refers_to(&self, run: &str, hash: &str) -> Result<bool>;
    /// Keeps a value for `tenant` outside a transition: an upload through the
    /// API (no run refers to it yet), or an input the outbox executor gives a
    /// remote system by URL (`run` refers to it). `false` if it was there
    /// already; nothing is kept for a tenant that does not exist.
    pub async fn put_value(&self, tenant: &str, run: Option<&str>, hash: &str, body: &[u8], now: u64) -> Result<bool>;
    /// How many of a tenant's runs on a bundle are not finished yet.
    pub async fn active_runs_of_bundle(&self, tenant: &str, bundle: &str) -> Result<i64>;
    pub async fn events_of(&self, run: &str, after_seq: Option<u64>, limit: u32) -> Result<Vec<EventRow>>;
    /// The event of `run` with this id, if it was applied: how a redelivered
    /// callback tells "already applied" from "stale".
    pub async fn event(&self, run: &str, id: &str) -> Result<Option<EventRow>>;
    /// Events in commit order after `pos`: the history consumer's feed.
    pub async fn events_after(&self, pos: i64, limit: u32) -> Result<Vec<EventRow>>;
    /// The position of the last event committed (0 when there is none).
    pub async fn max_event_pos(&self) -> Result<i64>;
    /// Claims up to `limit` timers of `partition` due by `until` and not claimed,
    /// until `claim_until`.
    pub async fn claim_timers(&self, partition: u32, now: u64, until: u64, claim_until: u64, limit: u32) -> Result<Vec<DueTimer>>;
    /// Releases every claim on timers and schedules. Only for the embedded
    /// backend at start: one process owns this file, so every claim in it was
    /// made by a process that is gone.
    pub async fn release_claims(&self) -> Result<()>;
    pub async fn outbox(&self) -> Result<Vec<(i64, String, Vec<u8>)>>;
    /// How many outbox rows wait to be carried out, counted up to
    /// [`OUTBOX_DEPTH_COUNTED`].
    pub async fn outbox_depth(&self) -> Result<u64>;
    /// The first outbox position this process may write; it may write the
    /// next `2^32 - 1` too, and no other process writes any of them (on
    /// SQLite one process owns the file: past the last row).
    pub async fn outbox_block(&self) -> Result<i64>;
    /// Takes shard `shard` for `owner`, returning the new fencing token: any
    /// commit still carrying an older token fails.
    pub async fn acquire_lease(&self, shard: u32, owner: &str, expires_at: u64) -> Result<i64>;
    /// Deploys in one transaction: the bundle, its flow versions (each its
    /// name's head) and each flow's schedules, or nothing.
    pub async fn deploy(&self, d: &Deployment<'_>) -> Result<()>;
    /// A bundle's environment and IR.
    pub async fn bundle(&self, id: &str) -> Result<Option<(String, String, Vec<u8>)>>;
    /// The sources bundle `id` was compiled from (see [`Deployment::sources`]);
    /// `None` when there is no such bundle or it was deployed as IR.
    pub async fn bundle_sources(&self, id: &str) -> Result<Option<Vec<u8>>>;
    /// The named flow at `version`, or its head.
    pub async fn flow(&self, tenant: &str, name: &str, version: Option<&str>) -> Result<Option<FlowRow>>;
    pub async fn flows(&self, tenant: Option<&str>) -> Result<Vec<FlowRow>>;
    pub async fn create_tenant(&self, t: &TenantRow) -> Result<bool>;
    pub async fn tenants(&self) -> Result<Vec<TenantRow>>;
    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRow>>;
    /// Records that `tenant`'s purge began, held by `hold.owner` until
    /// `hold.until` (kept until [`Store::end_purge`]). A pending purge whose
    /// holder's lease ran out (its process died) is taken over; one another
    /// live holder has is not.
    pub async fn begin_purge(&self, tenant: &str, hold: &PurgeHold) -> Result<PurgeBegun>;
    /// Extends `hold.owner`'s lease on `tenant`'s purge to `hold.until`;
    /// false if the purge is no longer its own (ended, or taken over).
    pub async fn hold_purge(&self, tenant: &str, hold: &PurgeHold) -> Result<bool>;
    /// Deletes every row of `tenant` in every table, the tenant last, in one
    /// transaction that holds the purge's record locked: only while `owner`
    /// holds the purge (`None`, deleting nothing, otherwise), so a purge that
    /// ended, and a tenant created again since, are never touched. The
    /// purge's own record stays.
    pub async fn purge_tenant(&self, tenant: &str, owner: &str) -> Result<Option<u64>>;
    /// The purge of `tenant` is over: every store holds nothing of it. Only
    /// its holder ends it; false if `owner` no longer holds it.
    pub async fn end_purge(&self, tenant: &str, owner: &str) -> Result<bool>;
    /// Tenants whose purge began and did not end.
    pub async fn pending_purges(&self) -> Result<Vec<String>>;
    /// Tenants whose purge began and did not end, and whose holder's lease
    /// ran out before `now`: a process died part way.
    pub async fn abandoned_purges(&self, now: u64) -> Result<Vec<String>>;
    /// Those of `tenants` that do not exist or are being purged, in one
    /// query (a batch of starts asks once, whatever its tenants).
    pub async fn gone_tenants(&self, tenants: &[&str]) -> Result<Vec<String>>;
    /// Replaces `tenant`'s egress rules; false if there is no such tenant.
    pub async fn set_tenant_egress(&self, tenant: &str, rules: &[String]) -> Result<bool>;
    /// Sets how long the history keeps `tenant`'s finished runs (`None`: the
    /// server's default); false if there is no such tenant.
    pub async fn set_tenant_retention(&self, tenant: &str, ms: Option<u64>) -> Result<bool>;
    /// Deletes, in one short transaction, the rows of up to `limit` runs that
    /// succeeded or were cancelled at or before `finished_before`, or failed
    /// at or before `failed_before` (a failed run stays for its retry
    /// window: `POST /v1/runs/{id}/retry` needs it here), and whose every event is at or
    /// before `held_through` (the history's durable cursor), with no effect
    /// left in the outbox: every table of [`PER_RUN_TABLES`] but those of
    /// [`KEPT_WITH_HISTORY`], kept until the history's retention lets them
    /// go. A run a start may name again, or that kept such rows, leaves a
    /// `swept_runs` row. Returns how many runs left.
    pub async fn sweep_finished(&self, held_through: i64, finished_before: u64, failed_before: u64, limit: u32) -> Result<u64>;
    /// The tenant of a run swept from this store, if its id was recorded.
    pub async fn swept_run(&self, id: &str) -> Result<Option<String>>;
    /// Deletes what the store kept of swept runs (their rows of
    /// [`KEPT_WITH_HISTORY`] and `swept_runs` rows): the history's retention deleted them.
    pub async fn forget_swept(&self, ids: &[&str]) -> Result<u64>;
    /// [`Store::forget_swept`] for up to `limit` of `tenant`'s swept runs
    /// that finished before `before`, oldest first: what the history's
    /// retention deleted, or never held when its retention was shorter
    /// than `--sweep-after`. Returns how many runs.
    pub async fn expire_swept(&self, tenant: &str, before: u64, limit: u32) -> Result<u64>;
    /// How many rows each per-run table holds, for tests and `eflow bench`.
    pub async fn per_run_rows(&self) -> Result<Vec<(&'static str, i64)>>;
    /// Adds a token; fails if its hash or id is taken.
    pub async fn insert_token(&self, t: &TokenRow) -> Result<()>;
    /// The token whose secret has this hash, expired or not.
    pub async fn token(&self, hash: &str) -> Result<Option<TokenRow>>;
    pub async fn token_by_id(&self, id: &str) -> Result<Option<TokenRow>>;
    /// The tokens of `tenant`, or the admin tokens for `None`, oldest first.
    pub async fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRow>>;
    /// Deletes a token; false if there was none with this id.
    pub async fn revoke_token(&self, id: &str) -> Result<bool>;
    /// Adds `new` in place of token `old`, in one transaction: `old` is deleted,
    /// or with `old_until` expires then (or earlier, if it expires earlier).
    /// False, and nothing added, if there is no token `old`.
    pub async fn rotate_token(&self, old: &str, old_until: Option<u64>, new: &TokenRow) -> Result<bool>;
    /// Admin tokens not expired at `now`.
    pub async fn admin_token_count(&self, now: u64) -> Result<i64>;
    pub async fn approvals(&self, tenant: Option<&str>, pending_only: bool) -> Result<Vec<ApprovalRow>>;
    /// The newest attempt's approval of `step` in `run`.
    pub async fn approval(&self, run: &str, step: &str) -> Result<Option<ApprovalRow>>;
    /// Records that a registry call used a registered version (see
    /// [`RegistryUse`]); a second record of the same key changes nothing.
    pub async fn record_registry_use(&self, u: &RegistryUse<'_>) -> Result<()>;
    /// Up to `limit` uses of version `version` of `name`, oldest first,
    /// after `(used_at, key)` of the last use of the page before.
    pub async fn registry_uses(&self, tenant: &str, kind: &str, name: &str, version: i64, after: Option<(u64, String)>, limit: u32) -> Result<Vec<RegistryUseRow>>;
    /// Registers the next version of `name`, or returns the entry already
    /// registered under the same idempotency `key`.
    pub async fn register(&self, e: &NewEntry<'_>, make_entry: impl FnOnce(i64) -> serde_json::Value) -> Result<RegistryRow>;
    /// Moves a registered version to `stage`; returns the updated entry.
    pub async fn registry_set_stage(&self, tenant: &str, kind: &str, name: &str, version: i64, stage: &str) -> Result<Option<serde_json::Value>>;
    pub async fn registry(&self, tenant: &str, kind: Option<&str>, name: Option<&str>) -> Result<Vec<RegistryRow>>;
    pub async fn schedules(&self, tenant: Option<&str>) -> Result<Vec<ScheduleRow>>;
    pub async fn schedule(&self, id: &str) -> Result<Option<ScheduleRow>>;
    /// Claims the unpaused schedules of `partition` due by `now`.
    pub async fn claim_schedules(&self, partition: u32, now: u64, claim_until: u64, limit: u32) -> Result<Vec<ScheduleRow>>;
    /// Records what the scheduler did with a schedule and releases its claim.
    pub async fn update_schedule(&self, id: &str, handled_through: Option<u64>, last_start: Option<u64>, next_due: Option<u64>, buffered: Option<u64>) -> Result<()>;
    /// Pauses or resumes a schedule. Resuming moves the watermark to `now`, so
    /// fire times missed while paused are not started.
    pub async fn set_schedule_paused(&self, id: &str, paused: bool, now: u64, next_due: Option<u64>) -> Result<bool>;
    /// Adds a schedule made through the API unless its tenant has
    /// `max_per_tenant` schedules already (false then, nothing added).
    pub async fn insert_schedule(&self, row: &ScheduleRow, max_per_tenant: u64) -> Result<bool>;
    /// Adds many schedules in one transaction, with no limit (for tools that fill a store).
    pub async fn insert_schedules(&self, rows: &[ScheduleRow]) -> Result<()>;
    /// Replaces a schedule's flow version, spec, key, pause and next due
    /// time, releasing any claim; false if there is no such schedule.
    pub async fn redefine_schedule(&self, row: &ScheduleRow) -> Result<bool>;
    /// Deletes a schedule (its runs stay); false if there was none.
    pub async fn delete_schedule(&self, id: &str) -> Result<bool>;
    /// One page of schedules in id order, after `q.after`.
    pub async fn schedule_page(&self, q: &ScheduleQuery) -> Result<Vec<ScheduleRow>>;
    /// [`Store::update_schedule`] for many schedules, in one transaction.
    pub async fn update_schedules(&self, updates: &[ScheduleUpdate]) -> Result<()>;
    /// The runs in progress of each of `schedules`, as (schedule, run).
    pub async fn active_runs_of_schedules(&self, schedules: &[&str]) -> Result<Vec<(String, String)>>;
    /// Which of `runs` exist, or finished and were swept (`swept_runs`).
    pub async fn existing_runs(&self, runs: &[&str]) -> Result<Vec<String>>;
    /// When the first unpaused schedule of `partition` not claimed at `now` is due.
    pub async fn next_schedule_due(&self, partition: u32, now: u64) -> Result<Option<u64>>;
    /// Stores `value` unless the key has one; returns the stored value.
    pub async fn setting_or_insert(&self, key: &str, value: &[u8]) -> Result<Vec<u8>>;
    /// Takes or keeps shard `shard` for `owner` until `expires_at`, if it is
    /// free, its lease expired (at `now`) or `owner` holds it: the fencing
    /// token, unchanged for a renewal and new for a takeover; `None` while
    /// another owner's lease runs.
    pub async fn try_lease(&self, shard: u32, owner: &str, now: u64, expires_at: u64) -> Result<Option<i64>>;
    /// Gives shard `shard` up at once, if `owner` still holds it with `token`.
    pub async fn release_lease(&self, shard: u32, owner: &str, token: i64) -> Result<bool>;
    /// Every shard's lease, in shard order.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>>;
    /// Says that a process is alive until `m.expires_at` (inserting or updating it).
    pub async fn heartbeat(&self, m: &MemberRow) -> Result<()>;
    /// The processes that said they were alive, expired or not, in id order.
    pub async fn members(&self) -> Result<Vec<MemberRow>>;
    /// Forgets a process (it stopped) and those expired before `before`.
    pub async fn leave(&self, id: &str, before: u64) -> Result<()>;
}

/// The tables that hold rows of one run, each with the column naming the
/// run, in the order a sweep deletes them (`runs` last). A new table of a
/// run's rows is one more line here: the sweeper and purges read this list.
/// The most outbox rows [`Store::outbox_depth`] counts: `/metrics` shows
/// the outbox's depth on every scrape, which must stay cheap however long
/// the outbox grows.
/// Whether a store URL names PostgreSQL (`postgres://` or `postgresql://`).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

pub const OUTBOX_DEPTH_COUNTED: u64 = 100_000;

pub const PER_RUN_TABLES: [(&str, &str); 7] = [
    ("events", "run"),
    ("timers", "run"),
    ("outbox", "run"),
    ("approvals", "run"),
    ("fanout_results", "run"),
    ("run_values", "run"),
    ("runs", "id"),
];

/// The per-run tables whose rows a swept run keeps until the history's
/// retention deletes it: its fan-outs' results (the results page answers from
/// them) and its references to values (its view shows them).
pub const KEPT_WITH_HISTORY: [&str; 2] = ["fanout_results", "run_values"];

/// Whether the server made this run id fresh (`r-` and a UUIDv7, no
/// `TENANT:`): no start can name it again, so a sweep keeps nothing of it.
/// Clients' chosen ids (`TENANT:ID`), a schedule's and a child's
/// (`PARENT.step.N`) may be started again and leave a `swept_runs` row.
pub fn is_fresh_id(id: &str) -> bool {
    id.starts_with("r-") && !id.contains(':') && !id.contains('.')
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
    /// What the run belongs to: the model or customer whose lifecycle it is
    /// (a start's `key`, or its schedule's). Subflow children carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub created_at: u64,
}

/// Who holds a tenant's purge and until when: the process carrying it out
/// renews it while it works, so a purge is taken over only from a process
/// that stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeHold {
    /// The holding process ([`crate::cluster::member_id`]).
    pub owner: String,
    /// When the hold began or was renewed.
    pub now: u64,
    /// When it runs out unless renewed.
    pub until: u64,
}

/// What [`Store::begin_purge`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeBegun {
    /// The purge is the caller's: begun now, taken over from a holder whose
    /// lease ran out, or its own already.
    Held,
    /// Another process holds it until `until`.
    Busy { owner: String, until: u64 },
    /// There is no such tenant and no purge of it pending.
    NoTenant,
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
    /// Approvals decided or no longer awaited.
    pub approvals_closed: Vec<ApprovalClose>,
    /// Outputs of fan-out children, kept beside their parent's state.
    pub results: Vec<ResultWrite>,
    /// Values kept by reference, and the runs that refer to them.
    pub values: Vec<ValueWrite>,
}

/// A value kept by reference by `run` (of `tenant`): stored once per tenant
/// and hash; the run is recorded as referring to it.
#[derive(Debug, Clone)]
pub struct ValueWrite {
    pub tenant: String,
    pub run: String,
    pub hash: String,
    /// The value's compact JSON; `None` when it was stored before (an upload)
    /// and only the reference is new.
    pub body: Option<Vec<u8>>,
    /// When it was first kept (ms since the epoch).
    pub at: u64,
}

/// Child `index`'s output of fan-out `node` of `run`. Written once: a second
/// write of the same child is ignored.
#[derive(Debug, Clone)]
pub struct ResultWrite {
    pub run: String,
    pub node: String,
    pub index: u32,
    pub output: Vec<u8>,
}

/// An approval that is decided (its step completed: a reviewer's decision or
/// its expiry, committed with the transition it makes) or no longer awaited
/// (its step was cancelled: no decision). The first close of a row wins.
#[derive(Debug, Clone)]
pub struct ApprovalClose {
    pub run: String,
    pub step: String,
    pub attempt: u32,
    pub at: u64,
    pub decision: Option<Vec<u8>>,
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
            && self.results.is_empty()
            && self.values.is_empty()
    }
}

/// One deploy, written whole or not at all.
#[derive(Debug, Clone)]
pub struct Deployment<'a> {
    pub bundle: &'a str,
    pub tenant: &'a str,
    pub env: &'a str,
    pub ir: &'a [u8],
    /// The `.eflow` files it was compiled from (a JSON object of file name
    /// to text), when it was deployed as sources.
    pub sources: Option<&'a [u8]>,
    /// (name, version) of each flow of the bundle: each becomes its name's head.
    pub flows: &'a [(String, String)],
    /// Each flow's schedules: they replace the ones the flow had (a new deploy
    /// moves them to the new bundle, keeping the fire times already handled).
    pub schedules: &'a [(String, Vec<ScheduleRow>)],
    pub now: u64,
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
    /// Egress rules the admin set: what the tenant's `http` bindings may reach
    /// besides the public internet and the server's rules (see `egress`).
    #[serde(default)]
    pub allow_egress: Vec<String>,
    /// How long the history keeps the tenant's finished runs, in
    /// milliseconds; `None` takes the server's `--history-retention`.
    #[serde(default)]
    pub history_retention_ms: Option<u64>,
}

/// A shard's lease: who may commit for the shard's runs, with which fencing
/// token, until when (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRow {
    pub shard: u32,
    pub owner: String,
    pub token: i64,
    pub expires_at: u64,
}

/// A process of the cluster, as it last said it was alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub id: String,
    /// The roles it runs, comma-separated (`api,engine,scheduler,history`).
    pub roles: String,
    pub started_at: u64,
    pub expires_at: u64,
}

/// An API token. Its secret is stored only as a hash; the last four characters
/// are kept to tell tokens apart in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    /// `t-…`: how the API and the CLI name the token.
    pub id: String,
    pub hash: String,
    /// `None` for an admin token.
    pub tenant: Option<String>,
    /// Whose token it is (`alice@example.com`, `ci`): the identity recorded
    /// for what is done with it.
    pub name: String,
    pub last4: String,
    pub created_at: u64,
    pub expires_at: Option<u64>,
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
    /// Fire times up to here are handled (started or skipped); moved to now
    /// on deploy and on resume (the `last_fire` column).
    pub handled_through: Option<u64>,
    /// The fire time of the newest run the schedule started by itself.
    pub last_start: Option<u64>,
    pub next_due: Option<u64>,
    pub buffered: Option<u64>,
    pub partition: u32,
    /// Declared by a flow's `schedule` statement (owned by its deployment,
    /// replaced by the next); false for one made through the API.
    pub declared: bool,
    /// What a schedule made through the API belongs to (a customer, a model).
    pub key: Option<String>,
    /// The flow version a schedule made through the API is pinned to; `None`
    /// follows the flow's head.
    pub version: Option<String>,
    /// When a schedule made through the API was made.
    pub created_at: Option<u64>,
}

/// Which schedules a page holds: filters, and the id the page starts after.
#[derive(Debug, Clone, Default)]
pub struct ScheduleQuery {
    pub tenant: Option<String>,
    pub key: Option<String>,
    pub flow: Option<String>,
    /// The last id of the page before.
    pub after: Option<String>,
    pub limit: u32,
}

/// What the scheduler did with one schedule (see [`Store::update_schedules`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleUpdate {
    pub id: String,
    pub handled_through: Option<u64>,
    pub last_start: Option<u64>,
    pub next_due: Option<u64>,
    pub buffered: Option<u64>,
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

/// A registry call that used a registered version: looked it up, promoted
/// or retired it.
#[derive(Debug, Clone)]
pub struct RegistryUse<'a> {
    /// The call's idempotency key.
    pub key: &'a str,
    pub tenant: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub version: i64,
    pub run: &'a str,
    pub step: &'a str,
    /// `look_up`, `promote` (to a stage) or `retire`.
    pub action: &'a str,
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryUseRow {
    pub key: String,
    pub run: String,
    pub step: String,
    pub action: String,
    pub used_at: u64,
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
    /// The event as stored: compact JSON of an `eflow_core::Event`, decoded
    /// only by a reader that needs more than a field or two.
    pub body: Vec<u8>,
}

/// A registry entry to add.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// The registering call's idempotency key.
    pub key: &'a str,
    pub tenant: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub run: &'a str,
    pub step: &'a str,
    pub inputs: &'a serde_json::Value,
    pub now: u64,
}

/// The JSON of what is stored or sent: events, outbox items, approval requests
/// and decisions, registry entries, callback claims.
///
/// It cannot fail, so nothing is ever stored empty (as `to_vec(..)
/// .unwrap_or_default()` would if it ever did): serde_json fails only on a map
/// whose keys are not strings or on a `Serialize` impl that returns an error, and
/// the types that implement [`Stored`] have neither (maps keyed by `String`, impls
/// derived or converting infallibly). The trait keeps it to those types.
pub(crate) fn stored_json<T: Stored + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored types serialize infallibly")
}

/// The types [`stored_json`] takes.
pub(crate) trait Stored: serde::Serialize {}
impl Stored for serde_json::Value {}

/// Which shard owns a run: a stable hash of its id (FNV-1a), so every process
/// agrees without asking anyone.
pub fn shard_of(run: &str, shards: u32) -> u32 {
    (eflow_core::hash::fnv1a(run.bytes()) % u64::from(shards.max(1))) as u32
}
