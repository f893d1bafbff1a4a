//! Operations: liveness, readiness and the front door (`health`), the audit log and the
//! accounting that feeds it (`audit`), Prometheus metrics, and the OpenAPI document.

pub mod audit;
pub mod health;
pub mod metrics;
pub mod openapi;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    health::router()
        .merge(audit::router())
        .merge(metrics::router())
}
