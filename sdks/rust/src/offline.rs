//! Air-gapped activation: for a machine that never reaches the server.
//!
//! 1. [`LicenseClient::request_offline_activation`] makes a fresh Ed25519 device key, keeps it
//!    (with the request's nonce) beside the cache file, and returns the signed request: a text
//!    block to carry to a connected machine (the customer portal, or
//!    `ecosire offline activate`), which answers with a license file.
//! 2. [`LicenseClient::import_license_file`] checks the file against the pinned keys, this
//!    machine's fingerprint, the product and the request's nonce, and stores it: from then on
//!    [`LicenseClient::check`] answers [`crate::Status::Offline`] from it until its lease ends,
//!    exactly as from a token an online check stored.
//! 3. [`LicenseClient::deactivation_proof`] gives the license up: it forgets the license file and
//!    the device key, and returns a proof signed by that key, which frees the seat once carried
//!    to the server (`POST /api/licenses/offline-deactivations`).

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Record, owner_only};
use crate::client::LicenseClient;
use crate::clock::{from_unix, unix};
use crate::error::Error;
use crate::keys::thumbprint;
use crate::token::{self, Grant};

/// The `typ` of an activation request and of a deactivation proof (the server refuses either
/// in place of the other).
const REQUEST_TYP: &str = "ecosire-activation-request+jwt";
const PROOF_TYP: &str = "ecosire-deactivation-proof+jwt";

/// What the machine keeps between the request and the proof (0600, beside the cache file).
#[derive(Serialize, Deserialize)]
struct Pending {
    key: String,
    fingerprint: String,
    nonce: String,
    /// The device key's 32-byte seed, base64url.
    device_seed: String,
}

/// A compact JWS over `claims`, signed by `device` and naming it by thumbprint.
fn sign(device: &SigningKey, typ: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({
        "alg": "EdDSA",
        "typ": typ,
        "kid": thumbprint(&device.verifying_key()),
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = device.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

impl LicenseClient {
    fn pending_file(&self) -> PathBuf {
        self.cache_file().with_extension("device")
    }

    async fn pending(&self) -> Result<Pending, Error> {
        let path = self.pending_file();
        tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Error::NoOfflineRequest)
    }

    /// Makes an activation request for this machine (its fingerprint, a new device key) and
    /// returns it as a text block for a person to carry to a connected machine. A new request
    /// replaces any earlier one that was not imported.
    pub async fn request_offline_activation(&self, key: &str) -> Result<String, Error> {
        let device = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let pending = Pending {
            key: key.to_string(),
            fingerprint: self.machine_fingerprint().to_string(),
            nonce: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>()),
            device_seed: URL_SAFE_NO_PAD.encode(device.to_bytes()),
        };
        let request = sign(
            &device,
            REQUEST_TYP,
            &serde_json::json!({
                "key": pending.key,
                "fingerprint": pending.fingerprint,
                "device_key": URL_SAFE_NO_PAD.encode(device.verifying_key().as_bytes()),
                "nonce": pending.nonce,
                "iat": unix(self.now()),
                "platform": std::env::consts::OS,
            }),
        );
        let bytes = serde_json::to_vec(&pending).expect("serializable");
        let path = self.pending_file();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("device.tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut f = owner_only().write(true).create_new(true).open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        Ok(request)
    }

    /// Imports the license file the server answered the pending request with. It must be signed
    /// by a trusted key, bound to this machine and product, answer this machine's own request
    /// (its nonce) and not have expired; it is then stored, and [`LicenseClient::check`] answers
    /// from it while the server cannot be reached.
    pub async fn import_license_file(&self, file: &str) -> Result<Grant, Error> {
        let pending = self.pending().await?;
        let file: String = file.chars().filter(|c| !c.is_whitespace()).collect();
        let claims = token::verify(&file, |kid| self.known_key(kid))?;
        let record = Record::new(&pending.key, &pending.fingerprint);
        self.expected(&record, None).check(&claims)?;
        if claims.nonce.as_deref() != Some(pending.nonce.as_str()) {
            return Err(Error::ReplayedAnswer);
        }
        let now = unix(self.now());
        if now >= claims.exp {
            return Err(Error::OfflineExpired {
                expired_at: from_unix(claims.exp),
                reason: crate::OfflineReason::Unreachable("importing a license file".into()),
            });
        }
        let record = Record {
            product_id: Some(claims.product.clone()),
            token: Some(file.clone()),
            // Signed by the server when it answered this request: server time, like an online
            // answer's.
            trusted_time: claims.iat,
            seen_time: claims.iat.max(now),
            ..record
        };
        self.store(record).await?;
        Ok(Grant::new(claims, file))
    }

    /// Gives up this machine's offline activation: forgets the license file and the device key,
    /// and returns the deactivation proof (signed by that key) that frees the seat once carried
    /// to the server or the customer portal.
    pub async fn deactivation_proof(&self) -> Result<String, Error> {
        let pending = self.pending().await?;
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&pending.device_seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(Error::NoOfflineRequest)?;
        let device = SigningKey::from_bytes(&seed);
        let record = self.current().await?.record;
        let license_id = record
            .token
            .as_deref()
            .and_then(|t| token::verify(t, |kid| self.known_key(kid)).ok())
            .map(|c| c.sub)
            .ok_or(Error::NotActivated)?;
        let proof = sign(
            &device,
            PROOF_TYP,
            &serde_json::json!({
                "sub": license_id,
                "fingerprint": record.fingerprint,
                "iat": unix(self.now()),
                "jti": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
            }),
        );
        self.on_cache(Cache::remove).await?;
        let path = self.pending_file();
        tokio::task::spawn_blocking(move || std::fs::remove_file(path))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        Ok(proof)
    }
}
