//! Which shards this process runs workers for, and their workers' lives.
//!
//! A worker runs only while its process holds the shard's lease, and every
//! commit it makes carries the lease's fencing token, so a worker whose
//! lease was taken over cannot write. Taking a shard is one path for every
//! backend: take the lease, hand the shard's leftover outbox rows to the
//! executor, take the shard's inbox, start the worker.
//!
//! - [`Ownership::HoldAll`]: the embedded server, alone on its SQLite file,
//!   takes every shard at start until the end of time ([`HELD_FOREVER_MS`]).
//! - [`Ownership::Share`]: engines sharing a PostgreSQL store and a NATS bus
//!   each hold their fair share ([`super::ownership::plan`]), renewing their
//!   leases every [`LEASE_EVERY`] for [`LEASE_TTL_MS`]: the shards of an
//!   engine that stops are given up at once; those of one that dies move to
//!   the others once its lease and its member row expire.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::route::Outbound;
use super::{Engine, Error, Finished, HELD_FOREVER_MS, Options, dispatch, ownership, worker};
use crate::clock::SharedClock;
use crate::store::shard_of;

/// How long a lease runs unless renewed.
pub const LEASE_TTL_MS: u64 = 5_000;
/// How often an engine renews its leases and looks for shards to take.
pub const LEASE_EVERY: Duration = Duration::from_secs(1);

/// How this process comes to hold shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ownership {
    /// Every shard, from start to stop: the process is alone on its store.
    #[default]
    HoldAll,
    /// A fair share among the live engines, by leases.
    Share,
}

struct Running {
    token: i64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The workers of the shards this process holds.
pub(super) struct Shards {
    engine: Engine,
    options: Options,
    clock: SharedClock,
    finished: mpsc::UnboundedSender<Finished>,
    dispatch: mpsc::UnboundedSender<Outbound>,
    running: BTreeMap<u32, Running>,
}

impl Shards {
    pub(super) fn new(
        engine: Engine,
        options: Options,
        clock: SharedClock,
        finished: mpsc::UnboundedSender<Finished>,
        dispatch: mpsc::UnboundedSender<Outbound>,
    ) -> Self {
        Self {
            engine,
            options,
            clock,
            finished,
            dispatch,
            running: BTreeMap::new(),
        }
    }

    /// Takes every shard for good, then waits for `shutdown`.
    pub(super) async fn hold_all(mut self, shutdown: CancellationToken) -> Result<Self, Error> {
        let store = self.engine.store().clone();
        let all: Vec<u32> = (0..self.engine.shard_count()).collect();
        let mut taken = Vec::with_capacity(all.len());
        for &shard in &all {
            let token = store
                .acquire_lease(shard, &self.options.owner, HELD_FOREVER_MS)
                .await?;
            taken.push((shard, token));
        }
        self.start(taken, &shutdown).await?;
        Ok(self)
    }

    /// Holds a fair share of the shards until `shutdown`, then stops the
    /// workers and gives their shards up for the other engines to take.
    pub(super) async fn share(mut self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.tick(&shutdown).await {
                tracing::warn!(error = %e, "cannot read or renew the shards' leases; trying again");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(LEASE_EVERY) => {}
            }
        }
        let shards: Vec<u32> = self.running.keys().copied().collect();
        self.release(&shards).await;
    }

    /// One look at the cluster: renew what is kept, give up what is beyond
    /// this engine's share, take what is free.
    async fn tick(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        let store = self.engine.store().clone();
        let me = self.options.owner.clone();
        // Workers that stopped by themselves were fenced out.
        let ended: Vec<u32> = self
            .running
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(s, _)| *s)
            .collect();
        for s in ended {
            self.running.remove(&s);
            self.engine.stats().shards_released.fetch_add(1, Relaxed);
        }
        self.count();
        // Before taking shards: a purged tenant created again meanwhile
        // is applied here again.
        self.engine.check_stopped().await?;
        let now = self.clock.now_ms();
        let engines: Vec<_> = store
            .members()
            .await?
            .into_iter()
            .filter(|m| m.roles.split(',').any(|r| r == "engine"))
            .collect();
        let leases = store.leases().await?;
        let plan = ownership::plan(&me, self.engine.shard_count(), &engines, &leases, now);
        // Workers of shards this process no longer holds (its lease lapsed
        // while it was paused, and another took it): stop them before they
        // take more of the shard's inputs; their commits would be fenced.
        let lapsed: Vec<u32> = self
            .running
            .keys()
            .filter(|s| !plan.renew.contains(s) && !plan.release.contains(s))
            .copied()
            .collect();
        for shard in lapsed {
            tracing::warn!(
                shard,
                "this process's lease of the shard lapsed: its worker stops"
            );
            self.stop(shard).await;
        }
        self.release(&plan.release).await;
        let expires = now + LEASE_TTL_MS;
        for &shard in &plan.renew {
            let token = store.try_lease(shard, &me, now, expires).await?;
            match (token, self.running.get(&shard)) {
                (Some(t), Some(r)) if r.token == t => {}
                (Some(t), _) => {
                    // Held under a new token (taken again after it lapsed):
                    // the old worker's commits would be refused.
                    self.stop(shard).await;
                    self.start(vec![(shard, t)], shutdown).await?;
                }
                (None, _) => {
                    tracing::warn!(shard, "the shard's lease was taken by another engine");
                    self.stop(shard).await;
                }
            }
        }
        let mut taken = Vec::new();
        for &shard in &plan.take {
            if let Some(token) = store.try_lease(shard, &me, now, expires).await? {
                taken.push((shard, token));
            }
        }
        if !taken.is_empty() {
            tracing::info!(
                shards = ?taken.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
                share = plan.share,
                "took shards"
            );
            self.start(taken, shutdown).await?;
        }
        Ok(())
    }

    /// Starts the workers of shards just taken, after handing their
    /// leftover outbox rows to the executor (read before the worker starts,
    /// so a row it writes is not carried out twice).
    async fn start(
        &mut self,
        taken: Vec<(u32, i64)>,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let shards: HashSet<u32> = taken.iter().map(|(s, _)| *s).collect();
        let n = self.engine.shard_count();
        let rows: Vec<_> = self
            .engine
            .store()
            .outbox()
            .await?
            .into_iter()
            .filter(|(_, run, _)| shards.contains(&shard_of(run, n)))
            .collect();
        if !rows.is_empty() {
            tracing::info!(
                effects = rows.len(),
                "carrying out effects left in the outbox"
            );
        }
        for o in dispatch::pending(&self.engine, rows).await {
            let _ = self.dispatch.send(o);
        }
        for (shard, token) in taken {
            let inbox = self.engine.bus().inbox(shard).await.map_err(|e| match e {
                crate::bus::Error::Taken(shard) => Error::Inbox(shard),
                e => Error::Bus(e),
            })?;
            let stop = shutdown.child_token();
            let w = worker::Worker::new(
                shard,
                token,
                &self.options,
                self.engine.clone(),
                self.clock.clone(),
                self.finished.clone(),
                self.dispatch.clone(),
            );
            let task = tokio::spawn(w.run(inbox, stop.clone()));
            self.running.insert(shard, Running { token, stop, task });
            self.engine.stats().shards_taken.fetch_add(1, Relaxed);
        }
        self.count();
        Ok(())
    }

    fn count(&self) {
        let held = self.running.len() as u64;
        self.engine.stats().shards_held.store(held, Relaxed);
    }

    /// Stops a shard's worker once it finished the batch in hand.
    async fn stop(&mut self, shard: u32) -> Option<i64> {
        let r = self.running.remove(&shard)?;
        r.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), r.task).await;
        self.engine.stats().shards_released.fetch_add(1, Relaxed);
        self.count();
        Some(r.token)
    }

    /// Stops the shards' workers and gives their leases up.
    async fn release(&mut self, shards: &[u32]) {
        for &shard in shards {
            if let Some(token) = self.stop(shard).await {
                let store = self.engine.store();
                if let Err(e) = store.release_lease(shard, &self.options.owner, token).await {
                    tracing::warn!(shard, error = %e, "cannot give the shard up; its lease will lapse");
                }
            }
        }
        if !shards.is_empty() {
            tracing::info!(shards = ?shards, "gave shards up");
        }
    }

    /// Waits for every worker to finish (after `shutdown`).
    pub(super) async fn join(self) {
        for (_, r) in self.running {
            let _ = r.task.await;
        }
    }
}
