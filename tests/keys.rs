//! Key files that standard tools read: PKCS#8 v1 for new keys, and v2 files written by earlier
//! versions converted in place at start with their kid unchanged. Checked with the `openssl` CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use ecosire::keyring::Keyring;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;

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
            ring.license.verifying_key()
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
    assert_eq!(ring.license.kid, kid);
    assert_eq!(ring.published.len(), 1);
    assert_eq!(ring.published[0].0, kid);
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
    assert_eq!(again.license.kid, kid);
    // The offline verifier reads both forms without writing anything.
    assert_eq!(ecosire::keyring::published_keys(&keys).unwrap()[0].0, kid);
}
