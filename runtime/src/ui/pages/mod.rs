//! The console's pages and actions: overview, runs, a run, approvals,
//! schedules, flows, lineage, population, bulk jobs; cancel, retry, decide,
//! pause, resume, backfill and bulk actions. Each handler asks the [`Service`](crate::service::Service)
//! what the JSON API would ask, as the viewer, and renders the answer; an
//! error is the API's error as a page. Here: what every page shares (its
//! header, links, the error and login pages).

mod approvals;
mod bulk;
mod flows;
mod lineage;
mod overview;
mod population;
mod run;
mod runs;
mod schedules;

pub use approvals::{approvals, decide};
pub use bulk::{
    bulk_cancel, bulk_job, bulk_list, bulk_live, bulk_new, bulk_pause, bulk_resume, bulk_start,
};
pub use flows::{flow, flows};
pub use lineage::{lineage, lineage_index};
pub use overview::overview;
pub use population::population;
pub use run::{cancel, retry, run, run_live};
pub use runs::runs;
pub use schedules::{backfill, backfill_page, pause, resume, schedules};

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;

use super::error_page;
use super::session::Viewer;
use crate::api::ApiError;
use crate::service::Scope;

/// `s` percent-encoded for a URL's path segment or query value: the
/// client's encoding, so the console's links and the CLI's requests agree.
pub use crate::cli::client::seg as enc;

/// A query string of the pairs whose value is set.
pub(super) fn query(pairs: &[(&str, Option<&str>)]) -> String {
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

pub(super) fn run_href(id: &str) -> String {
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
    /// The session cookie is `Secure`: a browser keeps it over HTTPS only.
    pub secure: bool,
    pub error: Option<String>,
}

pub(super) fn set(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
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
}
