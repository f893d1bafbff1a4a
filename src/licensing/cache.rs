//! The snapshot cache in front of the store: on a hit, validate runs no query at all.
//!
//! Invalidation is exact, not just TTL-based: every write bumps a sequence number and stamps the
//! license's shard with it after commit; a snapshot whose load began before that stamp is stale
//! and reloaded. That closes the race in which a load that read the old row finishes after the
//! writer invalidated the entry. The TTL (60 s; 5 s for unknown keys) is only a safety net.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};

use super::decide::LicenseState;
use super::model::{Activation, License, LicenseRow};
use super::token::{self, Subject};
use crate::db::Db;
use crate::error::Error;
use crate::jws::Signer;

/// A token signed this recently for the same license state and device is handed out again
/// (signing costs ~25 µs; the hot path would otherwise be bound by it).
const TOKEN_REUSE_MS: i64 = 30_000;
const SHARDS: usize = 1024;
/// How long a snapshot, and the knowledge that a key is unknown, are trusted without a write
/// being seen: the safety net behind exact invalidation.
const SNAPSHOT_TTL: Duration = Duration::from_secs(60);
const UNKNOWN_TTL: Duration = Duration::from_secs(5);

/// Every snapshot gets its own number, so memoised answers of an older snapshot of the same
/// license can never be served for a newer one.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Everything validate needs about one license, loaded in one go. Kept small (no key material,
/// no rendered answers, each value once): a server caches up to
/// `ECOSIRE_LICENSE_CACHE_CAPACITY` of them.
#[derive(Debug)]
pub struct Snapshot {
    /// The digest of the license's key (the cache key).
    pub digest: [u8; 32],
    /// The license object without `key`: also the source of the decision's inputs.
    pub view: Arc<License>,
    pub product_slug: Box<str>,
    /// Fingerprints of the live activations (empty for most licenses: no allocation).
    fingerprints: Vec<String>,
    pub activations: Vec<Activation>,
    pub offline_lease_days: i64,
    pub heartbeat_timeout_s: Option<i64>,
    generation: u64,
}

impl Snapshot {
    pub fn new(
        row: LicenseRow,
        product_slug: String,
        offline_lease_days: i64,
        heartbeat_timeout_s: Option<i64>,
        activations: Vec<Activation>,
    ) -> Self {
        let mut digest = [0u8; 32];
        // A digest that is not 64 hex digits cannot come from our writes; it matches no key.
        let _ = hex::decode_to_slice(&row.key_digest, &mut digest);
        Snapshot {
            digest,
            view: Arc::new(row.view(activations.len() as i64, None)),
            product_slug: product_slug.into_boxed_str(),
            fingerprints: activations.iter().map(|a| a.fingerprint.clone()).collect(),
            activations,
            offline_lease_days,
            heartbeat_timeout_s,
            generation: GENERATION.fetch_add(1, Relaxed),
        }
    }

    /// The license id.
    pub fn id(&self) -> &str {
        &self.view.id
    }

    /// What the decision needs, borrowed from the snapshot.
    pub fn state(&self) -> LicenseState<'_> {
        LicenseState {
            status: self.view.status,
            expires_at_ms: self.view.expires_at.map(|t| t.0),
            product_id: &self.view.product_id,
            product_slug: &self.product_slug,
            entitlements: &self.view.entitlements,
            fingerprints: &self.fingerprints,
        }
    }

    pub fn activation(&self, fingerprint: &str) -> Option<&Activation> {
        self.activations
            .iter()
            .find(|a| a.fingerprint == fingerprint)
    }

    /// What a token issued from this snapshot says.
    pub fn subject(&self) -> Subject {
        Subject {
            license_id: self.view.id.clone(),
            product_id: self.view.product_id.clone(),
            entitlements: self.view.entitlements.clone(),
            max_activations: self.view.max_activations,
            expires_at_ms: self.view.expires_at.map(|t| t.0),
            offline_lease_days: self.offline_lease_days,
        }
    }

    /// The token subject after a write, from the freshly read row (the snapshot may be stale).
    pub fn subject_for(&self, row: &LicenseRow) -> Subject {
        Subject {
            license_id: row.id.clone(),
            product_id: row.product_id.clone(),
            entitlements: row.entitlements(),
            max_activations: row.max_activations,
            expires_at_ms: row.expires_at,
            offline_lease_days: self.offline_lease_days,
        }
    }

    /// A fresh token for this license (bound to `fingerprint` when given).
    pub fn sign(
        &self,
        signer: &Signer,
        issuer: &str,
        fingerprint: Option<&str>,
        nonce: Option<&str>,
        now_ms: i64,
    ) -> String {
        token::sign(signer, issuer, &self.subject(), fingerprint, nonce, now_ms).0
    }
}

/// Rendered VALID answers (requests without a nonce), by snapshot and fingerprint: a hit costs
/// neither a signature nor any serialisation. Bounded by bytes, apart from the snapshots, so
/// that a million cached licenses do not also hold a million rendered answers.
struct Answers {
    cache: Cache<AnswerKey, (Bytes, i64), AnswerWeight>,
}

#[derive(PartialEq, Eq)]
struct AnswerKey(u64, Box<str>);

impl Hash for AnswerKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        AnswerRef(self.0, &self.1).hash(h)
    }
}

/// The borrowed form of `AnswerKey`, so that a lookup allocates nothing.
#[derive(Hash)]
struct AnswerRef<'a>(u64, &'a str);

impl Equivalent<AnswerKey> for AnswerRef<'_> {
    fn equivalent(&self, k: &AnswerKey) -> bool {
        self.0 == k.0 && self.1 == &*k.1
    }
}

#[derive(Clone)]
struct AnswerWeight;

impl Weighter<AnswerKey, (Bytes, i64)> for AnswerWeight {
    fn weight(&self, k: &AnswerKey, v: &(Bytes, i64)) -> u64 {
        (v.0.len() + k.1.len() + 64) as u64
    }
}

#[derive(Clone)]
struct Cached {
    /// The write sequence number when the load began.
    seq: u64,
    /// When it was loaded, in seconds since the cache was made (4 bytes, not an `Instant`'s 16).
    loaded_s: u32,
    snap: Option<Arc<Snapshot>>,
}

pub struct LicenseCache {
    cache: Cache<[u8; 32], Cached>,
    answers: Answers,
    started: Instant,
    seq: AtomicU64,
    /// Per shard of digests: the sequence number of the last write seen.
    shards: Box<[AtomicU64]>,
    /// The sequence number of the last "everything changed" (a product edit, a lost LISTEN).
    all: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// When a load last found the database unavailable, and why: for `BREAKER` after that, a
    /// miss fails at once instead of waiting out the pool's acquire timeout again. Without it the
    /// requests queued behind one key's load would each wait a full timeout in turn.
    breaker: std::sync::Mutex<Option<(Instant, String)>>,
    /// Per shard of digests: the last load that found the database unavailable (its key, when,
    /// why). A request queued behind that load for the same key fails with its answer instead of
    /// loading again, so no request waits out more than one acquire timeout.
    failed: Box<[std::sync::Mutex<Option<FailedLoad>>]>,
}

/// A load that found the database unavailable: the key's digest, when, and why.
type FailedLoad = ([u8; 32], Instant, String);

/// How long a load that found the database unavailable makes other misses fail fast.
const BREAKER: Duration = Duration::from_secs(1);

impl Default for LicenseCache {
    fn default() -> Self {
        Self::new(500_000, 64 << 20)
    }
}

fn shard(digest: &[u8; 32]) -> usize {
    (u16::from_le_bytes([digest[0], digest[1]]) as usize) % SHARDS
}

impl LicenseCache {
    /// Room for `capacity` snapshots and `answer_bytes` of rendered answers.
    pub fn new(capacity: u64, answer_bytes: u64) -> Self {
        LicenseCache {
            cache: Cache::new(capacity.max(1) as usize),
            answers: Answers {
                cache: Cache::with_weighter(
                    (answer_bytes / 1024).max(16) as usize,
                    answer_bytes.max(1 << 16),
                    AnswerWeight,
                ),
            },
            started: Instant::now(),
            seq: AtomicU64::new(1),
            shards: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            all: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            breaker: std::sync::Mutex::new(None),
            failed: (0..SHARDS).map(|_| std::sync::Mutex::new(None)).collect(),
        }
    }

    /// Loads a snapshot unless the database was found unavailable less than `BREAKER` ago, or
    /// a load of this key that ended after `asked` (when this request began) found it so.
    async fn load_or_fail_fast(
        &self,
        db: &Db,
        digest: &[u8; 32],
        asked: Instant,
    ) -> Result<Cached, Error> {
        if let Some((at, cause)) = &*self.breaker.lock().expect("breaker")
            && at.elapsed() < BREAKER
        {
            return Err(Error::DbUnavailable {
                cause: cause.clone(),
            });
        }
        if let Some((key, at, cause)) = &*self.failed[shard(digest)].lock().expect("failed")
            && key == digest
            && *at >= asked
        {
            return Err(Error::DbUnavailable {
                cause: cause.clone(),
            });
        }
        match self.load(db, digest).await {
            Ok(c) => Ok(c),
            Err(e) => {
                // Only a database that cannot be reached (refused or lost connection, shutting
                // down) trips the breaker; a busy pool or a full connection table fails that one
                // request alone.
                let unreachable = match &e {
                    sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
                    sqlx::Error::Database(d) => {
                        matches!(d.code().as_deref(), Some("57P01" | "57P02" | "57P03"))
                    }
                    _ => false,
                };
                let e = Error::from(e);
                if let Error::DbUnavailable { cause } = &e {
                    let now = Instant::now();
                    *self.failed[shard(digest)].lock().expect("failed") =
                        Some((*digest, now, cause.clone()));
                    if unreachable {
                        *self.breaker.lock().expect("breaker") = Some((now, cause.clone()));
                    }
                }
                Err(e)
            }
        }
    }

    fn now_s(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    /// Neither older than a write we know of nor past its time to live.
    fn usable(&self, digest: &[u8; 32], c: &Cached) -> bool {
        let ttl = if c.snap.is_some() {
            SNAPSHOT_TTL
        } else {
            UNKNOWN_TTL
        };
        // A load that read the sequence after a write's stamp began after its commit.
        c.seq >= self.shards[shard(digest)].load(SeqCst)
            && c.seq >= self.all.load(SeqCst)
            && u64::from(self.now_s().saturating_sub(c.loaded_s)) < ttl.as_secs()
    }

    async fn load(&self, db: &Db, digest: &[u8; 32]) -> Result<Cached, sqlx::Error> {
        let seq = self.seq.load(SeqCst);
        let loaded_s = self.now_s();
        let snap = super::store::load_snapshot(db, &hex::encode(digest)).await?;
        Ok(Cached {
            seq,
            loaded_s,
            snap: snap.map(Arc::new),
        })
    }

    /// What the cache alone knows of this key digest, without asking the database: `None` when
    /// nothing usable is cached, `Some(None)` for a key cached as unknown.
    pub async fn peek(&self, digest: &[u8; 32]) -> Option<Option<Arc<Snapshot>>> {
        let c = self.cache.get(digest)?;
        if !self.usable(digest, &c) {
            return None;
        }
        self.hits.fetch_add(1, Relaxed);
        Some(c.snap)
    }

    /// The snapshot of the license with this key digest; `None` for an unknown key.
    pub async fn get(&self, db: &Db, digest: &[u8; 32]) -> Result<Option<Arc<Snapshot>>, Error> {
        if let Some(c) = self.cache.get(digest) {
            if self.usable(digest, &c) {
                self.hits.fetch_add(1, Relaxed);
                return Ok(c.snap);
            }
            self.cache.remove(digest);
        }
        self.misses.fetch_add(1, Relaxed);
        let asked = Instant::now();
        // Concurrent misses for one key share a single query: the first takes the placeholder
        // and loads, the others wait for its value (or, if its load fails, take its error).
        let c = match self.cache.get_value_or_guard_async(digest).await {
            Ok(c) => c,
            Err(guard) => {
                let c = self.load_or_fail_fast(db, digest, asked).await?;
                let _ = guard.insert(c.clone());
                c
            }
        };
        if self.usable(digest, &c) {
            return Ok(c.snap);
        }
        // A shared load began before a write we know of: read again, past the cache.
        let c = self.load_or_fail_fast(db, digest, asked).await?;
        self.cache.insert(*digest, c.clone());
        Ok(c.snap)
    }

    /// The whole body of a VALID answer from `snap` for `fingerprint` (requests without a
    /// nonce), rendered by `render` from a fresh token and reused for as long as a token is.
    pub fn valid_body(
        &self,
        snap: &Snapshot,
        signer: &Signer,
        issuer: &str,
        fingerprint: Option<&str>,
        now_ms: i64,
        render: impl FnOnce(String) -> Vec<u8>,
    ) -> Bytes {
        let fp = fingerprint.unwrap_or("");
        if let Some((body, at)) = self.answers.cache.get(&AnswerRef(snap.generation, fp))
            && now_ms - at < TOKEN_REUSE_MS
        {
            return body;
        }
        let body = Bytes::from(render(snap.sign(signer, issuer, fingerprint, None, now_ms)));
        self.answers.cache.insert(
            AnswerKey(snap.generation, fp.into()),
            (body.clone(), now_ms),
        );
        body
    }

    /// Forgets one license locally (after a commit here, or a notification from elsewhere).
    pub async fn invalidate_local(&self, digest: &[u8; 32]) {
        let s = self.seq.fetch_add(1, SeqCst) + 1;
        self.shards[shard(digest)].fetch_max(s, SeqCst);
        self.cache.remove(digest);
    }

    /// Commits `tx`, which changed the license with this key digest, and tells every instance:
    /// the `NOTIFY` rides in the transaction (PostgreSQL sends it at commit; a round trip and a
    /// pool connection fewer than `changed`), and this instance forgets the license right after.
    pub async fn commit_change(
        &self,
        db: &Db,
        mut tx: crate::db::Tx,
        digest_hex: &str,
    ) -> Result<(), Error> {
        db.notify_license_changed_in(&mut tx, digest_hex).await?;
        tx.commit().await?;
        let mut d = [0u8; 32];
        if hex::decode_to_slice(digest_hex, &mut d).is_ok() {
            self.invalidate_local(&d).await;
        }
        Ok(())
    }

    /// Call after committing any change to a license: here at once, elsewhere by `NOTIFY`.
    pub async fn changed(&self, db: &Db, digest_hex: &str) {
        let mut d = [0u8; 32];
        if hex::decode_to_slice(digest_hex, &mut d).is_ok() {
            self.invalidate_local(&d).await;
        }
        db.notify_license_changed(digest_hex).await;
    }

    /// Forgets everything locally (product edits, a lost notification connection).
    pub fn invalidate_all_local(&self) {
        let s = self.seq.fetch_add(1, SeqCst) + 1;
        self.all.fetch_max(s, SeqCst);
        self.cache.clear();
    }

    pub async fn invalidate_all(&self, db: &Db) {
        self.invalidate_all_local();
        db.notify_license_changed("*").await;
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.len() as u64
    }
}
