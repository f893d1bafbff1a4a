//! The same client for applications without an async runtime (feature `blocking`).
//!
//! ```no_run
//! # fn run() -> Result<(), ecosire_client::Error> {
//! # let jwks = r#"{"keys": []}"#;
//! let client = ecosire_client::LicenseClient::builder()
//!     .base_url("https://licenses.example.com")
//!     .product("desktop-pro")
//!     .public_keys(ecosire_client::PublicKeys::from_jwks(jwks)?)
//!     .cache_dir("/home/ann/.config/my-app")
//!     .build_blocking()?;
//! let ok = client.check()?.is_valid();
//! # Ok(()) }
//! ```

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use crate::{Error, HeartbeatReport, Status};

/// A [`crate::LicenseClient`] driven by a runtime of its own. Its methods block the calling
/// thread; do not call them from inside an async runtime.
pub struct LicenseClient {
    client: crate::LicenseClient,
    /// One worker thread rather than a current-thread runtime: heartbeats and the HTTP
    /// connection pool's background tasks keep running between calls, which a current-thread
    /// runtime would only drive while some call is blocked in it.
    runtime: tokio::runtime::Runtime,
}

impl LicenseClient {
    pub(crate) fn new(client: crate::LicenseClient) -> Result<LicenseClient, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ecosire-client")
            .enable_all()
            .build()?;
        Ok(LicenseClient { client, runtime })
    }

    /// See [`crate::LicenseClient::machine_fingerprint`].
    pub fn machine_fingerprint(&self) -> &str {
        self.client.machine_fingerprint()
    }

    /// See [`crate::LicenseClient::cache_file`].
    pub fn cache_file(&self) -> &Path {
        self.client.cache_file()
    }

    /// See [`crate::LicenseClient::activate`].
    pub fn activate(&self, key: &str, fingerprint: &str) -> Result<Status, Error> {
        self.runtime
            .block_on(self.client.activate(key, fingerprint))
    }

    /// See [`crate::LicenseClient::check`].
    pub fn check(&self) -> Result<Status, Error> {
        self.runtime.block_on(self.client.check())
    }

    /// See [`crate::LicenseClient::update_revocations`].
    pub fn update_revocations(&self) -> Result<Option<i64>, Error> {
        self.runtime.block_on(self.client.update_revocations())
    }

    /// See [`crate::LicenseClient::deactivate`].
    pub fn deactivate(&self) -> Result<(), Error> {
        self.runtime.block_on(self.client.deactivate())
    }

    /// See [`crate::LicenseClient::heartbeat`].
    pub fn heartbeat(&self) -> Result<(), Error> {
        self.runtime.block_on(self.client.heartbeat())
    }

    /// See [`crate::LicenseClient::heartbeat_interval`].
    pub fn heartbeat_interval(&self) -> Result<Duration, Error> {
        self.runtime.block_on(self.client.heartbeat_interval())
    }

    /// Starts heartbeats on the client's own worker thread; see
    /// [`crate::LicenseClient::start_heartbeat`].
    pub fn start_heartbeat(&self) -> watch::Receiver<HeartbeatReport> {
        let _inside = self.runtime.enter();
        self.client.start_heartbeat()
    }

    /// See [`crate::LicenseClient::shutdown`].
    pub fn shutdown(&self) -> Result<(), Error> {
        self.runtime.block_on(self.client.shutdown())
    }

    /// See [`crate::LicenseClient::request_offline_activation`].
    pub fn request_offline_activation(&self, key: &str) -> Result<String, Error> {
        self.runtime
            .block_on(self.client.request_offline_activation(key))
    }

    /// See [`crate::LicenseClient::import_license_file`].
    pub fn import_license_file(&self, file: &str) -> Result<crate::Grant, Error> {
        self.runtime.block_on(self.client.import_license_file(file))
    }

    /// See [`crate::LicenseClient::deactivation_proof`].
    pub fn deactivation_proof(&self) -> Result<String, Error> {
        self.runtime.block_on(self.client.deactivation_proof())
    }

    /// The async client underneath, sharing this one's state.
    pub fn as_async(&self) -> &crate::LicenseClient {
        &self.client
    }
}
