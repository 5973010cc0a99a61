//! `/v1/bulk`: bulk actions, durable jobs over a run query, previewed,
//! started, followed, paused, resumed and cancelled.

use axum::Json;
use axum::extract::State;

use super::model::*;
use super::{ApiResult, Auth, Body, Params, PathParam};
use crate::service::{BulkChange, Service};

/// How many runs a bulk action would touch (counted from the history's
/// index, up to 100,000: past it `more` is true) and the first of them.
#[utoipa::path(post, path = "/v1/bulk/preview", request_body = BulkRequest,
    responses((status = 200, body = BulkPreview), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn preview_bulk(
    State(s): State<Service>,
    Auth(c): Auth,
    Body(req): Body<BulkRequest>,
) -> ApiResult<BulkPreview> {
    s.bulk_preview(&c, &req).await.map(Json)
}

/// Start a bulk action: a job that cancels or retries every run the query
/// selects among those created up to now, at most `rate` a second.
#[utoipa::path(post, path = "/v1/bulk", request_body = BulkRequest,
    responses((status = 200, body = BulkJobView), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn start_bulk(
    State(s): State<Service>,
    Auth(c): Auth,
    Body(req): Body<BulkRequest>,
) -> ApiResult<BulkJobView> {
    s.start_bulk(&c, req).await.map(Json)
}

/// Bulk jobs, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/bulk", params(BulkFilter),
    responses((status = 200, body = Page<BulkJobView>)), security(("bearer" = [])))]
pub(super) async fn list_bulk(
    State(s): State<Service>,
    Auth(c): Auth,
    Params(f): Params<BulkFilter>,
) -> ApiResult<Page<BulkJobView>> {
    s.bulk_jobs(&c, &f).await.map(Json)
}

/// A bulk job: its state and counts.
#[utoipa::path(get, path = "/v1/bulk/{id}", params(("id" = String, Path)),
    responses((status = 200, body = BulkJobView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn get_bulk(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
) -> ApiResult<BulkJobView> {
    s.bulk_job(&c, &id).await.map(Json)
}

/// Pause a running bulk job (the page in hand is finished first).
#[utoipa::path(post, path = "/v1/bulk/{id}/pause", params(("id" = String, Path)),
    responses((status = 200, body = BulkJobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn pause_bulk(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
) -> ApiResult<BulkJobView> {
    s.change_bulk(&c, &id, BulkChange::Pause).await.map(Json)
}

/// Resume a paused bulk job.
#[utoipa::path(post, path = "/v1/bulk/{id}/resume", params(("id" = String, Path)),
    responses((status = 200, body = BulkJobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn resume_bulk(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
) -> ApiResult<BulkJobView> {
    s.change_bulk(&c, &id, BulkChange::Resume).await.map(Json)
}

/// Cancel a bulk job: it acts on no more runs (what it did stays done).
#[utoipa::path(post, path = "/v1/bulk/{id}/cancel", params(("id" = String, Path)),
    responses((status = 200, body = BulkJobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn cancel_bulk(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
) -> ApiResult<BulkJobView> {
    s.change_bulk(&c, &id, BulkChange::Cancel).await.map(Json)
}
