//! The Rust SDK (`sdks/rust`, crate `ecosire-client`) against the real `ecosire serve` binary:
//! activation, online and offline checks across a killed and restarted server, revocation, a
//! clock set back, a tampered cache file, a rate-limited server, a replayed answer, a rotated
//! signing key, heartbeats, and the blocking API. Runs on SQLite, and on PostgreSQL with
//! `ECOSIRE_TEST_DATABASE_URL`.
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use common::process::{Deployment, Server};
use ecosire_client::{
    ClientBuilder, Error, LicenseClient, OfflineReason, PublicKeys, Status, TokenError,
};
use serde_json::{Value, json};

/// A port of its own for each server, so that a restarted server is where the client expects it
/// (`Server::restart` keeps the environment, and so the address). Chosen below the kernel's
/// ephemeral range, where no outgoing connection or `:0` listener can take it between a kill and
/// the restart.
fn env_with_port(extra: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
    let port = (0..1000)
        .map(|_| rand::random::<u16>() % 12_000 + 20_000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 20000..32000");
    let mut env = vec![
        ("ECOSIRE_BIND".to_string(), format!("127.0.0.1:{port}")),
        // Tests run in parallel against one PostgreSQL: small pools.
        ("ECOSIRE_DB_MAX_CONNECTIONS".to_string(), "4".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn start_on(deployment: &Deployment, extra: &[(&'static str, &'static str)]) -> Server {
    let env = env_with_port(extra);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    deployment.start(&env).await
}

/// A server with one product (with `product` fields) and one license of it.
struct Licensed {
    server: Server,
    deployment: Deployment,
    http: reqwest::Client,
    admin: String,
    product_id: String,
    product_slug: String,
    license_id: String,
    key: String,
    /// The server's JWKS as the application ships it.
    jwks: String,
}

impl Licensed {
    async fn new(product: Value, env: &[(&'static str, &'static str)]) -> Licensed {
        let deployment = Deployment::new().await;
        let server = start_on(&deployment, env).await;
        let http = reqwest::Client::new();
        let admin = server.admin_token(&http).await;
        let p = server.product_with(&http, &admin, product).await;
        let product_id = p["id"].as_str().unwrap().to_string();
        let product_slug = p["slug"].as_str().unwrap().to_string();
        let (license_id, key) = server.license(&http, &admin, &product_id).await;
        let jwks = server.jwks(&http).await;
        Licensed {
            server,
            deployment,
            http,
            admin,
            product_id,
            product_slug,
            license_id,
            key,
            jwks,
        }
    }

    /// A new device with a client of this product (the builder's defaults, then `tweak`),
    /// activated.
    async fn activated(
        &self,
        tweak: impl FnOnce(ClientBuilder) -> ClientBuilder,
    ) -> (Device, LicenseClient) {
        let device = Device::new();
        let client = tweak(device.builder(self, &self.server.base))
            .build()
            .unwrap();
        let status = client
            .activate(&self.key, client.machine_fingerprint())
            .await
            .unwrap();
        assert!(matches!(status, Status::Valid(_)), "{status:?}");
        (device, client)
    }

    async fn revoke(&self) {
        let (st, r) = self
            .server
            .post(
                &self.http,
                &format!("/api/licenses/{}/revoke", self.license_id),
                Some(&self.admin),
                &json!({"reason": "sdk test"}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
    }

    async fn activations(&self) -> Vec<Value> {
        let (st, page) = self
            .server
            .get(
                &self.http,
                &format!("/api/licenses/{}/activations", self.license_id),
                &self.admin,
            )
            .await;
        assert_eq!(st, 200, "{page}");
        page["data"].as_array().unwrap().clone()
    }

    /// Requests to `route` the server has answered with `status` ("" for any), from its metrics.
    async fn answered(&self, route: &str, status: &str) -> f64 {
        let labels = if status.is_empty() {
            format!("route=\"{route}\"")
        } else {
            format!("route=\"{route}\",status=\"{status}\"")
        };
        self.server
            .metric(&self.http, "ecosire_http_requests_total", &labels)
            .await
    }
}

/// One machine: its cache folder and its clock.
struct Device {
    dir: tempfile::TempDir,
    clock: Skew,
}

impl Device {
    fn new() -> Device {
        Device {
            dir: tempfile::tempdir().unwrap(),
            clock: Skew::default(),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client builder for `l`'s product (by id) on this device, talking to `base` (the server,
    /// or something in between).
    fn builder(&self, l: &Licensed, base: &str) -> ClientBuilder {
        let clock = self.clock.clone();
        LicenseClient::builder()
            .base_url(base)
            .product(&l.product_id)
            .public_keys(PublicKeys::from_jwks(&l.jwks).unwrap())
            .cache_dir(self.dir())
            .timeout(Duration::from_secs(5))
            .clock(move || clock.now())
    }
}

/// The client's clock: real time moved by a signed offset the test sets.
#[derive(Clone, Default)]
struct Skew(Arc<AtomicI64>);

const DAY: i64 = 86_400;

impl Skew {
    fn set(&self, seconds: i64) {
        self.0.store(seconds, Ordering::SeqCst);
    }
    fn now(&self) -> SystemTime {
        let s = self.0.load(Ordering::SeqCst);
        let d = Duration::from_secs(s.unsigned_abs());
        if s >= 0 {
            SystemTime::now() + d
        } else {
            SystemTime::now() - d
        }
    }
}

#[track_caller]
fn grant(status: &Status) -> &ecosire_client::Grant {
    status
        .grant()
        .unwrap_or_else(|| panic!("expected a valid license, got {status:?}"))
}

#[track_caller]
fn offline(status: &Status) -> (SystemTime, &OfflineReason) {
    match status {
        Status::Offline { until, reason, .. } => (*until, reason),
        other => panic!("expected Offline, got {other:?}"),
    }
}

fn secs_between(a: SystemTime, b: SystemTime) -> i64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

#[tokio::test]
async fn activate_check_offline_restart_and_revoke() {
    let mut l = Licensed::new(
        json!({"entitlements": ["pro"], "offline_lease_days": 3}),
        &[],
    )
    .await;
    let device = Device::new();
    let client = device.builder(&l, &l.server.base).build().unwrap();
    let fingerprint = client.machine_fingerprint().to_string();

    let status = client.activate(&l.key, &fingerprint).await.unwrap();
    let Status::Valid(g) = &status else {
        panic!("{status:?}")
    };
    assert_eq!(g.license_id, l.license_id);
    assert_eq!(g.product_id, l.product_id);
    assert_eq!(g.fingerprint, fingerprint);
    assert!(g.has("pro"));
    let lease = secs_between(g.expires_at, g.issued_at);
    assert_eq!(lease, 3 * DAY, "the product's offline lease");
    let seats = l.activations().await;
    assert_eq!(seats.len(), 1);
    assert_eq!(seats[0]["fingerprint"], fingerprint.as_str());
    assert_eq!(seats[0]["platform"], std::env::consts::OS);

    let online = client.check().await.unwrap();
    assert!(matches!(online, Status::Valid(_)), "{online:?}");
    let until = grant(&online).expires_at;

    l.server.kill9();
    let status = client.check().await.unwrap();
    let (offline_until, reason) = offline(&status);
    assert_eq!(
        offline_until, until,
        "valid offline until the stored token's exp"
    );
    assert!(
        matches!(reason, OfflineReason::Unreachable(_)),
        "{reason:?}"
    );
    assert_eq!(grant(&status).license_id, l.license_id);

    l.server.restart().await;
    let status = client.check().await.unwrap();
    assert!(matches!(status, Status::Valid(_)), "{status:?}");

    l.revoke().await;
    let status = client.check().await.unwrap();
    assert!(
        matches!(&status, Status::Invalid { code, .. } if code == "REVOKED"),
        "{status:?}"
    );
    assert!(!status.is_valid());
    // The token was dropped with the invalid answer: offline is no way around a revocation.
    l.server.kill9();
    let err = client.check().await.unwrap_err();
    assert!(matches!(err, Error::NoStoredToken { .. }), "{err:?}");
}

#[tokio::test]
async fn a_clock_set_back_fails_offline_checks_with_clock_rollback() {
    let mut l = Licensed::new(json!({"offline_lease_days": 7}), &[]).await;
    let (device, client) = l.activated(|b| b).await;
    let clock = &device.clock;
    l.server.kill9();

    let check = || async { client.check().await };
    // Within the tolerance (an hour by default), a slow clock is only a slow clock.
    clock.set(-600);
    grant(&check().await.unwrap());
    // Two days before the server's own time of signing: never silently valid.
    clock.set(-2 * DAY);
    let err = check().await.unwrap_err();
    assert!(matches!(err, Error::ClockRollback { .. }), "{err:?}");
    // Three days on: still within the lease, and that time is now the high-water mark …
    clock.set(3 * DAY);
    grant(&check().await.unwrap());
    // … so winding the clock back to live the same days again is caught too.
    clock.set(DAY);
    let err = check().await.unwrap_err();
    let Error::ClockRollback { now, trusted } = err else {
        panic!("{err:?}")
    };
    assert!(secs_between(trusted, now) >= 2 * DAY - 5);
    // Past the lease: over, whatever the network says.
    clock.set(8 * DAY);
    let err = check().await.unwrap_err();
    assert!(matches!(err, Error::OfflineExpired { .. }), "{err:?}");

    // Online, the server is the authority on time: a wrong clock does not stop a valid answer,
    // and the high-water mark becomes the server's time.
    l.server.restart().await;
    clock.set(-2 * DAY);
    assert!(matches!(check().await.unwrap(), Status::Valid(_)));
    l.server.kill9();
    let err = check().await.unwrap_err();
    assert!(matches!(err, Error::ClockRollback { .. }), "{err:?}");
    clock.set(0);
    grant(&check().await.unwrap());
}

#[tokio::test]
async fn a_tampered_cache_file_is_refused_offline_and_replaced_online() {
    let mut l = Licensed::new(json!({}), &[]).await;
    let (_device, client) = l.activated(|b| b).await;
    l.server.kill9();
    grant(&client.check().await.unwrap());
    let original = std::fs::read(client.cache_file()).unwrap();
    let file: Value = serde_json::from_slice(&original).unwrap();

    let token = file["record"]["token"].as_str().unwrap().to_string();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1])
            .unwrap(),
    )
    .unwrap();
    claims["exp"] = (claims["exp"].as_i64().unwrap() + 365 * DAY).into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            claims.to_string()
        ),
        parts[2]
    );
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut f = file.clone();
        edit(&mut f);
        f
    };
    let cases = [
        (
            "lease extended in the token",
            edited(&|f| f["record"]["token"] = forged.clone().into()),
        ),
        (
            "high-water mark lowered",
            edited(&|f| {
                f["record"]["trusted_time"] = 0.into();
                f["record"]["seen_time"] = 0.into();
            }),
        ),
        ("seal removed", edited(&|f| f["mac"] = "".into())),
        ("not a cache file", json!("garbage")),
    ];
    for (what, tampered) in &cases {
        std::fs::write(client.cache_file(), tampered.to_string()).unwrap();
        let err = client.check().await.unwrap_err();
        assert!(matches!(err, Error::CacheRefused(_)), "{what}: {err:?}");
    }

    // The same file on another machine (another machine id): refused too.
    let elsewhere = Device::new();
    let copy = elsewhere
        .builder(&l, &l.server.base)
        .machine_id("another-machine")
        .build()
        .unwrap();
    std::fs::write(copy.cache_file(), &original).unwrap();
    let err = copy.check().await.unwrap_err();
    assert!(matches!(err, Error::CacheRefused(_)), "{err:?}");

    // Untouched, the file is trusted again (the refusals were about the edits).
    std::fs::write(client.cache_file(), &original).unwrap();
    grant(&client.check().await.unwrap());

    // A damaged file does not lock a machine out: the server decides, and its answer is stored
    // sealed anew.
    let damaged = edited(&|f| f["record"]["seen_time"] = 0.into());
    std::fs::write(client.cache_file(), damaged.to_string()).unwrap();
    l.server.restart().await;
    assert!(matches!(client.check().await.unwrap(), Status::Valid(_)));
    l.server.kill9();
    grant(&client.check().await.unwrap());
}

#[tokio::test]
async fn a_rate_limited_server_is_not_hammered_and_the_stored_token_answers() {
    let l = Licensed::new(json!({}), &[("ECOSIRE_RATE_LIMIT_VALIDATE", "1/min")]).await;
    // Activation's validate is the one the minute allows.
    let (device, client) = l.activated(|b| b).await;
    let clock = &device.clock;

    let status = client.check().await.unwrap();
    let (_, reason) = offline(&status);
    let OfflineReason::ServerBusy {
        status: 429,
        retry_at,
    } = *reason
    else {
        panic!("{reason:?}")
    };
    let wait = secs_between(retry_at, SystemTime::now());
    assert!((30..=61).contains(&wait), "Retry-After honoured: {wait} s");

    for _ in 0..10 {
        let status = client.check().await.unwrap();
        let (_, reason) = offline(&status);
        assert_eq!(reason, &OfflineReason::BackingOff { retry_at });
    }
    let validate = "/api/licenses/validate";
    assert_eq!(l.answered(validate, "200").await, 1.0);
    assert_eq!(
        l.answered(validate, "429").await,
        1.0,
        "eleven checks, one refused request"
    );

    // Once the client's clock is past Retry-After it asks again — once.
    clock.set(62);
    grant(&client.check().await.unwrap());
    grant(&client.check().await.unwrap());
    assert_eq!(l.answered(validate, "").await, 3.0);
}

/// A man in the middle that passes everything to the server but answers every validate after
/// the first with the first one's recorded answer.
async fn replaying_proxy(upstream: String) -> String {
    #[derive(Clone)]
    struct Proxy {
        upstream: String,
        recorded: Arc<Mutex<Option<Bytes>>>,
        http: reqwest::Client,
    }
    async fn forward(
        State(p): State<Proxy>,
        method: Method,
        uri: Uri,
        body: Bytes,
    ) -> axum::response::Response {
        let is_validate = uri.path() == "/api/licenses/validate";
        if is_validate && let Some(answer) = p.recorded.lock().unwrap().clone() {
            return ([("content-type", "application/json")], answer).into_response();
        }
        let res = p
            .http
            .request(method, format!("{}{uri}", p.upstream))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(res.status().as_u16()).unwrap();
        let bytes = res.bytes().await.unwrap();
        if is_validate {
            *p.recorded.lock().unwrap() = Some(bytes.clone());
        }
        (status, [("content-type", "application/json")], bytes).into_response()
    }
    let proxy = Proxy {
        upstream,
        recorded: Arc::default(),
        http: reqwest::Client::new(),
    };
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn a_replayed_answer_is_refused_and_changes_nothing() {
    let mut l = Licensed::new(json!({}), &[]).await;
    let proxy = replaying_proxy(l.server.base.clone()).await;
    let device = Device::new();
    let client = device.builder(&l, &proxy).build().unwrap();
    client
        .activate(&l.key, client.machine_fingerprint())
        .await
        .unwrap();
    let stored = std::fs::read(client.cache_file()).unwrap();

    // The license is revoked; the proxy keeps showing the old "valid" answer.
    l.revoke().await;
    let err = client.check().await.unwrap_err();
    assert!(matches!(err, Error::ReplayedAnswer), "{err:?}");
    assert_eq!(std::fs::read(client.cache_file()).unwrap(), stored);

    // The real server, asked directly, has the last word.
    let direct = device.builder(&l, &l.server.base).build().unwrap();
    let status = direct.check().await.unwrap();
    assert!(
        matches!(&status, Status::Invalid { code, .. } if code == "REVOKED"),
        "{status:?}"
    );
    l.server.kill9();
    assert!(matches!(
        direct.check().await.unwrap_err(),
        Error::NoStoredToken { .. }
    ));
}

#[tokio::test]
async fn a_rotated_signing_key_is_fetched_once_and_trusted_only_in_memory() {
    let mut l = Licensed::new(json!({}), &[]).await;
    let jwks = "/.well-known/jwks.json";
    let fetched_by_the_test = l.answered(jwks, "").await;
    let (device, client) = l.activated(|b| b).await;
    assert_eq!(
        l.answered(jwks, "").await,
        fetched_by_the_test,
        "pinned keys need no fetch"
    );

    // A new key signs after the restart; the application still pins only the old one.
    ecosire::keyring::add_license_key(&l.deployment.keys_dir).unwrap();
    l.server.restart().await;
    for _ in 0..3 {
        assert!(matches!(client.check().await.unwrap(), Status::Valid(_)));
    }
    // (The restarted server's metrics start from zero.)
    assert_eq!(
        l.answered(jwks, "200").await,
        1.0,
        "fetched once, then known"
    );

    // Offline in the same run, the fetched key verifies the stored token …
    l.server.kill9();
    grant(&client.check().await.unwrap());
    // … but after a restart of the application only pinned keys count: a key read back from
    // a file on the user's disk would be a key anyone could replace.
    let restarted = device.builder(&l, &l.server.base).build().unwrap();
    let err = restarted.check().await.unwrap_err();
    assert!(
        matches!(err, Error::TokenRefused(TokenError::UnknownKey(_))),
        "{err:?}"
    );
}

/// Waits (bounded) until the heartbeat report satisfies `done`.
async fn report_until(
    rx: &mut tokio::sync::watch::Receiver<ecosire_client::HeartbeatReport>,
    done: impl FnMut(&ecosire_client::HeartbeatReport) -> bool,
) -> ecosire_client::HeartbeatReport {
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(done))
        .await
        .expect("heartbeat report in time")
        .expect("heartbeat task alive")
        .clone()
}

#[tokio::test]
async fn heartbeats_keep_the_seat_alive_and_shutdown_frees_it() {
    let l = Licensed::new(json!({"heartbeat_timeout_s": 90}), &[]).await;
    let (device, client) = l
        .activated(|b| {
            b.heartbeat_interval(Duration::from_millis(50))
                .deactivate_on_shutdown(true)
        })
        .await;
    // Without a configured interval: a third of the product's heartbeat timeout.
    let derived = device.builder(&l, &l.server.base).build().unwrap();
    assert_eq!(
        derived.heartbeat_interval().await.unwrap(),
        Duration::from_secs(30)
    );
    let first_beat = l.activations().await[0]["last_heartbeat_at"].clone();
    let mut reports = client.start_heartbeat();
    let report = report_until(&mut reports, |r| r.beats >= 3).await;
    assert_eq!(report.failures, 0, "{report:?}");
    assert_eq!(report.interval, Some(Duration::from_millis(50)));
    let seats = l.activations().await;
    assert_ne!(seats[0]["last_heartbeat_at"], first_beat, "{seats:?}");

    client.shutdown().await.unwrap();
    assert!(l.activations().await.is_empty(), "the seat was freed");
    let err = client.check().await.unwrap_err();
    assert!(matches!(err, Error::NotActivated), "{err:?}");
}

#[tokio::test]
async fn a_refused_heartbeat_drops_the_stored_token() {
    let mut l = Licensed::new(json!({}), &[]).await;
    let (_device, client) = l
        .activated(|b| b.heartbeat_interval(Duration::from_millis(50)))
        .await;
    let mut reports = client.start_heartbeat();
    report_until(&mut reports, |r| r.beats >= 1).await;
    l.revoke().await;
    let report = report_until(&mut reports, |r| r.failures >= 1).await;
    assert!(
        report
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("LICENSE_REVOKED")),
        "{report:?}"
    );
    // The refusal triggered a check, which dropped the token: offline nothing is left.
    client.shutdown().await.unwrap();
    l.server.kill9();
    let err = client.check().await.unwrap_err();
    assert!(matches!(err, Error::NoStoredToken { .. }), "{err:?}");
}

#[test]
fn the_blocking_client_needs_no_runtime_of_the_applications() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut l = rt.block_on(Licensed::new(json!({}), &[]));
    let device = Device::new();
    // The product by slug, this time: the id comes from the server's signed answer.
    let client = device
        .builder(&l, &l.server.base)
        .product(&l.product_slug)
        .heartbeat_interval(Duration::from_millis(50))
        .build_blocking()
        .unwrap();
    let status = client
        .activate(&l.key, client.machine_fingerprint())
        .unwrap();
    assert!(matches!(status, Status::Valid(_)), "{status:?}");
    assert_eq!(grant(&status).product_id, l.product_id);
    assert!(matches!(client.check().unwrap(), Status::Valid(_)));

    // Heartbeats run on the client's own thread while this one does something else.
    let mut reports = client.start_heartbeat();
    rt.block_on(report_until(&mut reports, |r| r.beats >= 2));
    client.shutdown().unwrap();

    l.server.kill9();
    let status = client.check().unwrap();
    offline(&status);
    assert_eq!(grant(&status).product_id, l.product_id);
}
