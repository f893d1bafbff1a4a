//! The secondary business modules, each its own router sharing only the platform (state, error,
//! extractors, pagination) and nothing of each other's internals: contacts, the CRM capture form,
//! support tickets, the newsletter and the documentation assistant (`ask`).

pub mod ask;
pub mod contacts;
pub mod crm;
pub mod newsletter;
pub mod support;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(contacts::router())
        .merge(crm::router())
        .merge(support::router())
        .merge(newsletter::router())
        .merge(ask::router())
}
