//! API keys for integrations: `ecos_live_`/`ecos_test_` + 32 base62 chars, stored only as a
//! SHA-256 digest and shown once. Scoped (`read-only`, `read-write`, `admin`), optionally
//! expiring, revocable at once, and rotatable with a grace period for the old key.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::KeyManager;
use crate::auth::{ApiKeyToken, Environment, Role, Scope};
use crate::crypto::new_id;
use crate::db::Filters;
use crate::error::{Error, Result};
use crate::http::checks::Checks;
use crate::http::extract::{Json, Path};
use crate::http::pagination::{Listing, Page, PageParams};
use crate::state::AppState;
use crate::timestamp::{Timestamp, now_ms};

const KEY_COLUMNS: &str = "id, user_id, name, scope, environment, prefix, expires_at, revoked_at, request_count, error_count, last_used_at, created_at";

/// An API key as listed (never the secret).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ApiKey {
    #[schema(example = "key_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub scope: Scope,
    pub environment: Environment,
    /// Non-secret hint: the first characters of the key.
    #[schema(example = "ecos_live_4fQx")]
    pub prefix: String,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub request_count: i64,
    pub error_count: i64,
    pub last_used_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// The answer that shows a key, once. `Debug` leaves the key out.
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: String,
    /// The full key. It is not stored and is never shown again.
    #[schema(example = "ecos_live_4fQx9T2mZr8LwP0aKc3VbN7yHs1dUe6J")]
    pub key: String,
    pub prefix: String,
    pub name: String,
    pub scope: Scope,
    pub environment: Environment,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(get_api_key, revoke_api_key))
        .routes(routes!(rotate_api_key))
        .routes(routes!(api_key_usage))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateApiKey {
    #[schema(example = "CI deploys")]
    pub name: String,
    pub scope: Scope,
    #[serde(default)]
    pub environment: Environment,
    pub expires_at: Option<Timestamp>,
}

async fn insert_key(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    name: &str,
    scope: Scope,
    env: Environment,
    expires_at: Option<i64>,
    rotated_from: Option<&str>,
) -> Result<CreatedApiKey> {
    let token = ApiKeyToken::generate(env);
    let id = new_id("key");
    let now = now_ms();
    sqlx::query(
        "INSERT INTO api_keys (id, user_id, name, scope, environment, prefix, key_digest, expires_at, rotated_from, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(user_id)
    .bind(name)
    .bind(scope.as_str())
    .bind(env.as_str())
    .bind(token.prefix())
    .bind(token.digest())
    .bind(expires_at)
    .bind(rotated_from)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(CreatedApiKey {
        id,
        key: token.expose().to_string(),
        prefix: token.prefix(),
        name: name.to_string(),
        scope,
        environment: env,
        expires_at: expires_at.map(Timestamp),
        created_at: Timestamp(now),
    })
}

/// Creates an API key for the caller; the answer shows it once.
#[utoipa::path(post, path = "/api/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 403, description = "FORBIDDEN: an admin scope for a customer, or a key without admin scope", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_api_key(
    State(state): State<AppState>,
    KeyManager(p): KeyManager,
    Json(req): Json<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>)> {
    let mut c = Checks::new();
    c.len(&req.name, "name", 1, 100);
    if let Some(e) = req.expires_at {
        c.check(e.ms() > now_ms(), "expires_at", "must be in the future");
    }
    c.finish()?;
    if req.scope == Scope::Admin && p.role != Role::Admin {
        return Err(Error::forbidden(
            "FORBIDDEN",
            "Only admins can hold an admin-scoped key",
        ));
    }
    let mut conn = state.db.pool.acquire().await?;
    let created = insert_key(
        &mut conn,
        &p.user_id,
        req.name.trim(),
        req.scope,
        req.environment,
        req.expires_at.map(Timestamp::ms),
        None,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists API keys: the caller's own, or every key for admins. Usage counters included.
#[utoipa::path(get, path = "/api/api-keys", tag = "api-keys", params(PageParams),
    responses((status = 200, body = Page<ApiKey>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    KeyManager(p): KeyManager,
    Listing { page: req, .. }: Listing,
) -> Result<Json<Page<ApiKey>>> {
    state.accounting.flush(&state.db).await;
    let mut f = Filters::default();
    if p.role != Role::Admin {
        f.push("user_id", "=", p.user_id.clone());
    }
    let rows = crate::db::list::page::<ApiKey>(
        &state.db,
        &format!("SELECT {KEY_COLUMNS} FROM api_keys"),
        "id",
        f,
        &req,
        |r| &r.id,
    )
    .await?;
    Ok(Json(rows))
}

async fn visible_key(state: &AppState, p: &crate::auth::Principal, id: &str) -> Result<ApiKey> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
    let row: Option<ApiKey> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await?;
    row.filter(|r| p.role == Role::Admin || r.user_id == p.user_id)
        .ok_or_else(|| Error::no_such("API key"))
}

/// Gets one API key (owner or admin).
#[utoipa::path(get, path = "/api/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 200, body = ApiKey)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_api_key(
    State(state): State<AppState>,
    KeyManager(p): KeyManager,
    Path(id): Path<String>,
) -> Result<Json<ApiKey>> {
    state.accounting.flush(&state.db).await;
    Ok(Json(visible_key(&state, &p, &id).await?))
}

/// One UTC day of a key's use.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayUsage {
    /// The UTC date.
    #[schema(example = "2026-11-30")]
    pub day: String,
    pub requests: i64,
    /// Requests answered with a 4xx or 5xx.
    pub errors: i64,
}

/// A key's use per UTC day, oldest first, every day of the window listed (zeros included).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyUsage {
    pub data: Vec<DayUsage>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// How many days back, today included: 1–90, default 30.
    #[param(minimum = 1, maximum = 90)]
    pub days: Option<i64>,
}

/// An API key's requests and errors per day, today and the days before it (owner or admin).
#[utoipa::path(get, path = "/api/api-keys/{id}/usage", tag = "api-keys", params(("id" = String, Path), UsageParams),
    responses((status = 200, body = KeyUsage)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn api_key_usage(
    State(state): State<AppState>,
    KeyManager(p): KeyManager,
    Path(id): Path<String>,
    crate::http::extract::Query(q): crate::http::extract::Query<UsageParams>,
) -> Result<Json<KeyUsage>> {
    let days = q.days.unwrap_or(30);
    if !(1..=90).contains(&days) {
        return Err(Error::invalid("days", "must be between 1 and 90"));
    }
    let key = visible_key(&state, &p, &id).await?;
    state.accounting.flush(&state.db).await;
    Ok(Json(KeyUsage {
        data: daily_usage(&state, &key.id, days).await?,
    }))
}

/// Key `id`'s use per UTC day over the last `days` days, today included, as counted so far
/// (flush the accounting first for exact figures): the route's answer, and the dashboard's
/// charts for keys it has already listed.
pub async fn daily_usage(state: &AppState, id: &str, days: i64) -> Result<Vec<DayUsage>> {
    let today = crate::timestamp::utc_day(now_ms());
    let first = today - days + 1;
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT day, requests, errors FROM api_key_daily_usage WHERE api_key_id = $1 AND day >= $2",
    )
    .bind(id)
    .bind(first)
    .fetch_all(&state.db.pool)
    .await?;
    let counts: std::collections::HashMap<i64, (i64, i64)> =
        rows.into_iter().map(|(d, r, e)| (d, (r, e))).collect();
    Ok((first..=today)
        .map(|d| {
            let (requests, errors) = counts.get(&d).copied().unwrap_or((0, 0));
            DayUsage {
                day: Timestamp(d * crate::timestamp::DAY_MS).to_rfc3339()[..10].to_string(),
                requests,
                errors,
            }
        })
        .collect())
}

/// Revokes an API key at once.
#[utoipa::path(delete, path = "/api/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 204, description = "Revoked")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    KeyManager(p): KeyManager,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let key = visible_key(&state, &p, &id).await?;
    sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(&key.id)
        .bind(now_ms())
        .execute(&state.db.pool)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotates an API key: answers a new key with the same name, scope and environment; the old key
/// keeps working for `ECOSIRE_API_KEY_GRACE_S` (default 24 h), then answers 401.
#[utoipa::path(post, path = "/api/api-keys/{id}/rotate", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 201, body = CreatedApiKey), (status = 409, description = "API_KEY_INACTIVE (revoked or expired) or API_KEY_ROTATED (already rotated)", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn rotate_api_key(
    State(state): State<AppState>,
    KeyManager(p): KeyManager,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<CreatedApiKey>)> {
    let old = visible_key(&state, &p, &id).await?;
    let now = now_ms();
    if old.revoked_at.is_some() || old.expires_at.is_some_and(|e| e.ms() <= now) {
        return Err(Error::conflict(
            "API_KEY_INACTIVE",
            "A revoked or expired key cannot be rotated",
        ));
    }
    let grace_end = now + state.config.api_key_grace_s as i64 * 1000;
    let mut tx = state.db.begin().await?;
    // Only an active key that has no successor yet may be rotated: a second rotation would mint
    // another live key. The guard sits in the UPDATE itself, so two rotations racing each other
    // (PostgreSQL re-checks the row it waited for; SQLite serialises writers) give one successor.
    let marked = sqlx::query(
        "UPDATE api_keys SET rotated_at = $2, expires_at = $3 WHERE id = $1 AND rotated_at IS NULL \
         AND revoked_at IS NULL AND NOT EXISTS (SELECT 1 FROM api_keys s WHERE s.rotated_from = $1)",
    )
    .bind(&old.id)
    .bind(now)
    .bind(old.expires_at.map_or(grace_end, |e| e.ms().min(grace_end)))
    .execute(&mut *tx)
    .await?;
    if marked.rows_affected() != 1 {
        return Err(Error::conflict(
            "API_KEY_ROTATED",
            "This key has already been rotated; rotate its successor instead",
        ));
    }
    let created = insert_key(
        &mut tx,
        &old.user_id,
        &old.name,
        old.scope,
        old.environment,
        old.expires_at.map(Timestamp::ms),
        Some(&old.id),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape_and_redact() {
        let k = ApiKeyToken::generate(Environment::Live);
        assert!(k.expose().starts_with("ecos_live_"));
        assert_eq!(k.expose().len(), 10 + 32);
        assert!(ApiKeyToken::parse(k.expose()).is_some());
        assert!(ApiKeyToken::parse("ecos_live_short").is_none());
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&k.expose()[14..]));
        assert!(
            ApiKeyToken::generate(Environment::Test)
                .expose()
                .starts_with("ecos_test_")
        );
    }
}
