//! Signed license tokens: EdDSA JWTs a client verifies offline with the published JWKS.

use serde::Serialize;

use crate::jws::Signer;

pub const LICENSE_AUDIENCE: &str = "ecosire:license";

/// What a token says about a license.
#[derive(Debug, Clone)]
pub struct Subject {
    pub license_id: String,
    pub product_id: String,
    pub entitlements: Vec<String>,
    pub max_activations: i64,
    pub expires_at_ms: Option<i64>,
    pub offline_lease_days: i64,
}

/// The claims of API.md § Signed license tokens.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct LicenseClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub product: String,
    pub entitlements: Vec<String>,
    pub max_activations: i64,
    pub license_expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// Signs a token valid until the license expires or the offline lease ends, whichever is first.
pub fn sign(
    signer: &Signer,
    issuer: &str,
    s: &Subject,
    fingerprint: Option<&str>,
    nonce: Option<&str>,
    now_ms: i64,
) -> (String, i64) {
    let c = claims(issuer, s, fingerprint, nonce, now_ms);
    let iat = c.iat;
    (signer.sign(&c), iat)
}

/// The claims of a token issued at `now_ms`: what `sign` signs, and what a license file
/// (`offline`) extends.
pub fn claims(
    issuer: &str,
    s: &Subject,
    fingerprint: Option<&str>,
    nonce: Option<&str>,
    now_ms: i64,
) -> LicenseClaims {
    let iat = now_ms.div_euclid(1000);
    let lease_end = iat + s.offline_lease_days * 86_400;
    let license_expires_at = s.expires_at_ms.map(|ms| ms.div_euclid(1000));
    let exp = license_expires_at.map_or(lease_end, |e| e.min(lease_end));
    LicenseClaims {
        iss: issuer.to_string(),
        aud: LICENSE_AUDIENCE.to_string(),
        sub: s.license_id.clone(),
        iat,
        exp,
        jti: uuid::Uuid::now_v7().simple().to_string(),
        product: s.product_id.clone(),
        entitlements: s.entitlements.clone(),
        max_activations: s.max_activations,
        license_expires_at,
        fingerprint: fingerprint.map(String::from),
        nonce: nonce.map(String::from),
    }
}
