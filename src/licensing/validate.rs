//! The read path: validate, and the key holder's device list. No credentials: the license key
//! is the credential. Nothing here writes; a cache hit answers without the database.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::cache::Snapshot;
use super::decide::{self, Ask, Code};
use super::key::LicenseKey;
use super::model::{Activation, License};
use crate::auth::limits::Public;
use crate::error::{Error, Result};
use crate::http::checks::Checks;
use crate::http::extract::Json;
use crate::http::ratelimit::RateContext;
use crate::state::AppState;
use crate::timestamp::now_ms;

#[derive(Debug, Deserialize, ToSchema)]
pub struct ValidateRequest {
    #[schema(example = "ECOS-7K3QH-M2XPD-9TQ4W-R8ZVN")]
    pub key: String,
    /// The device asking; when given, it must hold a live activation.
    #[schema(example = "3f2a9c1e-machine-id")]
    pub fingerprint: Option<String>,
    /// Product id or slug the license must be for.
    pub product: Option<String>,
    /// Entitlements the license must include.
    #[serde(default)]
    pub entitlements: Vec<String>,
    /// Up to 64 chars, echoed as the token's `nonce` claim.
    pub nonce: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValidateResponse {
    pub valid: bool,
    pub code: Code,
    #[schema(example = "The license is valid")]
    pub detail: &'static str,
    #[schema(value_type = Option<License>)]
    pub license: Option<Arc<License>>,
    pub activation: Option<Activation>,
    /// EdDSA JWT, present only when `valid`.
    pub token: Option<String>,
}

pub(super) fn check_fingerprint(c: &mut Checks, fp: &str) {
    c.len(fp, "fingerprint", 1, 255);
}

/// Validates a license key.
///
/// A well-formed request always gets 200; `code` says why a license is not valid, checked in the
/// order NOT_FOUND, REVOKED, SUSPENDED, EXPIRED, PRODUCT_MISMATCH, ENTITLEMENTS_MISSING,
/// FINGERPRINT_NOT_ACTIVATED.
#[utoipa::path(post, path = "/api/licenses/validate", tag = "licensing", request_body = ValidateRequest,
    responses((status = 200, body = ValidateResponse), (status = 400, description = "MALFORMED_JSON", body = crate::error::Problem)))]
pub async fn validate_license(
    State(state): State<AppState>,
    rate: RateContext,
    body: Result<Json<ValidateRequest>, Error>,
) -> Result<Response> {
    let limits = &state.limits;
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return Err(rate.refuse(limits, "validate", e).await),
    };
    let mut c = Checks::new();
    if let Some(fp) = &req.fingerprint {
        check_fingerprint(&mut c, fp);
    }
    c.opt_len(req.nonce.as_deref(), "nonce", 1, 64);
    c.opt_len(req.product.as_deref(), "product", 1, 255);
    c.string_list(&req.entitlements, "entitlements", 100, 64);
    if let Err(e) = c.finish() {
        return Err(rate.refuse(limits, "validate", e).await);
    }

    let key = LicenseKey::parse(&req.key);
    let snap = limited_snapshot(&state, &rate, "validate", key.as_ref()).await?;
    let now = now_ms();
    let ask = Ask {
        product: req.product.as_deref(),
        entitlements: &req.entitlements,
        fingerprint: req.fingerprint.as_deref(),
    };
    let code = decide::decide(snap.as_deref().map(|s| s.state()).as_ref(), &ask, now);
    let valid = code == Code::Valid;
    validations(code).increment(1);
    if let Some(s) = &snap {
        state.events.validated(|| {
            serde_json::json!({"license": &*s.view, "valid": valid, "code": code, "fingerprint": req.fingerprint})
        });
    }
    // The common case, a VALID answer without a nonce, is served from the snapshot's memo.
    if let (Some(s), true, None) = (&snap, valid, &req.nonce) {
        let fp = req.fingerprint.as_deref();
        let body = state.licenses.valid_body(
            s,
            &state.keys.signer(),
            &state.config.token_issuer,
            fp,
            now,
            |token| {
                let res = ValidateResponse {
                    valid,
                    code,
                    detail: code.detail(),
                    license: Some(s.view.clone()),
                    activation: fp.and_then(|f| s.activation(f).cloned()),
                    token: Some(token),
                };
                serde_json::to_vec(&res).expect("serializable")
            },
        );
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response());
    }
    let token = match (&snap, valid) {
        (Some(s), true) => Some(s.sign(
            &state.keys.signer(),
            &state.config.token_issuer,
            req.fingerprint.as_deref(),
            req.nonce.as_deref(),
            now,
        )),
        _ => None,
    };
    let activation = match (&snap, &req.fingerprint) {
        (Some(s), Some(fp)) => s.activation(fp).cloned(),
        _ => None,
    };
    Ok(Json(ValidateResponse {
        valid,
        code,
        detail: code.detail(),
        license: snap.map(|s| s.view.clone()),
        activation,
        token,
    })
    .into_response())
}

/// The `ecosire_validations_total` counter of `code`, registered once (a labelled lookup per
/// request costs more than the increment).
fn validations(code: Code) -> &'static metrics::Counter {
    static COUNTERS: std::sync::OnceLock<Vec<(Code, metrics::Counter)>> =
        std::sync::OnceLock::new();
    let all = COUNTERS.get_or_init(|| {
        Code::ALL
            .iter()
            .map(|c| {
                (
                    *c,
                    metrics::counter!("ecosire_validations_total", "code" => c.as_str()),
                )
            })
            .collect()
    });
    &all.iter()
        .find(|(c, _)| *c == code)
        .expect("every code is registered")
        .1
}

pub(super) fn license_not_found() -> Error {
    Error::not_found("LICENSE_NOT_FOUND", "No license has this key")
}

/// Resolves a key to its snapshot, or 404 `LICENSE_NOT_FOUND`.
pub(super) async fn snapshot_for(
    state: &AppState,
    key: &str,
) -> Result<(LicenseKey, Arc<Snapshot>)> {
    let key = LicenseKey::parse(key).ok_or_else(license_not_found)?;
    let snap = state
        .licenses
        .get(&state.db, &key.digest())
        .await?
        .ok_or_else(license_not_found)?;
    Ok((key, snap))
}

/// The snapshot for `key`, charging the request to `bucket` first (API.md: by license key when
/// the key is known, by client IP otherwise). A request its bucket refuses never reaches the
/// database: a cached key is charged from memory; an uncached one is refused outright when its
/// IP has already spent its allowance on unknown keys, else charged to the key before the lookup
/// and to the IP as well when the lookup finds nothing.
pub(super) async fn limited_snapshot(
    state: &AppState,
    rate: &RateContext,
    bucket: &str,
    key: Option<&LicenseKey>,
) -> Result<Option<Arc<Snapshot>>> {
    let limits = &state.limits;
    if !limits.enabled {
        return match key {
            Some(k) => state.licenses.get(&state.db, &k.digest()).await,
            None => Ok(None),
        };
    }
    let Some(key) = key else {
        rate.check(limits, bucket, &rate.ip_key).await?;
        return Ok(None);
    };
    let digest = key.digest();
    let key_bucket = format!("key:{}", hex::encode(digest));
    if let Some(cached) = state.licenses.peek(&digest).await {
        let charged_to = if cached.is_some() {
            &key_bucket
        } else {
            &rate.ip_key
        };
        rate.check(limits, bucket, charged_to).await?;
        return Ok(cached);
    }
    rate.blocked(limits, bucket, &rate.ip_key)?;
    rate.check(limits, bucket, &key_bucket).await?;
    let snap = state.licenses.get(&state.db, &digest).await?;
    if snap.is_none() {
        rate.check(limits, bucket, &rate.ip_key).await?;
    }
    Ok(snap)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct KeyRequest {
    #[schema(example = "ECOS-7K3QH-M2XPD-9TQ4W-R8ZVN")]
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationList {
    pub data: Vec<Activation>,
}

/// Lists the live activations of a license, for its key holder.
#[utoipa::path(post, path = "/api/licenses/activations", tag = "licensing", request_body = KeyRequest,
    responses((status = 200, body = ActivationList), (status = 404, description = "LICENSE_NOT_FOUND", body = crate::error::Problem)))]
pub async fn list_own_activations(
    State(state): State<AppState>,
    _rate: Public,
    Json(req): Json<KeyRequest>,
) -> Result<Json<ActivationList>> {
    let (_key, snap) = snapshot_for(&state, &req.key).await?;
    Ok(Json(ActivationList {
        data: snap.activations.clone(),
    }))
}
