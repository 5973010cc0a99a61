//! The in-process bus of the embedded server: one unbounded channel per
//! shard, and the store's event log as the stream.
//!
//! Inputs of a run go to one shard ([`crate::store::shard_of`]), so a worker
//! sees them in the order they were sent. A shard's receiver waits in its
//! slot until a worker takes it and goes back there when the worker drops
//! it, so inputs sent while no worker holds the shard reach the next one.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use super::{Committed, Error, Events, read_log};
use crate::store::Store;

#[derive(Debug)]
pub struct LocalBus<I> {
    inner: Arc<LocalInner<I>>,
    events: Events,
}

impl<I> Clone for LocalBus<I> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            events: self.events.clone(),
        }
    }
}

#[derive(Debug)]
struct LocalInner<I> {
    senders: Vec<mpsc::UnboundedSender<I>>,
    /// Each shard's receiver while no worker holds it.
    receivers: Mutex<Vec<Option<mpsc::UnboundedReceiver<I>>>>,
}

/// A shard's receiver, held by its worker; it goes back to its slot on drop.
#[derive(Debug)]
pub struct LocalInbox<I> {
    shard: u32,
    rx: Option<mpsc::UnboundedReceiver<I>>,
    bus: Arc<LocalInner<I>>,
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

impl<I: Send + 'static> LocalBus<I> {
    pub(super) fn new(shards: u32, store: Store) -> Self {
        let shards = shards.max(1);
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::unbounded_channel()).unzip();
        LocalBus {
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
        }
    }

    pub(super) fn shards(&self) -> u32 {
        self.inner.senders.len() as u32
    }

    pub(super) fn send_to(&self, shard: u32, input: I) -> Result<(), Error> {
        self.inner
            .senders
            .get(shard as usize)
            .ok_or(Error::NoShard(shard))?
            .send(input)
            // The receivers live as long as the senders: in the bus.
            .map_err(|_| Error::NoShard(shard))
    }

    pub(super) fn inbox(&self, shard: u32) -> Result<LocalInbox<I>, Error> {
        let mut slots = self
            .inner
            .receivers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let slot = slots.get_mut(shard as usize).ok_or(Error::NoShard(shard))?;
        let rx = slot.take().ok_or(Error::Taken(shard))?;
        Ok(LocalInbox {
            shard,
            rx: Some(rx),
            bus: self.inner.clone(),
        })
    }

    pub(super) fn events(&self) -> &Events {
        &self.events
    }
}

impl<I> LocalInbox<I> {
    pub(super) async fn recv(&mut self) -> Option<I> {
        self.rx.as_mut()?.recv().await
    }

    pub(super) fn try_recv(&mut self) -> Option<I> {
        self.rx.as_mut()?.try_recv().ok()
    }
}

impl<I> Drop for LocalInbox<I> {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            let mut slots = self.bus.receivers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = slots.get_mut(self.shard as usize) {
                *slot = Some(rx);
            }
        }
    }
}

impl LocalEvents {
    pub(super) fn committed(&self) {
        self.inner.committed.notify_waiters();
    }

    pub(super) fn notify(&self) -> &Notify {
        &self.inner.committed
    }

    pub(super) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(super) async fn after(&self, cursor: i64, limit: u32) -> Result<Vec<Committed>, Error> {
        read_log(&self.inner.store, cursor, limit).await
    }
}
