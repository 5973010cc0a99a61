//! The API's one error: an HTTP status, a stable code and a message, and how
//! each component's error maps onto it (the body is `{"error": {code, message}}`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eflow_core::Rejection;
use serde::{Deserialize, Serialize};

use super::model::{ErrorBody, ErrorDetail};
use crate::{engine, history, store};

/// An error for the API: an HTTP status, a stable code and a message that says
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub code: String,
    pub message: String,
    /// For a 429: how many seconds to wait before trying again (`Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

/// The longest message an error answers with: what a client echoes into a
/// path or body comes back cut, not whole.
pub const MAX_MESSAGE: usize = 1024;

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }
    /// A 429 that tells the client when to try again.
    pub fn too_many(code: &str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(429, code, message)
        }
    }
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(404, "not_found", format!("{what} `{id}` does not exist"))
    }
    pub fn forbidden() -> Self {
        Self::new(
            403,
            "forbidden",
            "this token may not do that: use a token of the tenant, or an admin token",
        )
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            500,
            "internal",
            "the server failed to do this; it is logged, try again",
        )
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<engine::Error> for ApiError {
    fn from(e: engine::Error) -> Self {
        match e {
            engine::Error::Rejected(Rejection::InvalidInput { errors }) => ApiError::bad_request(
                "invalid_input",
                format!(
                    "the input does not fit the flow's parameters: {}",
                    errors.join("; ")
                ),
            ),
            engine::Error::Rejected(Rejection::Finished) => ApiError::new(
                409,
                "run_finished",
                "the run has finished: nothing changes it any more",
            ),
            engine::Error::Rejected(r @ Rejection::NotFailed { .. }) => {
                ApiError::new(409, "not_failed", r.to_string())
            }
            engine::Error::Rejected(r @ Rejection::NotRetryable { .. }) => {
                ApiError::new(409, "not_retryable", r.to_string())
            }
            engine::Error::Rejected(r) => ApiError::new(409, "rejected", r.to_string()),
            engine::Error::NoSuchRun(id) => ApiError::not_found("run", &id),
            engine::Error::TenantStopped(t) => ApiError::not_found("tenant", &t),
            engine::Error::Stopped => ApiError::new(
                503,
                "unavailable",
                "the server is shutting down: try again shortly",
            ),
            e => ApiError::internal(e),
        }
    }
}

impl From<history::Error> for ApiError {
    fn from(e: history::Error) -> Self {
        ApiError::internal(e)
    }
}

impl ApiError {
    /// The body it answers with, its message cut to [`MAX_MESSAGE`].
    pub fn body(self) -> ErrorBody {
        let mut message = self.message;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let body = self.body();
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let secs = retry_after.unwrap_or(1).max(1);
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
