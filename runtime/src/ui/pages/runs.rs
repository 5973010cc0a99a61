//! The run list: every filter of `GET /v1/runs` from the URL, a cursor page
//! at a time.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::{Nav, UiQuery, query, run_href, set};
use crate::api::RUN_STATUSES;
use crate::api::model::{BulkSelector, RunFilter, RunSelector};
use crate::ui::session::Viewer;
use crate::ui::values::short_version;
use crate::ui::{Console, error_page, render};

/// Runs a page of the run list shows.
const RUNS_PAGE: u32 = 50;

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
    /// Runs of this key (a model, a customer).
    #[serde(default)]
    key: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    cursor: String,
    /// Runs a page (1 to 200; 50 when left out).
    limit: Option<u32>,
}

/// A time from the filter form (`datetime-local` gives `2026-03-01T09:30`,
/// read as UTC) or as the API takes it (RFC 3339).
pub(super) fn filter_time(s: &str) -> Option<String> {
    let s = set(s)?;
    Some(match s.len() {
        16 => format!("{s}:00Z"),
        19 => format!("{s}Z"),
        _ => s,
    })
}

/// The form's value of a time: what `datetime-local` shows.
pub(super) fn form_time(s: &str) -> String {
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
    key: String,
    since: String,
    until: String,
    rows: Vec<RunLine>,
    /// "Retry these", "Cancel these": a bulk action over the filter.
    bulk: Vec<(String, String)>,
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
        key: set(&p.key),
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
                ("key", filter.key.as_deref()),
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
    let bulk = super::bulk::bulk_links(&BulkSelector::Runs(RunSelector {
        tenant: filter.tenant.clone(),
        flow: filter.flow.clone(),
        version: filter.version.clone(),
        status: filter.status.clone(),
        step: filter.step.clone(),
        error: filter.error.clone(),
        key: filter.key.clone(),
        since: filter.since.clone(),
        until: filter.until.clone(),
    }));
    render(&RunsPage {
        nav: Nav::of(Some(&viewer), "runs"),
        bulk,
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
        key: filter.key.clone().unwrap_or_default(),
        since: filter.since.as_deref().map(form_time).unwrap_or_default(),
        until: filter.until.as_deref().map(form_time).unwrap_or_default(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
