//! Signing keys in `keys/`: Ed25519 as PKCS#8 v1 PEM (private key only: OpenSSL 3 and Python's
//! `cryptography` refuse the v2 form with the public key, which older versions wrote and which is
//! converted at start). `license-<ms>.pem` files sign license tokens (the newest signs; all are
//! published in the JWKS so rotation never breaks offline clients); `session.pem` signs login
//! JWTs and is never published; `data.key` encrypts readable secrets.
//!
//! Keys are generated only while nothing depends on them: once the database holds licenses or
//! sealed secrets, a missing `data.key` or license key means a lost or misplaced folder, and
//! replacing it would make every sealed value unreadable and every token in the field unverifiable.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{
    DecodePrivateKey, EncodePrivateKey, KeypairBytes, spki::der::pem::LineEnding,
};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::crypto::DataKey;
use crate::db::{Db, error_cause};
use crate::fsutil;
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

/// Whether [`Keyring::load`] may create missing keys.
#[derive(Clone, Debug)]
pub enum KeyPolicy {
    /// Nothing depends on the keys yet (a new installation): create whatever is missing.
    MayGenerate,
    /// The database holds data that needs these very keys: a missing one stops the start.
    MustExist(Dependents),
}

/// What the database holds that needs the keys folder.
#[derive(Clone, Debug, Default)]
pub struct Dependents {
    /// Licenses: keys sealed with `data.key`, tokens signed with the license keys.
    pub licenses: i64,
    /// Webhook endpoints: signing secrets sealed with `data.key`.
    pub webhook_secrets: i64,
    /// Webhook events (outbox rows) carrying a sealed license key.
    pub sealed_events: i64,
    /// One license's id and sealed key, to check that `data.key` is the key that sealed it.
    sample: Option<(String, String)>,
}

impl KeyPolicy {
    /// Asks the (migrated) database what depends on the keys.
    pub async fn for_database(db: &Db) -> anyhow::Result<KeyPolicy> {
        let failed =
            |e: sqlx::Error| anyhow::anyhow!("reading what the keys protect: {}", error_cause(&e));
        let count = |sql: &'static str| async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&db.pool)
                .await
                .map_err(failed)
        };
        let held = Dependents {
            licenses: count("SELECT COUNT(*) FROM licenses").await?,
            webhook_secrets: count("SELECT COUNT(*) FROM webhook_endpoints").await?,
            sealed_events: count("SELECT COUNT(*) FROM outbox WHERE key_sealed IS NOT NULL")
                .await?,
            sample: sqlx::query_as("SELECT id, key_sealed FROM licenses LIMIT 1")
                .fetch_optional(&db.pool)
                .await
                .map_err(failed)?,
        };
        let nothing_sealed = held.licenses + held.webhook_secrets + held.sealed_events == 0;
        Ok(if nothing_sealed {
            KeyPolicy::MayGenerate
        } else {
            KeyPolicy::MustExist(held)
        })
    }
}

/// "12 licenses", "1 license".
fn counted(n: i64, one: &str, many: &str) -> Option<String> {
    match n {
        0 => None,
        1 => Some(format!("1 {one}")),
        n => Some(format!("{n} {many}")),
    }
}

/// "a", "a and b", "a, b and c".
fn and_list(items: Vec<String>) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

const RESTORE: &str = "restore the keys folder from backup (or point ECOSIRE_KEYS_DIR at it)";

impl Dependents {
    /// Refuses to go on when a key the database needs is missing.
    fn require(&self, dir: &Path, data_missing: bool, license_missing: bool) -> anyhow::Result<()> {
        let mut problems = vec![];
        let sealed = [
            counted(self.licenses, "license", "licenses"),
            counted(
                self.webhook_secrets,
                "webhook endpoint secret",
                "webhook endpoint secrets",
            ),
            counted(self.sealed_events, "webhook event", "webhook events"),
        ];
        let sealed: Vec<String> = sealed.into_iter().flatten().collect();
        if data_missing && !sealed.is_empty() {
            problems.push(format!(
                "{} is missing but the database holds {} sealed with it",
                dir.join("data.key").display(),
                and_list(sealed)
            ));
        }
        if license_missing && let Some(licenses) = counted(self.licenses, "license", "licenses") {
            problems.push(format!(
                "{} has no license signing key (license-*.pem) but the database holds {licenses} \
                 whose tokens it signed",
                dir.display()
            ));
        }
        if problems.is_empty() {
            return Ok(());
        }
        anyhow::bail!("{}; {RESTORE}", problems.join("; "))
    }

    /// Refuses a `data.key` that does not open what the database holds (another installation's
    /// folder): every license key would answer 500.
    fn check_data_key(&self, data: &DataKey, path: &Path) -> anyhow::Result<()> {
        match &self.sample {
            Some((id, sealed)) if data.open(sealed, id).is_err() => anyhow::bail!(
                "{} does not open the license keys in the database (another installation's \
                 keys?); {RESTORE}",
                path.display()
            ),
            _ => Ok(()),
        }
    }
}

/// Errors from the keys folder name the variable that points at it.
fn in_keys_dir(e: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!("ECOSIRE_KEYS_DIR: {e:#}")
}

/// Reads a key file (PKCS#8 v1 or v2) and says whether it is in the old v2 form.
fn read_key(path: &Path) -> anyhow::Result<(SigningKey, bool)> {
    let pem = zeroize::Zeroizing::new(fsutil::read_to_string(path)?);
    let not_a_key = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("{} is not an Ed25519 PKCS#8 PEM key ({e})", path.display())
    };
    let pair = KeypairBytes::from_pkcs8_pem(&pem).map_err(|e| not_a_key(&e))?;
    // Checks that a v2 file's public key belongs to its private key.
    let key = SigningKey::try_from(&pair).map_err(|e| not_a_key(&e))?;
    Ok((key, pair.public_key.is_some()))
}

/// Reads a key file, rewriting a v2 file as v1 so standard tools can read it.
fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    let (key, v2) = read_key(path)?;
    if v2 {
        // A read-only keys folder (e.g. a mounted secret) still serves; only the format waits.
        match v1_pem(&key).and_then(|pem| fsutil::replace_secret(path, pem.as_bytes())) {
            Ok(()) => tracing::info!(
                file = %path.display(),
                "converted a signing key from PKCS#8 v2 to v1 (same key, readable by OpenSSL)"
            ),
            Err(e) => tracing::warn!(
                file = %path.display(),
                error = %format!("{e:#}"),
                "could not convert a PKCS#8 v2 signing key to v1; it still works here"
            ),
        }
    }
    Ok(key)
}

/// PKCS#8 v1 (RFC 5208: the private key only), the form every PKCS#8 reader accepts.
fn v1_pem(key: &SigningKey) -> anyhow::Result<zeroize::Zeroizing<String>> {
    KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| anyhow::anyhow!("encoding key: {e}"))
}

fn write_new_key(path: &Path) -> anyhow::Result<SigningKey> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    fsutil::write_secret(path, v1_pem(&key)?.as_bytes())?;
    Ok(key)
}

/// The license signing key files, oldest first.
fn license_key_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
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
        Err(e) => anyhow::bail!("cannot read {}: {}", dir.display(), fsutil::io_cause(&e)),
    };
    files.sort();
    Ok(files)
}

fn new_license_key(dir: &Path) -> anyhow::Result<String> {
    let ms = crate::timestamp::now_ms();
    let path = dir.join(format!("license-{ms:016}.pem"));
    let key = write_new_key(&path)?;
    Ok(jws::thumbprint(&key.verifying_key()))
}

/// Adds a new license signing key; it becomes the active signer at the next start. Returns its kid.
pub fn add_license_key(dir: &Path) -> anyhow::Result<String> {
    new_license_key(dir).map_err(in_keys_dir)
}

/// Whether `path` exists; an error (e.g. an unreadable folder) is not taken for absence, which
/// would lead to generating a key.
fn exists(path: &Path) -> anyhow::Result<bool> {
    path.try_exists()
        .map_err(|e| anyhow::anyhow!("cannot read {}: {}", path.display(), fsutil::io_cause(&e)))
}

impl Keyring {
    /// Loads the keys of a server whose database is `db` (migrated), creating missing ones only
    /// while the database holds nothing that needs them. Returns what was generated.
    pub async fn load_for(dir: &Path, db: &Db) -> anyhow::Result<(Keyring, Vec<String>)> {
        Self::load(dir, &KeyPolicy::for_database(db).await?)
    }

    /// Loads the keys, generating whatever is missing. For tools that do not know the database;
    /// the server uses [`Keyring::load_for`].
    pub fn load_or_init(dir: &Path) -> anyhow::Result<(Keyring, Vec<String>)> {
        Self::load(dir, &KeyPolicy::MayGenerate)
    }

    /// Loads the keys, creating missing ones as `policy` allows; v2 key files are rewritten as
    /// v1. Returns what was generated. Every error is one line naming `ECOSIRE_KEYS_DIR`.
    pub fn load(dir: &Path, policy: &KeyPolicy) -> anyhow::Result<(Keyring, Vec<String>)> {
        Self::load_inner(dir, policy).map_err(in_keys_dir)
    }

    fn load_inner(dir: &Path, policy: &KeyPolicy) -> anyhow::Result<(Keyring, Vec<String>)> {
        fsutil::create_private_dir(dir)?;
        let data_path = dir.join("data.key");
        let session_path = dir.join("session.pem");
        let data_missing = !exists(&data_path)?;
        let license_missing = license_key_files(dir)?.is_empty();
        if let KeyPolicy::MustExist(held) = policy {
            held.require(dir, data_missing, license_missing)?;
        }
        let mut generated = vec![];
        if license_missing {
            generated.push(format!("license signing key {}", new_license_key(dir)?));
        }
        if !exists(&session_path)? {
            write_new_key(&session_path)?;
            // Losing it only ends login sessions (people log in again), so it is replaced even
            // when the database is in use.
            generated.push(match policy {
                KeyPolicy::MayGenerate => "session signing key".to_string(),
                KeyPolicy::MustExist(_) => {
                    "session signing key (it was missing: existing login sessions end)".to_string()
                }
            });
        }
        if data_missing {
            DataKey::generate(&data_path)?;
            generated.push("data encryption key".to_string());
        }
        let data = DataKey::load(&data_path)?;
        if let KeyPolicy::MustExist(held) = policy {
            held.check_data_key(&data, &data_path)?;
        }
        let mut published = vec![];
        let mut newest = None;
        for path in license_key_files(dir)?.iter().rev() {
            let key = load_key(path)?;
            published.push((jws::thumbprint(&key.verifying_key()), key.verifying_key()));
            newest.get_or_insert(key);
        }
        let newest = newest
            .ok_or_else(|| anyhow::anyhow!("{} has no license signing key", dir.display()))?;
        let license = Signer::new(newest, "JWT");
        let session = Signer::new(load_key(&session_path)?, "at+jwt");
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
    pub fn jwks(&self) -> jws::Jwks {
        jws::Jwks {
            keys: self.published.iter().map(|(_, k)| jws::jwk(k)).collect(),
        }
    }
}

/// The published license verification keys, read without creating or converting anything (for
/// offline tools).
pub fn published_keys(dir: &Path) -> anyhow::Result<Vec<(String, VerifyingKey)>> {
    let read = || -> anyhow::Result<Vec<_>> {
        license_key_files(dir)?
            .iter()
            .rev()
            .map(|p| {
                let (k, _) = read_key(p)?;
                Ok((jws::thumbprint(&k.verifying_key()), k.verifying_key()))
            })
            .collect()
    };
    read().map_err(in_keys_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(licenses: i64, webhook_secrets: i64) -> Dependents {
        Dependents {
            licenses,
            webhook_secrets,
            ..Dependents::default()
        }
    }

    #[test]
    fn a_missing_key_the_database_needs_is_named_with_what_needs_it() {
        let dir = Path::new("keys");
        let e = held(12, 0).require(dir, true, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "keys/data.key is missing but the database holds 12 licenses sealed with it; \
             restore the keys folder from backup (or point ECOSIRE_KEYS_DIR at it)"
        );
        let e = held(1, 2).require(dir, true, true).unwrap_err().to_string();
        assert!(
            e.contains("holds 1 license and 2 webhook endpoint secrets sealed with it"),
            "{e}"
        );
        assert!(e.contains("keys has no license signing key"), "{e}");
        // Webhook secrets need the data key, not the license keys.
        held(0, 2).require(dir, false, true).unwrap();
    }
}
