//! Argon2id password hashing, always off the async workers: a verify costs ~20 ms of CPU and must
//! never stall the workers that serve the hot path.
//!
//! Each hash also takes 19 MiB, so how many run at once is bounded (`Hasher`): without a bound,
//! a burst of unauthenticated registrations or logins fills the blocking pool (512 threads) and
//! the process's memory with it (measured: 2.6 GB for 128 registrations). Callers queue for a slot; one that waits longer than the queue
//! timeout is answered 503 `BUSY` with `Retry-After` instead of piling up.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::Error;

use anyhow::Context;
use argon2::password_hash::{self, Output, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

fn argon2() -> Argon2<'static> {
    // OWASP's first recommended Argon2id setting: 19 MiB, 2 passes, 1 lane.
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid params"),
    )
}

/// A job for a hashing worker, given the worker's own Argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The bounded hashing service every password path goes through: a fixed set of worker threads
/// (one per slot) fed through a queue, each owning its 19 MiB of Argon2 memory for good. Reusing
/// that memory matters as much as the bound: allocated afresh per hash, the 19 MiB blocks come
/// back from malloc fragmented among the server's small allocations and are never returned
/// (measured: 400 MiB resident after 200 registrations with two hashes at a time).
pub struct Hasher {
    slots: Semaphore,
    queue_timeout: Duration,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Hasher {
    pub fn new(concurrency: usize, queue_timeout: Duration) -> Self {
        let workers = concurrency.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for n in 0..workers {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("ecosire-argon2-{n}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        // The lock is held only to take a job; the hash runs without it.
                        let job = queue.lock().expect("hash queue").recv();
                        match job {
                            Ok(job) => job(&mut memory),
                            // The Hasher is gone: so are its workers.
                            Err(_) => break,
                        }
                    }
                })
                .expect("spawning a hashing thread");
        }
        Hasher {
            slots: Semaphore::new(workers),
            queue_timeout,
            jobs,
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

    /// Runs `f` on a hashing worker once a slot is free (so the queue never holds more jobs than
    /// there are workers).
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let _slot = self.slot().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |memory: &mut Vec<Block>| {
                let _ = tx.send(f(memory));
            }))
            .map_err(|_| Error::Internal(anyhow::anyhow!("the hashing workers stopped")))?;
        rx.await
            .map_err(|_| Error::Internal(anyhow::anyhow!("a hashing worker panicked")))
    }

    /// Hashes a new password (Argon2id), waiting for a slot.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        Ok(self.run(move |m| hash_now(&password, m)).await??)
    }

    /// Checks a password, waiting for a slot (the dummy check for unknown users too, so both
    /// failures cost the same).
    pub async fn verify(&self, stored: Option<String>, password: String) -> Result<bool, Error> {
        self.run(move |m| verify_now(stored, &password, m)).await
    }
}

/// Argon2 of `password` under `salt` with `argon`'s parameters, in `memory` (grown once to the
/// size the parameters need, then reused) instead of a fresh allocation.
fn compute(
    argon: &Argon2<'_>,
    password: &str,
    salt: Salt<'_>,
    output_len: usize,
    memory: &mut Vec<Block>,
) -> password_hash::Result<Output> {
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf)?;
    let blocks = argon.params().block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    Output::init_with(output_len, |out| {
        argon
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt_bytes,
                out,
                &mut memory[..blocks],
            )
            .map_err(|_| password_hash::Error::Crypto)
    })
}

fn hash_now(password: &str, memory: &mut Vec<Block>) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let argon = argon2();
    let output = compute(
        &argon,
        password,
        salt.as_salt(),
        Params::DEFAULT_OUTPUT_LEN,
        memory,
    )
    .map_err(|e| anyhow::anyhow!("hashing password: {e}"))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(argon.params())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a stored PHC string (any Argon2 variant and parameters it names);
/// the outputs are compared in constant time (`Output`'s equality).
fn verify_now(stored: Option<String>, password: &str, memory: &mut Vec<Block>) -> bool {
    let real = stored.is_some();
    let hash = stored.unwrap_or_else(|| dummy_hash().to_string());
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(&hash).ok()?;
        let (salt, expected) = (parsed.salt?, parsed.hash?);
        let argon = Argon2::new(
            Algorithm::try_from(parsed.algorithm).ok()?,
            parsed
                .version
                .map(Version::try_from)
                .transpose()
                .ok()?
                .unwrap_or_default(),
            Params::try_from(&parsed).ok()?,
        );
        let computed = compute(&argon, password, salt, expected.len(), memory).ok()?;
        Some(computed == expected)
    };
    check().unwrap_or(false) && real
}

/// Hashes on the blocking pool, without a slot: for tools and tests that run outside a server.
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_now(&password, &mut Vec::new()))
        .await
        .context("password hashing task")?
}

/// A hash of a random password, verified against when the email is unknown so that both
/// failures cost the same time.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_now(&crate::crypto::random_base62(24), &mut Vec::new())
            .expect("hashing a random password")
    })
}

/// Checks `password` against `stored` (or against a dummy when there is no user or no password),
/// on the blocking pool without a slot.
pub async fn verify(stored: Option<String>, password: String) -> bool {
    tokio::task::spawn_blocking(move || verify_now(stored, &password, &mut Vec::new()))
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

    #[test]
    fn hashes_interoperate_with_the_argon2_crates_own_phc_strings() {
        use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
        // Hashes stored before the workers kept their own memory still verify, and ours verify
        // with the crate's own verifier.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = super::argon2()
            .hash_password(b"old password", &salt)
            .unwrap()
            .to_string();
        let mut memory = Vec::new();
        assert!(super::verify_now(
            Some(theirs.clone()),
            "old password",
            &mut memory
        ));
        assert!(!super::verify_now(Some(theirs), "wrong", &mut memory));
        let ours = super::hash_now("new password", &mut memory).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            super::argon2()
                .verify_password(b"new password", &parsed)
                .is_ok()
        );
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
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
