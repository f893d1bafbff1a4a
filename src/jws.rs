//! Compact JWS (RFC 7515) with EdDSA/Ed25519 (RFC 8037): the one signing path for license tokens
//! and session JWTs (they use distinct keys, `typ` and `aud`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An Ed25519 key with its key id.
#[derive(Clone)]
pub struct Signer {
    pub kid: String,
    key: SigningKey,
    /// The encoded header for `typ = JWT`, computed once.
    header_b64: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.kid)
    }
}

impl Signer {
    pub fn new(key: SigningKey, typ: &str) -> Self {
        let kid = thumbprint(&key.verifying_key());
        let header = serde_json::json!({"alg": "EdDSA", "typ": typ, "kid": kid});
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        Signer {
            kid,
            key,
            header_b64,
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn sign<C: Serialize>(&self, claims: &C) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let mut out = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 90);
        out.push_str(&self.header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
        let sig = self.key.sign(out.as_bytes());
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.to_bytes(), &mut out);
        out
    }
}

/// The RFC 7638 JWK thumbprint of an Ed25519 public key: a stable, standard `kid`.
pub fn thumbprint(key: &VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(crate::crypto::sha256(canonical.as_bytes()))
}

/// A public license-signing key as a JWK (RFC 7517; OKP/Ed25519 per RFC 8037), as published at
/// `/.well-known/jwks.json`. Any JOSE library imports it as it is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Jwk {
    /// Always `OKP` (octet key pair).
    #[schema(example = "OKP")]
    pub kty: &'static str,
    /// Always `Ed25519`.
    #[schema(example = "Ed25519")]
    pub crv: &'static str,
    /// The public key: 32 bytes, base64url without padding.
    #[schema(example = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")]
    pub x: String,
    /// The RFC 7638 thumbprint of the key; license tokens name their key with it in `kid`.
    #[schema(example = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")]
    pub kid: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub use_: &'static str,
    /// Always `EdDSA`.
    #[schema(example = "EdDSA")]
    pub alg: &'static str,
}

/// The public JWK of a key.
pub fn jwk(key: &VerifyingKey) -> Jwk {
    Jwk {
        kty: "OKP",
        crv: "Ed25519",
        x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
        kid: thumbprint(key),
        use_: "sig",
        alg: "EdDSA",
    }
}

/// A JWK Set (RFC 7517 §5): every key that may have signed a license token still in the field,
/// so clients can verify tokens across a key rotation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    #[error("token is not a compact JWS")]
    Malformed,
    #[error("unsupported algorithm or type")]
    Header,
    #[error("unknown key id")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    /// Present at all (whatever its value) means the signer requires extensions we do not
    /// implement (RFC 7515 §4.1.11: such a token must be rejected), e.g. RFC 7797's
    /// `b64: false`, which changes what the signature covers.
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    <serde::de::IgnoredAny as serde::Deserialize>::deserialize(d).map(|_| true)
}

/// Verifies a compact JWS and returns its claims. Only `alg: EdDSA` with the expected `typ` and
/// no `crit` is accepted (no `none`, no algorithm confusion, no extension we would misread),
/// checked before the signature; the key is chosen by `kid`.
pub fn verify<C: DeserializeOwned>(
    token: &str,
    typ: &str,
    key_for: impl Fn(&str) -> Option<VerifyingKey>,
) -> Result<C, JwsError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwsError::Malformed)?;
    if header.alg != "EdDSA" || header.typ.as_deref() != Some(typ) || header.crit {
        return Err(JwsError::Header);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(&key_for)
        .ok_or(JwsError::UnknownKey)?;
    let sig_bytes: [u8; 64] = URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(JwsError::Malformed)?;
    let signing_input = &token[..h.len() + 1 + p.len()];
    key.verify(signing_input.as_bytes(), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| JwsError::Signature)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| JwsError::Malformed)?;
    serde_json::from_slice(&payload).map_err(|_| JwsError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(SigningKey::from_bytes(&[3; 32]), "JWT")
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let s = signer();
        let t = s.sign(&serde_json::json!({"sub": "lic_1"}));
        let vk = s.verifying_key();
        let c: serde_json::Value = verify(&t, "JWT", |k| (k == s.kid).then_some(vk)).unwrap();
        assert_eq!(c["sub"], "lic_1");
    }

    #[test]
    fn tampering_wrong_type_and_none_are_rejected() {
        let s = signer();
        let vk = s.verifying_key();
        let t = s.sign(&serde_json::json!({"sub": "lic_1"}));
        let parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"lic_2"}"#);
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        let key = |k: &str| (k == s.kid).then_some(vk);
        assert_eq!(
            verify::<serde_json::Value>(&tampered, "JWT", key),
            Err(JwsError::Signature)
        );
        assert_eq!(
            verify::<serde_json::Value>(&t, "at+jwt", key),
            Err(JwsError::Header)
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(verify::<serde_json::Value>(&none, "JWT", key).is_err());
    }

    /// A token with this header, correctly signed by `s`.
    fn signed_with_header(s: &Signer, header: serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"lic_1"}"#)
        );
        let sig = s.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    #[test]
    fn any_crit_header_is_rejected_even_when_the_signature_is_good() {
        let s = signer();
        let vk = s.verifying_key();
        let key = |k: &str| (k == s.kid).then_some(vk);
        let good = signed_with_header(
            &s,
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": s.kid}),
        );
        assert!(verify::<serde_json::Value>(&good, "JWT", key).is_ok());
        for crit in [
            serde_json::json!(["exp"]),
            serde_json::json!(["b64"]),
            serde_json::json!([]),
            serde_json::Value::Null,
        ] {
            let t = signed_with_header(
                &s,
                serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": s.kid, "crit": crit, "b64": true}),
            );
            assert_eq!(
                verify::<serde_json::Value>(&t, "JWT", key),
                Err(JwsError::Header),
                "crit: {crit}"
            );
        }
    }

    #[test]
    fn only_eddsa_is_accepted_and_checked_before_the_signature() {
        let s = signer();
        let vk = s.verifying_key();
        let key = |k: &str| (k == s.kid).then_some(vk);
        for alg in ["Ed25519", "ES256", "HS256", "RS256", "none", "eddsa"] {
            // Signed with the right Ed25519 key: only the header can make it fail.
            let t = signed_with_header(
                &s,
                serde_json::json!({"alg": alg, "typ": "JWT", "kid": s.kid}),
            );
            assert_eq!(
                verify::<serde_json::Value>(&t, "JWT", key),
                Err(JwsError::Header),
                "{alg}"
            );
            // A garbage signature is never looked at: the header answers first.
            let garbage = format!("{}.AAAA", t.rsplit_once('.').unwrap().0);
            assert_eq!(
                verify::<serde_json::Value>(&garbage, "JWT", |_| panic!("no key is looked up")),
                Err(JwsError::Header),
                "{alg}"
            );
        }
    }
}
