//! Lineage of registered models and datasets: what is registered (a page of
//! names), and for one name every version with the run and step that
//! registered it and what it was made from, and the runs and steps that used
//! it since; one version's uses a page at a time.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Nav, UiQuery, enc, query, run_href, set};
use crate::service::UseView;
use crate::ui::session::Viewer;
use crate::ui::values::to_html;
use crate::ui::{Console, error_page, render};

/// Names a page of the index shows.
const NAMES_PAGE: usize = 50;
/// Uses shown with each version on a name's page.
const USES_SHOWN: u32 = 10;
/// Uses a page of one version's uses shows.
const USES_PAGE: u32 = 50;
/// Versions a page of a name's versions shows.
const VERSIONS_PAGE: usize = 20;

#[derive(Debug, Default, Deserialize)]
pub struct LineageParams {
    /// Whose registry (the admin names one; a tenant sees its own).
    #[serde(default)]
    tenant: String,
    /// `KIND/NAME` of the last name of the page before.
    #[serde(default)]
    cursor: String,
}

struct NameLine {
    kind: String,
    name: String,
    href: String,
    versions: usize,
    latest: i64,
    stage: String,
}

#[derive(Template)]
#[template(path = "lineage_index.html")]
struct IndexPage {
    nav: Nav,
    admin: bool,
    tenant: String,
    rows: Vec<NameLine>,
    next_href: Option<String>,
    first_href: Option<String>,
}

fn tenant_query(admin: bool, tenant: &str) -> Option<&str> {
    (admin && !tenant.is_empty()).then_some(tenant)
}

fn name_href(kind: &str, name: &str, tenant: Option<&str>) -> String {
    format!(
        "/ui/lineage/{}/{}{}",
        enc(kind),
        enc(name),
        query(&[("tenant", tenant)])
    )
}

fn stage_of(entry: &serde_json::Value) -> String {
    entry
        .get("stage")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub async fn lineage_index(
    State(c): State<Console>,
    viewer: Viewer,
    UiQuery(p): UiQuery<LineageParams>,
) -> Response {
    let admin = viewer.is_admin();
    let tenant = set(&p.tenant);
    if admin && tenant.is_none() {
        return render(&IndexPage {
            nav: Nav::of(Some(&viewer), "lineage"),
            admin,
            tenant: String::new(),
            rows: Vec::new(),
            next_href: None,
            first_href: None,
        });
    }
    let entries = match c
        .service
        .registry(&viewer.caller, tenant.as_deref(), None, None)
        .await
    {
        Ok(e) => e,
        Err(e) => return error_page(Some(&viewer), &e),
    };
    let mut names: BTreeMap<(String, String), Vec<crate::api::model::RegistryView>> =
        BTreeMap::new();
    for e in entries {
        names
            .entry((e.kind.clone(), e.name.clone()))
            .or_default()
            .push(e);
    }
    let after = set(&p.cursor);
    let t = tenant.clone().unwrap_or_default();
    let mut lines = names
        .into_iter()
        .filter(|((k, n), _)| {
            after
                .as_deref()
                .is_none_or(|a| format!("{k}/{n}").as_str() > a)
        })
        .peekable();
    let mut rows = Vec::new();
    while rows.len() < NAMES_PAGE {
        let Some(((kind, name), versions)) = lines.next() else {
            break;
        };
        let latest = versions.iter().max_by_key(|v| v.version);
        rows.push(NameLine {
            href: name_href(&kind, &name, tenant_query(admin, &t)),
            versions: versions.len(),
            latest: latest.map_or(0, |v| v.version),
            stage: latest.map(|v| stage_of(&v.entry)).unwrap_or_default(),
            kind,
            name,
        });
    }
    let more = lines.peek().is_some();
    let link = |cursor: Option<&str>| {
        format!(
            "/ui/lineage{}",
            query(&[("tenant", tenant_query(admin, &t)), ("cursor", cursor)])
        )
    };
    render(&IndexPage {
        nav: Nav::of(Some(&viewer), "lineage"),
        admin,
        next_href: more
            .then(|| {
                rows.last()
                    .map(|r| link(Some(&format!("{}/{}", r.kind, r.name))))
            })
            .flatten(),
        first_href: after.is_some().then(|| link(None)),
        tenant: t,
        rows,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct NameParams {
    #[serde(default)]
    tenant: String,
    /// One version alone, with its uses a page at a time.
    version: Option<i64>,
    /// Where that version's page of uses starts.
    #[serde(default)]
    after: String,
    /// Versions older than this one (the last of the page before).
    before: Option<i64>,
}

struct UseLine {
    run: String,
    href: String,
    step: String,
    action: String,
    used_at: String,
}

struct VersionBlock {
    version: i64,
    stage: String,
    registered_at: String,
    run: String,
    run_href: String,
    step: String,
    entry_html: String,
    inputs_html: String,
    uses: Vec<UseLine>,
    more_href: Option<String>,
}

#[derive(Template)]
#[template(path = "lineage.html")]
struct NamePage {
    nav: Nav,
    admin: bool,
    tenant: String,
    kind: String,
    name: String,
    all_href: String,
    /// Showing one version's uses a page at a time.
    one_version: bool,
    versions: Vec<VersionBlock>,
    first_href: Option<String>,
    older_href: Option<String>,
}

fn use_line(u: UseView) -> UseLine {
    UseLine {
        href: run_href(&u.run),
        run: u.run,
        step: u.step,
        action: u.action.replace('_', " "),
        used_at: u.used_at,
    }
}

pub async fn lineage(
    State(c): State<Console>,
    viewer: Viewer,
    Path((kind, name)): Path<(String, String)>,
    UiQuery(p): UiQuery<NameParams>,
) -> Response {
    let s = &c.service;
    let admin = viewer.is_admin();
    let tenant = set(&p.tenant);
    let t = tenant.clone().unwrap_or_default();
    let all_href = name_href(&kind, &name, tenant_query(admin, &t));
    let (mut found, older) = match p.version {
        // One version: the page of versions is that one.
        Some(v) => match s
            .lineage(
                &viewer.caller,
                tenant.as_deref(),
                &kind,
                &name,
                v.checked_add(1),
                1,
                1,
            )
            .await
        {
            Ok((l, _)) => (
                l.into_iter()
                    .filter(|l| l.entry.version == v)
                    .collect::<Vec<_>>(),
                false,
            ),
            Err(e) => return error_page(Some(&viewer), &e),
        },
        None => match s
            .lineage(
                &viewer.caller,
                tenant.as_deref(),
                &kind,
                &name,
                p.before,
                VERSIONS_PAGE,
                USES_SHOWN,
            )
            .await
        {
            Ok(x) => x,
            Err(e) => return error_page(Some(&viewer), &e),
        },
    };
    let mut first_href = p.before.map(|_| all_href.clone());
    let older_href = older
        .then(|| {
            found.last().map(|l| {
                let sep = if all_href.contains('?') { '&' } else { '?' };
                format!("{all_href}{sep}before={}", l.entry.version)
            })
        })
        .flatten();
    if let Some(v) = p.version {
        let Some(only) = found.first_mut() else {
            return error_page(
                Some(&viewer),
                &crate::api::ApiError::not_found(&kind, &format!("{name} version {v}")),
            );
        };
        let after = set(&p.after);
        match s
            .version_uses(
                &viewer.caller,
                tenant.as_deref(),
                &kind,
                &name,
                v,
                after.as_deref(),
                USES_PAGE,
            )
            .await
        {
            Ok((uses, more)) => {
                only.uses = uses;
                only.more_uses = more;
            }
            Err(e) => return error_page(Some(&viewer), &e),
        }
        first_href = after.is_some().then(|| version_href(&all_href, v, None));
    }
    let versions = found
        .into_iter()
        .map(|l| {
            let v = l.entry.version;
            let more_href = l.more_uses.then(|| {
                version_href(
                    &all_href,
                    v,
                    p.version.and(l.uses.last().map(|u| u.cursor.as_str())),
                )
            });
            VersionBlock {
                version: v,
                stage: stage_of(&l.entry.entry),
                registered_at: l.entry.registered_at.clone(),
                run_href: run_href(&l.entry.lineage.run),
                run: l.entry.lineage.run.clone(),
                step: l.entry.lineage.step.clone(),
                entry_html: to_html(&l.entry.entry),
                inputs_html: to_html(&l.entry.lineage.inputs),
                uses: l.uses.into_iter().map(use_line).collect(),
                more_href,
            }
        })
        .collect();
    render(&NamePage {
        nav: Nav::of(Some(&viewer), "lineage"),
        admin,
        one_version: p.version.is_some(),
        tenant: t,
        kind,
        name,
        all_href,
        versions,
        first_href,
        older_href,
    })
}

/// One version's page of uses, after `cursor`.
fn version_href(all_href: &str, version: i64, cursor: Option<&str>) -> String {
    let sep = if all_href.contains('?') { '&' } else { '?' };
    let mut h = format!("{all_href}{sep}version={version}");
    if let Some(c) = cursor {
        h.push_str(&format!("&after={}", enc(c)));
    }
    h
}
