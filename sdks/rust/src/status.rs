//! What a check answers.

use std::time::SystemTime;

use crate::token::Grant;

/// The state of the license on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// The server confirmed the license just now, in an answer signed for this very request.
    Valid(Grant),
    /// The server could not be asked; the stored token, verified against the trusted keys, is
    /// good until `until`. Tell the user the app is running offline and by when it must connect.
    Offline {
        until: SystemTime,
        grant: Grant,
        reason: OfflineReason,
    },
    /// The server says the license is not valid here (`code` as in API.md: `REVOKED`,
    /// `SUSPENDED`, `EXPIRED`, `NOT_FOUND`, `PRODUCT_MISMATCH`, `ENTITLEMENTS_MISSING`,
    /// `FINGERPRINT_NOT_ACTIVATED`). The stored token has been dropped, so offline checks no
    /// longer pass either. Offline, a signed revocation list that names the license answers
    /// `REVOKED` or `SUSPENDED` too (only a revoked license's token is dropped: a suspension
    /// ends when a newer list no longer names it).
    Invalid { code: String, detail: String },
}

impl Status {
    /// Whether the application may run: online confirmation or a live offline lease.
    pub fn is_valid(&self) -> bool {
        self.grant().is_some()
    }

    /// What the license grants, when it is valid (online or offline).
    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Status::Valid(g) | Status::Offline { grant: g, .. } => Some(g),
            Status::Invalid { .. } => None,
        }
    }
}

/// Why the server's own answer is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineReason {
    /// No connection (DNS, refused, reset, TLS, …).
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// No answer within the configured timeout.
    #[error("no answer in time")]
    TimedOut,
    /// The server answered 429 or 5xx; the client will not ask again before `retry_at`.
    #[error("server busy ({status}); retrying after {retry_at:?}")]
    ServerBusy { status: u16, retry_at: SystemTime },
    /// Not asked: an earlier 429/5xx asked the client to wait until `retry_at`.
    #[error("waiting until {retry_at:?} before asking the server again")]
    BackingOff { retry_at: SystemTime },
    /// Something answered, but not an ECOSIRE server (a captive portal, a proxy's error page).
    #[error("unexpected answer: {0}")]
    UnexpectedAnswer(String),
}
