//! The population page: pick a flow, see how many of its keys (models,
//! customers) are in each status and on each version (the kept counts, not
//! counted at load), filter by status, version and failures in a row, and
//! page through the keys with their latest runs. Every filter in the URL.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::{Nav, UiQuery, query, run_href, set};
use crate::api::RUN_STATUSES;
use crate::api::model::{BulkSelector, PopulationFilter, PopulationSelector};
use crate::ui::session::Viewer;
use crate::ui::values::short_version;
use crate::ui::{Console, error_page, render};

/// Keys a page of the population shows.
const KEYS_PAGE: u32 = 50;

/// The page's filters, as the URL carries them (a form's empty fields are unset).
#[derive(Debug, Default, Deserialize)]
pub struct PopulationParams {
    #[serde(default)]
    flow: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    version: String,
    /// Keys whose latest runs failed at least this many times in a row.
    #[serde(default)]
    failed_in_a_row: String,
    #[serde(default)]
    cursor: String,
    /// Keys a page (1 to 200; 50 when left out).
    limit: Option<u32>,
}

struct KeyLine {
    key: String,
    tenant: String,
    run: String,
    href: String,
    status: String,
    error_code: String,
    failed_in_a_row: u32,
    version: String,
    updated_at: String,
}

/// One count, with the link that filters the page by it.
struct Count {
    name: String,
    keys: u64,
    href: String,
}

#[derive(Template)]
#[template(path = "population.html")]
struct PopulationPage {
    nav: Nav,
    admin: bool,
    statuses: [&'static str; 5],
    /// The flows the viewer may see, by name, for the picker.
    flows: Vec<String>,
    flow: String,
    /// The flow is among `flows` (one no longer deployed is shown too).
    flow_listed: bool,
    tenant: String,
    status: String,
    version: String,
    /// The streak choices of the filter: (value, label).
    streaks: Vec<(String, String)>,
    failed_in_a_row: String,
    keys: u64,
    by_status: Vec<Count>,
    by_version: Vec<Count>,
    rows: Vec<KeyLine>,
    next_href: Option<String>,
    first_href: Option<String>,
    /// "Retry these", "Cancel these": a bulk action over the filter's keys.
    bulk: Vec<(String, String)>,
}

pub async fn population(
    State(c): State<Console>,
    viewer: Viewer,
    UiQuery(p): UiQuery<PopulationParams>,
) -> Response {
    let caller = &viewer.caller;
    let tenant = set(&p.tenant);
    let mut flows: Vec<String> = match c.service.flows(caller, tenant.as_deref()).await {
        Ok(f) => f.into_iter().map(|f| f.name).collect(),
        Err(e) => return error_page(Some(&viewer), &e),
    };
    flows.sort();
    flows.dedup();
    let flow = set(&p.flow);
    let failed_in_a_row = match set(&p.failed_in_a_row).map(|n| n.parse::<u32>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            let e = crate::api::ApiError::bad_request(
                "invalid_failed_in_a_row",
                "`failed_in_a_row` is a whole number, at least 1",
            );
            return error_page(Some(&viewer), &e);
        }
    };
    let mut streaks: Vec<(String, String)> = vec![
        (String::new(), "any".into()),
        ("1".into(), "failed (once or more)".into()),
        ("2".into(), "failed twice in a row or more".into()),
        ("3".into(), "failed 3 times in a row or more".into()),
    ];
    if let Some(n) = failed_in_a_row.filter(|n| *n > 3) {
        streaks.push((n.to_string(), format!("failed {n} times in a row or more")));
    }
    let mut page = PopulationPage {
        nav: Nav::of(Some(&viewer), "population"),
        admin: viewer.is_admin(),
        statuses: RUN_STATUSES,
        flow_listed: flow.as_ref().is_some_and(|f| flows.contains(f)),
        flow: flow.clone().unwrap_or_default(),
        flows,
        tenant: tenant.clone().unwrap_or_default(),
        status: set(&p.status).unwrap_or_default(),
        version: set(&p.version).unwrap_or_default(),
        streaks,
        failed_in_a_row: failed_in_a_row.map(|n| n.to_string()).unwrap_or_default(),
        keys: 0,
        by_status: Vec::new(),
        by_version: Vec::new(),
        rows: Vec::new(),
        next_href: None,
        first_href: None,
        bulk: Vec::new(),
    };
    let Some(flow) = flow else {
        // No flow picked yet: the picker alone.
        return render(&page);
    };
    let filter = PopulationFilter {
        flow: Some(flow.clone()),
        tenant: tenant.clone(),
        status: set(&p.status),
        version: set(&p.version),
        failed_in_a_row,
        cursor: set(&p.cursor),
        limit: Some(p.limit.unwrap_or(KEYS_PAGE).clamp(1, 200)),
    };
    let members = match crate::api::population_query(&filter) {
        Ok(q) => c.service.population(caller, q).await,
        Err(e) => Err(e),
    };
    let members = match members {
        Ok(m) => m,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let counts = match c
        .service
        .population_counts(caller, &flow, tenant.as_deref())
        .await
    {
        Ok(c) => c,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let failed = filter.failed_in_a_row.map(|n| n.to_string());
    let link = |status: Option<&str>, version: Option<&str>, cursor: Option<&str>| {
        format!(
            "/ui/population{}",
            query(&[
                ("flow", Some(flow.as_str())),
                ("tenant", tenant.as_deref()),
                ("status", status),
                ("version", version),
                ("failed_in_a_row", failed.as_deref()),
                ("limit", p.limit.map(|l| l.to_string()).as_deref()),
                ("cursor", cursor),
            ])
        )
    };
    page.keys = counts.keys;
    page.by_status = counts
        .by_status
        .into_iter()
        .map(|(name, keys)| Count {
            href: link(Some(&name), filter.version.as_deref(), None),
            name,
            keys,
        })
        .collect();
    page.by_version = counts
        .by_version
        .into_iter()
        .map(|(name, keys)| Count {
            href: link(filter.status.as_deref(), Some(&name), None),
            name: short_version(&name),
            keys,
        })
        .collect();
    page.next_href = members
        .next
        .as_deref()
        .map(|n| link(filter.status.as_deref(), filter.version.as_deref(), Some(n)));
    page.first_href = filter
        .cursor
        .is_some()
        .then(|| link(filter.status.as_deref(), filter.version.as_deref(), None));
    if !members.items.is_empty() {
        page.bulk = super::bulk::bulk_links(&BulkSelector::Population(PopulationSelector {
            tenant: tenant.clone(),
            flow: flow.clone(),
            status: filter.status.clone(),
            version: filter.version.clone(),
            failed_in_a_row: filter.failed_in_a_row,
        }));
    }
    page.rows = members
        .items
        .into_iter()
        .map(|m| KeyLine {
            href: run_href(&m.run),
            run: m.run,
            key: m.key,
            tenant: m.tenant,
            status: m.status,
            error_code: m.error_code.unwrap_or_default(),
            failed_in_a_row: m.failed_in_a_row,
            version: short_version(&m.version),
            updated_at: m.updated_at,
        })
        .collect();
    render(&page)
}
