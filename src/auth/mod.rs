//! Who is calling and what they may do: credentials (session JWTs, API keys) and the checks that
//! verify them, principals with their roles and key scopes, the access extractors handlers name
//! in their signatures, the charging of each request to its caller's rate limits, and the
//! per-request accounting (key usage, audit log) that follows. `http` knows none of this;
//! `accounts` (which issues sessions and keys) and every feature use it.

pub mod accounting;
pub mod credentials;
pub mod extract;
pub mod limits;

pub use credentials::{
    ApiKeyToken, Environment, Role, SESSION_AUDIENCE, Scope, SessionClaims, SessionInfo,
};
pub use extract::{
    Admin, COOKIE_NAME, Credential, KeyManager, MaybePrincipal, Principal, SessionUser,
};
