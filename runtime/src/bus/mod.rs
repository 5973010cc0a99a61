//! The bus: how inputs reach the worker that owns their run's shard, and how
//! the events the engine committed reach the consumers that follow them (the
//! history).
//!
//! [`Bus`] is a cheap, cloneable handle, like [`crate::store::Store`]: callers
//! see one set of operations and the backend is a variant behind them, picked
//! from a URL in one place ([`Bus::open`]):
//!
//! - `local` ([`local`]): in-process, for the embedded server. One channel
//!   per shard; an input may carry a reply channel the worker answers after
//!   its commit.
//! - `nats://HOST:PORT[?prefix=NAME]` ([`nats`]): NATS JetStream, for several
//!   processes on one PostgreSQL database. A work-queue subject per shard, an
//!   input acknowledged only once the worker committed it, request-reply in
//!   place of the reply channel (the input's [`Wire`] form), and an event
//!   stream a relay fills from the store's log.
//!
//! **Events:** in both, the engine's store is the source of truth: its
//! append-only event log is the stream. A consumer keeps its own cursor (a log
//! position), reads batches after it, and waits for the signal that more were
//! committed, so a consumer that was down misses nothing. Each item carries
//! what a consumer needs of its run ([`RunHead`]: tenant, flow, version,
//! parent, error) on the run's first event and on the event that finishes it,
//! so a consumer never reads the engine's store.
//!
//! The bus does not know what an input is: [`Bus`] is generic over it (the
//! engine's `engine::Input`), so the bus depends on the store and not on the
//! engine; an input that crosses processes says how through [`Wire`].
//! `tests/bus.rs` is the suite both backends pass.

pub mod local;
pub mod nats;

use std::collections::{HashMap, HashSet};
use std::future::Future;

use futures_util::future::BoxFuture;

pub use local::{LocalBus, LocalEvents, LocalInbox};
pub use nats::{NatsBus, NatsEvents, NatsInbox};

use crate::store::{self, EventRow, Store, shard_of};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("shard {0} does not exist")]
    NoShard(u32),
    #[error("the inbox of shard {0} is taken: one worker per shard at a time")]
    Taken(u32),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("unsupported bus URL `{0}`: use local or nats://HOST:PORT[?prefix=NAME]")]
    Url(String),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("cannot carry an input over the bus: {0}")]
    Wire(String),
    #[error("no answer from the worker of shard {shard} within {secs} s")]
    NoAnswer { shard: u32, secs: u64 },
}

/// An input that can cross processes: the NATS bus carries it as bytes.
///
/// An input may carry a reply channel its worker fulfils after the commit.
/// On the sending side [`Wire::encode`] keeps that channel in a [`Fulfil`],
/// which the bus calls with the answer's bytes (or the error that there was
/// none); on the worker's side [`Wire::decode`] makes a new reply channel
/// whose answer goes back as bytes through the [`Answer`] it is given.
pub trait Wire: Sized + Send + 'static {
    /// What encoding and decoding need besides the input: the engine's
    /// deployed bundles (an answer names its bundle and is rebuilt with it).
    type Codec: Clone + Send + Sync + 'static;

    /// The input as bytes, and what receives the answer when it awaits one.
    fn encode(self, codec: &Self::Codec) -> Result<Encoded, Error>;

    /// The input `bytes` encode. `answer`: where the answer goes, when the
    /// sender awaits one. `redelivered`: the bus delivered it before and it
    /// may have been applied already.
    fn decode(
        bytes: &[u8],
        answer: Option<Answer>,
        redelivered: bool,
        codec: &Self::Codec,
    ) -> Result<Self, Error>;
}

/// An input as bytes, with what fulfils its reply channel, if it has one.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub reply: Option<Fulfil>,
}

/// Fulfils a sender's reply channel with the answer's bytes, or with the
/// error that no answer came.
pub type Fulfil = Box<dyn FnOnce(Result<Vec<u8>, Error>) -> BoxFuture<'static, ()> + Send>;

/// Sends a worker's answer, as bytes, back to the sender awaiting it.
pub struct Answer(Box<dyn FnOnce(Vec<u8>) -> BoxFuture<'static, ()> + Send>);

impl Answer {
    pub fn new(send: impl FnOnce(Vec<u8>) -> BoxFuture<'static, ()> + Send + 'static) -> Self {
        Answer(Box::new(send))
    }

    pub async fn send(self, bytes: Vec<u8>) {
        (self.0)(bytes).await;
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answer")
    }
}

/// The bus handle, carrying inputs of type `I` to the shard workers.
#[derive(Debug)]
pub enum Bus<I> {
    Local(LocalBus<I>),
    Nats(NatsBus<I>),
}

impl<I> Clone for Bus<I> {
    fn clone(&self) -> Self {
        match self {
            Bus::Local(b) => Bus::Local(b.clone()),
            Bus::Nats(b) => Bus::Nats(b.clone()),
        }
    }
}

/// The stream of committed events, the half of the bus consumers follow.
#[derive(Debug, Clone)]
pub enum Events {
    Local(LocalEvents),
    Nats(NatsEvents),
}

/// One committed event as the stream carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub event: EventRow,
    /// The run's metadata, on its first event (`seq` 0) and on the event that
    /// finishes it; `None` on the others, and on these when the run was
    /// purged from the engine since.
    pub run: Option<RunHead>,
}

/// What a consumer keeps of a run, carried in the stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunHead {
    pub tenant: String,
    pub flow: String,
    pub version: String,
    pub parent: Option<String>,
    /// The bundle it runs on and the schedule that started it, if one did.
    pub bundle: String,
    pub schedule: Option<String>,
    /// What the run belongs to (a model, a customer), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub created_at: u64,
    /// The run's final state (the engine's compact JSON), on the event that
    /// finishes it: the engine's store lets the run go once the history
    /// holds it, and the history answers for it from then on.
    pub state: Option<Vec<u8>>,
    /// The run's error code, once it failed.
    pub error_code: Option<String>,
    /// The step whose failure failed the run.
    pub failed_step: Option<String>,
}

/// Where one shard's worker takes its inputs from. One at a time per shard:
/// once dropped, [`Bus::inbox`] hands the shard's inbox out again (an engine
/// that lost a shard's lease and took it back).
#[derive(Debug)]
pub enum Inbox<I> {
    Local(LocalInbox<I>),
    Nats(NatsInbox<I>),
}

impl<I: Send + 'static> Inbox<I> {
    /// The next input, the first of a batch (the rest with
    /// [`Self::try_recv`]); `None` once nobody can send any more.
    pub async fn recv(&mut self) -> Option<I> {
        match self {
            Inbox::Local(i) => i.recv().await,
            Inbox::Nats(i) => i.recv().await,
        }
    }

    /// An input that is already waiting, without waiting for one.
    pub fn try_recv(&mut self) -> Option<I> {
        match self {
            Inbox::Local(i) => i.try_recv(),
            Inbox::Nats(i) => i.try_recv(),
        }
    }

    /// Whether the inputs of a batch that was not committed come again: on
    /// NATS; the in-process bus hands each input over once.
    pub fn redelivers(&self) -> bool {
        matches!(self, Inbox::Nats(_))
    }

    /// The worker committed the batch of the inputs it received since the
    /// last call: they are done with (NATS acknowledges them, so they are
    /// not delivered again). Inputs of a batch that was not committed are
    /// delivered again once the worker asks for the next one
    /// ([`Self::recv`]), or to the next inbox when this one is dropped.
    pub async fn committed(&mut self) {
        match self {
            Inbox::Local(_) => {}
            Inbox::Nats(i) => i.committed().await,
        }
    }
}

impl<I: Wire> Bus<I> {
    /// The bus at `url`: `local` is the in-process bus; `nats://HOST:PORT`
    /// (with `?prefix=NAME`, default `eflow`, naming its streams and subjects)
    /// is NATS JetStream. The event stream's source is the log in `store`;
    /// `codec` is what the inputs' [`Wire`] form needs.
    pub async fn open(
        url: &str,
        shards: u32,
        store: Store,
        codec: I::Codec,
    ) -> Result<Bus<I>, Error> {
        if url == "local" {
            return Ok(Bus::local(shards, store));
        }
        if url.starts_with("nats://") {
            let options = nats::Options::parse(url)?;
            return Ok(Bus::Nats(
                NatsBus::open(&options, shards, store, codec).await?,
            ));
        }
        Err(Error::Url(url.to_string()))
    }
}

impl<I: Send + 'static> Bus<I> {
    /// The in-process bus over `shards` shards, its event stream the log in `store`.
    pub fn local(shards: u32, store: Store) -> Bus<I> {
        Bus::Local(LocalBus::new(shards, store))
    }

    pub fn shards(&self) -> u32 {
        match self {
            Bus::Local(b) => b.shards(),
            Bus::Nats(b) => b.shards(),
        }
    }

    /// The shard that owns `run`.
    pub fn shard_of(&self, run: &str) -> u32 {
        shard_of(run, self.shards())
    }

    /// Queues `input` for the worker of `run`'s shard.
    pub async fn send(&self, run: &str, input: I) -> Result<(), Error> {
        self.send_to(self.shard_of(run), input).await
    }

    /// Queues `input` for the worker of `shard`: for what every worker must
    /// see, in order with the inputs sent before it (a tenant's purge). When
    /// it returns Ok the input is queued where the shard's next worker finds
    /// it (NATS: stored in the stream, acknowledged by JetStream).
    pub async fn send_to(&self, shard: u32, input: I) -> Result<(), Error> {
        match self {
            Bus::Local(b) => b.send_to(shard, input),
            Bus::Nats(b) => b.send_to(shard, input).await,
        }
    }

    /// Takes the inbox of `shard`, for the worker that owns it: one at a time
    /// ([`Error::Taken`] while another is held), again once it is dropped.
    /// One at a time per handle: between processes, the shard's lease says
    /// who takes it (NATS hands a shard's inputs to every process pulling).
    pub async fn inbox(&self, shard: u32) -> Result<Inbox<I>, Error> {
        match self {
            Bus::Local(b) => b.inbox(shard).map(Inbox::Local),
            Bus::Nats(b) => b.inbox(shard).await.map(Inbox::Nats),
        }
    }

    /// Sends `bytes` on `topic` to every other process of the cluster
    /// listening to it, at most once (a process away or reconnecting misses
    /// it). The in-process bus has no other process: nothing is sent.
    pub async fn broadcast(&self, topic: &str, bytes: Vec<u8>) -> Result<(), Error> {
        match self {
            Bus::Local(_) => Ok(()),
            Bus::Nats(b) => b.broadcast(topic, bytes).await,
        }
    }

    /// What the cluster's other processes broadcast on `topic` from now on
    /// (never this handle's own); `None` on the in-process bus.
    pub async fn listen(
        &self,
        topic: &str,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<Vec<u8>>>, Error> {
        match self {
            Bus::Local(_) => Ok(None),
            Bus::Nats(b) => b.listen(topic).await.map(Some),
        }
    }

    /// The stream of committed events, for consumers.
    pub fn events(&self) -> &Events {
        match self {
            Bus::Local(b) => b.events(),
            Bus::Nats(b) => b.events(),
        }
    }

    /// The engine committed new events: wake the consumers.
    pub fn committed(&self) {
        self.events().committed();
    }
}

impl Events {
    /// The engine committed new events: wake the consumers (NATS: in every
    /// process, once the relay put them on the stream).
    pub fn committed(&self) {
        match self {
            Events::Local(e) => e.committed(),
            Events::Nats(e) => e.committed(),
        }
    }

    /// Up to `limit` committed events after `cursor`, in commit order. A
    /// consumer passes the position of the last event it has kept.
    pub async fn after(&self, cursor: i64, limit: u32) -> Result<Vec<Committed>, Error> {
        match self {
            Events::Local(e) => e.after(cursor, limit).await,
            Events::Nats(e) => e.after(cursor, limit).await,
        }
    }

    /// The position of the last committed event: a consumer's lag is this
    /// minus its cursor.
    pub async fn head(&self) -> Result<i64, Error> {
        match self {
            Events::Local(e) => Ok(e.store().max_event_pos().await?),
            Events::Nats(e) => Ok(e.store().max_event_pos().await?),
        }
    }

    /// Resolves at the next [`Self::committed`] after this call. Create the
    /// future before reading, so a commit in between is not missed.
    pub fn next_commit(&self) -> impl Future<Output = ()> + '_ {
        match self {
            Events::Local(e) => e.notify().notified(),
            Events::Nats(e) => e.notify().notified(),
        }
    }

    /// `tenant` was purged from the engine's store: the stream keeps nothing
    /// of it either (NATS: its events leave the stream; the local stream is
    /// the store).
    pub async fn forget_tenant(&self, tenant: &str) -> Result<(), Error> {
        match self {
            Events::Local(_) => Ok(()),
            Events::Nats(e) => e.forget_tenant(tenant).await,
        }
    }
}

/// Up to `limit` events of the store's log after `cursor`, with the heads of
/// the runs that start or finish among them read from their rows in one
/// query: the stream as the store holds it.
pub(crate) async fn read_log(
    store: &Store,
    cursor: i64,
    limit: u32,
) -> Result<Vec<Committed>, Error> {
    let events = store.events_after(cursor, limit).await?;
    let mut seen = HashSet::new();
    let wanted: Vec<&str> = events
        .iter()
        .filter(|e| carries_head(e) && seen.insert(e.run.as_str()))
        .map(|e| e.run.as_str())
        .collect();
    let mut heads = HashMap::with_capacity(wanted.len());
    if !wanted.is_empty() {
        for (meta, status, state_bytes) in store.load_runs(&wanted).await? {
            // Only a few fields of the state: the rest is skipped, not built.
            let state: StateHead =
                serde_json::from_slice(&state_bytes).map_err(|e| store::Error::Corrupt {
                    table: "runs",
                    message: format!("run {}: {e}", meta.id),
                })?;
            let (error_code, failed_step) = match state.error {
                Some(e) => (Some(e.code), e.node),
                None => (None, None),
            };
            heads.insert(
                meta.id,
                RunHead {
                    tenant: meta.tenant,
                    flow: state.flow,
                    version: state.version,
                    parent: meta.parent,
                    bundle: meta.bundle,
                    schedule: meta.schedule,
                    key: meta.key,
                    created_at: meta.created_at,
                    state: is_final(&status).then_some(state_bytes),
                    error_code,
                    failed_step,
                },
            );
        }
    }
    Ok(events
        .into_iter()
        .map(|event| {
            let run = if carries_head(&event) {
                heads.get(&event.run).map(|h| RunHead {
                    // The state only with the event that finishes the run.
                    state: h.state.clone().filter(|_| is_final(&event.status)),
                    ..h.clone()
                })
            } else {
                None
            };
            Committed { event, run }
        })
        .collect())
}

/// A run's first event and the one that finishes it carry the run's head.
pub fn carries_head(e: &EventRow) -> bool {
    e.seq == 0 || is_final(&e.status)
}

/// A run status after which nothing changes the run.
pub fn is_final(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

/// The fields of a run's state the stream carries.
#[derive(serde::Deserialize)]
struct StateHead {
    flow: String,
    version: String,
    #[serde(default)]
    error: Option<eflow_core::RunError>,
}
