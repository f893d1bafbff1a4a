//! One error type for every handler, rendered as the RFC 9457 problem body of API.md.
//!
//! Opaque variants (`Db`, `Internal`) are logged with their cause chain and answered with a bare
//! 500 that carries only the request id: no SQL, no file path, no stack ever leaves the process.
//! A database that cannot serve at all (connection refused or lost, disk full, read-only file:
//! `db::unavailable_cause`) is `DbUnavailable` instead: 503 `DATABASE_UNAVAILABLE` with
//! `Retry-After`, the cause in the log only.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::request_id;

/// A field-level validation failure, as listed in `details`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400 `MALFORMED_JSON` and other 400s with a stable code.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("authentication required")]
    Unauthenticated,
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// 429 `RATE_LIMITED` / `QUOTA_EXCEEDED`, with `Retry-After`.
    #[error("{message}")]
    TooMany {
        code: &'static str,
        message: String,
        retry_after_s: u64,
    },
    /// Any other status with a stable code (401 INVALID_CREDENTIALS, …).
    #[error("{message}")]
    Status {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// 409 `CHURN_LIMIT_REACHED`: the license has freed as many seats in the last 30 days as its
    /// product allows; the next one is possible at `retry_at_ms` (unix ms), said in the body's
    /// `retry_at` and in `Retry-After`.
    #[error("{message}")]
    ChurnLimitReached { message: String, retry_at_ms: i64 },
    #[error("database error")]
    Db(#[source] sqlx::Error),
    /// 503 `DATABASE_UNAVAILABLE`; `cause` goes to the log, never to the client.
    #[error("database unavailable: {cause}")]
    DbUnavailable { cause: String },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match crate::db::unavailable_cause(&e) {
            Some(cause) => Error::DbUnavailable { cause },
            None => Error::Db(e),
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        let unavailable = e
            .chain()
            .find_map(|c| c.downcast_ref::<sqlx::Error>())
            .and_then(crate::db::unavailable_cause);
        match unavailable {
            Some(cause) => Error::DbUnavailable { cause },
            None => Error::Internal(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Error::NotFound {
            code,
            message: message.into(),
        }
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Error::Forbidden {
            code,
            message: message.into(),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest {
            code,
            message: message.into(),
        }
    }
    /// A single-field 422.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation(vec![FieldError::new(field, message)])
    }
    pub fn status(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Error::Status {
            status,
            code,
            message: message.into(),
        }
    }
    /// A database error shared by several waiters (a coalesced cache load): 503 when the database
    /// is unavailable, else a 500 naming `context` in the log.
    pub fn shared_db(context: &str, e: &sqlx::Error) -> Self {
        match crate::db::unavailable_cause(e) {
            Some(cause) => Error::DbUnavailable { cause },
            None => Error::Internal(anyhow::anyhow!("{context}: {e}")),
        }
    }

    /// The generic 404 for an object the caller may not see or that does not exist.
    pub fn no_such(what: &str) -> Self {
        Error::not_found("NOT_FOUND", format!("{what} not found"))
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Conflict { .. } | Error::ChurnLimitReached { .. } => StatusCode::CONFLICT,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unavailable { .. } | Error::DbUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Status { status, .. } => *status,
            Error::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Db(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest { code, .. }
            | Error::Forbidden { code, .. }
            | Error::NotFound { code, .. }
            | Error::Conflict { code, .. }
            | Error::Unavailable { code, .. }
            | Error::Status { code, .. }
            | Error::TooMany { code, .. } => code,
            Error::Validation(_) => "VALIDATION_FAILED",
            Error::Unauthenticated => "UNAUTHENTICATED",
            Error::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Error::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Error::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Error::DbUnavailable { .. } => "DATABASE_UNAVAILABLE",
            Error::ChurnLimitReached { .. } => "CHURN_LIMIT_REACHED",
            Error::Db(_) | Error::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// What the body says: never the cause of an opaque error.
    pub(crate) fn public_message(&self) -> String {
        match self {
            Error::Validation(_) => "Validation failed".into(),
            Error::Unauthenticated => "Authentication required".into(),
            Error::UnsupportedMediaType => "Expected Content-Type: application/json".into(),
            Error::PayloadTooLarge => "Request body is too large".into(),
            Error::MethodNotAllowed => "Method not allowed for this route".into(),
            Error::Db(_) | Error::Internal(_) => "Internal server error".into(),
            Error::DbUnavailable { .. } => "The database is unavailable; try again shortly".into(),
            other => other.to_string(),
        }
    }
}

/// An error answer (`application/problem+json`, every 4xx and 5xx): the RFC 9457 members `type`,
/// `title`, `status` and `detail`, plus the members the TypeScript SDK (`@ecosire/sdk`) reads into
/// its `EcosireError`: `code` → `error.code`, `message` → `error.message`, `details` →
/// `error.details` and `request_id` → `error.requestId` (the `X-Request-Id` header when present).
/// `statusCode` and `error` repeat `status` and `title` for clients that expect NestJS-style errors.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub struct Problem {
    /// A URL naming the kind of error: `https://docs.ecosire.com/errors/` + `code` in kebab case.
    #[serde(rename = "type")]
    pub kind: String,
    /// The reason phrase of `status`.
    pub title: String,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The same human-readable text as `message`.
    pub detail: String,
    /// A stable SCREAMING_SNAKE name of the error: branch on this, not on the wording.
    pub code: String,
    /// The same number as `status`.
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    /// The same text as `title`.
    pub error: String,
    /// What went wrong, for people; its wording may change.
    pub message: String,
    /// The fields that failed validation (`VALIDATION_FAILED` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
    /// The request's id, as in the `X-Request-Id` header: quote it when asking for support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Why the instance is not ready (`GET /api/ready` only), e.g. "connection refused".
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "connection refused")]
    pub cause: Option<String>,
    /// When the refused action becomes possible again (`CHURN_LIMIT_REACHED`); `Retry-After`
    /// says the same in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<crate::timestamp::Timestamp>,
}

impl Problem {
    /// The body for `status` and `code`; `type` and `title` follow from them.
    pub fn new(
        status: StatusCode,
        code: &str,
        message: String,
        details: Option<Vec<FieldError>>,
        request_id: Option<String>,
    ) -> Self {
        let title = status.canonical_reason().unwrap_or("Error").to_string();
        Problem {
            kind: format!(
                "https://docs.ecosire.com/errors/{}",
                code.to_ascii_lowercase().replace('_', "-")
            ),
            title: title.clone(),
            status: status.as_u16(),
            detail: message.clone(),
            code: code.to_string(),
            status_code: status.as_u16(),
            error: title,
            message,
            details,
            request_id,
            cause: None,
            retry_at: None,
        }
    }
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Builds a problem response; used by `Error` and by the few places that answer without one.
pub fn problem(
    status: StatusCode,
    code: &str,
    message: String,
    details: Option<Vec<FieldError>>,
) -> Response {
    problem_with_cause(status, code, message, details, None)
}

/// `problem` with a `cause` member (readiness).
pub fn problem_with_cause(
    status: StatusCode,
    code: &str,
    message: String,
    details: Option<Vec<FieldError>>,
    cause: Option<String>,
) -> Response {
    let body = Problem {
        cause,
        ..Problem::new(status, code, message, details, request_id::current())
    };
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Db(e) => tracing::error!(error = %e, debug = ?e, "database error"),
            Error::Internal(e) => tracing::error!(error = format!("{e:#}"), "internal error"),
            Error::DbUnavailable { cause } => log_unavailable(cause),
            _ => {}
        }
        if let Error::TooMany {
            code,
            message,
            retry_after_s,
        } = self
        {
            return too_many(code, message, retry_after_s);
        }
        if let Error::ChurnLimitReached {
            message,
            retry_at_ms,
        } = self
        {
            return churn_limit(message, retry_at_ms);
        }
        let status = self.status_code();
        let code = self.code();
        let message = self.public_message();
        let unauthenticated = matches!(self, Error::Unauthenticated);
        // A momentary shortage (hashing slots, the database) says when to come back.
        let retry_soon = matches!(
            self,
            Error::Unavailable {
                code: "BUSY" | "DATABASE_UNAVAILABLE",
                ..
            } | Error::DbUnavailable { .. }
        );
        let details = match self {
            Error::Validation(d) => Some(d),
            _ => None,
        };
        let mut res = problem(status, code, message, details);
        if retry_soon {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if unauthenticated {
            // RFC 9110 §11.6.1: a 401 names the scheme it wants.
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// Logs "database unavailable: <cause>" at most once a second (an outage fails every request;
/// the log should say so, not drown), with the number of requests failed since the last line.
fn log_unavailable(cause: &str) {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
    static LAST_MS: AtomicI64 = AtomicI64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = crate::timestamp::now_ms();
    let last = LAST_MS.load(Relaxed);
    if now - last >= 1000
        && LAST_MS
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
    {
        let failed = SUPPRESSED.swap(0, Relaxed) + 1;
        tracing::error!(
            cause,
            failed_requests = failed,
            "database unavailable: {cause}; answering 503 DATABASE_UNAVAILABLE"
        );
    } else {
        SUPPRESSED.fetch_add(1, Relaxed);
    }
}

/// Turns the constraint violations of a write into the caller's answer (API design rule: insert,
/// then map the violation; never pre-check and race). Anything else stays a database error.
pub trait ResultExt<T> {
    /// On a unique-constraint violation, answers `f()` instead.
    fn on_unique(self, f: impl FnOnce() -> Result<T>) -> Result<T>;
    /// On a foreign-key violation, answers `f()` instead.
    fn on_foreign_key(self, f: impl FnOnce() -> Result<T>) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn on_unique(self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        match self {
            Err(e) if is_unique_violation(&e) => f(),
            other => Ok(other?),
        }
    }
    fn on_foreign_key(self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        match self {
            Err(e) if is_foreign_key_violation(&e) => f(),
            other => Ok(other?),
        }
    }
}

/// True when a database error is a unique-constraint violation (both backends).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

/// True when a database error is a foreign-key violation (both backends).
pub fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.is_foreign_key_violation(),
        _ => false,
    }
}

/// The 409 of `Error::ChurnLimitReached`: `retry_at` in the body, whole seconds (rounded up) in
/// `Retry-After`.
fn churn_limit(message: String, retry_at_ms: i64) -> Response {
    let status = StatusCode::CONFLICT;
    let body = Problem {
        retry_at: Some(crate::timestamp::Timestamp(retry_at_ms)),
        ..Problem::new(
            status,
            "CHURN_LIMIT_REACHED",
            message,
            None,
            request_id::current(),
        )
    };
    let wait_s = ((retry_at_ms - crate::timestamp::now_ms()).max(0) as u64).div_ceil(1000);
    let mut res = (status, axum::Json(body)).into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    headers.insert(header::RETRY_AFTER, HeaderValue::from(wait_s));
    res
}

/// `Retry-After` for a 429 built from an `Error::TooMany`.
pub fn too_many(code: &str, message: String, retry_after_s: u64) -> Response {
    let mut res = problem(StatusCode::TOO_MANY_REQUESTS, code, message, None);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    res
}
