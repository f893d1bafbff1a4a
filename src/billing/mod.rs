//! What is sold: products, and the orders and subscriptions that Stripe events create.

pub mod orders;
pub mod products;
pub mod stripe;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    products::router().merge(orders::router()).merge(
        // Stripe events can be larger than our usual 64 KiB body limit.
        stripe::router().layer(axum::extract::DefaultBodyLimit::max(1024 * 1024)),
    )
}
