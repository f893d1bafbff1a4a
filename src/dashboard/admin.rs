//! Administration pages beyond licenses and users: products, the audit log, notices, and the
//! outbound webhook endpoints with their deliveries. Each goes through the `admin` gate (the
//! API's own `is_admin` rule) and then the API handler, so the page and the API agree.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::pages::{Frame, Visitor, admin, date, first_page, message, render, when};
use crate::error::{Error, Result};
use crate::http::extract::Path;
use crate::http::pagination::Listing;
use crate::state::AppState;

/// One product as the page lists it, with its fields as the edit form shows them.
pub struct ProductLine {
    pub p: crate::licensing::products::Product,
    pub duration: String,
    pub heartbeat: String,
    pub entitlements: String,
    pub prices: String,
}

#[derive(Template)]
#[template(path = "dashboard/admin_products.html", config = "src/askama.toml")]
struct Products {
    f: Frame,
    products: Vec<ProductLine>,
}

/// Admin → products: create one, edit any (each form a `POST`/`PATCH /api/products`).
pub async fn products(State(state): State<AppState>, visitor: Visitor) -> Result<Response> {
    let (_, user) = match admin(&state, visitor, "/dashboard/admin/products").await? {
        Ok(x) => x,
        Err(other) => return Ok(other),
    };
    let products = crate::licensing::products::list_products(
        State(state.clone()),
        crate::auth::limits::Public,
        first_page(Default::default()),
    )
    .await?
    .0
    .data
    .into_iter()
    .map(|p| ProductLine {
        duration: p.duration_days.map(|d| d.to_string()).unwrap_or_default(),
        heartbeat: p
            .heartbeat_timeout_s
            .map(|d| d.to_string())
            .unwrap_or_default(),
        entitlements: p.entitlements.join(", "),
        prices: p.stripe_price_ids.join(", "),
        p,
    })
    .collect();
    Ok(render(Products {
        f: Frame::page(user, "admin-products"),
        products,
    }))
}

/// One audit entry as the page lists it.
pub struct AuditLine {
    pub at: String,
    pub who: String,
    pub key: String,
    pub method: String,
    pub path: String,
    pub status: i64,
    pub ip: String,
    pub request_id: String,
}

#[derive(Template)]
#[template(path = "dashboard/admin_audit.html", config = "src/askama.toml")]
struct Audit {
    f: Frame,
    q: AuditQuery,
    entries: Vec<AuditLine>,
    /// The query string of the next (older) page, if there is one.
    older: Option<String>,
}

/// The audit page's filters as the form shows them (the API's own, by name).
#[derive(Default, serde::Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub path_prefix: String,
    #[serde(default)]
    pub status: String,
    pub cursor: Option<String>,
}

/// Admin → audit log: newest first, filtered by user, method, path prefix and status, a page of
/// 100 at a time, through `GET /api/audit-log`'s handler. Empty fields of the filter form mean
/// "any".
pub async fn audit_log(
    State(state): State<AppState>,
    visitor: Visitor,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Response> {
    let (p, user) = match admin(&state, visitor, "/dashboard/admin/audit-log").await? {
        Ok(x) => x,
        Err(other) => return Ok(other),
    };
    let given = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let status = match given(&q.status).map(|s| s.parse::<i64>()) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => {
            return Ok(message(
                user,
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "That filter does not work",
                "Status must be an HTTP status code such as 403. Go back and change it.",
            ));
        }
    };
    let page = crate::http::pagination::PageParams {
        limit: Some(100),
        cursor: q.cursor.clone(),
    };
    let listing = Listing {
        page: match page.checked() {
            Ok(page) => page,
            Err(_) => {
                return Ok(message(
                    user,
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "That page does not exist",
                    "The link to older entries is damaged. Start again from the newest.",
                ));
            }
        },
        filters: crate::ops::audit::AuditFilters {
            user_id: given(&q.user_id),
            api_key_id: None,
            method: given(&q.method),
            path_prefix: given(&q.path_prefix),
            status,
        },
    };
    let page =
        crate::ops::audit::list_audit_log(State(state.clone()), crate::auth::Admin(p), listing)
            .await?
            .0;
    let mut emails = std::collections::HashMap::new();
    let mut entries = Vec::with_capacity(page.data.len());
    for e in page.data {
        let who = match &e.user_id {
            None => "–".to_string(),
            Some(id) => {
                if !emails.contains_key(id) {
                    let email = crate::accounts::users::find_by_id(&state, id)
                        .await?
                        .map_or_else(|| id.clone(), |u| u.user.email);
                    emails.insert(id.clone(), email);
                }
                emails[id].clone()
            }
        };
        entries.push(AuditLine {
            at: when(e.at),
            who,
            key: e.api_key_id.unwrap_or_default(),
            method: e.method,
            path: e.path,
            status: e.status,
            ip: e.client_ip.unwrap_or_default(),
            request_id: e.request_id.unwrap_or_default(),
        });
    }
    let older = page.next_cursor.map(|c| {
        let mut pairs = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("user_id", &q.user_id),
            ("method", &q.method),
            ("path_prefix", &q.path_prefix),
            ("status", &q.status),
        ] {
            if !v.is_empty() {
                pairs.append_pair(k, v);
            }
        }
        pairs.append_pair("cursor", &c);
        pairs.finish()
    });
    Ok(render(Audit {
        f: Frame::page(user, "admin-audit"),
        q,
        entries,
        older,
    }))
}

#[derive(Template)]
#[template(path = "dashboard/admin_notices.html", config = "src/askama.toml")]
struct Notices {
    f: Frame,
    notices: Vec<NoticeLine>,
}

/// One notice as the page lists it.
pub struct NoticeLine {
    pub at: String,
    pub kind: String,
    pub message: String,
    pub subject_id: Option<String>,
}

/// Admin → notices: what the server wants an admin to act on (an endpoint disabled, a checkout
/// whose product could not be told).
pub async fn notices(State(state): State<AppState>, visitor: Visitor) -> Result<Response> {
    let (p, user) = match admin(&state, visitor, "/dashboard/admin/notices").await? {
        Ok(x) => x,
        Err(other) => return Ok(other),
    };
    let notices = crate::events::endpoints::list_notices(
        State(state.clone()),
        crate::auth::Admin(p),
        first_page(Default::default()),
    )
    .await?
    .0
    .data
    .into_iter()
    .map(|n| NoticeLine {
        at: when(n.created_at),
        kind: n.kind,
        message: n.message,
        subject_id: n.subject_id,
    })
    .collect();
    Ok(render(Notices {
        f: Frame::page(user, "admin-notices"),
        notices,
    }))
}

/// One endpoint as the pages show it.
pub struct EndpointLine {
    pub id: String,
    pub url: String,
    pub events: String,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: String,
    pub failing_since: String,
}

impl From<crate::events::endpoints::WebhookEndpoint> for EndpointLine {
    fn from(e: crate::events::endpoints::WebhookEndpoint) -> Self {
        EndpointLine {
            events: e.events.join(", "),
            description: e.description.unwrap_or_default(),
            disabled_reason: e.disabled_reason.unwrap_or_default(),
            failing_since: date(e.failing_since, ""),
            enabled: e.enabled,
            url: e.url,
            id: e.id,
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/admin_webhooks.html", config = "src/askama.toml")]
struct Endpoints {
    f: Frame,
    kinds: Vec<EventChoice>,
    endpoints: Vec<EndpointLine>,
}

/// Admin → webhook endpoints: create (secret shown once, event filter), enable or disable.
pub async fn endpoints(State(state): State<AppState>, visitor: Visitor) -> Result<Response> {
    let (p, user) = match admin(&state, visitor, "/dashboard/admin/webhooks").await? {
        Ok(x) => x,
        Err(other) => return Ok(other),
    };
    let endpoints = crate::events::endpoints::list_webhook_endpoints(
        State(state.clone()),
        crate::auth::Admin(p),
        first_page(Default::default()),
    )
    .await?
    .0
    .data
    .into_iter()
    .map(EndpointLine::from)
    .collect();
    Ok(render(Endpoints {
        f: Frame::page(user, "admin-webhooks"),
        kinds: event_choices(&["*".to_string()]),
        endpoints,
    }))
}

/// One box of an endpoint's event filter.
pub struct EventChoice {
    pub kind: &'static str,
    pub checked: bool,
}

/// Every event type an endpoint may ask for (`*` first), from the catalog; those in `chosen`
/// checked.
fn event_choices(chosen: &[String]) -> Vec<EventChoice> {
    use crate::events::catalog::{LICENSE_TYPES, STRIPE_TYPES};
    std::iter::once("*")
        .chain(LICENSE_TYPES.iter().chain(STRIPE_TYPES).map(|(t, _)| *t))
        .map(|kind| EventChoice {
            kind,
            checked: chosen.iter().any(|c| c == kind),
        })
        .collect()
}

/// One delivery attempt as the page shows it.
pub struct AttemptLine {
    pub at: String,
    pub outcome: String,
    pub ms: i64,
}

/// One delivery with its attempts.
pub struct DeliveryLine {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub next: String,
    pub attempts: Vec<AttemptLine>,
}

#[derive(Template)]
#[template(path = "dashboard/admin_webhook.html", config = "src/askama.toml")]
struct EndpointPage {
    f: Frame,
    e: EndpointLine,
    kinds: Vec<EventChoice>,
    deliveries: Vec<DeliveryLine>,
}

/// One endpoint: its filter (editable), "send test", delete, and its latest deliveries with
/// every attempt and a retry button.
pub async fn endpoint(
    State(state): State<AppState>,
    visitor: Visitor,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response> {
    let here = format!("/dashboard/admin/webhooks/{id}");
    let (p, user) = match admin(&state, visitor, &here).await? {
        Ok(x) => x,
        Err(other) => return Ok(other),
    };
    let found = match crate::events::endpoints::get_webhook_endpoint(
        State(state.clone()),
        crate::auth::Admin(p.clone()),
        Path(id.clone()),
    )
    .await
    {
        Ok(e) => e.0,
        Err(Error::NotFound { .. }) => {
            return Ok(message(
                user,
                axum::http::StatusCode::NOT_FOUND,
                "No such endpoint",
                "This webhook endpoint does not exist (it may have been deleted). The list is under Admin → Webhook endpoints.",
            ));
        }
        Err(e) => return Err(e),
    };
    let deliveries = crate::events::endpoints::list_deliveries(
        State(state.clone()),
        crate::auth::Admin(p),
        Path(id),
        first_page(Default::default()),
    )
    .await?
    .0
    .data
    .into_iter()
    .map(|d| DeliveryLine {
        next: d.next_attempt_at.map(when).unwrap_or_default(),
        attempts: d
            .attempts
            .into_iter()
            .map(|a| AttemptLine {
                at: when(a.at),
                outcome: match (a.status_code, a.error) {
                    (Some(code), _) => format!("HTTP {code}"),
                    (None, Some(e)) => e,
                    (None, None) => "no answer".into(),
                },
                ms: a.duration_ms,
            })
            .collect(),
        status: d.status,
        event_type: d.event_type,
        event_id: d.event_id,
        id: d.id,
    })
    .collect();
    Ok(render(EndpointPage {
        f: Frame::page(user, "admin-webhooks"),
        kinds: event_choices(&found.events),
        e: found.into(),
        deliveries,
    }))
}
