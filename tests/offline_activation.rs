//! Air-gapped activation: a signed request from the offline machine, a signed license file back,
//! a seat taken like any activation, released by the device's signed proof, an admin, or the end
//! of the lease. In-process through the API, and end to end with the real binary and the CLI.

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TestApp, now_ms, now_s};
use ecosire::licensing::offline::{self, LicenseFileClaims, RequestClaims};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

const DAY_S: i64 = 86_400;

fn s(v: &Value) -> String {
    v.as_str().expect("string").to_string()
}

fn device(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn request(device: &SigningKey, key: &str, fingerprint: &str, nonce: &str, iat: i64) -> String {
    offline::make_request(
        device,
        &RequestClaims {
            key: key.into(),
            fingerprint: fingerprint.into(),
            device_key: URL_SAFE_NO_PAD.encode(device.verifying_key().as_bytes()),
            nonce: nonce.into(),
            iat,
            name: Some("Lab PC".into()),
            platform: Some("linux".into()),
            hostname: None,
        },
    )
}

/// A license of a product that allows offline activation (lease 60 days) with `seats` seats.
async fn setup(app: &TestApp, seats: i64) -> (String, String) {
    let p = app
        .product(json!({"max_activations": seats, "offline_activation": true,
                        "offline_activation_lease_days": 60, "heartbeat_timeout_s": 30}))
        .await;
    assert_eq!(p["offline_activation"], true);
    assert_eq!(p["offline_activation_lease_days"], 60);
    let l = app.license(p["id"].as_str().unwrap(), json!({})).await;
    (s(&l["id"]), s(&l["key"]))
}

async fn activate_offline(app: &TestApp, text: &str) -> common::TestResponse {
    app.post(
        "/api/licenses/offline-activations",
        json!({"request": text}),
        None,
    )
    .await
}

/// Verifies a license file with the server's published keys, as an offline client would.
fn verify_file(app: &TestApp, file: &str) -> LicenseFileClaims {
    let keys = app.state.keys.published();
    ecosire::jws::verify(file, "JWT", |kid| {
        keys.iter().find(|(k, _)| k == kid).map(|(_, v)| *v)
    })
    .expect("the license file verifies with the JWKS")
}

#[tokio::test]
async fn a_request_becomes_a_license_file_bound_to_the_device_and_takes_a_seat() {
    let app = TestApp::new().await;
    let (id, key) = setup(&app, 1).await;
    let dev = device(1);
    let r = activate_offline(&app, &request(&dev, &key, "lab-pc", "n-1", now_s())).await;
    let body = r.expect(201).clone();
    assert_eq!(body["license"]["activations_count"], 1);
    assert_eq!(body["activation"]["fingerprint"], "lab-pc");
    assert_eq!(body["activation"]["name"], "Lab PC");
    let claims = verify_file(&app, body["license_file"].as_str().unwrap());
    assert_eq!(claims.token.sub, id);
    assert_eq!(claims.token.aud, "ecosire:license");
    assert_eq!(claims.token.fingerprint.as_deref(), Some("lab-pc"));
    assert_eq!(claims.token.nonce.as_deref(), Some("n-1"));
    assert_eq!(
        claims.cnf.jkt,
        ecosire::jws::thumbprint(&dev.verifying_key())
    );
    // The lease is the product's offline activation lease, not its 7-day token lease.
    assert!((claims.token.exp - (now_s() + 60 * DAY_S)).abs() <= 2);
    let until = body["activation"]["offline_until"].as_str().unwrap();
    assert_eq!(
        ecosire::timestamp::Timestamp::parse(until).unwrap().secs(),
        claims.token.exp
    );

    // A seat like any other: listed for the key holder, validates, and fills the license.
    let list = app
        .post("/api/licenses/activations", json!({"key": key}), None)
        .await;
    let listed = list.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["offline_until"], until);
    let v = app
        .validate(json!({"key": key, "fingerprint": "lab-pc"}))
        .await;
    assert_eq!(v["code"], "VALID");
    app.activate(&key, "other-pc")
        .await
        .expect_problem(409, "ACTIVATION_LIMIT_REACHED");
    let other = request(&device(2), &key, "other-lab-pc", "n-2", now_s());
    activate_offline(&app, &other)
        .await
        .expect_problem(409, "ACTIVATION_LIMIT_REACHED");

    // The same machine asking again (a new device key) renews its lease: 200, still one seat.
    let again = activate_offline(&app, &request(&device(3), &key, "lab-pc", "n-3", now_s())).await;
    assert_eq!(again.expect(200)["license"]["activations_count"], 1);
    let events: Vec<String> = sqlx::query_scalar("SELECT type FROM outbox ORDER BY id")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(
        events.iter().filter(|t| *t == "license.activated").count(),
        1
    );
}

#[tokio::test]
async fn only_the_device_key_of_the_activation_can_release_it() {
    let app = TestApp::new().await;
    let (id, key) = setup(&app, 2).await;
    let first = device(1);
    activate_offline(&app, &request(&first, &key, "lab-pc", "n", now_s()))
        .await
        .expect(201);
    let proof = |d: &SigningKey| offline::make_proof(d, &id, "lab-pc", now_s());
    let release = |text: String| {
        let app = &app;
        async move {
            app.post(
                "/api/licenses/offline-deactivations",
                json!({"proof": text}),
                None,
            )
            .await
        }
    };
    // Signed by another key: refused, nothing changes.
    let r = release(proof(&device(9))).await;
    r.expect_problem(422, "VALIDATION_FAILED");
    assert_eq!(common::fields(&r.body), vec!["proof"]);
    // A request is not a proof, even from the right key.
    release(request(&first, &key, "lab-pc", "n", now_s()))
        .await
        .expect_problem(422, "VALIDATION_FAILED");
    // The machine activated again with a new key: the old key's proofs no longer count.
    let second = device(2);
    activate_offline(&app, &request(&second, &key, "lab-pc", "n2", now_s()))
        .await
        .expect(200);
    release(proof(&first))
        .await
        .expect_problem(422, "VALIDATION_FAILED");
    assert_eq!(
        app.admin_get(&format!("/api/licenses/{id}"))
            .await
            .expect(200)["activations_count"],
        1
    );
    // The current key's proof frees the seat, once.
    release(proof(&second)).await.expect(204);
    assert_eq!(
        app.admin_get(&format!("/api/licenses/{id}"))
            .await
            .expect(200)["activations_count"],
        0
    );
    release(proof(&second))
        .await
        .expect_problem(404, "ACTIVATION_NOT_FOUND");
    // An online activation has no device key: no proof releases it.
    app.activate(&key, "lab-pc").await.expect(201);
    release(proof(&second))
        .await
        .expect_problem(404, "ACTIVATION_NOT_FOUND");
}

#[tokio::test]
async fn requests_are_refused_when_the_product_forbids_them_or_they_are_forged_or_stale() {
    let app = TestApp::new().await;
    let p = app.product(json!({})).await;
    assert_eq!(p["offline_activation"], false);
    let l = app.license(p["id"].as_str().unwrap(), json!({})).await;
    let dev = device(1);
    activate_offline(&app, &request(&dev, &s(&l["key"]), "pc", "n", now_s()))
        .await
        .expect_problem(403, "OFFLINE_ACTIVATION_DISABLED");

    let (_, key) = setup(&app, 1).await;
    activate_offline(
        &app,
        &request(&dev, "ECOS-00000-00000-00000-00000", "pc", "n", now_s()),
    )
    .await
    .expect_problem(404, "LICENSE_NOT_FOUND");
    // A payload swapped under another request's signature.
    let good = request(&dev, &key, "pc", "n", now_s());
    let other = request(&dev, &key, "pc-2", "n", now_s());
    let (h, rest) = good.split_once('.').unwrap();
    let sig = rest.split_once('.').unwrap().1;
    let payload = other.split('.').nth(1).unwrap();
    for bad in [
        format!("{h}.{payload}.{sig}"),
        request(&dev, &key, "pc", "n", now_s() - 31 * DAY_S),
        "not a request".to_string(),
    ] {
        let r = activate_offline(&app, &bad).await;
        r.expect_problem(422, "VALIDATION_FAILED");
        assert_eq!(common::fields(&r.body), vec!["request"], "{}", r.text);
    }
    // Nothing was activated by any of them.
    let list = app
        .post("/api/licenses/activations", json!({"key": key}), None)
        .await;
    assert_eq!(list.expect(200)["data"], json!([]));
}

#[tokio::test]
async fn the_reaper_leaves_offline_devices_alone_until_their_lease_ends() {
    let app = TestApp::new().await;
    let (id, key) = setup(&app, 2).await;
    activate_offline(&app, &request(&device(1), &key, "lab-pc", "n", now_s()))
        .await
        .expect(201);
    // Silent far past the product's heartbeat timeout (air-gapped devices never beat).
    sqlx::query("UPDATE activations SET last_heartbeat_at = $1")
        .bind(now_ms() - 3_600_000)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let reap = || ecosire::licensing::reaper::reap_silent_activations(&app.state);
    assert_eq!(reap().await.unwrap(), 0);
    // The lease ends: the seat is freed, and that does not count against the churn budget.
    sqlx::query("UPDATE activations SET offline_until = $1")
        .bind(now_ms() - 1000)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(reap().await.unwrap(), 1);
    let l = app.admin_get(&format!("/api/licenses/{id}")).await;
    assert_eq!(l.expect(200)["activations_count"], 0);
    assert_eq!(l.body["churn"]["deactivations_30d"], 0);
}

#[tokio::test]
async fn an_admin_can_release_an_offline_device() {
    let app = TestApp::new().await;
    let (id, key) = setup(&app, 1).await;
    let r = activate_offline(&app, &request(&device(1), &key, "lab-pc", "n", now_s())).await;
    let act = s(&r.expect(201)["activation"]["id"]);
    app.admin_delete(&format!("/api/activations/{act}"))
        .await
        .expect(204);
    let l = app.admin_get(&format!("/api/licenses/{id}")).await;
    assert_eq!(l.expect(200)["activations_count"], 0);
}

// ---------------------------------------------------------------------------------------------
// End to end: the real binary serving, the CLI on both sides.
// ---------------------------------------------------------------------------------------------

/// Runs `ecosire ARGS` (no server environment: these commands need none) and returns stdout,
/// failing with stderr when it does not succeed.
fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ecosire"))
        .env_clear()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run ecosire");
    assert!(
        out.status.success(),
        "ecosire {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn air_gapped_round_trip_with_the_binary_and_the_cli() {
    let server = common::process::Server::start(&[]).await;
    let http = reqwest::Client::new();
    let admin = server.admin_token(&http).await;
    let product = server.product(&http, &admin, 1).await;
    let (st, p) = server
        .call(
            &http,
            reqwest::Method::PATCH,
            &format!("/api/products/{product}"),
            Some(&admin),
            Some(&json!({"offline_activation": true, "offline_activation_lease_days": 30})),
        )
        .await;
    assert_eq!(st, 200, "{p}");
    let (id, key) = server.license(&http, &admin, &product).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The offline machine: a device key and a request.
    cli(
        d,
        &[
            "offline",
            "request",
            "--key",
            &key,
            "--fingerprint",
            "air-gapped-1",
            "--name",
            "Plant floor",
            "--device-key",
            "device.key",
            "--out",
            "request.txt",
        ],
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("device.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The connected machine: the request in, the license file out.
    cli(
        d,
        &[
            "offline",
            "activate",
            "--server",
            &server.base,
            "request.txt",
            "--out",
            "license.jws",
        ],
    );
    let file = std::fs::read_to_string(d.join("license.jws")).unwrap();
    // The seat is taken and the device is in the list.
    let (_, l) = server
        .get(&http, &format!("/api/licenses/{id}"), &admin)
        .await;
    assert_eq!(l["activations_count"], 1);
    let (_, list) = server
        .post(
            &http,
            "/api/licenses/activations",
            None,
            &json!({"key": key}),
        )
        .await;
    assert_eq!(list["data"][0]["fingerprint"], "air-gapped-1");
    assert_eq!(list["data"][0]["name"], "Plant floor");
    assert!(list["data"][0]["offline_until"].is_string());
    // The license file verifies offline with the server's public keys (the operator's tool).
    let verified = Command::new(env!("CARGO_BIN_EXE_ecosire"))
        .env_clear()
        .env("ECOSIRE_KEYS_DIR", server.keys_dir())
        .args(["license", "verify-token", file.trim()])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let claims: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(claims["fingerprint"], "air-gapped-1");
    assert_eq!(claims["sub"], id.as_str());

    // Giving it up: the proof on the offline machine, the release on the connected one.
    cli(
        d,
        &[
            "offline",
            "proof",
            "--license-file",
            "license.jws",
            "--device-key",
            "device.key",
            "--out",
            "proof.txt",
        ],
    );
    cli(
        d,
        &["offline", "release", "--server", &server.base, "proof.txt"],
    );
    let (_, l) = server
        .get(&http, &format!("/api/licenses/{id}"), &admin)
        .await;
    assert_eq!(l["activations_count"], 0);
    // A second release of the same proof is refused, with the server's reason.
    let out = Command::new(env!("CARGO_BIN_EXE_ecosire"))
        .env_clear()
        .current_dir(d)
        .args(["offline", "release", "--server", &server.base, "proof.txt"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ACTIVATION_NOT_FOUND"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The portal: the owner's license page carries the upload/download forms and the churn budget.
// ---------------------------------------------------------------------------------------------

async fn page(app: &TestApp, path: &str, session: &str) -> common::TestResponse {
    app.send(
        axum::http::Request::get(path)
            .header("cookie", format!("ecosire_auth={session}"))
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_license_page_offers_offline_activation_and_shows_the_churn_budget() {
    let app = TestApp::new().await;
    let (uid, _) = app.customer("ann@example.com").await;
    let p = app
        .product(json!({"offline_activation": true, "max_deactivations_per_30d": 2}))
        .await;
    let l = app
        .license(p["id"].as_str().unwrap(), json!({"user_id": uid}))
        .await;
    let (id, key) = (s(&l["id"]), s(&l["key"]));
    let r = activate_offline(&app, &request(&device(1), &key, "lab-pc", "n", now_s())).await;
    r.expect(201);
    app.activate(&key, "laptop").await.expect(201);
    app.post(
        "/api/licenses/deactivate",
        json!({"key": key, "fingerprint": "laptop"}),
        None,
    )
    .await
    .expect(204);

    let session = app.login("ann@example.com", "customer-pass-1").await;
    let r = page(&app, &format!("/dashboard/licenses/{id}"), &session).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    // Upload a request, download the license file; upload a proof: forms sent to the API.
    assert!(
        r.text
            .contains(r#"data-api="/api/licenses/offline-activations""#)
    );
    assert!(r.text.contains(r#"data-result="license_file""#));
    assert!(r.text.contains(r##"data-download="#license-file""##));
    assert!(
        r.text
            .contains(r#"data-api="/api/licenses/offline-deactivations""#)
    );
    assert!(r.text.contains(r##"data-file-into="#offline-request""##));
    assert!(!r.text.contains("<script>"), "no inline script");
    // The offline device is listed with its lease; the budget is shown; no reset for an owner.
    assert!(r.text.contains("lab-pc"));
    assert!(
        r.text
            .contains("1 of 2 deactivations used in the last 30 days")
    );
    assert!(!r.text.contains("/churn/reset"));
    // The admin's view of the same page can reset the count.
    let r = page(&app, &format!("/dashboard/licenses/{id}"), &app.admin_token).await;
    assert!(
        r.text
            .contains(&format!(r#"data-api="/api/licenses/{id}/churn/reset""#))
    );

    // A product without offline activation shows no such forms.
    let plain = app.product(json!({})).await;
    let l2 = app
        .license(plain["id"].as_str().unwrap(), json!({"user_id": uid}))
        .await;
    let r = page(
        &app,
        &format!("/dashboard/licenses/{}", s(&l2["id"])),
        &session,
    )
    .await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(!r.text.contains("offline-activations"));
}
