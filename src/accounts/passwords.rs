//! Argon2id password hashing, always on the blocking pool: a verify costs ~20 ms of CPU and must
//! never stall the async workers that serve the hot path.
//!
//! Each hash also takes 19 MiB, so how many run at once is bounded (`Hasher`): without a bound,
//! a burst of unauthenticated registrations or logins fills the blocking pool (512 threads) and
//! the process's memory with it. Callers queue for a slot; one that waits longer than the queue
//! timeout is answered 503 `BUSY` with `Retry-After` instead of piling up.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::Error;

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

fn argon2() -> Argon2<'static> {
    // OWASP's first recommended Argon2id setting: 19 MiB, 2 passes, 1 lane.
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid params"),
    )
}

/// The bounded hashing service every password path goes through.
pub struct Hasher {
    slots: Semaphore,
    queue_timeout: Duration,
}

impl Hasher {
    pub fn new(concurrency: usize, queue_timeout: Duration) -> Self {
        Hasher {
            slots: Semaphore::new(concurrency.max(1)),
            queue_timeout,
        }
    }

    async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Error> {
        match tokio::time::timeout(self.queue_timeout, self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics::counter!("ecosire_password_hash_busy_total").increment(1);
                Err(Error::Unavailable {
                    code: "BUSY",
                    message: "The server is busy checking passwords; retry shortly".into(),
                })
            }
        }
    }

    /// Hashes a new password (Argon2id), waiting for a slot.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        let _slot = self.slot().await?;
        Ok(hash(password).await?)
    }

    /// Checks a password, waiting for a slot (the dummy check for unknown users too, so both
    /// failures cost the same).
    pub async fn verify(&self, stored: Option<String>, password: String) -> Result<bool, Error> {
        let _slot = self.slot().await?;
        Ok(verify(stored, password).await)
    }
}

/// Hashes without a slot: for tools and tests that run outside a server.
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
    })
    .await
    .context("password hashing task")?
}

/// A hash of a random password, verified against when the email is unknown so that both
/// failures cost the same time.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        argon2()
            .hash_password(crate::crypto::random_base62(24).as_bytes(), &salt)
            .expect("hashing a random password")
            .to_string()
    })
}

/// Checks `password` against `stored` (or against a dummy when there is no user or no password),
/// without a slot.
pub async fn verify(stored: Option<String>, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        let real = stored.is_some();
        let hash = stored.unwrap_or_else(|| dummy_hash().to_string());
        let ok = PasswordHash::new(&hash)
            .map(|parsed| {
                argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && real
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = super::hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify(Some(h.clone()), "correct horse".into()).await);
        assert!(!super::verify(Some(h), "wrong".into()).await);
        assert!(!super::verify(None, "anything".into()).await);
    }

    #[tokio::test]
    async fn a_caller_that_waits_too_long_for_a_slot_is_told_busy() {
        let h = super::Hasher::new(1, std::time::Duration::from_millis(50));
        let held = h.slot().await.unwrap();
        let busy = h.hash("correct horse".into()).await.unwrap_err();
        assert_eq!(busy.code(), "BUSY");
        assert_eq!(busy.status_code(), 503);
        drop(held);
        assert!(h.hash("correct horse".into()).await.is_ok());
    }
}
