//! Licensing: the read path (`validate`), the key holder's write path (`activate`), every state
//! change (`lifecycle`, the one writer), the pure decision (`decide`), signed tokens, the snapshot
//! cache, signed `revocations` lists for offline clients, the heartbeat `reaper`, license
//! administration (`admin`), and the `products` whose terms (seats, duration, offline lease,
//! heartbeat timeout, entitlements) licenses follow; air-gapped activation through signed files
//! (`offline`) and the `churn` budget on freed seats.

pub mod activate;
pub mod admin;
pub mod cache;
pub mod churn;
pub mod decide;
pub mod key;
pub mod lifecycle;
pub mod model;
pub mod offline;
pub mod products;
pub mod reaper;
pub mod revocations;
pub mod store;
pub mod token;
pub mod validate;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::limits::Public;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    products::router()
        .routes(routes!(validate::validate_license))
        .routes(routes!(activate::activate_license))
        .routes(routes!(activate::deactivate_license))
        .routes(routes!(activate::heartbeat_license))
        .routes(routes!(validate::list_own_activations))
        .routes(routes!(offline::create_offline_activation))
        .routes(routes!(offline::create_offline_deactivation))
        .routes(routes!(jwks))
        .routes(routes!(well_known_jwks))
        .routes(routes!(revocations::get_revocation_list))
        .routes(routes!(admin::create_license, admin::list_licenses))
        .routes(routes!(admin::get_license, admin::update_license))
        .routes(routes!(admin::list_license_activations))
        .routes(routes!(admin::delete_activation))
        .routes(routes!(admin::revoke_license))
        .routes(routes!(admin::suspend_license))
        .routes(routes!(admin::reinstate_license))
        .routes(routes!(admin::renew_license))
        .routes(routes!(admin::reissue_license))
        .routes(routes!(churn::reset_churn))
}

fn jwks_response(state: &AppState) -> Response {
    // A key added or retired by `ecosire keys …` is published by the next JWKS answer of every
    // instance (a listing and a stat per key when nothing changed), not only at the next tick.
    state.keys.refresh();
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(state.keys.jwks()),
    )
        .into_response()
}

/// The public keys that verify license tokens (JWKS, RFC 7517).
#[utoipa::path(get, path = "/api/licenses/jwks", tag = "licensing",
    responses((status = 200, description = "JWK Set", body = crate::jws::Jwks)))]
pub async fn jwks(_rate: Public, State(state): State<AppState>) -> Response {
    jwks_response(&state)
}

/// The same JWKS at the well-known location.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "licensing",
    responses((status = 200, description = "JWK Set", body = crate::jws::Jwks)))]
pub async fn well_known_jwks(_rate: Public, State(state): State<AppState>) -> Response {
    jwks_response(&state)
}
