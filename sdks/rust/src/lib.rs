//! Client for ECOSIRE license validation.
//!
//! ```no_run
//! # async fn run() -> Result<(), ecosire_client::Error> {
//! # const JWKS: &str = "";
//! use ecosire_client::{LicenseClient, PublicKeys, Status};
//!
//! let client = LicenseClient::builder()
//!     .base_url("https://licenses.example.com")
//!     .product("prd_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")
//!     // The server's JWKS, shipped inside the application (`include_str!`): the root of trust.
//!     .public_keys(PublicKeys::from_jwks(JWKS)?)
//!     .cache_dir("/home/ann/.config/my-app")
//!     .build()?;
//! client
//!     .activate("ECOS-7K3QH-M2XPD-9TQ4W-R8ZVN", client.machine_fingerprint())
//!     .await?;
//! match client.check().await? {
//!     Status::Valid(grant) => println!("licensed until {:?}", grant.license_expires_at),
//!     Status::Offline { until, .. } => println!("offline; connect before {until:?}"),
//!     Status::Invalid { code, .. } => println!("not licensed: {code}"),
//!     _ => {}
//! }
//! # Ok(()) }
//! ```
//!
//! # How a check decides
//!
//! 1. Online: `POST /api/licenses/validate` with the key, the fingerprint, the product and a
//!    fresh random nonce. A valid answer's token must verify against the trusted keys and carry
//!    that nonce (else [`Error::ReplayedAnswer`]); it is then stored with the server's `iat` as
//!    the trusted time. An invalid answer is returned as [`Status::Invalid`] and the stored token
//!    is dropped.
//! 2. When the server cannot be reached, times out, or answers 429/5xx (after which the client
//!    waits as long as `Retry-After` says before asking again): the stored token, verified
//!    again, is valid until its `exp` — [`Status::Offline`] — unless the local clock is behind
//!    the latest trusted time by more than the tolerance ([`Error::ClockRollback`]) or the cache
//!    file is not intact ([`Error::CacheRefused`]).
//! 3. Revocation lists: after every online answer the client fetches the product's signed
//!    revocation list (`GET /api/licenses/revocations`, with `If-None-Match`), and when the server
//!    cannot be reached, the configured mirror's copy
//!    ([`ClientBuilder::revocation_mirror`]). An offline check of a license the newest accepted
//!    list names answers [`Status::Invalid`] (`REVOKED` or `SUSPENDED`), whatever its token's
//!    `exp`.
//!
//! # Layout
//!
//! - `client`: [`LicenseClient`] and its builder: activate, check, deactivate, heartbeats.
//! - `token`: strict verification of the server's EdDSA tokens and the claims they must carry.
//! - `keys`: [`PublicKeys`], the trusted Ed25519 keys (a JWKS, or raw keys).
//! - `revocations`: signed revocation lists, accepted (signature, product, `exp`, never an older
//!   `seq`) and applied to offline checks.
//! - `cache`: the sealed cache file and the high-water mark of trusted time.
//! - `net`: sorting HTTP answers (answer, refusal, busy, no answer) and backoff.
//! - `offline`: air-gapped activation: requests, license files, deactivation proofs.
//! - `machine`: the machine id and per-product fingerprints derived from it.
//! - `clock`: the injectable [`Clock`].
//! - `status`, `error`: what calls answer.
//! - `blocking` (feature `blocking`): the same API without async.
#![forbid(unsafe_code)]

mod cache;
mod client;
mod clock;
mod error;
mod keys;
mod machine;
mod net;
mod offline;
mod revocations;
mod status;
mod token;

#[cfg(feature = "blocking")]
pub mod blocking;

pub use client::{ClientBuilder, HeartbeatReport, LicenseClient};
pub use clock::{Clock, SystemClock};
pub use error::Error;
pub use keys::PublicKeys;
pub use machine::{fingerprint, machine_id};
pub use revocations::ListError;
pub use status::{OfflineReason, Status};
pub use token::{Claims, Grant, TokenError};
