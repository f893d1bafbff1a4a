//! Webhook endpoints (admin): CRUD with the signing secret shown once, a test send, the
//! deliveries of an endpoint with every attempt, manual retry, and admin notices.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::catalog;
use crate::auth::Admin;
use crate::crypto::{new_id, random_base62};
use crate::db::Filters;
use crate::error::{Error, Result};
use crate::http::checks::Checks;
use crate::http::extract::{Json, Path};
use crate::http::pagination::{Listing, Page, PageParams};
use crate::state::AppState;
use crate::timestamp::{Timestamp, now_ms};

#[derive(Debug, sqlx::FromRow)]
struct EndpointRow {
    id: String,
    url: String,
    events: String,
    description: Option<String>,
    enabled: i64,
    disabled_reason: Option<String>,
    failing_since: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const ENDPOINT_COLUMNS: &str =
    "id, url, events, description, enabled, disabled_reason, failing_since, created_at, updated_at";

/// A webhook endpoint (the secret only in the answer that creates it; never in `Debug`).
#[derive(Serialize, ToSchema)]
pub struct WebhookEndpoint {
    #[schema(example = "whe_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    #[schema(example = "https://example.com/hooks/ecosire")]
    pub url: String,
    /// Event types, or `["*"]` for all.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why the endpoint was disabled (after failing for long), if it was.
    pub disabled_reason: Option<String>,
    pub failing_since: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// `whsec_…`: shown once, when the endpoint is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl EndpointRow {
    fn view(self, secret: Option<String>) -> WebhookEndpoint {
        WebhookEndpoint {
            id: self.id,
            url: self.url,
            events: serde_json::from_str(&self.events).unwrap_or_default(),
            description: self.description,
            enabled: self.enabled == 1,
            disabled_reason: self.disabled_reason,
            failing_since: self.failing_since.map(Timestamp),
            created_at: Timestamp(self.created_at),
            updated_at: Timestamp(self.updated_at),
            secret,
        }
    }
}

async fn find(state: &AppState, id: &str) -> Result<EndpointRow> {
    let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| Error::no_such("Webhook endpoint"))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook_endpoint, list_webhook_endpoints))
        .routes(routes!(
            get_webhook_endpoint,
            update_webhook_endpoint,
            delete_webhook_endpoint
        ))
        .routes(routes!(test_webhook_endpoint))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
        .routes(routes!(list_notices))
}

fn check_events(c: &mut Checks, events: &[String]) {
    c.check(
        !events.is_empty(),
        "events",
        "must name at least one event type, or \"*\"",
    );
    c.check(events.len() <= 50, "events", "must have at most 50 items");
    for (i, e) in events.iter().enumerate() {
        c.check(
            catalog::is_known(e),
            &format!("events[{i}]"),
            "is not an event type (see GET /api/webhooks/events)",
        );
    }
}

async fn check_url(c: &mut Checks, state: &AppState, url: &str) {
    if let Err(why) = super::dispatcher::check_url(url, state.config.webhook_allow_private).await {
        c.push("url", why);
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateEndpoint {
    #[schema(example = "https://example.com/hooks/ecosire")]
    pub url: String,
    #[schema(example = json!(["license.activated", "license.revoked"]))]
    pub events: Vec<String>,
    pub description: Option<String>,
}

/// Inserts an endpoint with `secret`; shared with the start-up configuration.
async fn insert(
    state: &AppState,
    url: &str,
    events: &[String],
    description: Option<&str>,
    secret: &str,
) -> Result<EndpointRow> {
    let id = new_id("whe");
    let now = now_ms();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, events, description, secret_sealed, enabled, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
    )
    .bind(&id)
    .bind(url)
    .bind(serde_json::to_string(events).expect("json"))
    .bind(description)
    .bind(state.keys.data.seal(secret.as_bytes(), &id))
    .bind(now)
    .execute(&state.db.pool)
    .await?;
    state.events.refresh(&state.db).await?;
    find(state, &id).await
}

/// Creates a webhook endpoint (admin); the answer shows its signing secret once.
#[utoipa::path(post, path = "/api/webhook-endpoints", tag = "webhooks", request_body = CreateEndpoint,
    responses((status = 201, body = WebhookEndpoint)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_webhook_endpoint(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateEndpoint>,
) -> Result<(StatusCode, Json<WebhookEndpoint>)> {
    let mut c = Checks::new();
    check_url(&mut c, &state, &req.url).await;
    check_events(&mut c, &req.events);
    c.opt_len(req.description.as_deref(), "description", 0, 500);
    c.finish()?;
    let secret = format!("whsec_{}", random_base62(32));
    let row = insert(
        &state,
        &req.url,
        &req.events,
        req.description.as_deref(),
        &secret,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row.view(Some(secret)))))
}

/// Lists webhook endpoints (admin).
#[utoipa::path(get, path = "/api/webhook-endpoints", tag = "webhooks", params(PageParams),
    responses((status = 200, body = Page<WebhookEndpoint>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_webhook_endpoints(
    State(state): State<AppState>,
    _admin: Admin,
    Listing { page: req, .. }: Listing,
) -> Result<Json<Page<WebhookEndpoint>>> {
    let f = Filters::default();
    let rows = crate::db::list::page::<EndpointRow>(
        &state.db,
        &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"),
        "id",
        f,
        &req,
        |r| &r.id,
    )
    .await?;
    Ok(Json(rows.map(|r| r.view(None))))
}

/// Gets a webhook endpoint (admin).
#[utoipa::path(get, path = "/api/webhook-endpoints/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = WebhookEndpoint)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_webhook_endpoint(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpoint>> {
    Ok(Json(find(&state, &id).await?.view(None)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateEndpoint {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    /// `true` re-enables an endpoint that was disabled after failing.
    pub enabled: Option<bool>,
}

/// Updates a webhook endpoint (admin).
#[utoipa::path(patch, path = "/api/webhook-endpoints/{id}", tag = "webhooks", params(("id" = String, Path)), request_body = UpdateEndpoint,
    responses((status = 200, body = WebhookEndpoint)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn update_webhook_endpoint(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Json(req): Json<UpdateEndpoint>,
) -> Result<Json<WebhookEndpoint>> {
    let cur = find(&state, &id).await?;
    let mut c = Checks::new();
    if let Some(u) = &req.url {
        check_url(&mut c, &state, u).await;
    }
    if let Some(e) = &req.events {
        check_events(&mut c, e);
    }
    c.opt_len(req.description.as_deref(), "description", 0, 500);
    c.finish()?;
    let enabled = req.enabled.map(i64::from).unwrap_or(cur.enabled);
    sqlx::query(
        "UPDATE webhook_endpoints SET url = $2, events = $3, description = $4, enabled = $5, \
         disabled_reason = CASE WHEN $5 = 1 THEN NULL ELSE disabled_reason END, \
         failing_since = CASE WHEN $5 = 1 AND enabled = 0 THEN NULL ELSE failing_since END, updated_at = $6 WHERE id = $1",
    )
    .bind(&cur.id)
    .bind(req.url.as_deref().unwrap_or(&cur.url))
    .bind(req.events.map(|e| serde_json::to_string(&e).expect("json")).unwrap_or(cur.events.clone()))
    .bind(req.description.or(cur.description.clone()))
    .bind(enabled)
    .bind(now_ms())
    .execute(&state.db.pool)
    .await?;
    state.events.refresh(&state.db).await?;
    Ok(Json(find(&state, &id).await?.view(None)))
}

/// Deletes a webhook endpoint and its pending deliveries (admin).
#[utoipa::path(delete, path = "/api/webhook-endpoints/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete_webhook_endpoint(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let cur = find(&state, &id).await?;
    let mut tx = state.db.begin().await?;
    sqlx::query("DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE endpoint_id = $1)").bind(&cur.id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM deliveries WHERE endpoint_id = $1")
        .bind(&cur.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(&cur.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state.events.refresh(&state.db).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    event_id: String,
    event_type: String,
    endpoint_id: String,
    status: String,
    attempt_count: i64,
    next_attempt_at: Option<i64>,
    created_at: i64,
}

const DELIVERY_COLUMNS: &str =
    "id, event_id, event_type, endpoint_id, status, attempt_count, next_attempt_at, created_at";

#[derive(Debug, Serialize, ToSchema)]
pub struct Attempt {
    pub at: Timestamp,
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub error: Option<String>,
}

/// One (event, endpoint) delivery with every attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    #[schema(example = "dlv_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    /// `pending`, `succeeded` or `failed`.
    #[schema(example = "succeeded")]
    pub status: String,
    pub attempts: Vec<Attempt>,
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

async fn delivery_view(state: &AppState, r: DeliveryRow) -> Result<Delivery> {
    let attempts: Vec<(i64, Option<i64>, i64, Option<String>)> =
        sqlx::query_as("SELECT at, status_code, duration_ms, error FROM delivery_attempts WHERE delivery_id = $1 ORDER BY at, id")
            .bind(&r.id)
            .fetch_all(&state.db.pool)
            .await?;
    Ok(Delivery {
        id: r.id,
        event_id: r.event_id,
        event_type: r.event_type,
        endpoint_id: r.endpoint_id,
        status: r.status,
        attempts: attempts
            .into_iter()
            .map(|(at, status_code, duration_ms, error)| Attempt {
                at: Timestamp(at),
                status_code,
                duration_ms,
                error,
            })
            .collect(),
        next_attempt_at: r.next_attempt_at.map(Timestamp),
        created_at: Timestamp(r.created_at),
    })
}

async fn find_delivery(state: &AppState, endpoint_id: &str, id: &str) -> Result<DeliveryRow> {
    let sql =
        format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1 AND endpoint_id = $2");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(endpoint_id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| Error::no_such("Delivery"))
}

/// Reserves a delivery for an immediate attempt made here, then makes it.
async fn attempt_now(state: &AppState, d: &DeliveryRow) -> Result<Delivery> {
    let now = now_ms();
    sqlx::query("UPDATE deliveries SET status = 'pending', next_attempt_at = $2, locked_until = $3, updated_at = $2 WHERE id = $1")
        .bind(&d.id)
        .bind(now)
        .bind(now + 60_000)
        .execute(&state.db.pool)
        .await?;
    super::dispatcher::attempt(state, &d.id, &d.event_id, &d.endpoint_id, d.attempt_count).await?;
    let fresh = find_delivery(state, &d.endpoint_id, &d.id).await?;
    delivery_view(state, fresh).await
}

/// Sends a `webhook.test` event to this endpoint now, whatever its filter; answers the delivery.
#[utoipa::path(post, path = "/api/webhook-endpoints/{id}/test", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = Delivery)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn test_webhook_endpoint(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Delivery>> {
    let ep = find(&state, &id).await?;
    let mut tx = state.db.begin().await?;
    let event_id = super::emit_to(
        &mut tx,
        catalog::TEST_TYPE,
        json!({"endpoint_id": ep.id, "message": "This is a test event from ECOSIRE."}),
        std::iter::once(ep.id.as_str()),
    )
    .await?;
    // Reserve it at once so the background dispatcher does not send it too.
    sqlx::query("UPDATE deliveries SET locked_until = $2 WHERE event_id = $1")
        .bind(&event_id)
        .bind(now_ms() + 60_000)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = $1");
    let d: DeliveryRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&event_id)
        .fetch_one(&state.db.pool)
        .await?;
    Ok(Json(attempt_now(&state, &d).await?))
}

/// Lists an endpoint's deliveries, newest first, with every attempt (admin).
#[utoipa::path(get, path = "/api/webhook-endpoints/{id}/deliveries", tag = "webhooks", params(("id" = String, Path), PageParams),
    responses((status = 200, body = Page<Delivery>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Listing { page: req, .. }: Listing,
) -> Result<Json<Page<Delivery>>> {
    let ep = find(&state, &id).await?;
    let mut f = Filters::default();
    f.push("endpoint_id", "=", ep.id.clone());
    let rows = crate::db::list::page::<DeliveryRow>(
        &state.db,
        &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries"),
        "id",
        f,
        &req,
        |r| &r.id,
    )
    .await?;
    Ok(Json(rows.try_map(|r| delivery_view(&state, r)).await?))
}

/// Retries a delivery now (admin), whatever its status; answers it with the new attempt.
#[utoipa::path(post, path = "/api/webhook-endpoints/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 200, body = Delivery)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    _admin: Admin,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Json<Delivery>> {
    let d = find_delivery(&state, &id, &delivery_id).await?;
    Ok(Json(attempt_now(&state, &d).await?))
}

/// Something an admin should know (an endpoint disabled after failing for long).
#[derive(Debug, Serialize, ToSchema)]
pub struct Notice {
    pub id: String,
    #[schema(example = "webhook_endpoint_disabled")]
    pub kind: String,
    pub subject_id: Option<String>,
    pub message: String,
    pub created_at: Timestamp,
}

/// Lists admin notices, newest first (admin).
#[utoipa::path(get, path = "/api/webhooks/notices", tag = "webhooks", params(PageParams),
    responses((status = 200, body = Page<Notice>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_notices(
    State(state): State<AppState>,
    _admin: Admin,
    Listing { page: req, .. }: Listing,
) -> Result<Json<Page<Notice>>> {
    let f = Filters::default();
    let rows = crate::db::list::page::<(String, String, Option<String>, String, i64)>(
        &state.db,
        "SELECT id, kind, subject_id, message, created_at FROM notices",
        "id",
        f,
        &req,
        |r| &r.0,
    )
    .await?;
    Ok(Json(rows.map(|(id, kind, subject_id, message, at)| {
        Notice {
            id,
            kind,
            subject_id,
            message,
            created_at: Timestamp(at),
        }
    })))
}

/// Creates (or updates) the endpoint named by `ECOSIRE_WEBHOOK_URL`, signed with
/// `ECOSIRE_LICENSE_SECRET`, subscribed to every event.
pub async fn ensure_configured_endpoint(state: &AppState) -> anyhow::Result<()> {
    let (Some(url), Some(secret)) = (&state.config.webhook_url, &state.config.license_secret)
    else {
        return Ok(());
    };
    super::dispatcher::check_url(url, state.config.webhook_allow_private)
        .await
        .map_err(|why| anyhow::anyhow!("ECOSIRE_WEBHOOK_URL: {why}"))?;
    const DESCRIPTION: &str = "configured by ECOSIRE_WEBHOOK_URL";
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT id FROM webhook_endpoints WHERE description = $1")
            .bind(DESCRIPTION)
            .fetch_optional(&state.db.pool)
            .await?;
    match existing {
        Some((id,)) => {
            sqlx::query("UPDATE webhook_endpoints SET url = $2, secret_sealed = $3, events = '[\"*\"]', enabled = 1, disabled_reason = NULL, updated_at = $4 WHERE id = $1")
                .bind(&id)
                .bind(url)
                .bind(state.keys.data.seal(secret.as_bytes(), &id))
                .bind(now_ms())
                .execute(&state.db.pool)
                .await?;
            state.events.refresh(&state.db).await?;
        }
        None => {
            insert(state, url, &["*".to_string()], Some(DESCRIPTION), secret)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(())
}
