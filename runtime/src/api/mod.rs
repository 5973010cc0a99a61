//! The HTTP API under `/v1`: `fn router(service) -> Router`. Handlers only map
//! requests onto [`Service`] and its errors onto JSON bodies with a stable
//! code; the OpenAPI document is generated from the handlers and wire types.

mod bulk;
mod error;
pub mod model;

pub use error::ApiError;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;

use model::*;

use crate::engine::CallbackClaim;
use crate::history::{PopulationQuery, RunQuery};
use crate::server::HttpLimits;
use crate::service::{Caller, Service};

/// A JSON object body whose rejections are API errors. Only an object is
/// taken: serde would read a JSON array into a struct field by field.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match read_json(req, state, false, true).await? {
            Some(v) => Ok(Body(v)),
            None => Err(ApiError::bad_request(
                "invalid_json",
                "the body is empty: send a JSON object",
            )),
        }
    }
}

/// Like [`Body`], but an empty body is `None`.
pub struct MaybeBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for MaybeBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, state, true, true).await.map(MaybeBody)
    }
}

/// Any JSON value as the body (an upload), with [`Body`]'s other checks.
pub struct AnyJson(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for AnyJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match read_json(req, state, false, false).await? {
            Some(v) => Ok(AnyJson(v)),
            None => Err(ApiError::bad_request(
                "invalid_json",
                "the body is empty: send a JSON value",
            )),
        }
    }
}

async fn read_json<S: Send + Sync, T: DeserializeOwned>(
    req: Request,
    state: &S,
    empty_ok: bool,
    object_only: bool,
) -> Result<Option<T>, ApiError> {
    let json_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        });
    let deadline = req.extensions().get::<BodyTimeout>().map(|t| t.0);
    let read = axum::body::Bytes::from_request(req, state);
    let read = match deadline {
        Some(d) => tokio::time::timeout(d, read).await.map_err(|_| {
            ApiError::new(
                408,
                "body_timeout",
                format!(
                    "the body did not arrive within {}: send it at once, or ask the operator for a longer body timeout",
                    humantime::format_duration(d)
                ),
            )
        })?,
        None => read.await,
    };
    let bytes = read.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                413,
                "body_too_large",
                "the body is larger than this endpoint takes: send references (URIs), not data",
            )
        } else {
            ApiError::bad_request(
                "body_unreadable",
                "the body could not be read to its end: send it again",
            )
        }
    })?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None if empty_ok => return Ok(None),
        None => return Ok(None),
        Some(_) if !json_type => {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        Some(b'{') => {}
        Some(_) if !object_only => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the body must be a JSON object",
            ));
        }
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not what this endpoint takes: {e}"),
        )
    })
}

/// How long a request's body may take to arrive, from [`HttpLimits`]: a
/// request extension, so that the body extractors find it.
#[derive(Debug, Clone, Copy)]
struct BodyTimeout(std::time::Duration);

/// Refuses a request target longer than the limit before anything else runs.
async fn check_uri(
    State(max): State<usize>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > max {
        return ApiError::new(
            414,
            "uri_too_long",
            format!(
                "the request target is {len} bytes, more than {max}: send long values in a JSON body"
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// The attempt a callback's path token names, verified before the body is
/// read: a request without a valid token costs no body.
pub struct CallbackToken(pub CallbackClaim);

impl FromRequestParts<Service> for CallbackToken {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Service,
    ) -> Result<Self, Self::Rejection> {
        let PathParam(token) = PathParam::<String>::from_request_parts(parts, service).await?;
        service.callback_claim(&token).map(CallbackToken)
    }
}

/// Path parameters whose rejections are API errors.
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(PathParam(v)),
            Err(e) => Err(ApiError::bad_request("invalid_path", e.body_text())),
        }
    }
}

/// Query parameters whose rejections are API errors.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Params(v)),
            Err(e) => Err(query_error(e)),
        }
    }
}

fn query_error(e: QueryRejection) -> ApiError {
    ApiError::bad_request("invalid_query", e.body_text())
}

/// The authenticated caller.
pub struct Auth(pub Caller);

impl FromRequestParts<Service> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Service,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        service.authenticate(bearer).await.map(Auth)
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eflow",
        description = "The eflow runtime API: deploy flows, start and follow runs, decide approvals, receive callbacks, manage schedules and tenants. Every error is `{\"error\": {\"code\", \"message\"}}` with a stable code.",
        version = "1"
    ),
    paths(
        health, create_tenant, list_tenants, update_tenant, purge_tenant, deploy, list_flows, start_run, list_runs,
        get_run, run_events, step_results, run_value, signed_value, upload_value, cancel_run, retry_run, list_approvals, decide, callback, callbacks, list_schedules,
        create_schedule, update_schedule, delete_schedule, pause_schedule, resume_schedule, backfill, list_registry, stats, cluster,
        whoami, list_tenant_tokens, create_tenant_token, revoke_tenant_token, rotate_tenant_token,
        list_admin_tokens, create_admin_token, revoke_admin_token, rotate_admin_token,
        population, population_counts,
        bulk::preview_bulk, bulk::start_bulk, bulk::list_bulk, bulk::get_bulk, bulk::pause_bulk, bulk::resume_bulk, bulk::cancel_bulk
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Security, &Errors)
)]
pub struct ApiDoc;

/// Documents the errors every operation can answer by what it takes (a
/// token, a path, a query, a body), each with the error body; a 429 with its
/// `Retry-After`. The handlers name only the errors of their own operation.
struct Errors;

impl utoipa::Modify for Errors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                let mut statuses = vec![414];
                let secured = op.security.is_some();
                let params = op.parameters.as_deref().unwrap_or_default();
                if secured {
                    statuses.extend([401, 403, 404, 500]);
                }
                if path.contains('{') || params.iter().any(|p| p.parameter_in == ParameterIn::Query)
                {
                    statuses.push(400);
                }
                if op.request_body.is_some() {
                    statuses.extend([400, 408, 413, 415, 500, 503]);
                }
                let documented = op
                    .responses
                    .responses
                    .keys()
                    .filter_map(|k| k.parse::<u16>().ok());
                statuses.extend(documented.filter(|s| *s >= 400).collect::<Vec<_>>());
                for status in statuses {
                    op.responses
                        .responses
                        .insert(status.to_string(), error_response(status));
                }
            }
        }
    }
}

fn error_response(status: u16) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let description = match status {
        400 => "The request is malformed: the message says what to change",
        401 => "No token, or one this server does not know",
        403 => "The token may not do this",
        404 => "No such resource visible to this token",
        408 => "The body did not arrive in time",
        409 => "The resource's state does not allow this now",
        413 => "The body is too large",
        414 => "The request target (path and query) is too long",
        415 => "The body is not JSON",
        429 => "A quota is reached: try again after `Retry-After` seconds",
        503 => "The server is shutting down: try again shortly",
        _ => "The server failed; it is logged",
    };
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if status == 429 {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                )
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    utoipa::openapi::RefOr::T(response.build())
}

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What a process without the API's role serves: its health and metrics.
pub fn operations_router(service: Service) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(service)
}

/// Prometheus' scrape of this process (no credential: it names no tenant).
async fn metrics(State(s): State<Service>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&s).await,
    )
}

pub fn router(service: Service, limits: &HttpLimits) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/v1/health", get(health))
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/v1/tenants/{id}",
            axum::routing::delete(purge_tenant).patch(update_tenant),
        )
        .route(
            "/v1/flows",
            post(deploy)
                .get(list_flows)
                .layer(DefaultBodyLimit::max(limits.max_deploy_bytes)),
        )
        .route("/v1/runs", post(start_run).get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/events", get(run_events))
        .route("/v1/runs/{id}/steps/{step}/results", get(step_results))
        .route("/v1/runs/{id}/values/{hash}", get(run_value))
        .route(
            "/v1/tenants/{id}/values",
            post(upload_value).layer(DefaultBodyLimit::max(limits.max_value_bytes)),
        )
        .route("/v1/values/{token}", get(signed_value))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/runs/{id}/retry", post(retry_run))
        .route("/v1/runs/{id}/approvals/{step}", post(decide))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/callbacks", post(callbacks))
        .route("/v1/callbacks/{token}", post(callback))
        .route("/v1/schedules", get(list_schedules).post(create_schedule))
        .route(
            "/v1/schedules/{id}",
            axum::routing::patch(update_schedule).delete(delete_schedule),
        )
        .route("/v1/schedules/{id}/pause", post(pause_schedule))
        .route("/v1/schedules/{id}/resume", post(resume_schedule))
        .route("/v1/schedules/{id}/backfill", post(backfill))
        .route("/v1/population", get(population))
        .route("/v1/population/counts", get(population_counts))
        .route("/v1/registry", get(list_registry))
        .route("/v1/stats", get(stats))
        .route("/v1/cluster", get(cluster))
        .route("/v1/whoami", get(whoami))
        .route(
            "/v1/tenants/{id}/tokens",
            get(list_tenant_tokens).post(create_tenant_token),
        )
        .route(
            "/v1/tenants/{id}/tokens/{token}",
            axum::routing::delete(revoke_tenant_token),
        )
        .route(
            "/v1/tenants/{id}/tokens/{token}/rotate",
            post(rotate_tenant_token),
        )
        .route(
            "/v1/admin/tokens",
            get(list_admin_tokens).post(create_admin_token),
        )
        .route(
            "/v1/admin/tokens/{token}",
            axum::routing::delete(revoke_admin_token),
        )
        .route("/v1/admin/tokens/{token}/rotate", post(rotate_admin_token))
        .route("/v1/bulk", post(bulk::start_bulk).get(bulk::list_bulk))
        .route("/v1/bulk/preview", post(bulk::preview_bulk))
        .route("/v1/bulk/{id}", get(bulk::get_bulk))
        .route("/v1/bulk/{id}/pause", post(bulk::pause_bulk))
        .route("/v1/bulk/{id}/resume", post(bulk::resume_bulk))
        .route("/v1/bulk/{id}/cancel", post(bulk::cancel_bulk))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(service)
        .layer(axum::Extension(BodyTimeout(limits.body_timeout)))
        .layer(axum::middleware::from_fn_with_state(
            limits.max_uri_bytes,
            check_uri,
        ))
}

async fn not_found() -> ApiError {
    ApiError::new(
        404,
        "no_such_endpoint",
        "no such endpoint: see /v1/openapi.json for the API",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "method_not_allowed",
        "this endpoint does not take that method: see /v1/openapi.json",
    )
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    status: String,
}

/// Is the server up?
#[utoipa::path(get, path = "/v1/health", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Create a tenant (admin); returns its first token.
#[utoipa::path(post, path = "/v1/tenants", request_body = CreateTenant,
    responses((status = 200, body = TenantCreated), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn create_tenant(
    State(s): State<Service>,
    Auth(c): Auth,
    Body(req): Body<CreateTenant>,
) -> ApiResult<TenantCreated> {
    s.create_tenant(&c, req).await.map(Json)
}

/// The tenants the token may see.
#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = Vec<TenantView>)), security(("bearer" = [])))]
async fn list_tenants(State(s): State<Service>, Auth(c): Auth) -> ApiResult<Vec<TenantView>> {
    s.tenants(&c).await.map(Json)
}

/// Change a tenant (admin): its egress rules (`allow_egress`), replaced whole.
#[utoipa::path(patch, path = "/v1/tenants/{id}", params(("id" = String, Path)), request_body = UpdateTenant,
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn update_tenant(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
    Body(req): Body<UpdateTenant>,
) -> ApiResult<TenantView> {
    s.update_tenant(&c, &id, req).await.map(Json)
}

/// Delete a tenant and every row of it: flows, runs, events, schedules, approvals, registry, history (admin).
#[utoipa::path(delete, path = "/v1/tenants/{id}", params(("id" = String, Path)),
    responses((status = 200, body = PurgeResult), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn purge_tenant(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
) -> ApiResult<PurgeResult> {
    s.purge_tenant(&c, &id).await.map(Json)
}

/// Deploy compiled IR or `.eflow` sources as new flow versions.
#[utoipa::path(post, path = "/v1/flows", request_body = DeployRequest,
    responses((status = 200, body = DeployResult), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn deploy(
    State(s): State<Service>,
    Auth(c): Auth,
    Body(req): Body<DeployRequest>,
) -> ApiResult<DeployResult> {
    s.deploy(&c, req).await.map(Json)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TenantParam {
    tenant: Option<String>,
}

/// Deployed flow versions.
#[utoipa::path(get, path = "/v1/flows", params(TenantParam), responses((status = 200, body = Vec<FlowView>)), security(("bearer" = [])))]
async fn list_flows(
    State(s): State<Service>,
    Auth(c): Auth,
    Params(p): Params<TenantParam>,
) -> ApiResult<Vec<FlowView>> {
    s.flows(&c, p.tenant.as_deref()).await.map(Json)
}

/// Start a run of a deployed flow.
#[utoipa::path(post, path = "/v1/runs", request_body = StartRun,
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)), security(("bearer" = [])))]
async fn start_run(
    State(s): State<Service>,
    Auth(c): Auth,
    Body(req): Body<StartRun>,
) -> ApiResult<RunView> {
    s.start_run(&c, req).await.map(Json)
}

/// Runs from history, newest first, filtered, a page at a time. It holds
/// every run the engine committed before the request (the history is waited
/// for, up to a second).
#[utoipa::path(get, path = "/v1/runs", params(RunFilter), responses((status = 200, body = Page<RunSummary>)), security(("bearer" = [])))]
async fn list_runs(
    State(s): State<Service>,
    Auth(c): Auth,
    Params(f): Params<RunFilter>,
) -> ApiResult<Page<RunSummary>> {
    s.list_runs(&c, run_query(&f)?).await.map(Json)
}

/// A flow's population: its keys (the models, the customers its runs
/// belong to), each with its latest run, a page at a time by key; with
/// `failed_in_a_row`, the longest streaks of failures first. Every filter
/// reads an index; the history is waited for as by the run list.
#[utoipa::path(get, path = "/v1/population", params(PopulationFilter),
    responses((status = 200, body = Page<PopulationMember>)), security(("bearer" = [])))]
async fn population(
    State(s): State<Service>,
    Auth(c): Auth,
    Params(f): Params<PopulationFilter>,
) -> ApiResult<Page<PopulationMember>> {
    s.population(&c, population_query(&f)?).await.map(Json)
}

/// How many keys of a flow have their latest run in each status and on
/// each version: counts kept up to date as runs change.
#[utoipa::path(get, path = "/v1/population/counts", params(PopulationCountsFilter),
    responses((status = 200, body = PopulationCountsView)), security(("bearer" = [])))]
async fn population_counts(
    State(s): State<Service>,
    Auth(c): Auth,
    Params(f): Params<PopulationCountsFilter>,
) -> ApiResult<PopulationCountsView> {
    let flow = flow_named(f.flow.as_deref())?;
    s.population_counts(&c, flow, f.tenant.as_deref())
        .await
        .map(Json)
}

fn flow_named(flow: Option<&str>) -> Result<&str, ApiError> {
    match flow {
        Some(f) if !f.is_empty() => Ok(f),
        _ => Err(ApiError::bad_request(
            "flow_required",
            "name the flow whose population to read with `flow`",
        )),
    }
}

/// The history query a population filter asks (the API's and the
/// console's): a flow named, a run status, a streak of at least 1.
pub fn population_query(f: &PopulationFilter) -> Result<PopulationQuery, ApiError> {
    let flow = flow_named(f.flow.as_deref())?.to_string();
    check_status(f.status.as_deref())?;
    if f.failed_in_a_row == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_failed_in_a_row",
            "`failed_in_a_row` is at least 1 (2: keys whose latest two runs failed); leave it out for every key",
        ));
    }
    Ok(PopulationQuery {
        tenant: f.tenant.clone(),
        flow,
        status: f.status.clone(),
        version: f.version.clone(),
        failed_in_a_row: f.failed_in_a_row,
        before: None,
        cursor: f.cursor.clone(),
        limit: f.limit.unwrap_or(100),
    })
}

fn check_status(status: Option<&str>) -> Result<(), ApiError> {
    if let Some(st) = status
        && !RUN_STATUSES.contains(&st)
    {
        return Err(ApiError::bad_request(
            "invalid_status",
            format!(
                "`{st}` is not a run status: use one of {}",
                RUN_STATUSES.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Every status a run can have, in the order a run goes through them.
pub const RUN_STATUSES: [&str; 5] = ["created", "running", "succeeded", "failed", "cancelled"];

/// The history query a run filter asks (the API's and the console's): its
/// status one of the run statuses, its times RFC 3339.
pub fn run_query(f: &RunFilter) -> Result<RunQuery, ApiError> {
    let time = |v: &Option<String>| -> Result<Option<u64>, ApiError> {
        v.as_deref()
            .map(|t| {
                eflow_core::time::parse_rfc3339(t)
                    .and_then(|x| u64::try_from(x).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_time",
                            format!("`{t}` is not an RFC 3339 time"),
                        )
                    })
            })
            .transpose()
    };
    check_status(f.status.as_deref())?;
    Ok(RunQuery {
        tenant: f.tenant.clone(),
        flow: f.flow.clone(),
        version: f.version.clone(),
        status: f.status.clone(),
        step: f.step.clone(),
        error: f.error.clone(),
        key: f.key.clone(),
        since: time(&f.since)?,
        until: time(&f.until)?,
        cursor: f.cursor.clone(),
        limit: f.limit.unwrap_or(100),
    })
}

/// A run's current state.
#[utoipa::path(get, path = "/v1/runs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_run(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
) -> ApiResult<RunView> {
    s.get_run(&c, &id).await.map(Json)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventsParam {
    /// Events after this sequence number.
    after: Option<u64>,
    limit: Option<u32>,
}

/// A run's events, in order.
#[utoipa::path(get, path = "/v1/runs/{id}/events", params(("id" = String, Path), EventsParam),
    responses((status = 200, body = Vec<EventView>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn run_events(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
    Params(p): Params<EventsParam>,
) -> ApiResult<Vec<EventView>> {
    s.run_events(&c, &id, p.after, p.limit.unwrap_or(1000))
        .await
        .map(Json)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ResultsParam {
    /// Results after this index.
    after: Option<u32>,
    /// At most this many (1 to 1,000; 1,000 when left out).
    limit: Option<u32>,
}

/// A fan-out's results: the outputs of its children that succeeded, in input order, a page at a time.
#[utoipa::path(get, path = "/v1/runs/{id}/steps/{step}/results", params(("id" = String, Path), ("step" = String, Path), ResultsParam),
    responses((status = 200, body = Vec<ResultView>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn step_results(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam((id, step)): PathParam<(String, String)>,
    Params(p): Params<ResultsParam>,
) -> ApiResult<Vec<ResultView>> {
    s.step_results(&c, &id, &step, p.after, p.limit.unwrap_or(1000))
        .await
        .map(Json)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ValueParam {
    /// For a list: the elements after this index (from the start when left out).
    after: Option<u64>,
    /// For a list: at most this many elements (1 to 10,000; 1,000 when left out).
    limit: Option<u32>,
}

/// A value a run keeps by reference (an input, output or result larger than 2 KiB; its `hash` is in the run's view): a list a page of elements at a time, any other value whole.
#[utoipa::path(get, path = "/v1/runs/{id}/values/{hash}", params(("id" = String, Path), ("hash" = String, Path), ValueParam),
    responses((status = 200, body = ValuePage), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn run_value(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam((id, hash)): PathParam<(String, String)>,
    Params(p): Params<ValueParam>,
) -> ApiResult<ValuePage> {
    s.run_value_page(&c, &id, &hash, p.after, p.limit.unwrap_or(1000))
        .await
        .map(Json)
}

/// A value an invocation gives by URL (an input larger than the binding's `max_inline`), read by the remote system a page at a time. The token in the path is the credential; it expires with the attempt's URL.
#[utoipa::path(get, path = "/v1/values/{token}", params(("token" = String, Path), ValueParam),
    responses((status = 200, body = ValuePage), (status = 401, body = ErrorBody)))]
async fn signed_value(
    State(s): State<Service>,
    PathParam(token): PathParam<String>,
    Params(p): Params<ValueParam>,
) -> ApiResult<ValuePage> {
    s.signed_value_page(&token, p.after, p.limit.unwrap_or(1000))
        .await
        .map(Json)
}

/// Upload a value of tenant `id` (any JSON value, up to `eflow serve --max-value-bytes`) to start its runs with it by reference: give its `hash` in `input_refs`. The same value twice is kept once. Values no run refers to are deleted after a day.
#[utoipa::path(post, path = "/v1/tenants/{id}/values", params(("id" = String, Path)), request_body = Object,
    responses((status = 200, body = ValueRefView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)), security(("bearer" = [])))]
async fn upload_value(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(tenant): PathParam<String>,
    AnyJson(v): AnyJson,
) -> ApiResult<ValueRefView> {
    s.upload_value(&c, Some(&tenant), &v)
        .await
        .map(|(_, r)| Json(r))
}

/// Cancel a run and its subflows.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", params(("id" = String, Path)), request_body = CancelRun,
    responses((status = 200, body = RunView), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn cancel_run(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
    MaybeBody(body): MaybeBody<CancelRun>,
) -> ApiResult<RunView> {
    // The body is optional: an empty one cancels without a reason.
    let reason = body.and_then(|b| b.reason);
    s.cancel_run(&c, &id, reason).await.map(Json)
}

/// Retry a failed run from its failed step.
///
/// The same run goes on: its failed steps (and those the failure stopped) start again as new attempts, and the steps that succeeded keep their outputs. A `join all` fan-out goes on from where it stood: its succeeded children are not run again. Only a failed top-level run (retry a subflow child's parent), and not one whose failed step is a `join any` or `join at_least` fan-out or a `repeat`; within the server's `--retry-window` (7 days by default). The run counts among its tenant's active runs again (429 at its quota). Its events record a `retry_requested` event with who asked and the reason; its view's `retries` counts the retries.
#[utoipa::path(post, path = "/v1/runs/{id}/retry", params(("id" = String, Path)), request_body = RetryRun,
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody), (status = 429, body = ErrorBody)), security(("bearer" = [])))]
async fn retry_run(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
    MaybeBody(body): MaybeBody<RetryRun>,
) -> ApiResult<RunView> {
    // The body is optional: an empty one retries without a reason.
    let reason = body.and_then(|b| b.reason);
    s.retry_run(&c, &id, reason).await.map(Json)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ApprovalsParam {
    tenant: Option<String>,
    /// Only those still waiting (default true).
    pending: Option<bool>,
}

/// Approvals, oldest first.
#[utoipa::path(get, path = "/v1/approvals", params(ApprovalsParam), responses((status = 200, body = Vec<ApprovalView>)), security(("bearer" = [])))]
async fn list_approvals(
    State(s): State<Service>,
    Auth(c): Auth,
    Params(p): Params<ApprovalsParam>,
) -> ApiResult<Vec<ApprovalView>> {
    s.approvals(&c, p.tenant.as_deref(), p.pending.unwrap_or(true))
        .await
        .map(Json)
}

/// Approve or reject a waiting approval step.
#[utoipa::path(post, path = "/v1/runs/{id}/approvals/{step}", params(("id" = String, Path), ("step" = String, Path)), request_body = Decide,
    responses((status = 200, body = ApprovalView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn decide(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam((id, step)): PathParam<(String, String)>,
    Body(d): Body<Decide>,
) -> ApiResult<ApprovalView> {
    // A tenant names the run by its own id: decide on the stored one, show the tenant's.
    let run = s.run_key(&c, &id).await?;
    s.decide(&c, &run, &step, d)
        .await
        .map(|v| Json(crate::service::shown_approval(&c, v)))
}

/// A remote system reports an attempt's result. The token in the path (from the invocation's `callback_url`) is the credential.
#[utoipa::path(post, path = "/v1/callbacks/{token}", params(("token" = String, Path)), request_body = Callback,
    responses((status = 200, body = CallbackAccepted), (status = 401, body = ErrorBody)))]
async fn callback(
    State(s): State<Service>,
    CallbackToken(claim): CallbackToken,
    Body(b): Body<Callback>,
) -> ApiResult<CallbackAccepted> {
    s.callback(claim, b).await.map(Json)
}

/// A remote system reports the results of many attempts at once: each report carries the token of its `callback_url`, and is answered as that callback would be, in order. A wrong token or report fails that report alone.
#[utoipa::path(post, path = "/v1/callbacks", request_body = CallbackBatch,
    responses((status = 200, body = CallbackBatchAccepted), (status = 400, body = ErrorBody)))]
async fn callbacks(
    State(s): State<Service>,
    Body(b): Body<CallbackBatch>,
) -> ApiResult<CallbackBatchAccepted> {
    s.callbacks(b).await.map(Json)
}

/// Schedules of deployed flows, declared and made through the API, in id
/// order, a page at a time: pass the last `id` of a page as `cursor` for the next.
#[utoipa::path(get, path = "/v1/schedules", params(ScheduleFilter), responses((status = 200, body = Vec<ScheduleView>)), security(("bearer" = [])))]
async fn list_schedules(
    State(s): State<Service>,
    Auth(c): Auth,
    Params(f): Params<ScheduleFilter>,
) -> ApiResult<Vec<ScheduleView>> {
    s.schedule_page(&c, f).await.map(Json)
}

/// Make a schedule of a deployed flow: its own cron, zone, policies, input and key.
#[utoipa::path(post, path = "/v1/schedules", request_body = ScheduleRequest,
    responses((status = 200, body = ScheduleView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_schedule(
    State(s): State<Service>,
    Auth(c): Auth,
    Body(b): Body<ScheduleRequest>,
) -> ApiResult<ScheduleView> {
    s.create_schedule(&c, b).await.map(Json)
}

/// Change a schedule made through the API: the fields given replace its own.
#[utoipa::path(patch, path = "/v1/schedules/{id}", params(("id" = String, Path)), request_body = ScheduleRequest,
    responses((status = 200, body = ScheduleView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_schedule(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
    Body(b): Body<ScheduleRequest>,
) -> ApiResult<ScheduleView> {
    s.update_schedule(&c, &id, b).await.map(Json)
}

/// Delete a schedule made through the API (the runs it started stay); answers what it was.
#[utoipa::path(delete, path = "/v1/schedules/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_schedule(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
) -> ApiResult<ScheduleView> {
    s.delete_schedule(&c, &id).await.map(Json)
}

/// Stop a schedule from starting runs.
#[utoipa::path(post, path = "/v1/schedules/{id}/pause", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn pause_schedule(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
) -> ApiResult<ScheduleView> {
    s.pause_schedule(&c, &id, true).await.map(Json)
}

/// Resume a paused schedule; fire times missed while paused are not started.
#[utoipa::path(post, path = "/v1/schedules/{id}/resume", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn resume_schedule(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
) -> ApiResult<ScheduleView> {
    s.pause_schedule(&c, &id, false).await.map(Json)
}

/// Start one run per fire time in a range, whatever the catch-up policy.
#[utoipa::path(post, path = "/v1/schedules/{id}/backfill", params(("id" = String, Path)), request_body = Backfill,
    responses((status = 200, body = BackfillResult), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)), security(("bearer" = [])))]
async fn backfill(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
    Body(b): Body<Backfill>,
) -> ApiResult<BackfillResult> {
    s.backfill(&c, &id, b).await.map(Json)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RegistryParam {
    tenant: Option<String>,
    /// `model` or `dataset`.
    kind: Option<String>,
    name: Option<String>,
}

/// Registered models and datasets with their lineage.
#[utoipa::path(get, path = "/v1/registry", params(RegistryParam), responses((status = 200, body = Vec<RegistryView>)), security(("bearer" = [])))]
async fn list_registry(
    State(s): State<Service>,
    Auth(c): Auth,
    Params(p): Params<RegistryParam>,
) -> ApiResult<Vec<RegistryView>> {
    s.registry(
        &c,
        p.tenant.as_deref(),
        p.kind.as_deref(),
        p.name.as_deref(),
    )
    .await
    .map(Json)
}

/// Engine counters since the server started (admin).
#[utoipa::path(get, path = "/v1/stats", responses((status = 200, body = StatsView), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn stats(State(s): State<Service>, Auth(c): Auth) -> ApiResult<StatsView> {
    s.stats(&c).await.map(Json)
}

/// The cluster (admin): the server processes alive, who holds each shard with which fencing token until when, and how far each consumer of the event stream is behind.
#[utoipa::path(get, path = "/v1/cluster", responses((status = 200, body = ClusterView), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn cluster(State(s): State<Service>, Auth(c): Auth) -> ApiResult<ClusterView> {
    s.cluster(&c).await.map(Json)
}

/// The caller, as its token says: the token's id and name, and the tenant it acts for.
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, body = Whoami), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
async fn whoami(State(s): State<Service>, Auth(c): Auth) -> ApiResult<Whoami> {
    s.whoami(&c).await.map(Json)
}

/// A tenant's tokens (the admin, or a token of the tenant): never a secret.
#[utoipa::path(get, path = "/v1/tenants/{id}/tokens", params(("id" = String, Path)),
    responses((status = 200, body = Vec<TokenView>), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn list_tenant_tokens(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
) -> ApiResult<Vec<TokenView>> {
    s.tokens(&c, Some(&id)).await.map(Json)
}

/// Make a token for a tenant (admin); its secret is in the answer, once.
#[utoipa::path(post, path = "/v1/tenants/{id}/tokens", params(("id" = String, Path)), request_body = CreateToken,
    responses((status = 200, body = TokenCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn create_tenant_token(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(id): PathParam<String>,
    Body(req): Body<CreateToken>,
) -> ApiResult<TokenCreated> {
    s.create_token(&c, Some(&id), req).await.map(Json)
}

/// Revoke a tenant's token (the admin, or the token itself).
#[utoipa::path(delete, path = "/v1/tenants/{id}/tokens/{token}", params(("id" = String, Path), ("token" = String, Path)),
    responses((status = 200, body = TokenView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn revoke_tenant_token(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam((id, token)): PathParam<(String, String)>,
) -> ApiResult<TokenView> {
    s.revoke_token(&c, Some(&id), &token).await.map(Json)
}

/// Replace a tenant's token with a new secret (the admin, or the token itself).
#[utoipa::path(post, path = "/v1/tenants/{id}/tokens/{token}/rotate", params(("id" = String, Path), ("token" = String, Path)), request_body = RotateToken,
    responses((status = 200, body = TokenCreated), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn rotate_tenant_token(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam((id, token)): PathParam<(String, String)>,
    MaybeBody(req): MaybeBody<RotateToken>,
) -> ApiResult<TokenCreated> {
    s.rotate_token(&c, Some(&id), &token, req.unwrap_or_default())
        .await
        .map(Json)
}

/// The admin tokens (admin).
#[utoipa::path(get, path = "/v1/admin/tokens", responses((status = 200, body = Vec<TokenView>), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn list_admin_tokens(State(s): State<Service>, Auth(c): Auth) -> ApiResult<Vec<TokenView>> {
    s.tokens(&c, None).await.map(Json)
}

/// Make an admin token (admin); its secret is in the answer, once.
#[utoipa::path(post, path = "/v1/admin/tokens", request_body = CreateToken,
    responses((status = 200, body = TokenCreated), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn create_admin_token(
    State(s): State<Service>,
    Auth(c): Auth,
    Body(req): Body<CreateToken>,
) -> ApiResult<TokenCreated> {
    s.create_token(&c, None, req).await.map(Json)
}

/// Revoke an admin token (admin); the last one that works is refused.
#[utoipa::path(delete, path = "/v1/admin/tokens/{token}", params(("token" = String, Path)),
    responses((status = 200, body = TokenView), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn revoke_admin_token(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(token): PathParam<String>,
) -> ApiResult<TokenView> {
    s.revoke_token(&c, None, &token).await.map(Json)
}

/// Replace an admin token with a new secret (admin).
#[utoipa::path(post, path = "/v1/admin/tokens/{token}/rotate", params(("token" = String, Path)), request_body = RotateToken,
    responses((status = 200, body = TokenCreated), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn rotate_admin_token(
    State(s): State<Service>,
    Auth(c): Auth,
    PathParam(token): PathParam<String>,
    MaybeBody(req): MaybeBody<RotateToken>,
) -> ApiResult<TokenCreated> {
    s.rotate_token(&c, None, &token, req.unwrap_or_default())
        .await
        .map(Json)
}
