//! Who is calling: the access extractors. A handler states what it needs in its signature
//! (`Principal`, `Admin`, `MaybePrincipal`); the license hot path takes none (the key is the
//! credential).

use axum::extract::FromRequestParts;
use axum::http::{Method, header, request::Parts};

use super::credentials::{self, ApiKeyToken, Environment, Role, Scope};
use crate::error::{Error, Result};
use crate::state::AppState;

pub const COOKIE_NAME: &str = "ecosire_auth";

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A login session (bearer JWT or cookie); `digest` is the stored SHA-256 of its id.
    Session { digest: String },
    /// An API key, never more powerful than its owner.
    ApiKey {
        id: String,
        scope: Scope,
        environment: Environment,
    },
    /// An access token from the configured OpenID provider: a person's (`scope: None`, as a
    /// session), or a service account's (bounded by its configured scope, as an API key).
    /// `subject` is the SHA-256 of issuer and subject: the rate-limit bucket's name.
    Provider {
        subject: String,
        scope: Option<Scope>,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    /// The owner's role (for a key, its owner's).
    pub role: Role,
    /// The account's plan, which picks its daily quota.
    pub plan: String,
    pub credential: Credential,
}

impl Principal {
    /// May this caller use admin-only endpoints with `method`? A session of an admin may; so may
    /// an admin's `admin`-scoped key, and their `read-only` key for reads; a `read-write` key never.
    pub fn is_admin(&self, method: &Method) -> bool {
        self.role == Role::Admin
            && match self.key_scope() {
                None | Some(Scope::Admin) => true,
                Some(Scope::ReadOnly) => is_read(method),
                Some(Scope::ReadWrite) => false,
            }
    }
    /// The scope that bounds this caller like an API key's (a key, a service account's provider
    /// token); `None` for a person signed in (a session, a person's provider token).
    pub fn key_scope(&self) -> Option<Scope> {
        match &self.credential {
            Credential::Session { .. } => None,
            Credential::ApiKey { scope, .. } => Some(*scope),
            Credential::Provider { scope, .. } => *scope,
        }
    }
    /// May this caller use the API-key endpoints with `method`? A session or an admin-scoped key
    /// may do anything there; any other key may read (API.md: a read-only key makes any GET its
    /// owner may make, and listings show no secret), never change.
    pub fn may_manage_keys(&self, method: &Method) -> bool {
        match self.key_scope() {
            None | Some(Scope::Admin) => true,
            Some(_) => is_read(method),
        }
    }
    /// Sees every customer's objects on shared endpoints (licenses, orders, keys).
    pub fn sees_all(&self) -> bool {
        self.role == Role::Admin
    }
    /// Whether this request came with one of our login sessions (a provider's token is not one:
    /// changing the password here needs a session here).
    pub fn is_session(&self, _method: &Method) -> bool {
        self.session_digest().is_some()
    }
    /// The stored digest of the login session behind this request, if it came with one.
    pub fn session_digest(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { digest } => Some(digest),
            Credential::ApiKey { .. } | Credential::Provider { .. } => None,
        }
    }
    /// May this caller see an object owned by `owner`? Admins see everything.
    pub fn can_see(&self, owner: Option<&str>) -> bool {
        self.sees_all() || owner == Some(self.user_id.as_str())
    }
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A cookie-authenticated write must come from an allowed origin or carry `X-Requested-With`
/// (which a cross-site form cannot set).
fn csrf_ok(parts: &Parts, state: &AppState) -> bool {
    if is_read(&parts.method) {
        return true;
    }
    if parts.headers.contains_key("x-requested-with") {
        return true;
    }
    parts
        .headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| {
            state
                .config
                .allowed_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o))
        })
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Option<Principal>> {
    let (token, from_cookie) = match (bearer(parts), cookie(parts)) {
        (Some(t), _) => (t, false),
        (None, Some(c)) => (c, true),
        (None, None) => return Ok(None),
    };
    if !from_cookie && ApiKeyToken::looks_like(token) {
        let key = ApiKeyToken::parse(token).ok_or(Error::Unauthenticated)?;
        let k = credentials::authenticate(state, &key)
            .await?
            .ok_or(Error::Unauthenticated)?;
        return Ok(Some(Principal {
            user_id: k.user_id,
            role: k.role,
            plan: k.plan,
            credential: Credential::ApiKey {
                id: k.id,
                scope: k.scope,
                environment: k.environment,
            },
        }));
    }
    let Some(session) = credentials::check_session(state, token).await? else {
        // Not one of our sessions: perhaps the identity provider's access token (never from the
        // cookie, which only we set).
        return match (&state.oidc, from_cookie) {
            (Some(provider), false) => crate::oidc::bearer::authenticate(state, provider, token)
                .await
                .map(Some),
            _ => Err(Error::Unauthenticated),
        };
    };
    if from_cookie && !csrf_ok(parts, state) {
        return Err(Error::forbidden(
            "CSRF_REJECTED",
            "Cookie-authenticated writes need an allowed Origin or X-Requested-With",
        ));
    }
    Ok(Some(Principal {
        user_id: session.user_id,
        role: session.role,
        plan: session.plan,
        credential: Credential::Session {
            digest: session.digest,
        },
    }))
}

/// What checking a request's credentials found, kept in its extensions so that the rate-limit
/// middleware and the extractors verify them once.
#[derive(Debug, Clone)]
enum Outcome {
    /// No credentials: an anonymous caller.
    Anonymous,
    /// Verified.
    Verified(Principal),
    /// Credentials were sent but are not valid here (401, or 403 `CSRF_REJECTED`).
    Refused { forbidden: bool },
}

/// Marks a request whose caller has been charged to a rate-limit bucket already.
#[derive(Clone, Copy)]
struct Charged;

/// Verifies the request's credentials once (later calls reuse the outcome). `Ok(None)` for an
/// anonymous caller; a refusal is `Err` (401, or 403 `CSRF_REJECTED`); a database failure is an
/// `Err` that is not remembered.
pub async fn resolve(parts: &mut Parts, state: &AppState) -> Result<Option<Principal>> {
    let outcome = match parts.extensions.get::<Outcome>() {
        Some(o) => o.clone(),
        None => {
            let o = match authenticate(parts, state).await {
                Ok(None) => Outcome::Anonymous,
                Ok(Some(p)) => Outcome::Verified(p),
                Err(Error::Unauthenticated) => Outcome::Refused { forbidden: false },
                Err(Error::Forbidden { .. }) => Outcome::Refused { forbidden: true },
                Err(e) => return Err(e),
            };
            parts.extensions.insert(o.clone());
            o
        }
    };
    match outcome {
        Outcome::Anonymous => Ok(None),
        Outcome::Verified(p) => Ok(Some(p)),
        Outcome::Refused { forbidden: false } => Err(Error::Unauthenticated),
        Outcome::Refused { forbidden: true } => Err(Error::forbidden(
            "CSRF_REJECTED",
            "Cookie-authenticated writes need an allowed Origin or X-Requested-With",
        )),
    }
}

/// Charges the request to its caller, once: a verified principal to its own `authenticated`
/// bucket (one per API key or login session) and, for customers, to the daily quota; anything
/// else — no credentials, or credentials that did not verify — to the per-IP `anonymous` bucket.
/// A caller is never charged to a principal's bucket on the strength of a header alone.
pub async fn charge(
    parts: &mut Parts,
    state: &AppState,
    principal: Option<&Principal>,
) -> Result<(), Error> {
    if parts.extensions.get::<Charged>().is_some() {
        return Ok(());
    }
    parts.extensions.insert(Charged);
    let slot = parts
        .extensions
        .get::<crate::http::ratelimit::RateSlot>()
        .cloned();
    match principal {
        Some(p) => {
            let bucket_key = match &p.credential {
                Credential::ApiKey { id, .. } => format!("key:{id}"),
                Credential::Session { digest } => format!("session:{digest}"),
                Credential::Provider { subject, .. } => format!("oidc:{subject}"),
            };
            state
                .limits
                .check("authenticated", &bucket_key, slot.as_ref())
                .await?;
            if p.role == Role::Customer {
                state
                    .limits
                    .count_daily(&p.user_id, &p.plan, slot.as_ref())?;
            }
            Ok(())
        }
        None => {
            let ip = crate::http::client_ip::client_ip(parts, &state.config.trusted_proxies)
                .map(|i| i.to_string())
                .unwrap_or_else(|| "unknown".into());
            state
                .limits
                .check("anonymous", &format!("ip:{ip}"), slot.as_ref())
                .await
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = match resolve(parts, state).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                charge(parts, state, None).await?;
                return Err(Error::Unauthenticated);
            }
            Err(e @ (Error::Unauthenticated | Error::Forbidden { .. })) => {
                // Failed credentials spend the caller's anonymous allowance, so guessing is bounded.
                charge(parts, state, None).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        charge(parts, state, Some(&p)).await?;
        // Usage counters and the audit log learn the caller here, refused or not.
        if let Some(slot) = parts.extensions.get::<super::accounting::AuthSlot>() {
            let _ = slot.0.set(p.clone());
        }
        if p.key_scope() == Some(Scope::ReadOnly) && !is_read(&parts.method) {
            return Err(Error::forbidden(
                "FORBIDDEN",
                "A read-only API key cannot change anything",
            ));
        }
        Ok(p)
    }
}

/// Extractors that admit an authenticated caller only when the policy allows it: 403 `FORBIDDEN`
/// otherwise (401 without credentials). One shape, several policies.
macro_rules! guard {
    ($(#[$doc:meta])* $name:ident, $denied:literal, $allows:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Principal);

        impl FromRequestParts<AppState> for $name {
            type Rejection = Error;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                let p = Principal::from_request_parts(parts, state).await?;
                if !$allows(&p, &parts.method) {
                    return Err(Error::forbidden("FORBIDDEN", $denied));
                }
                Ok($name(p))
            }
        }
    };
}

guard!(
    /// An authenticated caller who is an admin.
    Admin,
    "This action needs an admin",
    Principal::is_admin
);
guard!(
    /// A person signed in with a session, never an API key (changing the password).
    SessionUser,
    "This needs a signed-in session, not an API key",
    Principal::is_session
);
guard!(
    /// A caller who may manage API keys: a login session or an admin-scoped key; any key may read.
    KeyManager,
    "API keys are managed with a session or an admin-scoped key",
    Principal::may_manage_keys
);

/// The caller if credentials were sent (public routes that show more to the signed-in).
/// Invalid credentials are still a 401: a caller who sends a bad token should hear about it.
#[derive(Debug, Clone)]
pub struct MaybePrincipal(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybePrincipal {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if bearer(parts).is_none() && cookie(parts).is_none() {
            return Ok(MaybePrincipal(None));
        }
        Principal::from_request_parts(parts, state)
            .await
            .map(|p| MaybePrincipal(Some(p)))
    }
}
