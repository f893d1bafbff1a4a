mod common;

// The license hot path over HTTP (API.md § "The license hot path"): every validate code, signed
// tokens checked by an independent JWT library, key rotation, activation and its seat limit
// under real concurrency, deactivate / heartbeat / the self-service list, the release of silent
// activations, cache invalidation after admin changes, and the events written to the outbox.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::TestApp;
use common::now_ms;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Well-formed (Crockford base32, right length) but never issued.
const UNKNOWN_KEY: &str = "ECOS-ABCDE-FGHJK-MNPQR-STVWX";
const DAY_MS: i64 = 86_400_000;
const AUDIENCE: &str = "ecosire:license";
const ISSUER: &str = "ecosire";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Unix milliseconds as an RFC 3339 string, for request bodies.
fn rfc3339(ms: i64) -> String {
    ecosire::timestamp::Timestamp(ms).to_rfc3339()
}

/// A whole-second instant `days` from now (negative: in the past), in milliseconds.
fn days_from_now_ms(days: i64) -> i64 {
    (now_ms() + days * DAY_MS) / 1000 * 1000
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_string()
}

/// (product id, license id, key) of a fresh product with one license.
async fn setup(app: &TestApp, product: Value, license: Value) -> (String, String, String) {
    let (p, l) = app.product_and_license(product, license).await;
    (str_of(&p["id"]), str_of(&l["id"]), str_of(&l["key"]))
}

/// Asserts the invariants of a validate answer for `code` and returns it.
#[track_caller]
fn assert_answer<'a>(v: &'a Value, code: &str) -> &'a Value {
    let obj = v.as_object().expect("validate answers an object");
    for member in ["valid", "code", "detail", "license", "activation", "token"] {
        assert!(obj.contains_key(member), "missing `{member}` in {v}");
    }
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["valid"], code == "VALID", "{v}");
    assert!(
        v["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail: {v}"
    );
    if code == "VALID" {
        assert!(
            v["token"].is_string(),
            "a valid answer carries a token: {v}"
        );
    } else {
        assert!(v["token"].is_null(), "only a valid answer has a token: {v}");
    }
    if code == "NOT_FOUND" {
        assert!(v["license"].is_null(), "{v}");
        assert!(v["activation"].is_null(), "{v}");
    } else {
        assert!(v["license"]["id"].is_string(), "license shown: {v}");
        assert!(
            v["license"].get("key").is_none(),
            "validate never shows the key: {v}"
        );
    }
    v
}

/// Validates and checks the answer's invariants for `code`.
async fn validate_expect(app: &TestApp, body: Value, code: &str) -> Value {
    let v = app.validate(body).await;
    assert_answer(&v, code);
    v
}

async fn code_of(app: &TestApp, body: Value) -> String {
    str_of(&app.validate(body).await["code"])
}

async fn jwks_of(app: &TestApp) -> Value {
    app.get("/.well-known/jwks.json", None)
        .await
        .expect(200)
        .clone()
}

/// Verifies a license token with `jsonwebtoken` and the JWK `x`; returns the claims.
fn verify_with_x(token: &str, x: &str) -> jsonwebtoken::errors::Result<Value> {
    let key = DecodingKey::from_ed_components(x)?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[AUDIENCE]);
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &v).map(|d| d.claims)
}

/// Verifies a license token against a JWKS (key chosen by `kid`), checking the header too.
#[track_caller]
fn verify(token: &str, jwks: &Value) -> Value {
    let header = jsonwebtoken::decode_header(token).expect("a JWS header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let kid = header.kid.expect("kid in header");
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWKS {jwks}"));
    verify_with_x(token, jwk["x"].as_str().expect("x")).expect("token verifies")
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

/// The RFC 7638 thumbprint of an Ed25519 JWK, computed here independently of the server.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

async fn outbox_types(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT type FROM outbox ORDER BY created_at, id")
        .fetch_all(&app.state.db.pool)
        .await
        .expect("outbox types")
}

async fn outbox_payloads(app: &TestApp, kind: &str) -> Vec<Value> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE type = $1 ORDER BY created_at, id")
            .bind(kind)
            .fetch_all(&app.state.db.pool)
            .await
            .expect("outbox payloads");
    rows.iter()
        .map(|p| serde_json::from_str(p).expect("payload is JSON"))
        .collect()
}

async fn activation_rows(app: &TestApp, license_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM activations WHERE license_id = $1")
        .bind(license_id)
        .fetch_one(&app.state.db.pool)
        .await
        .expect("count activations")
}

/// Moves one device's last heartbeat to `at_ms`, behind the server's back, and drops the cache.
async fn set_last_heartbeat(app: &TestApp, license_id: &str, fingerprint: &str, at_ms: i64) {
    let n = sqlx::query(
        "UPDATE activations SET last_heartbeat_at = $1 WHERE license_id = $2 AND fingerprint = $3",
    )
    .bind(at_ms)
    .bind(license_id)
    .bind(fingerprint)
    .execute(&app.state.db.pool)
    .await
    .expect("update heartbeat")
    .rows_affected();
    assert_eq!(n, 1, "one activation of {fingerprint}");
    app.state.licenses.invalidate_all_local();
}

/// The forms of a key a leak would show: canonical, compact and the random body alone.
fn key_forms(key: &str) -> Vec<String> {
    let compact = key.replace('-', "");
    let body = compact.trim_start_matches("ECOS").to_string();
    vec![key.to_string(), compact, body]
}

// ---------------------------------------------------------------------------------------------
// 1. Validate: every code
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn validate_unknown_and_malformed_keys_answer_not_found() {
    let app = TestApp::new().await;
    for key in [
        UNKNOWN_KEY,
        "hello",
        "",
        "ECOS-ABCDE",
        "ECOS-ABCDE-FGHJK-MNPQR-STVWX-YZ012",
        "ECOS-ABCDE-FGHJK-MNPQR-STVWU", // U is not Crockford base32
        "not a key at all; DROP TABLE licenses",
    ] {
        let v = validate_expect(&app, json!({"key": key}), "NOT_FOUND").await;
        assert_eq!(v["valid"], false);
        // A fingerprint does not change the answer for an unknown key.
        let v = validate_expect(
            &app,
            json!({"key": key, "fingerprint": "fp-1", "product": "whatever", "nonce": "n"}),
            "NOT_FOUND",
        )
        .await;
        assert!(v["activation"].is_null());
    }
}

#[tokio::test]
async fn validate_accepts_lowercase_undashed_and_padded_keys() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(&app, json!({}), json!({})).await;
    assert!(key.starts_with("ECOS-") && key.len() == 28, "{key}");
    let compact = key.replace('-', "");
    for variant in [
        key.clone(),
        key.to_lowercase(),
        compact.clone(),
        compact.to_lowercase(),
        format!("  {key}  "),
        format!("\t{}\n", key.to_lowercase()),
    ] {
        let v = validate_expect(&app, json!({"key": variant}), "VALID").await;
        assert_eq!(v["license"]["id"], id.as_str(), "variant {variant:?}");
        assert!(v["activation"].is_null());
    }
    // The other hot-path endpoints normalise the same way.
    app.activate(&key.to_lowercase(), "fp-1").await.expect(201);
    app.activate(&format!(" {compact} "), "fp-1")
        .await
        .expect(200);
}

#[tokio::test]
async fn validate_answers_revoked_and_suspended() {
    let app = TestApp::new().await;
    let (pid, suspended_id, suspended_key) = setup(&app, json!({}), json!({})).await;
    let revoked = app.license(&pid, json!({})).await;
    let (revoked_id, revoked_key) = (str_of(&revoked["id"]), str_of(&revoked["key"]));

    let r = app
        .admin_post(
            &format!("/api/licenses/{revoked_id}/revoke"),
            json!({"reason": "chargeback"}),
        )
        .await;
    assert_eq!(r.expect(200)["license"]["status"], "revoked");
    let v = validate_expect(&app, json!({"key": revoked_key}), "REVOKED").await;
    assert_eq!(v["license"]["status"], "revoked");
    assert_eq!(v["license"]["id"], revoked_id.as_str());

    let r = app
        .admin_post(&format!("/api/licenses/{suspended_id}/suspend"), json!({}))
        .await;
    assert_eq!(r.expect(200)["license"]["status"], "suspended");
    let v = validate_expect(&app, json!({"key": suspended_key}), "SUSPENDED").await;
    assert_eq!(v["license"]["status"], "suspended");
}

#[tokio::test]
async fn validate_answers_expired_while_status_stays_active() {
    let app = TestApp::new().await;
    let past = days_from_now_ms(-1);
    let (_, id, key) = setup(&app, json!({}), json!({"expires_at": rfc3339(past)})).await;
    let v = validate_expect(&app, json!({"key": key}), "EXPIRED").await;
    assert_eq!(v["license"]["status"], "active");
    assert_eq!(v["license"]["expires_at"], rfc3339(past).as_str());
    let got = app.admin_get(&format!("/api/licenses/{id}")).await;
    assert_eq!(got.expect(200)["status"], "active");
}

#[tokio::test]
async fn validate_answers_product_mismatch_by_id_and_by_slug() {
    let app = TestApp::new().await;
    let slug = format!("desk-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let (pid, _, key) = setup(&app, json!({"slug": slug}), json!({})).await;
    let other = app.product(json!({"slug": "other-product"})).await;
    let other_id = str_of(&other["id"]);

    validate_expect(&app, json!({"key": key, "product": pid}), "VALID").await;
    validate_expect(&app, json!({"key": key, "product": slug}), "VALID").await;
    for product in [other_id.as_str(), "other-product", "no-such-product"] {
        let v = validate_expect(
            &app,
            json!({"key": key, "product": product}),
            "PRODUCT_MISMATCH",
        )
        .await;
        assert_eq!(v["license"]["product_id"], pid.as_str());
    }
}

#[tokio::test]
async fn validate_answers_entitlements_missing() {
    let app = TestApp::new().await;
    let (pid, _, key) = setup(&app, json!({"entitlements": ["pro", "export"]}), json!({})).await;
    let custom = app.license(&pid, json!({"entitlements": ["basic"]})).await;
    let custom_key = str_of(&custom["key"]);

    validate_expect(&app, json!({"key": key, "entitlements": []}), "VALID").await;
    validate_expect(&app, json!({"key": key, "entitlements": ["pro"]}), "VALID").await;
    validate_expect(
        &app,
        json!({"key": key, "entitlements": ["export", "pro"]}),
        "VALID",
    )
    .await;
    validate_expect(
        &app,
        json!({"key": key, "entitlements": ["pro", "enterprise"]}),
        "ENTITLEMENTS_MISSING",
    )
    .await;
    // A license's own entitlements replace the product's.
    let v = validate_expect(
        &app,
        json!({"key": custom_key, "entitlements": ["pro"]}),
        "ENTITLEMENTS_MISSING",
    )
    .await;
    assert_eq!(v["license"]["entitlements"], json!(["basic"]));
    validate_expect(
        &app,
        json!({"key": custom_key, "entitlements": ["basic"]}),
        "VALID",
    )
    .await;
}

#[tokio::test]
async fn validate_checks_the_fingerprint_against_live_activations() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(&app, json!({}), json!({})).await;
    let v = validate_expect(
        &app,
        json!({"key": key, "fingerprint": "fp-1"}),
        "FINGERPRINT_NOT_ACTIVATED",
    )
    .await;
    assert!(v["activation"].is_null());

    let r = app
        .post(
            "/api/licenses/activate",
            json!({"key": key, "fingerprint": "fp-1", "name": "Work laptop", "platform": "linux", "hostname": "box-1"}),
            None,
        )
        .await;
    let activation = r.expect(201)["activation"].clone();

    let v = validate_expect(&app, json!({"key": key, "fingerprint": "fp-1"}), "VALID").await;
    assert_eq!(v["activation"], activation);
    assert_eq!(v["activation"]["license_id"], id.as_str());
    assert_eq!(v["activation"]["fingerprint"], "fp-1");
    assert_eq!(v["activation"]["name"], "Work laptop");
    assert_eq!(v["activation"]["platform"], "linux");
    assert_eq!(v["activation"]["hostname"], "box-1");
    assert_eq!(v["license"]["activations_count"], 1);

    // Another device is still not activated; no fingerprint at all is fine.
    validate_expect(
        &app,
        json!({"key": key, "fingerprint": "fp-2"}),
        "FINGERPRINT_NOT_ACTIVATED",
    )
    .await;
    let v = validate_expect(&app, json!({"key": key}), "VALID").await;
    assert!(v["activation"].is_null());
}

#[tokio::test]
async fn validate_precedence_revoked_beats_expired() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(
        &app,
        json!({}),
        json!({"expires_at": rfc3339(days_from_now_ms(-3))}),
    )
    .await;
    validate_expect(&app, json!({"key": key}), "EXPIRED").await;
    app.admin_post(&format!("/api/licenses/{id}/revoke"), json!({}))
        .await
        .expect(200);
    validate_expect(
        &app,
        json!({"key": key, "product": "nope", "entitlements": ["x"], "fingerprint": "fp"}),
        "REVOKED",
    )
    .await;
}

#[tokio::test]
async fn validate_refuses_malformed_fields_with_422() {
    let app = TestApp::new().await;
    let (_, _, key) = setup(&app, json!({}), json!({})).await;
    for body in [
        json!({"key": key, "fingerprint": ""}),
        json!({"key": key, "fingerprint": "f".repeat(256)}),
        json!({"key": key, "nonce": "n".repeat(65)}),
        json!({"fingerprint": "fp"}),
    ] {
        app.post("/api/licenses/validate", body, None)
            .await
            .expect_problem(422, "VALIDATION_FAILED");
    }
    // The limits themselves are accepted.
    validate_expect(
        &app,
        json!({"key": key, "fingerprint": "f".repeat(255)}),
        "FINGERPRINT_NOT_ACTIVATED",
    )
    .await;
    validate_expect(&app, json!({"key": key, "nonce": "n".repeat(64)}), "VALID").await;
}

// ---------------------------------------------------------------------------------------------
// 2. Tokens, verified with an independent JWT library
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn jwks_is_published_at_both_paths_with_rfc7638_kids() {
    let app = TestApp::new().await;
    let well_known = jwks_of(&app).await;
    let api = app
        .get("/api/licenses/jwks", None)
        .await
        .expect(200)
        .clone();
    assert_eq!(well_known, api);
    let keys = well_known["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k["kty"], "OKP");
    assert_eq!(k["crv"], "Ed25519");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["alg"], "EdDSA");
    let x = str_of(&k["x"]);
    assert_eq!(URL_SAFE_NO_PAD.decode(&x).expect("base64url x").len(), 32);
    assert_eq!(k["kid"], thumbprint(&x).as_str());
    assert!(k.get("d").is_none(), "no private part is published");
}

#[tokio::test]
async fn validate_token_verifies_and_carries_the_claims() {
    let app = TestApp::new().await;
    let expires = days_from_now_ms(30);
    let (pid, id, key) = setup(
        &app,
        json!({"max_activations": 4, "entitlements": ["pro", "export"], "offline_lease_days": 7}),
        json!({"expires_at": rfc3339(expires)}),
    )
    .await;
    let jwks = jwks_of(&app).await;
    let kid = str_of(&jwks["keys"][0]["kid"]);

    let before = now_ms() / 1000;
    let v = validate_expect(&app, json!({"key": key}), "VALID").await;
    let after = now_ms() / 1000;
    let token = str_of(&v["token"]);
    assert_eq!(kid_of(&token), kid);
    let c = verify(&token, &jwks);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], AUDIENCE);
    assert_eq!(c["sub"], id.as_str());
    assert_eq!(c["product"], pid.as_str());
    assert_eq!(c["entitlements"], json!(["pro", "export"]));
    assert_eq!(c["max_activations"], 4);
    assert_eq!(c["license_expires_at"], expires / 1000);
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()), "{c}");
    let iat = c["iat"].as_i64().expect("iat");
    assert!(
        (before..=after).contains(&iat),
        "iat {iat} in {before}..={after}"
    );
    assert_eq!(
        c["exp"],
        iat + 7 * 86_400,
        "the lease ends before the license"
    );
    assert!(c.get("fingerprint").is_none(), "unbound token: {c}");
    assert!(c.get("nonce").is_none(), "no nonce asked: {c}");

    // A nonce is echoed, and each nonce gets its own token.
    let t1 =
        str_of(&validate_expect(&app, json!({"key": key, "nonce": "n-1"}), "VALID").await["token"]);
    let t2 =
        str_of(&validate_expect(&app, json!({"key": key, "nonce": "n-2"}), "VALID").await["token"]);
    let (c1, c2) = (verify(&t1, &jwks), verify(&t2, &jwks));
    assert_eq!(c1["nonce"], "n-1");
    assert_eq!(c2["nonce"], "n-2");
    assert_ne!(c1["jti"], c2["jti"]);

    // Bound to a device when validated with its fingerprint.
    app.activate(&key, "fp-1").await.expect(201);
    let t = str_of(
        &validate_expect(
            &app,
            json!({"key": key, "fingerprint": "fp-1", "nonce": "n-3"}),
            "VALID",
        )
        .await["token"],
    );
    let c = verify(&t, &jwks);
    assert_eq!(c["fingerprint"], "fp-1");
    assert_eq!(c["nonce"], "n-3");
    assert_eq!(c["sub"], id.as_str());
}

#[tokio::test]
async fn token_exp_is_the_earlier_of_license_expiry_and_offline_lease() {
    let app = TestApp::new().await;
    let jwks = jwks_of(&app).await;

    // Lease (2 days) ends before the license (10 days).
    let expires = days_from_now_ms(10);
    let (_, _, key) = setup(
        &app,
        json!({"offline_lease_days": 2}),
        json!({"expires_at": rfc3339(expires)}),
    )
    .await;
    let c = verify(
        &str_of(&app.validate(json!({"key": key})).await["token"]),
        &jwks,
    );
    assert_eq!(c["exp"], c["iat"].as_i64().unwrap() + 2 * 86_400);
    assert_eq!(c["license_expires_at"], expires / 1000);

    // The license (1 day, not on a whole second) ends before the lease (7 days).
    let expires = now_ms() + DAY_MS + 123;
    let (_, _, key) = setup(&app, json!({}), json!({"expires_at": rfc3339(expires)})).await;
    let c = verify(
        &str_of(&app.validate(json!({"key": key})).await["token"]),
        &jwks,
    );
    assert_eq!(c["license_expires_at"], expires.div_euclid(1000));
    assert_eq!(c["exp"], expires.div_euclid(1000));

    // No expiry at all: the lease alone, and `license_expires_at` is null.
    let (_, _, key) = setup(&app, json!({"duration_days": null}), json!({})).await;
    let v = app.validate(json!({"key": key})).await;
    assert!(v["license"]["expires_at"].is_null(), "{v}");
    let c = verify(&str_of(&v["token"]), &jwks);
    assert!(c["license_expires_at"].is_null(), "{c}");
    assert_eq!(c["exp"], c["iat"].as_i64().unwrap() + 7 * 86_400);

    // A product with a duration: the license gets now + duration_days.
    let before = now_ms();
    let (_, _, key) = setup(&app, json!({"duration_days": 30}), json!({})).await;
    let c = verify(
        &str_of(&app.validate(json!({"key": key})).await["token"]),
        &jwks,
    );
    let lic_exp = c["license_expires_at"].as_i64().expect("an expiry");
    assert!(
        lic_exp * 1000 >= before / 1000 * 1000 + 30 * DAY_MS - 1000,
        "{c}"
    );
    assert!(lic_exp * 1000 <= now_ms() + 30 * DAY_MS, "{c}");
}

#[tokio::test]
async fn tampered_tokens_fail_verification() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(&app, json!({}), json!({})).await;
    let jwks = jwks_of(&app).await;
    let x = str_of(&jwks["keys"][0]["x"]);
    let token = str_of(&app.validate(json!({"key": key})).await["token"]);
    verify_with_x(&token, &x).expect("the genuine token verifies");

    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["sub"], id.as_str());

    let forge = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        edit(&mut c);
        let payload = URL_SAFE_NO_PAD.encode(c.to_string());
        format!("{}.{}.{}", parts[0], payload, parts[2])
    };
    for forged in [
        forge(&|c| c["sub"] = json!("lic_someone_else")),
        forge(&|c| c["max_activations"] = json!(1000)),
        forge(&|c| c["exp"] = json!(c["exp"].as_i64().unwrap() + 365 * 86_400)),
        forge(&|c| c["entitlements"] = json!(["pro", "export", "enterprise"])),
    ] {
        let err = verify_with_x(&forged, &x).expect_err("a tampered token must not verify");
        assert_eq!(err.kind(), &ErrorKind::InvalidSignature, "{err:?}");
    }
    // A changed signature does not verify either.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let bad_sig = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
    assert!(verify_with_x(&bad_sig, &x).is_err());
    // Another audience is refused by a verifier that checks it.
    let key_ = DecodingKey::from_ed_components(&x).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&["ecosire:session"]);
    assert_eq!(
        jsonwebtoken::decode::<Value>(&token, &key_, &v)
            .unwrap_err()
            .kind(),
        &ErrorKind::InvalidAudience
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Key rotation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rotated_keys_are_all_published_and_old_tokens_keep_verifying() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(&app, json!({}), json!({})).await;
    let old_jwks = jwks_of(&app).await;
    let old_kid = str_of(&old_jwks["keys"][0]["kid"]);
    let old_x = str_of(&old_jwks["keys"][0]["x"]);
    let old_token = str_of(&app.validate(json!({"key": key})).await["token"]);
    assert_eq!(kid_of(&old_token), old_kid);

    let new_kid =
        ecosire::keyring::add_license_key(&app.state.config.keys_dir).expect("add a license key");
    assert_ne!(new_kid, old_kid);
    // The running instance publishes it at once: it re-reads the keys folder when it changes.
    assert_eq!(jwks_of(&app).await["keys"].as_array().unwrap().len(), 2);

    // The next start, on the same keys folder and database.
    let restarted = TestApp::from_config(
        app.state.config.clone(),
        tempfile::tempdir().expect("tempdir"),
    )
    .await;
    let jwks = jwks_of(&restarted).await;
    assert_eq!(
        restarted
            .get("/api/licenses/jwks", None)
            .await
            .expect(200)
            .clone(),
        jwks
    );
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2, "{jwks}");
    let kids: Vec<String> = keys.iter().map(|k| str_of(&k["kid"])).collect();
    assert!(
        kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );
    for k in keys {
        assert_eq!(k["kid"], thumbprint(k["x"].as_str().unwrap()).as_str());
    }
    let new_x = keys
        .iter()
        .find(|k| k["kid"] == new_kid.as_str())
        .map(|k| str_of(&k["x"]))
        .unwrap();

    // The old token still verifies, by its kid, with the old key.
    let c = verify(&old_token, &jwks);
    assert_eq!(c["sub"], id.as_str());

    // New tokens are signed by the new key only.
    let v = validate_expect(
        &restarted,
        json!({"key": key, "nonce": "after-rotation"}),
        "VALID",
    )
    .await;
    let new_token = str_of(&v["token"]);
    assert_eq!(kid_of(&new_token), new_kid);
    let c = verify(&new_token, &jwks);
    assert_eq!(c["sub"], id.as_str());
    assert_eq!(c["nonce"], "after-rotation");
    assert_eq!(
        verify_with_x(&new_token, &old_x).unwrap_err().kind(),
        &ErrorKind::InvalidSignature
    );
    assert_eq!(
        verify_with_x(&old_token, &new_x).unwrap_err().kind(),
        &ErrorKind::InvalidSignature
    );
    let r = restarted.activate(&key, "fp-rotated").await;
    let t = str_of(&r.expect(201)["token"]);
    assert_eq!(kid_of(&t), new_kid);
    assert_eq!(verify(&t, &jwks)["fingerprint"], "fp-rotated");
}

// ---------------------------------------------------------------------------------------------
// 4. Activate
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn activate_is_idempotent_per_fingerprint() {
    let app = TestApp::new().await;
    let (pid, id, key) = setup(&app, json!({"max_activations": 2}), json!({})).await;
    let jwks = jwks_of(&app).await;

    let first = app.activate(&key, "fp-1").await;
    let body = first.expect(201).clone();
    let act = &body["activation"];
    assert!(str_of(&act["id"]).starts_with("act_"), "{act}");
    assert_eq!(act["license_id"], id.as_str());
    assert_eq!(act["fingerprint"], "fp-1");
    for member in [
        "name",
        "platform",
        "hostname",
        "created_at",
        "last_heartbeat_at",
    ] {
        assert!(
            act.get(member).is_some(),
            "activation lacks {member}: {act}"
        );
    }
    assert_eq!(body["license"]["id"], id.as_str());
    assert_eq!(body["license"]["activations_count"], 1);
    assert!(body["license"].get("key").is_none(), "{body}");
    let c = verify(&str_of(&body["token"]), &jwks);
    assert_eq!(c["fingerprint"], "fp-1");
    assert_eq!(c["sub"], id.as_str());
    assert_eq!(c["product"], pid.as_str());

    // Again, with another spelling of the key: the same activation, 200, no new seat.
    let again = app.activate(&key.to_lowercase(), "fp-1").await;
    let body2 = again.expect(200).clone();
    assert_eq!(body2["activation"]["id"], act["id"]);
    assert_eq!(body2["license"]["activations_count"], 1);
    assert_eq!(
        verify(&str_of(&body2["token"]), &jwks)["fingerprint"],
        "fp-1"
    );
    assert_eq!(activation_rows(&app, &id).await, 1);

    // Idempotent even when every seat is taken.
    app.activate(&key, "fp-2").await.expect(201);
    app.activate(&key, "fp-1").await.expect(200);
    app.activate(&key, "fp-2").await.expect(200);
    app.activate(&key, "fp-3")
        .await
        .expect_problem(409, "ACTIVATION_LIMIT_REACHED");

    let v = validate_expect(&app, json!({"key": key, "fingerprint": "fp-1"}), "VALID").await;
    assert_eq!(v["activation"]["id"], act["id"]);
    assert_eq!(v["license"]["activations_count"], 2);
}

#[tokio::test]
async fn activate_refuses_with_the_contract_errors() {
    let app = TestApp::new().await;
    let (pid, _, key) = setup(&app, json!({"max_activations": 1}), json!({})).await;

    for k in [UNKNOWN_KEY, "hello"] {
        app.activate(k, "fp-1")
            .await
            .expect_problem(404, "LICENSE_NOT_FOUND");
    }

    let revoked = app.license(&pid, json!({})).await;
    app.admin_post(
        &format!("/api/licenses/{}/revoke", str_of(&revoked["id"])),
        json!({}),
    )
    .await
    .expect(200);
    app.activate(&str_of(&revoked["key"]), "fp-1")
        .await
        .expect_problem(403, "LICENSE_REVOKED");

    let suspended = app.license(&pid, json!({})).await;
    app.admin_post(
        &format!("/api/licenses/{}/suspend", str_of(&suspended["id"])),
        json!({}),
    )
    .await
    .expect(200);
    app.activate(&str_of(&suspended["key"]), "fp-1")
        .await
        .expect_problem(403, "LICENSE_SUSPENDED");

    let expired = app
        .license(&pid, json!({"expires_at": rfc3339(days_from_now_ms(-1))}))
        .await;
    app.activate(&str_of(&expired["key"]), "fp-1")
        .await
        .expect_problem(403, "LICENSE_EXPIRED");

    app.activate(&key, "fp-1").await.expect(201);
    let p = app
        .activate(&key, "fp-2")
        .await
        .expect_problem(409, "ACTIVATION_LIMIT_REACHED")
        .clone();
    assert!(p["message"].is_string(), "{p}");

    for fp in [String::new(), "x".repeat(256)] {
        let p = app
            .activate(&key, &fp)
            .await
            .expect_problem(422, "VALIDATION_FAILED")
            .clone();
        assert!(
            p["details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|e| e["field"] == "fingerprint")),
            "{p}"
        );
    }
    // A missing fingerprint is a validation failure too, not a server error.
    app.post("/api/licenses/activate", json!({"key": key}), None)
        .await
        .expect_problem(422, "VALIDATION_FAILED");

    // 255 characters is the longest fingerprint; it gets the seat once one is free.
    let (_, _, roomy) = setup(&app, json!({"max_activations": 2}), json!({})).await;
    let long = "y".repeat(255);
    app.activate(&roomy, &long).await.expect(201);
    validate_expect(&app, json!({"key": roomy, "fingerprint": long}), "VALID").await;
}

// ---------------------------------------------------------------------------------------------
// 5. The seat limit under real concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seat_limit_holds_under_parallel_activations() {
    let app = Arc::new(TestApp::new().await);
    let (_, id, key) = setup(&app, json!({"max_activations": 3}), json!({})).await;
    const N: usize = 50;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let (app, key, barrier) = (Arc::clone(&app), key.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            app.activate(&key, &format!("device-{i:02}")).await
        }));
    }
    let (mut created, mut refused) = (vec![], 0);
    for t in tasks {
        let r = t.await.expect("task");
        match r.status.as_u16() {
            201 => created.push(str_of(&r.body["activation"]["fingerprint"])),
            409 => {
                r.expect_problem(409, "ACTIVATION_LIMIT_REACHED");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert_eq!(created.len(), 3, "{created:?}");
    assert_eq!(refused, N - 3);
    assert_eq!(activation_rows(&app, &id).await, 3);

    // Every instance of the truth agrees: the admin view, validate and the device list.
    let l = app.admin_get(&format!("/api/licenses/{id}")).await;
    assert_eq!(l.expect(200)["activations_count"], 3);
    let list = app
        .post("/api/licenses/activations", json!({"key": key}), None)
        .await;
    let mut listed: Vec<String> = list.expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| str_of(&a["fingerprint"]))
        .collect();
    listed.sort();
    created.sort();
    assert_eq!(listed, created);
    for fp in &created {
        validate_expect(&app, json!({"key": key, "fingerprint": fp}), "VALID").await;
    }
    let types = outbox_types(&app).await;
    assert_eq!(
        types.iter().filter(|t| *t == "license.activated").count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_activations_of_one_fingerprint_make_one_activation() {
    let app = Arc::new(TestApp::new().await);
    let (_, id, key) = setup(&app, json!({"max_activations": 3}), json!({})).await;
    const N: usize = 20;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::with_capacity(N);
    for _ in 0..N {
        let (app, key, barrier) = (Arc::clone(&app), key.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            app.activate(&key, "same-device").await
        }));
    }
    let (mut created, mut existing, mut ids) = (0, 0, vec![]);
    for t in tasks {
        let r = t.await.expect("task");
        match r.status.as_u16() {
            201 => created += 1,
            200 => existing += 1,
            other => panic!("unexpected {other}: {}", r.text),
        }
        ids.push(str_of(&r.body["activation"]["id"]));
    }
    assert_eq!((created, existing), (1, N - 1));
    ids.dedup();
    assert_eq!(ids.len(), 1, "one activation id for all: {ids:?}");
    assert_eq!(activation_rows(&app, &id).await, 1);
    let types = outbox_types(&app).await;
    assert_eq!(
        types.iter().filter(|t| *t == "license.activated").count(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Deactivate, heartbeat, the self-service list
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deactivate_frees_the_seat() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(&app, json!({"max_activations": 3}), json!({})).await;
    for fp in ["fp-1", "fp-2", "fp-3"] {
        app.activate(&key, fp).await.expect(201);
    }
    app.activate(&key, "fp-4")
        .await
        .expect_problem(409, "ACTIVATION_LIMIT_REACHED");

    let r = app
        .post(
            "/api/licenses/deactivate",
            json!({"key": key.to_lowercase(), "fingerprint": "fp-2"}),
            None,
        )
        .await;
    r.expect(204);
    assert!(r.text.is_empty(), "204 has no body: {}", r.text);
    assert_eq!(activation_rows(&app, &id).await, 2);
    validate_expect(
        &app,
        json!({"key": key, "fingerprint": "fp-2"}),
        "FINGERPRINT_NOT_ACTIVATED",
    )
    .await;
    let b = app.activate(&key, "fp-4").await;
    assert_eq!(b.expect(201)["license"]["activations_count"], 3);

    // Gone once: the second time it is not found.
    app.post(
        "/api/licenses/deactivate",
        json!({"key": key, "fingerprint": "fp-2"}),
        None,
    )
    .await
    .expect_problem(404, "ACTIVATION_NOT_FOUND");
    app.post(
        "/api/licenses/deactivate",
        json!({"key": key, "fingerprint": "never-seen"}),
        None,
    )
    .await
    .expect_problem(404, "ACTIVATION_NOT_FOUND");
    for k in [UNKNOWN_KEY, "hello"] {
        app.post(
            "/api/licenses/deactivate",
            json!({"key": k, "fingerprint": "fp-1"}),
            None,
        )
        .await
        .expect_problem(404, "LICENSE_NOT_FOUND");
    }
    app.post(
        "/api/licenses/deactivate",
        json!({"key": key, "fingerprint": ""}),
        None,
    )
    .await
    .expect_problem(422, "VALIDATION_FAILED");
}

#[tokio::test]
async fn heartbeat_returns_the_activation_and_a_bound_token() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(&app, json!({}), json!({})).await;
    let jwks = jwks_of(&app).await;
    let act = app.activate(&key, "fp-1").await.expect(201)["activation"].clone();

    // Make the last heartbeat visibly old, then beat.
    let old = now_ms() - 3_600_000;
    set_last_heartbeat(&app, &id, "fp-1", old).await;
    let before = now_ms();
    let r = app
        .post(
            "/api/licenses/heartbeat",
            json!({"key": format!(" {} ", key.to_lowercase()), "fingerprint": "fp-1"}),
            None,
        )
        .await;
    let body = r.expect(200).clone();
    assert_eq!(body["activation"]["id"], act["id"]);
    assert_eq!(body["activation"]["fingerprint"], "fp-1");
    let hb: i64 = sqlx::query_scalar(
        "SELECT last_heartbeat_at FROM activations WHERE license_id = $1 AND fingerprint = $2",
    )
    .bind(&id)
    .bind("fp-1")
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    assert!(hb >= before, "heartbeat stored: {hb} < {before}");
    assert_eq!(
        body["activation"]["last_heartbeat_at"],
        rfc3339(hb).as_str()
    );
    let c = verify(&str_of(&body["token"]), &jwks);
    assert_eq!(c["fingerprint"], "fp-1");
    assert_eq!(c["sub"], id.as_str());
    // A heartbeat changes nothing validate decides on: the cached snapshot stays (validate runs
    // no query after it), at the price of a last heartbeat time that may lag in its answer.
    validate_expect(&app, json!({"key": key, "fingerprint": "fp-1"}), "VALID").await;
    let misses = app
        .state
        .licenses
        .misses
        .load(std::sync::atomic::Ordering::Relaxed);
    app.post(
        "/api/licenses/heartbeat",
        json!({"key": key, "fingerprint": "fp-1"}),
        None,
    )
    .await
    .expect(200);
    validate_expect(&app, json!({"key": key, "fingerprint": "fp-1"}), "VALID").await;
    assert_eq!(
        app.state
            .licenses
            .misses
            .load(std::sync::atomic::Ordering::Relaxed),
        misses,
        "a heartbeat evicted validate's snapshot"
    );

    app.post(
        "/api/licenses/heartbeat",
        json!({"key": key, "fingerprint": "fp-unknown"}),
        None,
    )
    .await
    .expect_problem(404, "ACTIVATION_NOT_FOUND");
    app.post(
        "/api/licenses/heartbeat",
        json!({"key": UNKNOWN_KEY, "fingerprint": "fp-1"}),
        None,
    )
    .await
    .expect_problem(404, "LICENSE_NOT_FOUND");

    app.admin_patch(
        &format!("/api/licenses/{id}"),
        json!({"expires_at": rfc3339(days_from_now_ms(-1))}),
    )
    .await
    .expect(200);
    app.post(
        "/api/licenses/heartbeat",
        json!({"key": key, "fingerprint": "fp-1"}),
        None,
    )
    .await
    .expect_problem(403, "LICENSE_EXPIRED");
    app.admin_patch(&format!("/api/licenses/{id}"), json!({"expires_at": null}))
        .await
        .expect(200);

    app.admin_post(&format!("/api/licenses/{id}/suspend"), json!({}))
        .await
        .expect(200);
    app.post(
        "/api/licenses/heartbeat",
        json!({"key": key, "fingerprint": "fp-1"}),
        None,
    )
    .await
    .expect_problem(403, "LICENSE_SUSPENDED");
    app.admin_post(&format!("/api/licenses/{id}/revoke"), json!({}))
        .await
        .expect(200);
    app.post(
        "/api/licenses/heartbeat",
        json!({"key": key, "fingerprint": "fp-1"}),
        None,
    )
    .await
    .expect_problem(403, "LICENSE_REVOKED");
}

#[tokio::test]
async fn key_holder_lists_live_activations() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(&app, json!({}), json!({})).await;
    let list = |k: String| {
        let app = &app;
        async move {
            app.post("/api/licenses/activations", json!({"key": k}), None)
                .await
        }
    };
    let empty = list(key.clone()).await;
    assert_eq!(empty.expect(200)["data"], json!([]));

    let a1 = app
        .post(
            "/api/licenses/activate",
            json!({"key": key, "fingerprint": "fp-1", "name": "Desk", "platform": "windows", "hostname": "desk-1"}),
            None,
        )
        .await
        .expect(201)["activation"]
        .clone();
    let a2 = app.activate(&key, "fp-2").await.expect(201)["activation"].clone();

    let r = list(key.to_lowercase().replace('-', "")).await;
    let data = r.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 2);
    for a in &data {
        assert_eq!(a["license_id"], id.as_str());
        for member in [
            "id",
            "license_id",
            "fingerprint",
            "name",
            "platform",
            "hostname",
            "created_at",
            "last_heartbeat_at",
        ] {
            assert!(a.get(member).is_some(), "{member} missing in {a}");
        }
    }
    assert!(data.contains(&a1), "{data:?}");
    assert!(data.iter().any(|a| a["id"] == a2["id"]));

    // The holder frees one seat and the list shows it at once.
    app.post(
        "/api/licenses/deactivate",
        json!({"key": key, "fingerprint": "fp-1"}),
        None,
    )
    .await
    .expect(204);
    let r = list(key.clone()).await;
    let data = r.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], a2["id"]);

    list(UNKNOWN_KEY.to_string())
        .await
        .expect_problem(404, "LICENSE_NOT_FOUND");
    list("hello".to_string())
        .await
        .expect_problem(404, "LICENSE_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// 7. Release of silent activations
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn silent_activations_are_released_and_only_those() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(
        &app,
        json!({"heartbeat_timeout_s": 60, "max_activations": 2}),
        json!({}),
    )
    .await;
    let (_, forever_id, forever_key) = setup(&app, json!({}), json!({})).await;
    app.activate(&key, "silent").await.expect(201);
    app.activate(&key, "alive").await.expect(201);
    app.activate(&forever_key, "old").await.expect(201);
    app.activate(&key, "third")
        .await
        .expect_problem(409, "ACTIVATION_LIMIT_REACHED");

    let now = now_ms();
    set_last_heartbeat(&app, &id, "silent", now - 61_000).await;
    set_last_heartbeat(&app, &id, "alive", now - 30_000).await;
    set_last_heartbeat(&app, &forever_id, "old", now - 365 * DAY_MS).await;
    // Warm the cache: what the reaper does must be visible anyway.
    validate_expect(&app, json!({"key": key, "fingerprint": "silent"}), "VALID").await;

    let released = ecosire::licensing::reaper::reap_silent_activations(&app.state)
        .await
        .expect("reap");
    assert_eq!(released, 1);

    validate_expect(
        &app,
        json!({"key": key, "fingerprint": "silent"}),
        "FINGERPRINT_NOT_ACTIVATED",
    )
    .await;
    validate_expect(&app, json!({"key": key, "fingerprint": "alive"}), "VALID").await;
    validate_expect(
        &app,
        json!({"key": forever_key, "fingerprint": "old"}),
        "VALID",
    )
    .await;
    assert_eq!(activation_rows(&app, &id).await, 1);
    assert_eq!(activation_rows(&app, &forever_id).await, 1);
    let listed = app
        .post("/api/licenses/activations", json!({"key": key}), None)
        .await;
    assert_eq!(listed.expect(200)["data"].as_array().unwrap().len(), 1);
    app.post(
        "/api/licenses/heartbeat",
        json!({"key": key, "fingerprint": "silent"}),
        None,
    )
    .await
    .expect_problem(404, "ACTIVATION_NOT_FOUND");

    // The seat is free again.
    app.activate(&key, "third").await.expect(201);

    // The release is announced like any deactivation.
    let events = outbox_payloads(&app, "license.deactivated").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["object"]["fingerprint"], "silent");
    assert_eq!(events[0]["data"]["object"]["license"]["id"], id.as_str());

    // Nothing else is silent: a second pass releases nothing.
    assert_eq!(
        ecosire::licensing::reaper::reap_silent_activations(&app.state)
            .await
            .expect("reap"),
        0
    );
}

#[tokio::test]
async fn a_heartbeat_keeps_the_seat() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(&app, json!({"heartbeat_timeout_s": 60}), json!({})).await;
    app.activate(&key, "fp-1").await.expect(201);
    set_last_heartbeat(&app, &id, "fp-1", now_ms() - 600_000).await;
    app.post(
        "/api/licenses/heartbeat",
        json!({"key": key, "fingerprint": "fp-1"}),
        None,
    )
    .await
    .expect(200);
    assert_eq!(
        ecosire::licensing::reaper::reap_silent_activations(&app.state)
            .await
            .expect("reap"),
        0
    );
    validate_expect(&app, json!({"key": key, "fingerprint": "fp-1"}), "VALID").await;

    // Validate is not a heartbeat; re-activating the same device is.
    set_last_heartbeat(&app, &id, "fp-1", now_ms() - 600_000).await;
    validate_expect(&app, json!({"key": key, "fingerprint": "fp-1"}), "VALID").await;
    app.activate(&key, "fp-1").await.expect(200);
    assert_eq!(
        ecosire::licensing::reaper::reap_silent_activations(&app.state)
            .await
            .expect("reap"),
        0
    );
    set_last_heartbeat(&app, &id, "fp-1", now_ms() - 600_000).await;
    validate_expect(&app, json!({"key": key, "fingerprint": "fp-1"}), "VALID").await;
    assert_eq!(
        ecosire::licensing::reaper::reap_silent_activations(&app.state)
            .await
            .expect("reap"),
        1
    );
    assert_eq!(activation_rows(&app, &id).await, 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Cache invalidation: a change is visible to the very next call
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn lifecycle_changes_are_visible_to_the_next_validate() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(&app, json!({}), json!({})).await;
    let k = json!({"key": key});
    let lic = |action: &str| format!("/api/licenses/{id}/{action}");

    assert_eq!(code_of(&app, k.clone()).await, "VALID");
    let hits = app.state.licenses.hits.load(Ordering::Relaxed);
    assert_eq!(code_of(&app, k.clone()).await, "VALID");
    assert!(
        app.state.licenses.hits.load(Ordering::Relaxed) > hits,
        "the second validate is served from the cache"
    );

    app.admin_post(&lic("suspend"), json!({})).await.expect(200);
    assert_eq!(code_of(&app, k.clone()).await, "SUSPENDED");
    app.activate(&key, "fp-1")
        .await
        .expect_problem(403, "LICENSE_SUSPENDED");

    app.admin_post(&lic("reinstate"), json!({}))
        .await
        .expect(200);
    assert_eq!(code_of(&app, k.clone()).await, "VALID");
    app.activate(&key, "fp-1").await.expect(201);

    let past = rfc3339(days_from_now_ms(-2));
    let r = app
        .admin_patch(&format!("/api/licenses/{id}"), json!({"expires_at": past}))
        .await;
    assert_eq!(r.expect(200)["status"], "active");
    let v = validate_expect(&app, k.clone(), "EXPIRED").await;
    assert_eq!(v["license"]["status"], "active");
    app.activate(&key, "fp-2")
        .await
        .expect_problem(403, "LICENSE_EXPIRED");

    app.admin_patch(&format!("/api/licenses/{id}"), json!({"expires_at": null}))
        .await
        .expect(200);
    let v = validate_expect(&app, k.clone(), "VALID").await;
    assert!(v["license"]["expires_at"].is_null());

    let r = app
        .admin_post(&lic("renew"), json!({"expires_at": past}))
        .await;
    assert_eq!(r.expect(200)["license"]["expires_at"], past.as_str());
    assert_eq!(code_of(&app, k.clone()).await, "EXPIRED");

    // extend_days counts from now when the license has already expired.
    let before = now_ms();
    let r = app
        .admin_post(&lic("renew"), json!({"extend_days": 30}))
        .await;
    let renewed = r.expect(200)["license"]["expires_at"].clone();
    let renewed = ecosire::timestamp::Timestamp::parse(&str_of(&renewed))
        .expect("rfc3339")
        .ms();
    assert!(renewed >= before + 30 * DAY_MS && renewed <= now_ms() + 30 * DAY_MS);
    assert_eq!(code_of(&app, k.clone()).await, "VALID");
    // …and from the current expiry when that is later.
    let r = app
        .admin_post(&lic("renew"), json!({"extend_days": 10}))
        .await;
    let again =
        ecosire::timestamp::Timestamp::parse(&str_of(&r.expect(200)["license"]["expires_at"]))
            .unwrap()
            .ms();
    assert_eq!(again, renewed + 10 * DAY_MS);

    app.admin_patch(
        &format!("/api/licenses/{id}"),
        json!({"entitlements": ["basic"]}),
    )
    .await
    .expect(200);
    assert_eq!(
        code_of(&app, json!({"key": key, "entitlements": ["pro"]})).await,
        "ENTITLEMENTS_MISSING"
    );

    app.admin_post(&lic("revoke"), json!({"reason": "fraud"}))
        .await
        .expect(200);
    let v = validate_expect(&app, json!({"key": key, "fingerprint": "fp-1"}), "REVOKED").await;
    assert_eq!(v["license"]["status"], "revoked");
    app.activate(&key, "fp-1")
        .await
        .expect_problem(403, "LICENSE_REVOKED");
    // Revocation is final.
    app.admin_post(&lic("reinstate"), json!({}))
        .await
        .expect_problem(409, "LICENSE_REVOKED");
    assert_eq!(code_of(&app, k).await, "REVOKED");
}

#[tokio::test]
async fn reissue_retires_the_old_key_at_once() {
    let app = TestApp::new().await;
    let (_, id, old_key) = setup(&app, json!({}), json!({})).await;
    app.activate(&old_key, "fp-1").await.expect(201);
    validate_expect(
        &app,
        json!({"key": old_key, "fingerprint": "fp-1"}),
        "VALID",
    )
    .await;
    validate_expect(&app, json!({"key": old_key}), "VALID").await;

    let r = app
        .admin_post(&format!("/api/licenses/{id}/reissue"), json!({}))
        .await;
    let lic = r.expect(200)["license"].clone();
    let new_key = str_of(&lic["key"]);
    assert_ne!(new_key, old_key);
    assert_eq!(lic["id"], id.as_str());
    assert_eq!(lic["key_last4"], &new_key[new_key.len() - 4..]);

    validate_expect(&app, json!({"key": old_key}), "NOT_FOUND").await;
    validate_expect(&app, json!({"key": old_key.to_lowercase()}), "NOT_FOUND").await;
    app.activate(&old_key, "fp-2")
        .await
        .expect_problem(404, "LICENSE_NOT_FOUND");
    app.post(
        "/api/licenses/deactivate",
        json!({"key": old_key, "fingerprint": "fp-1"}),
        None,
    )
    .await
    .expect_problem(404, "LICENSE_NOT_FOUND");

    // The license keeps its activations under the new key.
    let v = validate_expect(
        &app,
        json!({"key": new_key, "fingerprint": "fp-1"}),
        "VALID",
    )
    .await;
    assert_eq!(v["license"]["id"], id.as_str());
    let got = app.admin_get(&format!("/api/licenses/{id}")).await;
    assert_eq!(got.expect(200)["key"], new_key.as_str());
}

#[tokio::test]
async fn unknown_keys_are_cached_and_malformed_keys_never_looked_up() {
    let app = TestApp::new().await;
    let misses = || app.state.licenses.misses.load(Ordering::Relaxed);
    let hits = || app.state.licenses.hits.load(Ordering::Relaxed);

    let before = misses();
    for _ in 0..100 {
        validate_expect(&app, json!({"key": UNKNOWN_KEY}), "NOT_FOUND").await;
    }
    assert!(
        misses() - before <= 1,
        "100 validations of one unknown key cost {} misses",
        misses() - before
    );

    let (m, h) = (misses(), hits());
    for _ in 0..20 {
        validate_expect(&app, json!({"key": "hello"}), "NOT_FOUND").await;
    }
    assert_eq!(
        (misses(), hits()),
        (m, h),
        "a malformed key is not looked up"
    );

    // Known keys: one load, then hits.
    let (_, _, key) = setup(&app, json!({}), json!({})).await;
    let before = misses();
    for _ in 0..50 {
        validate_expect(&app, json!({"key": key}), "VALID").await;
    }
    assert!(misses() - before <= 1, "{} misses", misses() - before);
}

#[tokio::test]
async fn activation_and_product_changes_are_visible_to_the_next_validate() {
    let app = TestApp::new().await;
    let (pid, id, key) = setup(&app, json!({"slug": "first-slug"}), json!({})).await;
    let act = app.activate(&key, "fp-1").await.expect(201)["activation"].clone();
    validate_expect(&app, json!({"key": key, "fingerprint": "fp-1"}), "VALID").await;

    // An admin frees the seat.
    app.admin_delete(&format!("/api/activations/{}", str_of(&act["id"])))
        .await
        .expect(204);
    let v = validate_expect(
        &app,
        json!({"key": key, "fingerprint": "fp-1"}),
        "FINGERPRINT_NOT_ACTIVATED",
    )
    .await;
    assert_eq!(v["license"]["activations_count"], 0);
    assert_eq!(activation_rows(&app, &id).await, 0);

    // A product edit reaches the cached snapshots of its licenses.
    validate_expect(&app, json!({"key": key, "product": "first-slug"}), "VALID").await;
    app.admin_patch(
        &format!("/api/products/{pid}"),
        json!({"slug": "second-slug", "offline_lease_days": 3}),
    )
    .await
    .expect(200);
    validate_expect(
        &app,
        json!({"key": key, "product": "first-slug"}),
        "PRODUCT_MISMATCH",
    )
    .await;
    let v = validate_expect(&app, json!({"key": key, "product": "second-slug"}), "VALID").await;
    let c = verify(&str_of(&v["token"]), &jwks_of(&app).await);
    assert_eq!(c["exp"], c["iat"].as_i64().unwrap() + 3 * 86_400);
}

// ---------------------------------------------------------------------------------------------
// 9. Events and secrets at rest
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn changes_are_announced_through_the_outbox() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(&app, json!({}), json!({})).await;
    app.activate(&key, "fp-1").await.expect(201);
    app.activate(&key, "fp-1").await.expect(200); // idempotent: no second event
    app.activate(&key, "fp-2").await.expect(201);
    app.post(
        "/api/licenses/deactivate",
        json!({"key": key, "fingerprint": "fp-2"}),
        None,
    )
    .await
    .expect(204);
    let lic = |action: &str| format!("/api/licenses/{id}/{action}");
    app.admin_post(&lic("suspend"), json!({})).await.expect(200);
    app.admin_post(&lic("suspend"), json!({})).await.expect(200); // no change, no event
    app.admin_post(&lic("reinstate"), json!({}))
        .await
        .expect(200);
    app.admin_post(&lic("renew"), json!({"extend_days": 5}))
        .await
        .expect(200);
    app.admin_post(&lic("reissue"), json!({})).await.expect(200);
    app.admin_post(&lic("revoke"), json!({"reason": "refund"}))
        .await
        .expect(200);

    let types = outbox_types(&app).await;
    let count = |t: &str| types.iter().filter(|x| *x == t).count();
    assert_eq!(count("license.created"), 1, "{types:?}");
    assert_eq!(count("license.activated"), 2, "{types:?}");
    assert_eq!(count("license.deactivated"), 1, "{types:?}");
    assert_eq!(count("license.suspended"), 1, "{types:?}");
    assert_eq!(count("license.reinstated"), 1, "{types:?}");
    assert_eq!(count("license.renewed"), 1, "{types:?}");
    assert_eq!(count("license.reissued"), 1, "{types:?}");
    assert_eq!(count("license.revoked"), 1, "{types:?}");

    let activated = outbox_payloads(&app, "license.activated").await;
    let first = &activated[0];
    assert_eq!(first["type"], "license.activated");
    assert!(str_of(&first["id"]).starts_with("evt_"), "{first}");
    assert_eq!(first["object"], "event");
    assert_eq!(first["data"]["object"]["fingerprint"], "fp-1");
    assert_eq!(first["data"]["object"]["license"]["id"], id.as_str());
    let deactivated = outbox_payloads(&app, "license.deactivated").await;
    assert_eq!(deactivated[0]["data"]["object"]["fingerprint"], "fp-2");
    assert_eq!(
        deactivated[0]["data"]["object"]["license"]["activations_count"],
        1
    );
    let revoked = outbox_payloads(&app, "license.revoked").await;
    assert_eq!(revoked[0]["data"]["object"]["id"], id.as_str());
    assert_eq!(revoked[0]["data"]["object"]["status"], "revoked");
    assert_eq!(revoked[0]["data"]["object"]["reason"], "refund");
}

#[tokio::test]
async fn no_plaintext_key_in_the_outbox_or_the_licenses_table() {
    let app = TestApp::new().await;
    let (_, id, key) = setup(&app, json!({}), json!({})).await;
    let reissued = app
        .admin_post(&format!("/api/licenses/{id}/reissue"), json!({}))
        .await;
    let new_key = str_of(&reissued.expect(200)["license"]["key"]);
    let mut forms = key_forms(&key);
    forms.extend(key_forms(&new_key));

    let created = outbox_payloads(&app, "license.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["data"]["object"]["id"], id.as_str());
    assert!(
        created[0]["data"]["object"].get("key").is_none(),
        "{}",
        created[0]
    );
    let payloads: Vec<String> = sqlx::query_scalar("SELECT payload FROM outbox")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert!(payloads.len() >= 2);
    for p in &payloads {
        let upper = p.to_uppercase();
        for f in &forms {
            assert!(
                !upper.contains(f.as_str()),
                "outbox payload holds a key: {p}"
            );
        }
    }

    type Row = (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, key_digest, key_sealed, key_last4, product_id, status, entitlements, metadata FROM licenses",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    let text = [&r.0, &r.1, &r.2, &r.3, &r.4, &r.5, &r.6, &r.7]
        .iter()
        .map(|s| s.to_uppercase())
        .collect::<Vec<_>>()
        .join("|");
    for f in &forms {
        assert!(
            !text.contains(f.as_str()),
            "licenses row holds a key: {text}"
        );
    }
    assert_eq!(
        r.3,
        &new_key[new_key.len() - 4..],
        "only the last chars are kept"
    );
}
