//! The console's pages and actions: overview, runs, a run, approvals; cancel
//! and decide. Each handler asks the [`Service`](crate::service::Service)
//! what the JSON API would ask, as the viewer, and renders the answer; an
//! error is the API's error as a page.

use askama::Template;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

use super::session::{UiForm, Viewer};
use super::values::{short_version, to_html};
use super::{Console, error_page, graph, render};
use crate::api::model::{ApprovalView, Decide, RunFilter, RunView, ScheduleFilter, StepView};
use crate::api::{ApiError, RUN_STATUSES};
use crate::history::RunQuery;
use crate::service::Scope;

/// Runs a page of the run list shows.
const RUNS_PAGE: u32 = 50;
/// Events a page of a run's event log shows.
const EVENTS_PAGE: u32 = 50;
/// Approvals a page of the inbox shows.
const APPROVALS_PAGE: usize = 20;
/// The overview's tenants and flows, and how many runs of each status it counts at most.
const OVERVIEW_TENANTS: usize = 20;
const OVERVIEW_FLOWS: usize = 20;
const OVERVIEW_COUNT: u32 = 100;

/// `s` percent-encoded for a URL's path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string of the pairs whose value is set.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", enc(v)))
        })
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn run_href(id: &str) -> String {
    format!("/ui/runs/{}", enc(id))
}

/// Query parameters; ones that do not parse are a 400 page.
pub struct UiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for UiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(UiQuery(v)),
            Err(e) => Err(error_page(
                None,
                &ApiError::bad_request("invalid_query", e.body_text()),
            )),
        }
    }
}

/// The header every page has: who is looking, where, and the logout form.
pub struct Nav {
    pub show: bool,
    pub who: String,
    pub logged_in: bool,
    pub csrf: String,
    pub active: &'static str,
}

impl Nav {
    pub fn of(viewer: Option<&Viewer>, active: &'static str) -> Nav {
        match viewer {
            None => Nav {
                show: false,
                who: String::new(),
                logged_in: false,
                csrf: String::new(),
                active,
            },
            Some(v) => Nav {
                show: true,
                who: match &v.caller.scope {
                    Scope::Admin => format!("{} (admin)", v.caller.name),
                    Scope::Tenant(t) => format!("{} (tenant {t})", v.caller.name),
                },
                logged_in: v.logged_in,
                csrf: v.csrf.clone(),
                active,
            },
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub nav: Nav,
    pub status: u16,
    pub code: &'a str,
    pub message: &'a str,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub nav: Nav,
    pub csrf: String,
    /// The console page to go on to after the login.
    pub next: String,
    pub error: Option<String>,
}

// ---- overview ----------------------------------------------------------------

struct Count {
    status: &'static str,
    text: String,
    href: String,
}

struct TenantCounts {
    tenant: String,
    counts: Vec<Count>,
}

struct FlowLine {
    tenant: String,
    name: String,
    version: String,
    deployed_at: String,
    href: String,
}

struct ApprovalLine {
    run: String,
    run_href: String,
    step: String,
    tenant: String,
    expires_at: String,
}

struct ScheduleLine {
    id: String,
    tenant: String,
    flow: String,
    next_fire: String,
    cron: String,
    timezone: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    nav: Nav,
    admin: bool,
    statuses: [&'static str; 5],
    tenants: Vec<TenantCounts>,
    more_tenants: bool,
    count_cap: u32,
    flows: Vec<FlowLine>,
    more_flows: bool,
    approvals: Vec<ApprovalLine>,
    approvals_total: String,
    schedules: Vec<ScheduleLine>,
    schedules_partial: bool,
}

pub async fn overview(State(c): State<Console>, viewer: Viewer) -> Response {
    match overview_page(&c, &viewer).await {
        Ok(p) => render(&p),
        Err(e) => error_page(Some(&viewer), &e),
    }
}

async fn overview_page(c: &Console, v: &Viewer) -> Result<OverviewPage, ApiError> {
    let s = &c.service;
    let caller = &v.caller;
    let tenant_ids: Vec<String> = s.tenants(caller).await?.into_iter().map(|t| t.id).collect();
    let more_tenants = tenant_ids.len() > OVERVIEW_TENANTS;
    // One wait for the history, then every count from what it holds.
    s.wait_for_history().await?;
    let mut tenants = Vec::new();
    for tenant in tenant_ids.into_iter().take(OVERVIEW_TENANTS) {
        let mut counts = Vec::new();
        for status in RUN_STATUSES {
            // One range of the history's (tenant, status, created_at) index,
            // at most `OVERVIEW_COUNT` rows: the same cost at a million runs
            // as at ten. (Per flow there is no such index: see the flows below.)
            let page = s
                .runs_as_held(
                    caller,
                    RunQuery {
                        tenant: Some(tenant.clone()),
                        status: Some(status.to_string()),
                        limit: OVERVIEW_COUNT,
                        ..RunQuery::default()
                    },
                )
                .await?;
            let n = page.items.len();
            counts.push(Count {
                status,
                text: if page.next.is_some() {
                    format!("{n}+")
                } else {
                    n.to_string()
                },
                href: format!(
                    "/ui/runs{}",
                    query(&[
                        ("tenant", v.is_admin().then_some(tenant.as_str())),
                        ("status", Some(status)),
                    ])
                ),
            });
        }
        tenants.push(TenantCounts { tenant, counts });
    }
    let mut heads: Vec<_> = s
        .flows(caller, None)
        .await?
        .into_iter()
        .filter(|f| f.head)
        .collect();
    heads.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
    let more_flows = heads.len() > OVERVIEW_FLOWS;
    let flows = heads
        .into_iter()
        .take(OVERVIEW_FLOWS)
        .map(|f| FlowLine {
            href: format!(
                "/ui/runs{}",
                query(&[
                    ("tenant", v.is_admin().then_some(f.tenant.as_str())),
                    ("flow", Some(&f.name)),
                ])
            ),
            version: short_version(&f.version),
            tenant: f.tenant,
            name: f.name,
            deployed_at: f.deployed_at,
        })
        .collect();
    let pending = s.approvals(caller, None, true).await?;
    let approvals_total = if pending.len() >= 1000 {
        "1000+".to_string()
    } else {
        pending.len().to_string()
    };
    let approvals = pending
        .iter()
        .take(5)
        .map(|a| ApprovalLine {
            run: a.run.clone(),
            run_href: run_href(&a.run),
            step: a.step.clone(),
            tenant: a.tenant.clone(),
            expires_at: a.expires_at.clone().unwrap_or_else(|| "never".into()),
        })
        .collect();
    let limit = crate::service::MAX_SCHEDULE_PAGE;
    let page = s
        .schedule_page(
            caller,
            ScheduleFilter {
                limit: Some(limit),
                ..ScheduleFilter::default()
            },
        )
        .await?;
    let schedules_partial = page.len() as u32 >= limit;
    let mut due: Vec<_> = page
        .into_iter()
        .filter(|s| !s.paused)
        .filter_map(|s| s.next_fire.clone().map(|n| (n, s)))
        .collect();
    // RFC 3339 times in UTC sort as text.
    due.sort_by(|a, b| a.0.cmp(&b.0));
    let schedules = due
        .into_iter()
        .take(10)
        .map(|(next_fire, s)| ScheduleLine {
            id: s.id,
            tenant: s.tenant,
            flow: s.flow,
            next_fire,
            cron: s.cron,
            timezone: s.timezone,
        })
        .collect();
    Ok(OverviewPage {
        nav: Nav::of(Some(v), "overview"),
        admin: v.is_admin(),
        statuses: RUN_STATUSES,
        tenants,
        more_tenants,
        count_cap: OVERVIEW_COUNT,
        flows,
        more_flows,
        approvals,
        approvals_total,
        schedules,
        schedules_partial,
    })
}

// ---- runs ----------------------------------------------------------------------

/// The run list's filters, as the URL carries them (a form's empty fields are unset).
#[derive(Debug, Default, Deserialize)]
pub struct RunsParams {
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
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    cursor: String,
    /// Runs a page (1 to 200; 50 when left out).
    limit: Option<u32>,
}

fn set(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// A time from the filter form (`datetime-local` gives `2026-03-01T09:30`,
/// read as UTC) or as the API takes it (RFC 3339).
fn filter_time(s: &str) -> Option<String> {
    let s = set(s)?;
    Some(match s.len() {
        16 => format!("{s}:00Z"),
        19 => format!("{s}Z"),
        _ => s,
    })
}

/// The form's value of a time: what `datetime-local` shows.
fn form_time(s: &str) -> String {
    let s = s.trim().trim_end_matches('Z');
    s.chars().take(16).collect()
}

struct RunLine {
    id: String,
    href: String,
    tenant: String,
    flow: String,
    version: String,
    status: String,
    error_code: String,
    failed_step: String,
    created_at: String,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    nav: Nav,
    admin: bool,
    statuses: [&'static str; 5],
    tenant: String,
    flow: String,
    version: String,
    status: String,
    step: String,
    error: String,
    since: String,
    until: String,
    rows: Vec<RunLine>,
    next_href: Option<String>,
    first_href: Option<String>,
}

pub async fn runs(
    State(c): State<Console>,
    viewer: Viewer,
    UiQuery(p): UiQuery<RunsParams>,
) -> Response {
    let filter = RunFilter {
        tenant: set(&p.tenant),
        flow: set(&p.flow),
        version: set(&p.version),
        status: set(&p.status),
        step: set(&p.step),
        error: set(&p.error),
        since: filter_time(&p.since),
        until: filter_time(&p.until),
        cursor: set(&p.cursor),
        limit: Some(p.limit.unwrap_or(RUNS_PAGE).clamp(1, 200)),
    };
    let page = match crate::api::run_query(&filter) {
        Ok(q) => c.service.list_runs(&viewer.caller, q).await,
        Err(e) => Err(e),
    };
    let page = match page {
        Ok(p) => p,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let link = |cursor: Option<&str>| {
        format!(
            "/ui/runs{}",
            query(&[
                ("tenant", filter.tenant.as_deref()),
                ("flow", filter.flow.as_deref()),
                ("version", filter.version.as_deref()),
                ("status", filter.status.as_deref()),
                ("step", filter.step.as_deref()),
                ("error", filter.error.as_deref()),
                ("since", filter.since.as_deref()),
                ("until", filter.until.as_deref()),
                ("limit", p.limit.map(|l| l.to_string()).as_deref()),
                ("cursor", cursor),
            ])
        )
    };
    let rows = page
        .items
        .into_iter()
        .map(|r| RunLine {
            href: run_href(&r.id),
            id: r.id,
            tenant: r.tenant,
            flow: r.flow,
            version: short_version(&r.version),
            status: r.status,
            error_code: r.error_code.unwrap_or_default(),
            failed_step: r.failed_step.unwrap_or_default(),
            created_at: r.created_at,
        })
        .collect();
    render(&RunsPage {
        nav: Nav::of(Some(&viewer), "runs"),
        admin: viewer.is_admin(),
        statuses: RUN_STATUSES,
        next_href: page.next.as_deref().map(|n| link(Some(n))),
        first_href: filter.cursor.is_some().then(|| link(None)),
        tenant: filter.tenant.clone().unwrap_or_default(),
        flow: filter.flow.clone().unwrap_or_default(),
        version: filter.version.clone().unwrap_or_default(),
        status: filter.status.clone().unwrap_or_default(),
        step: filter.step.clone().unwrap_or_default(),
        error: filter.error.clone().unwrap_or_default(),
        since: filter.since.as_deref().map(form_time).unwrap_or_default(),
        until: filter.until.as_deref().map(form_time).unwrap_or_default(),
        rows,
    })
}

// ---- a run ---------------------------------------------------------------------

struct StepLine {
    id: String,
    status: String,
    attempt: String,
    children: String,
    error: String,
    output_html: String,
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

fn live_part(c: &Console, view: &RunView, flow: Option<&eflow_ir::Flow>) -> RunLive {
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
    let live = live_part(&c, &view, flow.as_ref());
    let live_html = match live.render() {
        Ok(h) => h,
        Err(e) => return error_page(Some(&viewer), &ApiError::internal(e)),
    };
    render(&RunPage {
        nav: Nav::of(Some(&viewer), "runs"),
        can_cancel: !finished(&view.status),
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
    match c.service.run_with_flow(&viewer.caller, &id).await {
        Ok((view, flow)) => render(&live_part(&c, &view, flow.as_ref())),
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

// ---- approvals -------------------------------------------------------------------

struct ApprovalCard {
    key: String,
    run: String,
    run_href: String,
    action: String,
    step: String,
    tenant: String,
    contract: String,
    approvers: String,
    requested_at: String,
    expires_at: String,
    inputs_html: String,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    nav: Nav,
    admin: bool,
    csrf: String,
    /// Where a decision goes back to: the inbox (`""`) or the run (`run`).
    back: &'static str,
    cards: Vec<ApprovalCard>,
    next_href: Option<String>,
    first_href: Option<String>,
    notice: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ApprovalsParams {
    #[serde(default)]
    tenant: String,
    /// The `run/step` of the last approval of the page before.
    #[serde(default)]
    after: String,
    /// Approvals a page (1 to 100; 20 when left out).
    limit: Option<usize>,
    #[serde(default)]
    decided: String,
    #[serde(default)]
    outcome: String,
}

fn approval_card(a: &ApprovalView) -> ApprovalCard {
    ApprovalCard {
        key: approval_key(a),
        run_href: run_href(&a.run),
        action: format!("{}/approvals/{}", run_href(&a.run), enc(&a.step)),
        run: a.run.clone(),
        step: a.step.clone(),
        tenant: a.tenant.clone(),
        contract: a.contract.clone(),
        approvers: if a.approvers.is_empty() {
            "any token of the tenant, or an admin".to_string()
        } else {
            format!("{}, or an admin", a.approvers.join(", "))
        },
        requested_at: a.requested_at.clone(),
        expires_at: a.expires_at.clone().unwrap_or_else(|| "never".into()),
        inputs_html: to_html(&a.inputs),
    }
}

fn approval_key(a: &ApprovalView) -> String {
    format!("{}/{}", a.run, a.step)
}

pub async fn approvals(
    State(c): State<Console>,
    viewer: Viewer,
    UiQuery(p): UiQuery<ApprovalsParams>,
) -> Response {
    let tenant = set(&p.tenant);
    let pending = match c
        .service
        .approvals(&viewer.caller, tenant.as_deref(), true)
        .await
    {
        Ok(a) => a,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    // Oldest first; the page after `after` (an approval decided since is
    // gone from the list, so the page starts at the first one past it).
    let start = match set(&p.after) {
        None => 0,
        Some(after) => pending
            .iter()
            .position(|a| approval_key(a) == after)
            .map_or(0, |i| i + 1),
    };
    let limit = p.limit.unwrap_or(APPROVALS_PAGE).clamp(1, 100);
    let shown: Vec<&ApprovalView> = pending.iter().skip(start).take(limit).collect();
    let limit_text = p.limit.map(|l| l.to_string());
    let link = |after: Option<&str>| {
        format!(
            "/ui/approvals{}",
            query(&[
                ("tenant", tenant.as_deref()),
                ("limit", limit_text.as_deref()),
                ("after", after),
            ])
        )
    };
    let next_href = (start + shown.len() < pending.len())
        .then(|| shown.last().map(|a| link(Some(&approval_key(a)))))
        .flatten();
    let cards = shown.into_iter().map(approval_card).collect();
    let notice = set(&p.decided).map(|d| {
        let outcome = if p.outcome == "approved" {
            "Approved"
        } else {
            "Rejected"
        };
        format!("{outcome}: {d}")
    });
    render(&ApprovalsPage {
        nav: Nav::of(Some(&viewer), "approvals"),
        admin: viewer.is_admin(),
        csrf: viewer.csrf.clone(),
        back: "",
        cards,
        next_href,
        first_href: set(&p.after).map(|_| link(None)),
        notice,
    })
}

#[derive(Deserialize)]
pub struct DecideForm {
    csrf: String,
    decision: String,
    #[serde(default)]
    comment: String,
    /// `run`: back to the run's page; otherwise to the inbox.
    #[serde(default)]
    back: String,
}

pub async fn decide(
    State(c): State<Console>,
    viewer: Viewer,
    Path((id, step)): Path<(String, String)>,
    UiForm(form): UiForm<DecideForm>,
) -> Response {
    if let Some(r) = viewer.refuse_forged(&form.csrf) {
        return r;
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return error_page(
                Some(&viewer),
                &ApiError::bad_request(
                    "invalid_decision",
                    format!("`{other}` is not a decision: approve or reject"),
                ),
            );
        }
    };
    let s = &c.service;
    let decided = async {
        let run = s.run_key(&viewer.caller, &id).await?;
        s.decide(
            &viewer.caller,
            &run,
            &step,
            Decide {
                approve,
                comment: set(&form.comment),
            },
        )
        .await
    }
    .await;
    match decided {
        Ok(_) if form.back == "run" => Redirect::to(&run_href(&id)).into_response(),
        Ok(_) => Redirect::to(&format!(
            "/ui/approvals{}",
            query(&[
                ("decided", Some(&format!("{id}/{step}"))),
                (
                    "outcome",
                    Some(if approve { "approved" } else { "rejected" })
                ),
            ])
        ))
        .into_response(),
        Err(e) => error_page(Some(&viewer), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_ids_and_filters_encoded() {
        assert_eq!(run_href("acme:x/y z"), "/ui/runs/acme%3Ax%2Fy%20z");
        assert_eq!(
            query(&[("flow", Some("a&b")), ("status", None), ("error", Some(""))]),
            "?flow=a%26b"
        );
        assert_eq!(query(&[("x", None)]), "");
    }

    #[test]
    fn form_times_are_utc() {
        assert_eq!(
            filter_time("2026-03-01T09:30").as_deref(),
            Some("2026-03-01T09:30:00Z")
        );
        assert_eq!(
            filter_time("2026-03-01T09:30:05").as_deref(),
            Some("2026-03-01T09:30:05Z")
        );
        assert_eq!(filter_time("  "), None);
        assert_eq!(form_time("2026-03-01T09:30:00Z"), "2026-03-01T09:30");
    }
}
