//! License administration: create, list, read, patch, the lifecycle actions, and activations.
//! Admins see and do everything; a customer reads their own licenses and frees their own seats.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::lifecycle::{self, Change};
use super::model::{Activation, LICENSE_COLUMNS, License, LicenseRow, LicenseStatus};
use super::store;
use crate::auth::{Admin, Principal};
use crate::db::Filters;
use crate::error::{Error, Result};
use crate::http::checks::{Checks, normalize_email};
use crate::http::extract::{Json, OptionalJson, Path};
use crate::http::pagination::{Listing, Page, PageParams};
use crate::state::AppState;
use crate::timestamp::{Timestamp, double_option, now_ms};

const DAY_MS: i64 = 86_400_000;
const MAX_METADATA_BYTES: usize = 16 * 1024;

#[derive(sqlx::FromRow)]
struct CountedRow {
    #[sqlx(flatten)]
    license: LicenseRow,
    activations_count: i64,
}

/// The terms an admin may set on a license (create and patch alike).
fn check_terms(
    c: &mut Checks,
    max_activations: Option<i64>,
    entitlements: Option<&[String]>,
    metadata: Option<&serde_json::Value>,
) {
    if let Some(v) = max_activations {
        c.range(v, "max_activations", 1, 1_000_000);
    }
    if let Some(e) = entitlements {
        c.string_list(e, "entitlements", 100, 64);
    }
    if let Some(m) = metadata {
        check_metadata(c, m);
    }
}

/// The license object with its key and churn budget, for admins and the owner.
pub(crate) async fn full_view(state: &AppState, row: &LicenseRow, count: i64) -> Result<License> {
    let key = state.keys.data.open_string(&row.key_sealed, &row.id)?;
    let churn = super::churn::budget(&state.db.pool, &row.id, &row.product_id, now_ms()).await?;
    Ok(License {
        churn: Some(churn),
        ..row.view(count, Some(key))
    })
}

async fn counted(state: &AppState, id: &str) -> Result<Option<(LicenseRow, i64)>> {
    let row = store::license_by_id(&state.db.pool, id).await?;
    match row {
        Some(r) => {
            let n = store::count_activations(&state.db.pool, &r.id).await?;
            Ok(Some((r, n)))
        }
        None => Ok(None),
    }
}

fn check_metadata(c: &mut Checks, m: &serde_json::Value) {
    c.check(m.is_object(), "metadata", "must be a JSON object");
    c.check(
        m.to_string().len() <= MAX_METADATA_BYTES,
        "metadata",
        "must be at most 16 KiB",
    );
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateLicense {
    /// Product id or slug.
    pub product_id: String,
    /// Owner; or give `email` to find or create a customer.
    pub user_id: Option<String>,
    pub email: Option<String>,
    /// Default: the product's.
    pub max_activations: Option<i64>,
    /// May be in the past. Default: now + the product's `duration_days` (none when null).
    pub expires_at: Option<Timestamp>,
    /// Default: the product's.
    pub entitlements: Option<Vec<String>>,
    #[schema(value_type = Option<crate::licensing::model::Metadata>)]
    pub metadata: Option<serde_json::Value>,
}

/// Creates a license (admin). The answer is the only one besides GETs by admins and the owner
/// that carries the full `key`.
#[utoipa::path(post, path = "/api/licenses", tag = "licenses", request_body = CreateLicense,
    responses((status = 201, body = License)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_license(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateLicense>,
) -> Result<(StatusCode, Json<License>)> {
    let mut c = Checks::new();
    c.len(&req.product_id, "product_id", 1, 255);
    c.check(
        !(req.user_id.is_some() && req.email.is_some()),
        "email",
        "give user_id or email, not both",
    );
    check_terms(
        &mut c,
        req.max_activations,
        req.entitlements.as_deref(),
        req.metadata.as_ref(),
    );
    let email = match &req.email {
        Some(e) => {
            let n = normalize_email(e);
            c.check(n.is_some(), "email", "Invalid email address");
            n
        }
        None => None,
    };
    c.finish()?;
    let product = crate::licensing::products::find(&state.db, &req.product_id)
        .await?
        .ok_or_else(|| Error::invalid("product_id", "no such product"))?;
    let mut tx = state.db.begin().await?;
    let user_id = match (&req.user_id, &email) {
        (Some(uid), _) => Some(
            crate::accounts::users::find_by_id(&state, uid)
                .await?
                .ok_or_else(|| Error::invalid("user_id", "no such user"))?
                .user
                .id,
        ),
        (None, Some(e)) => crate::accounts::users::owner_for_email(&mut tx, e).await?,
        (None, None) => None,
    };
    // Granted to an address whose account may not own it yet: it waits for that address.
    let granted_email = email.as_deref().filter(|_| user_id.is_none());
    let now = now_ms();
    let expires_at = match req.expires_at {
        Some(t) => Some(t.ms()),
        None => product.duration_days.map(|d| now + d * DAY_MS),
    };
    let entitlements = match &req.entitlements {
        Some(e) => serde_json::to_string(e).expect("json"),
        None => product.entitlements.clone(),
    };
    let metadata = req
        .metadata
        .clone()
        .unwrap_or_else(|| serde_json::json!({}))
        .to_string();
    let new = lifecycle::NewLicense {
        product_id: &product.id,
        user_id: user_id.as_deref(),
        granted_email,
        max_activations: req.max_activations.unwrap_or(product.max_activations),
        expires_at,
        entitlements: &entitlements,
        metadata: &metadata,
        order_id: None,
        subscription_id: None,
    };
    let (row, key) = lifecycle::create(&mut tx, &state.keys.data, new).await?;
    // Granted to an address: its holder gets the key by mail (an invitation when new).
    if let Some(e) = &email {
        let granted = [crate::accounts::mailings::Granted {
            product: product.name.clone(),
            key: key.as_str().to_string(),
        }];
        crate::accounts::mailings::licenses_granted(&state, &mut tx, e, &granted).await?;
    }
    tx.commit().await?;
    if email.is_some() {
        state.mail.wake.notify_one();
    }
    // An unknown-key entry may be cached for this digest (someone guessed it): forget it.
    state.licenses.changed(&state.db, &row.key_digest).await;
    Ok((
        StatusCode::CREATED,
        Json(row.view(0, Some(key.as_str().to_string()))),
    ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LicenseFilters {
    pub user_id: Option<String>,
    pub product_id: Option<String>,
    pub status: Option<String>,
}

/// Lists licenses: all for admins, their own for customers. Filters `user_id`, `product_id`, `status`.
#[utoipa::path(get, path = "/api/licenses", tag = "licenses", params(PageParams, LicenseFilters),
    responses((status = 200, body = Page<License>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_licenses(
    State(state): State<AppState>,
    principal: Principal,
    Listing { page: req, filters }: Listing<LicenseFilters>,
) -> Result<Json<Page<License>>> {
    let mut f = Filters::default();
    if let Some(s) = &filters.status {
        LicenseStatus::parse(s)
            .ok_or_else(|| Error::invalid("status", "must be active, suspended or revoked"))?;
        f.push("l.status", "=", s.clone());
    }
    if !principal.sees_all() {
        f.push("l.user_id", "=", principal.user_id.clone());
    }
    if let Some(u) = &filters.user_id {
        f.push("l.user_id", "=", u.clone());
    }
    if let Some(p) = &filters.product_id {
        f.push("l.product_id", "=", p.clone());
    }
    let rows = crate::db::list::page::<CountedRow>(
        &state.db,
        &format!("SELECT {LICENSE_COLUMNS}, (SELECT count(*) FROM activations a WHERE a.license_id = l.id) AS activations_count \
         FROM licenses l"),
        "l.id",
        f,
        &req,
        |r| &r.license.id,
    )
    .await?;
    let state = &state;
    let page = rows
        .try_map(|r| async move { full_view(state, &r.license, r.activations_count).await })
        .await?;
    Ok(Json(page))
}

/// Loads a license the caller may see, else 404 (another customer's license does not exist for them).
async fn visible(state: &AppState, principal: &Principal, id: &str) -> Result<(LicenseRow, i64)> {
    match counted(state, id).await? {
        Some((row, n)) if principal.can_see(row.user_id.as_deref()) => Ok((row, n)),
        _ => Err(Error::no_such("License")),
    }
}

/// Gets a license (admin or owner), with its key.
#[utoipa::path(get, path = "/api/licenses/{id}", tag = "licenses", params(("id" = String, Path)),
    responses((status = 200, body = License)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_license(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<License>> {
    let (row, n) = visible(&state, &principal, &id).await?;
    Ok(Json(full_view(&state, &row, n).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateLicense {
    pub max_activations: Option<i64>,
    /// `null` removes the expiry; a past time makes the license validate as EXPIRED.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Timestamp>)]
    pub expires_at: Option<Option<Timestamp>>,
    pub entitlements: Option<Vec<String>>,
    #[schema(value_type = Option<crate::licensing::model::Metadata>)]
    pub metadata: Option<serde_json::Value>,
    /// `null` detaches the license from its owner.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub user_id: Option<Option<String>>,
}

/// Updates a license (admin). Status changes go through the lifecycle actions.
#[utoipa::path(patch, path = "/api/licenses/{id}", tag = "licenses", params(("id" = String, Path)), request_body = UpdateLicense,
    responses((status = 200, body = License)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn update_license(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Json(req): Json<UpdateLicense>,
) -> Result<Json<License>> {
    let mut c = Checks::new();
    check_terms(
        &mut c,
        req.max_activations,
        req.entitlements.as_deref(),
        req.metadata.as_ref(),
    );
    c.finish()?;
    if let Some(Some(uid)) = &req.user_id {
        crate::accounts::users::find_by_id(&state, uid)
            .await?
            .ok_or_else(|| Error::invalid("user_id", "no such user"))?;
    }
    let (mut tx, cur) = store::lock_license(&state.db, &id).await?;
    let cur = cur.ok_or_else(|| Error::no_such("License"))?;
    let terms = lifecycle::Terms {
        max_activations: req.max_activations,
        expires_at: req.expires_at.map(|o| o.map(Timestamp::ms)),
        entitlements: req
            .entitlements
            .map(|e| serde_json::to_string(&e).expect("json")),
        metadata: req.metadata.map(|m| m.to_string()),
        user_id: req.user_id,
    };
    let row = lifecycle::amend(&mut tx, &cur, terms).await?;
    let n = store::count_activations(&mut *tx, &id).await?;
    tx.commit().await?;
    state.licenses.changed(&state.db, &row.key_digest).await;
    Ok(Json(full_view(&state, &row, n).await?))
}

/// Lists a license's live activations (admin or owner).
#[utoipa::path(get, path = "/api/licenses/{id}/activations", tag = "licenses", params(("id" = String, Path)),
    responses((status = 200, body = Page<Activation>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_license_activations(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Page<Activation>>> {
    let (row, _) = visible(&state, &principal, &id).await?;
    let data = store::activations(&state.db.pool, &row.id).await?;
    Ok(Json(Page {
        data,
        next_cursor: None,
    }))
}

/// Frees a seat (admin, or the license's owner). The owner's releases count against the churn
/// budget (409 `CHURN_LIMIT_REACHED` past it); an admin's do not.
#[utoipa::path(delete, path = "/api/activations/{id}", tag = "licenses", params(("id" = String, Path)),
    responses((status = 204, description = "Seat freed"),
              (status = 409, description = "CHURN_LIMIT_REACHED (the owner only)", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete_activation(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let a = store::activation_by_id(&state.db.pool, &id)
        .await?
        .ok_or_else(|| Error::no_such("Activation"))?;
    let (mut tx, row) = store::lock_license(&state.db, &a.license_id).await?;
    let row = row.ok_or_else(|| Error::no_such("Activation"))?;
    if !principal.can_see(row.user_id.as_deref()) {
        return Err(Error::no_such("Activation"));
    }
    let a = store::activation_by_id(&mut *tx, &id)
        .await?
        .ok_or_else(|| Error::no_such("Activation"))?;
    // The owner's releases count against the churn budget like the key holder's; an admin's
    // do not (an admin can reset the budget anyway).
    let release = if principal.sees_all() {
        lifecycle::Release::Admin
    } else {
        lifecycle::Release::Holder { now: now_ms() }
    };
    lifecycle::release_seat(&mut tx, &row, a, release).await?;
    tx.commit().await?;
    state.licenses.changed(&state.db, &row.key_digest).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LicenseEnvelope {
    pub license: License,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RevokeRequest {
    /// Recorded with the event.
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RenewRequest {
    /// The new expiry; or
    pub expires_at: Option<Timestamp>,
    /// days added to the later of now and the current expiry.
    pub extend_days: Option<i64>,
}

/// Runs one lifecycle action under the license's write lock: the change (`lifecycle`), commit,
/// invalidate, and the license as admins see it.
async fn transition(
    state: &AppState,
    id: &str,
    change: Change,
    extra: serde_json::Value,
) -> Result<Json<LicenseEnvelope>> {
    let (mut tx, cur) = store::lock_license(&state.db, id).await?;
    let cur = cur.ok_or_else(|| Error::no_such("License"))?;
    let applied = lifecycle::apply(&mut tx, &state.keys.data, &cur, change, extra).await?;
    tx.commit().await?;
    for digest in &applied.digests {
        state.licenses.changed(&state.db, digest).await;
    }
    Ok(Json(LicenseEnvelope {
        license: full_view(state, &applied.row, applied.activations).await?,
    }))
}

/// Revokes a license for good (admin). Emits `license.revoked`.
#[utoipa::path(post, path = "/api/licenses/{id}/revoke", tag = "licenses", params(("id" = String, Path)), request_body(content = RevokeRequest, content_type = "application/json"),
    responses((status = 200, body = LicenseEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke_license(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RevokeRequest>,
) -> Result<Json<LicenseEnvelope>> {
    let reason = body.reason;
    if let Some(r) = &reason {
        Checks::new().len(r, "reason", 0, 1000).finish()?;
    }
    transition(
        &state,
        &id,
        Change::Revoke,
        serde_json::json!({ "reason": reason }),
    )
    .await
}

/// The lifecycle actions that take no body: each needs its own function (a route and an OpenAPI
/// entry of its own), and all do the same thing — apply their `Change` through `transition`.
macro_rules! plain_action {
    ($(#[$doc:meta])* $name:ident, $path:literal, $change:expr) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = "licenses", params(("id" = String, Path)),
            responses((status = 200, body = LicenseEnvelope), (status = 409, description = "LICENSE_REVOKED", body = crate::error::Problem)),
            security(("bearer" = []), ("cookie" = [])))]
        pub async fn $name(
            State(state): State<AppState>,
            _admin: Admin,
            Path(id): Path<String>,
        ) -> Result<Json<LicenseEnvelope>> {
            transition(&state, &id, $change, serde_json::json!({})).await
        }
    };
}

plain_action!(
    /// Suspends a license (admin). Emits `license.suspended`.
    suspend_license,
    "/api/licenses/{id}/suspend",
    Change::Suspend
);
plain_action!(
    /// Reinstates a suspended license (admin). Emits `license.reinstated`.
    reinstate_license,
    "/api/licenses/{id}/reinstate",
    Change::Reinstate
);
plain_action!(
    /// Gives a license a new key; the old key stops working at once (admin). Emits
    /// `license.reissued`.
    reissue_license,
    "/api/licenses/{id}/reissue",
    Change::Reissue
);

/// Renews a license to `expires_at`, or by `extend_days` from the later of now and its expiry (admin).
#[utoipa::path(post, path = "/api/licenses/{id}/renew", tag = "licenses", params(("id" = String, Path)), request_body = RenewRequest,
    responses((status = 200, body = LicenseEnvelope), (status = 409, description = "LICENSE_REVOKED", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn renew_license(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    // Read as optional so that a bare POST hears which fields it needs (422), not 415.
    OptionalJson(req): OptionalJson<RenewRequest>,
) -> Result<Json<LicenseEnvelope>> {
    let mut c = Checks::new();
    if req.expires_at.is_some() == req.extend_days.is_some() {
        let why = "give exactly one of expires_at (a new expiry) or extend_days (days to add)";
        c.push("expires_at", why);
        c.push("extend_days", why);
    }
    if let Some(d) = req.extend_days {
        c.range(d, "extend_days", 1, 36_500);
    }
    c.finish()?;
    let change = match (req.expires_at, req.extend_days) {
        (Some(t), _) => Change::Renew { expires_at: t.ms() },
        (None, Some(days)) => Change::Extend {
            days,
            now: now_ms(),
        },
        (None, None) => unreachable!("checked above"),
    };
    transition(&state, &id, change, serde_json::json!({})).await
}
