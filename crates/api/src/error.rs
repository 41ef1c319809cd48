//! The one mapping from errors to HTTP: status, stable snake_case `code`, message, details.
//!
//! Body: `{"error": {"code": "...", "message": "...", "details": {...}}}`. Codes are part of the
//! API and never change meaning.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tollgate_core::meter::MeterError;
use tollgate_core::usage::UsageError;
use tollgate_store::StoreError;
use tollgate_store::engine::{MeterChangeError, QueryError, SubmitError};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Structured details, if any.
    pub details: Option<Value>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(details), Some(obj)) = (self.details, error.as_object_mut()) {
            obj.insert("details".into(), details);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Corrupt(_) | StoreError::SchemaTooNew { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        tracing::error!(error = %e, "storage error");
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "writer_busy",
                "the ingest queue is full; retry after a moment",
            ),
            SubmitError::Store(e) => e.into(),
        }
    }
}

impl From<MeterError> for ApiError {
    fn from(e: MeterError) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())
    }
}

impl From<MeterChangeError> for ApiError {
    fn from(e: MeterChangeError) -> Self {
        match e {
            MeterChangeError::Store(e) => e.into(),
            MeterChangeError::TooMany { .. } => {
                ApiError::new(StatusCode::CONFLICT, "meters_max", e.to_string())
            }
        }
    }
}

impl From<UsageError> for ApiError {
    fn from(e: UsageError) -> Self {
        let status = match e {
            UsageError::TooManyRows { .. } | UsageError::TooManyWindows { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::MeterNotFound(_) => ApiError::not_found("meter_not_found", e.to_string()),
            QueryError::Usage(e) => e.into(),
            QueryError::Store(e) => e.into(),
        }
    }
}

/// A blocking task that panicked or was cancelled.
pub(crate) fn join_error(e: tokio::task::JoinError) -> ApiError {
    tracing::error!(error = %e, "blocking task failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

impl From<crate::portal::token::TokenError> for ApiError {
    fn from(e: crate::portal::token::TokenError) -> Self {
        // Missing, altered, foreign-secret and expired links all answer 401: the holder has
        // to ask for a new link, whatever the reason.
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

/// 403 for a valid portal link that addresses another customer's object.
pub fn portal_forbidden(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "portal_forbidden",
        format!("this {what} belongs to another customer"),
    )
}
