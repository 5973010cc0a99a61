//! The schedules: a cursor page of them (tenant, flow and key filters in the
//! URL), each with its next fire times in its own zone and in UTC and the
//! runs of its last ones; pause and resume; and a backfill, whose fire
//! times are shown before the user confirms it.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::runs::{filter_time, form_time};
use super::{Nav, UiQuery, enc, query, run_href, set};
use crate::api::model::{Backfill, ScheduleFilter, ScheduleView};
use crate::service::FireTime;
use crate::ui::session::{UiForm, Viewer};
use crate::ui::values::short_version;
use crate::ui::{Console, error_page, render};

/// Schedules a page shows.
const SCHEDULES_PAGE: u32 = 50;
/// Next fire times shown per schedule.
const NEXT_FIRES: usize = 3;
/// Runs of a schedule's last fire times shown per schedule.
const LAST_RUNS: usize = 3;
/// Fire times a backfill's preview lists (it counts them all, up to the
/// backfill's own limit).
const PREVIEW_SHOWN: usize = 100;

#[derive(Debug, Default, Deserialize)]
pub struct SchedulesParams {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    flow: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    cursor: String,
    /// Schedules a page (1 to 200; 50 when left out).
    limit: Option<u32>,
    /// After an action: what was done (`paused`, `resumed`) to `schedule`.
    #[serde(default)]
    done: String,
    #[serde(default)]
    schedule: String,
}

struct LastRun {
    id: String,
    href: String,
    status: String,
}

struct ScheduleLine {
    id: String,
    tenant: String,
    flow: String,
    key: String,
    version: String,
    cron: String,
    timezone: String,
    policies: String,
    declared: bool,
    paused: bool,
    next: Vec<FireTime>,
    last: Vec<LastRun>,
    pause_action: String,
    resume_action: String,
    backfill_href: String,
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    nav: Nav,
    admin: bool,
    csrf: String,
    tenant: String,
    flow: String,
    key: String,
    rows: Vec<ScheduleLine>,
    next_href: Option<String>,
    first_href: Option<String>,
    notice: Option<String>,
}

fn schedule_href(id: &str) -> String {
    format!("/ui/schedules/{}", enc(id))
}

pub async fn schedules(
    State(c): State<Console>,
    viewer: Viewer,
    UiQuery(p): UiQuery<SchedulesParams>,
) -> Response {
    let s = &c.service;
    let limit = p.limit.unwrap_or(SCHEDULES_PAGE).clamp(1, 200);
    let filter = ScheduleFilter {
        tenant: set(&p.tenant),
        key: set(&p.key),
        flow: set(&p.flow),
        cursor: set(&p.cursor),
        // One more than shown: whether there is a next page.
        limit: Some(limit + 1),
    };
    let mut page = match s.schedule_page(&viewer.caller, filter.clone()).await {
        Ok(p) => p,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let last_runs = match s
        .latest_schedule_runs(&viewer.caller, &page, LAST_RUNS)
        .await
    {
        Ok(r) => r,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let mut rows = Vec::with_capacity(page.len());
    for (v, last) in page.iter().zip(last_runs) {
        let next = if v.paused {
            Vec::new()
        } else {
            match s.next_fires(&viewer.caller, v, NEXT_FIRES) {
                Ok(n) => n,
                Err(e) => return error_page(Some(&viewer), &e),
            }
        };
        rows.push(line(v, next, last));
    }
    let limit_text = p.limit.map(|l| l.to_string());
    let link = |cursor: Option<&str>| {
        format!(
            "/ui/schedules{}",
            query(&[
                ("tenant", filter.tenant.as_deref()),
                ("flow", filter.flow.as_deref()),
                ("key", filter.key.as_deref()),
                ("limit", limit_text.as_deref()),
                ("cursor", cursor),
            ])
        )
    };
    let notice = match (p.done.as_str(), set(&p.schedule)) {
        ("paused", Some(id)) => Some(format!(
            "Paused schedule {id}: it starts no run until resumed"
        )),
        ("resumed", Some(id)) => Some(format!(
            "Resumed schedule {id}: fire times missed while it was paused are not started"
        )),
        _ => None,
    };
    render(&SchedulesPage {
        nav: Nav::of(Some(&viewer), "schedules"),
        admin: viewer.is_admin(),
        csrf: viewer.csrf.clone(),
        next_href: more
            .then(|| page.last().map(|l| link(Some(&l.id))))
            .flatten(),
        first_href: filter.cursor.is_some().then(|| link(None)),
        tenant: filter.tenant.clone().unwrap_or_default(),
        flow: filter.flow.clone().unwrap_or_default(),
        key: filter.key.clone().unwrap_or_default(),
        rows,
        notice,
    })
}

fn line(
    v: &ScheduleView,
    next: Vec<FireTime>,
    last: Vec<crate::api::model::RunSummary>,
) -> ScheduleLine {
    let href = schedule_href(&v.id);
    ScheduleLine {
        id: v.id.clone(),
        tenant: v.tenant.clone(),
        flow: v.flow.clone(),
        key: v.key.clone().unwrap_or_default(),
        version: v
            .version
            .as_deref()
            .map_or_else(|| "head".to_string(), short_version),
        cron: v.cron.clone(),
        timezone: v.timezone.clone(),
        policies: format!("overlap {}, catch-up {}", v.overlap, v.catchup),
        declared: v.declared,
        paused: v.paused,
        next,
        last: last
            .into_iter()
            .map(|r| LastRun {
                href: run_href(&r.id),
                id: r.id,
                status: r.status,
            })
            .collect(),
        pause_action: format!("{href}/pause"),
        resume_action: format!("{href}/resume"),
        backfill_href: format!("{href}/backfill"),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

async fn set_paused(
    c: Console,
    viewer: Viewer,
    id: String,
    form: CsrfForm,
    paused: bool,
) -> Response {
    if let Some(r) = viewer.refuse_forged(&form.csrf) {
        return r;
    }
    match c.service.pause_schedule(&viewer.caller, &id, paused).await {
        Ok(v) => Redirect::to(&format!(
            "/ui/schedules{}",
            query(&[
                ("done", Some(if paused { "paused" } else { "resumed" })),
                ("schedule", Some(&v.id)),
            ])
        ))
        .into_response(),
        Err(e) => error_page(Some(&viewer), &e),
    }
}

pub async fn pause(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    UiForm(form): UiForm<CsrfForm>,
) -> Response {
    set_paused(c, viewer, id, form, true).await
}

pub async fn resume(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    UiForm(form): UiForm<CsrfForm>,
) -> Response {
    set_paused(c, viewer, id, form, false).await
}

// ---- backfill ---------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct BackfillParams {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    /// After a backfill: how many runs it started.
    started: Option<usize>,
}

struct PreviewLine {
    utc: String,
    local: String,
    run: String,
    href: String,
    existing: bool,
}

#[derive(Template)]
#[template(path = "backfill.html")]
struct BackfillPage {
    nav: Nav,
    csrf: String,
    id: String,
    tenant: String,
    flow: String,
    cron: String,
    timezone: String,
    admin: bool,
    action: String,
    from: String,
    to: String,
    /// `from` and `to` as the API takes them, for the confirming form.
    from_utc: String,
    to_utc: String,
    preview: Option<Vec<PreviewLine>>,
    /// Every fire time of the range, of which `preview` lists the first.
    fires: usize,
    new_runs: usize,
    started: Option<usize>,
}

pub async fn backfill_page(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    UiQuery(p): UiQuery<BackfillParams>,
) -> Response {
    let s = &c.service;
    let (from, to) = (filter_time(&p.from), filter_time(&p.to));
    let (schedule, preview) = match (&from, &to) {
        (Some(from), Some(to)) => {
            let req = Backfill {
                from: from.clone(),
                to: to.clone(),
            };
            match s.backfill_preview(&viewer.caller, &id, &req).await {
                Ok(p) => (p.schedule.clone(), Some(p)),
                Err(e) => return error_page(Some(&viewer), &e),
            }
        }
        _ => match s.schedule(&viewer.caller, &id).await {
            Ok(v) => (v, None),
            Err(e) => return error_page(Some(&viewer), &e),
        },
    };
    let new_runs = preview.as_ref().map_or(0, |p| p.new_runs());
    let fires = preview.as_ref().map_or(0, |p| p.fires.len());
    let preview = preview.map(|p| {
        p.fires
            .into_iter()
            .zip(p.existing)
            .take(PREVIEW_SHOWN)
            .map(|(f, existing)| PreviewLine {
                href: run_href(&f.run),
                utc: f.utc,
                local: f.local,
                run: f.run,
                existing,
            })
            .collect()
    });
    render(&BackfillPage {
        nav: Nav::of(Some(&viewer), "schedules"),
        csrf: viewer.csrf.clone(),
        action: format!("{}/backfill", schedule_href(&schedule.id)),
        id: schedule.id,
        tenant: schedule.tenant,
        flow: schedule.flow,
        cron: schedule.cron,
        timezone: schedule.timezone,
        admin: viewer.is_admin(),
        from: from.as_deref().map(form_time).unwrap_or_default(),
        to: to.as_deref().map(form_time).unwrap_or_default(),
        from_utc: from.unwrap_or_default(),
        to_utc: to.unwrap_or_default(),
        preview,
        fires,
        new_runs,
        started: p.started,
    })
}

#[derive(Deserialize)]
pub struct BackfillForm {
    csrf: String,
    from: String,
    to: String,
}

pub async fn backfill(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    UiForm(form): UiForm<BackfillForm>,
) -> Response {
    if let Some(r) = viewer.refuse_forged(&form.csrf) {
        return r;
    }
    let req = Backfill {
        from: filter_time(&form.from).unwrap_or_default(),
        to: filter_time(&form.to).unwrap_or_default(),
    };
    match c.service.backfill(&viewer.caller, &id, req.clone()).await {
        Ok(done) => Redirect::to(&format!(
            "{}/backfill{}",
            schedule_href(&id),
            query(&[
                ("from", Some(&req.from)),
                ("to", Some(&req.to)),
                ("started", Some(&done.runs.len().to_string())),
            ])
        ))
        .into_response(),
        Err(e) => error_page(Some(&viewer), &e),
    }
}
