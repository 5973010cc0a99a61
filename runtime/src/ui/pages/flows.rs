//! The deployed flows: a page of them, one line per flow; and a flow's page:
//! its versions (a page at a time, newest first) with how many runs each
//! has, and one version's graph, steps, IR and the sources it was compiled
//! from, the long parts collapsed.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Nav, UiQuery, enc, query, set};
use crate::api::model::FlowView;
use crate::ui::session::Viewer;
use crate::ui::values::short_version;
use crate::ui::{Console, error_page, graph, render};

/// Flows a page of the list shows.
const FLOWS_PAGE: usize = 50;
/// Versions a page of a flow's versions shows.
const VERSIONS_PAGE: usize = 20;
/// A version's runs are counted up to this many.
const RUN_COUNT: u32 = 1000;

pub(super) fn flow_href(tenant: &str, name: &str) -> String {
    format!("/ui/flows/{}/{}", enc(tenant), enc(name))
}

#[derive(Debug, Default, Deserialize)]
pub struct FlowsParams {
    #[serde(default)]
    tenant: String,
    /// `TENANT/NAME` of the last flow of the page before.
    #[serde(default)]
    cursor: String,
    /// Flows a page (1 to 200; 50 when left out).
    limit: Option<usize>,
}

struct FlowLine {
    tenant: String,
    name: String,
    href: String,
    head: String,
    versions: usize,
    deployed_at: String,
}

#[derive(Template)]
#[template(path = "flows.html")]
struct FlowsPage {
    nav: Nav,
    admin: bool,
    tenant: String,
    rows: Vec<FlowLine>,
    next_href: Option<String>,
    first_href: Option<String>,
}

pub async fn flows(
    State(c): State<Console>,
    viewer: Viewer,
    UiQuery(p): UiQuery<FlowsParams>,
) -> Response {
    let tenant = set(&p.tenant);
    let all = match c.service.flows(&viewer.caller, tenant.as_deref()).await {
        Ok(f) => f,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    // Every version of every flow, in (tenant, name) order: one line each.
    let mut by_flow: BTreeMap<(String, String), Vec<FlowView>> = BTreeMap::new();
    for f in all {
        by_flow
            .entry((f.tenant.clone(), f.name.clone()))
            .or_default()
            .push(f);
    }
    let after = set(&p.cursor);
    let limit = p.limit.unwrap_or(FLOWS_PAGE).clamp(1, 200);
    let mut lines = by_flow
        .into_iter()
        .filter(|((t, n), _)| {
            after
                .as_deref()
                .is_none_or(|a| format!("{t}/{n}").as_str() > a)
        })
        .peekable();
    let mut rows = Vec::new();
    while rows.len() < limit {
        let Some(((t, n), versions)) = lines.next() else {
            break;
        };
        let head = versions.iter().find(|v| v.head).or(versions.last());
        rows.push(FlowLine {
            href: flow_href(&t, &n),
            head: head.map(|h| short_version(&h.version)).unwrap_or_default(),
            deployed_at: head.map(|h| h.deployed_at.clone()).unwrap_or_default(),
            versions: versions.len(),
            tenant: t,
            name: n,
        });
    }
    let more = lines.peek().is_some();
    let limit_text = p.limit.map(|l| l.to_string());
    let link = |cursor: Option<&str>| {
        format!(
            "/ui/flows{}",
            query(&[
                ("tenant", tenant.as_deref()),
                ("limit", limit_text.as_deref()),
                ("cursor", cursor),
            ])
        )
    };
    render(&FlowsPage {
        nav: Nav::of(Some(&viewer), "flows"),
        admin: viewer.is_admin(),
        next_href: more
            .then(|| {
                rows.last()
                    .map(|r| link(Some(&format!("{}/{}", r.tenant, r.name))))
            })
            .flatten(),
        first_href: after.is_some().then(|| link(None)),
        tenant: tenant.unwrap_or_default(),
        rows,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct FlowParams {
    /// The version shown whole (the head when left out).
    #[serde(default)]
    version: String,
    /// The last version of the page of versions before.
    #[serde(default)]
    after: String,
    /// Versions a page (1 to 100; 20 when left out).
    limit: Option<usize>,
}

struct VersionLine {
    version: String,
    short: String,
    href: String,
    head: bool,
    shown: bool,
    deployed_at: String,
    runs: String,
    runs_href: String,
}

struct StepLine {
    id: String,
    calls: String,
    how: String,
    after: String,
    at: String,
}

#[derive(Template)]
#[template(path = "flow.html")]
struct FlowPage {
    nav: Nav,
    admin: bool,
    tenant: String,
    name: String,
    version: String,
    head: bool,
    deployed_at: String,
    doc: String,
    params: Vec<(String, String)>,
    versions: Vec<VersionLine>,
    next_href: Option<String>,
    first_href: Option<String>,
    run_count: u32,
    graph_svg: String,
    steps: Vec<StepLine>,
    ir_json: String,
    sources: Vec<(String, String)>,
    /// The file the flow is written in, when the source map says so.
    flow_file: String,
}

pub async fn flow(
    State(c): State<Console>,
    viewer: Viewer,
    Path((tenant, name)): Path<(String, String)>,
    UiQuery(p): UiQuery<FlowParams>,
) -> Response {
    let s = &c.service;
    let caller = &viewer.caller;
    let version = set(&p.version);
    let detail = match s
        .flow_detail(caller, &tenant, &name, version.as_deref())
        .await
    {
        Ok(d) => d,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let after = set(&p.after);
    let limit = p.limit.unwrap_or(VERSIONS_PAGE).clamp(1, 100);
    let (versions, more) = match s
        .flow_versions(caller, &tenant, &name, after.as_deref(), limit, RUN_COUNT)
        .await
    {
        Ok(v) => v,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let base = flow_href(&tenant, &name);
    let limit_text = p.limit.map(|l| l.to_string());
    let link = |after: Option<&str>| {
        format!(
            "{base}{}",
            query(&[
                ("version", version.as_deref()),
                ("limit", limit_text.as_deref()),
                ("after", after),
            ])
        )
    };
    let admin = viewer.is_admin();
    let versions: Vec<VersionLine> = versions
        .into_iter()
        .map(|v| VersionLine {
            short: short_version(&v.view.version),
            href: format!("{base}{}", query(&[("version", Some(&v.view.version))])),
            head: v.view.head,
            shown: v.view.version == detail.view.version,
            deployed_at: v.view.deployed_at.clone(),
            runs: if v.more_runs {
                format!("{}+", v.runs)
            } else {
                v.runs.to_string()
            },
            runs_href: format!(
                "/ui/runs{}",
                query(&[
                    ("tenant", admin.then_some(tenant.as_str())),
                    ("flow", Some(&name)),
                    ("version", Some(&v.view.version)),
                ])
            ),
            version: v.view.version,
        })
        .collect();
    let ir = &detail.ir;
    let layout = c.layouts().get(ir);
    let graph_svg = graph::flow_svg(
        &layout,
        &format!(
            "the steps of flow {name} at version {} and what each depends on",
            short_version(&ir.hash)
        ),
    );
    let steps = ir
        .nodes
        .iter()
        .map(|n| StepLine {
            id: n.id.clone(),
            calls: match &n.call {
                eflow_ir::Call::Step { contract, .. } => contract.clone(),
                eflow_ir::Call::Flow { name } => format!("flow {name}"),
            },
            how: if n.fan_out.is_some() {
                "fan-out".into()
            } else if n.repeat.is_some() {
                "repeat".into()
            } else {
                String::new()
            },
            after: n.depends_on.join(", "),
            at: ir
                .source_map
                .nodes
                .get(&n.id)
                .map(|l| format!("{}:{}", l.file, l.line))
                .unwrap_or_default(),
        })
        .collect();
    let ir_json = match serde_json::to_string_pretty(ir) {
        Ok(j) => j,
        Err(e) => return error_page(Some(&viewer), &crate::api::ApiError::internal(e)),
    };
    let flow_file = ir
        .source_map
        .flow
        .as_ref()
        .map(|l| l.file.clone())
        .unwrap_or_default();
    // The flow's own file first, then the others of its bundle.
    let mut sources: Vec<(String, String)> = detail.sources.into_iter().collect();
    sources.sort_by_key(|(f, _)| *f != flow_file);
    render(&FlowPage {
        nav: Nav::of(Some(&viewer), "flows"),
        admin,
        head: detail.view.head,
        deployed_at: detail.view.deployed_at.clone(),
        doc: ir.doc.clone().unwrap_or_default(),
        params: ir
            .params
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.default
                        .as_ref()
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                )
            })
            .collect(),
        next_href: more
            .then(|| versions.last().map(|v| link(Some(&v.version))))
            .flatten(),
        first_href: after.is_some().then(|| link(None)),
        versions,
        run_count: RUN_COUNT,
        graph_svg,
        steps,
        ir_json,
        sources,
        flow_file,
        version: detail.view.version,
        tenant,
        name,
    })
}
