//! Credentials and what they say: roles, API-key scopes and environments, the API-key format,
//! and the checks that turn a bearer token (a session JWT or an API key) into a caller.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::crypto::{random_base62, sha256_hex};
use crate::error::Result;
use crate::state::AppState;
use crate::timestamp::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Customer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Customer => "customer",
        }
    }
    pub fn parse(s: &str) -> Role {
        if s == "admin" {
            Role::Admin
        } else {
            Role::Customer
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    ReadOnly,
    ReadWrite,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadOnly => "read-only",
            Scope::ReadWrite => "read-write",
            Scope::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Scope {
        match s {
            "admin" => Scope::Admin,
            "read-write" => Scope::ReadWrite,
            _ => Scope::ReadOnly,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
    pub fn parse(s: &str) -> Environment {
        if s == "test" {
            Environment::Test
        } else {
            Environment::Live
        }
    }
}

/// A plaintext API key. `Debug` shows only its non-secret prefix.
#[derive(Clone)]
pub struct ApiKeyToken(String);

impl std::fmt::Debug for ApiKeyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeyToken({}…)", self.prefix())
    }
}

const SECRET_LEN: usize = 32;

impl ApiKeyToken {
    pub fn generate(env: Environment) -> Self {
        ApiKeyToken(format!(
            "ecos_{}_{}",
            env.as_str(),
            random_base62(SECRET_LEN)
        ))
    }
    /// `Some` when `s` has the shape of an API key (so it is never mistaken for a JWT).
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s
            .strip_prefix("ecos_live_")
            .or_else(|| s.strip_prefix("ecos_test_"))?;
        (rest.len() == SECRET_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| ApiKeyToken(s.to_string()))
    }
    pub fn looks_like(s: &str) -> bool {
        s.starts_with("ecos_live_") || s.starts_with("ecos_test_")
    }
    pub fn digest(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }
    /// The non-secret hint shown in listings: the environment prefix and 4 characters.
    pub fn prefix(&self) -> String {
        self.0[..14].to_string()
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What authentication learns from a key.
#[derive(Debug, Clone)]
pub struct KeyIdentity {
    pub id: String,
    pub user_id: String,
    pub role: Role,
    pub scope: Scope,
    pub environment: Environment,
    pub plan: String,
}

/// Looks up a live (not revoked, not expired) key.
pub async fn authenticate(state: &AppState, token: &ApiKeyToken) -> Result<Option<KeyIdentity>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: String,
        user_id: String,
        scope: String,
        environment: String,
        expires_at: Option<i64>,
        revoked_at: Option<i64>,
        role: String,
        plan: String,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT k.id, k.user_id, k.scope, k.environment, k.expires_at, k.revoked_at, u.role, u.plan \
         FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_digest = $1 AND u.disabled = 0",
    )
    .bind(token.digest())
    .fetch_optional(&state.db.pool)
    .await?;
    let now = now_ms();
    Ok(row.and_then(|r| {
        let live = r.revoked_at.is_none() && r.expires_at.is_none_or(|e| e > now);
        live.then(|| KeyIdentity {
            id: r.id,
            user_id: r.user_id,
            role: Role::parse(&r.role),
            scope: Scope::parse(&r.scope),
            environment: Environment::parse(&r.environment),
            plan: r.plan,
        })
    }))
}

pub const SESSION_AUDIENCE: &str = "ecosire:session";

#[derive(Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

/// Checks a session JWT (signature, type, audience, issuer, expiry) and that its session is still
/// live; returns the user id, role and session digest.
pub async fn check_session(state: &AppState, token: &str) -> Result<Option<SessionInfo>> {
    let signer = &state.keys.session;
    let vk = signer.verifying_key();
    let Ok(claims) = crate::jws::verify::<SessionClaims>(token, "at+jwt", |kid| {
        (kid == signer.kid).then_some(vk)
    }) else {
        return Ok(None);
    };
    let now = now_ms();
    if claims.aud != SESSION_AUDIENCE
        || claims.iss != state.config.token_issuer
        || claims.exp * 1000 <= now
    {
        return Ok(None);
    }
    let digest = sha256_hex(claims.sid.as_bytes());
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT u.id, u.role, u.plan FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id_digest = $1 AND s.expires_at > $2 AND u.disabled = 0",
    )
    .bind(&digest)
    .bind(now)
    .fetch_optional(&state.db.pool)
    .await?;
    Ok(row
        .filter(|(id, _, _)| *id == claims.sub)
        .map(|(user_id, role, plan)| SessionInfo {
            user_id,
            role: Role::parse(&role),
            plan,
            digest,
        }))
}

/// A live session, as authentication learns it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user_id: String,
    pub role: Role,
    pub plan: String,
    /// The stored SHA-256 of the session id.
    pub digest: String,
}

// Stored as their `as_str` text; decoded straight from rows.
crate::text_column!(Role, Role::parse);
crate::text_column!(Scope, Scope::parse);
crate::text_column!(Environment, Environment::parse);
