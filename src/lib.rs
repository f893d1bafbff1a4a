//! ECOSIRE API server: license validation and activation with the business API beside it.
//!
//! # Layout
//! - `config`: environment configuration (every variable in `docs/configuration.md`).
//! - `state`: `AppState`, the shared handles every handler gets.
//! - `error`: the one `Error` type and its RFC 9457 problem body.
//! - `http`: extractors (`Json`, `Query`, `Path`), access (`Principal`, `Admin`), pagination,
//!   request ids, field checks.
//! - `db`: the pool over SQLite or PostgreSQL, migrations, and what differs between them.
//! - `licensing`: the hot path (`hot`), its pure decision (`decide`), snapshot cache, tokens,
//!   keyring, and license administration (`admin`).
//! - `accounts`: users, login sessions, passwords.
//! - `billing`: products.
//! - `events`: the transactional outbox.
//! - `modules`: the secondary business modules (contacts, CRM, support, newsletter, ask), each
//!   its own router.
//! - `ops`: health, readiness, OpenAPI.
//! - `server`: the router, middleware, background tasks and graceful shutdown.
//! - `jws`, `crypto`, `timestamp`, `fsutil`: small shared helpers.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod auth;
pub mod billing;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod http;
pub mod jws;
pub mod licensing;
pub mod modules;
pub mod ops;
pub mod server;
pub mod state;
pub mod timestamp;

pub use server::{app, build_state, openapi, serve};
pub use state::AppState;
