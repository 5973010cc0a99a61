//! Bulk actions in the console: from the run list's filter, or from the
//! population's (each key's latest run), "Retry these" or "Cancel these"
//! leads to a confirmation that says how many runs the job will touch; once started, the job's page follows its progress live
//! and pauses, resumes or cancels it; and a page of the jobs.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::runs::filter_time;
use super::{Nav, UiQuery, enc, query, run_href, set};
use crate::api::ApiError;
use crate::api::model::{
    BulkAction, BulkFilter, BulkJobView, BulkRequest, BulkSelector, PopulationSelector, RunSelector,
};
use crate::service::BulkChange;
use crate::ui::session::{UiForm, Viewer};
use crate::ui::{Console, error_page, render};

/// Jobs a page of the list shows.
const JOBS_PAGE: u32 = 50;

fn job_href(id: &str) -> String {
    format!("/ui/bulk/{}", enc(id))
}

/// What the confirmation asks: the action and the run list's filter, or
/// (`over=population`) the population's.
#[derive(Debug, Default, Deserialize)]
pub struct NewParams {
    #[serde(default)]
    action: String,
    /// `population`: the latest run of each key; else the runs of the filter.
    #[serde(default)]
    over: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    flow: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    failed_in_a_row: String,
}

impl NewParams {
    fn selector(&self) -> Result<BulkSelector, ApiError> {
        if self.over != "population" {
            return Ok(BulkSelector::Runs(RunSelector {
                tenant: set(&self.tenant),
                flow: set(&self.flow),
                version: set(&self.version),
                status: set(&self.status),
                step: set(&self.step),
                error: set(&self.error),
                key: set(&self.key),
                since: filter_time(&self.since),
                until: filter_time(&self.until),
            }));
        }
        let failed_in_a_row = match set(&self.failed_in_a_row) {
            None => None,
            Some(n) => Some(n.parse::<u32>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_failed_in_a_row",
                    "`failed_in_a_row` is a whole number, at least 1",
                )
            })?),
        };
        Ok(BulkSelector::Population(PopulationSelector {
            tenant: set(&self.tenant),
            flow: self.flow.trim().to_string(),
            status: set(&self.status),
            version: set(&self.version),
            failed_in_a_row,
        }))
    }

    fn action(&self) -> Result<BulkAction, ApiError> {
        BulkAction::parse(&self.action).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_action",
                "a bulk action is `retry` or `cancel`: start it from the run list's or the population's buttons",
            )
        })
    }
}

/// The links to a bulk action over a run list's or a population's filter
/// (none for a run list without a filter: a job over every run is asked
/// for through the API or the CLI).
pub fn bulk_links(sel: &BulkSelector) -> Vec<(String, String)> {
    if let BulkSelector::Runs(r) = sel {
        let any = [
            &r.flow, &r.version, &r.status, &r.step, &r.error, &r.key, &r.since, &r.until,
        ]
        .iter()
        .any(|v| v.is_some());
        if !any {
            return Vec::new();
        }
    }
    let pairs = selector_pairs(sel);
    [("retry", "Retry these"), ("cancel", "Cancel these")]
        .into_iter()
        .map(|(action, label)| {
            let mut q = vec![("action", Some(action))];
            q.extend(pairs.iter().map(|(k, v)| (*k, Some(v.as_str()))));
            (format!("/ui/bulk/new{}", query(&q)), label.to_string())
        })
        .collect()
}

/// Where a selector's runs (or keys) are listed in the console.
fn list_href(sel: &BulkSelector) -> String {
    let pairs = selector_pairs(sel);
    let pairs: Vec<(&str, Option<&str>)> = pairs
        .iter()
        .filter(|(k, _)| *k != "over")
        .map(|(k, v)| (*k, Some(v.as_str())))
        .collect();
    let page = match sel {
        BulkSelector::Runs(_) => "/ui/runs",
        BulkSelector::Population(_) => "/ui/population",
    };
    format!("{page}{}", query(&pairs))
}

struct RunLine {
    /// Over a population: the key whose latest run it is.
    key: String,
    id: String,
    href: String,
    flow: String,
    status: String,
    created_at: String,
}

#[derive(Template)]
#[template(path = "bulk_new.html")]
struct NewPage {
    nav: Nav,
    csrf: String,
    action: String,
    verb: &'static str,
    /// Over a population: each key's latest run.
    population: bool,
    filter: Vec<(&'static str, String)>,
    hidden: Vec<(&'static str, String)>,
    runs: u64,
    more: bool,
    first: Vec<RunLine>,
    back: String,
}

/// The confirmation: how many runs the job would touch, and the first.
pub async fn bulk_new(
    State(c): State<Console>,
    viewer: Viewer,
    UiQuery(p): UiQuery<NewParams>,
) -> Response {
    let action = match p.action() {
        Ok(a) => a,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let sel = match p.selector() {
        Ok(s) => s,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let req = BulkRequest {
        action,
        query: sel.clone(),
        reason: None,
        rate: None,
    };
    let preview = match c.service.bulk_preview(&viewer.caller, &req).await {
        Ok(p) => p,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let pairs = selector_pairs(&sel);
    let population = matches!(sel, BulkSelector::Population(_));
    render(&NewPage {
        nav: Nav::of(
            Some(&viewer),
            if population { "population" } else { "runs" },
        ),
        population,
        back: list_href(&sel),
        csrf: viewer.csrf.clone(),
        action: action.as_str().into(),
        verb: verb(action),
        filter: pairs
            .iter()
            .filter(|(k, _)| *k != "over")
            .cloned()
            .collect(),
        hidden: pairs,
        runs: preview.runs,
        more: preview.more,
        first: preview
            .first
            .into_iter()
            .map(|r| RunLine {
                key: r.key.unwrap_or_default(),
                href: run_href(&r.id),
                id: r.id,
                flow: r.flow,
                status: r.status,
                created_at: r.created_at,
            })
            .collect(),
    })
}

fn verb(a: BulkAction) -> &'static str {
    match a {
        BulkAction::Retry => "Retry",
        BulkAction::Cancel => "Cancel",
    }
}

/// A selector as the console's query string carries it (`over=population`
/// for a population's), set values only.
fn selector_pairs(sel: &BulkSelector) -> Vec<(&'static str, String)> {
    let pairs: Vec<(&'static str, Option<String>)> = match sel {
        BulkSelector::Runs(r) => vec![
            ("tenant", r.tenant.clone()),
            ("flow", r.flow.clone()),
            ("version", r.version.clone()),
            ("status", r.status.clone()),
            ("step", r.step.clone()),
            ("error", r.error.clone()),
            ("key", r.key.clone()),
            ("since", r.since.clone()),
            ("until", r.until.clone()),
        ],
        BulkSelector::Population(p) => vec![
            ("over", Some("population".to_string())),
            ("tenant", p.tenant.clone()),
            ("flow", Some(p.flow.clone())),
            ("status", p.status.clone()),
            ("version", p.version.clone()),
            ("failed_in_a_row", p.failed_in_a_row.map(|n| n.to_string())),
        ],
    };
    pairs
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

#[derive(Deserialize)]
pub struct StartForm {
    csrf: String,
    #[serde(flatten)]
    params: NewParams,
    #[serde(default)]
    reason: String,
}

/// Starts the job the confirmation showed; on to its page.
pub async fn bulk_start(
    State(c): State<Console>,
    viewer: Viewer,
    UiForm(form): UiForm<StartForm>,
) -> Response {
    if let Some(r) = viewer.refuse_forged(&form.csrf) {
        return r;
    }
    let action = match form.params.action() {
        Ok(a) => a,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let query = match form.params.selector() {
        Ok(s) => s,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let req = BulkRequest {
        action,
        query,
        reason: set(&form.reason),
        rate: None,
    };
    match c.service.start_bulk(&viewer.caller, req).await {
        Ok(j) => Redirect::to(&job_href(&j.id)).into_response(),
        Err(e) => error_page(Some(&viewer), &e),
    }
}

#[derive(Template)]
#[template(path = "bulk_live.html")]
struct JobLive {
    href: String,
    live: bool,
    csrf: String,
    state: String,
    selected: u64,
    acted: u64,
    skipped: u64,
    errors: u64,
    skipped_by: Vec<(String, u64)>,
    last_error: String,
    finished_at: String,
    can_pause: bool,
    can_resume: bool,
    can_cancel: bool,
}

fn live_part(j: &BulkJobView, csrf: &str) -> JobLive {
    let open = matches!(j.state.as_str(), "running" | "paused");
    JobLive {
        href: job_href(&j.id),
        live: open,
        csrf: csrf.to_string(),
        state: j.state.clone(),
        selected: j.selected,
        acted: j.acted,
        skipped: j.skipped,
        errors: j.errors,
        skipped_by: j.skipped_by.clone().into_iter().collect(),
        last_error: j.last_error.clone().unwrap_or_default(),
        finished_at: j.finished_at.clone().unwrap_or_default(),
        can_pause: j.state == "running",
        can_resume: j.state == "paused",
        can_cancel: open,
    }
}

#[derive(Template)]
#[template(path = "bulk_job.html")]
struct JobPage {
    nav: Nav,
    id: String,
    admin: bool,
    tenant: String,
    action: String,
    /// Over a population: each key's latest run.
    population: bool,
    filter: Vec<(&'static str, String)>,
    runs_href: String,
    reason: String,
    rate: u32,
    created_by: String,
    created_at: String,
    live_html: String,
}

/// A job: what it does, to what, and how far it is (live while it runs).
pub async fn bulk_job(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let j = match c.service.bulk_job(&viewer.caller, &id).await {
        Ok(j) => j,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let live_html = match live_part(&j, &viewer.csrf).render() {
        Ok(h) => h,
        Err(e) => return error_page(Some(&viewer), &ApiError::internal(e)),
    };
    let population = matches!(j.query, BulkSelector::Population(_));
    let runs_href = list_href(&j.query);
    let filter = selector_pairs(&j.query)
        .into_iter()
        .filter(|(k, _)| *k != "over")
        .collect();
    render(&JobPage {
        nav: Nav::of(Some(&viewer), "bulk"),
        admin: viewer.is_admin(),
        tenant: j.tenant.clone(),
        action: j.action.as_str().into(),
        population,
        filter,
        runs_href,
        reason: j.reason.clone().unwrap_or_default(),
        rate: j.rate,
        created_by: j.created_by.clone(),
        created_at: j.created_at.clone(),
        id: j.id,
        live_html,
    })
}

/// The live part of a job's page, for htmx to swap in.
pub async fn bulk_live(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    match c.service.bulk_job(&viewer.caller, &id).await {
        Ok(j) => render(&live_part(&j, &viewer.csrf)),
        Err(e) => error_page(Some(&viewer), &e),
    }
}

#[derive(Deserialize)]
pub struct ChangeForm {
    csrf: String,
}

async fn change(c: &Console, viewer: &Viewer, id: &str, csrf: &str, to: BulkChange) -> Response {
    if let Some(r) = viewer.refuse_forged(csrf) {
        return r;
    }
    match c.service.change_bulk(&viewer.caller, id, to).await {
        Ok(j) => Redirect::to(&job_href(&j.id)).into_response(),
        Err(e) => error_page(Some(viewer), &e),
    }
}

pub async fn bulk_pause(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    UiForm(form): UiForm<ChangeForm>,
) -> Response {
    change(&c, &viewer, &id, &form.csrf, BulkChange::Pause).await
}

pub async fn bulk_resume(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    UiForm(form): UiForm<ChangeForm>,
) -> Response {
    change(&c, &viewer, &id, &form.csrf, BulkChange::Resume).await
}

pub async fn bulk_cancel(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    UiForm(form): UiForm<ChangeForm>,
) -> Response {
    change(&c, &viewer, &id, &form.csrf, BulkChange::Cancel).await
}

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    cursor: String,
}

struct JobLine {
    id: String,
    href: String,
    tenant: String,
    action: String,
    state: String,
    selected: u64,
    acted: u64,
    skipped: u64,
    errors: u64,
    created_at: String,
    created_by: String,
}

#[derive(Template)]
#[template(path = "bulk_list.html")]
struct ListPage {
    nav: Nav,
    admin: bool,
    rows: Vec<JobLine>,
    next_href: Option<String>,
}

/// The bulk jobs the viewer may see, newest first.
pub async fn bulk_list(
    State(c): State<Console>,
    viewer: Viewer,
    UiQuery(p): UiQuery<ListParams>,
) -> Response {
    let f = BulkFilter {
        tenant: set(&p.tenant),
        cursor: set(&p.cursor),
        limit: Some(JOBS_PAGE),
    };
    let page = match c.service.bulk_jobs(&viewer.caller, &f).await {
        Ok(p) => p,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    render(&ListPage {
        nav: Nav::of(Some(&viewer), "bulk"),
        admin: viewer.is_admin(),
        next_href: page.next.as_deref().map(|n| {
            format!(
                "/ui/bulk{}",
                query(&[("tenant", f.tenant.as_deref()), ("cursor", Some(n))])
            )
        }),
        rows: page
            .items
            .into_iter()
            .map(|j| JobLine {
                href: job_href(&j.id),
                id: j.id,
                tenant: j.tenant,
                action: j.action.as_str().into(),
                state: j.state,
                selected: j.selected,
                acted: j.acted,
                skipped: j.skipped,
                errors: j.errors,
                created_at: j.created_at,
                created_by: j.created_by,
            })
            .collect(),
    })
}
