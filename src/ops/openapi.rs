//! The OpenAPI document, generated from the handlers' annotations, and its security schemes.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "ECOSIRE API", description = "License validation and activation, and the business API beside it."),
    modifiers(&Security),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    tags(
        (name = "licensing", description = "The hot path: validate, activate, heartbeat, deactivate; JWKS"),
        (name = "licenses", description = "License administration and lifecycle"),
        (name = "products", description = "Products"),
        (name = "billing", description = "Orders and subscriptions from Stripe"),
        (name = "auth", description = "Login sessions"),
        (name = "users", description = "Users and the audit log (admin)"),
        (name = "api-keys", description = "API keys: scoped, expiring, rotatable"),
        (name = "webhooks", description = "Outbound webhook endpoints, deliveries and the event catalog; inbound Stripe events"),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or API key")
                    .description(Some(
                        "A session JWT from /api/auth/login, or an API key (ecos_live_…)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::http::auth::COOKIE_NAME,
                "The HttpOnly session cookie set by login; writes need an allowed Origin or X-Requested-With",
            ))),
        );
    }
}
