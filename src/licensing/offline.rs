//! Air-gapped activation: a machine that never reaches the server activates through files a
//! person carries.
//!
//! 1. The offline machine makes an Ed25519 key pair of its own and signs an activation request
//!    with it: a compact JWS (`typ` [`REQUEST_TYP`], `kid` = the RFC 7638 thumbprint of the device
//!    key) whose claims name the license key, the fingerprint, the device's public key, a nonce
//!    and the time ([`RequestClaims`]).
//! 2. A connected machine posts it (`POST /api/licenses/offline-activations`, or the license page
//!    of the customer portal). The license key inside is the credential, as on the hot path: the
//!    request needs no session, so a reseller's or an admin's machine can carry it too. The
//!    server takes a seat exactly as `activate` does (same lock, same rules) and answers with a
//!    license file: a license token (same keys, same JWKS, `typ: JWT`, `aud: ecosire:license`)
//!    bound to the fingerprint, echoing the request's nonce, whose `exp` is the product's
//!    `offline_activation_lease_days` (or the license's end if sooner), with `cnf.jkt` naming the
//!    device key (RFC 7800). Any client that checks license tokens offline accepts it as is.
//! 3. The seat is released when the device's lease ends (the reaper), by an admin, or by a
//!    deactivation proof: a compact JWS (`typ` [`PROOF_TYP`]) signed by the device key the
//!    activation holds, posted to `POST /api/licenses/offline-deactivations`. The device makes
//!    the proof as it gives the license up, so a seat cannot be freed while its device keeps a
//!    working license file without that device's key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::key::LicenseKey;
use super::lifecycle::{self, Device, OfflineLease, Release};
use super::model::{Activation, License};
use super::token::{self, LicenseClaims, Subject};
use super::validate::{check_fingerprint, license_not_found, limited_snapshot};
use super::{products, store};
use crate::auth::limits::Public;
use crate::error::{Error, Result};
use crate::http::checks::Checks;
use crate::http::extract::Json;
use crate::http::ratelimit::RateContext;
use crate::jws::{self, Signer};
use crate::state::AppState;
use crate::timestamp::now_ms;

/// The `typ` of an activation request.
pub const REQUEST_TYP: &str = "ecosire-activation-request+jwt";
/// The `typ` of a deactivation proof.
pub const PROOF_TYP: &str = "ecosire-deactivation-proof+jwt";
/// How old a request may be when it reaches the server: carrying it takes days, not months.
const REQUEST_MAX_AGE_S: i64 = 30 * 86_400;
/// How far ahead of the server an offline machine's clock may be.
const CLOCK_AHEAD_S: i64 = 86_400;
/// Requests and proofs are a few hundred bytes; anything near this is not one.
const MAX_TEXT: usize = 8 * 1024;

/// What an activation request says, signed by the device key it carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestClaims {
    /// The license key: the credential, as on the hot path.
    pub key: String,
    pub fingerprint: String,
    /// The device's Ed25519 public key: 32 bytes, base64url without padding.
    pub device_key: String,
    /// Echoed in the license file, so the device can tell it answers this request.
    pub nonce: String,
    /// When the request was made (unix seconds, the offline machine's clock).
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// What a deactivation proof says, signed by the device key of the activation it releases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProofClaims {
    /// The license id (the license file's `sub`).
    pub sub: String,
    pub fingerprint: String,
    pub iat: i64,
    pub jti: String,
}

/// RFC 7800 confirmation: the thumbprint (RFC 7638) of the device key the file is bound to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Confirmation {
    pub jkt: String,
}

/// A license file's claims: a license token's, plus the device key it was issued to.
#[derive(Debug, Serialize, Deserialize)]
pub struct LicenseFileClaims {
    #[serde(flatten)]
    pub token: LicenseClaims,
    pub cnf: Confirmation,
}

/// Signs an activation request with the device key (the CLI's `offline request`; the SDKs build
/// the same bytes themselves).
pub fn make_request(device: &SigningKey, claims: &RequestClaims) -> String {
    Signer::new(device.clone(), REQUEST_TYP).sign(claims)
}

/// Signs a deactivation proof for the activation of `fingerprint` on license `license_id`.
pub fn make_proof(device: &SigningKey, license_id: &str, fingerprint: &str, now_s: i64) -> String {
    let claims = ProofClaims {
        sub: license_id.to_string(),
        fingerprint: fingerprint.to_string(),
        iat: now_s,
        jti: uuid::Uuid::now_v7().simple().to_string(),
    };
    Signer::new(device.clone(), PROOF_TYP).sign(&claims)
}

/// The public key in a `device_key` claim.
pub fn device_key(x: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(x).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// A pasted text block as a compact JWS: whitespace (line breaks of an email or a terminal) and
/// surrounding quotes dropped.
fn compact(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && *c != '"')
        .collect()
}

/// The claims of a compact JWS, not yet verified: they name the key that must have signed it.
fn unverified<C: DeserializeOwned>(token: &str) -> Option<C> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn bad(field: &'static str, why: &str) -> Error {
    Error::invalid(field, why)
}

/// Verifies an activation request: signed by the device key it carries, recent, well-formed.
/// Errors: 422 on `request`.
pub fn verify_request(text: &str, now_s: i64) -> Result<RequestClaims> {
    if text.len() > MAX_TEXT {
        return Err(bad("request", "is too long to be an activation request"));
    }
    let text = compact(text);
    let not_request =
        "is not an activation request (a compact JWS made by the SDK or `ecosire offline request`)";
    let claims: RequestClaims = unverified(&text).ok_or_else(|| bad("request", not_request))?;
    let key = device_key(&claims.device_key)
        .ok_or_else(|| bad("request", "device_key is not an Ed25519 public key"))?;
    let kid = jws::thumbprint(&key);
    let verified: RequestClaims = jws::verify(&text, REQUEST_TYP, |k| (k == kid).then_some(key))
        .map_err(|e| match e {
            jws::JwsError::Signature | jws::JwsError::UnknownKey => {
                bad("request", "is not signed by the device key it names")
            }
            _ => bad("request", not_request),
        })?;
    if verified.iat > now_s + CLOCK_AHEAD_S {
        return Err(bad(
            "request",
            "was made in the future: check the offline machine's clock",
        ));
    }
    if verified.iat < now_s - REQUEST_MAX_AGE_S {
        return Err(bad(
            "request",
            "is older than 30 days: make a new one on the offline machine",
        ));
    }
    let mut c = Checks::new();
    check_fingerprint(&mut c, &verified.fingerprint);
    c.len(&verified.nonce, "nonce", 1, 64);
    c.opt_len(verified.name.as_deref(), "name", 0, 255);
    c.opt_len(verified.platform.as_deref(), "platform", 0, 255);
    c.opt_len(verified.hostname.as_deref(), "hostname", 0, 255);
    c.finish()?;
    Ok(verified)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OfflineActivationRequest {
    /// The activation request made on the offline machine (a compact JWS; line breaks allowed).
    #[schema(
        example = "eyJhbGciOiJFZERTQSIsInR5cCI6ImVjb3NpcmUtYWN0aXZhdGlvbi1yZXF1ZXN0K2p3dCIsImtpZCI6Ii4uLiJ9.eyJrZXkiOiIuLi4ifQ.c2ln"
    )]
    pub request: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OfflineActivationResponse {
    pub license: License,
    /// The seat the device holds (`offline_until`: the end of its lease).
    pub activation: Activation,
    /// The signed license file to carry back to the offline machine: a license token bound to
    /// its fingerprint, with the lease as `exp`, the request's `nonce`, and `cnf.jkt` naming the
    /// device key.
    pub license_file: String,
}

/// Activates an air-gapped device from its signed request and answers with its license file.
///
/// The license key inside the request is the credential (no session needed). Takes a seat like
/// `activate` (201 new, 200 when the fingerprint already held one: its lease and device key are
/// renewed); shares its rate limit.
#[utoipa::path(post, path = "/api/licenses/offline-activations", tag = "licensing", request_body = OfflineActivationRequest,
    responses((status = 201, body = OfflineActivationResponse), (status = 200, description = "The device already held a seat; lease renewed", body = OfflineActivationResponse),
              (status = 403, description = "OFFLINE_ACTIVATION_DISABLED, LICENSE_REVOKED, LICENSE_SUSPENDED or LICENSE_EXPIRED", body = crate::error::Problem),
              (status = 404, description = "LICENSE_NOT_FOUND", body = crate::error::Problem),
              (status = 409, description = "ACTIVATION_LIMIT_REACHED", body = crate::error::Problem),
              (status = 422, description = "VALIDATION_FAILED: the request is malformed, not signed by its device key, or too old", body = crate::error::Problem)))]
pub async fn create_offline_activation(
    State(state): State<AppState>,
    rate: RateContext,
    body: Result<Json<OfflineActivationRequest>, Error>,
) -> Result<Response> {
    let limits = &state.limits;
    let now = now_ms();
    let req = match body.and_then(|Json(b)| verify_request(&b.request, now.div_euclid(1000))) {
        Ok(r) => r,
        Err(e) => return Err(rate.refuse(limits, "activate", e).await),
    };
    let key = LicenseKey::parse(&req.key);
    let snap = limited_snapshot(&state, &rate, "activate", key.as_ref())
        .await?
        .ok_or_else(license_not_found)?;
    lifecycle::refuse_unusable(snap.view.status, snap.view.expires_at.map(|t| t.0), now)?;
    let product = products::find(&state.db, &snap.view.product_id)
        .await?
        .ok_or_else(license_not_found)?;
    if product.offline_activation == 0 {
        return Err(Error::forbidden(
            "OFFLINE_ACTIVATION_DISABLED",
            "This product does not allow offline activation; activate the device online",
        ));
    }

    let (mut tx, row) = store::lock_license(&state.db, snap.id()).await?;
    let row = row
        .filter(|r| r.key_digest == hex::encode(snap.digest))
        .ok_or_else(license_not_found)?;
    let subject = Subject {
        offline_lease_days: product.offline_activation_lease_days,
        ..snap.subject_for(&row)
    };
    let claims = token::claims(
        &state.config.token_issuer,
        &subject,
        Some(&req.fingerprint),
        Some(&req.nonce),
        now,
    );
    let device = Device {
        fingerprint: req.fingerprint.clone(),
        name: req.name,
        platform: req.platform,
        hostname: req.hostname,
        offline: Some(OfflineLease {
            device_key: req.device_key.clone(),
            until: claims.exp * 1000,
        }),
    };
    let seat = lifecycle::take_seat(&mut tx, &row, device, now).await?;
    state
        .licenses
        .commit_change(&state.db, tx, &row.key_digest)
        .await?;
    let jkt = device_key(&req.device_key)
        .map(|k| jws::thumbprint(&k))
        .expect("checked by verify_request");
    let license_file = state.keys.signer().sign(&LicenseFileClaims {
        token: claims,
        cnf: Confirmation { jkt },
    });
    let status = if seat.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(OfflineActivationResponse {
            license: seat.license,
            activation: seat.activation,
            license_file,
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OfflineDeactivationRequest {
    /// The deactivation proof made on the offline machine (a compact JWS; line breaks allowed).
    pub proof: String,
}

fn activation_not_found() -> Error {
    Error::not_found(
        "ACTIVATION_NOT_FOUND",
        "This device holds no offline activation of the license",
    )
}

/// Releases an air-gapped device's seat with the proof its device key signed.
///
/// The proof is the credential: it must be signed by the device key the activation was made
/// with (a device that activated again since holds a new key, and older proofs no longer count).
/// Counts against the license's churn budget like `deactivate`.
#[utoipa::path(post, path = "/api/licenses/offline-deactivations", tag = "licensing", request_body = OfflineDeactivationRequest,
    responses((status = 204, description = "Seat freed"),
              (status = 404, description = "ACTIVATION_NOT_FOUND", body = crate::error::Problem),
              (status = 409, description = "CHURN_LIMIT_REACHED: `retry_at` says when the next deactivation is possible", body = crate::error::Problem),
              (status = 422, description = "VALIDATION_FAILED: the proof is malformed or not signed by the device's key", body = crate::error::Problem)))]
pub async fn create_offline_deactivation(
    State(state): State<AppState>,
    _rate: Public,
    Json(req): Json<OfflineDeactivationRequest>,
) -> Result<StatusCode> {
    if req.proof.len() > MAX_TEXT {
        return Err(bad("proof", "is too long to be a deactivation proof"));
    }
    let text = compact(&req.proof);
    let not_proof =
        "is not a deactivation proof (a compact JWS made by the SDK or `ecosire offline proof`)";
    let claims: ProofClaims = unverified(&text).ok_or_else(|| bad("proof", not_proof))?;
    let (mut tx, row) = store::lock_license(&state.db, &claims.sub).await?;
    let row = row.ok_or_else(activation_not_found)?;
    let a = store::activation_by_fingerprint(&mut *tx, &row.id, &claims.fingerprint)
        .await?
        .ok_or_else(activation_not_found)?;
    let device: Option<String> =
        sqlx::query_scalar("SELECT device_key FROM activations WHERE id = $1")
            .bind(&a.id)
            .fetch_one(&mut *tx)
            .await?;
    let key = device
        .as_deref()
        .and_then(device_key)
        .ok_or_else(activation_not_found)?;
    let kid = jws::thumbprint(&key);
    let proven: ProofClaims = jws::verify(&text, PROOF_TYP, |k| (k == kid).then_some(key))
        .map_err(|e| match e {
            jws::JwsError::Signature | jws::JwsError::UnknownKey => bad(
                "proof",
                "is not signed by the key of the device that holds this activation",
            ),
            _ => bad("proof", not_proof),
        })?;
    if proven.sub != row.id || proven.fingerprint != a.fingerprint {
        return Err(bad("proof", not_proof));
    }
    lifecycle::release_seat(&mut tx, &row, a, Release::Holder { now: now_ms() }).await?;
    state
        .licenses
        .commit_change(&state.db, tx, &row.key_digest)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(device: &SigningKey, iat: i64) -> String {
        make_request(
            device,
            &RequestClaims {
                key: "ECOS-7K3QH-M2XPD-9TQ4W-R8ZVN".into(),
                fingerprint: "fp-1".into(),
                device_key: URL_SAFE_NO_PAD.encode(device.verifying_key().as_bytes()),
                nonce: "n1".into(),
                iat,
                name: None,
                platform: None,
                hostname: None,
            },
        )
    }

    #[test]
    fn a_request_is_believed_only_when_signed_by_the_key_it_names_and_recent() {
        let device = SigningKey::from_bytes(&[4; 32]);
        let now = 1_800_000_000;
        let text = request(&device, now);
        // Pasted with line breaks, as from an email.
        let wrapped: String = text
            .as_bytes()
            .chunks(60)
            .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
            .collect();
        assert_eq!(verify_request(&wrapped, now).unwrap().fingerprint, "fp-1");
        // Another key's signature over a request naming this key.
        let other = SigningKey::from_bytes(&[5; 32]);
        let (h, rest) = text.split_once('.').unwrap();
        let (p, _) = rest.split_once('.').unwrap();
        let forged_sig = {
            use ed25519_dalek::Signer as _;
            URL_SAFE_NO_PAD.encode(other.sign(format!("{h}.{p}").as_bytes()).to_bytes())
        };
        let forged = format!("{h}.{p}.{forged_sig}");
        for (text, why) in [
            (forged.as_str(), "not signed"),
            ("garbage", "not an activation request"),
        ] {
            let e = verify_request(text, now).unwrap_err();
            assert_eq!(e.code(), "VALIDATION_FAILED", "{why}");
        }
        assert!(verify_request(&request(&device, now - 31 * 86_400), now).is_err());
        assert!(verify_request(&request(&device, now + 2 * 86_400), now).is_err());
        // A proof is not a request (another `typ`), even signed by the same key.
        let proof = make_proof(&device, "lic_1", "fp-1", now);
        assert!(verify_request(&proof, now).is_err());
    }
}
