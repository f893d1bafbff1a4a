//! Signing keys in `keys/`: Ed25519 as PKCS#8 v1 PEM (private key only: OpenSSL 3 and Python's
//! `cryptography` refuse the v2 form with the public key, which older versions wrote and which is
//! converted at start). `license-<ms>.pem` files sign license tokens (each with a sidecar
//! `license-<ms>.json` saying when it was published, from when it signs and whether it is
//! retired: staged rotation publishes a key a day before it signs, so clients that refresh their
//! JWKS know it before they meet it; every key not retired is published); `session.pem` signs login
//! JWTs and is never published; `data.key` encrypts readable secrets.
//!
//! Keys are generated only while nothing depends on them: once the database holds licenses or
//! sealed secrets, a missing `data.key` or license key means a lost or misplaced folder, and
//! replacing it would make every sealed value unreadable and every token in the field unverifiable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ed25519_dalek::pkcs8::{
    DecodePrivateKey, EncodePrivateKey, KeypairBytes, spki::der::pem::LineEnding,
};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::crypto::DataKey;
use crate::db::{Db, error_cause};
use crate::fsutil;
use crate::jws::{self, Signer};
use crate::timestamp::Timestamp;

/// Everything loaded from the keys folder.
#[derive(Clone, Debug)]
pub struct Keyring {
    /// The license signing keys with their schedules, re-read when the folder changes: see
    /// [`Keyring::signer`], [`Keyring::published`].
    pub license: Arc<LicenseKeys>,
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

/// The lifecycle of a license signing key, kept beside it as `license-<ms>.json` (the sidecar).
///
/// Why a file and not a table: the keys folder is already what every instance shares (or holds
/// a copy of) and what backups carry with the database; a key and its schedule travel together,
/// `ecosire keys …` works on the folder alone, and a restored folder can never disagree with a
/// database about which keys exist. A key without a sidecar (written before staged rotation)
/// was published and signing from the time in its file name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyState {
    /// When the key appeared in the JWKS.
    pub published_at: Timestamp,
    /// From when it signs: of the keys whose time has come, the one that came last signs.
    pub signs_from: Timestamp,
    /// When it left the JWKS; a retired key never signs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Timestamp>,
}

/// One license signing key of the folder.
#[derive(Debug, Clone)]
pub struct LicenseKey {
    pub kid: String,
    pub public: VerifyingKey,
    pub state: KeyState,
    pub file: PathBuf,
    signer: Arc<Signer>,
    /// The same key with the `typ` of revocation lists.
    list_signer: Arc<Signer>,
}

impl LicenseKey {
    fn retired(&self) -> bool {
        self.state.retired_at.is_some()
    }
}

/// The sidecar of a key file: `license-<ms>.pem` → `license-<ms>.json`.
fn sidecar(pem: &Path) -> PathBuf {
    pem.with_extension("json")
}

/// The unix milliseconds in a key file's name (`license-<ms>.pem`).
fn created_ms(pem: &Path) -> i64 {
    pem.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("license-"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

fn read_state(pem: &Path) -> anyhow::Result<KeyState> {
    let path = sidecar(pem);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a key state file ({e})", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let at = Timestamp(created_ms(pem));
            Ok(KeyState {
                published_at: at,
                signs_from: at,
                retired_at: None,
            })
        }
        Err(e) => anyhow::bail!("cannot read {}: {}", path.display(), fsutil::io_cause(&e)),
    }
}

fn write_state(pem: &Path, state: &KeyState) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(state).expect("serializable");
    fsutil::replace_secret(&sidecar(pem), format!("{json}\n").as_bytes())
}

/// Every license key of the folder (retired ones too), in signing order: by `signs_from`, then
/// by file name. `convert` rewrites v2 files as v1 (the server); tools only read.
fn read_license_keys(dir: &Path, convert: bool) -> anyhow::Result<Vec<LicenseKey>> {
    let mut keys = license_key_files(dir)?
        .into_iter()
        .map(|file| {
            let key = if convert {
                load_key(&file)?
            } else {
                read_key(&file)?.0
            };
            let public = key.verifying_key();
            Ok(LicenseKey {
                kid: jws::thumbprint(&public),
                public,
                state: read_state(&file)?,
                list_signer: Arc::new(Signer::new(key.clone(), crate::licensing::revocations::TYP)),
                signer: Arc::new(Signer::new(key, "JWT")),
                file,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    keys.sort_by(|a, b| (a.state.signs_from, &a.file).cmp(&(b.state.signs_from, &b.file)));
    Ok(keys)
}

/// The key that signs at `now_ms`: of the live keys whose `signs_from` has come, the last in
/// signing order; while none has come (only pending keys), the first pending one.
pub fn signing_key(keys: &[LicenseKey], now_ms: i64) -> Option<&LicenseKey> {
    let mut live = keys.iter().filter(|k| !k.retired());
    let first = live.clone().next();
    live.rfind(|k| k.state.signs_from.ms() <= now_ms).or(first)
}

/// How often a running server looks at the keys folder for changes (besides every JWKS request).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// What a folder stamp compares: each license key file and sidecar with its size and mtime.
type Stamp = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

fn stamp(dir: &Path) -> Stamp {
    let mut s: Stamp = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("license-"))
        })
        .map(|e| {
            let meta = e.metadata().ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            (e.path(), len, meta.and_then(|m| m.modified().ok()))
        })
        .collect();
    s.sort();
    s
}

struct Loaded {
    keys: Vec<LicenseKey>,
    stamp: Stamp,
}

/// The license signing keys of a running server, re-read when the folder changes so that a key
/// added, activated or retired by `ecosire keys …` (on this machine, or copied in from another)
/// is published and used without a restart.
pub struct LicenseKeys {
    dir: PathBuf,
    loaded: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for LicenseKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loaded = self.current();
        f.debug_list()
            .entries(loaded.keys.iter().map(|k| &k.kid))
            .finish()
    }
}

impl LicenseKeys {
    fn load(dir: &Path) -> anyhow::Result<LicenseKeys> {
        let stamp = stamp(dir);
        let keys = read_license_keys(dir, true)?;
        anyhow::ensure!(
            keys.iter().any(|k| !k.retired()),
            "{} has no license signing key that is not retired",
            dir.display()
        );
        Ok(LicenseKeys {
            dir: dir.to_path_buf(),
            loaded: RwLock::new(Arc::new(Loaded { keys, stamp })),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded.read().expect("keys lock").clone()
    }

    /// Re-reads the folder if a license key file or sidecar changed since the last read (a
    /// directory listing and a `stat` per key when nothing did). A folder that cannot be read
    /// keeps the keys in use, with a warning: a half-copied folder must not stop signing.
    pub fn refresh(&self) -> bool {
        let now = stamp(&self.dir);
        if now == self.current().stamp {
            return false;
        }
        match read_license_keys(&self.dir, true) {
            Ok(keys) if keys.iter().any(|k| !k.retired()) => {
                let kids: Vec<&str> = keys
                    .iter()
                    .filter(|k| !k.retired())
                    .map(|k| k.kid.as_str())
                    .collect();
                tracing::info!(keys = ?kids, "license signing keys re-read from the keys folder");
                *self.loaded.write().expect("keys lock") = Arc::new(Loaded { keys, stamp: now });
                true
            }
            Ok(_) => {
                tracing::warn!(
                    "the keys folder has no live license signing key; keeping the keys in use"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot re-read the keys folder; keeping the keys in use");
                false
            }
        }
    }
}

fn new_license_key(dir: &Path, lead: Duration) -> anyhow::Result<(String, KeyState)> {
    let ms = crate::timestamp::now_ms();
    let path = dir.join(format!("license-{ms:016}.pem"));
    let lead_ms = i64::try_from(lead.as_millis()).unwrap_or(i64::MAX);
    let state = KeyState {
        published_at: Timestamp(ms),
        signs_from: Timestamp(ms.saturating_add(lead_ms).min(crate::timestamp::MAX_MS)),
        retired_at: None,
    };
    // The schedule first: a server re-reading the folder between the two writes must never find
    // the key without it (it would take it for an old key that signs at once).
    write_state(&path, &state)?;
    let key = write_new_key(&path)?;
    Ok((jws::thumbprint(&key.verifying_key()), state))
}

/// Adds a license signing key that signs at once (a new installation's first key, or an
/// emergency replacement). Returns its kid.
pub fn add_license_key(dir: &Path) -> anyhow::Result<String> {
    new_license_key(dir, Duration::ZERO)
        .map(|(kid, _)| kid)
        .map_err(in_keys_dir)
}

/// Staged rotation: adds a license signing key that is published at once and signs only `lead`
/// later, so clients that refresh their JWKS meanwhile know its kid before meeting it.
pub fn rotate_license_key(dir: &Path, lead: Duration) -> anyhow::Result<(String, KeyState)> {
    new_license_key(dir, lead).map_err(in_keys_dir)
}

/// Every license key of the folder, retired ones included, in signing order (for `keys list`).
pub fn license_keys(dir: &Path) -> anyhow::Result<Vec<LicenseKey>> {
    read_license_keys(dir, false).map_err(in_keys_dir)
}

fn find<'a>(keys: &'a [LicenseKey], kid: &str) -> anyhow::Result<&'a LicenseKey> {
    keys.iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| anyhow::anyhow!("no license signing key with kid {kid} in the keys folder"))
}

/// `ecosire keys activate KID`: the key signs from now on (it is already published).
pub fn activate_license_key(dir: &Path, kid: &str) -> anyhow::Result<KeyState> {
    let keys = read_license_keys(dir, false).map_err(in_keys_dir)?;
    let key = find(&keys, kid)?;
    anyhow::ensure!(
        !key.retired(),
        "key {kid} is retired; rotate to a new key instead"
    );
    let now = Timestamp::now();
    let state = KeyState {
        signs_from: key.state.signs_from.min(now),
        ..key.state.clone()
    };
    write_state(&key.file, &state).map_err(in_keys_dir)?;
    Ok(state)
}

/// When the tokens `kid` signed are all expired: it signed until a later key's `signs_from`
/// came, and no token lives longer than `max_token_life`. `None` while it still signs; a key
/// that never signed (still pending) may go at once.
pub fn retire_after(
    keys: &[LicenseKey],
    kid: &str,
    max_token_life: Duration,
    now_ms: i64,
) -> anyhow::Result<Option<Timestamp>> {
    let key = find(keys, kid)?;
    if key.state.signs_from.ms() > now_ms {
        return Ok(Some(Timestamp(now_ms)));
    }
    let pos = keys.iter().position(|k| k.kid == kid).expect("found");
    let superseded = keys[pos + 1..]
        .iter()
        .map(|k| k.state.signs_from.ms())
        .find(|&from| from <= now_ms);
    let life = i64::try_from(max_token_life.as_millis()).unwrap_or(i64::MAX);
    Ok(superseded.map(|at| Timestamp(at.saturating_add(life))))
}

/// `ecosire keys retire KID`: removes the key from the JWKS once no token it signed can be
/// unexpired (`max_token_life`: the longest offline lease, or a revocation list's lifetime if
/// longer), earlier only with `force`. Never the key that signs now.
pub fn retire_license_key(
    dir: &Path,
    kid: &str,
    max_token_life: Duration,
    force: bool,
) -> anyhow::Result<KeyState> {
    let keys = read_license_keys(dir, false).map_err(in_keys_dir)?;
    let now = Timestamp::now();
    let key = find(&keys, kid)?;
    if key.retired() {
        return Ok(key.state.clone());
    }
    match retire_after(&keys, kid, max_token_life, now.ms())? {
        None => anyhow::bail!(
            "key {kid} cannot be retired: it signs new tokens now; activate its successor first \
             (ecosire keys activate KID)"
        ),
        Some(until) if until > now && !force => anyhow::bail!(
            "key {kid} cannot be retired yet: tokens it signed may be unexpired until {}; retire \
             it then, or with --force (clients holding such tokens then fail offline checks)",
            until.to_rfc3339()
        ),
        Some(_) => {}
    }
    let state = KeyState {
        retired_at: Some(now),
        ..key.state.clone()
    };
    write_state(&key.file, &state).map_err(in_keys_dir)?;
    Ok(state)
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
            let (kid, _) = new_license_key(dir, Duration::ZERO)?;
            generated.push(format!("license signing key {kid}"));
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
        let license = Arc::new(LicenseKeys::load(dir)?);
        let session = Signer::new(load_key(&session_path)?, "at+jwt");
        Ok((
            Keyring {
                license,
                session,
                data,
            },
            generated,
        ))
    }

    /// The key that signs license tokens now (see [`KeyState`]).
    pub fn signer(&self) -> Arc<Signer> {
        self.signing(|k| &k.signer)
    }

    /// The same key, for revocation lists (`typ: revocations+jwt`).
    pub fn list_signer(&self) -> Arc<Signer> {
        self.signing(|k| &k.list_signer)
    }

    fn signing(&self, which: impl Fn(&LicenseKey) -> &Arc<Signer>) -> Arc<Signer> {
        let loaded = self.license.current();
        let key = signing_key(&loaded.keys, crate::timestamp::now_ms())
            .expect("a loaded key set has a live key");
        which(key).clone()
    }

    /// Every published (not retired) license key, last in signing order first: pending keys
    /// included.
    pub fn published(&self) -> Vec<(String, VerifyingKey)> {
        self.license
            .current()
            .keys
            .iter()
            .rev()
            .filter(|k| !k.retired())
            .map(|k| (k.kid.clone(), k.public))
            .collect()
    }

    /// The published license key with this kid.
    pub fn license_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.license
            .current()
            .keys
            .iter()
            .find(|k| k.kid == kid && !k.retired())
            .map(|k| k.public)
    }

    /// Re-reads the license keys if the folder changed (see [`LicenseKeys::refresh`]).
    pub fn refresh(&self) -> bool {
        self.license.refresh()
    }

    /// `{"keys": [...]}` for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> jws::Jwks {
        jws::Jwks {
            keys: self.published().iter().map(|(_, k)| jws::jwk(k)).collect(),
        }
    }
}

/// The published license verification keys, read without creating or converting anything (for
/// offline tools).
pub fn published_keys(dir: &Path) -> anyhow::Result<Vec<(String, VerifyingKey)>> {
    let keys = read_license_keys(dir, false).map_err(in_keys_dir)?;
    Ok(keys
        .into_iter()
        .rev()
        .filter(|k| !k.retired())
        .map(|k| (k.kid, k.public))
        .collect())
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
