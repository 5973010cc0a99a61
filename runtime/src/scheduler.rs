//! The scheduler: cron schedules of deployed flows start runs.
//!
//! Schedules are rows with a `next_due` time and a partition; one loader per
//! partition claims its due rows (a claim that outlives a crash expires),
//! decides what to start with the pure policy code of `eflow_core::schedule`,
//! starts the runs (their ids are derived from the schedule and the fire
//! time, so a crash between starting and recording cannot start one twice)
//! and records the next due time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eflow_core::schedule::{Compiled, Start, Tick};
use eflow_ir as ir;
use serde_json::Map;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::engine::{Engine, Finished};
use crate::quota::{Asker, Ledger, Refusal};
use crate::store::{RunMeta, ScheduleRow, ScheduleUpdate, TenantRow, shard_of};

const CLAIM_MS: u64 = 60_000;
/// A loader looks for new due schedules at least this often…
const IDLE_MS: u64 = 1_000;
/// …and at most this often when schedules are due back to back.
const MIN_IDLE_MS: u64 = 5;
/// Schedules claimed, planned, started and recorded together.
const CLAIM_BATCH: u32 = 1_000;

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
    lateness: Lateness,
}

/// A start a plan made: the position of its schedule in the claimed batch,
/// the schedule's input (shared by its starts) and the start.
type PlannedStart = (usize, Arc<Map<String, serde_json::Value>>, Start);

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

/// Why a deployed flow's schedules could not be worked out: the schedule
/// itself (the client's to fix), or the store (try again).
#[derive(Debug)]
pub enum RowsError {
    Invalid(String),
    Store(crate::store::Error),
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
                lateness: Lateness::default(),
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
    ) -> Result<Vec<ScheduleRow>, RowsError> {
        let db = self.inner.engine.store();
        let mut rows = Vec::new();
        for (i, s) in flow.schedules.iter().enumerate() {
            let compiled = Compiled::new(s).map_err(RowsError::Invalid)?;
            let id = format!("{tenant}.{}.{i}", flow.name);
            let existing = db.schedule(&id).await.map_err(RowsError::Store)?;
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
                spec: serde_json::to_vec(s).map_err(|e| RowsError::Invalid(e.to_string()))?,
                paused: existing.as_ref().is_some_and(|e| e.paused),
                next_due: compiled.next_due(&id, from),
                handled_through: Some(from),
                last_start: existing.as_ref().and_then(|e| e.last_start),
                buffered: existing.as_ref().and_then(|e| e.buffered),
                partition: shard_of(&id, self.inner.partitions),
                declared: true,
                key: None,
                version: None,
                created_at: None,
            });
        }
        Ok(rows)
    }

    /// A new schedule made through the API, of `flow` in `bundle`, due
    /// from `now` on: not paused, with no key and following the head (set
    /// those after).
    pub fn made_row(
        &self,
        id: String,
        tenant: &str,
        flow: &str,
        bundle: String,
        spec: &ir::Schedule,
        now: u64,
    ) -> Result<ScheduleRow, String> {
        self.api_row(ScheduleRow {
            id,
            tenant: tenant.to_string(),
            flow: flow.to_string(),
            bundle,
            position: 0,
            spec: serde_json::to_vec(spec).map_err(|e| e.to_string())?,
            paused: false,
            handled_through: Some(now),
            last_start: None,
            next_due: None,
            buffered: None,
            partition: 0,
            declared: false,
            key: None,
            version: None,
            created_at: Some(now),
        })
    }

    /// `row`, a schedule made through the API, with its partition and when
    /// it is next due after the fire times it has handled.
    pub fn api_row(&self, mut row: ScheduleRow) -> Result<ScheduleRow, String> {
        let (compiled, _) = spec(&row)?;
        row.partition = shard_of(&row.id, self.inner.partitions);
        row.next_due = compiled.next_due(&row.id, row.handled_through.unwrap_or(0));
        Ok(row)
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
            key: s.key.clone(),
            created_at: self.inner.clock.now_ms(),
        };
        let applied = engine
            .create(
                meta,
                s.flow.clone(),
                input.clone(),
                Default::default(),
                false,
            )
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

    /// One partition's loader: a pass per batch of due schedules, back to
    /// back while full batches come; then asleep until the partition's next
    /// due time (at most [`IDLE_MS`], so that schedules made meanwhile are seen).
    async fn load(&self, partition: u32, shutdown: CancellationToken) {
        loop {
            let claimed = match self.tick(partition).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(partition, error = %e, "scheduler pass failed");
                    0
                }
            };
            if claimed >= CLAIM_BATCH as usize && !shutdown.is_cancelled() {
                continue;
            }
            let now = self.inner.clock.now_ms();
            let next = self
                .inner
                .engine
                .store()
                .next_schedule_due(partition, now)
                .await
                .ok()
                .flatten()
                .unwrap_or(u64::MAX);
            let wake = next.clamp(now + MIN_IDLE_MS, now + IDLE_MS);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.inner.clock.sleep_until(wake) => {}
            }
        }
    }

    /// Claims a batch of due schedules of `partition`, plans each, starts
    /// every run the plans make at once (the engine commits them together)
    /// and records the schedules in one transaction. Returns how many it claimed.
    async fn tick(&self, partition: u32) -> Result<usize, String> {
        let engine = &self.inner.engine;
        let db = engine.store();
        let now = self.inner.clock.now_ms();
        let due = db
            .claim_schedules(partition, now, now + CLAIM_MS, CLAIM_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if due.is_empty() {
            return Ok(0);
        }

        let ids: Vec<&str> = due.iter().map(|s| s.id.as_str()).collect();
        let mut running: HashMap<String, Vec<String>> = HashMap::new();
        for (schedule, run) in db
            .active_runs_of_schedules(&ids)
            .await
            .map_err(|e| e.to_string())?
        {
            running.entry(schedule).or_default().push(run);
        }
        let mut updates = Vec::with_capacity(due.len());
        let mut starts = Vec::new();
        for (i, s) in due.iter().enumerate() {
            let (compiled, input) = match spec(s) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(schedule = %s.id, error = %e, "unusable schedule");
                    continue;
                }
            };
            let runs = running.get(&s.id).map_or(&[][..], Vec::as_slice);
            let plan = compiled.plan(
                &s.id,
                &Tick {
                    now_ms: now,
                    processed_through_ms: s.handled_through.unwrap_or(now),
                    running: runs.len() as u32,
                    buffered: s.buffered,
                },
            );
            if plan.cancel_running {
                for r in runs {
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
            for k in &plan.skipped {
                tracing::info!(
                    schedule = %s.id,
                    first = %eflow_core::time::format_rfc3339(k.first_ms),
                    last = %eflow_core::time::format_rfc3339(k.last_ms),
                    reason = ?k.reason,
                    "fire times skipped"
                );
            }
            let input = Arc::new(input);
            for start in plan.starts {
                starts.push((i, input.clone(), start));
            }
            updates.push(ScheduleUpdate {
                id: s.id.clone(),
                handled_through: Some(plan.processed_through_ms),
                last_start: None,
                next_due: plan.next_due_ms,
                buffered: plan.buffered,
            });
        }
        let started = self.start_batch(&due, starts, now).await?;
        for u in &mut updates {
            u.last_start = started.get(&u.id).copied();
        }
        db.update_schedules(&updates)
            .await
            .map_err(|e| e.to_string())?;
        Ok(due.len())
    }

    /// Starts the runs of many schedules' plans together: each start is
    /// admitted by its tenant's quota, the runs are handed to the engine all
    /// at once (its workers commit many in one transaction) and awaited.
    /// Returns the newest fire time started per schedule.
    async fn start_batch(
        &self,
        due: &[ScheduleRow],
        starts: Vec<PlannedStart>,
        now: u64,
    ) -> Result<HashMap<String, u64>, String> {
        let engine = &self.inner.engine;
        let db = engine.store();
        let ledger = &self.inner.ledger;
        let mut started = HashMap::new();
        if starts.is_empty() {
            return Ok(started);
        }
        // Run ids are derived from the schedule and the fire time: a run
        // that exists was started before a crash (or by a backfill) and is
        // not handed to the engine again; the others are `fresh`, which
        // spares the engine a read each.
        let ids: Vec<&str> = starts.iter().map(|(_, _, s)| s.run_id.as_str()).collect();
        let existing: HashSet<String> = db
            .existing_runs(&ids)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        let mut tenants: HashMap<&str, Option<TenantRow>> = HashMap::new();
        let mut creating = tokio::task::JoinSet::new();
        for (i, input, start) in starts {
            let s = &due[i];
            if existing.contains(&start.run_id) {
                let t = started.entry(s.id.clone()).or_insert(start.nominal_ms);
                *t = (*t).max(start.nominal_ms);
                continue;
            }
            let tenant = match tenants.get(s.tenant.as_str()) {
                Some(t) => t.clone(),
                None => {
                    let t = db.tenant(&s.tenant).await.map_err(|e| e.to_string())?;
                    tenants.insert(&s.tenant, t.clone());
                    t
                }
            };
            let Some(tenant) = tenant else {
                self.not_started(
                    &s.id,
                    &format!("tenant `{}` no longer exists", s.tenant),
                    now,
                );
                continue;
            };
            if let Err(r) = ledger.admit(&tenant, 1, Asker::Schedule, self.inner.clock.now_ms()) {
                self.not_started(&s.id, &r.to_string(), now);
                continue;
            }
            let meta = RunMeta {
                id: start.run_id.clone(),
                tenant: s.tenant.clone(),
                bundle: s.bundle.clone(),
                schedule: Some(s.id.clone()),
                parent: None,
                key: s.key.clone(),
                created_at: self.inner.clock.now_ms(),
            };
            creating.spawn(create(
                engine.clone(),
                meta,
                s.flow.clone(),
                input,
                true,
                i,
                start,
            ));
        }
        while let Some(done) = creating.join_next().await {
            let Ok(Created {
                i,
                start,
                meta,
                input,
                fresh,
                result,
            }) = done
            else {
                continue;
            };
            let s = &due[i];
            match result {
                Ok(applied) => {
                    if !applied.changed {
                        ledger.release(&s.tenant, 1);
                    }
                    let at = self.inner.clock.now_ms();
                    self.inner
                        .lateness
                        .record(at.saturating_sub(start.start_at_ms));
                    // One line per start would be thousands a second at
                    // scale: the minute's summary counts them.
                    engine
                        .stats()
                        .scheduled_starts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(
                        schedule = %s.id,
                        run = %start.run_id,
                        fire_time = %eflow_core::time::format_rfc3339(start.nominal_ms),
                        "scheduled run started"
                    );
                    let t = started.entry(s.id.clone()).or_insert(start.nominal_ms);
                    *t = (*t).max(start.nominal_ms);
                }
                // A fresh start's commit fails whole if a backfill made the
                // same run meanwhile (the run's first event is taken): once
                // more, not fresh, and the engine finds the run.
                Err(_) if fresh => {
                    creating.spawn(create(
                        engine.clone(),
                        meta,
                        s.flow.clone(),
                        input,
                        false,
                        i,
                        start,
                    ));
                }
                // Started, finished and swept before: started once already.
                Err(crate::engine::Error::Swept(_)) => ledger.release(&s.tenant, 1),
                Err(e) => {
                    ledger.release(&s.tenant, 1);
                    self.not_started(&s.id, &e.to_string(), now);
                }
            }
        }
        Ok(started)
    }

    /// How late scheduled runs were committed since the server started:
    /// from when each was due (its fire time plus jitter) to its commit.
    pub fn lateness(&self) -> &Lateness {
        &self.inner.lateness
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

/// A scheduled run handed to the engine, and what came of it.
struct Created {
    i: usize,
    start: Start,
    meta: RunMeta,
    input: Arc<Map<String, serde_json::Value>>,
    fresh: bool,
    result: Result<crate::engine::Applied, crate::engine::Error>,
}

/// Creates the run of `start` (of the schedule at position `i` of a batch).
async fn create(
    engine: Engine,
    meta: RunMeta,
    flow: String,
    input: Arc<Map<String, serde_json::Value>>,
    fresh: bool,
    i: usize,
    start: Start,
) -> Created {
    let result = engine
        .create(
            meta.clone(),
            flow,
            (*input).clone(),
            Default::default(),
            fresh,
        )
        .await;
    Created {
        i,
        start,
        meta,
        input,
        fresh,
        result,
    }
}

/// Lateness of scheduled starts in whole milliseconds, counted in buckets of
/// 1 ms up to a minute (later ones in the last): percentiles without keeping
/// one value per start.
pub struct Lateness {
    buckets: Box<[AtomicU64]>,
}

const LATENESS_BUCKETS: usize = 60_001;

impl Default for Lateness {
    fn default() -> Self {
        Self {
            buckets: (0..LATENESS_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Lateness {
    fn record(&self, ms: u64) {
        let i = (ms as usize).min(LATENESS_BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, to subtract from a later [`Lateness::snapshot`].
    pub fn snapshot(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// The `p` percentile (0–1) in ms of the starts since `before` (a
    /// snapshot), and how many there were; `None` if there were none.
    pub fn percentile_since(&self, before: &[u64], p: f64) -> Option<(u64, u64)> {
        let now = self.snapshot();
        let counts: Vec<u64> = now
            .iter()
            .zip(before.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * p).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (ms, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some((ms as u64, total));
            }
        }
        None
    }
}
