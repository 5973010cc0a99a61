//! The bus: how inputs reach the worker that owns their run's shard, and how
//! the events the engine committed reach the consumers that follow them (the
//! history).
//!
//! [`Bus`] is a cheap, cloneable handle, like [`crate::store::Store`]: callers
//! see one set of operations and the backend is a variant behind them. The
//! embedded backend's bus is in-process:
//!
//! - **Inputs:** one unbounded channel per shard. Inputs of a run go to one
//!   shard ([`shard_of`]), so a worker sees them in the order they were sent.
//!   An input may carry a reply channel; the worker answers after its commit.
//! - **Events:** the engine's append-only event log is the stream. A consumer
//!   keeps its own cursor (a log position), reads batches after it, and waits
//!   for the engine's signal that more were committed. Reading from the log
//!   means a consumer that was down misses nothing. Each item carries what a
//!   consumer needs of its run ([`RunHead`]: tenant, flow, version, parent,
//!   error) on the run's first event and on the event that finishes it, so a
//!   consumer never reads the engine's store.
//!
//! The bus does not know what an input is: [`Bus`] is generic over it (the
//! engine's `engine::Input`), so the bus depends on the store and not on the
//! engine.
//!
//! The distributed backend (NATS JetStream) is a second variant of the same
//! enum: a work-queue subject per shard, with request-reply in place of the
//! reply channel, and an event stream that the engine publishes to after each
//! commit. `tests/bus.rs` is the suite both must pass.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use crate::store::{self, EventRow, Store, shard_of};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the bus is closed: shard {0} has no worker")]
    Closed(u32),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("unsupported bus URL `{0}`: use local")]
    Url(String),
}

/// The bus handle, carrying inputs of type `I` to the shard workers.
#[derive(Debug)]
pub enum Bus<I> {
    Local(LocalBus<I>),
}

impl<I> Clone for Bus<I> {
    fn clone(&self) -> Self {
        match self {
            Bus::Local(b) => Bus::Local(LocalBus {
                inner: b.inner.clone(),
                events: b.events.clone(),
            }),
        }
    }
}

/// The stream of committed events, the half of the bus consumers follow.
#[derive(Debug, Clone)]
pub enum Events {
    Local(LocalEvents),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHead {
    pub tenant: String,
    pub flow: String,
    pub version: String,
    pub parent: Option<String>,
    /// The bundle it runs on and the schedule that started it, if one did.
    pub bundle: String,
    pub schedule: Option<String>,
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

/// Where one shard's worker takes its inputs from.
#[derive(Debug)]
pub enum Inbox<I> {
    Local(mpsc::UnboundedReceiver<I>),
}

impl<I> Inbox<I> {
    /// The next input; `None` once nobody can send any more.
    pub async fn recv(&mut self) -> Option<I> {
        match self {
            Inbox::Local(rx) => rx.recv().await,
        }
    }

    /// An input that is already waiting, without waiting for one.
    pub fn try_recv(&mut self) -> Option<I> {
        match self {
            Inbox::Local(rx) => rx.try_recv().ok(),
        }
    }
}

impl<I> Bus<I> {
    /// The bus at `url`: `local` is the in-process bus, its event stream the
    /// log in `store`. (`nats://…` will be the distributed one.)
    pub fn open(url: &str, shards: u32, store: Store) -> Result<Bus<I>, Error> {
        match url {
            "local" => Ok(Bus::local(shards, store)),
            _ => Err(Error::Url(url.to_string())),
        }
    }

    /// The in-process bus over `shards` shards, its event stream the log in `store`.
    pub fn local(shards: u32, store: Store) -> Bus<I> {
        let shards = shards.max(1);
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::unbounded_channel()).unzip();
        Bus::Local(LocalBus {
            inner: Arc::new(LocalInner {
                senders,
                receivers: Mutex::new(receivers.into_iter().map(Some).collect()),
            }),
            events: Events::Local(LocalEvents {
                inner: Arc::new(LocalLog {
                    committed: Notify::new(),
                    store,
                }),
            }),
        })
    }

    pub fn shards(&self) -> u32 {
        match self {
            Bus::Local(b) => b.inner.senders.len() as u32,
        }
    }

    /// The shard that owns `run`.
    pub fn shard_of(&self, run: &str) -> u32 {
        shard_of(run, self.shards())
    }

    /// Queues `input` for the worker of `run`'s shard.
    pub fn send(&self, run: &str, input: I) -> Result<(), Error> {
        self.send_to(self.shard_of(run), input)
    }

    /// Queues `input` for the worker of `shard`: for what every worker must
    /// see, in order with the inputs sent before it (a tenant's purge).
    pub fn send_to(&self, shard: u32, input: I) -> Result<(), Error> {
        match self {
            Bus::Local(b) => b
                .inner
                .senders
                .get(shard as usize)
                .ok_or(Error::Closed(shard))?
                .send(input)
                .map_err(|_| Error::Closed(shard)),
        }
    }

    /// Takes the inbox of `shard`, for the worker that owns it; `None` when it
    /// was taken already (one worker per shard) or the shard does not exist.
    pub fn inbox(&self, shard: u32) -> Option<Inbox<I>> {
        match self {
            Bus::Local(b) => b
                .inner
                .receivers
                .lock()
                .ok()?
                .get_mut(shard as usize)?
                .take()
                .map(Inbox::Local),
        }
    }

    /// The stream of committed events, for consumers.
    pub fn events(&self) -> &Events {
        match self {
            Bus::Local(b) => &b.events,
        }
    }

    /// The engine committed new events: wake the consumers.
    pub fn committed(&self) {
        self.events().committed();
    }
}

impl Events {
    /// The engine committed new events: wake the consumers.
    pub fn committed(&self) {
        match self {
            Events::Local(e) => e.inner.committed.notify_waiters(),
        }
    }

    /// Up to `limit` committed events after `cursor`, in commit order. A
    /// consumer passes the position of the last event it has kept.
    pub async fn after(&self, cursor: i64, limit: u32) -> Result<Vec<Committed>, Error> {
        match self {
            Events::Local(e) => e.after(cursor, limit).await,
        }
    }

    /// The position of the last committed event: a consumer's lag is this
    /// minus its cursor.
    pub async fn head(&self) -> Result<i64, Error> {
        match self {
            Events::Local(e) => Ok(e.inner.store.max_event_pos().await?),
        }
    }

    /// Resolves at the next [`Self::committed`] after this call. Create the
    /// future before reading, so a commit in between is not missed.
    pub fn next_commit(&self) -> impl Future<Output = ()> + '_ {
        match self {
            Events::Local(e) => e.inner.committed.notified(),
        }
    }
}

#[derive(Debug)]
pub struct LocalBus<I> {
    inner: Arc<LocalInner<I>>,
    events: Events,
}

#[derive(Debug)]
struct LocalInner<I> {
    senders: Vec<mpsc::UnboundedSender<I>>,
    receivers: Mutex<Vec<Option<mpsc::UnboundedReceiver<I>>>>,
}

#[derive(Debug, Clone)]
pub struct LocalEvents {
    inner: Arc<LocalLog>,
}

#[derive(Debug)]
struct LocalLog {
    committed: Notify,
    store: Store,
}

impl LocalEvents {
    /// The log's events, with the heads of the runs that start or finish
    /// among them read from their rows in one query.
    async fn after(&self, cursor: i64, limit: u32) -> Result<Vec<Committed>, Error> {
        let events = self.inner.store.events_after(cursor, limit).await?;
        let mut seen = HashSet::new();
        let wanted: Vec<&str> = events
            .iter()
            .filter(|e| carries_head(e) && seen.insert(e.run.as_str()))
            .map(|e| e.run.as_str())
            .collect();
        let mut heads = HashMap::with_capacity(wanted.len());
        if !wanted.is_empty() {
            for (meta, status, state_bytes) in self.inner.store.load_runs(&wanted).await? {
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
