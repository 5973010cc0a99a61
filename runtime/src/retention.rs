//! What keeps the stores from growing without end: the sweeper, which lets
//! finished runs leave the engine's store once the history holds them, and
//! the history's retention, which deletes runs finished longer ago than
//! their tenant's retention.
//!
//! Both work in small batches, each one short transaction, and pause between
//! batches, so the shard workers (who share the engine store's one writer)
//! wait at most one batch. Neither reads anything the engine or the history
//! has not committed: a run leaves the engine only when every event of it is
//! at or before the history's stored cursor, read and then made durable
//! (`HistoryStore::sync`) once a round, so a crash at any point, of the
//! process or of the machine, leaves each run whole in at least one store.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::history::History;
use crate::store::Store;

/// The default of [`Options::sweep_after`]: finished runs stay readable
/// from the engine's store for an hour.
pub const DEFAULT_SWEEP_AFTER: Duration = Duration::from_secs(3600);
/// The default of [`Options::retry_window`]: a failed run can be retried
/// for a week.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// The default of [`Options::history_retention`]: 400 days.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);

/// Runs a batch of the sweeper or the retention handles.
const BATCH: u32 = 500;
/// The pause between two full batches: the workers' commits go first.
const BETWEEN_BATCHES: Duration = Duration::from_millis(5);
/// How often the sweeper looks again once it swept what it could.
const IDLE: Duration = Duration::from_secs(1);
/// How often the history's retention runs, in the clock's time (a test's
/// manual clock moved past it runs it at the sweeper's next round).
const RETENTION_EVERY_MS: u64 = 60_000;

/// How long finished runs stay where they are.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long a finished run stays in the engine's store once the history
    /// holds it (its view is read from the history after that).
    pub sweep_after: Duration,
    /// How long a failed run stays in the engine's store, so that it can be
    /// retried (`POST /v1/runs/{id}/retry`); at least `sweep_after`. Once
    /// swept, a retry answers 410 `retry_window_passed`.
    pub retry_window: Duration,
    /// How long the history keeps a finished run, unless its tenant has its
    /// own retention.
    pub history_retention: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sweep_after: DEFAULT_SWEEP_AFTER,
            retry_window: DEFAULT_RETRY_WINDOW,
            history_retention: DEFAULT_HISTORY_RETENTION,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    History(#[from] crate::history::store::Error),
}

/// The sweeper and the history's retention, over both stores.
#[derive(Clone)]
pub struct Sweeper {
    options: Options,
    store: Store,
    history: History,
    clock: SharedClock,
    swept: Arc<std::sync::atomic::AtomicU64>,
}

impl Sweeper {
    pub fn new(options: Options, store: Store, history: History, clock: SharedClock) -> Self {
        Self {
            options,
            store,
            history,
            clock,
            swept: Arc::default(),
        }
    }

    /// Runs swept from the engine's store since the start.
    pub fn swept(&self) -> u64 {
        self.swept.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sweeps and enforces retention until `shutdown`. Only with a history
    /// consumer running: without one nothing is held by the history, so
    /// nothing may leave.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut next_retention = 0;
        loop {
            if let Err(e) = self.sweep(&shutdown).await {
                tracing::warn!(error = %e, "cannot sweep finished runs; retrying");
            }
            if self.clock.now_ms() >= next_retention {
                match self.expire_history().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(runs = n, "history retention deleted finished runs"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot apply the history's retention; retrying")
                    }
                }
                next_retention = self.clock.now_ms() + RETENTION_EVERY_MS;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(IDLE) => {}
            }
        }
    }

    /// One round of the sweeper: the runs that finished at least
    /// `sweep_after` ago (failed ones: `retry_window`, if longer) and that
    /// the history holds whole leave the
    /// engine's store, a batch at a time, until none is left or `stop`.
    /// Returns how many.
    pub async fn sweep(&self, stop: &CancellationToken) -> Result<u64, Error> {
        // The cursor as stored, then made durable: a crash of the process
        // or of the machine keeps the history at least this far.
        let held_through = self.history.store().cursor().await?;
        self.history.store().sync().await?;
        let now = self.clock.now_ms();
        let before = now.saturating_sub(self.options.sweep_after.as_millis() as u64);
        let failed_before =
            before.min(now.saturating_sub(self.options.retry_window.as_millis() as u64));
        let mut total = 0;
        while !stop.is_cancelled() {
            let n = self
                .store
                .sweep_finished(held_through, before, failed_before, BATCH)
                .await?;
            self.swept
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            total += n;
            if n < u64::from(BATCH) {
                break;
            }
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
        Ok(total)
    }

    /// The history's retention: each tenant's runs finished longer ago than
    /// its retention are deleted, a batch at a time: first what the engine's
    /// store kept of them, then their rows in the history (so a crash in
    /// between leaves them to the next round). Returns how many runs.
    pub async fn expire_history(&self) -> Result<u64, Error> {
        let now = self.clock.now_ms();
        let tenants = self.store.tenants().await?;
        let mut names: Vec<String> = self.history.store().tenants().await?;
        names.extend(tenants.iter().map(|t| t.id.clone()));
        names.sort();
        names.dedup();
        let mut total = 0;
        for tenant in names {
            let retention = tenants
                .iter()
                .find(|t| t.id == tenant)
                .and_then(|t| t.history_retention_ms)
                .unwrap_or(self.options.history_retention.as_millis() as u64);
            let before = now.saturating_sub(retention);
            // What the engine's store kept of runs the history no longer
            // holds (a retention shorter than `--sweep-after`).
            while self.store.expire_swept(&tenant, before, BATCH).await? >= u64::from(BATCH) {
                tokio::time::sleep(BETWEEN_BATCHES).await;
            }
            loop {
                let ids = self.history.store().expired(&tenant, before, BATCH).await?;
                if ids.is_empty() {
                    break;
                }
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                self.store.forget_swept(&refs).await?;
                self.history.store().forget(&refs).await?;
                total += ids.len() as u64;
                if ids.len() < BATCH as usize {
                    break;
                }
                tokio::time::sleep(BETWEEN_BATCHES).await;
            }
        }
        Ok(total)
    }
}
