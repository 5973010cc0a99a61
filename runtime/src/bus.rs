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
//!   means a consumer that was down misses nothing.
//!
//! The distributed backend (NATS JetStream) is a second variant of the same
//! enum: a work-queue subject per shard, with request-reply in place of the
//! reply channel, and an event stream that the engine publishes to after each
//! commit. `tests/bus.rs` is the suite both must pass.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use crate::engine::Input;
use crate::store::{self, EventRow, Store, shard_of};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the bus is closed: shard {0} has no worker")]
    Closed(u32),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The bus handle.
#[derive(Debug, Clone)]
pub enum Bus {
    Local(LocalBus),
}

/// Where one shard's worker takes its inputs from.
#[derive(Debug)]
pub enum Inbox {
    Local(mpsc::UnboundedReceiver<Input>),
}

impl Inbox {
    /// The next input; `None` once nobody can send any more.
    pub async fn recv(&mut self) -> Option<Input> {
        match self {
            Inbox::Local(rx) => rx.recv().await,
        }
    }

    /// An input that is already waiting, without waiting for one.
    pub fn try_recv(&mut self) -> Option<Input> {
        match self {
            Inbox::Local(rx) => rx.try_recv().ok(),
        }
    }
}

impl Bus {
    /// The in-process bus over `shards` shards, its event stream the log in `store`.
    pub fn local(shards: u32, store: Store) -> Bus {
        let shards = shards.max(1);
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::unbounded_channel()).unzip();
        Bus::Local(LocalBus {
            inner: Arc::new(LocalInner {
                senders,
                receivers: Mutex::new(receivers.into_iter().map(Some).collect()),
                committed: Notify::new(),
                store,
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
    pub fn send(&self, run: &str, input: Input) -> Result<(), Error> {
        let shard = self.shard_of(run);
        match self {
            Bus::Local(b) => b.inner.senders[shard as usize]
                .send(input)
                .map_err(|_| Error::Closed(shard)),
        }
    }

    /// Takes the inbox of `shard`, for the worker that owns it; `None` when it
    /// was taken already (one worker per shard) or the shard does not exist.
    pub fn inbox(&self, shard: u32) -> Option<Inbox> {
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

    /// The engine committed new events: wake the consumers.
    pub fn committed(&self) {
        match self {
            Bus::Local(b) => b.inner.committed.notify_waiters(),
        }
    }

    /// Up to `limit` committed events after `cursor`, in commit order. A
    /// consumer passes the position of the last event it has kept.
    pub async fn events_after(&self, cursor: i64, limit: u32) -> Result<Vec<EventRow>, Error> {
        match self {
            Bus::Local(b) => Ok(b.inner.store.events_after(cursor, limit).await?),
        }
    }

    /// The position of the last committed event: a consumer's lag is this
    /// minus its cursor.
    pub async fn head(&self) -> Result<i64, Error> {
        match self {
            Bus::Local(b) => Ok(b.inner.store.max_event_pos().await?),
        }
    }

    /// Resolves at the next [`Self::committed`] after this call. Create the
    /// future before reading, so a commit in between is not missed.
    pub fn next_commit(&self) -> impl Future<Output = ()> + '_ {
        match self {
            Bus::Local(b) => b.inner.committed.notified(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LocalBus {
    inner: Arc<LocalInner>,
}

#[derive(Debug)]
struct LocalInner {
    senders: Vec<mpsc::UnboundedSender<Input>>,
    receivers: Mutex<Vec<Option<mpsc::UnboundedReceiver<Input>>>>,
    committed: Notify,
    store: Store,
}
