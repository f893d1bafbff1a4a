//! The license hot path, piece by piece and whole.
//!
//! - `decide`: the pure decision on a realistic snapshot (should be tens of nanoseconds);
//! - `token/sign`: one fresh EdDSA license token (claims JSON + base64 + Ed25519: the ~25 µs that
//!   ARCHITECTURE.md says would cap the hot path if paid on every request);
//! - `token/answer_reuse`: `LicenseCache::valid_body` handing out the answer it rendered moments
//!   ago — the reuse that saves that signature (compare with `token/snapshot_nonce`, which must
//!   sign);
//! - `parts/*`: the other pieces of a validate on a cache hit — key parsing and digest, the snapshot
//!   cache lookup, the request and response JSON — to see where the in-process time goes;
//! - `http/*`: the whole in-process `POST /api/licenses/validate` through `ecosire::app` (router,
//!   middleware, JSON in and out, cache hit, decision, reused token) on SQLite in a tempdir, next to
//!   `GET /api/health` through the same stack as the floor.
//!
//! - `write/activate_sqlite`: a new device activated through the whole stack (one SQLite write
//!   transaction, its event, a signed token);
//! - `password/*`: Argon2id hashing and verifying, what a login or registration costs.
//!
//! Run: `cargo bench --bench validate -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use criterion::{Criterion, criterion_group, criterion_main};
use ecosire::config::Config;
use ecosire::jws::Signer;
use ecosire::licensing::cache::{LicenseCache, Snapshot};
use ecosire::licensing::decide::{self, Ask, LicenseState};
use ecosire::licensing::key::LicenseKey;
use ecosire::licensing::model::{Activation, LicenseRow, LicenseStatus};
use ecosire::licensing::token::{self, Subject};
use ecosire::licensing::validate::{ValidateRequest, ValidateResponse};
use ecosire::timestamp::{Timestamp, now_ms};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const ISSUER: &str = "ecosire";
const ADMIN_EMAIL: &str = "bench@bench.local";
const ADMIN_PASSWORD: &str = "bench-password-123";
/// Distinct licenses the in-process benchmark cycles through (all cached after the first round).
const LICENSES: usize = 64;

fn signer() -> Signer {
    Signer::new(ed25519_dalek::SigningKey::from_bytes(&[7; 32]), "JWT")
}

fn entitlements() -> Vec<String> {
    ["pro", "export", "cloud-sync", "priority-support"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A license row as the store would return it: active, a year left, three seats, two in use.
fn license_row(now: i64) -> LicenseRow {
    LicenseRow {
        id: "lic_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4".into(),
        key_digest: "9f".repeat(32),
        key_sealed: "sealed".into(),
        key_last4: "R8ZVN".into(),
        product_id: "prd_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4".into(),
        user_id: Some("usr_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4".into()),
        status: "active".into(),
        expires_at: Some(now + 365 * 86_400_000),
        max_activations: 3,
        entitlements: serde_json::to_string(&entitlements()).expect("json"),
        metadata: r#"{"order":"ord_123","seats_note":"team of three"}"#.into(),
        created_at: now - 30 * 86_400_000,
        updated_at: now - 86_400_000,
    }
}

fn activations(now: i64) -> Vec<Activation> {
    ["3f2a9c1e-machine-id", "77b0d4aa-laptop-id"]
        .iter()
        .enumerate()
        .map(|(i, fp)| Activation {
            id: format!("act_01JDZ8Q6W3M5X7Y9Z0A1B2C3D{i}"),
            license_id: "lic_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4".into(),
            fingerprint: fp.to_string(),
            name: Some("Workstation".into()),
            platform: Some("linux".into()),
            hostname: Some("ws-1".into()),
            created_at: Timestamp(now - 86_400_000),
            last_heartbeat_at: Timestamp(now - 60_000),
            offline_until: None,
        })
        .collect()
}

fn snapshot(now: i64) -> Snapshot {
    Snapshot::new(license_row(now), "desk".into(), 7, None, activations(now))
}

fn bench_decide(c: &mut Criterion) {
    let now = now_ms();
    let (ents, fingerprints) = (
        entitlements(),
        vec![
            "77b0d4aa-laptop-id".to_string(),
            "3f2a9c1e-machine-id".to_string(),
        ],
    );
    let state = LicenseState {
        status: LicenseStatus::Active,
        expires_at_ms: Some(now + 365 * 86_400_000),
        product_id: "prd_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4",
        product_slug: "desk",
        entitlements: &ents,
        fingerprints: &fingerprints,
    };
    // The full question, every check reached: product by slug, two entitlements, a device.
    let wanted = vec!["export".to_string(), "cloud-sync".to_string()];
    let ask = Ask {
        product: Some("desk"),
        entitlements: &wanted,
        fingerprint: Some("3f2a9c1e-machine-id"),
    };
    assert_eq!(decide::decide(Some(&state), &ask, now), decide::Code::Valid);
    c.bench_function("decide/valid_full_ask", |b| {
        b.iter(|| decide::decide(black_box(Some(&state)), black_box(&ask), black_box(now)))
    });
}

fn bench_token(c: &mut Criterion) {
    let signer = signer();
    let now = now_ms();
    let subject = Subject {
        license_id: "lic_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4".into(),
        product_id: "prd_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4".into(),
        entitlements: entitlements(),
        max_activations: 3,
        expires_at_ms: Some(now + 365 * 86_400_000),
        offline_lease_days: 7,
    };
    let snap = snapshot(now);
    // Prime the memo so every measured call below is a reuse.
    let cache = LicenseCache::default();
    let answer = |now| {
        cache.valid_body(
            &snap,
            &signer,
            ISSUER,
            Some("3f2a9c1e-machine-id"),
            now,
            |t| t.into_bytes(),
        )
    };
    let first = answer(now);
    assert_eq!(
        answer(now + 1),
        first,
        "an answer rendered moments ago is reused"
    );

    let mut g = c.benchmark_group("token");
    g.bench_function("sign", |b| {
        b.iter(|| {
            token::sign(
                black_box(&signer),
                ISSUER,
                black_box(&subject),
                black_box(Some("3f2a9c1e-machine-id")),
                None,
                black_box(now),
            )
        })
    });
    g.bench_function("answer_reuse", |b| b.iter(|| answer(black_box(now))));
    g.bench_function("snapshot_nonce", |b| {
        b.iter(|| {
            snap.sign(
                black_box(&signer),
                ISSUER,
                black_box(Some("3f2a9c1e-machine-id")),
                black_box(Some("n-0123456789")),
                black_box(now),
            )
        })
    });
    g.finish();
}

/// A server with an admin, one product and `LICENSES` licenses, driven in-process.
struct Bench {
    state: ecosire::AppState,
    router: Router,
    /// `POST /api/licenses/validate` bodies, one per license (key only; key + activated device).
    by_key: Vec<Bytes>,
    by_device: Vec<Bytes>,
    _dir: tempfile::TempDir,
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, Bytes) {
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

fn post(path: &str, body: Bytes, token: Option<&str>) -> Request<Body> {
    let mut b = Request::post(path).header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from(body)).expect("request")
}

async fn post_json(router: &Router, path: &str, body: Value, token: Option<&str>) -> Value {
    let (status, bytes) = send(router, post(path, Bytes::from(body.to_string()), token)).await;
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).expect("json")
}

async fn setup() -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        database_url: format!("sqlite://{}/b.db", dir.path().display()),
        keys_dir: dir.path().join("keys"),
        admin_email: Some(ADMIN_EMAIL.into()),
        admin_password: Some(ADMIN_PASSWORD.into()),
        cookie_secure: false,
        rate_limits: false,
        reaper_interval: Duration::from_secs(3600),
        ..Config::default()
    };
    let state = ecosire::build_state(config).await.expect("build state");
    ecosire::accounts::users::bootstrap_admin(&state)
        .await
        .expect("bootstrap admin");
    let router = ecosire::app(state.clone());
    let login = post_json(
        &router,
        "/api/auth/login",
        json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        None,
    )
    .await;
    let admin = login["token"].as_str().expect("session token").to_string();
    let product = post_json(
        &router,
        "/api/products",
        json!({"name": "Bench Desk", "slug": "bench-desk", "max_activations": 3,
               "duration_days": 365, "entitlements": ["pro", "export"]}),
        Some(&admin),
    )
    .await;
    let product_id = product["id"].as_str().expect("product id");
    let (mut by_key, mut by_device) = (vec![], vec![]);
    for i in 0..LICENSES {
        let lic = post_json(
            &router,
            "/api/licenses",
            json!({"product_id": product_id}),
            Some(&admin),
        )
        .await;
        let key = lic["key"].as_str().expect("license key");
        let fp = format!("bench-device-{i:04}");
        post_json(
            &router,
            "/api/licenses/activate",
            json!({"key": key, "fingerprint": fp}),
            None,
        )
        .await;
        by_key.push(Bytes::from(json!({"key": key}).to_string()));
        by_device.push(Bytes::from(
            json!({"key": key, "fingerprint": fp, "product": "bench-desk",
                   "entitlements": ["pro"]})
            .to_string(),
        ));
    }
    Bench {
        state,
        router,
        by_key,
        by_device,
        _dir: dir,
    }
}

/// Loads every snapshot and signs every token memo (both last 30–60 s), and checks that the
/// answers are the VALID ones we mean to measure. Run right before the timed requests.
async fn warm(bench: &Bench) {
    for body in bench.by_key.iter().chain(&bench.by_device) {
        let req = post("/api/licenses/validate", body.clone(), None);
        let (status, bytes) = send(&bench.router, req).await;
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert!(status == StatusCode::OK && v["valid"] == true, "{v}");
    }
}

fn bench_http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bench = rt.block_on(setup());
    let next = AtomicUsize::new(0);
    let pick =
        |bodies: &[Bytes]| bodies[next.fetch_add(1, Ordering::Relaxed) % bodies.len()].clone();

    let keys: Vec<String> = bench
        .by_key
        .iter()
        .map(|b| {
            let v: Value = serde_json::from_slice(b).expect("json");
            v["key"].as_str().expect("key").to_string()
        })
        .collect();
    let digests: Vec<[u8; 32]> = keys
        .iter()
        .map(|k| LicenseKey::parse(k).expect("key").digest())
        .collect();
    let snap = rt
        .block_on(bench.state.licenses.get(&bench.state.db, &digests[0]))
        .expect("cache")
        .expect("known key");
    let now = now_ms();
    let token = snap.sign(&bench.state.keys.signer(), ISSUER, None, None, now);

    let mut g = c.benchmark_group("parts");
    g.bench_function("key_parse_digest", |b| {
        b.iter(|| LicenseKey::parse(black_box(&keys[0])).map(|k| k.digest()))
    });
    g.bench_function("cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let d = &digests[next.fetch_add(1, Ordering::Relaxed) % digests.len()];
            bench.state.licenses.get(&bench.state.db, d).await
        })
    });
    g.bench_function("request_json", |b| {
        b.iter(|| serde_json::from_slice::<ValidateRequest>(black_box(&bench.by_device[0])))
    });
    g.bench_function("response_json", |b| {
        b.iter(|| {
            let res = ValidateResponse {
                valid: true,
                code: decide::Code::Valid,
                detail: decide::Code::Valid.detail(),
                license: Some(snap.view.clone()),
                activation: None,
                token: Some(token.clone()),
            };
            serde_json::to_vec(black_box(&res)).expect("json")
        })
    });
    g.finish();

    rt.block_on(warm(&bench));
    let mut g = c.benchmark_group("http");
    g.bench_function("health", |b| {
        b.to_async(&rt).iter(|| async {
            let req = Request::get("/api/health")
                .body(Body::empty())
                .expect("request");
            let (status, body) = send(&bench.router, req).await;
            debug_assert_eq!(status, StatusCode::OK);
            body
        })
    });
    g.bench_function("validate_key", |b| {
        b.to_async(&rt).iter(|| async {
            let req = post("/api/licenses/validate", pick(&bench.by_key), None);
            let (status, body) = send(&bench.router, req).await;
            debug_assert_eq!(status, StatusCode::OK);
            body
        })
    });
    g.bench_function("validate_device", |b| {
        b.to_async(&rt).iter(|| async {
            let req = post("/api/licenses/validate", pick(&bench.by_device), None);
            let (status, body) = send(&bench.router, req).await;
            debug_assert_eq!(status, StatusCode::OK);
            body
        })
    });
    g.finish();

    // Activation: the write path, one SQLite transaction per new device, on a license with room
    // for every device the benchmark brings.
    let key = rt.block_on(async {
        let login = post_json(
            &bench.router,
            "/api/auth/login",
            json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
            None,
        )
        .await;
        let admin = login["token"].as_str().expect("session token").to_string();
        let lic = post_json(
            &bench.router,
            "/api/licenses",
            json!({"product_id": snap.view.product_id, "max_activations": 1_000_000}),
            Some(&admin),
        )
        .await;
        lic["key"].as_str().expect("license key").to_string()
    });
    let device = AtomicUsize::new(0);
    let mut g = c.benchmark_group("write");
    g.bench_function("activate_sqlite", |b| {
        b.to_async(&rt).iter(|| async {
            let fp = format!("bench-new-{}", device.fetch_add(1, Ordering::Relaxed));
            let body = Bytes::from(json!({"key": key, "fingerprint": fp}).to_string());
            let (status, body) =
                send(&bench.router, post("/api/licenses/activate", body, None)).await;
            debug_assert_eq!(status, StatusCode::CREATED);
            body
        })
    });
    g.finish();
}

/// Password hashing (Argon2id, 19 MiB): what a login or registration costs, off the hot path.
fn bench_password(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let hasher = ecosire::accounts::passwords::Hasher::new(1, Duration::from_secs(30));
    let stored = rt
        .block_on(hasher.hash("correct horse battery".into()))
        .expect("hash");
    let mut g = c.benchmark_group("password");
    g.sample_size(10);
    g.bench_function("hash", |b| {
        b.to_async(&rt)
            .iter(|| async { hasher.hash("correct horse battery".into()).await })
    });
    g.bench_function("verify", |b| {
        b.to_async(&rt).iter(|| async {
            hasher
                .verify(Some(stored.clone()), "correct horse battery".into())
                .await
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_decide,
    bench_token,
    bench_http,
    bench_password
);
criterion_main!(benches);
