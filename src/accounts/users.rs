//! Users: the admin bootstrap, lookups, ownership by verified address, and the admin listing,
//! changes and erasure.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
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

pub(crate) const USER_COLUMNS: &str = "id, email, name, password_hash, role, plan, email_verified_at, disabled, created_at, updated_at";

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
    /// When the address was confirmed (a verification link, a password set from an emailed
    /// link); null until then.
    pub email_verified_at: Option<Timestamp>,
    /// A disabled user's sessions and API keys are refused.
    #[schema(value_type = bool)]
    pub disabled: crate::db::Flag,
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
    let mut conn = state.db.pool.acquire().await?;
    insert_with_trust(
        &mut conn,
        email,
        name,
        password_hash,
        role,
        EmailTrust::Server,
    )
    .await
}

/// Inserts a user; `None` when the email is taken.
pub async fn insert_with_trust(
    conn: &mut sqlx::AnyConnection,
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
    .execute(&mut *conn)
    .await
    .map(|_| true)
    .on_unique(|| Ok(false))?;
    if !res {
        return Ok(None);
    }
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    Ok(Some(
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&id)
            .fetch_one(&mut *conn)
            .await?,
    ))
}

/// Sets a user's password hash and ends what the old password opened: every session but `keep`
/// (the one that made the change, if any) and every unused password link. The one place a
/// password changes (reset, invitation, change, the command line).
pub async fn replace_password(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    hash: &str,
    keep: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
        .bind(user_id)
        .bind(hash)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id_digest <> $2")
        .bind(user_id)
        .bind(keep.unwrap_or(""))
        .execute(&mut *conn)
        .await?;
    super::tokens::void_password_links(conn, user_id).await
}

/// Marks `user_id`'s address `email` verified and hands it what was waiting for that address:
/// licenses granted to it (answers their key digests, for the cache) and orders bought with it.
pub async fn mark_verified(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    email: &str,
) -> Result<Vec<String>> {
    let now = now_ms();
    sqlx::query(
        "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $2), updated_at = $2 WHERE id = $1",
    )
    .bind(user_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let digests: Vec<String> = sqlx::query_scalar(
        "UPDATE licenses SET user_id = $1, granted_email = NULL, updated_at = $3 \
         WHERE granted_email = $2 AND user_id IS NULL RETURNING key_digest",
    )
    .bind(user_id)
    .bind(email)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE orders SET user_id = $1, updated_at = $3 WHERE email = $2 AND user_id IS NULL",
    )
    .bind(user_id)
    .bind(email)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE subscriptions SET user_id = $1, updated_at = $2 WHERE user_id IS NULL \
         AND id IN (SELECT subscription_id FROM orders WHERE user_id = $1)",
    )
    .bind(user_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(digests)
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
        .routes(routes!(get_user, patch_user, delete_user))
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    pub name: Option<String>,
    pub role: Option<Role>,
    /// A plan of `ECOSIRE_QUOTA_PLANS` (it picks the daily quota).
    #[schema(example = "pro")]
    pub plan: Option<String>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserEnvelope {
    pub user: User,
}

/// The last active admin cannot lose that: 409 `LAST_ADMIN`.
fn last_admin() -> Error {
    Error::conflict(
        "LAST_ADMIN",
        "This is the last active admin; make another admin first",
    )
}

/// Locks the user's row and, when the change may take an admin away (`removes_admin`: a
/// demotion, disabling, deletion) and would leave no active admin, refuses it. The active admins
/// are locked first, all of them and in one order (PostgreSQL; SQLite's write transaction holds
/// the whole database), so two admins demoting each other at once neither deadlock nor both
/// succeed: the second sees the first's change.
async fn lock_for_change(
    state: &AppState,
    tx: &mut crate::db::Tx,
    id: &str,
    removes_admin: bool,
) -> Result<UserRow> {
    let lock = state.db.row_lock();
    let admins: Vec<String> = if removes_admin {
        let sql =
            format!("SELECT id FROM users WHERE role = 'admin' AND disabled = 0 ORDER BY id{lock}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut **tx)
            .await?
    } else {
        vec![]
    };
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1{lock}");
    let user: UserRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::no_such("User"))?;
    let active_admin = user.user.role == Role::Admin && !user.user.disabled.0;
    if removes_admin && active_admin && !admins.iter().any(|a| a != id) {
        return Err(last_admin());
    }
    Ok(user)
}

/// Changes a user (admin): name, role, plan, disabled.
///
/// A disabled user's sessions and API keys are refused at once (401). The last active admin
/// cannot be demoted or disabled: 409 `LAST_ADMIN`.
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", params(("id" = String, Path)),
    request_body = PatchUser,
    responses((status = 200, body = UserEnvelope), (status = 404, description = "NOT_FOUND", body = crate::error::Problem),
              (status = 409, description = "LAST_ADMIN", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn patch_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Json(req): Json<PatchUser>,
) -> Result<Json<UserEnvelope>> {
    let mut c = crate::http::checks::Checks::new();
    if let Some(n) = &req.name {
        c.len(n.trim(), "name", 1, 200);
    }
    if let Some(p) = &req.plan {
        c.check(
            !p.is_empty()
                && p.len() <= 64
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "plan",
            "a plan name: letters, digits, - and _",
        );
    }
    c.finish()?;
    let mut tx = state.db.begin().await?;
    let demoted = req.role == Some(Role::Customer);
    let disabling = req.disabled == Some(true);
    let user = lock_for_change(&state, &mut tx, &id, demoted || disabling).await?;
    sqlx::query(
        "UPDATE users SET name = COALESCE($2, name), role = COALESCE($3, role), plan = COALESCE($4, plan), \
         disabled = COALESCE($5, disabled), updated_at = $6 WHERE id = $1",
    )
    .bind(&user.user.id)
    .bind(req.name.as_deref().map(str::trim))
    .bind(req.role.map(Role::as_str))
    .bind(req.plan.as_deref())
    .bind(req.disabled.map(i64::from))
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let user = find_by_id(&state, &id)
        .await?
        .ok_or_else(|| Error::no_such("User"))?;
    Ok(Json(UserEnvelope { user: user.view() }))
}

/// Erases a user's personal data (admin).
///
/// The email becomes `deleted+<id>@invalid`, the name is cleared, sessions, API keys, pending
/// messages and links end, support tickets lose their contact fields and orders their email;
/// licenses and orders stay for the books. The last active admin cannot be deleted: 409
/// `LAST_ADMIN`.
#[utoipa::path(delete, path = "/api/users/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 204, description = "Erased"), (status = 404, description = "NOT_FOUND", body = crate::error::Problem),
              (status = 409, description = "LAST_ADMIN", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let mut tx = state.db.begin().await?;
    let user = lock_for_change(&state, &mut tx, &id, true).await?;
    let old_email = user.user.email.clone();
    let now = now_ms();
    let erased = format!("deleted+{id}@invalid");
    sqlx::query(
        "UPDATE users SET email = $2, name = '', password_hash = NULL, disabled = 1, email_verified_at = NULL, \
         updated_at = $3 WHERE id = $1",
    )
    .bind(&id)
    .bind(&erased)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    for sql in [
        "DELETE FROM sessions WHERE user_id = $1",
        "DELETE FROM account_tokens WHERE user_id = $1",
        "DELETE FROM mail_outbox WHERE user_id = $1",
        "DELETE FROM oidc_identities WHERE user_id = $1",
    ] {
        sqlx::query(sql).bind(&id).execute(&mut *tx).await?;
    }
    sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(&id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    // Tickets filed by the person, by account or by address, keep their text for the books but
    // lose who filed them.
    sqlx::query(
        "UPDATE support_tickets SET email = $2, user_id = NULL, updated_at = $4 WHERE user_id = $1 OR email = $3",
    )
    .bind(&id)
    .bind(&erased)
    .bind(&old_email)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE orders SET email = NULL, updated_at = $3 WHERE user_id = $1 OR email = $2")
        .bind(&id)
        .bind(&old_email)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let digests: Vec<String> = sqlx::query_scalar(
        "UPDATE licenses SET granted_email = NULL, updated_at = $2 WHERE granted_email = $1 RETURNING key_digest",
    )
    .bind(&old_email)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    for d in &digests {
        state.licenses.changed(&state.db, d).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
