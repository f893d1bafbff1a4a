//! [`LicenseClient`]: activation, checks (online, else from the stored token), heartbeats.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{OnceCell, watch};

use crate::cache::{Cache, Loaded, Record};
use crate::clock::{Clock, SystemClock, from_unix, unix};
use crate::error::Error;
use crate::keys::PublicKeys;
use crate::machine;
use crate::net::{self, Backoff, Failure};
use crate::revocations::{self, Expect, ListError, Listed, StoredList};
use crate::status::{OfflineReason, Status};
use crate::token::{self, Claims, Expected, Grant, TokenError};

/// How often the JWKS may be fetched at most: a token with an unknown `kid` (a key rotation,
/// or garbage) must not turn every check into two requests.
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// The heartbeat interval when the product sets no heartbeat timeout (the server then never
/// releases a silent seat; beats only keep `last_heartbeat_at` meaningful in the device list).
const IDLE_HEARTBEAT: Duration = Duration::from_secs(3600);
/// Before the next try when the product's heartbeat timeout could not be read.
const HEARTBEAT_RETRY: Duration = Duration::from_secs(60);

/// Builds a [`LicenseClient`]; see [`LicenseClient::builder`].
#[must_use]
pub struct ClientBuilder {
    base_url: Option<String>,
    product: Option<String>,
    keys: Option<PublicKeys>,
    cache_dir: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    issuer: String,
    timeout: Duration,
    clock_tolerance: Duration,
    heartbeat_interval: Option<Duration>,
    deactivate_on_shutdown: bool,
    machine_id: Option<String>,
    device_name: Option<String>,
    revocation_mirror: Option<String>,
    revocation_lists: bool,
}

impl ClientBuilder {
    /// The server, e.g. `https://licenses.example.com` (a path prefix is kept). Use `https` in
    /// production: keys are fetched from the server's JWKS only over `https`, or over `http` to
    /// the loopback interface (development).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The product, by id (`prd_…`) or slug. With the id, every check — offline too — refuses a
    /// token of another product by itself; with a slug, offline checks rely on the product id
    /// the last online answer named, kept in the (sealed) cache file.
    pub fn product(mut self, product: impl Into<String>) -> Self {
        self.product = Some(product.into());
        self
    }

    /// The keys tokens must be signed with, pinned in the application: offline checks trust
    /// these and nothing else (plus keys fetched from the server's JWKS during this run, when a
    /// token names an unknown `kid`). Ship the server's JWKS with the application.
    pub fn public_keys(mut self, keys: PublicKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Where the cache file (and, where the OS offers no machine id, a generated one) is kept:
    /// the application's own data directory.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// The source of "now" (default: the system clock). For tests, or an application with a
    /// more trustworthy time source.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How far the local clock may be behind the latest trusted time before offline checks fail
    /// with [`Error::ClockRollback`] (default 1 hour: clocks drift and some machines keep local
    /// time in the hardware clock, but a day back is not an accident).
    pub fn clock_tolerance(mut self, tolerance: Duration) -> Self {
        self.clock_tolerance = tolerance;
        self
    }

    /// The `iss` tokens must carry (default `ecosire`, the server's default).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// How long to wait for an answer before falling back to the stored token (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A fixed heartbeat interval (jittered down by up to 20 %), instead of a third of the
    /// product's heartbeat timeout.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// Whether [`LicenseClient::shutdown`] frees this machine's seat (default: no, the seat
    /// stays with the machine across restarts).
    pub fn deactivate_on_shutdown(mut self, yes: bool) -> Self {
        self.deactivate_on_shutdown = yes;
        self
    }

    /// Overrides the machine id the fingerprint and the cache seal derive from: for containers,
    /// whose images often share one `/etc/machine-id`.
    pub fn machine_id(mut self, id: impl Into<String>) -> Self {
        self.machine_id = Some(id.into());
        self
    }

    /// The device name shown in the license's device list (`name` at activation).
    pub fn device_name(mut self, name: impl Into<String>) -> Self {
        self.device_name = Some(name.into());
        self
    }

    /// Where to fetch the product's signed revocation list when the server cannot be reached: the
    /// full URL of a copy of `GET /api/licenses/revocations?product=…` (a static file on a CDN,
    /// say). Any host will do: a list is believed for its signature, never for where it came from.
    pub fn revocation_mirror(mut self, url: impl Into<String>) -> Self {
        self.revocation_mirror = Some(url.into());
        self
    }

    /// Whether checks fetch and apply signed revocation lists (default: yes).
    pub fn revocation_lists(mut self, yes: bool) -> Self {
        self.revocation_lists = yes;
        self
    }

    pub fn build(self) -> Result<LicenseClient, Error> {
        let need = |what: &str| Error::Config(format!("{what} is required"));
        let base = self.base_url.ok_or_else(|| need("base_url"))?;
        let url = reqwest::Url::parse(&base)
            .map_err(|e| Error::Config(format!("base_url {base:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(format!("base_url {base:?}: not http(s)")));
        }
        let product = self.product.ok_or_else(|| need("product"))?;
        let keys = self
            .keys
            .filter(|k| !k.is_empty())
            .ok_or_else(|| need("public_keys (at least one)"))?;
        let cache_dir = self.cache_dir.ok_or_else(|| need("cache_dir"))?;
        let machine_id = match self.machine_id {
            Some(id) => id,
            None => machine::machine_id(&cache_dir)?,
        };
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(5)))
            // A redirect could carry the license key to another host; the server never sends one.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ecosire-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(LicenseClient {
            inner: Arc::new(Inner {
                base: base.trim_end_matches('/').to_string(),
                jwks_refresh: jwks_refresh_allowed(&url),
                fingerprint: machine::fingerprint(&machine_id, &product),
                cache: Cache::new(
                    &cache_dir,
                    &product,
                    machine::derive("cache-seal", &machine_id, &product),
                ),
                product,
                pinned: keys,
                issuer: self.issuer,
                tolerance: self.clock_tolerance,
                clock: self.clock,
                http,
                heartbeat_interval: self.heartbeat_interval,
                derived_interval: OnceCell::new(),
                deactivate_on_shutdown: self.deactivate_on_shutdown,
                device_name: self.device_name,
                mirror: self.revocation_mirror,
                lists: self.revocation_lists,
                state: Mutex::new(Shared::default()),
                one_check: tokio::sync::Mutex::new(()),
                heartbeat: Mutex::new(None),
            }),
        })
    }

    /// Builds the synchronous client (feature `blocking`).
    #[cfg(feature = "blocking")]
    pub fn build_blocking(self) -> Result<crate::blocking::LicenseClient, Error> {
        crate::blocking::LicenseClient::new(self.build()?)
    }
}

/// Keys fetched from the server are trusted only over a channel an attacker on the network
/// cannot forge: TLS, or the machine's own loopback interface.
fn jwks_refresh_allowed(url: &reqwest::Url) -> bool {
    match (url.scheme(), url.host()) {
        ("https", _) => true,
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Domain(d))) => d.eq_ignore_ascii_case("localhost"),
        _ => false,
    }
}

/// Checks licenses of one product on this machine. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct LicenseClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The base URL without a trailing slash.
    base: String,
    product: String,
    pinned: PublicKeys,
    jwks_refresh: bool,
    issuer: String,
    tolerance: Duration,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    cache: Cache,
    /// This machine's fingerprint for the product.
    fingerprint: String,
    heartbeat_interval: Option<Duration>,
    /// A third of the product's heartbeat timeout, read once from the server.
    derived_interval: OnceCell<Duration>,
    deactivate_on_shutdown: bool,
    device_name: Option<String>,
    /// A copy of the revocation list to fall back on when the server cannot be reached.
    mirror: Option<String>,
    /// Whether revocation lists are fetched and applied.
    lists: bool,
    state: Mutex<Shared>,
    /// Checks run one at a time: a burst of calls makes one request at a time, and sees the
    /// backoff or cache the previous one left.
    one_check: tokio::sync::Mutex<()>,
    heartbeat: Mutex<Option<Heartbeat>>,
}

/// What this run has learnt (never persisted: see `refresh_jwks`).
#[derive(Default)]
struct Shared {
    fetched: PublicKeys,
    last_jwks_fetch: Option<SystemTime>,
    backoff: Option<Backoff>,
    /// The `ETag` of the revocation list held, from the server, for `If-None-Match`.
    list_etag: Option<String>,
}

struct Heartbeat {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What the heartbeat task has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatReport {
    /// Heartbeats the server accepted.
    pub beats: u64,
    /// Heartbeats that failed (unreachable, refused).
    pub failures: u64,
    pub last_error: Option<String>,
    /// The interval in use (before jitter), once known.
    pub interval: Option<Duration>,
}

#[derive(Deserialize)]
struct ValidateAnswer {
    valid: bool,
    code: String,
    #[serde(default)]
    detail: String,
    token: Option<String>,
}

#[derive(Deserialize)]
struct ProductAnswer {
    heartbeat_timeout_s: Option<i64>,
}

/// The record a check works from, and whether its seal held.
pub(crate) struct Current {
    pub(crate) record: Record,
    refused: Option<String>,
}

/// A product id as API.md spells ids (`prd_` + 26 characters), as opposed to a slug.
fn is_product_id(product: &str) -> bool {
    product.starts_with("prd_")
}

impl LicenseClient {
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            base_url: None,
            product: None,
            keys: None,
            cache_dir: None,
            clock: Arc::new(SystemClock),
            issuer: "ecosire".into(),
            timeout: Duration::from_secs(10),
            clock_tolerance: Duration::from_secs(3600),
            heartbeat_interval: None,
            deactivate_on_shutdown: false,
            machine_id: None,
            device_name: None,
            revocation_mirror: None,
            revocation_lists: true,
        }
    }

    /// This machine's fingerprint for the product: pass it to [`LicenseClient::activate`].
    pub fn machine_fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// The cache file (for support: deleting it forgets the activation on this machine).
    pub fn cache_file(&self) -> &Path {
        self.inner.cache.path()
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base)
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<Vec<u8>, Failure> {
        let req = self.inner.http.post(self.url(path)).json(&body);
        net::send(req, self.now()).await
    }

    /// Runs a cache operation off the async threads (file I/O blocks).
    pub(crate) async fn on_cache<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Cache) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let cache = self.inner.cache.clone();
        tokio::task::spawn_blocking(move || op(&cache))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?
            .map_err(Error::from)
    }

    pub(crate) async fn store(&self, record: Record) -> Result<(), Error> {
        self.on_cache(move |c| c.store(&record)).await
    }

    pub(crate) async fn current(&self) -> Result<Current, Error> {
        match self.on_cache(Cache::load).await? {
            Loaded::Missing => Err(Error::NotActivated),
            Loaded::Intact(record) => Ok(Current {
                record,
                refused: None,
            }),
            Loaded::Refused {
                reason,
                record: Some(record),
            } => Ok(Current {
                record,
                refused: Some(reason),
            }),
            Loaded::Refused { reason, .. } => Err(Error::CacheRefused(reason)),
        }
    }

    /// The error for an outcome that is not the expected success, on a call that has no
    /// offline fallback.
    pub(crate) fn refusal(&self, failure: Failure) -> Error {
        match failure {
            Failure::Problem {
                code,
                detail,
                retry_after: Some(wait),
                ..
            } if code == "CHURN_LIMIT_REACHED" => Error::ChurnLimitReached {
                retry_at: self.now() + wait,
                detail,
            },
            Failure::Problem {
                status,
                code,
                detail,
                ..
            } => Error::Rejected {
                status,
                code,
                detail,
            },
            Failure::Busy {
                status,
                retry_after,
            } => Error::Unreachable(OfflineReason::ServerBusy {
                status,
                retry_at: self.now() + net::busy_wait(status, retry_after, 1),
            }),
            Failure::Failed(reason) => Error::Unreachable(reason),
        }
    }

    /// Takes a seat for `fingerprint` (`POST /api/licenses/activate`; repeating it is harmless),
    /// then checks online so that a token bound to this very request is stored.
    pub async fn activate(&self, key: &str, fingerprint: &str) -> Result<Status, Error> {
        let body = json!({
            "key": key,
            "fingerprint": fingerprint,
            "name": self.inner.device_name,
            "platform": std::env::consts::OS,
        });
        if let Err(f) = self.post("/api/licenses/activate", body).await {
            return Err(self.refusal(f));
        }
        // The activation answer's token carries no nonce, so it is not stored: the check below
        // fetches one that answers this client's own request. A re-activation never lowers the
        // high-water mark of an intact cache.
        let mut record = Record::new(key, fingerprint);
        if let Ok(Loaded::Intact(old)) = self.on_cache(Cache::load).await {
            record.trusted_time = old.trusted_time;
            record.seen_time = old.seen_time;
        }
        self.store(record).await?;
        self.check().await
    }

    /// Checks the license: online when the server answers, else from the stored token.
    pub async fn check(&self) -> Result<Status, Error> {
        let _one_at_a_time = self.inner.one_check.lock().await;
        let current = self.current().await?;
        let reason = match self.check_online(&current.record).await? {
            Ok(status) => {
                // Online, the server's verdict stands; the list is for the offline checks to
                // come. A refused or missing list leaves the one held in force.
                let _ = self.update_lists(true).await;
                return Ok(status);
            }
            Err(reason) => reason,
        };
        if let Some(why) = current.refused {
            return Err(Error::CacheRefused(why));
        }
        let record = match self.update_lists(false).await {
            Ok(Some(_)) => self.current().await?.record,
            _ => current.record,
        };
        self.check_offline(record, reason).await
    }

    /// Fetches the product's signed revocation list (from the server, else from the mirror) and
    /// keeps it when it is newer than the one held. Answers the `seq` held afterwards (`None`:
    /// none yet). Checks do this by themselves; call it to refresh the list on a schedule of your
    /// own. [`Error::RevocationList`] when a fetched list was refused.
    pub async fn update_revocations(&self) -> Result<Option<i64>, Error> {
        let _one_at_a_time = self.inner.one_check.lock().await;
        self.update_lists(true).await?;
        let held = self.current().await?.record.revocations.map(|l| l.seq);
        Ok(held)
    }

    /// [`LicenseClient::update_revocations`] without the lock; `from_server` false when the
    /// server just proved unreachable (then only the mirror is asked). `Ok(Some(seq))` when a
    /// newer list was stored.
    async fn update_lists(&self, from_server: bool) -> Result<Option<i64>, Error> {
        if !self.inner.lists {
            return Ok(None);
        }
        let Loaded::Intact(mut record) = self.on_cache(Cache::load).await? else {
            return Ok(None);
        };
        let product = &self.inner.product;
        let product_id = match (is_product_id(product), &record.product_id) {
            (true, _) => product.clone(),
            (false, Some(id)) => id.clone(),
            // The id is learnt from a verified online answer; until then no list can be checked
            // against it (and there is no token to refuse either).
            (false, None) => return Ok(None),
        };
        let mut sources = vec![];
        if from_server {
            let q = format!("/api/licenses/revocations?product={}", url_segment(product));
            sources.push((self.url(&q), true));
        }
        if let Some(m) = &self.inner.mirror {
            sources.push((m.clone(), false));
        }
        let mut failed = None;
        for (url, server) in sources {
            let etag = match (&record.revocations, server) {
                (Some(_), true) => self.inner.state.lock().expect("state").list_etag.clone(),
                _ => None,
            };
            let (body, new_etag) = match self.fetch_list(&url, etag).await {
                Ok(Some(got)) => got,
                Ok(None) => return Ok(None),
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            let want = Expect {
                issuer: &self.inner.issuer,
                product_id: &product_id,
                seen: record.revocations.as_ref().map(|l| (l.seq, l.iat)),
                now: unix(self.now()),
            };
            let verified = match revocations::accept(&body, |k| self.known_key(k), &want) {
                Err(ListError::Token(TokenError::UnknownKey(_))) if server => {
                    self.refresh_jwks().await;
                    revocations::accept(&body, |k| self.known_key(k), &want)
                }
                other => other,
            };
            let claims = match verified {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(None),
                Err(e) => {
                    failed = Some(Error::RevocationList(e));
                    continue;
                }
            };
            if server {
                self.inner.state.lock().expect("state").list_etag = new_etag;
            }
            record.revocations = Some(StoredList {
                seq: claims.seq,
                iat: claims.iat,
                jws: body.trim().to_string(),
            });
            self.store(record).await?;
            return Ok(Some(claims.seq));
        }
        failed.map_or(Ok(None), Err)
    }

    /// One GET of a list: `Ok(None)` for 304, else the body and its `ETag`.
    async fn fetch_list(
        &self,
        url: &str,
        etag: Option<String>,
    ) -> Result<Option<(String, Option<String>)>, Error> {
        let mut req = self.inner.http.get(url);
        if let Some(tag) = etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        let unreachable = |why: String| Error::Unreachable(OfflineReason::Unreachable(why));
        let res = req.send().await.map_err(|e| unreachable(e.to_string()))?;
        if res.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !res.status().is_success() {
            return Err(Error::Unreachable(OfflineReason::UnexpectedAnswer(
                format!("HTTP {} for the revocation list", res.status().as_u16()),
            )));
        }
        let etag = res
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = res.text().await.map_err(|e| unreachable(e.to_string()))?;
        Ok(Some((body, etag)))
    }

    /// The server's verdict, or why there is none (`Ok(Err(reason))`).
    async fn check_online(&self, record: &Record) -> Result<Result<Status, OfflineReason>, Error> {
        let now = self.now();
        let backoff = self.inner.state.lock().expect("state").backoff;
        if let Some(b) = backoff
            && b.holds(now)
        {
            return Ok(Err(OfflineReason::BackingOff {
                retry_at: b.retry_at,
            }));
        }
        let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
        let body = json!({
            "key": record.key,
            "fingerprint": record.fingerprint,
            "product": self.inner.product,
            "nonce": nonce,
        });
        let answer: ValidateAnswer = match self.post("/api/licenses/validate", body).await {
            Ok(body) => match net::parse(&body) {
                Ok(a) => a,
                Err(reason) => return Ok(Err(reason)),
            },
            Err(Failure::Busy {
                status,
                retry_after,
            }) => {
                let mut state = self.inner.state.lock().expect("state");
                let b = Backoff::after(state.backoff, status, retry_after, now);
                state.backoff = Some(b);
                return Ok(Err(OfflineReason::ServerBusy {
                    status,
                    retry_at: b.retry_at,
                }));
            }
            Err(Failure::Failed(reason)) => return Ok(Err(reason)),
            Err(problem) => return Err(self.refusal(problem)),
        };
        self.inner.state.lock().expect("state").backoff = None;

        let mut record = record.clone();
        if !answer.valid {
            // Unsigned, so a forged "invalid" could deny service, which cutting the cable does
            // too; what matters is that no forged answer can make a license valid.
            record.token = None;
            self.store(record).await?;
            return Ok(Ok(Status::Invalid {
                code: answer.code,
                detail: answer.detail,
            }));
        }
        let token = answer.token.ok_or(TokenError::Malformed)?;
        let claims = self.verify_online(&token).await?;
        if claims.nonce.as_deref() != Some(nonce.as_str()) {
            return Err(Error::ReplayedAnswer);
        }
        self.expected(&record, None).check(&claims)?;
        // The nonce makes this the server's answer to this very request, product included, so
        // its iat is server time now and its product is the one asked for.
        record.product_id = Some(claims.product.clone());
        record.trusted_time = claims.iat;
        record.seen_time = claims.iat;
        record.token = Some(token.clone());
        self.store(record).await?;
        Ok(Ok(Status::Valid(Grant::new(claims, token))))
    }

    /// What a token must say to count for this machine. The product is checked against the
    /// builder's product id, or, when the builder names a slug, against `learnt_product`: the id
    /// a verified online answer named (offline; online the server checks the slug itself and
    /// the nonce binds its answer to this request).
    pub(crate) fn expected<'a>(
        &'a self,
        record: &'a Record,
        learnt_product: Option<&'a str>,
    ) -> Expected<'a> {
        let product = &self.inner.product;
        Expected {
            issuer: &self.inner.issuer,
            product_id: if is_product_id(product) {
                Some(product)
            } else {
                learnt_product
            },
            fingerprint: &record.fingerprint,
        }
    }

    /// The stored token's verdict: valid until its `exp` unless the clock went back.
    async fn check_offline(
        &self,
        mut record: Record,
        reason: OfflineReason,
    ) -> Result<Status, Error> {
        let Some(token) = record.token.clone() else {
            return Err(Error::NoStoredToken { reason });
        };
        let claims = token::verify(&token, |kid| self.known_key(kid))?;
        self.expected(&record, record.product_id.as_deref())
            .check(&claims)?;
        let listed = record.revocations.as_ref().and_then(|l| {
            let c = revocations::stored_claims(&l.jws)?;
            Some((c.lists(&claims.sub)?, c.seq))
        });
        if let Some((listed, seq)) = listed {
            if listed == Listed::Revoked {
                // Revocation is final: the token never counts again, whatever a later list says.
                record.token = None;
                self.store(record).await?;
            }
            return Ok(Status::Invalid {
                code: listed.code().to_string(),
                detail: format!(
                    "the license is {} in the signed revocation list (seq {seq})",
                    listed.code().to_lowercase()
                ),
            });
        }
        let now = unix(self.now());
        let high_water = record.high_water().max(claims.iat);
        let tolerance = i64::try_from(self.inner.tolerance.as_secs()).unwrap_or(i64::MAX);
        if now.saturating_add(tolerance) < high_water {
            return Err(Error::ClockRollback {
                now: from_unix(now),
                trusted: from_unix(high_water),
            });
        }
        if now >= claims.exp {
            return Err(Error::OfflineExpired {
                expired_at: from_unix(claims.exp),
                reason,
            });
        }
        if now > record.seen_time {
            record.seen_time = now;
            self.store(record).await?;
        }
        Ok(Status::Offline {
            until: from_unix(claims.exp),
            grant: Grant::new(claims, token),
            reason,
        })
    }

    pub(crate) fn known_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.inner.pinned.get(kid).or_else(|| {
            let state = self.inner.state.lock().expect("state");
            state.fetched.get(kid)
        })
    }

    /// Verifies an online answer's token, fetching the JWKS first when its `kid` is unknown.
    pub(crate) async fn verify_online(&self, token: &str) -> Result<Claims, TokenError> {
        let kid = token::kid(token)?;
        if self.known_key(&kid).is_none() {
            self.refresh_jwks().await;
        }
        token::verify(token, |k| self.known_key(k))
    }

    /// Replaces the fetched keys with the server's JWKS, at most once a minute. Fetched keys are
    /// kept in memory only: written to the cache they would be keys anyone with the file could
    /// replace, so after a restart only the pinned keys count until the server is reachable.
    async fn refresh_jwks(&self) {
        if !self.inner.jwks_refresh {
            return;
        }
        let now = self.now();
        {
            let mut state = self.inner.state.lock().expect("state");
            let recent = state.last_jwks_fetch.is_some_and(|at| {
                now >= at && now.duration_since(at).unwrap_or_default() < JWKS_REFRESH_INTERVAL
            });
            if recent {
                return;
            }
            // Counted before the request: a failing fetch is bounded just the same.
            state.last_jwks_fetch = Some(now);
        }
        let req = self.inner.http.get(self.url("/.well-known/jwks.json"));
        let Ok(body) = net::send(req, now).await else {
            return;
        };
        if let Ok(keys) = std::str::from_utf8(&body)
            .map_err(|_| ())
            .and_then(|s| PublicKeys::from_jwks(s).map_err(|_| ()))
        {
            self.inner.state.lock().expect("state").fetched = keys;
        }
    }

    /// Frees this machine's seat (`POST /api/licenses/deactivate`) and forgets the activation.
    /// A seat already freed (by an admin, or the heartbeat reaper) counts as done.
    pub async fn deactivate(&self) -> Result<(), Error> {
        let record = self.current().await?.record;
        let body = json!({"key": record.key, "fingerprint": record.fingerprint});
        match self.post("/api/licenses/deactivate", body).await {
            Ok(_) | Err(Failure::Problem { status: 404, .. }) => {}
            Err(f) => return Err(self.refusal(f)),
        }
        self.on_cache(Cache::remove).await
    }

    /// One heartbeat (`POST /api/licenses/heartbeat`), for applications that schedule their own.
    /// The token in its answer is not stored: it carries no nonce, so a replayed answer could
    /// not be told from a fresh one.
    pub async fn heartbeat(&self) -> Result<(), Error> {
        let record = self.current().await?.record;
        let body = json!({"key": record.key, "fingerprint": record.fingerprint});
        self.post("/api/licenses/heartbeat", body)
            .await
            .map(drop)
            .map_err(|f| self.refusal(f))
    }

    /// The heartbeat interval before jitter: the configured one, else a third of the product's
    /// `heartbeat_timeout_s` (so two beats may be lost before the server frees the seat), else
    /// an hour when the product sets no timeout.
    pub async fn heartbeat_interval(&self) -> Result<Duration, Error> {
        if let Some(d) = self.inner.heartbeat_interval {
            return Ok(d);
        }
        self.inner
            .derived_interval
            .get_or_try_init(|| async {
                let req = self.inner.http.get(self.url(&format!(
                    "/api/products/{}",
                    url_segment(&self.inner.product)
                )));
                let body = net::send(req, self.now())
                    .await
                    .map_err(|f| self.refusal(f))?;
                let p: ProductAnswer = net::parse(&body).map_err(Error::Unreachable)?;
                Ok(interval_for(p.heartbeat_timeout_s))
            })
            .await
            .copied()
    }

    /// Starts heartbeats in the background (on the current tokio runtime), replacing any
    /// running ones. A heartbeat the server refuses (license revoked, seat released) triggers a
    /// check, so the stored token is dropped as soon as the server says so.
    pub fn start_heartbeat(&self) -> watch::Receiver<HeartbeatReport> {
        let (report_tx, report_rx) = watch::channel(HeartbeatReport::default());
        let (stop_tx, mut stop_rx) = watch::channel(false);
        // The task holds the client weakly between beats: dropping the last handle to the
        // client ends it, even without `shutdown`.
        let weak = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let interval = LicenseClient { inner }.heartbeat_interval().await;
                report_tx.send_modify(|r| r.interval = interval.as_ref().ok().copied());
                let wait = interval.map_or(HEARTBEAT_RETRY, |d| net::jittered(d, 0.8));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop_rx.changed() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                let client = LicenseClient { inner };
                let beat = client.heartbeat().await;
                if let Err(Error::Rejected { .. }) = &beat {
                    let _ = client.check().await;
                }
                report_tx.send_modify(|r| match beat {
                    Ok(()) => r.beats += 1,
                    Err(e) => {
                        r.failures += 1;
                        r.last_error = Some(e.to_string());
                    }
                });
            }
        });
        let previous = self
            .inner
            .heartbeat
            .lock()
            .expect("heartbeat")
            .replace(Heartbeat {
                stop: stop_tx,
                task,
            });
        if let Some(old) = previous {
            old.task.abort();
        }
        report_rx
    }

    /// Stops heartbeats (waiting for one in flight) and, if the builder asked for it, frees the
    /// seat. Call it when the application exits.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let running = self.inner.heartbeat.lock().expect("heartbeat").take();
        if let Some(h) = running {
            let _ = h.stop.send(true);
            let _ = h.task.await;
        }
        if self.inner.deactivate_on_shutdown {
            match self.deactivate().await {
                Ok(()) | Err(Error::NotActivated) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A third of the heartbeat timeout (at least a second), or an hour without one.
fn interval_for(timeout_s: Option<i64>) -> Duration {
    match timeout_s {
        Some(s) if s > 0 => Duration::from_secs((s.unsigned_abs() / 3).max(1)),
        _ => IDLE_HEARTBEAT,
    }
}

/// A product id or slug as one path segment (slugs are `[a-z0-9-]`, but the builder takes any
/// string).
fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_intervals_leave_room_for_two_lost_beats() {
        assert_eq!(interval_for(Some(90)), Duration::from_secs(30));
        assert_eq!(interval_for(Some(10)), Duration::from_secs(3));
        assert_eq!(interval_for(Some(1)), Duration::from_secs(1));
        assert_eq!(interval_for(None), IDLE_HEARTBEAT);
        for _ in 0..100 {
            let j = net::jittered(Duration::from_secs(30), 0.8);
            assert!(j >= Duration::from_secs(24) && j <= Duration::from_secs(30));
        }
    }

    #[test]
    fn keys_are_fetched_only_over_tls_or_loopback() {
        let allowed = |u: &str| jwks_refresh_allowed(&reqwest::Url::parse(u).unwrap());
        assert!(allowed("https://licenses.example.com"));
        assert!(allowed("http://127.0.0.1:8080"));
        assert!(allowed("http://[::1]:8080"));
        assert!(allowed("http://localhost:8080"));
        assert!(!allowed("http://licenses.example.com"));
        assert!(!allowed("http://192.168.1.10"));
    }

    #[test]
    fn product_segments_are_escaped() {
        assert_eq!(url_segment("desktop-pro"), "desktop-pro");
        assert_eq!(url_segment("a/b?c"), "a%2Fb%3Fc");
    }

    /// A client of `product` whose server refuses connections, with a sealed cache holding
    /// `token` (signed as the test likes: the seal holds, so only the token's own checks can
    /// refuse it) and the product id `prd_1` learnt online.
    async fn offline_with(
        product: &str,
        token: impl FnOnce(&str) -> String,
    ) -> (Result<Status, Error>, tempfile::TempDir) {
        let server = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let kid = crate::keys::thumbprint(&server.verifying_key());
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let client = LicenseClient::builder()
            .base_url(format!("http://127.0.0.1:{closed}"))
            .product(product)
            .public_keys(
                PublicKeys::new()
                    .with_ed25519(server.verifying_key().to_bytes())
                    .unwrap(),
            )
            .cache_dir(dir.path())
            .machine_id("machine")
            .build()
            .unwrap();
        let iat = unix(SystemTime::now());
        let record = Record {
            product_id: Some("prd_1".into()),
            token: Some(token(&kid)),
            trusted_time: iat,
            seen_time: iat,
            ..Record::new("ECOS-KEY", "fp")
        };
        client.inner.cache.store(&record).unwrap();
        (client.check().await, dir)
    }

    fn signed(seed: u8, kid: &str, change: impl FnOnce(&mut Claims)) -> String {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let mut claims = crate::token::tests::claims(unix(SystemTime::now()));
        change(&mut claims);
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
        crate::token::tests::sign(&key, header, &claims)
    }

    #[tokio::test]
    async fn a_sealed_cache_is_still_only_as_good_as_its_token() {
        let (status, _dir) = offline_with("prd_1", |kid| signed(5, kid, |_| {})).await;
        assert!(
            matches!(
                status,
                Ok(Status::Offline {
                    reason: OfflineReason::Unreachable(_),
                    ..
                })
            ),
            "{status:?}"
        );
        // Re-sealing the file (the seal's key can be derived by anyone on the machine) does not
        // make a token the server did not sign, or signed for another device or product, count.
        let (status, _dir) = offline_with("prd_1", |kid| signed(6, kid, |_| {})).await;
        assert!(
            matches!(status, Err(Error::TokenRefused(TokenError::Signature))),
            "{status:?}"
        );
        for (claim, change) in [
            (
                "fingerprint",
                Box::new(|c: &mut Claims| c.fingerprint = Some("other".into()))
                    as Box<dyn FnOnce(&mut Claims)>,
            ),
            (
                "product",
                Box::new(|c: &mut Claims| c.product = "prd_2".into()),
            ),
            ("iss", Box::new(|c: &mut Claims| c.iss = "elsewhere".into())),
        ] {
            let (status, _dir) = offline_with("prd_1", |kid| signed(5, kid, change)).await;
            assert!(
                matches!(&status, Err(Error::TokenRefused(TokenError::Claim { claim: c, .. })) if *c == claim),
                "{claim}: {status:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_product_named_by_slug_is_bound_offline_by_the_id_learnt_online() {
        let (status, _dir) = offline_with("desktop-pro", |kid| signed(5, kid, |_| {})).await;
        assert!(matches!(status, Ok(Status::Offline { .. })), "{status:?}");
        let other_product = |kid: &str| signed(5, kid, |c| c.product = "prd_2".into());
        let (status, _dir) = offline_with("desktop-pro", other_product).await;
        assert!(
            matches!(
                &status,
                Err(Error::TokenRefused(TokenError::Claim {
                    claim: "product",
                    ..
                }))
            ),
            "{status:?}"
        );
    }

    #[test]
    fn the_builder_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let public = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
        let keys = PublicKeys::new().with_ed25519(public.to_bytes());
        let Err(Error::Config(msg)) = LicenseClient::builder()
            .product("p")
            .cache_dir(dir.path())
            .build()
        else {
            panic!("no base_url")
        };
        assert!(msg.contains("base_url"), "{msg}");
        let Err(Error::Config(msg)) = LicenseClient::builder()
            .base_url("http://127.0.0.1:1")
            .product("p")
            .cache_dir(dir.path())
            .build()
        else {
            panic!("no keys")
        };
        assert!(msg.contains("public_keys"), "{msg}");
        let Err(Error::Config(msg)) = LicenseClient::builder()
            .base_url("ftp://x")
            .product("p")
            .public_keys(keys.unwrap())
            .cache_dir(dir.path())
            .build()
        else {
            panic!("ftp")
        };
        assert!(msg.contains("http"), "{msg}");
    }
}
