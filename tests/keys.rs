//! Key files that standard tools read: PKCS#8 v1 for new keys, and v2 files written by earlier
//! versions converted in place at start with their kid unchanged. Checked with the `openssl` CLI.
//! Staged rotation: a key published before it signs, activated, and retired only once nothing it
//! signed can be unexpired, picked up by a running server without a restart; and the CLI for it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ecosire::keyring::{self, Keyring};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use serde_json::{Value, json};

/// Reads a private key with OpenSSL and returns the raw public key it derives from it.
#[track_caller]
fn openssl_public_key(file: &Path) -> [u8; 32] {
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(file)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl cannot read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // SubjectPublicKeyInfo for Ed25519: a 12-byte prefix, then the 32-byte key.
    out.stdout[out.stdout.len() - 32..].try_into().unwrap()
}

fn key_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .collect();
    files.sort();
    files
}

#[test]
fn generated_keys_are_pkcs8_v1_that_openssl_reads() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (ring, _) = Keyring::load_or_init(&keys).unwrap();
    let files = key_files(&keys);
    assert_eq!(files.len(), 2, "a license and a session key: {files:?}");
    for f in &files {
        let public = openssl_public_key(f);
        let ours = if f.ends_with("session.pem") {
            ring.session.verifying_key()
        } else {
            ring.signer().verifying_key()
        };
        assert_eq!(public, ours.to_bytes(), "{}", f.display());
    }
    // The same for a key added by `ecosire keys rotate`.
    ecosire::keyring::add_license_key(&keys).unwrap();
    let files = key_files(&keys);
    assert_eq!(files.len(), 3);
    for f in &files {
        openssl_public_key(f);
    }
}

#[cfg(unix)]
#[test]
fn v2_key_files_from_earlier_versions_are_converted_at_start_keeping_their_kid() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    // What earlier versions wrote: SigningKey's own encoding, PKCS#8 v2 with the public key.
    let license = SigningKey::from_bytes(&[5; 32]);
    let session = SigningKey::from_bytes(&[6; 32]);
    let license_file = keys.join("license-0001700000000000.pem");
    for (file, key) in [
        (&license_file, &license),
        (&keys.join("session.pem"), &session),
    ] {
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        std::fs::write(file, pem.as_bytes()).unwrap();
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "the fixture is what OpenSSL 3 refuses"
        );
    }
    let kid = ecosire::jws::thumbprint(&license.verifying_key());

    let (ring, generated) = Keyring::load_or_init(&keys).unwrap();
    assert_eq!(generated, ["data encryption key"], "the old keys are kept");
    assert_eq!(ring.signer().kid, kid);
    assert_eq!(ring.published().len(), 1);
    assert_eq!(ring.published()[0].0, kid);
    assert_eq!(ring.session.verifying_key(), session.verifying_key());

    assert_eq!(
        openssl_public_key(&license_file),
        license.verifying_key().to_bytes()
    );
    assert_eq!(
        openssl_public_key(&keys.join("session.pem")),
        session.verifying_key().to_bytes()
    );
    for f in key_files(&keys) {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    assert_eq!(
        std::fs::read_dir(&keys).unwrap().count(),
        3,
        "no temporary file left behind"
    );

    // Loading again reads the converted files as they are.
    let (again, generated) = Keyring::load_or_init(&keys).unwrap();
    assert!(generated.is_empty());
    assert_eq!(again.signer().kid, kid);
    // The offline verifier reads both forms without writing anything.
    assert_eq!(ecosire::keyring::published_keys(&keys).unwrap()[0].0, kid);
}

// ---------------------------------------------------------------------------------------------
// Staged rotation: publish first, sign later, retire only when nothing it signed can be live.
// ---------------------------------------------------------------------------------------------

async fn jwks(app: &common::TestApp) -> Value {
    app.get("/.well-known/jwks.json", None)
        .await
        .expect(200)
        .clone()
}

/// A fresh token (a nonce of its own, so never a reused one) for `key`.
async fn token(app: &common::TestApp, key: &str, nonce: &str) -> String {
    let v = app.validate(json!({"key": key, "nonce": nonce})).await;
    v["token"].as_str().unwrap().to_string()
}

fn kid_of(token: &str) -> String {
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_string()
}

fn kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    kids.sort();
    kids
}

/// Verifies a license token with a JWKS document, as an offline client holding it would.
fn verifies_with(token: &str, jwks: &Value) -> bool {
    let key_for = |kid: &str| common::jwks_key(jwks, kid);
    ecosire::jws::verify::<Value>(token, "JWT", key_for).is_ok()
}

#[tokio::test]
async fn a_rotated_key_is_published_at_once_signs_after_activation_and_retires_only_when_safe() {
    let app = common::TestApp::new().await;
    let (_, l) = app
        .product_and_license(json!({"offline_lease_days": 10}), json!({}))
        .await;
    let key = l["key"].as_str().unwrap();
    let dir = app.state.config.keys_dir.clone();
    let cached = jwks(&app).await;
    let old = kids(&cached)[0].clone();
    let before = token(&app, key, "before").await;
    assert_eq!(kid_of(&before), old);

    // Rotate with the default lead: published by the next JWKS answer, without a restart …
    let (new, state) = keyring::rotate_license_key(&dir, Duration::from_secs(86_400)).unwrap();
    assert!(state.signs_from.secs() >= common::now_s() + 86_400 - 5);
    let both = jwks(&app).await;
    let mut want = vec![old.clone(), new.clone()];
    want.sort();
    assert_eq!(kids(&both), want);
    // … while the old key still signs, tokens and revocation lists alike.
    let during = token(&app, key, "during").await;
    assert_eq!(kid_of(&during), old);
    let pid = l["product_id"].as_str().unwrap();
    let list = app
        .get(&format!("/api/licenses/revocations?product={pid}"), None)
        .await;
    list.expect(200);
    assert_eq!(kid_of(&list.text), old);
    assert!(
        verifies_with(&during, &cached),
        "a client with the old JWKS"
    );

    // The key that signs cannot be retired, forced or not; a pending one could be.
    let life = ecosire::licensing::revocations::max_token_life(&app.state.db)
        .await
        .unwrap();
    assert_eq!(life, Duration::from_secs(10 * 86_400), "the longest lease");
    // License files of air-gapped activations count with their own lease, while the product
    // allows them (or a device still holds one).
    let airgapped = app
        .product(json!({"offline_activation": true, "offline_activation_lease_days": 400}))
        .await;
    let longest = ecosire::licensing::revocations::max_token_life(&app.state.db)
        .await
        .unwrap();
    assert_eq!(longest, Duration::from_secs(400 * 86_400), "license files");
    app.admin_patch(
        &format!("/api/products/{}", airgapped["id"].as_str().unwrap()),
        json!({"offline_activation": false}),
    )
    .await
    .expect(200);
    let back = ecosire::licensing::revocations::max_token_life(&app.state.db)
        .await
        .unwrap();
    assert_eq!(back, life, "no license file is out");
    for force in [false, true] {
        let e = keyring::retire_license_key(&dir, &old, life, force).unwrap_err();
        assert!(e.to_string().contains("signs new tokens now"), "{e}");
    }

    // Activation: the new key signs from now on, here and in lists.
    let activated = keyring::activate_license_key(&dir, &new).unwrap();
    assert!(activated.signs_from.secs() <= common::now_s());
    assert_eq!(kids(&jwks(&app).await), want, "both stay published");
    let after = token(&app, key, "after").await;
    assert_eq!(kid_of(&after), new);
    // A client that fetched the JWKS during the lead verifies both; the old token still counts.
    assert!(verifies_with(&after, &both) && verifies_with(&before, &both));
    assert!(!verifies_with(&after, &cached), "why clients must refresh");

    // Retiring the old key now would strand tokens it signed moments ago (10-day lease).
    let e = keyring::retire_license_key(&dir, &old, life, false).unwrap_err();
    let e = e.to_string();
    assert!(e.contains("may be unexpired until"), "{e}");
    let all = keyring::license_keys(&dir).unwrap();
    let until = keyring::retire_after(&all, &old, life, common::now_ms())
        .unwrap()
        .expect("no longer signing");
    let since_activation = until.secs() - activated.signs_from.secs();
    assert_eq!(since_activation, 10 * 86_400);
    // Once that time has passed, it may go.
    let later = until.ms() + 1;
    assert_eq!(
        keyring::retire_after(&all, &old, life, later).unwrap(),
        Some(until)
    );
    // Forced: gone from the JWKS of the running server at once, and never signs again.
    keyring::retire_license_key(&dir, &old, life, true).unwrap();
    assert_eq!(kids(&jwks(&app).await), vec![new.clone()]);
    assert_eq!(kid_of(&token(&app, key, "retired").await), new);
    assert!(!verifies_with(&before, &jwks(&app).await));
    // The state persists beside the key: a restart sees the same schedule.
    let restarted =
        common::TestApp::from_config(app.state.config.clone(), tempfile::tempdir().unwrap()).await;
    assert_eq!(kids(&jwks(&restarted).await), vec![new.clone()]);
    let sidecars = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(".json")
        })
        .count();
    assert_eq!(sidecars, 2, "one state file per license key");
}

#[tokio::test]
async fn the_cli_rotates_lists_activates_and_retires() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::fresh_database_url(dir.path()).await;
    let keys = dir.path().join("keys");
    let run = |args: &[&str], lead: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ecosire"))
            .args(args)
            .env("DATABASE_URL", &db)
            .env("ECOSIRE_KEYS_DIR", &keys)
            .env("ECOSIRE_KEY_PUBLISH_LEAD_S", lead)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, _, err) = run(&["keys", "generate"], "3600");
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["keys", "rotate"], "3600");
    assert!(ok, "{err}");
    assert!(out.contains("published now, signs from"), "{out}");
    let (_, listed, _) = run(&["keys", "list"], "3600");
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 2, "{listed}");
    let state_of =
        |rows: &[Vec<&str>], s: &str| rows.iter().find(|r| r[1] == s).map(|r| r[0].to_string());
    let old = state_of(&rows, "signing").expect("one signing key");
    let new = state_of(&rows, "pending").expect("one pending key");

    let (ok, _, err) = run(&["keys", "retire", &old], "3600");
    assert!(!ok);
    assert!(err.contains("signs new tokens now"), "{err}");
    let (ok, _, err) = run(&["keys", "activate", &new], "3600");
    assert!(ok, "{err}");
    let (_, listed, _) = run(&["keys", "list"], "3600");
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(state_of(&rows, "signing"), Some(new.clone()), "{listed}");
    // No license exists yet, but a revocation list it signed may: its lifetime bounds the wait.
    let (ok, _, err) = run(&["keys", "retire", &old], "3600");
    assert!(!ok && err.contains("may be unexpired until"), "{err}");
    let (ok, out, err) = run(&["keys", "retire", &old, "--force"], "3600");
    assert!(ok && out.contains("retired"), "{err}");
    let (_, listed, _) = run(&["keys", "list"], "3600");
    assert!(listed.contains(&format!("{old}\tretired")), "{listed}");
    let (ok, _, err) = run(&["keys", "activate", &old], "3600");
    assert!(!ok && err.contains("retired"), "{err}");
}
