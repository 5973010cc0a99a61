//! Bulk actions through the API: a job over a run query previewed, started,
//! listed, paused, resumed and cancelled, each a tenant's like its runs (see
//! `crate::bulk` for the runner that carries jobs out).

use std::collections::BTreeMap;

use super::{ApiResult, Caller, Service, rfc3339};
use crate::api::ApiError;
use crate::api::model::*;
use crate::bulk::Walk;
use crate::bulk::store::{JobRow, Jobs};
use crate::history::RunQuery;

/// The most runs a preview counts; past it, it says "at least".
pub const PREVIEW_COUNT_CAP: u32 = 100_000;
/// The runs a preview shows.
const PREVIEW_FIRST: u32 = 10;
/// Runs a job acts on per second unless asked otherwise.
pub const DEFAULT_RATE: u32 = 1_000;
const MAX_RATE: u32 = 100_000;
/// The longest reason kept with a job.
const MAX_REASON: usize = 512;

/// What a caller may do to a job in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkChange {
    Pause,
    Resume,
    Cancel,
}

impl Service {
    /// The time by the server's clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> u64 {
        self.now()
    }

    /// The history's bulk jobs.
    pub fn jobs(&self) -> Jobs {
        Jobs(self.inner.history.store().clone())
    }

    /// How many runs `req` would act on and the first of them, from the
    /// history as it holds every run committed before this call.
    pub async fn bulk_preview(&self, caller: &Caller, req: &BulkRequest) -> ApiResult<BulkPreview> {
        let (_, walk) = self.bulk_query(caller, &req.query).await?;
        self.wait_for_history().await?;
        let runs = self
            .jobs()
            .count(&walk, PREVIEW_COUNT_CAP + 1)
            .await
            .map_err(ApiError::internal)?;
        let first = match walk {
            Walk::Runs(q) => {
                self.runs_as_held(
                    caller,
                    RunQuery {
                        limit: PREVIEW_FIRST,
                        ..q
                    },
                )
                .await?
                .items
            }
            Walk::Population(mut q) => {
                q.limit = PREVIEW_FIRST;
                self.population(caller, q)
                    .await?
                    .items
                    .into_iter()
                    .map(|m| RunSummary {
                        id: m.run,
                        tenant: m.tenant,
                        flow: m.flow,
                        version: m.version,
                        status: m.status,
                        created_at: m.created_at,
                        updated_at: m.updated_at,
                        error_code: m.error_code,
                        failed_step: None,
                        parent: None,
                        key: Some(m.key),
                    })
                    .collect()
            }
        };
        Ok(BulkPreview {
            action: req.action,
            runs: runs.min(u64::from(PREVIEW_COUNT_CAP)),
            more: runs > u64::from(PREVIEW_COUNT_CAP),
            first,
        })
    }

    /// Starts a job: its selection is the runs its query selects that were
    /// created up to now; runs started later are not touched.
    pub async fn start_bulk(&self, caller: &Caller, req: BulkRequest) -> ApiResult<BulkJobView> {
        let (selector, _) = self.bulk_query(caller, &req.query).await?;
        let rate = req.rate.unwrap_or(DEFAULT_RATE);
        if !(1..=MAX_RATE).contains(&rate) {
            return Err(ApiError::bad_request(
                "invalid_rate",
                format!("`rate` is runs per second, from 1 to {MAX_RATE}: {rate} is not"),
            ));
        }
        if req.reason.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
            return Err(ApiError::bad_request(
                "invalid_reason",
                format!("the reason is longer than {MAX_REASON} bytes: shorten it"),
            ));
        }
        let tenant = selector.tenant().unwrap_or_default().to_string();
        // Every run committed before this call is in the history before the
        // job's selection is frozen.
        self.wait_for_history().await?;
        let now = self.now();
        let job = JobRow {
            id: format!("b-{}", uuid::Uuid::now_v7().simple()),
            tenant,
            action: req.action.as_str().into(),
            selector: serde_json::to_string(&selector).map_err(ApiError::internal)?,
            reason: req.reason.filter(|r| !r.is_empty()),
            rate,
            created_by: caller.name.clone(),
            created_at: now,
            frozen_before: now + 1,
            state: "running".into(),
            updated_at: now,
            ..JobRow::default()
        };
        self.jobs().insert(&job).await.map_err(ApiError::internal)?;
        tracing::info!(job = %job.id, tenant = %job.tenant, action = %job.action, by = %caller.name, "bulk job started");
        job_view(job)
    }

    pub async fn bulk_job(&self, caller: &Caller, id: &str) -> ApiResult<BulkJobView> {
        job_view(self.visible_job(caller, id).await?)
    }

    /// Jobs the caller may see, newest first, a page at a time.
    pub async fn bulk_jobs(&self, caller: &Caller, f: &BulkFilter) -> ApiResult<Page<BulkJobView>> {
        let tenant = caller.scope(f.tenant.as_deref())?;
        let after = f
            .cursor
            .as_deref()
            .map(Jobs::decode_cursor)
            .transpose()
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_cursor",
                    "the cursor is not one this server gave out: start again without it",
                )
            })?;
        let limit = f.limit.unwrap_or(20).clamp(1, 100);
        let mut rows = self
            .jobs()
            .list(tenant, after, limit + 1)
            .await
            .map_err(ApiError::internal)?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(Jobs::cursor_of)
        } else {
            None
        };
        Ok(Page {
            items: rows.into_iter().map(job_view).collect::<ApiResult<_>>()?,
            next,
        })
    }

    /// Pauses, resumes or cancels job `id`. A runner acting on a page when
    /// the job is paused or cancelled finishes that page (at most a page of
    /// runs, a tenth of a second at the default rate) and takes no other.
    pub async fn change_bulk(
        &self,
        caller: &Caller,
        id: &str,
        change: BulkChange,
    ) -> ApiResult<BulkJobView> {
        let job = self.visible_job(caller, id).await?;
        let (from, to): (&[&str], &str) = match change {
            BulkChange::Pause => (&["running"], "paused"),
            BulkChange::Resume => (&["paused"], "running"),
            BulkChange::Cancel => (&["running", "paused"], "cancelled"),
        };
        let changed = self
            .jobs()
            .set_state(&job.id, from, to, self.now())
            .await
            .map_err(ApiError::internal)?;
        let job = self.visible_job(caller, id).await?;
        if !changed && job.state != to {
            return Err(ApiError::new(
                409,
                "bulk_job_state",
                format!(
                    "bulk job {id} is {}: only a {} job can be made {to}",
                    job.state,
                    from.join(" or ")
                ),
            ));
        }
        tracing::info!(job = %job.id, state = %job.state, by = %caller.name, "bulk job changed");
        job_view(job)
    }

    /// The job `id` if the caller may see it; another tenant's is absent.
    async fn visible_job(&self, caller: &Caller, id: &str) -> ApiResult<JobRow> {
        match self.jobs().get(id).await.map_err(ApiError::internal)? {
            Some(job) if caller.may_see(&job.tenant) => Ok(job),
            _ => Err(ApiError::not_found("bulk job", id)),
        }
    }

    /// The selector with its tenant the caller's (checked), and what a job
    /// of it walks.
    async fn bulk_query(
        &self,
        caller: &Caller,
        selector: &BulkSelector,
    ) -> ApiResult<(BulkSelector, Walk)> {
        let tenant = caller.tenant(selector.tenant())?.to_string();
        self.tenant_exists(&tenant).await?;
        let selector = selector.in_tenant(&tenant);
        let walk = walk_of(&selector)?;
        Ok((selector, walk))
    }
}

/// The history query of a selector (its tenant as stored with the job).
pub fn walk_of(selector: &BulkSelector) -> ApiResult<Walk> {
    match selector {
        BulkSelector::Runs(r) => crate::api::run_query(&RunFilter {
            tenant: r.tenant.clone(),
            flow: r.flow.clone(),
            version: r.version.clone(),
            status: r.status.clone(),
            step: r.step.clone(),
            error: r.error.clone(),
            key: r.key.clone(),
            since: r.since.clone(),
            until: r.until.clone(),
            ..RunFilter::default()
        })
        .map(Walk::Runs),
        BulkSelector::Population(p) => crate::api::population_query(&PopulationFilter {
            tenant: p.tenant.clone(),
            flow: Some(p.flow.clone()),
            status: p.status.clone(),
            version: p.version.clone(),
            failed_in_a_row: p.failed_in_a_row,
            ..PopulationFilter::default()
        })
        .map(Walk::Population),
    }
}

fn job_view(j: JobRow) -> ApiResult<BulkJobView> {
    let query: BulkSelector = serde_json::from_str(&j.selector).map_err(ApiError::internal)?;
    let action = BulkAction::parse(&j.action)
        .ok_or_else(|| ApiError::internal(format!("bulk job {} has action {}", j.id, j.action)))?;
    let skipped_by: BTreeMap<String, u64> =
        serde_json::from_str(&j.counts.skipped_by).map_err(ApiError::internal)?;
    Ok(BulkJobView {
        id: j.id,
        tenant: j.tenant,
        action,
        query,
        reason: j.reason,
        rate: j.rate,
        created_by: j.created_by,
        created_at: rfc3339(j.created_at),
        state: j.state,
        selected: j.counts.selected,
        acted: j.counts.acted,
        skipped: j.counts.skipped,
        skipped_by,
        errors: j.counts.errors,
        last_error: j.last_error,
        cursor: j.cursor,
        updated_at: rfc3339(j.updated_at),
        finished_at: j.finished_at.map(rfc3339),
    })
}
