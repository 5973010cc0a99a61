//! Schedules as data: schedules of deployed flows made, changed and deleted
//! through the API, each with its own cron, zone, policies, input and key,
//! beside the ones a flow's `schedule` statements declare; and the paged list
//! of both.
//!
//! A schedule is checked as the compiler checks a `schedule` statement (the
//! one check of `eflow_core::schedule::Compiled::new`) and its input as a
//! run's input is (`eflow_core::input::check_input`), so what is refused at
//! a fire is refused when the schedule is made.

use super::*;
use crate::api::model::{Backfill, ScheduleFilter, ScheduleRequest};
use crate::store::{ScheduleQuery, ScheduleRow};
use eflow_core::schedule::Calendar;

/// The most schedules one page of `GET /v1/schedules` holds.
pub const MAX_PAGE: u32 = 1000;

/// A fire time as a person reads it: on the wall clock of the schedule's
/// zone and in UTC, with the id of the run it starts (or started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireTime {
    pub utc: String,
    pub local: String,
    /// The run's id as the caller names it.
    pub run: String,
}

/// What a backfill of a range would do, before it is asked for.
#[derive(Debug, Clone)]
pub struct BackfillPreview {
    pub schedule: ScheduleView,
    /// Every fire time of the range, oldest first.
    pub fires: Vec<FireTime>,
    /// The fire times whose run exists already (fired or backfilled
    /// before): a backfill leaves those as they are.
    pub existing: Vec<bool>,
}

impl BackfillPreview {
    /// How many runs the backfill would start.
    pub fn new_runs(&self) -> usize {
        self.existing.iter().filter(|e| !**e).count()
    }
}

fn calendar_of(s: &ScheduleView) -> ApiResult<Calendar> {
    // The schedule was checked when it was made: a failure here is ours.
    Calendar::new(&s.cron, &s.timezone).map_err(ApiError::internal)
}

fn fire_time(caller: &Caller, c: &Calendar, schedule: &str, t: u64) -> FireTime {
    FireTime {
        utc: rfc3339(t),
        local: c.wall_clock(t),
        run: caller.shown_run(&eflow_core::schedule::run_id(schedule, t)),
    }
}

impl Service {
    /// One schedule the caller may see.
    pub async fn schedule(&self, caller: &Caller, id: &str) -> ApiResult<ScheduleView> {
        schedule_view(&self.own_schedule(caller, id).await?)
    }

    /// The next `count` fire times of `s` after now (nominal: before its
    /// jitter), as the scheduler computes them; a pure function of the
    /// schedule and the clock.
    pub fn next_fires(
        &self,
        caller: &Caller,
        s: &ScheduleView,
        count: usize,
    ) -> ApiResult<Vec<FireTime>> {
        let c = calendar_of(s)?;
        Ok(c.iter_after(self.now())
            .take(count)
            .map(|t| fire_time(caller, &c, &s.id, t))
            .collect())
    }

    /// For each schedule, the runs of its latest `count` fire times up to
    /// its last fire, newest first, as the history holds them (a fire time
    /// skipped by its overlap policy has no run). One lookup by id for all.
    pub async fn latest_schedule_runs(
        &self,
        caller: &Caller,
        schedules: &[ScheduleView],
        count: usize,
    ) -> ApiResult<Vec<Vec<RunSummary>>> {
        let mut wanted: Vec<Vec<String>> = Vec::with_capacity(schedules.len());
        for s in schedules {
            let ids = match &s.last_fire {
                Some(last) if caller.may_see(&s.tenant) => {
                    let last = parse_time(last)?;
                    calendar_of(s)?
                        .latest(last, count)
                        .into_iter()
                        .map(|t| eflow_core::schedule::run_id(&s.id, t))
                        .collect()
                }
                _ => Vec::new(),
            };
            wanted.push(ids);
        }
        let all: Vec<&str> = wanted.iter().flatten().map(String::as_str).collect();
        if all.is_empty() {
            return Ok(wanted.iter().map(|_| Vec::new()).collect());
        }
        self.wait_for_history().await?;
        let found: HashMap<String, crate::history::store::RunRecord> = self
            .inner
            .history
            .store()
            .runs_of(&all)
            .await
            .map_err(crate::history::Error::from)?
            .into_iter()
            .filter(|r| caller.may_see(&r.tenant))
            .map(|r| (r.id.clone(), r))
            .collect();
        Ok(wanted
            .iter()
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| found.get(id).cloned())
                    .map(|r| {
                        let mut r = run_summary(r);
                        r.id = caller.shown_run(&r.id);
                        r.parent = r.parent.map(|p| caller.shown_run(&p));
                        r
                    })
                    .collect()
            })
            .collect())
    }

    /// The fire times a backfill of `req`'s range would start runs for,
    /// found as [`Service::backfill`] finds them (the same limit on their
    /// number), and which of them have a run already; nothing is started.
    pub async fn backfill_preview(
        &self,
        caller: &Caller,
        id: &str,
        req: &Backfill,
    ) -> ApiResult<BackfillPreview> {
        let row = self.own_schedule(caller, id).await?;
        let schedule = schedule_view(&row)?;
        let from = parse_time(&req.from)?;
        let to = parse_time(&req.to)?;
        if to < from {
            return Err(ApiError::bad_request(
                "invalid_range",
                "`to` is before `from`: give the range oldest first",
            ));
        }
        let spec: eflow_ir::Schedule =
            serde_json::from_slice(&row.spec).map_err(ApiError::internal)?;
        let compiled = eflow_core::schedule::Compiled::new(&spec).map_err(ApiError::internal)?;
        let starts = compiled
            .backfill(&row.id, from, to)
            .map_err(|e| ApiError::bad_request("invalid_backfill", e))?;
        let ids: Vec<&str> = starts.iter().map(|s| s.run_id.as_str()).collect();
        let mut there: std::collections::HashSet<String> = self
            .db()
            .load_runs(&ids)
            .await?
            .into_iter()
            .map(|r| r.0.id)
            .collect();
        // Runs finished and swept from the engine's store are in the history.
        there.extend(
            self.inner
                .history
                .store()
                .runs_of(&ids)
                .await
                .map_err(crate::history::Error::from)?
                .into_iter()
                .map(|r| r.id),
        );
        let c = compiled.calendar();
        Ok(BackfillPreview {
            existing: starts.iter().map(|s| there.contains(&s.run_id)).collect(),
            fires: starts
                .iter()
                .map(|s| fire_time(caller, c, &row.id, s.nominal_ms))
                .collect(),
            schedule,
        })
    }

    /// A page of the schedules the caller may see, in id order.
    pub async fn schedule_page(
        &self,
        caller: &Caller,
        f: ScheduleFilter,
    ) -> ApiResult<Vec<ScheduleView>> {
        let tenant = caller.scope(f.tenant.as_deref())?.map(str::to_string);
        let rows = self
            .db()
            .schedule_page(&ScheduleQuery {
                tenant,
                key: f.key,
                flow: f.flow,
                after: f.cursor,
                limit: f.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE),
            })
            .await?;
        rows.iter().map(schedule_view).collect()
    }

    pub async fn create_schedule(
        &self,
        caller: &Caller,
        req: ScheduleRequest,
    ) -> ApiResult<ScheduleView> {
        let tenant = caller.tenant(req.tenant.as_deref())?.to_string();
        self.tenant_exists(&tenant).await?;
        let (Some(flow), Some(cron)) = (req.flow.clone(), req.cron.clone()) else {
            return Err(ApiError::bad_request(
                "invalid_schedule",
                "a schedule needs `flow` (a deployed flow) and `cron` (e.g. \"0 3 * * *\")",
            ));
        };
        if let Some(k) = &req.key {
            check_key(k)?;
        }
        let spec = eflow_ir::Schedule {
            cron,
            timezone: "UTC".into(),
            overlap: eflow_ir::Overlap::Skip,
            catchup: eflow_ir::Catchup::Once,
            catchup_window_ms: None,
            jitter_ms: None,
            input: Default::default(),
        };
        let spec = changed_spec(spec, &req)?;
        let version = req.version.clone().filter(|v| v != "head");
        let bundle = self
            .checked_target(&tenant, &flow, version.as_deref(), &spec)
            .await?;
        let now = self.now();
        let id = format!("s-{}", uuid::Uuid::now_v7().simple());
        let row = ScheduleRow {
            paused: req.paused.unwrap_or(false),
            key: req.key.filter(|k| !k.is_empty()),
            version,
            ..self
                .inner
                .scheduler
                .made_row(id, &tenant, &flow, bundle, &spec, now)
                .map_err(|e| ApiError::bad_request("invalid_schedule", e))?
        };
        let limit = self.inner.ledger.defaults().max_schedules;
        if !self.db().insert_schedule(&row, limit).await? {
            return Err(ApiError::new(
                429,
                "quota_schedules",
                format!(
                    "tenant `{tenant}` has {limit} schedules, the most a tenant may have: delete some (`eflow schedule delete`), or ask the admin to raise `--max-schedules-per-tenant`"
                ),
            ));
        }
        schedule_view(&row)
    }

    pub async fn update_schedule(
        &self,
        caller: &Caller,
        id: &str,
        req: ScheduleRequest,
    ) -> ApiResult<ScheduleView> {
        let old = self.own_schedule(caller, id).await?;
        if old.declared {
            return Err(declared(&old));
        }
        if req.tenant.as_ref().is_some_and(|t| *t != old.tenant)
            || req.flow.as_ref().is_some_and(|f| *f != old.flow)
        {
            return Err(ApiError::bad_request(
                "invalid_schedule",
                "a schedule's tenant and flow stay what they are: delete it and make another",
            ));
        }
        if let Some(k) = req.key.as_deref().filter(|k| !k.is_empty()) {
            check_key(k)?;
        }
        let spec: eflow_ir::Schedule =
            serde_json::from_slice(&old.spec).map_err(ApiError::internal)?;
        let spec = changed_spec(spec, &req)?;
        let version = match req.version.as_deref() {
            None => old.version.clone(),
            Some("head") => None,
            Some(v) => Some(v.to_string()),
        };
        let bundle = self
            .checked_target(&old.tenant, &old.flow, version.as_deref(), &spec)
            .await?;
        let now = self.now();
        let timing_changed = spec_bytes(&spec)? != old.spec;
        let paused = req.paused.unwrap_or(old.paused);
        let row = self
            .inner
            .scheduler
            .api_row(ScheduleRow {
                bundle,
                version,
                spec: spec_bytes(&spec)?,
                paused,
                key: match req.key {
                    Some(k) if k.is_empty() => None,
                    Some(k) => Some(k),
                    None => old.key.clone(),
                },
                // A new cron or policy, or a resume, counts from now: what
                // the old one would have started is not caught up.
                handled_through: if timing_changed || (old.paused && !paused) {
                    Some(now)
                } else {
                    old.handled_through
                },
                ..old
            })
            .map_err(|e| ApiError::bad_request("invalid_schedule", e))?;
        if !self.db().redefine_schedule(&row).await? {
            return Err(ApiError::not_found("schedule", id));
        }
        let s = self.own_schedule(caller, id).await?;
        schedule_view(&s)
    }

    pub async fn delete_schedule(&self, caller: &Caller, id: &str) -> ApiResult<ScheduleView> {
        let s = self.own_schedule(caller, id).await?;
        if s.declared {
            return Err(declared(&s));
        }
        if !self.db().delete_schedule(id).await? {
            return Err(ApiError::not_found("schedule", id));
        }
        schedule_view(&s)
    }

    /// The bundle a schedule's runs start on — `version`'s, or the flow's
    /// head's — once its input is checked against that flow's parameters.
    async fn checked_target(
        &self,
        tenant: &str,
        flow: &str,
        version: Option<&str>,
        spec: &eflow_ir::Schedule,
    ) -> ApiResult<String> {
        let f = self.head(tenant, flow, version).await?.ok_or_else(|| {
            ApiError::not_found(
                "flow",
                &match version {
                    Some(v) => format!("{flow}@{v}"),
                    None => flow.to_string(),
                },
            )
        })?;
        let deployed = self.inner.engine.deployments().get(&f.bundle).await?;
        let ir = deployed
            .bundle
            .flow(flow)
            .ok_or_else(|| ApiError::internal(format!("bundle {} has no flow {flow}", f.bundle)))?
            .flow;
        let input: Map<String, Value> = spec.input.clone().into_iter().collect();
        eflow_core::input::check_input(ir, &input).map_err(|errors| {
            ApiError::bad_request(
                "invalid_input",
                format!(
                    "the input does not fit the flow's parameters: {}",
                    errors.join("; ")
                ),
            )
        })?;
        Ok(f.bundle)
    }
}

/// `spec` with what `req` gives in place of its own, checked.
fn changed_spec(
    mut spec: eflow_ir::Schedule,
    req: &ScheduleRequest,
) -> ApiResult<eflow_ir::Schedule> {
    let invalid = |m: String| ApiError::bad_request("invalid_schedule", m);
    if let Some(c) = &req.cron {
        spec.cron = c.clone();
    }
    if let Some(z) = &req.timezone {
        spec.timezone = z.clone();
    }
    if let Some(o) = &req.overlap {
        spec.overlap = policy("overlap", o, eflow_ir::schedule::OVERLAP_POLICIES)?;
    }
    if let Some(c) = &req.catchup {
        spec.catchup = policy("catchup", c, eflow_ir::schedule::CATCHUP_POLICIES)?;
        if spec.catchup != eflow_ir::Catchup::All {
            spec.catchup_window_ms = None;
        }
    }
    if let Some(w) = &req.catchup_within {
        spec.catchup_window_ms = Some(duration_ms("catchup_within", w)?);
    }
    if let Some(j) = &req.jitter {
        spec.jitter_ms = Some(duration_ms("jitter", j)?).filter(|&j| j > 0);
    }
    match &req.input {
        None => {}
        Some(Value::Object(m)) => spec.input = m.clone().into_iter().collect(),
        Some(Value::Null) => spec.input = Default::default(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_input",
                "`input` must be a JSON object of parameter values",
            ));
        }
    }
    eflow_core::schedule::Compiled::new(&spec).map_err(|e| {
        invalid(
            e.replace("(`catchup_window_ms`)", "(`catchup_within`, e.g. \"7d\")")
                .replace("`catchup_window_ms`", "`catchup_within`"),
        )
    })?;
    Ok(spec)
}

/// A policy by the name a flow's source gives it.
fn policy<T: serde::de::DeserializeOwned>(what: &str, name: &str, names: &[&str]) -> ApiResult<T> {
    serde_json::from_value(Value::String(name.to_string())).map_err(|_| {
        let hint = eflow_ir::suggest::did_you_mean(name, names.iter().copied())
            .unwrap_or_else(|| format!("use one of {}", names.join(", ")));
        ApiError::bad_request(
            "invalid_schedule",
            format!("`{name}` is not an {what} policy: {hint}"),
        )
    })
}

fn duration_ms(field: &str, text: &str) -> ApiResult<u64> {
    humantime::parse_duration(text)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_schedule",
                format!("`{field}` `{text}` is not a duration: write e.g. 10s, 15m or 7d"),
            )
        })
}

fn spec_bytes(spec: &eflow_ir::Schedule) -> ApiResult<Vec<u8>> {
    serde_json::to_vec(spec).map_err(ApiError::internal)
}

fn declared(s: &ScheduleRow) -> ApiError {
    ApiError::new(
        409,
        "declared_schedule",
        format!(
            "schedule `{}` is declared by a `schedule` statement of flow `{}`: change the statement and deploy again (pause and resume work on it)",
            s.id, s.flow
        ),
    )
}
