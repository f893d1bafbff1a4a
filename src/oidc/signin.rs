//! The browser sign-in: `GET /api/auth/oidc/login` sends the browser to the provider (the
//! authorization code flow with PKCE, `state` and `nonce`), `GET /api/auth/oidc/callback` takes
//! its answer and ends in the same HttpOnly session cookie as a password login.
//!
//! A sign-in under way is a row of `oidc_logins`, found by the digest of `state`, used once
//! (deleted as it is read), bound to the browser that started it by the digest of a cookie of its
//! own (so a callback URL sent to someone else signs nobody in), and gone after 10 minutes. Its
//! PKCE verifier, nonce and return path are sealed under the data key. Every failure sends the
//! browser back to the sign-in page with `?oidc_error=CODE`, which the page words for people.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{
    AccessToken, AuthorizationCode, ClaimsVerificationError, CsrfToken, IdTokenVerifier, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, Scope, SignatureVerificationError,
    TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::link::{self, Person};
use super::{ALGORITHMS, Provider};
use crate::auth::limits::{Login, PerIp};
use crate::crypto::{ct_eq, random_base62, sha256_hex};
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::timestamp::now_ms;

/// The browser's half of a sign-in under way.
const COOKIE: &str = "ecosire_oidc";
const COOKIE_PATH: &str = "/api/auth/oidc";
const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(oidc_login))
        .routes(routes!(oidc_callback))
}

/// What is sealed into a sign-in's row.
#[derive(Serialize, Deserialize)]
struct Pending {
    verifier: String,
    nonce: String,
    next: String,
}

#[derive(Deserialize, IntoParams)]
pub struct LoginQuery {
    /// A path on this site to return to after signing in (default `/dashboard`).
    next: Option<String>,
}

fn provider(state: &AppState) -> Result<&std::sync::Arc<Provider>> {
    state.oidc.as_ref().ok_or_else(|| {
        Error::not_found(
            "NOT_FOUND",
            "Sign-in through an identity provider is not configured",
        )
    })
}

fn see_other(to: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/login")),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn browser_cookie(state: &AppState, value: &str, max_age_s: i64) -> HeaderValue {
    let secure = if state.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Lax; Path={COOKIE_PATH}; Max-Age={max_age_s}{secure}"
    ))
    .expect("cookie is ASCII")
}

/// Starts a sign-in through the identity provider (a browser navigation).
///
/// Answers 303 to the provider's authorization endpoint, or to `/login?oidc_error=unavailable`
/// while the provider cannot be reached. 404 when no provider is configured.
#[utoipa::path(get, path = "/api/auth/oidc/login", tag = "auth", params(LoginQuery),
    responses((status = 303, description = "To the provider's sign-in (or back to /login with oidc_error)"),
              (status = 404, description = "NOT_FOUND: no identity provider is configured", body = crate::error::Problem)))]
pub async fn oidc_login(
    State(state): State<AppState>,
    _rate: PerIp<Login>,
    Query(q): Query<LoginQuery>,
) -> Result<Response> {
    let provider = provider(&state)?;
    let Some(discovered) = provider.discovered() else {
        return Ok(see_other("/login?oidc_error=unavailable"));
    };
    let next = crate::dashboard::local_path(q.next);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let csrf = random_base62(32);
    let nonce = random_base62(32);
    let mut request = discovered
        .client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            {
                let csrf = csrf.clone();
                move || CsrfToken::new(csrf)
            },
            {
                let nonce = nonce.clone();
                move || Nonce::new(nonce)
            },
        )
        .set_pkce_challenge(challenge);
    for s in provider.config.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(s.clone()));
    }
    let (url, _, _) = request.url();
    let browser = random_base62(32);
    let state_digest = sha256_hex(csrf.as_bytes());
    let sealed = state.keys.data.seal(
        &serde_json::to_vec(&Pending {
            verifier: verifier.secret().clone(),
            nonce,
            next,
        })
        .expect("serialisable"),
        &state_digest,
    );
    let now = now_ms();
    sqlx::query("DELETE FROM oidc_logins WHERE expires_at < $1")
        .bind(now)
        .execute(&state.db.pool)
        .await?;
    sqlx::query(
        "INSERT INTO oidc_logins (state_digest, browser_digest, sealed, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&state_digest)
    .bind(sha256_hex(browser.as_bytes()))
    .bind(sealed)
    .bind(now + LOGIN_TTL_MS)
    .execute(&state.db.pool)
    .await?;
    let mut res = see_other(url.as_str());
    res.headers_mut().append(
        header::SET_COOKIE,
        browser_cookie(&state, &browser, LOGIN_TTL_MS / 1000),
    );
    Ok(res)
}

#[derive(Deserialize, IntoParams)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// Set by the provider when it did not sign the person in (e.g. `access_denied`).
    error: Option<String>,
}

/// Why a callback failed: the `oidc_error` code the sign-in page words.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// No such sign-in under way for this browser (tampered, replayed, expired, another browser).
    State,
    /// The provider did not sign the person in.
    Denied,
    /// The provider cannot be reached.
    Unavailable,
    /// The provider refused the code (replayed, expired, PKCE mismatch).
    Provider,
    /// The ID token did not verify (signature, issuer, audience, expiry, nonce).
    Token,
    Account(link::Refusal),
}

impl Failure {
    fn code(self) -> &'static str {
        match self {
            Failure::State => "state",
            Failure::Denied => "denied",
            Failure::Unavailable => "unavailable",
            Failure::Provider => "provider",
            Failure::Token => "token",
            Failure::Account(r) => r.code(),
        }
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The provider's answer to a sign-in (a browser navigation).
///
/// Answers 303: to the page the sign-in started from, with the session cookie set, or to
/// `/login?oidc_error=CODE` (`state`, `denied`, `unavailable`, `provider`, `token`,
/// `email_taken`, `email_missing`, `disabled`). 404 when no provider is configured.
#[utoipa::path(get, path = "/api/auth/oidc/callback", tag = "auth", params(CallbackQuery),
    responses((status = 303, description = "Signed in (session cookie set), or back to /login with oidc_error"),
              (status = 404, description = "NOT_FOUND: no identity provider is configured", body = crate::error::Problem)))]
pub async fn oidc_callback(
    State(state): State<AppState>,
    _rate: PerIp<Login>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response> {
    let provider = provider(&state)?.clone();
    let outcome = finish(&state, &provider, &headers, q).await?;
    let mut res = match outcome {
        Ok((token, next)) => {
            let mut res = see_other(&next);
            let max_age = state.config.session_ttl.as_secs() as i64;
            res.headers_mut().append(
                header::SET_COOKIE,
                crate::accounts::sessions::session_cookie(&state, &token, max_age),
            );
            res
        }
        Err(failure) => {
            tracing::info!(reason = ?failure, "OIDC: sign-in refused");
            see_other(&format!("/login?oidc_error={}", failure.code()))
        }
    };
    res.headers_mut()
        .append(header::SET_COOKIE, browser_cookie(&state, "", 0));
    Ok(res)
}

/// The callback's work: answers the session JWT and where to go, or why not.
async fn finish(
    state: &AppState,
    provider: &Provider,
    headers: &HeaderMap,
    q: CallbackQuery,
) -> Result<std::result::Result<(String, String), Failure>> {
    let Some(csrf) = q.state.filter(|s| !s.is_empty()) else {
        return Ok(Err(Failure::State));
    };
    let state_digest = sha256_hex(csrf.as_bytes());
    // Deleted as it is read: a second callback with the same `state` finds nothing.
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "DELETE FROM oidc_logins WHERE state_digest = $1 RETURNING browser_digest, sealed, expires_at",
    )
    .bind(&state_digest)
    .fetch_optional(&state.db.pool)
    .await?;
    let Some((browser_digest, sealed, expires_at)) = row else {
        return Ok(Err(Failure::State));
    };
    let same_browser = cookie_value(headers, COOKIE).is_some_and(|b| {
        ct_eq(
            sha256_hex(b.as_bytes()).as_bytes(),
            browser_digest.as_bytes(),
        )
    });
    if !same_browser || expires_at < now_ms() {
        return Ok(Err(Failure::State));
    }
    if q.error.is_some() {
        return Ok(Err(Failure::Denied));
    }
    let Some(code) = q.code.filter(|c| !c.is_empty()) else {
        return Ok(Err(Failure::State));
    };
    let pending: Pending = serde_json::from_slice(&state.keys.data.open(&sealed, &state_digest)?)
        .map_err(anyhow::Error::from)?;
    let Some(discovered) = provider.discovered() else {
        return Ok(Err(Failure::Unavailable));
    };
    let exchange = match discovered
        .client
        .exchange_code(AuthorizationCode::new(code))
    {
        Ok(request) => {
            request
                .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
                .request_async(provider.http())
                .await
        }
        Err(e) => {
            tracing::warn!("OIDC: the provider lists no token endpoint: {e}");
            return Ok(Err(Failure::Unavailable));
        }
    };
    let response = match exchange {
        Ok(r) => r,
        Err(openidconnect::RequestTokenError::Request(e)) => {
            tracing::warn!("OIDC: the token endpoint cannot be reached: {e}");
            return Ok(Err(Failure::Unavailable));
        }
        Err(e) => {
            tracing::info!("OIDC: the provider refused the code: {e}");
            return Ok(Err(Failure::Provider));
        }
    };
    let Some(id_token) = response.id_token() else {
        return Ok(Err(Failure::Token));
    };
    let nonce = Nonce::new(pending.nonce);
    let verifier = |keys| {
        let client_id = openidconnect::ClientId::new(provider.config.client_id.clone());
        let issuer = openidconnect::IssuerUrl::new(provider.config.issuer.clone())
            .expect("checked by discovery");
        IdTokenVerifier::new_public_client(client_id, issuer, keys)
            .set_allowed_algs(ALGORITHMS.iter().cloned())
    };
    let mut claims = id_token
        .claims(&verifier((*provider.keys()).clone()), &nonce)
        .cloned();
    if matches!(
        claims,
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey
        ))
    ) && provider.refresh_keys().await
    {
        claims = id_token
            .claims(&verifier((*provider.keys()).clone()), &nonce)
            .cloned();
    }
    let claims = match claims {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("OIDC: the ID token did not verify: {e}");
            return Ok(Err(Failure::Token));
        }
    };
    let mut raw = claims.additional_claims().claims.clone();
    if let Some(email) = claims.email() {
        raw.insert("email".into(), email.as_str().into());
    }
    if let Some(v) = claims.email_verified() {
        raw.insert("email_verified".into(), v.into());
    }
    if let Some(name) = claims.name().and_then(|n| n.get(None)) {
        raw.insert("name".into(), name.as_str().into());
    }
    if let Some(u) = claims.preferred_username() {
        raw.insert("preferred_username".into(), u.as_str().into());
    }
    let subject = claims.subject().as_str().to_string();
    // Providers that keep the ID token lean (the spec's default for the code flow) answer the
    // address and groups at the userinfo endpoint.
    let needs_more = !raw.contains_key("email")
        || (provider.config.admin_group.is_some()
            && !raw.contains_key(&provider.config.groups_claim));
    if needs_more {
        userinfo(
            provider,
            &discovered.client,
            response.access_token(),
            &subject,
            &mut raw,
        )
        .await;
    }
    let person = Person::from_claims(&provider.config, &subject, &raw);
    let user = match link::user_for(state, provider, &person).await? {
        Ok(u) => u,
        Err(refusal) => return Ok(Err(Failure::Account(refusal))),
    };
    link::touch(state, &provider.config.issuer, &subject).await?;
    let token = crate::accounts::sessions::start_session(state, &user.id).await?;
    Ok(Ok((token, pending.next)))
}

/// Adds what the userinfo endpoint says (for the same subject) to `raw`, without overriding the
/// ID token. A provider without the endpoint, or one that fails, adds nothing.
async fn userinfo(
    provider: &Provider,
    client: &super::OidcClient,
    access_token: &AccessToken,
    subject: &str,
    raw: &mut serde_json::Map<String, serde_json::Value>,
) {
    let Ok(request) = client.user_info(
        access_token.clone(),
        Some(openidconnect::SubjectIdentifier::new(subject.to_string())),
    ) else {
        return;
    };
    let info: std::result::Result<
        openidconnect::UserInfoClaims<super::ExtraClaims, openidconnect::core::CoreGenderClaim>,
        _,
    > = request.request_async(provider.http()).await;
    let info = match info {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("OIDC: the userinfo endpoint failed: {e}");
            return;
        }
    };
    let mut add = |k: &str, v: serde_json::Value| {
        raw.entry(k.to_string()).or_insert(v);
    };
    if let Some(email) = info.email() {
        add("email", email.as_str().into());
    }
    if let Some(v) = info.email_verified() {
        add("email_verified", v.into());
    }
    if let Some(name) = info.name().and_then(|n| n.get(None)) {
        add("name", name.as_str().into());
    }
    for (k, v) in &info.additional_claims().claims {
        add(k, v.clone());
    }
}
