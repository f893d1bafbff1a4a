//! Behaviour the real server cannot be made to show on demand — a 503, a hang, a token signed
//! with a key it does not publish — checked against a small stand-in that speaks the same HTTP
//! contract (API.md) and counts what it is asked. Everything else is tested against the real
//! `ecosire` binary in the server's `tests/sdk_rust.rs`.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ecosire_client::{Error, LicenseClient, OfflineReason, PublicKeys, Status, TokenError};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use sha2::Digest;

const PRODUCT: &str = "prd_01TESTPRODUCT00000000000000";

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// 200, valid, signed with the published key.
    Valid,
    /// 200, valid, signed with a key the JWKS does not hold.
    UnpublishedKey,
    /// This status, with `Retry-After: <s>` when given.
    Busy(u16, Option<u64>),
    /// Never answers.
    Hang,
}

struct Fake {
    published: SigningKey,
    unpublished: SigningKey,
    mode: Mutex<Mode>,
    validates: AtomicUsize,
    jwks_fetches: AtomicUsize,
}

impl Fake {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    fn validates(&self) -> usize {
        self.validates.load(Ordering::SeqCst)
    }
    fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }
}

/// The RFC 7638 thumbprint, the kid the real server gives a key.
fn kid(key: &SigningKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

/// A license token as the server signs it.
fn token(key: &SigningKey, req: &Value) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": kid(key)});
    let claims = json!({
        "iss": "ecosire", "aud": "ecosire:license", "sub": "lic_1", "iat": now,
        "exp": now + 7 * 86_400, "jti": "j", "product": PRODUCT, "entitlements": ["pro"],
        "max_activations": 1, "license_expires_at": null,
        "fingerprint": req["fingerprint"], "nonce": req["nonce"],
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

async fn validate(State(fake): State<Arc<Fake>>, Json(req): Json<Value>) -> Response {
    fake.validates.fetch_add(1, Ordering::SeqCst);
    let mode = *fake.mode.lock().unwrap();
    let key = match mode {
        Mode::Valid => &fake.published,
        Mode::UnpublishedKey => &fake.unpublished,
        Mode::Busy(status, retry_after) => {
            let mut headers = HeaderMap::new();
            if let Some(s) = retry_after {
                headers.insert("retry-after", s.into());
            }
            let problem = json!({"code": "RATE_LIMITED", "detail": "busy"});
            return (
                StatusCode::from_u16(status).unwrap(),
                headers,
                Json(problem),
            )
                .into_response();
        }
        Mode::Hang => std::future::pending().await,
    };
    Json(json!({"valid": true, "code": "VALID", "detail": "ok", "token": token(key, &req)}))
        .into_response()
}

async fn jwks(State(fake): State<Arc<Fake>>) -> Json<Value> {
    fake.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let x = URL_SAFE_NO_PAD.encode(fake.published.verifying_key().as_bytes());
    Json(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid(&fake.published)}]}))
}

/// The stand-in on an ephemeral loopback port: its state and base URL.
async fn start() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake {
        published: SigningKey::from_bytes(&[1; 32]),
        unpublished: SigningKey::from_bytes(&[2; 32]),
        mode: Mutex::new(Mode::Valid),
        validates: AtomicUsize::new(0),
        jwks_fetches: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route(
            "/api/licenses/activate",
            post(|| async { (StatusCode::CREATED, Json(json!({}))) }),
        )
        .route("/api/licenses/validate", post(validate))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, base)
}

/// A clock the test moves forward by hand, on top of real time.
#[derive(Clone, Default)]
struct Skew(Arc<AtomicI64>);

impl Skew {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs() as i64, Ordering::SeqCst);
    }
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.0.load(Ordering::SeqCst) as u64)
    }
}

struct Setup {
    client: LicenseClient,
    fake: Arc<Fake>,
    skew: Skew,
    _dir: tempfile::TempDir,
}

/// A client activated against the stand-in, trusting `keys` (default: the published key).
async fn activated(keys: Option<PublicKeys>) -> Setup {
    let (fake, base) = start().await;
    let keys = keys.unwrap_or_else(|| {
        PublicKeys::new()
            .with_ed25519(fake.published.verifying_key().to_bytes())
            .unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let skew = Skew::default();
    let clock = skew.clone();
    let client = LicenseClient::builder()
        .base_url(base)
        .product(PRODUCT)
        .public_keys(keys)
        .cache_dir(dir.path())
        .machine_id("test-machine")
        .timeout(Duration::from_millis(500))
        .clock(move || clock.now())
        .build()
        .unwrap();
    let status = client
        .activate("ECOS-TEST", client.machine_fingerprint())
        .await
        .unwrap();
    assert!(matches!(status, Status::Valid(_)), "{status:?}");
    Setup {
        client,
        fake,
        skew,
        _dir: dir,
    }
}

fn reason(status: &Status) -> &OfflineReason {
    match status {
        Status::Offline { reason, .. } => reason,
        other => panic!("expected Offline, got {other:?}"),
    }
}

#[tokio::test]
async fn a_429_is_waited_out_for_as_long_as_retry_after_says() {
    let s = activated(None).await;
    assert_eq!(s.fake.validates(), 1, "activate validates once");
    s.fake.set(Mode::Busy(429, Some(30)));
    let status = s.client.check().await.unwrap();
    assert!(
        matches!(
            reason(&status),
            OfflineReason::ServerBusy { status: 429, .. }
        ),
        "{status:?}"
    );
    assert_eq!(s.fake.validates(), 2);
    for _ in 0..5 {
        let status = s.client.check().await.unwrap();
        assert!(
            matches!(reason(&status), OfflineReason::BackingOff { .. }),
            "{status:?}"
        );
    }
    assert_eq!(s.fake.validates(), 2, "not asked again within Retry-After");
    s.skew.advance(Duration::from_secs(31));
    s.fake.set(Mode::Valid);
    assert!(matches!(s.client.check().await.unwrap(), Status::Valid(_)));
    assert_eq!(s.fake.validates(), 3, "asked again once Retry-After passed");
}

#[tokio::test]
async fn a_5xx_backs_off_exponentially_and_a_success_resets_it() {
    let s = activated(None).await;
    s.fake.set(Mode::Busy(503, None));
    let mut asked = s.fake.validates();
    // Waits of 2.5–5 s, then 5–10 s, then 10–20 s: each window is passed by moving the clock
    // past its upper end, and each time exactly one request is made.
    for window in [5, 10, 20] {
        s.client.check().await.unwrap();
        asked += 1;
        assert_eq!(s.fake.validates(), asked);
        let status = s.client.check().await.unwrap();
        assert!(
            matches!(reason(&status), OfflineReason::BackingOff { .. }),
            "{status:?}"
        );
        assert_eq!(s.fake.validates(), asked, "backing off");
        s.skew.advance(Duration::from_secs(window + 1));
    }
    s.fake.set(Mode::Valid);
    assert!(matches!(s.client.check().await.unwrap(), Status::Valid(_)));
    s.fake.set(Mode::Busy(503, None));
    s.client.check().await.unwrap();
    s.skew.advance(Duration::from_secs(6));
    s.client.check().await.unwrap();
    assert_eq!(
        s.fake.validates(),
        asked + 3,
        "after a success the first wait is short again"
    );
}

#[tokio::test]
async fn an_unanswered_request_times_out_into_the_offline_lease() {
    let s = activated(None).await;
    s.fake.set(Mode::Hang);
    let status = s.client.check().await.unwrap();
    assert_eq!(reason(&status), &OfflineReason::TimedOut);
    assert!(status.is_valid());
}

#[tokio::test]
async fn an_unknown_kid_fetches_the_jwks_at_most_once_a_minute() {
    // Pinned: a key the stand-in never uses, so its published key is unknown at first.
    let unrelated = SigningKey::from_bytes(&[3; 32]).verifying_key();
    let s = activated(Some(
        PublicKeys::new()
            .with_ed25519(unrelated.to_bytes())
            .unwrap(),
    ))
    .await;
    assert_eq!(s.fake.jwks_fetches(), 1, "the published key was fetched");
    assert!(matches!(s.client.check().await.unwrap(), Status::Valid(_)));
    assert_eq!(s.fake.jwks_fetches(), 1, "a known kid needs no fetch");

    s.fake.set(Mode::UnpublishedKey);
    for _ in 0..3 {
        let err = s.client.check().await.unwrap_err();
        assert!(
            matches!(err, Error::TokenRefused(TokenError::UnknownKey(_))),
            "{err:?}"
        );
    }
    assert_eq!(
        s.fake.jwks_fetches(),
        1,
        "within a minute of the last fetch, no other"
    );
    s.skew.advance(Duration::from_secs(61));
    assert!(s.client.check().await.is_err());
    assert_eq!(s.fake.jwks_fetches(), 2, "a minute later, one more");
}
