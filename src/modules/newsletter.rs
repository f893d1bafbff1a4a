//! Newsletter: public subscribe and unsubscribe, the subscriber list for admins.
//!
//! The unsubscribe token is the only credential of a subscriber: 32 base62 characters from the OS
//! RNG (~190 bits), shown once in the answer that creates it and stored only as its SHA-256
//! digest, so a copy of the database cannot unsubscribe anyone.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Admin;
use crate::auth::limits::Public;
use crate::auth::limits::{Newsletter, PerIp};
use crate::crypto::{new_id, random_base62, sha256_hex};
use crate::db::Filters;
use crate::error::{Error, Result, ResultExt};
use crate::http::checks::{Checks, normalize_email};
use crate::http::extract::Json;
use crate::http::pagination::{Listing, Page, PageParams};
use crate::state::AppState;
use crate::timestamp::{Timestamp, now_ms};

const TOKEN_LEN: usize = 32;

const COLUMNS: &str = "id, email, status, subscribed_at, unsubscribed_at, created_at";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(subscribe))
        .routes(routes!(unsubscribe))
        .routes(routes!(list_subscribers))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Subscribe {
    #[schema(example = "ann@example.com", max_length = 254)]
    pub email: String,
}

/// A new (or renewed) subscription: the only time `unsubscribe_token` is shown.
#[derive(Serialize, ToSchema)]
pub struct Subscribed {
    #[schema(example = "nws_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    #[schema(example = "ann@example.com")]
    pub email: String,
    /// Keep it for the unsubscribe link; it cannot be shown again.
    pub unsubscribe_token: String,
}

impl std::fmt::Debug for Subscribed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribed")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("unsubscribe_token", &"<redacted>")
            .finish()
    }
}

/// The address was already subscribed: no new token.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlreadySubscribed {
    #[schema(example = "nws_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    #[schema(example = "ann@example.com")]
    pub email: String,
}

/// Subscribes an email (public) → 201 with a new unsubscribe token, or 200 without one when the
/// address is already subscribed. An address that unsubscribed earlier subscribes again (201,
/// a new token; the old one stops working).
#[utoipa::path(post, path = "/api/newsletter/subscribe", tag = "newsletter", request_body = Subscribe,
    responses((status = 201, body = Subscribed), (status = 200, body = AlreadySubscribed),
              (status = 429, description = "RATE_LIMITED", body = crate::error::Problem)))]
pub async fn subscribe(
    State(state): State<AppState>,
    _rate: PerIp<Newsletter>,
    Json(req): Json<Subscribe>,
) -> Result<Response> {
    let email = normalize_email(&req.email)
        .ok_or_else(|| Error::invalid("email", "Invalid email address"))?;
    let token = random_base62(TOKEN_LEN);
    let digest = sha256_hex(token.as_bytes());
    let now = now_ms();
    let id = new_id("nws");
    let res = sqlx::query(
        "INSERT INTO newsletter_subscribers (id, email, token_digest, status, subscribed_at, created_at, updated_at) \
         VALUES ($1, $2, $3, 'subscribed', $4, $4, $4)",
    )
    .bind(&id)
    .bind(&email)
    .bind(&digest)
    .bind(now)
    .execute(&state.db.pool)
    .await
    .map(|_| true)
    .on_unique(|| Ok(false))?;
    if res {
        return Ok(created(id, email, token));
    }
    // Known address: renew it if it had unsubscribed. One conditional update, so two racing
    // requests cannot both hand out a token.
    let renewed = sqlx::query(
        "UPDATE newsletter_subscribers SET status = 'subscribed', token_digest = $2, subscribed_at = $3, \
         unsubscribed_at = NULL, updated_at = $3 WHERE email = $1 AND status = 'unsubscribed'",
    )
    .bind(&email)
    .bind(&digest)
    .bind(now)
    .execute(&state.db.pool)
    .await?
    .rows_affected()
        == 1;
    let (id,): (String,) = sqlx::query_as("SELECT id FROM newsletter_subscribers WHERE email = $1")
        .bind(&email)
        .fetch_one(&state.db.pool)
        .await?;
    if renewed {
        Ok(created(id, email, token))
    } else {
        Ok((StatusCode::OK, Json(AlreadySubscribed { id, email })).into_response())
    }
}

fn created(id: String, email: String, unsubscribe_token: String) -> Response {
    (
        StatusCode::CREATED,
        Json(Subscribed {
            id,
            email,
            unsubscribe_token,
        }),
    )
        .into_response()
}

#[derive(Deserialize, ToSchema)]
pub struct Unsubscribe {
    /// The `unsubscribe_token` of the subscription.
    #[schema(min_length = 1, max_length = 128)]
    pub token: String,
}

/// Unsubscribes the holder of `token` (public) → 204. Repeating it is harmless (204 again);
/// a token never issued, or replaced by a later subscription, is 404 `SUBSCRIPTION_NOT_FOUND`.
#[utoipa::path(post, path = "/api/newsletter/unsubscribe", tag = "newsletter", request_body = Unsubscribe,
    responses((status = 204, description = "Unsubscribed"),
              (status = 404, description = "SUBSCRIPTION_NOT_FOUND", body = crate::error::Problem)))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    _rate: Public,
    Json(req): Json<Unsubscribe>,
) -> Result<StatusCode> {
    let token = req.token.trim();
    Checks::new().len(token, "token", 1, 128).finish()?;
    // The digest is the lookup key: the token itself is never compared or stored.
    let now = now_ms();
    let res = sqlx::query(
        "UPDATE newsletter_subscribers SET \
           unsubscribed_at = CASE WHEN status = 'subscribed' THEN $2 ELSE unsubscribed_at END, \
           updated_at = CASE WHEN status = 'subscribed' THEN $2 ELSE updated_at END, \
           status = 'unsubscribed' \
         WHERE token_digest = $1",
    )
    .bind(sha256_hex(token.as_bytes()))
    .bind(now)
    .execute(&state.db.pool)
    .await?;
    if res.rows_affected() == 0 {
        return Err(Error::not_found(
            "SUBSCRIPTION_NOT_FOUND",
            "No subscription has this unsubscribe token",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A subscriber as admins see it (never the token or its digest).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Subscriber {
    #[schema(example = "nws_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    #[schema(example = "ann@example.com")]
    pub email: String,
    /// `subscribed` or `unsubscribed`.
    #[schema(example = "subscribed")]
    pub status: String,
    /// When the address (last) subscribed.
    pub subscribed_at: Timestamp,
    pub unsubscribed_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubscriberFilters {
    /// `subscribed` or `unsubscribed`.
    pub status: Option<String>,
}

/// Lists subscribers, newest first (admin); filter `status`.
#[utoipa::path(get, path = "/api/newsletter/subscribers", tag = "newsletter", params(PageParams, SubscriberFilters),
    responses((status = 200, body = Page<Subscriber>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_subscribers(
    State(state): State<AppState>,
    _admin: Admin,
    Listing { page: req, filters }: Listing<SubscriberFilters>,
) -> Result<Json<Page<Subscriber>>> {
    let mut f = Filters::default();
    if let Some(s) = &filters.status {
        if s != "subscribed" && s != "unsubscribed" {
            return Err(Error::invalid(
                "status",
                "must be subscribed or unsubscribed",
            ));
        }
        f.push("status", "=", s.clone());
    }
    let rows = crate::db::list::page::<Subscriber>(
        &state.db,
        &format!("SELECT {COLUMNS} FROM newsletter_subscribers"),
        "id",
        f,
        &req,
        |r| &r.id,
    )
    .await?;
    Ok(Json(rows))
}
