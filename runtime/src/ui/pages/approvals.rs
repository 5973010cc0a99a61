//! The approvals inbox: each decision waiting, with what is decided on, who
//! may decide and when it expires; and deciding (from the inbox or a run's page).

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Nav, UiQuery, enc, query, run_href, set};
use crate::api::ApiError;
use crate::api::model::{ApprovalView, Decide};
use crate::ui::session::{UiForm, Viewer};
use crate::ui::values::to_html;
use crate::ui::{Console, error_page, render};

/// Approvals a page of the inbox shows.
const APPROVALS_PAGE: usize = 20;

pub(super) struct ApprovalCard {
    pub(super) key: String,
    pub(super) run: String,
    pub(super) run_href: String,
    pub(super) action: String,
    pub(super) step: String,
    pub(super) tenant: String,
    pub(super) contract: String,
    pub(super) approvers: String,
    pub(super) requested_at: String,
    pub(super) expires_at: String,
    pub(super) inputs_html: String,
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

pub(super) fn approval_card(a: &ApprovalView) -> ApprovalCard {
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
