//! The scheduler: cron schedules of deployed flows start runs.
//!
//! Schedules are rows with a `next_due` time and a partition; one loader per
//! partition claims its due rows (a claim that outlives a crash expires),
//! decides what to start with the pure policy code of `eflow_core::schedule`,
//! starts the runs (their ids are derived from the schedule and the fire
//! time, so a crash between starting and recording cannot start one twice)
//! and records the next due time.

use std::sync::Arc;

use eflow_core::schedule::{Compiled, Start, Tick};
use eflow_ir as ir;
use serde_json::Map;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::engine::{Engine, Finished};
use crate::quota::{Asker, Ledger, Refusal};
use crate::store::{RunMeta, ScheduleRow, TenantRow, shard_of};

const CLAIM_MS: u64 = 60_000;
const IDLE_MS: u64 = 1_000;

#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    clock: SharedClock,
    partitions: u32,
    /// Scheduled runs count among their tenant's active runs.
    ledger: Arc<Ledger>,
    /// Per schedule: when a start that failed was last logged, and the
    /// failures since, so that a schedule firing every second while its
    /// tenant is at its quota logs once a minute, not every second.
    failures: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
}

/// At most one warning a minute about one schedule's failed starts.
const WARN_EVERY_MS: u64 = 60_000;

/// Why a backfill started nothing.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Quota(Refusal),
    /// The store or the engine failed; the places taken are given back.
    #[error("{0}")]
    Failed(String),
}

impl Scheduler {
    pub fn new(engine: Engine, clock: SharedClock, partitions: u32, ledger: Arc<Ledger>) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                clock,
                partitions: partitions.max(1),
                ledger,
                failures: Default::default(),
            }),
        }
    }

    /// A flow was deployed: create or move its schedules. Returns how many it has.
    /// The schedule rows of a flow being deployed in `bundle`: a new schedule
    /// starts from now, a redeployed one keeps what it handled. Reads only;
    /// the deploy writes them with the bundle, in one transaction.
    pub async fn rows_for(
        &self,
        tenant: &str,
        flow: &ir::Flow,
        bundle: &str,
        now: u64,
    ) -> Result<Vec<ScheduleRow>, String> {
        let db = self.inner.engine.store();
        let mut rows = Vec::new();
        for (i, s) in flow.schedules.iter().enumerate() {
            let compiled = Compiled::new(s)?;
            let id = format!("{tenant}.{}.{i}", flow.name);
            let existing = db.schedule(&id).await.map_err(|e| e.to_string())?;
            let from = existing
                .as_ref()
                .and_then(|e| e.handled_through)
                .unwrap_or(now);
            rows.push(ScheduleRow {
                id: id.clone(),
                tenant: tenant.into(),
                flow: flow.name.clone(),
                bundle: bundle.into(),
                position: i as u32,
                spec: serde_json::to_vec(s).map_err(|e| e.to_string())?,
                paused: existing.as_ref().is_some_and(|e| e.paused),
                next_due: compiled.next_due(&id, from),
                handled_through: Some(from),
                last_start: existing.as_ref().and_then(|e| e.last_start),
                buffered: existing.as_ref().and_then(|e| e.buffered),
                partition: shard_of(&id, self.inner.partitions),
            });
        }
        Ok(rows)
    }

    pub async fn set_paused(&self, s: &ScheduleRow, paused: bool, now: u64) -> Result<(), String> {
        let engine = &self.inner.engine;
        // Resuming does not start what was missed while paused: the next fire is after now.
        let next = if paused {
            None
        } else {
            spec(s)?.0.next_due(&s.id, now)
        };
        engine
            .store()
            .set_schedule_paused(&s.id, paused, now, next)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Starts one run per fire time in [from, to]; returns their ids. A
    /// request by a client: it pays one token of the start rate, and is
    /// refused whole when its runs would pass the tenant's active runs.
    pub async fn backfill(
        &self,
        s: &ScheduleRow,
        tenant: &TenantRow,
        from: u64,
        to: u64,
    ) -> Result<Vec<String>, BackfillError> {
        let (compiled, input) = spec(s).map_err(BackfillError::Invalid)?;
        let starts = compiled
            .backfill(&s.id, from, to)
            .map_err(BackfillError::Invalid)?;
        // Runs of fire times backfilled (or fired) before exist already and
        // hold their own places: only the new ones need room.
        let ids: Vec<&str> = starts.iter().map(|s| s.run_id.as_str()).collect();
        let existing = self
            .inner
            .engine
            .store()
            .load_runs(&ids)
            .await
            .map_err(|e| BackfillError::Failed(e.to_string()))?
            .len();
        let ledger = &self.inner.ledger;
        let mut pending = (starts.len() - existing) as i64;
        ledger
            .admit(tenant, pending, Asker::Request, self.inner.clock.now_ms())
            .map_err(BackfillError::Quota)?;
        let mut ids = Vec::new();
        for start in &starts {
            match self.create(s, &input, start).await {
                Ok((id, new)) => {
                    if new {
                        pending -= 1;
                    }
                    ids.push(id);
                }
                Err(e) => {
                    ledger.release(&s.tenant, pending);
                    return Err(BackfillError::Failed(e));
                }
            }
        }
        // Places taken for runs that another start created in the meantime.
        ledger.release(&s.tenant, pending.max(0));
        Ok(ids)
    }

    /// Starts a scheduled run if the tenant's active runs leave room for it.
    async fn start(
        &self,
        s: &ScheduleRow,
        input: &Map<String, serde_json::Value>,
        start: &Start,
    ) -> Result<String, String> {
        let db = self.inner.engine.store();
        let tenant = db
            .tenant(&s.tenant)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("tenant `{}` no longer exists", s.tenant))?;
        let ledger = &self.inner.ledger;
        ledger
            .admit(&tenant, 1, Asker::Schedule, self.inner.clock.now_ms())
            .map_err(|r| r.to_string())?;
        match self.create(s, input, start).await {
            Ok((id, new)) => {
                if !new {
                    ledger.release(&s.tenant, 1);
                }
                Ok(id)
            }
            Err(e) => {
                ledger.release(&s.tenant, 1);
                Err(e)
            }
        }
    }

    /// Creates the run of `start`; false when it existed already (its id is
    /// derived from the schedule and the fire time).
    async fn create(
        &self,
        s: &ScheduleRow,
        input: &Map<String, serde_json::Value>,
        start: &Start,
    ) -> Result<(String, bool), String> {
        let engine = &self.inner.engine;
        let id = start.run_id.clone();
        let meta = RunMeta {
            id: id.clone(),
            tenant: s.tenant.clone(),
            bundle: s.bundle.clone(),
            schedule: Some(s.id.clone()),
            parent: None,
            created_at: self.inner.clock.now_ms(),
        };
        let applied = engine
            .create(meta, s.flow.clone(), input.clone(), false)
            .await
            .map_err(|e| e.to_string())?;
        Ok((id, applied.changed))
    }

    /// The loaders, one per partition, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tasks = Vec::new();
        for p in 0..self.inner.partitions {
            let me = self.clone();
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move { me.load(p, stop).await }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn load(&self, partition: u32, shutdown: CancellationToken) {
        loop {
            let now = self.inner.clock.now_ms();
            if let Err(e) = self.tick(partition).await {
                tracing::warn!(partition, error = %e, "scheduler pass failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                // Nothing falls due before the clock moves on.
                () = self.inner.clock.sleep_until(now + IDLE_MS) => {}
            }
        }
    }

    async fn tick(&self, partition: u32) -> Result<(), String> {
        let engine = &self.inner.engine;
        let db = engine.store();
        let now = self.inner.clock.now_ms();
        let due = db
            .claim_schedules(partition, now, now + CLAIM_MS, 100)
            .await
            .map_err(|e| e.to_string())?;
        for s in due {
            let (compiled, input) = match spec(&s) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(schedule = %s.id, error = %e, "unusable schedule");
                    continue;
                }
            };
            let running = db
                .active_runs_of_schedule(&s.id)
                .await
                .map_err(|e| e.to_string())?;
            let plan = compiled.plan(
                &s.id,
                &Tick {
                    now_ms: now,
                    processed_through_ms: s.handled_through.unwrap_or(now),
                    running: running.len() as u32,
                    buffered: s.buffered,
                },
            );
            if plan.cancel_running {
                for r in &running {
                    let _ = engine
                        .deliver(
                            r,
                            eflow_core::Event::new(
                                "cancel:schedule",
                                eflow_core::EventKind::CancelRequested {
                                    reason: "the schedule's overlap policy cancels the running run"
                                        .into(),
                                },
                            ),
                        )
                        .await;
                }
            }
            let mut last_start = None;
            for start in &plan.starts {
                match self.start(&s, &input, start).await {
                    Ok(run) => {
                        // One line per start would be thousands a second at
                        // scale: the minute's summary counts them.
                        self.inner
                            .engine
                            .stats()
                            .scheduled_starts
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(
                            schedule = %s.id,
                            %run,
                            fire_time = %eflow_core::time::format_rfc3339(start.nominal_ms),
                            "scheduled run started"
                        );
                        last_start = last_start.max(Some(start.nominal_ms));
                    }
                    Err(e) => self.not_started(&s.id, &e, now),
                }
            }
            for k in &plan.skipped {
                tracing::info!(
                    schedule = %s.id,
                    first = %eflow_core::time::format_rfc3339(k.first_ms),
                    last = %eflow_core::time::format_rfc3339(k.last_ms),
                    reason = ?k.reason,
                    "fire times skipped"
                );
            }
            db.update_schedule(
                &s.id,
                Some(plan.processed_through_ms),
                last_start,
                plan.next_due_ms,
                plan.buffered,
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn not_started(&self, schedule: &str, error: &str, now: u64) {
        let mut failures = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (logged_at, since) = failures.entry(schedule.to_string()).or_insert((0, 0));
        *since += 1;
        if now.saturating_sub(*logged_at) >= WARN_EVERY_MS {
            tracing::warn!(%schedule, %error, failed_starts = *since, "scheduled run not started");
            *logged_at = now;
            *since = 0;
        }
    }

    /// A run ended: a schedule holding a buffered start may start it now.
    pub async fn run_finished(&self, f: &Finished) {
        let Some(schedule) = &f.schedule else { return };
        let engine = &self.inner.engine;
        let db = engine.store();
        let Ok(Some(s)) = db.schedule(schedule).await else {
            return;
        };
        let Ok((compiled, input)) = spec(&s) else {
            return;
        };
        let Ok(running) = db.active_runs_of_schedule(schedule).await else {
            return;
        };
        let Some(start) = compiled.on_run_finished(&s.id, running.len() as u32, s.buffered) else {
            return;
        };
        if let Err(e) = self.start(&s, &input, &start).await {
            tracing::warn!(schedule = %s.id, error = %e, "buffered run not started");
            return;
        }
        let _ = db
            .update_schedule(
                &s.id,
                s.handled_through,
                Some(start.nominal_ms),
                s.next_due,
                None,
            )
            .await;
    }
}

/// The schedule's policy and the input of its runs.
fn spec(s: &ScheduleRow) -> Result<(Compiled, Map<String, serde_json::Value>), String> {
    let ir: ir::Schedule = serde_json::from_slice(&s.spec).map_err(|e| e.to_string())?;
    Ok((Compiled::new(&ir)?, ir.input.into_iter().collect()))
}
