//! What was paid: Stripe events (inbound), and the orders and subscriptions they create. Licenses
//! are granted through `licensing`; billing calls licensing, never the reverse.

pub mod orders;
pub mod stripe;
pub mod stripe_api;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    orders::router().merge(
        // Stripe events can be larger than our usual 64 KiB body limit.
        stripe::router().layer(axum::extract::DefaultBodyLimit::max(1024 * 1024)),
    )
}
