//! Login sessions: a session JWT (EdDSA, `typ: at+jwt`, `aud: ecosire:session`) whose `sid` is
//! stored only as a SHA-256 digest, so logout ends it server-side on every instance at once.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::users::{self, User, UserEnvelope};
use crate::auth::limits::{Login, PerIp, Register};
use crate::auth::{COOKIE_NAME, Principal, Role, SESSION_AUDIENCE, SessionClaims};
use crate::crypto::{random_base62, sha256_hex};
use crate::error::{Error, Result};
use crate::http::extract::Json;
use crate::state::AppState;
use crate::timestamp::now_ms;

/// Creates a session for `user_id` and returns its JWT.
pub async fn start_session(state: &AppState, user_id: &str) -> Result<String> {
    let sid = random_base62(32);
    let now = now_ms();
    let ttl_ms = state.config.session_ttl.as_millis() as i64;
    sqlx::query(
        "INSERT INTO sessions (id_digest, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(sha256_hex(sid.as_bytes()))
    .bind(user_id)
    .bind(now)
    .bind(now + ttl_ms)
    .execute(&state.db.pool)
    .await?;
    let claims = SessionClaims {
        iss: state.config.token_issuer.clone(),
        aud: SESSION_AUDIENCE.into(),
        sub: user_id.into(),
        sid,
        iat: now / 1000,
        exp: (now + ttl_ms) / 1000,
    };
    Ok(state.keys.session.sign(&claims))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(example = "admin@ecosire.local")]
    pub email: String,
    #[schema(example = "correct horse battery staple")]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Session JWT: send as `Authorization: Bearer <token>`.
    pub token: String,
    pub user: LoginUser,
}

pub(crate) fn session_cookie(state: &AppState, value: &str, max_age_s: i64) -> HeaderValue {
    let secure = if state.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_s}{secure}"
    ))
    .expect("cookie is ASCII")
}

/// Logs in with email and password.
///
/// Returns a session JWT and sets it as the HttpOnly `ecosire_auth` cookie. Unknown email and
/// wrong password get the same answer in about the same time.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, description = "INVALID_CREDENTIALS", body = crate::error::Problem)))]
pub async fn login(
    State(state): State<AppState>,
    _rate: PerIp<Login>,
    Json(req): Json<LoginRequest>,
) -> Result<Response> {
    let bad = || {
        Error::status(
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "Invalid email or password",
        )
    };
    if req.password.len() > 1024 {
        return Err(bad());
    }
    let email = crate::http::checks::normalize_email(&req.email);
    let user = match &email {
        Some(e) => users::find_by_email(&state, e).await?,
        None => None,
    };
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let ok = state.hasher.verify(stored, req.password).await?;
    let Some(user) = user.filter(|_| ok) else {
        return Err(bad());
    };
    let user = user.user;
    // Told only to someone who knows the password.
    if user.disabled.0 {
        return Err(Error::forbidden(
            "ACCOUNT_DISABLED",
            "This account is disabled; ask an administrator",
        ));
    }
    let token = start_session(&state, &user.id).await?;
    let mut res = Json(LoginResponse {
        token: token.clone(),
        user: LoginUser {
            id: user.id,
            email: user.email,
            name: user.name,
            role: user.role,
        },
    })
    .into_response();
    let max_age = state.config.session_ttl.as_secs() as i64;
    res.headers_mut()
        .append(header::SET_COOKIE, session_cookie(&state, &token, max_age));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Ends the current session server-side and clears the cookie.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses((status = 204, description = "Logged out")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn logout(State(state): State<AppState>, principal: Principal) -> Result<Response> {
    if let Some(digest) = principal.session_digest() {
        sqlx::query("DELETE FROM sessions WHERE id_digest = $1")
            .bind(digest)
            .execute(&state.db.pool)
            .await?;
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub user: User,
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, body = MeResponse)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn me(State(state): State<AppState>, principal: Principal) -> Result<Json<MeResponse>> {
    let user = users::find_by_id(&state, &principal.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    Ok(Json(MeResponse { user: user.view() }))
}

#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    #[schema(example = "ann@example.com")]
    pub email: String,
    /// At least 8 characters.
    #[schema(example = "correct horse battery staple")]
    pub password: String,
    #[schema(example = "Ann Lee")]
    pub name: String,
}

/// Creates a customer account (unless `ECOSIRE_REGISTRATION=off`).
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserEnvelope), (status = 403, description = "REGISTRATION_CLOSED", body = crate::error::Problem),
              (status = 409, description = "EMAIL_TAKEN", body = crate::error::Problem)))]
pub async fn register(
    State(state): State<AppState>,
    _rate: PerIp<Register>,
    Json(req): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<UserEnvelope>)> {
    if !state.config.registration {
        return Err(Error::forbidden(
            "REGISTRATION_CLOSED",
            "Registration is closed on this server",
        ));
    }
    let email = crate::http::checks::normalize_email(&req.email);
    let mut c = crate::http::checks::Checks::new();
    c.check(email.is_some(), "email", "Invalid email address");
    c.len(&req.password, "password", 8, 1024);
    c.len(req.name.trim(), "name", 1, 200);
    c.finish()?;
    let email = email.expect("checked");
    let hash = state.hasher.hash(req.password).await?;
    // The account and its verification link exist together or not at all.
    let mut tx = state.db.begin().await?;
    let user = users::insert_with_trust(
        &mut tx,
        &email,
        req.name.trim(),
        Some(&hash),
        Role::Customer,
        users::EmailTrust::SelfRegistered,
    )
    .await?
    .ok_or_else(|| Error::conflict("EMAIL_TAKEN", "An account with this email exists"))?;
    super::mailings::verification(&state, &mut tx, &user.user.id, &email, &user.user.name).await?;
    tx.commit().await?;
    state.mail.wake.notify_one();
    Ok((
        StatusCode::CREATED,
        Json(UserEnvelope { user: user.view() }),
    ))
}

redacted_debug!(SessionClaims, sub, iat, exp);
redacted_debug!(LoginRequest, email);
redacted_debug!(LoginResponse, user);
redacted_debug!(RegisterRequest, email, name);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_secrets() {
        let req = LoginRequest {
            email: "a@b.io".into(),
            password: "hunter2-secret".into(),
        };
        let reg = RegisterRequest {
            email: "a@b.io".into(),
            password: "hunter2-secret".into(),
            name: "A".into(),
        };
        assert!(!format!("{req:?}{reg:?}").contains("hunter2"));
        let claims = SessionClaims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "usr_1".into(),
            sid: "sid-secret".into(),
            iat: 0,
            exp: 1,
        };
        assert!(!format!("{claims:?}").contains("sid-secret"));
    }
}
