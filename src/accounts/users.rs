//! Users: the admin bootstrap, lookups, and the admin listing.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Admin, Role};
use crate::crypto::new_id;
use crate::error::{Error, Result, ResultExt};
use crate::http::extract::{Json, Path};
use crate::http::pagination::{Listing, Page, PageParams};
use crate::state::AppState;
use crate::timestamp::{Timestamp, now_ms};

/// A user as stored: the user object plus what must never be shown (the password hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    #[sqlx(flatten)]
    pub user: User,
    pub password_hash: Option<String>,
}

const USER_COLUMNS: &str = "id, email, name, password_hash, role, plan, created_at, updated_at";

/// The user object (never the password hash), decoded straight from its row.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct User {
    #[schema(example = "usr_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    #[schema(example = "ann@example.com")]
    pub email: String,
    pub name: String,
    pub role: Role,
    #[schema(example = "free")]
    pub plan: String,
    pub created_at: Timestamp,
}

impl UserRow {
    pub fn view(&self) -> User {
        self.user.clone()
    }
}

pub async fn find_by_email(state: &AppState, email: &str) -> Result<Option<UserRow>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(email)
        .fetch_optional(&state.db.pool)
        .await?)
}

pub async fn find_by_id(state: &AppState, id: &str) -> Result<Option<UserRow>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await?)
}

/// Who vouches for a new account's email address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailTrust {
    /// The server created the account (an admin, a paid checkout, the bootstrap): what is granted
    /// to the address may attach to it.
    Server,
    /// Anyone registered it: nothing granted to the address attaches until it is verified.
    SelfRegistered,
}

/// Inserts a user created by the server; `None` when the email is taken.
pub async fn insert(
    state: &AppState,
    email: &str,
    name: &str,
    password_hash: Option<&str>,
    role: Role,
) -> Result<Option<UserRow>> {
    insert_with_trust(state, email, name, password_hash, role, EmailTrust::Server).await
}

/// Inserts a user; `None` when the email is taken.
pub async fn insert_with_trust(
    state: &AppState,
    email: &str,
    name: &str,
    password_hash: Option<&str>,
    role: Role,
    trust: EmailTrust,
) -> Result<Option<UserRow>> {
    let now = now_ms();
    let id = new_id("usr");
    let res = sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, role, plan, self_registered, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'free', $6, $7, $7)",
    )
    .bind(&id)
    .bind(email)
    .bind(name)
    .bind(password_hash)
    .bind(role.as_str())
    .bind(i64::from(trust == EmailTrust::SelfRegistered))
    .bind(now)
    .execute(&state.db.pool)
    .await
    .map(|_| true)
    .on_unique(|| Ok(false))?;
    if !res {
        return Ok(None);
    }
    find_by_id(state, &id).await
}

/// The account that owns what is granted to `email` (a license created by an admin for an
/// address, a paid checkout's customer email). An existing account owns it only when the server
/// can trust its address: verified, or created by the server itself — never merely registered by
/// someone, or anyone could register `carol@…` in advance and collect what is later granted to
/// Carol. No account: a passwordless customer is created (server-created, so trusted). `None`:
/// the address belongs to an unverified self-registered account, and the grant waits unowned
/// (`licenses.granted_email`) until that address is verified.
pub async fn owner_for_email(
    conn: &mut sqlx::AnyConnection,
    email: &str,
) -> Result<Option<String>> {
    for _ in 0..2 {
        let found: Option<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, self_registered, email_verified_at FROM users WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((id, self_registered, verified_at)) = found {
            return Ok((self_registered == 0 || verified_at.is_some()).then_some(id));
        }
        let now = now_ms();
        // A concurrent grant to the same new address may insert first: then read it back.
        sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, role, plan, self_registered, created_at, updated_at) \
             VALUES ($1, $2, $3, NULL, 'customer', 'free', 0, $4, $4) ON CONFLICT (email) DO NOTHING",
        )
        .bind(new_id("usr"))
        .bind(email)
        .bind(email.split('@').next().unwrap_or(email))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Err(Error::Internal(anyhow::anyhow!(
        "the account for a granted email could not be read back"
    )))
}

/// What the start-up admin bootstrap did, for the banner.
pub enum Bootstrap {
    /// An admin already existed (or the configured one did).
    Existing,
    /// The configured `ECOSIRE_ADMIN_EMAIL` was created.
    CreatedConfigured(String),
    /// No admin and nothing configured: one was made with a generated password, shown once.
    CreatedGenerated { email: String, password: String },
}

pub async fn bootstrap_admin(state: &AppState) -> anyhow::Result<Bootstrap> {
    if let (Some(email), Some(password)) = (&state.config.admin_email, &state.config.admin_password)
    {
        let email = crate::http::checks::normalize_email(email)
            .ok_or_else(|| anyhow::anyhow!("ECOSIRE_ADMIN_EMAIL: not a valid email address"))?;
        if find_by_email(state, &email)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .is_some()
        {
            return Ok(Bootstrap::Existing);
        }
        let hash = super::passwords::hash(password.clone()).await?;
        insert(state, &email, "Administrator", Some(&hash), Role::Admin)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(Bootstrap::CreatedConfigured(email));
    }
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin'")
        .fetch_one(&state.db.pool)
        .await?;
    if admins > 0 {
        return Ok(Bootstrap::Existing);
    }
    let email = "admin@ecosire.local".to_string();
    let password = crate::crypto::random_base62(20);
    let hash = super::passwords::hash(password.clone()).await?;
    insert(state, &email, "Administrator", Some(&hash), Role::Admin)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Bootstrap::CreatedGenerated { email, password })
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(get_user))
}

/// Lists users (admin).
#[utoipa::path(get, path = "/api/users", tag = "users", params(PageParams),
    responses((status = 200, body = Page<User>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
    Listing { page: req, .. }: Listing,
) -> Result<Json<Page<User>>> {
    let f = crate::db::Filters::default();
    let rows = crate::db::list::page::<UserRow>(
        &state.db,
        &format!("SELECT {USER_COLUMNS} FROM users"),
        "id",
        f,
        &req,
        |r| &r.user.id,
    )
    .await?;
    Ok(Json(rows.map(|r| r.user)))
}

/// Gets one user (admin).
#[utoipa::path(get, path = "/api/users/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 200, body = User)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<User>> {
    let user = find_by_id(&state, &id)
        .await?
        .ok_or_else(|| Error::no_such("User"))?;
    Ok(Json(user.view()))
}
