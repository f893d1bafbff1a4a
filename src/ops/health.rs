//! Liveness and readiness.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::limits::Public;
use crate::http::extract::Json;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(root))
        .routes(routes!(health))
        .routes(routes!(ready))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/api/health", tag = "operations", responses((status = 200, body = Health)))]
pub async fn health(_rate: Public) -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: &'static str,
    pub details: ReadinessDetails,
}

/// What readiness found, part by part.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessDetails {
    #[schema(example = "ok")]
    pub database: &'static str,
    /// How per-minute rate limits are enforced: `shared (redis)` across instances, `local` to
    /// this instance (no `ECOSIRE_REDIS_URL`), `local (redis unreachable: CAUSE)` while Redis does
    /// not answer (still ready: limits apply, per instance), or `off`.
    #[schema(example = "shared (redis)")]
    pub rate_limits: String,
}

/// Readiness: the database answers (within a few seconds), and how rate limits are enforced.
/// Not ready: 503 `DATABASE_UNAVAILABLE` with the cause in `cause`, e.g. "connection refused".
#[utoipa::path(get, path = "/api/ready", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, description = "DATABASE_UNAVAILABLE, with `cause`", body = crate::error::Problem)))]
pub async fn ready(_rate: Public, State(state): State<AppState>) -> Response {
    match state.db.check().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Readiness {
                status: "ready",
                details: ReadinessDetails {
                    database: "ok",
                    rate_limits: state.limits.mode(),
                },
            }),
        )
            .into_response(),
        Err(cause) => {
            tracing::warn!(cause, "not ready: the database does not answer: {cause}");
            let mut res = crate::error::problem_with_cause(
                StatusCode::SERVICE_UNAVAILABLE,
                "DATABASE_UNAVAILABLE",
                "The database does not answer".into(),
                None,
                Some(cause),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            res
        }
    }
}

/// The front door: the dashboard (which sends a signed-out visitor on to its sign-in page).
/// Temporary (307), so browsers and caches do not remember it.
#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 307, description = "Redirect to the dashboard (`Location: /dashboard`)")))]
pub async fn root(_rate: Public) -> axum::response::Redirect {
    axum::response::Redirect::temporary("/dashboard")
}
