//! The hot path: validate, activate, deactivate, heartbeat and the self-service device list.
//! No credentials: the license key is the credential.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::cache::Snapshot;
use super::decide::{self, Ask, Code};
use super::key::LicenseKey;
use super::model::{Activation, ActivationRow, License, LicenseStatus};
use super::{store, token};
use crate::crypto::new_id;
use crate::error::{Error, Result};
use crate::events;
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

fn check_fingerprint(c: &mut Checks, fp: &str) {
    c.len(fp, "fingerprint", 1, 255);
}

/// Validates a license key.
///
/// A well-formed request always gets 200; `code` says why a license is not valid, checked in the
/// order NOT_FOUND, REVOKED, SUSPENDED, EXPIRED, PRODUCT_MISMATCH, ENTITLEMENTS_MISSING,
/// FINGERPRINT_NOT_ACTIVATED.
#[utoipa::path(post, path = "/api/licenses/validate", tag = "licensing", request_body = ValidateRequest,
    responses((status = 200, body = ValidateResponse), (status = 400, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn validate_license(
    State(state): State<AppState>,
    rate: RateContext,
    Json(req): Json<ValidateRequest>,
) -> Result<Response> {
    let mut c = Checks::new();
    if let Some(fp) = &req.fingerprint {
        check_fingerprint(&mut c, fp);
    }
    c.opt_len(req.nonce.as_deref(), "nonce", 1, 64);
    c.opt_len(req.product.as_deref(), "product", 1, 255);
    c.string_list(&req.entitlements, "entitlements", 100, 64);
    c.finish()?;

    let key = LicenseKey::parse(&req.key);
    let snap = limited_snapshot(&state, &rate, "validate", key.as_ref()).await?;
    let now = now_ms();
    let ask = Ask {
        product: req.product.as_deref(),
        entitlements: &req.entitlements,
        fingerprint: req.fingerprint.as_deref(),
    };
    let code = decide::decide(snap.as_deref().map(|s| &s.state), &ask, now);
    let valid = code == Code::Valid;
    metrics::counter!("ecosire_validations_total", "code" => code.as_str()).increment(1);
    if let Some(s) = &snap {
        state.events.validated(|| {
            serde_json::json!({"license": &*s.view, "valid": valid, "code": code, "fingerprint": req.fingerprint})
        });
    }
    // The common case, a VALID answer without a nonce, is served from the snapshot's memo.
    if let (Some(s), true, None) = (&snap, valid, &req.nonce) {
        let fp = req.fingerprint.as_deref();
        let body = s.valid_body(
            &state.keys.license,
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
        (Some(s), true) => Some(s.token(
            &state.keys.license,
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

#[derive(Debug, Deserialize, ToSchema)]
pub struct ActivateRequest {
    #[schema(example = "ECOS-7K3QH-M2XPD-9TQ4W-R8ZVN")]
    pub key: String,
    /// 1–255 chars identifying the device.
    #[schema(example = "3f2a9c1e-machine-id")]
    pub fingerprint: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub hostname: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationResponse {
    pub license: License,
    pub activation: Activation,
    pub token: String,
}

fn license_not_found() -> Error {
    Error::not_found("LICENSE_NOT_FOUND", "No license has this key")
}

/// The 403 for a license that may not be used now (activate, heartbeat).
fn refuse_unusable(status: LicenseStatus, expires_at: Option<i64>, now: i64) -> Result<()> {
    match status {
        LicenseStatus::Revoked => Err(Error::forbidden(
            "LICENSE_REVOKED",
            "The license has been revoked",
        )),
        LicenseStatus::Suspended => Err(Error::forbidden(
            "LICENSE_SUSPENDED",
            "The license is suspended",
        )),
        LicenseStatus::Active if decide::is_expired(expires_at, now) => Err(Error::forbidden(
            "LICENSE_EXPIRED",
            "The license has expired",
        )),
        LicenseStatus::Active => Ok(()),
    }
}

/// Resolves a key to its snapshot, or 404 `LICENSE_NOT_FOUND`.
async fn snapshot_for(state: &AppState, key: &str) -> Result<(LicenseKey, Arc<Snapshot>)> {
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
async fn limited_snapshot(
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
        rate.check(limits, bucket, &rate.ip_key)?;
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
        rate.check(limits, bucket, charged_to)?;
        return Ok(cached);
    }
    rate.blocked(limits, bucket, &rate.ip_key)?;
    rate.check(limits, bucket, &key_bucket)?;
    let snap = state.licenses.get(&state.db, &digest).await?;
    if snap.is_none() {
        rate.check(limits, bucket, &rate.ip_key)?;
    }
    Ok(snap)
}

/// The event body of `license.activated` / `license.deactivated`: the activation with its license.
pub fn activation_event(a: &Activation, license: &License) -> serde_json::Value {
    let mut v = serde_json::to_value(a).expect("serializable");
    v["license"] = serde_json::to_value(license).expect("serializable");
    v
}

/// Activates a device (takes a seat).
///
/// 201 for a new activation, 200 when this fingerprint was already active (idempotent). The seat
/// limit holds under any concurrency.
#[utoipa::path(post, path = "/api/licenses/activate", tag = "licensing", request_body = ActivateRequest,
    responses((status = 201, body = ActivationResponse), (status = 200, description = "Already active", body = ActivationResponse),
              (status = 403, description = "LICENSE_REVOKED, LICENSE_SUSPENDED or LICENSE_EXPIRED", body = crate::error::Problem),
              (status = 404, description = "LICENSE_NOT_FOUND", body = crate::error::Problem),
              (status = 409, description = "ACTIVATION_LIMIT_REACHED", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
pub async fn activate_license(
    State(state): State<AppState>,
    rate: RateContext,
    Json(req): Json<ActivateRequest>,
) -> Result<Response> {
    let mut c = Checks::new();
    check_fingerprint(&mut c, &req.fingerprint);
    c.opt_len(req.name.as_deref(), "name", 0, 255);
    c.opt_len(req.platform.as_deref(), "platform", 0, 255);
    c.opt_len(req.hostname.as_deref(), "hostname", 0, 255);
    c.finish()?;
    let key = LicenseKey::parse(&req.key);
    let snap = limited_snapshot(&state, &rate, "activate", key.as_ref())
        .await?
        .ok_or_else(license_not_found)?;
    let now = now_ms();
    // Cheap refusal from the snapshot before taking the write lock; re-checked under it.
    refuse_unusable(snap.state.status, snap.state.expires_at_ms, now)?;

    let mut tx = state.db.begin_license_write(&snap.row.id).await?;
    let row = store::license_by_id(&mut *tx, &snap.row.id)
        .await?
        .filter(|r| r.key_digest == snap.row.key_digest)
        .ok_or_else(license_not_found)?;
    refuse_unusable(row.status(), row.expires_at, now)?;
    let (status, activation_row, count) = match store::activation_by_fingerprint(
        &mut *tx,
        &row.id,
        &req.fingerprint,
    )
    .await?
    {
        Some(existing) => {
            // Re-activating the same device confirms it is alive.
            sqlx::query("UPDATE activations SET last_heartbeat_at = $2 WHERE id = $1")
                .bind(&existing.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let count = store::count_activations(&mut *tx, &row.id).await?;
            (
                StatusCode::OK,
                ActivationRow {
                    last_heartbeat_at: now,
                    ..existing
                },
                count,
            )
        }
        None => {
            let count = store::count_activations(&mut *tx, &row.id).await?;
            if count >= row.max_activations {
                return Err(Error::conflict(
                    "ACTIVATION_LIMIT_REACHED",
                    format!(
                        "All {} seats of this license are in use; deactivate a device first",
                        row.max_activations
                    ),
                ));
            }
            let a = ActivationRow {
                id: new_id("act"),
                license_id: row.id.clone(),
                fingerprint: req.fingerprint.clone(),
                name: req.name.clone(),
                platform: req.platform.clone(),
                hostname: req.hostname.clone(),
                created_at: now,
                last_heartbeat_at: now,
            };
            sqlx::query(
                "INSERT INTO activations (id, license_id, fingerprint, name, platform, hostname, created_at, last_heartbeat_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(&a.id)
            .bind(&a.license_id)
            .bind(&a.fingerprint)
            .bind(&a.name)
            .bind(&a.platform)
            .bind(&a.hostname)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            (StatusCode::CREATED, a, count + 1)
        }
    };
    let license = row.view(count, None);
    let activation: Activation = activation_row.into();
    if status == StatusCode::CREATED {
        metrics::counter!("ecosire_activations_total").increment(1);
        events::emit(
            &mut tx,
            "license.activated",
            activation_event(&activation, &license),
        )
        .await?;
    }
    tx.commit().await?;
    state.licenses.changed(&state.db, &row.key_digest).await;
    let (token, _) = token::sign(
        &state.keys.license,
        &state.config.token_issuer,
        &snap.subject_for(&row),
        Some(&req.fingerprint),
        None,
        now,
    );
    Ok((
        status,
        Json(ActivationResponse {
            license,
            activation,
            token,
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceRequest {
    #[schema(example = "ECOS-7K3QH-M2XPD-9TQ4W-R8ZVN")]
    pub key: String,
    #[schema(example = "3f2a9c1e-machine-id")]
    pub fingerprint: String,
}

fn activation_not_found() -> Error {
    Error::not_found(
        "ACTIVATION_NOT_FOUND",
        "This device has no live activation of the license",
    )
}

/// Frees the seat held by a device.
#[utoipa::path(post, path = "/api/licenses/deactivate", tag = "licensing", request_body = DeviceRequest,
    responses((status = 204, description = "Seat freed"),
              (status = 404, description = "LICENSE_NOT_FOUND or ACTIVATION_NOT_FOUND", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
pub async fn deactivate_license(
    State(state): State<AppState>,
    Json(req): Json<DeviceRequest>,
) -> Result<StatusCode> {
    let mut c = Checks::new();
    check_fingerprint(&mut c, &req.fingerprint);
    c.finish()?;
    let (_key, snap) = snapshot_for(&state, &req.key).await?;
    let mut tx = state.db.begin_license_write(&snap.row.id).await?;
    let row = store::license_by_id(&mut *tx, &snap.row.id)
        .await?
        .filter(|r| r.key_digest == snap.row.key_digest)
        .ok_or_else(license_not_found)?;
    let a = store::activation_by_fingerprint(&mut *tx, &row.id, &req.fingerprint)
        .await?
        .ok_or_else(activation_not_found)?;
    remove_activation(&state, tx, &row, a, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes an activation inside `tx` (which holds the license's write lock), emits
/// `license.deactivated`, commits and invalidates the cache. Shared by deactivate, the admin
/// delete and the heartbeat reaper, which passes `silent_before` so that a heartbeat racing it wins.
pub async fn remove_activation(
    state: &AppState,
    mut tx: crate::db::Tx,
    row: &super::model::LicenseRow,
    a: ActivationRow,
    silent_before: Option<i64>,
) -> Result<bool> {
    let deleted = sqlx::query("DELETE FROM activations WHERE id = $1 AND last_heartbeat_at < $2")
        .bind(&a.id)
        .bind(silent_before.unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Ok(false);
    }
    let count = store::count_activations(&mut *tx, &row.id).await?;
    let license = row.view(count, None);
    events::emit(
        &mut tx,
        "license.deactivated",
        activation_event(&a.into(), &license),
    )
    .await?;
    tx.commit().await?;
    state.licenses.changed(&state.db, &row.key_digest).await;
    Ok(true)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatResponse {
    pub activation: Activation,
    pub token: String,
}

/// Reports that a device is alive; returns a fresh token bound to it.
#[utoipa::path(post, path = "/api/licenses/heartbeat", tag = "licensing", request_body = DeviceRequest,
    responses((status = 200, body = HeartbeatResponse),
              (status = 403, description = "LICENSE_REVOKED, LICENSE_SUSPENDED or LICENSE_EXPIRED", body = crate::error::Problem),
              (status = 404, description = "LICENSE_NOT_FOUND or ACTIVATION_NOT_FOUND", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
pub async fn heartbeat_license(
    State(state): State<AppState>,
    Json(req): Json<DeviceRequest>,
) -> Result<Json<HeartbeatResponse>> {
    let mut c = Checks::new();
    check_fingerprint(&mut c, &req.fingerprint);
    c.finish()?;
    let (_key, snap) = snapshot_for(&state, &req.key).await?;
    let now = now_ms();
    refuse_unusable(snap.state.status, snap.state.expires_at_ms, now)?;
    let updated = sqlx::query(
        "UPDATE activations SET last_heartbeat_at = $3 WHERE license_id = $1 AND fingerprint = $2",
    )
    .bind(&snap.row.id)
    .bind(&req.fingerprint)
    .bind(now)
    .execute(&state.db.pool)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(activation_not_found());
    }
    let a = store::activation_by_fingerprint(&state.db.pool, &snap.row.id, &req.fingerprint)
        .await?
        .ok_or_else(activation_not_found)?;
    state
        .licenses
        .changed(&state.db, &snap.row.key_digest)
        .await;
    let (token, _) = token::sign(
        &state.keys.license,
        &state.config.token_issuer,
        &snap.subject,
        Some(&req.fingerprint),
        None,
        now,
    );
    Ok(Json(HeartbeatResponse {
        activation: a.into(),
        token,
    }))
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
    responses((status = 200, body = ActivationList), (status = 404, description = "LICENSE_NOT_FOUND", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
pub async fn list_own_activations(
    State(state): State<AppState>,
    Json(req): Json<KeyRequest>,
) -> Result<Json<ActivationList>> {
    let (_key, snap) = snapshot_for(&state, &req.key).await?;
    Ok(Json(ActivationList {
        data: snap.activations.clone(),
    }))
}

/// Releases activations whose device has been silent longer than its product's
/// `heartbeat_timeout_s`. Returns how many were released.
pub async fn reap_silent_activations(state: &AppState) -> Result<usize> {
    let now = now_ms();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT a.id, a.license_id, p.heartbeat_timeout_s FROM activations a JOIN licenses l ON l.id = a.license_id \
         JOIN products p ON p.id = l.product_id \
         WHERE p.heartbeat_timeout_s IS NOT NULL AND a.last_heartbeat_at + p.heartbeat_timeout_s * 1000 < $1 \
         ORDER BY a.id LIMIT 1000",
    )
    .bind(now)
    .fetch_all(&state.db.pool)
    .await?;
    let mut released = 0;
    for (activation_id, license_id, timeout_s) in rows {
        let mut tx = state.db.begin_license_write(&license_id).await?;
        let (Some(row), Some(a)) = (
            store::license_by_id(&mut *tx, &license_id).await?,
            store::activation_by_id(&mut *tx, &activation_id).await?,
        ) else {
            continue;
        };
        if remove_activation(state, tx, &row, a, Some(now - timeout_s * 1000)).await? {
            released += 1;
        }
    }
    Ok(released)
}

impl Snapshot {
    /// The token subject after a write, from the freshly read row (the snapshot may be stale).
    pub fn subject_for(&self, row: &super::model::LicenseRow) -> token::Subject {
        token::Subject {
            license_id: row.id.clone(),
            product_id: row.product_id.clone(),
            entitlements: row.entitlements(),
            max_activations: row.max_activations,
            expires_at_ms: row.expires_at,
            offline_lease_days: self.subject.offline_lease_days,
        }
    }
}
