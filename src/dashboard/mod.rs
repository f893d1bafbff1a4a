//! The dashboard and customer portal, served by the binary: server-rendered pages (askama
//! templates in `src/templates/dashboard`, checked at compile time) over the same handlers and
//! rules as the API, plus one small script (`src/assets/app.js`) that sends forms to the API as
//! JSON with the HttpOnly session cookie and `X-Requested-With` (the API's CSRF rule). There is
//! no second permission model: a page shows what the API would answer its caller.
//!
//! Assets are compiled in and served under content-hashed names with a year-long cache; every
//! page carries a Content-Security-Policy without `unsafe-inline` that allows nothing from
//! another origin.

mod admin;
mod assets;
mod chart;
mod pages;
mod portal;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::state::AppState;

/// Scripts, styles, images and connections from this origin only; no inline code, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

pub fn router() -> Router<AppState> {
    let pages = Router::new()
        .route("/login", get(pages::login))
        .route("/dashboard", get(pages::licenses))
        .route("/dashboard/api-keys", get(pages::api_keys))
        .route("/dashboard/webhooks", get(pages::webhooks))
        .route("/dashboard/admin/licenses", get(pages::admin_licenses))
        .route("/dashboard/licenses/{id}", get(pages::license_page))
        .route("/dashboard/admin/users", get(pages::admin_users))
        .route("/dashboard/admin/products", get(admin::products))
        .route("/dashboard/admin/orders", get(portal::admin_orders))
        .route("/dashboard/admin/audit-log", get(admin::audit_log))
        .route("/dashboard/admin/notices", get(admin::notices))
        .route("/dashboard/admin/webhooks", get(admin::endpoints))
        .route("/dashboard/admin/webhooks/{id}", get(admin::endpoint))
        .route("/dashboard/orders", get(portal::orders))
        .route("/dashboard/support", get(portal::support))
        .route("/dashboard/support/{id}", get(portal::ticket))
        .route("/account/forgot-password", get(pages::forgot_password))
        .route("/account/reset-password", get(pages::reset_password))
        .route("/account/set-password", get(pages::set_password))
        .route("/account/verify-email", get(pages::verify_email))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            // Links carry tokens: never pass a page's address on.
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ));
    pages.route("/assets/{file}", get(assets::serve))
}
