//! Orders and subscriptions, as Stripe events made them, with the licenses they granted.
//! Admins see all; customers their own.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Principal;
use crate::db::Filters;
use crate::error::{Error, Result};
use crate::http::extract::{Json, Path};
use crate::http::pagination::{Listing, Page, PageParams, PageRequest};
use crate::state::AppState;
use crate::timestamp::Timestamp;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(list_subscriptions))
        .routes(routes!(get_subscription))
}

const ORDER_SELECT: &str = "SELECT id, user_id, status, email, stripe_checkout_session_id, stripe_payment_intent_id, \
     stripe_subscription_id, stripe_customer_id, subscription_id, amount_total, amount_refunded, currency, created_at, updated_at FROM orders";

/// An order (a paid Stripe checkout) and the licenses it granted.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Order {
    #[schema(example = "ord_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    pub user_id: Option<String>,
    /// `paid`, `partially_refunded`, `refunded` or `failed`.
    #[schema(example = "paid")]
    pub status: String,
    pub email: Option<String>,
    pub stripe_checkout_session_id: Option<String>,
    pub stripe_payment_intent_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    /// The checkout's Stripe customer: how renewals and refunds without a known payment intent
    /// find the order.
    pub stripe_customer_id: Option<String>,
    pub subscription_id: Option<String>,
    /// In the currency's smallest unit.
    pub amount_total: Option<i64>,
    pub amount_refunded: i64,
    pub currency: Option<String>,
    /// The licenses it granted or keeps in step.
    // Not a column: read from the licenses table by the view.
    #[sqlx(skip)]
    pub license_ids: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A customer's billing record (an order or a subscription): admins see every one, customers
/// their own, and another customer's is a 404.
trait Owned: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin {
    const SELECT: &'static str;
    const WHAT: &'static str;
    fn id(&self) -> &str;
    fn owner(&self) -> Option<&str>;
}

impl Owned for Order {
    const SELECT: &'static str = ORDER_SELECT;
    const WHAT: &'static str = "Order";
    fn id(&self) -> &str {
        &self.id
    }
    fn owner(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
}

async fn list_owned<R: Owned>(
    state: &AppState,
    p: &Principal,
    req: &PageRequest,
) -> Result<Page<R>> {
    let mut f = Filters::default();
    if !p.sees_all() {
        f.push("user_id", "=", p.user_id.clone());
    }
    Ok(crate::db::list::page::<R>(&state.db, R::SELECT, "id", f, req, |r| r.id()).await?)
}

async fn get_owned<R: Owned>(state: &AppState, p: &Principal, id: &str) -> Result<R> {
    let row: Option<R> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{} WHERE id = $1", R::SELECT)))
            .bind(id)
            .fetch_optional(&state.db.pool)
            .await?;
    row.filter(|r| p.can_see(r.owner()))
        .ok_or_else(|| Error::no_such(R::WHAT))
}

async fn license_ids(state: &AppState, column: &'static str, value: &str) -> Result<Vec<String>> {
    let sql = format!("SELECT id FROM licenses WHERE {column} = $1 ORDER BY id");
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .fetch_all(&state.db.pool)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

async fn order_view(state: &AppState, mut o: Order) -> Result<Order> {
    o.license_ids = license_ids(state, "order_id", &o.id).await?;
    Ok(o)
}

/// Lists orders: all for admins, their own for customers.
#[utoipa::path(get, path = "/api/orders", tag = "billing", params(PageParams),
    responses((status = 200, body = Page<Order>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_orders(
    State(state): State<AppState>,
    p: Principal,
    Listing { page, .. }: Listing,
) -> Result<Json<Page<Order>>> {
    let rows = list_owned::<Order>(&state, &p, &page).await?;
    Ok(Json(rows.try_map(|r| order_view(&state, r)).await?))
}

/// Gets an order (admin or its customer).
#[utoipa::path(get, path = "/api/orders/{id}", tag = "billing", params(("id" = String, Path)),
    responses((status = 200, body = Order)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_order(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Order>> {
    let row = get_owned::<Order>(&state, &p, &id).await?;
    Ok(Json(order_view(&state, row).await?))
}

const SUBSCRIPTION_SELECT: &str = "SELECT id, user_id, stripe_subscription_id, status, current_period_end, \
     created_at, updated_at FROM subscriptions";

impl Owned for Subscription {
    const SELECT: &'static str = SUBSCRIPTION_SELECT;
    const WHAT: &'static str = "Subscription";
    fn id(&self) -> &str {
        &self.id
    }
    fn owner(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
}

/// A Stripe subscription and the licenses it keeps in step.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Subscription {
    #[schema(example = "sbs_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    pub user_id: Option<String>,
    #[schema(example = "sub_1Q2w3E4r5T6y")]
    pub stripe_subscription_id: String,
    /// Stripe's status (`active`, `trialing`, `past_due`, `canceled`, …) or `failed`.
    pub status: String,
    pub current_period_end: Option<Timestamp>,
    /// The licenses it granted or keeps in step.
    // Not a column: read from the licenses table by the view.
    #[sqlx(skip)]
    pub license_ids: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

async fn subscription_view(state: &AppState, mut s: Subscription) -> Result<Subscription> {
    s.license_ids = license_ids(state, "subscription_id", &s.id).await?;
    Ok(s)
}

/// Lists subscriptions: all for admins, their own for customers.
#[utoipa::path(get, path = "/api/subscriptions", tag = "billing", params(PageParams),
    responses((status = 200, body = Page<Subscription>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_subscriptions(
    State(state): State<AppState>,
    p: Principal,
    Listing { page, .. }: Listing,
) -> Result<Json<Page<Subscription>>> {
    let rows = list_owned::<Subscription>(&state, &p, &page).await?;
    Ok(Json(rows.try_map(|r| subscription_view(&state, r)).await?))
}

/// Gets a subscription (admin or its customer).
#[utoipa::path(get, path = "/api/subscriptions/{id}", tag = "billing", params(("id" = String, Path)),
    responses((status = 200, body = Subscription)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_subscription(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Subscription>> {
    let row = get_owned::<Subscription>(&state, &p, &id).await?;
    Ok(Json(subscription_view(&state, row).await?))
}
