//! Single-use tokens for links in mail (verification, invitation, password reset): random (about
//! 190 bits), stored only as a SHA-256 digest, bound to the address they were sent to, expiring,
//! and consumed atomically (one `UPDATE … RETURNING`), so two clicks cannot both use one.

use std::time::Duration;

use crate::crypto::{random_base62, sha256_hex};
use crate::error::{Error, Result};
use crate::timestamp::now_ms;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Confirm the address (`POST /api/auth/verify-email/confirm`).
    Verify,
    /// Set the first password of an account the server created (the reset-confirm endpoint).
    Invite,
    /// Set a new password (`POST /api/auth/password-reset/confirm`).
    Reset,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Verify => "verify",
            Purpose::Invite => "invite",
            Purpose::Reset => "reset",
        }
    }
    /// How long a link works (API.md: verification and invitation 7 days, reset 1 hour).
    pub fn lifetime(self) -> Duration {
        match self {
            Purpose::Verify | Purpose::Invite => Duration::from_secs(7 * 86_400),
            Purpose::Reset => Duration::from_secs(3600),
        }
    }
    /// The lifetime in words, for the message.
    pub fn lifetime_words(self) -> &'static str {
        match self {
            Purpose::Verify | Purpose::Invite => "7 days",
            Purpose::Reset => "1 hour",
        }
    }
}

const TOKEN_LEN: usize = 32;

/// A bad, used, expired or forged token: 400 `INVALID_TOKEN`.
pub fn invalid() -> Error {
    Error::bad_request(
        "INVALID_TOKEN",
        "The link is invalid, was already used, or has expired",
    )
}

/// Creates a token for `user_id` at `email`, in `conn` (the transaction that sends it).
pub async fn issue(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    email: &str,
    purpose: Purpose,
) -> Result<String> {
    let token = random_base62(TOKEN_LEN);
    let now = now_ms();
    sqlx::query(
        "INSERT INTO account_tokens (digest, user_id, purpose, email, expires_at, used_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6)",
    )
    .bind(sha256_hex(token.as_bytes()))
    .bind(user_id)
    .bind(purpose.as_str())
    .bind(email)
    .bind(now + purpose.lifetime().as_millis() as i64)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// A token that was good.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub user_id: String,
    pub email: String,
    pub purpose: Purpose,
}

fn digest_of(token: &str) -> Result<String> {
    // Anything that cannot be a token is refused before the database is asked.
    if token.len() != TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid());
    }
    Ok(sha256_hex(token.as_bytes()))
}

fn purposes_sql(accepted: &[Purpose]) -> String {
    accepted
        .iter()
        .map(|p| format!("'{}'", p.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_purpose(s: &str) -> Purpose {
    match s {
        "verify" => Purpose::Verify,
        "invite" => Purpose::Invite,
        _ => Purpose::Reset,
    }
}

/// Would `token` be accepted now (a cheap look before slow work such as hashing a password)?
pub async fn peek(db: &crate::db::Db, token: &str, accepted: &[Purpose]) -> Result<()> {
    let digest = digest_of(token)?;
    let sql = format!(
        "SELECT t.user_id FROM account_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.digest = $1 AND t.used_at IS NULL AND t.expires_at > $2 AND t.purpose IN ({}) \
         AND u.email = t.email AND u.disabled = 0",
        purposes_sql(accepted)
    );
    let found: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(digest)
        .bind(now_ms())
        .fetch_optional(&db.pool)
        .await?;
    found.map(|_| ()).ok_or_else(invalid)
}

/// Uses `token` up, in `conn` (so a rolled-back change leaves it unused): the user and address
/// it vouches for, or `INVALID_TOKEN` when it is unknown, used, expired, of another purpose, or
/// its user has since changed address or been disabled.
pub async fn redeem(
    conn: &mut sqlx::AnyConnection,
    token: &str,
    accepted: &[Purpose],
) -> Result<Redeemed> {
    let digest = digest_of(token)?;
    let now = now_ms();
    let sql = format!(
        "UPDATE account_tokens SET used_at = $2 WHERE digest = $1 AND used_at IS NULL AND expires_at > $2 \
         AND purpose IN ({}) RETURNING user_id, email, purpose",
        purposes_sql(accepted)
    );
    let row: Option<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&digest)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((user_id, email, purpose)) = row else {
        return Err(invalid());
    };
    let current: Option<(String, i64)> =
        sqlx::query_as("SELECT email, disabled FROM users WHERE id = $1")
            .bind(&user_id)
            .fetch_optional(&mut *conn)
            .await?;
    match current {
        Some((e, 0)) if e == email => Ok(Redeemed {
            user_id,
            email,
            purpose: parse_purpose(&purpose),
        }),
        _ => Err(invalid()),
    }
}

/// Ends every unused password link of a user (a new password makes them moot).
pub async fn void_password_links(conn: &mut sqlx::AnyConnection, user_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE account_tokens SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL AND purpose IN ('reset', 'invite')",
    )
    .bind(user_id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
