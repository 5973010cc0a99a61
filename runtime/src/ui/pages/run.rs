//! A run's page: its facts, input, the decisions it waits for, its live part
//! (status, graph, steps, the attempts' Gantt chart, result; what htmx swaps while it is in progress),
//! its event log a page at a time; cancelling it, and retrying it once failed.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

use super::approvals::{ApprovalCard, approval_card};
use super::{Nav, UiQuery, run_href};
use crate::api::ApiError;
use crate::api::model::{RunView, StepView};
use crate::service::Timeline;
use crate::ui::session::{UiForm, Viewer};
use crate::ui::values::to_html;
use crate::ui::{Console, error_page, gantt, graph, render};

/// Events a page of a run's event log shows.
const EVENTS_PAGE: u32 = 50;
/// Events the attempts' chart reads at most (the first of the run).
const TIMELINE_EVENTS: u32 = 2_000;

struct StepLine {
    id: String,
    status: String,
    attempt: String,
    children: String,
    error: String,
    output_html: String,
}

struct AttemptLine {
    label: String,
    outcome: String,
    began: String,
    ended: String,
    took: String,
    error: String,
}

struct EventLine {
    seq: u64,
    at: String,
    status: String,
    kind: String,
    detail: String,
}

/// The part of a run's page that follows the run while it is in progress.
#[derive(Template)]
#[template(path = "run_live.html")]
struct RunLive {
    href: String,
    live: bool,
    status: String,
    graph_svg: String,
    steps: Vec<StepLine>,
    gantt_svg: String,
    attempts: Vec<AttemptLine>,
    /// The chart covers the run's first events only.
    attempts_partial: bool,
    result_html: Option<String>,
    error: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    nav: Nav,
    id: String,
    href: String,
    tenant: String,
    flow: String,
    version: String,
    parent: Option<(String, String)>,
    schedule: String,
    created_at: String,
    started_at: String,
    input_html: String,
    live_html: String,
    can_cancel: bool,
    /// A failed top-level run: a subflow child is retried through its parent.
    can_retry: bool,
    /// How many times the run was retried.
    retries: u32,
    csrf: String,
    admin: bool,
    back: &'static str,
    /// The decisions the run waits for, decided here as in the inbox.
    cards: Vec<ApprovalCard>,
    events: Vec<EventLine>,
    events_next: Option<String>,
    events_first: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EventsParams {
    after: Option<u64>,
}

fn step_line(s: &StepView) -> StepLine {
    StepLine {
        id: s.id.clone(),
        status: s.status.clone(),
        attempt: s.attempt.map(|a| a.to_string()).unwrap_or_default(),
        children: s
            .children
            .as_ref()
            .map(|c| {
                let n: u32 = c.values().sum();
                let parts: Vec<String> = c.iter().map(|(k, v)| format!("{v} {k}")).collect();
                format!("{n}: {}", parts.join(", "))
            })
            .unwrap_or_default(),
        error: s
            .error
            .as_ref()
            .map(|e| format!("{}: {}", e.code, e.message))
            .unwrap_or_default(),
        output_html: s.output.as_ref().map(to_html).unwrap_or_default(),
    }
}

fn finished(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

/// The run's attempts in time, when its flow is known.
async fn timeline(
    c: &Console,
    viewer: &Viewer,
    id: &str,
    view: &RunView,
    flow: Option<&eflow_ir::Flow>,
) -> Result<Option<Timeline>, ApiError> {
    match flow {
        Some(f) => c
            .service
            .attempt_timeline(&viewer.caller, id, view, f, TIMELINE_EVENTS)
            .await
            .map(Some),
        None => Ok(None),
    }
}

fn attempt_lines(t: &Timeline) -> Vec<AttemptLine> {
    use crate::service::rfc3339;
    t.bars
        .iter()
        .take(gantt::MAX_ROWS)
        .map(|b| AttemptLine {
            label: gantt::row_label(b),
            outcome: b.outcome.to_string(),
            began: rfc3339(b.start_ms),
            ended: b.end_ms.map(rfc3339).unwrap_or_default(),
            took: gantt::duration(b.end_ms.unwrap_or(t.now_ms).saturating_sub(b.start_ms)),
            error: b.error.clone().unwrap_or_default(),
        })
        .collect()
}

fn live_part(
    c: &Console,
    view: &RunView,
    flow: Option<&eflow_ir::Flow>,
    timeline: Option<&Timeline>,
) -> RunLive {
    let graph_svg = flow
        .map(|f| {
            let layout = c.layouts().get(f);
            graph::svg(
                &layout,
                &view.steps,
                &format!(
                    "the steps of flow {} and their status in this run",
                    view.flow
                ),
            )
        })
        .unwrap_or_default();
    RunLive {
        href: run_href(&view.id),
        live: !finished(&view.status),
        status: view.status.clone(),
        graph_svg,
        steps: view.steps.iter().map(step_line).collect(),
        gantt_svg: timeline
            .filter(|t| !t.bars.is_empty())
            .map(|t| gantt::svg(t, &format!("the attempts of run {} in time", view.id)))
            .unwrap_or_default(),
        attempts: timeline.map(attempt_lines).unwrap_or_default(),
        attempts_partial: timeline.is_some_and(|t| !t.complete || t.bars.len() > gantt::MAX_ROWS),
        result_html: view.result.as_ref().map(to_html),
        error: view
            .error
            .as_ref()
            .map(|e| (e.code.clone(), e.message.clone())),
    }
}

pub async fn run(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    UiQuery(p): UiQuery<EventsParams>,
) -> Response {
    let s = &c.service;
    let (view, flow) = match s.run_with_flow(&viewer.caller, &id).await {
        Ok(x) => x,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let events = match s
        .run_events(&viewer.caller, &id, p.after, EVENTS_PAGE)
        .await
    {
        Ok(e) => e,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let in_progress: Vec<&str> = view
        .steps
        .iter()
        .filter(|st| st.status == "running")
        .map(|st| st.id.as_str())
        .collect();
    let cards = if in_progress.is_empty() {
        Vec::new()
    } else {
        match s
            .pending_approvals_of(&viewer.caller, &id, &in_progress)
            .await
        {
            Ok(a) => a.iter().map(approval_card).collect(),
            Err(e) => return error_page(Some(&viewer), &e),
        }
    };
    let href = run_href(&view.id);
    let events_next = (events.len() as u32 == EVENTS_PAGE)
        .then(|| {
            events
                .last()
                .map(|e| format!("{href}?after={}#events", e.seq))
        })
        .flatten();
    let events = events
        .into_iter()
        .map(|mut e| {
            // `{"id", "type", …}`: the type is the column, the rest the detail.
            let kind = e
                .event
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Value::Object(m) = &mut e.event {
                m.remove("id");
                m.remove("type");
            }
            let mut detail = e.event.to_string();
            if detail.chars().count() > 400 {
                detail = detail.chars().take(399).collect::<String>() + "…";
            }
            EventLine {
                seq: e.seq,
                at: e.at,
                status: e.status,
                kind,
                detail,
            }
        })
        .collect();
    let t = match timeline(&c, &viewer, &id, &view, flow.as_ref()).await {
        Ok(t) => t,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let live = live_part(&c, &view, flow.as_ref(), t.as_ref());
    let live_html = match live.render() {
        Ok(h) => h,
        Err(e) => return error_page(Some(&viewer), &ApiError::internal(e)),
    };
    render(&RunPage {
        nav: Nav::of(Some(&viewer), "runs"),
        can_cancel: !finished(&view.status),
        can_retry: view.status == "failed" && view.parent.is_none(),
        retries: view.retries,
        csrf: viewer.csrf.clone(),
        admin: viewer.is_admin(),
        back: "run",
        cards,
        events_first: p.after.map(|_| format!("{href}#events")),
        href,
        id: view.id.clone(),
        tenant: view.tenant.clone(),
        flow: view.flow.clone(),
        version: view.version.clone(),
        parent: view.parent.as_ref().map(|p| (p.clone(), run_href(p))),
        schedule: view.schedule.clone().unwrap_or_default(),
        created_at: view.created_at.clone(),
        started_at: view.started_at.clone().unwrap_or_default(),
        input_html: to_html(&view.input),
        live_html,
        events,
        events_next,
    })
}

/// The live part of a run's page alone, for htmx to swap in.
pub async fn run_live(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let (view, flow) = match c.service.run_with_flow(&viewer.caller, &id).await {
        Ok(x) => x,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    match timeline(&c, &viewer, &id, &view, flow.as_ref()).await {
        Ok(t) => render(&live_part(&c, &view, flow.as_ref(), t.as_ref())),
        Err(e) => error_page(Some(&viewer), &e),
    }
}

#[derive(Deserialize)]
pub struct CancelForm {
    csrf: String,
}

pub async fn cancel(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    UiForm(form): UiForm<CancelForm>,
) -> Response {
    if let Some(r) = viewer.refuse_forged(&form.csrf) {
        return r;
    }
    let reason = format!("cancelled in the web console by {}", viewer.caller.name);
    match c
        .service
        .cancel_run(&viewer.caller, &id, Some(reason))
        .await
    {
        Ok(v) => Redirect::to(&run_href(&v.id)).into_response(),
        Err(e) => error_page(Some(&viewer), &e),
    }
}

/// Retries a failed run from where it failed, recorded as the viewer's.
pub async fn retry(
    State(c): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    UiForm(form): UiForm<CancelForm>,
) -> Response {
    if let Some(r) = viewer.refuse_forged(&form.csrf) {
        return r;
    }
    let reason = format!("retried in the web console by {}", viewer.caller.name);
    match c.service.retry_run(&viewer.caller, &id, Some(reason)).await {
        Ok(v) => Redirect::to(&run_href(&v.id)).into_response(),
        Err(e) => error_page(Some(&viewer), &e),
    }
}
