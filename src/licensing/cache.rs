//! The snapshot cache in front of the store: on a hit, validate runs no query at all.
//!
//! Invalidation is exact, not just TTL-based: every write bumps a sequence number and stamps the
//! license's shard with it after commit; a snapshot whose load began before that stamp is stale
//! and reloaded. That closes the race in which a load that read the old row finishes after the
//! writer invalidated the entry. The TTL (60 s; 5 s for unknown keys) is only a safety net.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

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

/// Everything validate needs about one license, loaded in one go.
#[derive(Debug)]
pub struct Snapshot {
    pub row: LicenseRow,
    pub state: LicenseState,
    pub subject: Subject,
    /// The license object without `key`.
    pub view: Arc<License>,
    pub activations: Vec<Activation>,
    pub heartbeat_timeout_s: Option<i64>,
    /// Recently signed tokens by fingerprint ("" for none): (token, issued at ms).
    tokens: Mutex<HashMap<String, (String, i64)>>,
    /// Recently rendered VALID answers by fingerprint: (JSON body, rendered at ms). A hit then
    /// costs no serialisation at all.
    bodies: Mutex<HashMap<String, (axum::body::Bytes, i64)>>,
}

impl Snapshot {
    pub fn new(
        row: LicenseRow,
        product_slug: String,
        offline_lease_days: i64,
        heartbeat_timeout_s: Option<i64>,
        activations: Vec<Activation>,
    ) -> Self {
        let entitlements = row.entitlements();
        let state = LicenseState {
            status: row.status(),
            expires_at_ms: row.expires_at,
            product_id: row.product_id.clone(),
            product_slug,
            entitlements: entitlements.clone(),
            fingerprints: activations.iter().map(|a| a.fingerprint.clone()).collect(),
        };
        let subject = Subject {
            license_id: row.id.clone(),
            product_id: row.product_id.clone(),
            entitlements,
            max_activations: row.max_activations,
            expires_at_ms: row.expires_at,
            offline_lease_days,
        };
        let view = Arc::new(row.view(activations.len() as i64, None));
        Snapshot {
            row,
            state,
            subject,
            view,
            activations,
            heartbeat_timeout_s,
            tokens: Mutex::new(HashMap::new()),
            bodies: Mutex::new(HashMap::new()),
        }
    }

    pub fn activation(&self, fingerprint: &str) -> Option<&Activation> {
        self.activations
            .iter()
            .find(|a| a.fingerprint == fingerprint)
    }

    /// The whole body of a VALID answer for `fingerprint` (requests without a nonce), rendered by
    /// `render` from a token and reused for as long as a token is.
    pub fn valid_body(
        &self,
        signer: &Signer,
        issuer: &str,
        fingerprint: Option<&str>,
        now_ms: i64,
        render: impl FnOnce(String) -> Vec<u8>,
    ) -> axum::body::Bytes {
        let slot = fingerprint.unwrap_or("");
        if let Some((b, at)) = self.bodies.lock().expect("body memo").get(slot)
            && now_ms - at < TOKEN_REUSE_MS
        {
            return b.clone();
        }
        let body = axum::body::Bytes::from(render(self.token(
            signer,
            issuer,
            fingerprint,
            None,
            now_ms,
        )));
        self.bodies
            .lock()
            .expect("body memo")
            .insert(slot.to_string(), (body.clone(), now_ms));
        body
    }

    /// A token for this license (bound to `fingerprint` when given), reusing a recent one unless
    /// the request carries a nonce.
    pub fn token(
        &self,
        signer: &Signer,
        issuer: &str,
        fingerprint: Option<&str>,
        nonce: Option<&str>,
        now_ms: i64,
    ) -> String {
        if nonce.is_some() {
            return token::sign(signer, issuer, &self.subject, fingerprint, nonce, now_ms).0;
        }
        let slot = fingerprint.unwrap_or("");
        if let Some((t, at)) = self.tokens.lock().expect("token memo").get(slot)
            && now_ms - at < TOKEN_REUSE_MS
        {
            return t.clone();
        }
        let (t, _) = token::sign(signer, issuer, &self.subject, fingerprint, None, now_ms);
        self.tokens
            .lock()
            .expect("token memo")
            .insert(slot.to_string(), (t.clone(), now_ms));
        t
    }
}

#[derive(Clone)]
struct Cached {
    /// The write sequence number when the load began.
    seq: u64,
    snap: Option<Arc<Snapshot>>,
}

struct Ttl;

impl Expiry<[u8; 32], Cached> for Ttl {
    fn expire_after_create(&self, _k: &[u8; 32], v: &Cached, _now: Instant) -> Option<Duration> {
        Some(if v.snap.is_some() {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(5)
        })
    }
}

pub struct LicenseCache {
    cache: Cache<[u8; 32], Cached>,
    seq: AtomicU64,
    /// Per shard of digests: the sequence number of the last write seen.
    shards: Box<[AtomicU64]>,
    /// The sequence number of the last "everything changed" (a product edit, a lost LISTEN).
    all: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl Default for LicenseCache {
    fn default() -> Self {
        Self::new(500_000)
    }
}

fn shard(digest: &[u8; 32]) -> usize {
    (u16::from_le_bytes([digest[0], digest[1]]) as usize) % SHARDS
}

impl LicenseCache {
    pub fn new(capacity: u64) -> Self {
        LicenseCache {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(Ttl)
                .build(),
            seq: AtomicU64::new(1),
            shards: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            all: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn fresh(&self, digest: &[u8; 32], c: &Cached) -> bool {
        // A load that read the sequence after a write's stamp began after its commit.
        c.seq >= self.shards[shard(digest)].load(SeqCst) && c.seq >= self.all.load(SeqCst)
    }

    async fn load(&self, db: &Db, digest: &[u8; 32]) -> Result<Cached, sqlx::Error> {
        let seq = self.seq.load(SeqCst);
        let snap = super::store::load_snapshot(db, &hex::encode(digest)).await?;
        Ok(Cached {
            seq,
            snap: snap.map(Arc::new),
        })
    }

    /// What the cache alone knows of this key digest, without asking the database: `None` when
    /// nothing fresh is cached, `Some(None)` for a key cached as unknown.
    pub async fn peek(&self, digest: &[u8; 32]) -> Option<Option<Arc<Snapshot>>> {
        let c = self.cache.get(digest).await?;
        if !self.fresh(digest, &c) {
            return None;
        }
        self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(c.snap)
    }

    /// The snapshot of the license with this key digest; `None` for an unknown key.
    pub async fn get(&self, db: &Db, digest: &[u8; 32]) -> Result<Option<Arc<Snapshot>>, Error> {
        if let Some(c) = self.cache.get(digest).await {
            if self.fresh(digest, &c) {
                self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(c.snap);
            }
            self.cache.invalidate(digest).await;
        }
        self.misses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Concurrent misses for one key share a single query.
        let c = self
            .cache
            .try_get_with(*digest, self.load(db, digest))
            .await
            .map_err(|e| Error::shared_db("loading license snapshot", &e))?;
        if self.fresh(digest, &c) {
            return Ok(c.snap);
        }
        // A shared load began before a write we know of: read again, past the cache.
        let c = self.load(db, digest).await?;
        self.cache.insert(*digest, c.clone()).await;
        Ok(c.snap)
    }

    /// Forgets one license locally (after a commit here, or a notification from elsewhere).
    pub async fn invalidate_local(&self, digest: &[u8; 32]) {
        let s = self.seq.fetch_add(1, SeqCst) + 1;
        self.shards[shard(digest)].fetch_max(s, SeqCst);
        self.cache.invalidate(digest).await;
    }

    /// Call after committing any change to a license: here at once, elsewhere by `NOTIFY`.
    pub async fn changed(&self, db: &Db, digest_hex: &str) {
        if let Some(d) = hex::decode(digest_hex)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        {
            self.invalidate_local(&d).await;
        }
        db.notify_license_changed(digest_hex).await;
    }

    /// Forgets everything locally (product edits, a lost notification connection).
    pub fn invalidate_all_local(&self) {
        let s = self.seq.fetch_add(1, SeqCst) + 1;
        self.all.fetch_max(s, SeqCst);
        self.cache.invalidate_all();
    }

    pub async fn invalidate_all(&self, db: &Db) {
        self.invalidate_all_local();
        db.notify_license_changed("*").await;
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}
