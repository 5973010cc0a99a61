//! The engine: shard workers that fold events into runs, the outbox executor,
//! and the timer loaders.
//!
//! Every run belongs to one shard ([`shard_of`]); one worker owns a shard (a
//! lease with a fencing token) and applies the shard's inputs in order, in
//! batches: many transitions, one transaction with the states, the events, the
//! timers and the outbox. After the commit the worker answers the callers and
//! hands the outbox to the executor. Nothing is acknowledged before it is
//! committed, so a crash loses nothing that anyone was told had happened.

mod batches;
mod deployments;
mod dispatch;
pub mod ownership;
mod route;
mod shards;
mod timers;
mod wire;
mod worker;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use eflow_core::{Event, Parent, Rejection, RunStatus, ValueRef};
use serde_json::{Map, Value};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use deployments::{DEFAULT_BUNDLE_CACHE_BYTES, Deployed, Deployments};
pub use dispatch::{CallbackClaim, CallbackKeys};
pub use shards::{LEASE_EVERY, LEASE_TTL_MS, Ownership};
pub use worker::status_name;

use crate::bus;
use crate::clock::SharedClock;
use crate::store::{self, RunMeta, Store, shard_of};

/// The bus as the engine uses it: it carries [`Input`]s.
pub type Bus = bus::Bus<Input>;
/// Where a shard's worker takes its [`Input`]s from.
pub type Inbox = bus::Inbox<Input>;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub shards: u32,
    /// Timer partitions, each with its own loader.
    pub partitions: u32,
    /// At most this many inputs in one transaction.
    pub batch: usize,
    /// Runs kept decoded in memory, per shard.
    pub cache_runs: usize,
    /// Where remote systems call back: `http://HOST:PORT`.
    pub public_url: String,
    /// This process, for leases.
    pub owner: String,
    /// How this process holds shards and runs their workers, the outbox's
    /// executor and the timers' loaders; `None` when it runs none of them
    /// (a process without the engine's role).
    pub ownership: Option<Ownership>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            shards: 1,
            partitions: 4,
            batch: 1024,
            cache_runs: 4096,
            public_url: "http://127.0.0.1:8080".into(),
            owner: "eflow".into(),
            ownership: Some(Ownership::HoldAll),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Egress(#[from] crate::egress::Error),
    #[error("{0}")]
    Rejected(Rejection),
    #[error("run `{0}` does not exist")]
    NoSuchRun(String),
    /// A start named a run that finished and left the engine's store: the
    /// history holds it, and the start changes nothing.
    #[error("run `{0}` finished and is kept by the history")]
    Swept(String),
    #[error("the engine is shutting down")]
    Stopped,
    #[error("shard {0} already has a worker (its inbox was taken)")]
    Inbox(u32),
    #[error("bundle `{0}` is not deployed or no longer valid: {1}")]
    Bundle(String, String),
    #[error("tenant `{0}` is being purged")]
    TenantStopped(String),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    /// An error of the worker in another process, by its message.
    #[error("{0}")]
    Remote(String),
}

/// What the caller of an input learns once it is committed.
#[derive(Debug, Clone)]
pub struct Applied {
    /// False when the input changed nothing (a run created earlier with the same id).
    pub changed: bool,
    /// The run after the input, for an answer that needs no second read.
    pub meta: RunMeta,
    pub state: Arc<eflow_core::Run>,
    pub deployed: Arc<Deployed>,
}

pub type Reply = oneshot::Sender<Result<Applied, Error>>;

/// Deliver an event to a run.
#[derive(Debug)]
pub struct Delivery {
    pub run: String,
    pub event: Event,
    /// The timer row this event comes from: deleted when it is applied or refused.
    pub timer: Option<String>,
    /// The outbox row this delivery carries out: deleted with it.
    pub outbox: Option<i64>,
    pub reply: Option<Reply>,
}

/// Create a run and start it. If a run with this id exists, nothing happens.
#[derive(Debug)]
pub struct Creation {
    pub meta: RunMeta,
    /// The id was just made by this server (UUIDv7): no run can have it, so
    /// the worker skips looking for one.
    pub fresh: bool,
    pub flow: String,
    pub parent: Option<Parent>,
    pub input: Map<String, Value>,
    /// Parameters given by reference (uploaded values).
    pub input_refs: BTreeMap<String, ValueRef>,
    pub outbox: Option<i64>,
    pub reply: Option<Reply>,
}

/// Everything a shard worker reacts to.
#[derive(Debug)]
pub enum Input {
    Deliver(Delivery),
    Create(Creation),
    /// Outbox rows carried out elsewhere (an accepted HTTP invocation).
    OutboxDone(Vec<i64>),
    /// A tenant is being purged: from now on the worker applies nothing to
    /// its runs and creates none, and drops them from its cache. Answered
    /// once everything the worker applied before is committed.
    StopTenant {
        tenant: String,
        reply: oneshot::Sender<()>,
    },
    /// A purged tenant's id is created again: the worker's process applies
    /// its runs again. Answered at once.
    ResumeTenant {
        tenant: String,
        reply: oneshot::Sender<()>,
    },
}

/// A run ended: for quotas and schedules.
#[derive(Debug, Clone)]
pub struct Finished {
    pub run: String,
    pub tenant: String,
    /// The run that started it, for a subflow child: its place in the
    /// tenant's quota is counted against that parent too.
    pub parent: Option<String>,
    pub schedule: Option<String>,
    pub status: RunStatus,
}

/// Counters for `eflow bench` and logs.
#[derive(Debug, Default)]
pub struct Stats {
    pub transitions: AtomicU64,
    pub commits: AtomicU64,
    pub rejected: AtomicU64,
    /// Runs (and subflow children) that finished.
    pub finished: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Runs the scheduler started (fires, not backfills).
    pub scheduled_starts: AtomicU64,
    /// Commits refused because the shard's lease had been taken over.
    pub fenced_commits: AtomicU64,
    /// Shards this process took, and gave up or lost.
    pub shards_taken: AtomicU64,
    pub shards_released: AtomicU64,
    /// Shards this process holds now.
    pub shards_held: AtomicU64,
    /// How long the store took to commit a batch.
    pub commit_seconds: Histogram,
}

/// A histogram of durations with fixed buckets, for `/metrics`.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Counts per bucket of [`Histogram::BOUNDS`] (not cumulative), then over.
    buckets: [AtomicU64; Histogram::BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// The buckets' upper bounds, in seconds.
    pub const BOUNDS: [f64; 11] = [
        0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];

    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = Self::BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(Self::BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bound (the last is `+Inf`, the total), and the
    /// sum in seconds.
    pub fn read(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let counts = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        (counts, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6)
    }
}

/// The end of a lease this process holds for as long as it runs (the
/// embedded server holds every shard): 9999-12-31T23:59:59Z. A process that
/// starts on the same store takes the shards over, fencing out this one.
pub const HELD_FOREVER_MS: u64 = 253_402_300_799_000;

/// A cheap handle on the running engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Bus,
    partitions: u32,
    store: Store,
    deployments: Deployments,
    stats: Arc<Stats>,
    timers_changed: Vec<Arc<Notify>>,
    outbox_pos: AtomicI64,
    /// Tenants being purged (or purged): nothing of theirs is applied,
    /// created or carried out. Per process: a purge marks the process that
    /// serves it, and every shard's worker marks its own process
    /// (`Input::StopTenant`); engines check their marks against the store
    /// every lease look ([`Engine::check_stopped`]).
    stopped: RwLock<HashSet<String>>,
    egress: crate::egress::Egress,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.inner.bus.shards())
            .finish()
    }
}

/// What the engine needs from outside.
pub struct Deps {
    pub store: Store,
    /// The deployed bundles, shared with the bus's codec (an answer from
    /// another process names its bundle).
    pub deployments: Deployments,
    /// Carries inputs to the shard workers and tells consumers of commits.
    pub bus: Bus,
    pub clock: SharedClock,
    pub keys: CallbackKeys,
    /// How `http` calls go out: the egress policy and its clients.
    pub egress: crate::egress::Egress,
    pub finished: mpsc::UnboundedSender<Finished>,
    /// The tenants' quotas: a child start waits for a place in its tenant's.
    pub ledger: Arc<crate::quota::Ledger>,
}

impl Engine {
    /// Starts the workers, the outbox executor and the timer loaders; they stop
    /// when `shutdown` is cancelled, after finishing the batch in hand. Await the
    /// returned tasks for a clean stop.
    pub async fn start(
        options: Options,
        deps: Deps,
        shutdown: CancellationToken,
    ) -> Result<(Engine, Vec<tokio::task::JoinHandle<()>>), Error> {
        let store = deps.store.clone();
        let deployments = deps.deployments.clone();
        let stats = Arc::new(Stats::default());
        let timers_changed: Vec<_> = (0..options.partitions.max(1))
            .map(|_| Arc::new(Notify::new()))
            .collect();
        let bus = deps.bus.clone();
        // Positions of this process's own: no other engine writes them.
        let outbox_pos = match options.ownership {
            Some(_) => store.outbox_block().await?,
            None => 0,
        };
        let engine = Engine {
            inner: Arc::new(Inner {
                bus,
                partitions: options.partitions.max(1),
                store: store.clone(),
                deployments: deployments.clone(),
                stats: stats.clone(),
                timers_changed: timers_changed.clone(),
                outbox_pos: AtomicI64::new(outbox_pos),
                stopped: RwLock::default(),
                egress: deps.egress.clone(),
            }),
        };
        let mut tasks = Vec::new();
        // Without the engine's role, the handle only sends inputs to the
        // shards' owners elsewhere.
        let Some(ownership) = options.ownership else {
            return Ok((engine, tasks));
        };
        if ownership == Ownership::HoldAll {
            // Alone on the store: claims left in it died with their process.
            store.release_claims().await?;
        }
        let (dispatch_tx, dispatch_rx) = mpsc::unbounded_channel();
        let executor = dispatch::Executor::new(
            engine.clone(),
            deps.egress.clone(),
            deps.keys.clone(),
            deps.clock.clone(),
            options.public_url.clone(),
            deps.ledger.clone(),
        );
        tasks.push(tokio::spawn(executor.run(dispatch_rx, shutdown.clone())));
        let shards = shards::Shards::new(
            engine.clone(),
            options.clone(),
            deps.clock.clone(),
            deps.finished.clone(),
            dispatch_tx,
        );
        match ownership {
            Ownership::HoldAll => {
                let shards = shards.hold_all(shutdown.clone()).await?;
                let stop = shutdown.clone();
                tasks.push(tokio::spawn(async move {
                    stop.cancelled().await;
                    shards.join().await;
                }));
            }
            Ownership::Share => tasks.push(tokio::spawn(shards.share(shutdown.clone()))),
        }
        tracing::info!(
            shards = options.shards.max(1),
            timer_partitions = options.partitions.max(1),
            ownership = ?ownership,
            "engine started"
        );
        for partition in 0..options.partitions.max(1) {
            let loader = timers::Loader::new(
                partition,
                engine.clone(),
                deps.clock.clone(),
                timers_changed[partition as usize].clone(),
            );
            tasks.push(tokio::spawn(loader.run(shutdown.clone())));
        }
        Ok((engine, tasks))
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// How `http` calls go out.
    pub fn egress(&self) -> &crate::egress::Egress {
        &self.inner.egress
    }

    pub fn deployments(&self) -> &Deployments {
        &self.inner.deployments
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    pub fn shard_count(&self) -> u32 {
        self.inner.bus.shards()
    }

    pub fn partition_of(&self, run: &str) -> u32 {
        shard_of(run, self.inner.partitions)
    }

    fn next_outbox_pos(&self) -> i64 {
        self.inner.outbox_pos.fetch_add(1, Ordering::Relaxed)
    }

    fn timers_changed(&self, partition: u32) {
        if let Some(n) = self.inner.timers_changed.get(partition as usize) {
            n.notify_one();
        }
    }

    /// Stops `tenant`'s runs before its purge: from the return on, no worker
    /// applies or creates anything of the tenant and the executor carries out
    /// none of its effects, so nothing of it is written back after the purge
    /// deletes it. Waits until every worker committed what it applied before.
    pub async fn stop_tenant(&self, tenant: &str) -> Result<(), Error> {
        self.mark_stopped(tenant, true);
        self.every_shard(tenant, |tenant, reply| Input::StopTenant { tenant, reply })
            .await
    }

    /// A tenant id purged before is created again: its runs are applied, in
    /// this process and, on a distributed bus, in every shard worker's
    /// process (each was marked by the stop); answered once every worker
    /// was told. (Alone on the local bus, the mark here is the only one.)
    pub async fn resume_tenant(&self, tenant: &str) -> Result<(), Error> {
        self.mark_stopped(tenant, false);
        if matches!(self.inner.bus, Bus::Local(_)) {
            return Ok(());
        }
        self.every_shard(tenant, |tenant, reply| Input::ResumeTenant {
            tenant,
            reply,
        })
        .await
    }

    /// Sends every shard's worker an input about `tenant` and waits for
    /// each one's answer.
    async fn every_shard(
        &self,
        tenant: &str,
        input: impl Fn(String, oneshot::Sender<()>) -> Input,
    ) -> Result<(), Error> {
        let mut acks = Vec::new();
        for shard in 0..self.shard_count() {
            let (tx, rx) = oneshot::channel();
            self.inner
                .bus
                .send_to(shard, input(tenant.to_string(), tx))
                .await
                .map_err(|_| Error::Stopped)?;
            acks.push(rx);
        }
        for rx in acks {
            rx.await.map_err(|_| Error::Stopped)?;
        }
        Ok(())
    }

    /// Marks (or unmarks) `tenant` as stopped in this process.
    pub(crate) fn mark_stopped(&self, tenant: &str, stopped: bool) {
        if let Ok(mut s) = self.inner.stopped.write() {
            if stopped {
                s.insert(tenant.to_string());
            } else {
                s.remove(tenant);
            }
        }
    }

    /// On a store shared with other processes, marks stopped the tenants of
    /// `inputs`' creations that do not exist or are being purged. A purge
    /// tells the processes holding shards then; this one may have taken its
    /// shard since, and a start claimed before the purge (by a scheduler,
    /// say, in a process paused meanwhile) may come now. A purge that begins
    /// after this look stops the worker after its batch, and deletes what
    /// the batch created.
    pub(crate) async fn stop_gone_tenants(&self, inputs: &[Input]) -> Result<(), Error> {
        if matches!(self.inner.bus, Bus::Local(_)) {
            return Ok(());
        }
        let mut tenants: Vec<&str> = inputs
            .iter()
            .filter_map(|i| match i {
                Input::Create(c) => Some(c.meta.tenant.as_str()),
                _ => None,
            })
            .filter(|t| !self.is_stopped(t))
            .collect();
        if tenants.is_empty() {
            return Ok(());
        }
        tenants.sort_unstable();
        tenants.dedup();
        for tenant in self.inner.store.gone_tenants(&tenants).await? {
            tracing::info!(
                tenant,
                "a start for a tenant that is gone or being purged: refused"
            );
            self.mark_stopped(&tenant, true);
        }
        Ok(())
    }

    /// Unmarks the tenants this process holds stopped that exist again
    /// with no purge pending: a process that held no shard when a purged
    /// tenant was created again was not told.
    pub(crate) async fn check_stopped(&self) -> Result<(), Error> {
        let marked: Vec<String> = match self.inner.stopped.read() {
            Ok(s) if !s.is_empty() => s.iter().cloned().collect(),
            _ => return Ok(()),
        };
        let store = &self.inner.store;
        let purging = store.pending_purges().await?;
        for tenant in marked {
            if !purging.contains(&tenant) && store.tenant(&tenant).await?.is_some() {
                tracing::info!(tenant = %tenant, "a purged tenant was created again: its runs are applied");
                self.mark_stopped(&tenant, false);
            }
        }
        Ok(())
    }

    /// Whether `tenant` is being purged.
    pub fn is_stopped(&self, tenant: &str) -> bool {
        self.inner
            .stopped
            .read()
            .is_ok_and(|s| !s.is_empty() && s.contains(tenant))
    }

    /// Queues an input for the run's shard.
    pub async fn send(&self, run: &str, input: Input) -> Result<(), Error> {
        Ok(self.inner.bus.send(run, input).await?)
    }

    /// Delivers `event` to `run` and waits until it is committed.
    pub async fn deliver(&self, run: &str, event: Event) -> Result<Applied, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(
            run,
            Input::Deliver(Delivery {
                run: run.to_string(),
                event,
                timer: None,
                outbox: None,
                reply: Some(tx),
            }),
        )
        .await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Creates and starts a run and waits until it is committed. `fresh`: the
    /// id was just generated, so no run can have it.
    pub async fn create(
        &self,
        meta: RunMeta,
        flow: String,
        input: Map<String, Value>,
        input_refs: BTreeMap<String, ValueRef>,
        fresh: bool,
    ) -> Result<Applied, Error> {
        let (tx, rx) = oneshot::channel();
        let id = meta.id.clone();
        self.send(
            &id,
            Input::Create(Creation {
                meta,
                fresh,
                flow,
                parent: None,
                input,
                input_refs,
                outbox: None,
                reply: Some(tx),
            }),
        )
        .await?;
        rx.await.map_err(|_| Error::Stopped)?
    }
}

// What the engine stores or sends is serialized by the store port's one helper.
pub(crate) use crate::store::{Stored, stored_json};
impl Stored for eflow_core::Event {}
impl Stored for route::OutboxItem {}
