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
        (name = "contacts", description = "Contacts (admin)"),
        (name = "crm", description = "The public lead capture form and CRM leads (admin)"),
        (name = "support", description = "Support tickets and replies"),
        (name = "newsletter", description = "Newsletter subscriptions"),
        (name = "ask", description = "Questions answered from the ECOSIRE documentation by retrieval"),
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
                crate::auth::COOKIE_NAME,
                "The HttpOnly session cookie set by login; writes need an allowed Origin or X-Requested-With",
            ))),
        );
    }
}

/// Completes the generated document with what every operation can answer but few handlers spell
/// out: errors as `application/problem+json`, 429 and 500 everywhere, 400/413/415/422 where a
/// body is read, 401/403 where credentials are required, 404 where the path names an object.
pub fn complete(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::Operation;
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};

    const PROBLEM: &str = "application/problem+json";
    let problem = || Content::new(Some(Ref::from_schema_name("Problem")));
    let add = |op: &mut Operation, status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(PROBLEM, problem())
                        .build(),
                )
            });
    };
    for (path, item) in api.paths.paths.iter_mut() {
        let has_params = path.contains('{');
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
        ]
        .into_iter()
        .flatten()
        {
            // Error bodies are problem+json, whatever the annotation said.
            for (status, resp) in op.responses.responses.iter_mut() {
                if (status.starts_with('4') || status.starts_with('5'))
                    && let RefOr::T(r) = resp
                {
                    r.content.shift_remove("application/json");
                    r.content.insert(PROBLEM.to_string(), problem());
                }
            }
            add(op, "429", "RATE_LIMITED or QUOTA_EXCEEDED; see Retry-After");
            // Credentials that are sent are checked even where none are needed.
            add(
                op,
                "401",
                "UNAUTHENTICATED: the credentials sent are not valid",
            );
            add(
                op,
                "500",
                "INTERNAL_ERROR (the body carries a request id and nothing internal)",
            );
            if op.request_body.is_some() {
                add(
                    op,
                    "408",
                    "REQUEST_TIMEOUT: the body did not arrive within the request timeout",
                );
                add(op, "400", "MALFORMED_JSON");
                add(op, "413", "PAYLOAD_TOO_LARGE (bodies over 64 KiB)");
                add(op, "415", "UNSUPPORTED_MEDIA_TYPE (send application/json)");
                add(op, "422", "VALIDATION_FAILED, with details");
            }
            if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                add(
                    op,
                    "422",
                    "VALIDATION_FAILED: a query parameter is out of range",
                );
            }
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add(op, "401", "UNAUTHENTICATED");
                add(
                    op,
                    "403",
                    "FORBIDDEN (or CSRF_REJECTED for cookie writes without Origin/X-Requested-With)",
                );
            }
            if has_params {
                add(op, "404", "NOT_FOUND");
            }
            // Password hashing has a bounded number of slots.
            if matches!(path.as_str(), "/api/auth/login" | "/api/auth/register") {
                add(
                    op,
                    "503",
                    "BUSY: every password-hashing slot is taken; retry after Retry-After seconds",
                );
            }
        }
    }
}
