//! Small cryptographic helpers shared by every module: digests, random tokens, the data key that
//! encrypts secrets we must be able to read again (license keys, webhook secrets), and ids.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of `data`, lowercase hex: the form in which API keys, session ids and license keys are
/// stored and looked up.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Constant-time equality for secrets.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Crockford's base32 alphabet (no I, L, O, U).
pub const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// `n` characters drawn uniformly from base62 with the OS RNG.
pub fn random_base62(n: usize) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..n)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect()
}

/// `n` characters of Crockford base32 (5 random bits each).
pub fn random_crockford(n: usize) -> String {
    // One read from the OS generator for the whole string, not one per character.
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| CROCKFORD[(b & 31) as usize] as char)
        .collect()
}

/// A new id: `<prefix>_` + a UUIDv7 in Crockford base32 (26 chars, sorts by creation time).
pub fn new_id(prefix: &str) -> String {
    let v = uuid::Uuid::now_v7().as_u128();
    let mut s = String::with_capacity(prefix.len() + 27);
    s.push_str(prefix);
    s.push('_');
    for i in (0..26).rev() {
        s.push(CROCKFORD[((v >> (5 * i)) & 31) as usize] as char);
    }
    s
}

/// The symmetric key (XChaCha20-Poly1305) that encrypts readable secrets at rest. It lives in
/// `keys/data.key`, never in the database, so a copy of the database alone reveals no secret.
#[derive(Clone)]
pub struct DataKey(XChaCha20Poly1305);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        DataKey(XChaCha20Poly1305::new(bytes.into()))
    }

    /// Writes a new random key to `path` (base64 of 32 bytes, mode 0600); never overwrites one.
    pub fn generate(path: &Path) -> anyhow::Result<()> {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        crate::fsutil::write_secret(path, STANDARD_NO_PAD.encode(key).as_bytes())
    }

    /// Reads a key written by [`DataKey::generate`].
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = crate::fsutil::read_to_string(path)?;
        let bytes = STANDARD_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .with_context(|| format!("{} is not base64 of 32 bytes", path.display()))?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Encrypts `plain`, bound to `aad` (the owning row's id, so ciphertexts cannot be swapped
    /// between rows). Output: base64(nonce ‖ ciphertext).
    pub fn seal(&self, plain: &[u8], aad: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        STANDARD_NO_PAD.encode(out)
    }

    pub fn open(&self, sealed: &str, aad: &str) -> anyhow::Result<Vec<u8>> {
        let raw = STANDARD_NO_PAD
            .decode(sealed)
            .context("sealed value is not base64")?;
        anyhow::ensure!(raw.len() > 24, "sealed value too short");
        let (nonce, ct) = raw.split_at(24);
        self.0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealed value does not decrypt under the data key"))
    }

    pub fn open_string(&self, sealed: &str, aad: &str) -> anyhow::Result<String> {
        String::from_utf8(self.open(sealed, aad)?).context("sealed value is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape_and_sort_by_time() {
        let a = new_id("lic");
        let b = new_id("lic");
        assert_eq!(a.len(), 4 + 26);
        assert!(a.starts_with("lic_"));
        assert!(a[4..].bytes().all(|c| CROCKFORD.contains(&c)));
        assert!(a < b, "{a} < {b}");
    }

    #[test]
    fn data_key_round_trips_and_binds_aad() {
        let k = DataKey::from_bytes(&[7; 32]);
        let s = k.seal(b"secret", "lic_1");
        assert_eq!(k.open(&s, "lic_1").unwrap(), b"secret");
        assert!(k.open(&s, "lic_2").is_err());
        assert!(!s.contains("secret"));
    }

    #[test]
    fn random_tokens_use_their_alphabets() {
        let t = random_base62(32);
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(t, random_base62(32));
    }
}
