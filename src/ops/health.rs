//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::limits::Public;
use crate::error::{Error, Result};
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

/// Readiness: the database answers (and how rate limits are enforced).
#[utoipa::path(get, path = "/api/ready", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, description = "DATABASE_UNAVAILABLE", body = crate::error::Problem)))]
pub async fn ready(
    _rate: Public,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<Readiness>)> {
    if state.db.ping().await {
        let details = ReadinessDetails {
            database: "ok",
            rate_limits: state.limits.mode(),
        };
        Ok((
            StatusCode::OK,
            Json(Readiness {
                status: "ready",
                details,
            }),
        ))
    } else {
        Err(Error::Unavailable {
            code: "DATABASE_UNAVAILABLE",
            message: "The database does not answer".into(),
        })
    }
}

/// The front door: the API documentation, until there is a dashboard to show. Temporary (307), so
/// browsers and caches do not remember it.
#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 307, description = "Redirect to the API documentation (`Location: /api/docs`)")))]
pub async fn root(_rate: Public) -> axum::response::Redirect {
    axum::response::Redirect::temporary("/api/docs")
}
