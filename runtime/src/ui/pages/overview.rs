//! The overview: each tenant's runs by status (bounded counts, each one
//! range of an index), the deployed flows, the decisions waiting, the
//! schedules about to fire.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Nav, query, run_href};
use crate::api::model::ScheduleFilter;
use crate::api::{ApiError, RUN_STATUSES};
use crate::history::RunQuery;
use crate::ui::session::Viewer;
use crate::ui::values::short_version;
use crate::ui::{Console, error_page, render};

/// The overview's tenants and flows, and how many runs of each status it counts at most.
const OVERVIEW_TENANTS: usize = 20;
const OVERVIEW_FLOWS: usize = 20;
const OVERVIEW_COUNT: u32 = 100;

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
