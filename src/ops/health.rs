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

/// Readiness: the database answers.
#[utoipa::path(get, path = "/api/ready", tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "DATABASE_UNAVAILABLE", body = crate::error::Problem)))]
pub async fn ready(
    _rate: Public,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<Health>)> {
    if state.db.ping().await {
        Ok((StatusCode::OK, Json(Health { status: "ready" })))
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
