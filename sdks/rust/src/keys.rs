//! The public keys that license tokens are checked against.
//!
//! The keys an application is built with are its root of trust: a token is believed only when
//! one of them, or a key fetched from the server's JWKS during this run (see
//! [`crate::ClientBuilder::public_keys`]), verifies it.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::Error;

/// A set of Ed25519 public keys by key id (`kid`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PublicKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

impl std::fmt::Debug for PublicKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
}

impl PublicKeys {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Ed25519 signing keys of a JWK Set (the body of `GET /.well-known/jwks.json`), e.g.
    /// embedded in the application with `include_str!`. Keys of other types, or published for
    /// another use or algorithm, are skipped; a set without any usable key is an error, since it
    /// could never verify a token.
    pub fn from_jwks(json: &str) -> Result<Self, Error> {
        let set: Jwks = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("public keys: not a JWK Set: {e}")))?;
        let mut keys = PublicKeys::new();
        for jwk in set.keys {
            let usable = jwk.kty == "OKP"
                && jwk.crv.as_deref() == Some("Ed25519")
                && jwk.use_.as_deref().is_none_or(|u| u == "sig")
                && jwk.alg.as_deref().is_none_or(|a| a == "EdDSA");
            let Some(x) = jwk.x.filter(|_| usable) else {
                continue;
            };
            let key = decode_x(&x)?;
            let kid = jwk.kid.unwrap_or_else(|| thumbprint(&key));
            keys.keys.insert(kid, key);
        }
        if keys.keys.is_empty() {
            return Err(Error::Config(
                "public keys: the JWK Set holds no Ed25519 signing key".into(),
            ));
        }
        Ok(keys)
    }

    /// Adds a raw 32-byte Ed25519 public key under its RFC 7638 thumbprint, which is the `kid`
    /// the ECOSIRE server gives it.
    pub fn with_ed25519(mut self, public_key: [u8; 32]) -> Result<Self, Error> {
        let key = VerifyingKey::from_bytes(&public_key)
            .map_err(|e| Error::Config(format!("public keys: not an Ed25519 key: {e}")))?;
        self.keys.insert(thumbprint(&key), key);
        Ok(self)
    }

    /// The key ids in the set.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn get(&self, kid: &str) -> Option<VerifyingKey> {
        self.keys.get(kid).copied()
    }
}

fn decode_x(x: &str) -> Result<VerifyingKey, Error> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD
        .decode(x)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Error::Config("public keys: a JWK's `x` is not 32 base64url bytes".into())
        })?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|e| Error::Config(format!("public keys: not an Ed25519 key: {e}")))
}

/// The RFC 7638 JWK thumbprint of an Ed25519 key: base64url(SHA-256 of the canonical JWK).
pub(crate) fn thumbprint(key: &VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn public(seed: u8) -> VerifyingKey {
        SigningKey::from_bytes(&[seed; 32]).verifying_key()
    }

    #[test]
    fn rfc_8037_thumbprint_example() {
        // RFC 8037 appendix A.3: the thumbprint of the example key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert_eq!(
            thumbprint(&key),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn a_jwks_keeps_only_ed25519_signing_keys() {
        let k = public(1);
        let x = URL_SAFE_NO_PAD.encode(k.as_bytes());
        let json = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "a", "use": "sig", "alg": "EdDSA"},
            {"kty": "OKP", "crv": "Ed25519", "x": x},
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "enc", "use": "enc"},
            {"kty": "OKP", "crv": "X25519", "x": x, "kid": "x"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa"},
        ]});
        let keys = PublicKeys::from_jwks(&json.to_string()).unwrap();
        let kids: Vec<&str> = keys.kids().collect();
        let tp = thumbprint(&k);
        let mut want = vec!["a", tp.as_str()];
        want.sort();
        assert_eq!(kids, want, "a kid-less key is filed under its thumbprint");
        assert_eq!(keys.get("a"), Some(k));
    }

    #[test]
    fn a_jwks_without_usable_keys_or_with_a_bad_key_is_an_error() {
        for json in [
            r#"{"keys": []}"#,
            r#"{"keys": [{"kty": "RSA", "kid": "r"}]}"#,
            r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}"#,
            r#"not json"#,
        ] {
            assert!(
                matches!(PublicKeys::from_jwks(json), Err(Error::Config(_))),
                "{json}"
            );
        }
    }

    #[test]
    fn a_raw_key_is_filed_under_its_thumbprint() {
        let k = public(2);
        let keys = PublicKeys::new().with_ed25519(k.to_bytes()).unwrap();
        assert_eq!(keys.get(&thumbprint(&k)), Some(k));
    }
}
