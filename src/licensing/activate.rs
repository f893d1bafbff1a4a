//! The write path of the key holder: activate (take a seat), deactivate (free it), heartbeat.
//! Each takes the license's write lock and lets `lifecycle` change the state.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::key::LicenseKey;
use super::lifecycle::{self, Device, Release};
use super::model::{Activation, License};
use super::validate::{check_fingerprint, license_not_found, limited_snapshot, snapshot_for};
use super::{store, token};
use crate::auth::limits::Public;
use crate::error::{Error, Result};
use crate::http::checks::Checks;
use crate::http::extract::Json;
use crate::http::ratelimit::RateContext;
use crate::state::AppState;
use crate::timestamp::now_ms;

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

/// Activates a device (takes a seat).
///
/// 201 for a new activation, 200 when this fingerprint was already active (idempotent). The seat
/// limit holds under any concurrency.
#[utoipa::path(post, path = "/api/licenses/activate", tag = "licensing", request_body = ActivateRequest,
    responses((status = 201, body = ActivationResponse), (status = 200, description = "Already active", body = ActivationResponse),
              (status = 403, description = "LICENSE_REVOKED, LICENSE_SUSPENDED or LICENSE_EXPIRED", body = crate::error::Problem),
              (status = 404, description = "LICENSE_NOT_FOUND", body = crate::error::Problem),
              (status = 409, description = "ACTIVATION_LIMIT_REACHED", body = crate::error::Problem)))]
pub async fn activate_license(
    State(state): State<AppState>,
    rate: RateContext,
    body: Result<Json<ActivateRequest>, Error>,
) -> Result<Response> {
    let limits = &state.limits;
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return Err(rate.refuse(limits, "activate", e).await),
    };
    let mut c = Checks::new();
    check_fingerprint(&mut c, &req.fingerprint);
    c.opt_len(req.name.as_deref(), "name", 0, 255);
    c.opt_len(req.platform.as_deref(), "platform", 0, 255);
    c.opt_len(req.hostname.as_deref(), "hostname", 0, 255);
    if let Err(e) = c.finish() {
        return Err(rate.refuse(limits, "activate", e).await);
    }
    let key = LicenseKey::parse(&req.key);
    let snap = limited_snapshot(&state, &rate, "activate", key.as_ref())
        .await?
        .ok_or_else(license_not_found)?;
    let now = now_ms();
    // Cheap refusal from the snapshot before taking the write lock; re-checked under it.
    lifecycle::refuse_unusable(snap.view.status, snap.view.expires_at.map(|t| t.0), now)?;

    let (mut tx, row) = store::lock_license(&state.db, snap.id()).await?;
    let row = row
        .filter(|r| r.key_digest == hex::encode(snap.digest))
        .ok_or_else(license_not_found)?;
    let device = Device {
        fingerprint: req.fingerprint.clone(),
        name: req.name,
        platform: req.platform,
        hostname: req.hostname,
        offline: None,
    };
    let seat = lifecycle::take_seat(&mut tx, &row, device, now).await?;
    state
        .licenses
        .commit_change(&state.db, tx, &row.key_digest)
        .await?;
    let status = if seat.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let (license, activation) = (seat.license, seat.activation);
    let (token, _) = token::sign(
        &state.keys.signer(),
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

/// Frees the seat held by a device. Counts against the license's churn budget (the product's
/// `max_deactivations_per_30d`); past it, 409 `CHURN_LIMIT_REACHED` with `retry_at` and
/// `Retry-After`.
#[utoipa::path(post, path = "/api/licenses/deactivate", tag = "licensing", request_body = DeviceRequest,
    responses((status = 204, description = "Seat freed"),
              (status = 409, description = "CHURN_LIMIT_REACHED: the license freed as many seats in 30 days as its product allows; `retry_at` says when the next is possible", body = crate::error::Problem),
              (status = 404, description = "LICENSE_NOT_FOUND or ACTIVATION_NOT_FOUND", body = crate::error::Problem)))]
pub async fn deactivate_license(
    State(state): State<AppState>,
    _rate: Public,
    Json(req): Json<DeviceRequest>,
) -> Result<StatusCode> {
    let mut c = Checks::new();
    check_fingerprint(&mut c, &req.fingerprint);
    c.finish()?;
    let (_key, snap) = snapshot_for(&state, &req.key).await?;
    let (mut tx, row) = store::lock_license(&state.db, snap.id()).await?;
    let row = row
        .filter(|r| r.key_digest == hex::encode(snap.digest))
        .ok_or_else(license_not_found)?;
    let a = store::activation_by_fingerprint(&mut *tx, &row.id, &req.fingerprint)
        .await?
        .ok_or_else(activation_not_found)?;
    lifecycle::release_seat(&mut tx, &row, a, Release::Holder { now: now_ms() }).await?;
    state
        .licenses
        .commit_change(&state.db, tx, &row.key_digest)
        .await?;
    Ok(StatusCode::NO_CONTENT)
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
              (status = 404, description = "LICENSE_NOT_FOUND or ACTIVATION_NOT_FOUND", body = crate::error::Problem)))]
pub async fn heartbeat_license(
    State(state): State<AppState>,
    _rate: Public,
    Json(req): Json<DeviceRequest>,
) -> Result<Json<HeartbeatResponse>> {
    let mut c = Checks::new();
    check_fingerprint(&mut c, &req.fingerprint);
    c.finish()?;
    let (_key, snap) = snapshot_for(&state, &req.key).await?;
    let now = now_ms();
    lifecycle::refuse_unusable(snap.view.status, snap.view.expires_at.map(|t| t.0), now)?;
    let a = lifecycle::heartbeat(&state.db.pool, snap.id(), &req.fingerprint, now)
        .await?
        .ok_or_else(activation_not_found)?;
    // A heartbeat changes nothing validate answers from (status, expiry, seats), so the cached
    // snapshot stays and no other instance is told: the last heartbeat time a validate shows may
    // lag by up to the snapshot's time to live.
    let (token, _) = token::sign(
        &state.keys.signer(),
        &state.config.token_issuer,
        &snap.subject(),
        Some(&req.fingerprint),
        None,
        now,
    );
    Ok(Json(HeartbeatResponse {
        activation: a,
        token,
    }))
}
