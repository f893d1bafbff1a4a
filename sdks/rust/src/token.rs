//! License tokens: compact JWS (RFC 7515) signed with Ed25519 (RFC 8037), as API.md § Signed
//! license tokens describes them. Verification is strict: `alg` must be `EdDSA`, `typ` `JWT`, no
//! `crit`, and the key is chosen by `kid` among keys the caller trusts — the token never
//! chooses its own algorithm or key.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::clock::from_unix;

/// The audience of every license token.
pub const AUDIENCE: &str = "ecosire:license";

/// Why a token was not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("unsupported header (only alg EdDSA, typ JWT, no crit)")]
    Header,
    #[error("signed by key id {0:?}, which is not among the trusted public keys")]
    UnknownKey(String),
    #[error("bad signature")]
    Signature,
    #[error("claim `{claim}` does not match: {detail}")]
    Claim { claim: &'static str, detail: String },
}

/// The claims of a license token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The license id.
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The product id.
    pub product: String,
    pub entitlements: Vec<String>,
    pub max_activations: i64,
    pub license_expires_at: Option<i64>,
    pub fingerprint: Option<String>,
    pub nonce: Option<String>,
}

/// The header's key id, after checking that the header is one we accept, so a caller can fetch
/// the key before verifying.
pub(crate) fn kid(token: &str) -> Result<String, TokenError> {
    typed_kid(token, "JWT")
}

/// [`kid`] for a JWS of another `typ` (revocation lists).
pub(crate) fn typed_kid(token: &str, typ: &str) -> Result<String, TokenError> {
    let h = token.split('.').next().ok_or(TokenError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    let text = |name: &str| header.get(name).and_then(|v| v.as_str());
    // `crit` present at all, whatever its value, announces extensions we do not implement
    // (RFC 7515 §4.1.11): such a token must be refused.
    if text("alg") != Some("EdDSA") || text("typ") != Some(typ) || header.contains_key("crit") {
        return Err(TokenError::Header);
    }
    text("kid").map(String::from).ok_or(TokenError::Header)
}

/// Checks the header and the signature with the key `key_for` gives for the token's `kid`, then
/// decodes the claims. Claims are not judged here: see [`Expected::check`].
pub(crate) fn verify(
    token: &str,
    key_for: impl Fn(&str) -> Option<VerifyingKey>,
) -> Result<Claims, TokenError> {
    verify_typed(token, "JWT", key_for)
}

/// [`verify`] for a JWS of another `typ` and claims type (revocation lists).
pub(crate) fn verify_typed<C: serde::de::DeserializeOwned>(
    token: &str,
    typ: &str,
    key_for: impl Fn(&str) -> Option<VerifyingKey>,
) -> Result<C, TokenError> {
    let kid = typed_kid(token, typ)?;
    let key = key_for(&kid).ok_or(TokenError::UnknownKey(kid))?;
    let (signing_input, s) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (_, p) = signing_input
        .split_once('.')
        .filter(|(_, p)| !p.contains('.'))
        .ok_or(TokenError::Malformed)?;
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(TokenError::Malformed)?;
    // Strict verification also refuses non-canonical and small-order encodings, which a signer
    // using ed25519-dalek (the server) never produces.
    key.verify_strict(signing_input.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| TokenError::Signature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)
}

/// What a token must say to be about this license, this device and this product.
pub(crate) struct Expected<'a> {
    pub issuer: &'a str,
    /// The product id; `None` while the client knows the product only by slug and has not yet
    /// learnt its id from a verified online answer.
    pub product_id: Option<&'a str>,
    pub fingerprint: &'a str,
}

impl Expected<'_> {
    pub fn check(&self, c: &Claims) -> Result<(), TokenError> {
        let claim = |claim, want: &str, got: Option<&str>| match got {
            Some(g) if g == want => Ok(()),
            _ => Err(TokenError::Claim {
                claim,
                detail: format!("expected {want:?}, got {got:?}"),
            }),
        };
        claim("aud", AUDIENCE, Some(&c.aud))?;
        claim("iss", self.issuer, Some(&c.iss))?;
        // A token bound to no device, or to another one, says nothing about this machine.
        claim("fingerprint", self.fingerprint, c.fingerprint.as_deref())?;
        if let Some(p) = self.product_id {
            claim("product", p, Some(&c.product))?;
        }
        if c.exp < c.iat {
            return Err(TokenError::Claim {
                claim: "exp",
                detail: "expires before it was issued".into(),
            });
        }
        Ok(())
    }
}

/// What a verified token grants: the license as the server signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub license_id: String,
    pub product_id: String,
    pub entitlements: Vec<String>,
    pub max_activations: i64,
    /// When the license itself ends (`None`: never).
    pub license_expires_at: Option<SystemTime>,
    /// When the server signed the token.
    pub issued_at: SystemTime,
    /// When the token stops being valid offline: the end of the product's offline lease, or the
    /// license's end if that comes first.
    pub expires_at: SystemTime,
    /// The device the token is bound to.
    pub fingerprint: String,
    /// The signed token itself (a compact JWS), for an application that passes it on.
    pub token: String,
}

impl Grant {
    pub(crate) fn new(claims: Claims, token: String) -> Grant {
        Grant {
            license_id: claims.sub,
            product_id: claims.product,
            entitlements: claims.entitlements,
            max_activations: claims.max_activations,
            license_expires_at: claims.license_expires_at.map(from_unix),
            issued_at: from_unix(claims.iat),
            expires_at: from_unix(claims.exp),
            fingerprint: claims.fingerprint.unwrap_or_default(),
            token,
        }
    }

    /// Whether the license carries `entitlement`.
    pub fn has(&self, entitlement: &str) -> bool {
        self.entitlements.iter().any(|e| e == entitlement)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    /// Signs `claims` under `header` the way the server does (test fixture).
    pub(crate) fn sign(key: &SigningKey, header: serde_json::Value, claims: &Claims) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        );
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    pub(crate) fn claims(iat: i64) -> Claims {
        Claims {
            iss: "ecosire".into(),
            aud: AUDIENCE.into(),
            sub: "lic_1".into(),
            iat,
            exp: iat + 7 * 86_400,
            jti: "j".into(),
            product: "prd_1".into(),
            entitlements: vec!["pro".into()],
            max_activations: 2,
            license_expires_at: None,
            fingerprint: Some("fp".into()),
            nonce: Some("n".into()),
        }
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn header(kid: &str) -> serde_json::Value {
        serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})
    }

    fn only(kid: &'static str) -> impl Fn(&str) -> Option<VerifyingKey> {
        move |k| (k == kid).then(|| key().verifying_key())
    }

    #[test]
    fn a_signed_token_verifies_and_decodes() {
        let t = sign(&key(), header("k"), &claims(100));
        assert_eq!(verify(&t, only("k")), Ok(claims(100)));
        assert_eq!(kid(&t), Ok("k".to_string()));
    }

    #[test]
    fn tampering_unknown_keys_and_foreign_headers_are_refused() {
        let t = sign(&key(), header("k"), &claims(100));
        let (h, rest) = t.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        let mut forged = claims(100);
        forged.exp += 365 * 86_400;
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            verify(&format!("{h}.{p}.{s}"), only("k")),
            Err(TokenError::Signature)
        );
        assert_eq!(
            verify(&t, only("other")),
            Err(TokenError::UnknownKey("k".into()))
        );
        for bad in [
            serde_json::json!({"alg": "none", "typ": "JWT", "kid": "k"}),
            serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "k"}),
            serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k"}),
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "k", "crit": ["b64"]}),
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "k", "crit": null}),
            serde_json::json!({"alg": "EdDSA", "typ": "JWT"}),
        ] {
            let t = sign(&key(), bad.clone(), &claims(100));
            assert_eq!(verify(&t, only("k")), Err(TokenError::Header), "{bad}");
        }
        for junk in ["", "a.b", "a.b.c.d", &format!("{t}.x")] {
            assert!(verify(junk, only("k")).is_err(), "{junk}");
        }
    }

    #[test]
    fn claims_must_name_this_audience_issuer_device_and_product() {
        let want = Expected {
            issuer: "ecosire",
            product_id: Some("prd_1"),
            fingerprint: "fp",
        };
        assert_eq!(want.check(&claims(100)), Ok(()));
        type Change = fn(&mut Claims);
        let cases: [(&str, Change); 6] = [
            ("aud", |c| c.aud = "ecosire:session".into()),
            ("iss", |c| c.iss = "someone-else".into()),
            ("fingerprint", |c| {
                c.fingerprint = Some("other-machine".into())
            }),
            ("fingerprint", |c| c.fingerprint = None),
            ("product", |c| c.product = "prd_2".into()),
            ("exp", |c| c.exp = c.iat - 1),
        ];
        for (name, change) in cases {
            let mut c = claims(100);
            change(&mut c);
            assert!(
                matches!(want.check(&c), Err(TokenError::Claim { claim, .. }) if claim == name),
                "{name}"
            );
        }
        // A product known only by slug is checked by the server, not here.
        let by_slug = Expected {
            product_id: None,
            ..want
        };
        let mut c = claims(100);
        c.product = "prd_2".into();
        assert_eq!(by_slug.check(&c), Ok(()));
    }
}
