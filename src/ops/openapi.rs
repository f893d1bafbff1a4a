//! The OpenAPI document, generated from the handlers' annotations, and its security schemes.

use std::collections::BTreeMap;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};

use crate::error::{Error, FieldError, Problem};

#[derive(OpenApi)]
#[openapi(
    info(title = "ECOSIRE API", description = "License validation and activation, and the business API beside it."),
    modifiers(&Security),
    components(schemas(Problem, FieldError, crate::licensing::revocations::RevocationClaims,
        crate::licensing::revocations::GcsFilter)),
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

/// Adds the `openIdConnect` security scheme (the provider's discovery document) beside `bearer`
/// on every operation that takes credentials: a provider-issued JWT access token is accepted
/// wherever a session JWT is. Only the served document of a server with `ECOSIRE_OIDC_ISSUER`
/// has it, since the scheme must name the provider.
pub fn add_provider(api: &mut utoipa::openapi::OpenApi, issuer: &str) {
    use utoipa::openapi::security::{OpenIdConnect, SecurityRequirement};
    let discovery = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    api.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "openIdConnect",
            SecurityScheme::OpenIdConnect(OpenIdConnect::with_description(
                discovery,
                "An access token (JWT) from the configured OpenID provider, sent as Authorization: Bearer; see docs/oidc.md".to_string(),
            )),
        );
    for item in api.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            if let Some(security) = op.security.as_mut()
                && !security.is_empty()
            {
                security.push(SecurityRequirement::new::<_, _, &str>("openIdConnect", []));
            }
        }
    }
}

/// Completes the generated document with what every operation can answer but few handlers spell
/// out: errors as `application/problem+json`, 429 and 500 everywhere, 400/413/415/422 where a
/// body is read, 401/403 where credentials are required, 404 where the path names an object.
/// Each error answer gets an example body of its own status and code (see `problem_example`).
pub fn complete(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::Operation;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

    const PROBLEM: &str = "application/problem+json";
    let add = |op: &mut Operation, status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
    };
    let schemas = api.components.as_ref().map(|c| &c.schemas);
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
            // Error bodies are problem+json, whatever the annotation said, each with an example of
            // its own: the Problem schema has none, so no answer borrows another's.
            let field = example_field_error(op, schemas);
            for (status, resp) in op.responses.responses.iter_mut() {
                if let RefOr::T(r) = resp
                    && (status.starts_with('4') || status.starts_with('5'))
                {
                    let content = ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .example(problem_example(status, &r.description, field.as_ref()))
                        .build();
                    r.content.clear();
                    r.content.insert(PROBLEM.to_string(), content);
                }
            }
        }
    }
}

/// An example body for an error answer: its status, and the code its description names (the
/// first SCREAMING_SNAKE word, as every error description here starts with one); a
/// `VALIDATION_FAILED` lists `field`. `None` when the description names no code: no example is
/// better than one of another error.
fn problem_example(
    status: &str,
    description: &str,
    field: Option<&FieldError>,
) -> Option<serde_json::Value> {
    let status = axum::http::StatusCode::from_bytes(status.as_bytes()).ok()?;
    let code = description
        .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .find(|w| w.len() >= 3 && w.starts_with(|c: char| c.is_ascii_uppercase()))?;
    let message = example_message(code);
    let details = field
        .filter(|_| code == "VALIDATION_FAILED")
        .map(|f| vec![f.clone()]);
    let example = Problem::new(
        status,
        code,
        message,
        details,
        Some("5f0c9a7e3b2d41c8000000000000002a".into()),
    );
    serde_json::to_value(example).ok()
}

/// The message of an error with `code`: the server's own for the errors every operation may
/// answer, else the code in words ("LICENSE_NOT_FOUND" → "License not found"), the shape of the
/// handlers' messages.
fn example_message(code: &str) -> String {
    let generic = [
        Error::Unauthenticated,
        Error::Validation(vec![]),
        Error::UnsupportedMediaType,
        Error::PayloadTooLarge,
        Error::Internal(anyhow::anyhow!("example")),
    ];
    if let Some(e) = generic.iter().find(|e| e.code() == code) {
        return e.public_message();
    }
    let mut message = code.to_ascii_lowercase().replace('_', " ");
    message[..1].make_ascii_uppercase();
    message
}

/// The field failure the example 422 of `op` shows, in the server's own words: the first
/// required member of its JSON body missing (serde's message), else `limit` out of range (the
/// pagination check's message). `None` for an operation with neither.
fn example_field_error(
    op: &utoipa::openapi::path::Operation,
    schemas: Option<&BTreeMap<String, RefOr<Schema>>>,
) -> Option<FieldError> {
    if let Some(body) = &op.request_body {
        let schema_name = match body.content.get("application/json")?.schema.as_ref()? {
            RefOr::Ref(r) => r.ref_location.rsplit('/').next()?,
            RefOr::T(_) => return None,
        };
        let RefOr::T(Schema::Object(object)) = schemas?.get(schema_name)? else {
            return None;
        };
        let field = object.required.first()?;
        return Some(FieldError::new(field, format!("missing field `{field}`")));
    }
    let lists = op.parameters.iter().flatten().any(|p| p.name == "limit");
    let out_of_range = crate::http::pagination::PageParams {
        limit: Some(0),
        cursor: None,
    };
    match out_of_range.checked() {
        Err(Error::Validation(mut details)) if lists && !details.is_empty() => {
            Some(details.remove(0))
        }
        _ => None,
    }
}
