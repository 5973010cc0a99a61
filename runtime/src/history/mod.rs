//! The history service: a consumer of the bus's stream of committed events
//! that keeps every run and event in its own store ([`HistoryStore`]),
//! indexed for queries by tenant, flow, version, status, step, error and time,
//! with cursor pagination. It reads nothing but the stream (the run's
//! metadata comes with it, [`crate::bus::RunHead`]); the engine never reads it.
//!
//! The consumer reads the stream in commit order from a cursor it stores with
//! its own writes, so a crash neither loses nor doubles an event.

pub mod population;
mod postgres;
mod sqlite;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use postgres::PostgresHistory;
pub use sqlite::SqliteHistory;
pub use store::{
    EventRecord, HistoryStore, HistoryWrite, Member, PopulationCounts, PopulationPage,
    PopulationQuery, RunPage, RunQuery, RunRecord,
};

use crate::bus::{Committed, Events, is_final};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Bus(#[from] crate::bus::Error),
    #[error("unreadable event at position {pos}: {message}")]
    Corrupt { pos: i64, message: String },
}

/// The history: its store and the consumer's cursor.
#[derive(Debug, Clone)]
pub struct History {
    store: HistoryStore,
    /// The last stream position written to the store, and whether a consumer
    /// is following the stream: for `/v1/stats`.
    cursor: Arc<watch::Sender<i64>>,
    consuming: Arc<AtomicBool>,
    /// Held by a batch from its read to its write, and by a purge: a batch
    /// read before a tenant's rows left the engine is written before the
    /// purge deletes them here, never after.
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl History {
    /// The history over `store`, continuing from the cursor stored in it.
    pub async fn new(store: HistoryStore) -> Result<Self, Error> {
        let cursor = store.cursor().await?;
        Ok(Self {
            store,
            cursor: Arc::new(watch::Sender::new(cursor)),
            consuming: Arc::new(AtomicBool::new(false)),
            writing: Arc::default(),
        })
    }

    /// The position of the last event written.
    pub fn cursor(&self) -> i64 {
        *self.cursor.borrow()
    }

    pub fn store(&self) -> &HistoryStore {
        &self.store
    }

    pub async fn close(&self) {
        self.store.close().await;
    }

    /// Follows the stream until `shutdown`.
    pub async fn consume(self, events: Events, shutdown: CancellationToken) {
        // Another process may have been the active consumer until now.
        match self.store.cursor().await {
            Ok(c) => {
                self.cursor.send_replace(c);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the history's cursor; keeping the last known")
            }
        }
        self.consuming.store(true, Ordering::Relaxed);
        loop {
            let notified = events.next_commit();
            let caught_up = match self.catch_up(&events).await {
                Ok(n) => n < BATCH,
                Err(e) => {
                    tracing::warn!(error = %e, "history could not read the event stream; retrying");
                    true
                }
            };
            if caught_up {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = notified => tokio::time::sleep(GATHER).await,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            } else if shutdown.is_cancelled() {
                break;
            }
        }
        self.consuming.store(false, Ordering::Relaxed);
    }

    /// Reads one batch of new events and writes it; returns how many it read.
    /// A batch is one write: one row per run (its last status) and one per event.
    pub async fn catch_up(&self, events: &Events) -> Result<u32, Error> {
        // The stored cursor, as read at open and kept after each write: only
        // this consumer moves it.
        let _writing = self.writing.lock().await;
        let cursor = *self.cursor.borrow();
        let batch = events.after(cursor, BATCH).await?;
        let Some(last) = batch.last().map(|c| c.event.pos) else {
            return Ok(0);
        };
        let read = batch.len() as u32;
        let write = fold(batch, &self.store, cursor, last).await?;
        match self.store.write(&write).await {
            Ok(()) => {}
            Err(store::Error::Overtaken { stored, from }) => {
                // Paused past the lease, another consumer went on: its
                // cursor is where this one goes on from, if it still may.
                tracing::warn!(
                    stored,
                    from,
                    "another consumer wrote the history since this batch was read; going on from its cursor"
                );
                self.cursor.send_replace(stored);
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        }
        self.cursor.send_replace(last);
        Ok(read)
    }

    /// Events committed on the stream that this history has not written yet;
    /// `None` when no consumer follows the stream.
    pub async fn behind(&self, events: &Events) -> Result<Option<u64>, Error> {
        if !self.consuming.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let head = events.head().await?;
        Ok(Some(
            head.saturating_sub(*self.cursor.borrow()).max(0) as u64
        ))
    }

    /// Waits until this history holds every event committed on the stream
    /// before the call, at most `patience`: a list asked for right after a
    /// start then shows that run. Returns at once when no consumer runs.
    pub async fn catch_up_with(&self, events: &Events, patience: Duration) -> Result<(), Error> {
        if !self.consuming.load(Ordering::Relaxed) {
            return Ok(());
        }
        let head = events.head().await?;
        let mut rx = self.cursor.subscribe();
        let _ = tokio::time::timeout(patience, rx.wait_for(|at| *at >= head)).await;
        Ok(())
    }

    pub async fn runs(&self, q: &RunQuery) -> Result<RunPage, Error> {
        Ok(self.store.runs(q).await?)
    }

    /// Waits until the stored cursor (whichever process's consumer moves
    /// it) is at `pos` or past it, at most `patience`; whether it is.
    pub async fn stored_past(&self, pos: i64, patience: Duration) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if self.store.cursor().await? >= pos {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deletes every run and event of `tenant`. Called once the tenant's rows
    /// left the engine's store, so no later batch of the stream holds any.
    pub async fn purge(&self, tenant: &str) -> Result<u64, Error> {
        let _writing = self.writing.lock().await;
        Ok(self.store.purge(tenant).await?)
    }
}

/// A batch of the stream as the history writes it: the runs it touches, each
/// with its last status, and its events.
async fn fold(
    batch: Vec<Committed>,
    store: &HistoryStore,
    from: i64,
    cursor: i64,
) -> Result<HistoryWrite, Error> {
    // The runs this batch touches, in first-seen order, with what the
    // history already holds of them; `slots[i]` is event i's run.
    let mut runs: Vec<Folded> = Vec::new();
    let slots: Vec<usize> = {
        let mut index: HashMap<&str, usize> = HashMap::new();
        batch
            .iter()
            .map(|c| {
                *index.entry(c.event.run.as_str()).or_insert_with(|| {
                    let mut f = Folded::default();
                    f.record.id.clone_from(&c.event.run);
                    runs.push(f);
                    runs.len() - 1
                })
            })
            .collect()
    };
    let held = {
        let ids: Vec<&str> = runs.iter().map(|f| f.record.id.as_str()).collect();
        store.runs_of(&ids).await?
    };
    let held: Vec<(usize, RunRecord)> = {
        let index: HashMap<&str, usize> = runs
            .iter()
            .enumerate()
            .map(|(i, f)| (f.record.id.as_str(), i))
            .collect();
        held.into_iter()
            .filter_map(|r| index.get(r.id.as_str()).map(|&i| (i, r)))
            .collect()
    };
    for (i, r) in held {
        runs[i].held = Some(r.status.clone());
        runs[i].record = r;
    }
    let mut events = Vec::with_capacity(batch.len());
    for (
        Committed {
            event: e,
            run: head,
        },
        slot,
    ) in batch.into_iter().zip(slots)
    {
        let f = &mut runs[slot];
        // A run's first event and the one that finishes it carry its head;
        // when they come without one, the run was purged from the engine
        // since: nothing of it is kept.
        if crate::bus::carries_head(&e) {
            match head {
                Some(h) => {
                    if f.held.is_none() && !f.headed {
                        f.record.tenant = h.tenant;
                        f.record.flow = h.flow;
                        f.record.version = h.version;
                        f.record.parent = h.parent;
                        f.record.bundle = Some(h.bundle);
                        f.record.schedule = h.schedule;
                        f.record.key = h.key;
                        f.record.created_at = h.created_at;
                    }
                    f.headed = true;
                    if is_final(&e.status) {
                        f.record.error_code = h.error_code;
                        f.record.failed_step = h.failed_step;
                        f.record.state = h.state;
                    }
                }
                None => f.gone = true,
            }
        }
        if f.held.is_none() && !f.headed {
            // Neither held nor introduced by the stream: its start was
            // purged before the history saw it.
            f.gone = true;
        }
        f.record.status.clone_from(&e.status);
        f.record.updated_at = e.at;
        // Two fields of the event; the rest is kept as it was stored.
        let head: EventHead = serde_json::from_slice(&e.body).map_err(|err| Error::Corrupt {
            pos: e.pos,
            message: err.to_string(),
        })?;
        let (kind, step) = (head.kind.into_owned(), head.node.map(Into::into));
        if kind == "retry_requested" {
            // Running again: the failure's error is no longer the run's (the
            // store clears it, `HistoryWrite::retried`), and the run may
            // finish again, with its own.
            f.retried = true;
            f.record.error_code = None;
            f.record.failed_step = None;
        }
        events.push((
            slot,
            EventRecord {
                pos: e.pos,
                tenant: f.record.tenant.clone(),
                run: e.run,
                seq: e.seq,
                at: e.at,
                kind,
                step,
                status: e.status,
                body: e.body,
            },
        ));
    }
    let events = events
        .into_iter()
        .filter(|(slot, _)| !runs[*slot].gone)
        .map(|(_, e)| e)
        .collect();
    let retried = runs
        .iter()
        .filter(|f| f.retried && !f.gone && f.held.is_some())
        .map(|f| f.record.id.clone())
        .collect();
    let runs = runs
        .into_iter()
        .filter(|f| !f.gone)
        .map(|mut f| {
            // A run finishes once per start or retry: an error already held
            // is not replaced by one read from a later head (the store keeps
            // the held one), unless the run was retried since.
            if f.held.as_deref().is_some_and(is_final) && !f.retried {
                f.record.error_code = None;
                f.record.failed_step = None;
            }
            f.record
        })
        .collect();
    Ok(HistoryWrite {
        runs,
        events,
        cursor,
        from,
        retried,
    })
}

const BATCH: u32 = 2_000;

/// How long the consumer lets commits gather after being woken, once it has
/// caught up: long enough for a batch, short enough that `eflow run list`
/// right after `eflow run start` shows the run.
const GATHER: Duration = Duration::from_millis(20);

/// The fields of an event the history indexes.
#[derive(serde::Deserialize)]
struct EventHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    node: Option<std::borrow::Cow<'a, str>>,
}

/// A run as one batch of the consumer sees it.
#[derive(Debug, Default)]
struct Folded {
    /// What the store holds of it: its status there, if it holds it.
    held: Option<String>,
    /// A head came with this batch.
    headed: bool,
    /// Purged from the engine before the history saw it.
    gone: bool,
    /// A `retry_requested` event of it came with this batch.
    retried: bool,
    record: RunRecord,
}
