//! What is sold: products (and, later, orders and subscriptions fed by Stripe).

pub mod products;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    products::router()
}
