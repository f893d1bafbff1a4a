//! Signing keys in `keys/`: Ed25519 as PKCS#8 PEM. `license-<ms>.pem` files sign license tokens
//! (the newest signs; all are published in the JWKS so rotation never breaks offline clients);
//! `session.pem` signs login JWTs and is never published; `data.key` encrypts readable secrets.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::crypto::DataKey;
use crate::jws::{self, Signer};

/// Everything loaded from the keys folder.
#[derive(Clone, Debug)]
pub struct Keyring {
    /// Signs new license tokens (the newest `license-*.pem`).
    pub license: Signer,
    /// Every published license key, newest first.
    pub published: Vec<(String, VerifyingKey)>,
    /// Signs session JWTs.
    pub session: Signer,
    pub data: DataKey,
}

fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 PKCS#8 PEM key ({e})", path.display()))
}

fn write_new_key(path: &Path) -> anyhow::Result<SigningKey> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding key: {e}"))?;
    crate::fsutil::write_secret(path, pem.as_bytes())?;
    Ok(key)
}

/// The license signing key files, oldest first.
pub fn license_key_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("license-") && n.ends_with(".pem"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    files.sort();
    Ok(files)
}

/// Adds a new license signing key; it becomes the active signer at the next start. Returns its kid.
pub fn add_license_key(dir: &Path) -> anyhow::Result<String> {
    let ms = crate::timestamp::now_ms();
    let path = dir.join(format!("license-{ms:016}.pem"));
    let key = write_new_key(&path)?;
    Ok(jws::thumbprint(&key.verifying_key()))
}

impl Keyring {
    /// Loads the keys, generating whatever is missing (first start). Returns what was generated.
    pub fn load_or_init(dir: &Path) -> anyhow::Result<(Keyring, Vec<String>)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("ECOSIRE_KEYS_DIR: cannot create {}", dir.display()))?;
        let mut generated = vec![];
        if license_key_files(dir)?.is_empty() {
            generated.push(format!("license signing key {}", add_license_key(dir)?));
        }
        let session_path = dir.join("session.pem");
        if !session_path.exists() {
            write_new_key(&session_path)?;
            generated.push("session signing key".to_string());
        }
        if !dir.join("data.key").exists() {
            generated.push("data encryption key".to_string());
        }
        let data = DataKey::load_or_create(dir)?;
        let mut published = vec![];
        let mut newest = None;
        for path in license_key_files(dir)?.iter().rev() {
            let key = read_key(path)?;
            published.push((jws::thumbprint(&key.verifying_key()), key.verifying_key()));
            newest.get_or_insert(key);
        }
        let license = Signer::new(newest.expect("at least one key exists"), "JWT");
        let session = Signer::new(read_key(&session_path)?, "at+jwt");
        Ok((
            Keyring {
                license,
                published,
                session,
                data,
            },
            generated,
        ))
    }

    /// The published license key with this kid.
    pub fn license_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.published
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, v)| *v)
    }

    /// `{"keys": [...]}` for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.published.iter().map(|(_, k)| jws::jwk(k)).collect::<Vec<_>>() })
    }
}

/// The published license verification keys, read without creating anything (for offline tools).
pub fn published_keys(dir: &Path) -> anyhow::Result<Vec<(String, VerifyingKey)>> {
    license_key_files(dir)?
        .iter()
        .rev()
        .map(|p| read_key(p).map(|k| (jws::thumbprint(&k.verifying_key()), k.verifying_key())))
        .collect()
}
