//! Operations: liveness, readiness, the OpenAPI document and Swagger UI.

pub mod audit;
pub mod health;
pub mod metrics;
pub mod openapi;
