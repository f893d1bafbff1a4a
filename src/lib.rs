//! ECOSIRE API server: license validation and activation with the business API beside it.
//!
//! # Layout
//! Shared layers know no feature; features use them and each other only downwards
//! (`billing` → `licensing` → `accounts`/`auth`; everything → `events::emit`).
//!
//! - `config`: every variable the server reads (`docs/configuration.md`), rate-limit rules too.
//! - `state`: `AppState`, the shared handles every handler gets.
//! - `error`: the one `Error` type, its RFC 9457 problem body, the 429 and constraint mapping.
//! - `http`: plumbing with no feature in it: the connection loop and its deadlines (`listener`),
//!   `Json`/`Query`/`Path` extractors, field checks, pagination, request ids, client IPs, and the
//!   rate limiter (`ratelimit`: buckets, headers, `RateContext` for handlers that charge
//!   themselves; `shared_limits`: the same limits shared through Redis; `quota`: the daily quota
//!   counted in the database in batches).
//! - `db`: the pool over SQLite or PostgreSQL, migrations, the list query (`list`), and every
//!   backend difference (write locks, claiming, notifications).
//! - `auth`: credentials and principals, roles and scopes, the access extractors (`Admin`,
//!   `Principal`, …), charging each request to its caller's limits, key usage and audit entries.
//! - `accounts`: users, login sessions, passwords (bounded Argon2), API-key management, the
//!   single-use tokens of emailed links and the flows that use them (verification, invitation,
//!   reset, change), the messages accounts get (`mailings`), the `ecosire users` tools.
//! - `mail`: the mail outbox (queued in the causing transaction, sent with retries by a worker on
//!   every instance), its transports (SMTP through lettre, `.eml` files) and the askama templates
//!   in `src/templates/mail`; it knows no feature.
//! - `licensing`: the read path (`validate`), the key holder's write path (`activate`), the one
//!   writer of license state (`lifecycle`), the pure decision (`decide`), the snapshot cache,
//!   tokens, signed `revocations` lists, the heartbeat `reaper`, license administration and
//!   products, air-gapped activation through signed files (`offline`) and the `churn` budget on
//!   freed seats.
//! - `keyring`: the keys folder: license signing keys (published as JWKS, each with a state file
//!   for staged rotation, re-read while serving), the session signing key, the data key that
//!   seals secrets; what may be generated and what must exist.
//! - `billing`: inbound Stripe events, orders and subscriptions; grants licenses via `licensing`.
//! - `events`: the transactional outbox, webhook endpoints, the dispatcher and the catalog.
//! - `modules`: the secondary business modules (contacts, CRM, support, newsletter, ask).
//! - `oidc`: sign-in through an OpenID provider: discovery and the provider's keys, the browser
//!   code flow, provider access tokens as bearer credentials, and the link from (issuer, subject)
//!   to a local account (with roles from the provider's groups).
//! - `dashboard`: the pages served by the binary (askama templates in `src/templates/dashboard`,
//!   one script and stylesheet in `src/assets`), reading through the API's handlers.
//! - `ops`: health and readiness, the audit log, metrics, the OpenAPI document.
//! - `server`: the router, its middleware, background tasks and graceful shutdown.
//! - `logging`: log lines to stderr in batches (the server's access log writes one per request).
//! - `jws`, `crypto`, `timestamp`, `fsutil`: small shared helpers.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod auth;
pub mod billing;
pub mod config;
pub mod crypto;
pub mod dashboard;
pub mod db;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod http;
pub mod jws;
pub mod keyring;
pub mod licensing;
pub mod logging;
pub mod mail;
pub mod modules;
pub mod oidc;
pub mod ops;
pub mod server;
pub mod state;
pub mod timestamp;

pub use server::{app, build_state, openapi, serve};
pub use state::AppState;
