//! Products: public to read, admin to write. A product sets the defaults of its licenses and the
//! offline lease and heartbeat rules the hot path applies.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Admin;
use crate::auth::limits::Public;
use crate::crypto::new_id;
use crate::error::{Error, Result, ResultExt};
use crate::http::checks::Checks;
use crate::http::extract::{Json, Path};
use crate::http::pagination::{Listing, Page, PageParams};
use crate::state::AppState;
use crate::timestamp::{Timestamp, double_option, now_ms};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductRow {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub max_activations: i64,
    pub duration_days: Option<i64>,
    pub offline_lease_days: i64,
    pub heartbeat_timeout_s: Option<i64>,
    pub entitlements: String,
    pub stripe_price_ids: String,
    /// 0 or 1 (one integer type on both backends).
    pub offline_activation: i64,
    pub offline_activation_lease_days: i64,
    pub max_deactivations_per_30d: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub const PRODUCT_COLUMNS: &str = "id, name, slug, max_activations, duration_days, offline_lease_days, \
     heartbeat_timeout_s, entitlements, stripe_price_ids, offline_activation, offline_activation_lease_days, \
     max_deactivations_per_30d, created_at, updated_at";

/// The product object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Product {
    #[schema(example = "prd_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    #[schema(example = "ECOSIRE Desktop Pro")]
    pub name: String,
    #[schema(example = "desktop-pro")]
    pub slug: String,
    #[schema(example = 3)]
    pub max_activations: i64,
    #[schema(example = 365)]
    pub duration_days: Option<i64>,
    #[schema(example = 7)]
    pub offline_lease_days: i64,
    pub heartbeat_timeout_s: Option<i64>,
    pub entitlements: Vec<String>,
    pub stripe_price_ids: Vec<String>,
    /// Whether machines without a connection may activate through a signed request file
    /// (`POST /api/licenses/offline-activations`).
    pub offline_activation: bool,
    /// How long a license file from an offline activation is valid (and its seat held) before
    /// the machine must be activated again.
    #[schema(example = 90)]
    pub offline_activation_lease_days: i64,
    /// How many seats one license may free in any 30 days (deactivations by the key holder or
    /// the owner; the heartbeat reaper's releases do not count). `null`: unlimited.
    #[schema(example = 3)]
    pub max_deactivations_per_30d: Option<i64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ProductRow {
    pub fn view(&self) -> Product {
        Product {
            id: self.id.clone(),
            name: self.name.clone(),
            slug: self.slug.clone(),
            max_activations: self.max_activations,
            duration_days: self.duration_days,
            offline_lease_days: self.offline_lease_days,
            heartbeat_timeout_s: self.heartbeat_timeout_s,
            entitlements: serde_json::from_str(&self.entitlements).unwrap_or_default(),
            stripe_price_ids: serde_json::from_str(&self.stripe_price_ids).unwrap_or_default(),
            offline_activation: self.offline_activation != 0,
            offline_activation_lease_days: self.offline_activation_lease_days,
            max_deactivations_per_30d: self.max_deactivations_per_30d,
            created_at: Timestamp(self.created_at),
            updated_at: Timestamp(self.updated_at),
        }
    }
}

pub async fn find(db: &crate::db::Db, id_or_slug: &str) -> Result<Option<ProductRow>> {
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1 OR slug = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id_or_slug)
        .fetch_optional(&db.pool)
        .await?)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_product, list_products))
        .routes(routes!(get_product, update_product, delete_product))
}

fn slugify(name: &str) -> String {
    let mut s = String::new();
    for c in name.trim().to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    s.trim_end_matches('-').chars().take(63).collect()
}

fn slug_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

const MAX_SEATS: i64 = 1_000_000;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateProduct {
    #[schema(example = "ECOSIRE Desktop Pro")]
    pub name: String,
    /// Lowercase letters, digits and dashes; derived from the name when absent.
    pub slug: Option<String>,
    /// Default 1.
    pub max_activations: Option<i64>,
    pub duration_days: Option<i64>,
    /// Default 7.
    pub offline_lease_days: Option<i64>,
    pub heartbeat_timeout_s: Option<i64>,
    #[serde(default)]
    pub entitlements: Vec<String>,
    #[serde(default)]
    pub stripe_price_ids: Vec<String>,
    /// Default false.
    pub offline_activation: Option<bool>,
    /// Default 90 (1–3650).
    pub offline_activation_lease_days: Option<i64>,
    /// Default null (unlimited); 1–10000.
    pub max_deactivations_per_30d: Option<i64>,
}

/// The terms of air-gapped activation and the churn budget, checked alike on create and patch.
fn check_offline_terms(c: &mut Checks, lease: Option<i64>, churn: Option<i64>) {
    if let Some(v) = lease {
        c.range(v, "offline_activation_lease_days", 1, 3650);
    }
    if let Some(v) = churn {
        c.range(v, "max_deactivations_per_30d", 1, 10_000);
    }
}

fn check_common(
    c: &mut Checks,
    max_activations: Option<i64>,
    duration_days: Option<i64>,
    lease: Option<i64>,
    heartbeat: Option<i64>,
    entitlements: Option<&[String]>,
    prices: Option<&[String]>,
) {
    if let Some(v) = max_activations {
        c.range(v, "max_activations", 1, MAX_SEATS);
    }
    if let Some(v) = duration_days {
        c.range(v, "duration_days", 1, 36_500);
    }
    if let Some(v) = lease {
        c.range(v, "offline_lease_days", 1, 365);
    }
    if let Some(v) = heartbeat {
        c.range(v, "heartbeat_timeout_s", 10, 31_536_000);
    }
    if let Some(v) = entitlements {
        c.string_list(v, "entitlements", 100, 64);
    }
    if let Some(v) = prices {
        c.string_list(v, "stripe_price_ids", 50, 255);
    }
}

/// Creates a product (admin).
#[utoipa::path(post, path = "/api/products", tag = "products", request_body = CreateProduct,
    responses((status = 201, body = Product), (status = 409, description = "SLUG_TAKEN", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_product(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateProduct>,
) -> Result<(StatusCode, Json<Product>)> {
    let slug = req.slug.clone().unwrap_or_else(|| slugify(&req.name));
    let mut c = Checks::new();
    c.len(req.name.trim(), "name", 1, 200);
    c.check(
        slug_ok(&slug),
        "slug",
        "must be 1–63 lowercase letters, digits or dashes",
    );
    check_common(
        &mut c,
        req.max_activations,
        req.duration_days,
        req.offline_lease_days,
        req.heartbeat_timeout_s,
        Some(&req.entitlements),
        Some(&req.stripe_price_ids),
    );
    check_offline_terms(
        &mut c,
        req.offline_activation_lease_days,
        req.max_deactivations_per_30d,
    );
    c.finish()?;
    let id = new_id("prd");
    let now = now_ms();
    sqlx::query(
        "INSERT INTO products (id, name, slug, max_activations, duration_days, offline_lease_days, heartbeat_timeout_s, \
         entitlements, stripe_price_ids, offline_activation, offline_activation_lease_days, max_deactivations_per_30d, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
    )
    .bind(&id)
    .bind(req.name.trim())
    .bind(&slug)
    .bind(req.max_activations.unwrap_or(1))
    .bind(req.duration_days)
    .bind(req.offline_lease_days.unwrap_or(7))
    .bind(req.heartbeat_timeout_s)
    .bind(serde_json::to_string(&req.entitlements).expect("json"))
    .bind(serde_json::to_string(&req.stripe_price_ids).expect("json"))
    .bind(i64::from(req.offline_activation.unwrap_or(false)))
    .bind(req.offline_activation_lease_days.unwrap_or(90))
    .bind(req.max_deactivations_per_30d)
    .bind(now)
    .execute(&state.db.pool)
    .await
    .on_unique(|| Err(Error::conflict("SLUG_TAKEN", format!("A product with slug '{slug}' exists"))))?;
    let row = find(&state.db, &id)
        .await?
        .ok_or_else(|| Error::no_such("Product"))?;
    Ok((StatusCode::CREATED, Json(row.view())))
}

/// Lists products (public).
#[utoipa::path(get, path = "/api/products", tag = "products", params(PageParams),
    responses((status = 200, body = Page<Product>)))]
pub async fn list_products(
    State(state): State<AppState>,
    _rate: Public,
    Listing { page: req, .. }: Listing,
) -> Result<Json<Page<Product>>> {
    let f = crate::db::Filters::default();
    let rows = crate::db::list::page::<ProductRow>(
        &state.db,
        &format!("SELECT {PRODUCT_COLUMNS} FROM products"),
        "id",
        f,
        &req,
        |r| &r.id,
    )
    .await?;
    Ok(Json(rows.map(|r| r.view())))
}

/// Gets a product by id or slug (public).
#[utoipa::path(get, path = "/api/products/{id}", tag = "products", params(("id" = String, Path, description = "Product id or slug")),
    responses((status = 200, body = Product)))]
pub async fn get_product(
    State(state): State<AppState>,
    _rate: Public,
    Path(id): Path<String>,
) -> Result<Json<Product>> {
    let row = find(&state.db, &id)
        .await?
        .ok_or_else(|| Error::no_such("Product"))?;
    Ok(Json(row.view()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateProduct {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub max_activations: Option<i64>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub duration_days: Option<Option<i64>>,
    pub offline_lease_days: Option<i64>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub heartbeat_timeout_s: Option<Option<i64>>,
    pub entitlements: Option<Vec<String>>,
    pub stripe_price_ids: Option<Vec<String>>,
    pub offline_activation: Option<bool>,
    pub offline_activation_lease_days: Option<i64>,
    /// `null` removes the cap.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub max_deactivations_per_30d: Option<Option<i64>>,
}

/// Updates a product (admin). Existing licenses keep their own seats and entitlements; the
/// offline lease and heartbeat rules apply to them at once.
#[utoipa::path(patch, path = "/api/products/{id}", tag = "products", params(("id" = String, Path)), request_body = UpdateProduct,
    responses((status = 200, body = Product), (status = 409, description = "SLUG_TAKEN", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn update_product(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Json(req): Json<UpdateProduct>,
) -> Result<Json<Product>> {
    let cur = find(&state.db, &id)
        .await?
        .ok_or_else(|| Error::no_such("Product"))?;
    let mut c = Checks::new();
    c.opt_len(req.name.as_deref().map(str::trim), "name", 1, 200);
    if let Some(s) = &req.slug {
        c.check(
            slug_ok(s),
            "slug",
            "must be 1–63 lowercase letters, digits or dashes",
        );
    }
    check_common(
        &mut c,
        req.max_activations,
        req.duration_days.flatten(),
        req.offline_lease_days,
        req.heartbeat_timeout_s.flatten(),
        req.entitlements.as_deref(),
        req.stripe_price_ids.as_deref(),
    );
    check_offline_terms(
        &mut c,
        req.offline_activation_lease_days,
        req.max_deactivations_per_30d.flatten(),
    );
    c.finish()?;
    sqlx::query(
        "UPDATE products SET name = $2, slug = $3, max_activations = $4, duration_days = $5, offline_lease_days = $6, \
         heartbeat_timeout_s = $7, entitlements = $8, stripe_price_ids = $9, offline_activation = $10, \
         offline_activation_lease_days = $11, max_deactivations_per_30d = $12, updated_at = $13 WHERE id = $1",
    )
    .bind(&cur.id)
    .bind(req.name.as_deref().map(str::trim).unwrap_or(&cur.name))
    .bind(req.slug.as_deref().unwrap_or(&cur.slug))
    .bind(req.max_activations.unwrap_or(cur.max_activations))
    .bind(req.duration_days.unwrap_or(cur.duration_days))
    .bind(req.offline_lease_days.unwrap_or(cur.offline_lease_days))
    .bind(req.heartbeat_timeout_s.unwrap_or(cur.heartbeat_timeout_s))
    .bind(req.entitlements.map(|e| serde_json::to_string(&e).expect("json")).unwrap_or(cur.entitlements))
    .bind(req.stripe_price_ids.map(|e| serde_json::to_string(&e).expect("json")).unwrap_or(cur.stripe_price_ids))
    .bind(req.offline_activation.map_or(cur.offline_activation, i64::from))
    .bind(req.offline_activation_lease_days.unwrap_or(cur.offline_activation_lease_days))
    .bind(req.max_deactivations_per_30d.unwrap_or(cur.max_deactivations_per_30d))
    .bind(now_ms())
    .execute(&state.db.pool)
    .await
    .on_unique(|| Err(Error::conflict("SLUG_TAKEN", "Another product has this slug")))?;
    // Snapshots carry the product's slug, lease and heartbeat rule.
    state.licenses.invalidate_all(&state.db).await;
    let row = find(&state.db, &cur.id)
        .await?
        .ok_or_else(|| Error::no_such("Product"))?;
    Ok(Json(row.view()))
}

/// Deletes a product that no license uses (admin).
#[utoipa::path(delete, path = "/api/products/{id}", tag = "products", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"),
              (status = 409, description = "PRODUCT_IN_USE", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete_product(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let res = sqlx::query("DELETE FROM products WHERE id = $1 OR slug = $1")
        .bind(&id)
        .execute(&state.db.pool)
        .await;
    let done = res.on_foreign_key(|| {
        Err(Error::conflict(
            "PRODUCT_IN_USE",
            "Licenses of this product exist; revoke or reassign them first",
        ))
    })?;
    if done.rows_affected() == 0 {
        return Err(Error::no_such("Product"));
    }
    Ok(StatusCode::NO_CONTENT)
}
