//! What people do with their account by mail and by password: confirm an address, reset a
//! forgotten password (or set the first one from an invitation), change it. Every emailed token
//! is single-use and bound to its address (`tokens`); every message is queued in the transaction
//! that causes it (`mailings`).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tokens::{self, Purpose};
use super::{mailings, users};
use crate::auth::limits::{AccountLinks, PasswordReset, PerIp};
use crate::auth::{Principal, SessionUser};
use crate::error::{Error, Result};
use crate::http::checks::{Checks, normalize_email};
use crate::http::extract::Json;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(resend_verification))
        .routes(routes!(confirm_verification))
        .routes(routes!(request_password_reset))
        .routes(routes!(confirm_password_reset))
        .routes(routes!(change_password))
}

/// The answer to a request whose effect arrives by mail.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    #[schema(example = "accepted")]
    pub status: &'static str,
    pub message: &'static str,
}

#[derive(Deserialize, ToSchema)]
pub struct TokenRequest {
    /// The token from the emailed link.
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ResetRequest {
    #[schema(example = "ann@example.com")]
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ResetConfirm {
    /// The token from the emailed link (a reset or an invitation).
    pub token: String,
    /// At least 8 characters.
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    /// At least 8 characters.
    pub new_password: String,
}

fn check_password(c: &mut Checks, field: &str, p: &str) {
    c.len(p, field, 8, 1024);
}

/// Wakes this instance's mail worker after a commit that queued a message.
fn mail_queued(state: &AppState) {
    state.mail.wake.notify_one();
}

/// Commits a change that verified an address, then drops the licenses it attached from every
/// instance's cache (their owner changed).
async fn commit_verified(state: &AppState, tx: crate::db::Tx, digests: Vec<String>) -> Result<()> {
    tx.commit().await?;
    for d in &digests {
        state.licenses.changed(&state.db, d).await;
    }
    Ok(())
}

/// Sends a new verification link to the signed-in user's address.
///
/// 202 whether or not one was needed (an address already verified gets nothing).
#[utoipa::path(post, path = "/api/auth/verify-email", tag = "auth",
    responses((status = 202, body = Accepted)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn resend_verification(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<(StatusCode, Json<Accepted>)> {
    let user = users::find_by_id(&state, &principal.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?
        .user;
    if user.email_verified_at.is_none() {
        state.limits.check_address(&user.email).await?;
        let mut tx = state.db.begin().await?;
        mailings::verification(&state, &mut tx, &user.id, &user.email, &user.name).await?;
        tx.commit().await?;
        mail_queued(&state);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "accepted",
            message: "If the address still needs confirming, a link is on its way",
        }),
    ))
}

/// Confirms an address with the token of a verification link.
///
/// 204; a bad, used or expired token → 400 `INVALID_TOKEN` and nothing changes. What was granted
/// to the address (licenses, orders) attaches to the account now.
#[utoipa::path(post, path = "/api/auth/verify-email/confirm", tag = "auth", request_body = TokenRequest,
    responses((status = 204, description = "Verified"), (status = 400, description = "INVALID_TOKEN", body = crate::error::Problem)))]
pub async fn confirm_verification(
    State(state): State<AppState>,
    _rate: PerIp<AccountLinks>,
    Json(req): Json<TokenRequest>,
) -> Result<StatusCode> {
    let mut tx = state.db.begin().await?;
    let t = tokens::redeem(&mut tx, req.token.trim(), &[Purpose::Verify]).await?;
    let digests = users::mark_verified(&mut tx, &t.user_id, &t.email).await?;
    commit_verified(&state, tx, digests).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Asks for a password reset link.
///
/// Always 202 with the same body, in about the same time, whether or not the address has an
/// account (the work happens after the answer); an account gets a link that works once, for 1
/// hour. Limited per IP and per address.
#[utoipa::path(post, path = "/api/auth/password-reset", tag = "auth", request_body = ResetRequest,
    responses((status = 202, body = Accepted), (status = 422, description = "VALIDATION_FAILED, with details", body = crate::error::Problem),
              (status = 429, description = "RATE_LIMITED", body = crate::error::Problem)))]
pub async fn request_password_reset(
    State(state): State<AppState>,
    _rate: PerIp<PasswordReset>,
    Json(req): Json<ResetRequest>,
) -> Result<(StatusCode, Json<Accepted>)> {
    let email = normalize_email(&req.email)
        .ok_or_else(|| Error::invalid("email", "Invalid email address"))?;
    state.limits.check_address(&email).await?;
    let bg = state.clone();
    tokio::spawn(async move {
        if let Err(e) = send_reset(&bg, &email).await {
            tracing::warn!(error = %e, "a password reset link could not be queued");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "accepted",
            message: "If an account uses this address, a reset link is on its way",
        }),
    ))
}

async fn send_reset(state: &AppState, email: &str) -> Result<()> {
    let Some(user) = users::find_by_email(state, email).await? else {
        return Ok(());
    };
    if user.user.disabled.0 {
        return Ok(());
    }
    let mut tx = state.db.begin().await?;
    mailings::password_reset(state, &mut tx, &user.user.id, email, &user.user.name).await?;
    tx.commit().await?;
    mail_queued(state);
    Ok(())
}

/// Sets a password with the token of a reset link or an invitation.
///
/// 204: the password is set, the address counts as verified (the link reached it), and every
/// session of the user ends. A bad, used or expired token → 400 `INVALID_TOKEN`, nothing changed.
#[utoipa::path(post, path = "/api/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm,
    responses((status = 204, description = "Password set"), (status = 400, description = "INVALID_TOKEN", body = crate::error::Problem),
              (status = 422, description = "VALIDATION_FAILED, with details", body = crate::error::Problem)))]
pub async fn confirm_password_reset(
    State(state): State<AppState>,
    _rate: PerIp<AccountLinks>,
    Json(req): Json<ResetConfirm>,
) -> Result<StatusCode> {
    let mut c = Checks::new();
    check_password(&mut c, "password", &req.password);
    c.finish()?;
    let token = req.token.trim();
    let accepted = [Purpose::Reset, Purpose::Invite];
    // Hashing is slow: only for a token that would be accepted.
    tokens::peek(&state.db, token, &accepted).await?;
    let hash = state.hasher.hash(req.password).await?;
    let mut tx = state.db.begin().await?;
    let t = tokens::redeem(&mut tx, token, &accepted).await?;
    users::replace_password(&mut tx, &t.user_id, &hash, None).await?;
    let digests = users::mark_verified(&mut tx, &t.user_id, &t.email).await?;
    commit_verified(&state, tx, digests).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the signed-in user's password (a session, not an API key).
///
/// 204; the user's other sessions end and the address gets a warning. A wrong current password
/// → 401 `INVALID_CREDENTIALS`.
#[utoipa::path(post, path = "/api/auth/password", tag = "auth", request_body = PasswordChange,
    responses((status = 204, description = "Changed"), (status = 401, description = "INVALID_CREDENTIALS", body = crate::error::Problem),
              (status = 403, description = "FORBIDDEN: an API key", body = crate::error::Problem), (status = 422, description = "VALIDATION_FAILED, with details", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn change_password(
    State(state): State<AppState>,
    SessionUser(principal): SessionUser,
    Json(req): Json<PasswordChange>,
) -> Result<StatusCode> {
    let current_session = principal
        .session_digest()
        .expect("SessionUser holds a session")
        .to_string();
    let mut c = Checks::new();
    check_password(&mut c, "new_password", &req.new_password);
    c.finish()?;
    let user = users::find_by_id(&state, &principal.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let ok = req.current_password.len() <= 1024
        && state
            .hasher
            .verify(user.password_hash.clone(), req.current_password)
            .await?;
    if !ok {
        return Err(Error::status(
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "The current password is wrong",
        ));
    }
    let hash = state.hasher.hash(req.new_password).await?;
    let u = user.user;
    let mut tx = state.db.begin().await?;
    users::replace_password(&mut tx, &u.id, &hash, Some(&current_session)).await?;
    mailings::password_changed(&state, &mut tx, &u.id, &u.email, &u.name).await?;
    tx.commit().await?;
    mail_queued(&state);
    Ok(StatusCode::NO_CONTENT)
}

redacted_debug!(TokenRequest,);
redacted_debug!(ResetRequest, email);
redacted_debug!(ResetConfirm,);
redacted_debug!(PasswordChange,);
