//! Bulk actions: durable background jobs that cancel or retry every run a
//! query selects (`POST /v1/bulk`; `docs/design/0007-bulk-actions.md`).
//!
//! A job lives in the history's store (`store.rs`), beside the runs its
//! query reads. The [`Runner`] (one active among the processes with the API
//! role, by a lease like the history's consumer) walks each running job's
//! query a page at a time after the job's cursor, acts on each run through
//! the same `Service` operations as `POST /v1/runs/{id}/cancel|retry`: it
//! reads a page, holds its run ids in the job's row, acts on each run, then
//! stores the cursor after the page and the counts, and lets the page go,
//! in one transaction. A page a crash left held is done again from its ids
//! (acting changed what the query selects), each run's event log read first
//! for this job's own action (its reason names the job), so no run is
//! acted on twice, none is missed, and the counts are exact.

pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;
use crate::api::model::{BulkAction, BulkSelector};
use crate::history::{HistoryStore, PopulationQuery, RunQuery};
use crate::service::{Caller, Scope, Service};
use store::{JobRow, Jobs, Progress};

/// The lease of the one active runner, beside the history consumer's.
pub const BULK_LEASE: u32 = u32::MAX - 1;

/// How a runner works.
#[derive(Debug, Clone)]
pub struct Options {
    /// The most runs of one job read and acted on between two stores of
    /// its progress (a redo after a crash is at most this many).
    pub page: u32,
    /// Runs of one page acted on at once.
    pub concurrency: usize,
    /// How often an idle runner looks for jobs.
    pub idle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            page: 500,
            concurrency: 64,
            idle: Duration::from_millis(500),
        }
    }
}

/// What became of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Acted,
    /// Left alone, with the code of why (`run_finished`, `not_failed`, …).
    Skipped(String),
    /// Could not be acted on; counted as an error.
    Failed(String),
    /// Could not be acted on now (quota, shutdown, store): the page is
    /// done again later.
    Later(String),
}

/// A job as this runner holds it.
#[derive(Debug)]
struct Held {
    /// This runner took the job (its `runner` column names it).
    taken: bool,
    /// Not before this (the job's rate, or a back-off).
    next_at: Instant,
    /// Pages given up in a row.
    failures: u32,
    /// Another runner took the job over: this one leaves it.
    lost: bool,
}

/// Pages given up in a row before a run that cannot be acted on now is
/// counted as an error and passed.
const MAX_FAILURES: u32 = 5;

/// Carries out the running bulk jobs until stopped.
pub struct Runner {
    options: Options,
    service: Service,
    jobs: Jobs,
    /// Who this runner is in the jobs' `runner` column: unique per life.
    me: String,
}

impl Runner {
    pub fn new(options: Options, service: Service, member: &str) -> Self {
        let jobs = service.jobs();
        Self {
            options,
            service,
            jobs,
            me: format!("{member}/{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Runs jobs until `stop`, a page of each due job in turn, so one big
    /// job does not hold the others back.
    pub async fn run(self, stop: CancellationToken) {
        let mut held: HashMap<String, Held> = HashMap::new();
        while !stop.is_cancelled() {
            let jobs = match self.jobs.running(64).await {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the bulk jobs; trying again");
                    Vec::new()
                }
            };
            held.retain(|id, _| jobs.iter().any(|j| &j.id == id));
            let now = Instant::now();
            let mut wake = now + self.options.idle;
            for job in &jobs {
                if stop.is_cancelled() {
                    break;
                }
                let h = held.entry(job.id.clone()).or_insert(Held {
                    taken: false,
                    next_at: now,
                    failures: 0,
                    lost: false,
                });
                if h.lost {
                    continue;
                }
                if h.next_at <= Instant::now() {
                    if !h.taken {
                        if let Err(e) = self.jobs.take(&job.id, &self.me).await {
                            tracing::warn!(job = %job.id, error = %e, "cannot take a bulk job; trying again");
                            continue;
                        }
                        h.taken = true;
                    }
                    self.page(job, h).await;
                }
                wake = wake.min(h.next_at);
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(wake.max(Instant::now() + Duration::from_millis(5))) => {}
            }
        }
    }

    /// Acts on the job's page in hand, or reads and holds its next page
    /// first; then stores the progress and lets the page go.
    async fn page(&self, job: &JobRow, h: &mut Held) {
        let started = Instant::now();
        let (action, walk) = match plan(job) {
            Ok(p) => p,
            Err(e) => {
                // A job this eflow cannot read: ended, saying why.
                let p = Progress {
                    cursor: job.cursor.clone(),
                    counts: job.counts.clone(),
                    last_error: Some(e),
                    done: true,
                };
                let _ = self.jobs.save(&job.id, &self.me, &p, self.now()).await;
                return;
            }
        };
        // A page held already was acted on in part, maybe (a crash, a page
        // given up): done again from its ids, each run's log read first.
        let (ids, next, redo) = match &job.page {
            Some(text) => match serde_json::from_str::<Vec<String>>(text) {
                Ok(ids) => (ids, job.page_next.clone(), true),
                Err(e) => {
                    tracing::error!(job = %job.id, error = %e, "a bulk job's page is unreadable");
                    h.next_at = Instant::now() + Duration::from_secs(10);
                    return;
                }
            },
            None => {
                let limit = self.options.page.min(job.rate).max(1);
                let (ids, next) = match walk.page(self.service.history().store(), limit).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(job = %job.id, error = %e, "cannot read a bulk job's runs; trying again");
                        h.next_at = Instant::now() + Duration::from_secs(1);
                        return;
                    }
                };
                // Held before any is acted on: acting changes what the
                // query selects (a retried run is no longer failed).
                if !ids.is_empty() && !self.hold(job, h, &ids, next.as_deref()).await {
                    return;
                }
                (ids, next, false)
            }
        };
        let caller = Caller {
            scope: Scope::Tenant(job.tenant.clone()),
            token: String::new(),
            name: job.created_by.clone(),
        };
        let reason = reason_of(job);
        // Boxed: the stream's futures borrow the page, which a spawned
        // task's `Send` check cannot see through otherwise.
        let acts: Vec<BoxFuture<'_, Outcome>> = ids
            .iter()
            .map(|run| {
                self.act(action, &caller, &job.id, &reason, run, redo)
                    .boxed()
            })
            .collect();
        let outcomes: Vec<Outcome> = futures_util::stream::iter(acts)
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        let later = outcomes.iter().find_map(|o| match o {
            Outcome::Later(m) => Some(m.clone()),
            _ => None,
        });
        if let Some(m) = &later
            && h.failures < MAX_FAILURES
        {
            // Nothing of this page is counted: it stays held, and is done
            // again once the back-off passed.
            h.failures += 1;
            h.next_at = Instant::now() + Duration::from_secs(u64::from(h.failures));
            tracing::info!(job = %job.id, reason = %m, "a bulk job's page is done again later");
            return;
        }
        let Some(counts) = counted(job, outcomes) else {
            h.next_at = Instant::now() + Duration::from_secs(10);
            return;
        };
        let done = next.is_none();
        let progress = Progress {
            cursor: next,
            last_error: counts.1,
            counts: counts.0,
            done,
        };
        match self
            .jobs
            .save(&job.id, &self.me, &progress, self.now())
            .await
        {
            Ok(true) => {
                h.failures = 0;
                let n = progress.counts.selected - job.counts.selected;
                let spacing = Duration::from_secs_f64(n as f64 / f64::from(job.rate.max(1)));
                h.next_at = started + spacing;
                if done {
                    tracing::info!(job = %job.id, acted = progress.counts.acted, skipped = progress.counts.skipped, errors = progress.counts.errors, "bulk job done");
                }
            }
            Ok(false) => {
                tracing::warn!(job = %job.id, "another runner took this bulk job over: leaving it");
                h.lost = true;
            }
            Err(e) => {
                // The page stays held: done again, its runs' own actions recognised.
                tracing::warn!(job = %job.id, error = %e, "cannot store a bulk job's progress; the page is done again");
                h.next_at = Instant::now() + Duration::from_secs(1);
            }
        }
    }

    /// Holds the page about to be acted on; whether it may go on.
    async fn hold(&self, job: &JobRow, h: &mut Held, ids: &[String], next: Option<&str>) -> bool {
        let text = match serde_json::to_string(ids) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "cannot write a bulk job's page");
                h.next_at = Instant::now() + Duration::from_secs(10);
                return false;
            }
        };
        match self.jobs.hold_page(&job.id, &self.me, &text, next).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(job = %job.id, "another runner took this bulk job over: leaving it");
                h.lost = true;
                false
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "cannot hold a bulk job's page; trying again");
                h.next_at = Instant::now() + Duration::from_secs(1);
                false
            }
        }
    }

    /// Acts on one run; on a page done again, first looks in its log for
    /// this job's own action.
    async fn act(
        &self,
        action: BulkAction,
        caller: &Caller,
        job: &str,
        reason: &str,
        run: &str,
        redo: bool,
    ) -> Outcome {
        if redo {
            match self.acted_before(caller, job, run).await {
                Ok(true) => return Outcome::Acted,
                Ok(false) => {}
                Err(e) if e.status == 404 => return Outcome::Skipped(e.code),
                Err(e) => return Outcome::Later(format!("{run}: {}", e.message)),
            }
        }
        let done = match action {
            BulkAction::Cancel => self
                .service
                .cancel_run(caller, run, Some(reason.to_string()))
                .await
                .map(drop),
            BulkAction::Retry => self
                .service
                .retry_run(caller, run, Some(reason.to_string()))
                .await
                .map(drop),
        };
        match done {
            Ok(()) => Outcome::Acted,
            Err(e) => outcome_of(run, e),
        }
    }

    /// Whether run `run`'s log holds an action of job `job`.
    async fn acted_before(&self, caller: &Caller, job: &str, run: &str) -> Result<bool, ApiError> {
        let mut after = None;
        loop {
            let events = self.service.run_events(caller, run, after, 1000).await?;
            if events.iter().any(|e| is_action_of(&e.event, job)) {
                return Ok(true);
            }
            match events.last() {
                Some(last) if events.len() == 1000 => after = Some(last.seq),
                _ => return Ok(false),
            }
        }
    }

    fn now(&self) -> u64 {
        self.service.now_ms()
    }
}

/// The job's counts with a page's outcomes added, and its last error;
/// `None` if its stored counts are unreadable (not this eflow's).
fn counted(job: &JobRow, outcomes: Vec<Outcome>) -> Option<(store::Counts, Option<String>)> {
    let mut counts = job.counts.clone();
    let mut skipped_by: BTreeMap<String, u64> = match serde_json::from_str(&counts.skipped_by) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(job = %job.id, error = %e, "a bulk job's counts are unreadable");
            return None;
        }
    };
    let mut last_error = job.last_error.clone();
    counts.selected += outcomes.len() as u64;
    for o in outcomes {
        match o {
            Outcome::Acted => counts.acted += 1,
            Outcome::Skipped(code) => {
                counts.skipped += 1;
                *skipped_by.entry(code).or_default() += 1;
            }
            Outcome::Failed(m) | Outcome::Later(m) => {
                counts.errors += 1;
                last_error = Some(m);
            }
        }
    }
    counts.skipped_by = match serde_json::to_string(&skipped_by) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(job = %job.id, error = %e, "cannot write a bulk job's counts");
            return None;
        }
    };
    Some((counts, last_error))
}

/// The action of a job and what it walks: its selector's query with the
/// selection frozen at the job's creation, continued after its cursor.
fn plan(job: &JobRow) -> Result<(BulkAction, Walk), String> {
    let action = BulkAction::parse(&job.action)
        .ok_or_else(|| format!("this eflow does not know the action `{}`", job.action))?;
    let selector: BulkSelector = serde_json::from_str(&job.selector)
        .map_err(|e| format!("this eflow cannot read the job's query: {e}"))?;
    let walk = crate::service::bulk::walk_of(&selector).map_err(|e| e.message)?;
    Ok((
        action,
        walk.frozen(&job.tenant, job.frozen_before, job.cursor.clone()),
    ))
}

/// What a job walks, a page at a time after a cursor: the runs of a run
/// query (newest first), or the latest run of each key of a population
/// query (in the population's order: by key, or by streak then key).
#[derive(Debug, Clone)]
pub enum Walk {
    Runs(RunQuery),
    Population(PopulationQuery),
}

impl Walk {
    /// In `tenant`, only what was created before `before` (ms), after `cursor`.
    fn frozen(self, tenant: &str, before: u64, cursor: Option<String>) -> Walk {
        let tenant = Some(tenant.to_string());
        match self {
            Walk::Runs(q) => Walk::Runs(RunQuery {
                tenant,
                until: Some(q.until.map_or(before, |u| u.min(before))),
                cursor,
                ..q
            }),
            Walk::Population(q) => Walk::Population(PopulationQuery {
                tenant,
                before: Some(before),
                cursor,
                ..q
            }),
        }
    }

    /// The next page's run ids (at most `limit`), and the cursor after it
    /// (`None`: the walk is over).
    async fn page(
        &self,
        store: &HistoryStore,
        limit: u32,
    ) -> Result<(Vec<String>, Option<String>), crate::history::store::Error> {
        Ok(match self {
            Walk::Runs(q) => {
                let page = store.runs(&RunQuery { limit, ..q.clone() }).await?;
                (page.items.into_iter().map(|r| r.id).collect(), page.next)
            }
            Walk::Population(q) => {
                let page = store
                    .population(&PopulationQuery { limit, ..q.clone() })
                    .await?;
                (page.items.into_iter().map(|m| m.run).collect(), page.next)
            }
        })
    }
}

/// What a run's cancel or retry event says of the job: `bulk ID`, then the
/// job's reason if it has one.
pub fn reason_of(job: &JobRow) -> String {
    match &job.reason {
        Some(r) => format!("{}: {r}", marker(&job.id)),
        None => marker(&job.id),
    }
}

fn marker(job: &str) -> String {
    format!("bulk {job}")
}

/// Whether `event` (as stored) is a cancel or retry that job `job` asked.
fn is_action_of(event: &serde_json::Value, job: &str) -> bool {
    let kind = event.get("type").and_then(|t| t.as_str());
    if !matches!(kind, Some("cancel_requested" | "retry_requested")) {
        return false;
    }
    let Some(reason) = event.get("reason").and_then(|r| r.as_str()) else {
        return false;
    };
    let m = marker(job);
    reason == m
        || reason
            .strip_prefix(&m)
            .is_some_and(|rest| rest.starts_with(':'))
}

/// How a refused action counts.
fn outcome_of(run: &str, e: ApiError) -> Outcome {
    match e.status {
        // Finished, not failed, not retryable, past its retry window, gone.
        404 | 409 | 410 => Outcome::Skipped(e.code),
        // The tenant's quota, a server shutting down, a store not answering.
        429 | 500 | 503 => Outcome::Later(format!("{run}: {}", e.message)),
        _ => Outcome::Failed(format!("{run}: {}: {}", e.code, e.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_this_jobs_own_action_is_recognised() {
        let job = "b-1";
        assert!(is_action_of(
            &json!({"type": "retry_requested", "reason": "bulk b-1"}),
            job
        ));
        assert!(is_action_of(
            &json!({"type": "cancel_requested", "reason": "bulk b-1: clean up"}),
            job
        ));
        // Another job whose id starts with this one's.
        assert!(!is_action_of(
            &json!({"type": "retry_requested", "reason": "bulk b-12"}),
            job
        ));
        assert!(!is_action_of(
            &json!({"type": "step_failed", "reason": "bulk b-1"}),
            job
        ));
        assert!(!is_action_of(
            &json!({"type": "retry_requested", "reason": "by hand"}),
            job
        ));
    }

    #[test]
    fn refusals_are_skips_and_outages_are_later() {
        let e = |status, code: &str| ApiError::new(status, code, "m");
        assert_eq!(
            outcome_of("r", e(409, "not_failed")),
            Outcome::Skipped("not_failed".into())
        );
        assert_eq!(
            outcome_of("r", e(410, "retry_window_passed")),
            Outcome::Skipped("retry_window_passed".into())
        );
        assert!(matches!(
            outcome_of("r", e(429, "quota_active_runs")),
            Outcome::Later(_)
        ));
        assert!(matches!(outcome_of("r", e(400, "x")), Outcome::Failed(_)));
    }
}
