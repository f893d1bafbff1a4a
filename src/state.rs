//! The one shared state: cheap handles, each documented, behind one `Arc`.

use std::ops::Deref;
use std::sync::Arc;

use crate::config::Config;
use crate::db::Db;
use crate::keyring::Keyring;
use crate::licensing::cache::LicenseCache;

pub struct App {
    /// What the server was started with.
    pub config: Config,
    /// The pool (SQLite or PostgreSQL) and the backend-specific pieces.
    pub db: Db,
    /// Signing keys (license tokens, sessions) and the data key for sealed secrets.
    pub keys: Keyring,
    /// License snapshots by key digest: the hot path's only read on a hit.
    pub licenses: LicenseCache,
    /// The signed revocation list of each product, built once per (product, seq, hour, key).
    pub revocations: crate::licensing::revocations::RevocationLists,
    /// API-key usage counters and audit entries waiting to be written.
    pub accounting: crate::ops::audit::Accounting,
    /// Rate limiters and the daily quota of this instance.
    pub limits: crate::http::ratelimit::Limits,
    /// Who listens to which events, the `license.validated` buffer, the dispatcher's bell.
    pub events: std::sync::Arc<crate::events::EventBus>,
    /// The outbound HTTP client for webhooks (10 s timeout, SSRF-guarded resolver).
    pub http: reqwest::Client,
    /// Argon2 hashing with a bounded number of slots (memory: 19 MiB each).
    pub hasher: crate::accounts::passwords::Hasher,
    /// Outgoing mail: the transport (SMTP or `.eml` files), the sender, the worker's bell.
    pub mail: crate::mail::Mailer,
    /// The OpenID provider (`ECOSIRE_OIDC_ISSUER`), discovered or still being retried; `None`
    /// when none is configured.
    pub oidc: Option<std::sync::Arc<crate::oidc::Provider>>,
}

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    pub fn new(app: App) -> Self {
        AppState(Arc::new(app))
    }
}
