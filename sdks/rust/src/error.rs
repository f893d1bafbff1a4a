//! Everything that can stop a check from answering "valid" or "invalid".

use std::time::SystemTime;

use crate::status::OfflineReason;
use crate::token::TokenError;

/// Why an operation failed. A license the server declared invalid is not an error: it is
/// [`crate::Status::Invalid`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given something unusable (no base URL, no public keys, …).
    #[error("configuration: {0}")]
    Config(String),

    /// Nothing is activated on this machine for this product: call `activate` first.
    #[error("no license is activated on this machine for this product")]
    NotActivated,

    /// The server could not be asked and there is no stored token to fall back on (none was
    /// ever stored, or the last online answer declared the license invalid and dropped it).
    #[error("cannot check the license offline: no stored token ({reason})")]
    NoStoredToken { reason: OfflineReason },

    /// The server could not be asked and the stored token's offline lease is over.
    #[error("the offline lease ended at {expired_at:?}; connect to the internet ({reason})")]
    OfflineExpired {
        expired_at: SystemTime,
        reason: OfflineReason,
    },

    /// The local clock is behind the latest time this client has trusted, by more than the
    /// configured tolerance: an offline check cannot tell how long the lease has really run.
    #[error(
        "the system clock ({now:?}) is behind a time already seen ({trusted:?}); fix the clock or connect to the internet"
    )]
    ClockRollback {
        now: SystemTime,
        trusted: SystemTime,
    },

    /// The cache file was altered, damaged or copied from another machine: it is not trusted.
    #[error("the license cache file is not trusted: {0}")]
    CacheRefused(String),

    /// A token (in an online answer or in the cache) failed verification.
    #[error("license token refused: {0}")]
    TokenRefused(#[from] TokenError),

    /// The answer to a validate request carried a token for another request (its nonce is not
    /// the one sent): a replayed answer. Nothing stored was changed.
    #[error("the server's answer is a replay (nonce mismatch); ignored")]
    ReplayedAnswer,

    /// The server refused a request (activate, deactivate, heartbeat, or a malformed validate).
    #[error("the server refused the request: {status} {code}: {detail}")]
    Rejected {
        status: u16,
        code: String,
        detail: String,
    },

    /// Deactivation refused: the license has freed as many seats in the last 30 days as its
    /// product allows (`CHURN_LIMIT_REACHED`). The seat stays taken; the next deactivation is
    /// possible at `retry_at`.
    #[error(
        "the license has freed all the seats its product allows in 30 days; try again at {retry_at:?}: {detail}"
    )]
    ChurnLimitReached {
        retry_at: SystemTime,
        detail: String,
    },

    /// [`crate::LicenseClient::import_license_file`] or
    /// [`crate::LicenseClient::deactivation_proof`] found no offline activation request made on
    /// this machine (see [`crate::LicenseClient::request_offline_activation`]).
    #[error("no offline activation request was made on this machine for this product")]
    NoOfflineRequest,

    /// A request that has no offline fallback (activate, deactivate, heartbeat) could not be
    /// completed.
    #[error("the license server could not be reached: {0}")]
    Unreachable(OfflineReason),

    /// A fetched revocation list was refused (bad signature, another product, expired, or older
    /// than one already seen); the list held before stays in force.
    #[error("{0}")]
    RevocationList(#[from] crate::revocations::ListError),

    /// Reading or writing the cache directory failed.
    #[error("license cache: {0}")]
    Io(#[from] std::io::Error),
}
