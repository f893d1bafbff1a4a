//! Inbound Stripe webhooks: the signature is checked over the raw bytes before anything is parsed;
//! each event id is recorded in the same transaction as its effects, so a redelivery changes
//! nothing; a well-signed event we cannot use is recorded with the reason and acknowledged (200),
//! so Stripe does not retry it forever, and never half-applied. A paid checkout that maps to no
//! product is the exception that stays open: it leaves an admin notice, and once the mapping is
//! fixed, resending the event from Stripe's dashboard grants it.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::accounts::mailings::{self, Granted};
use crate::auth::limits::Public;
use crate::billing::stripe_api::{self, Line};
use crate::crypto::new_id;
use crate::db::Tx;
use crate::error::{Error, Result};
use crate::events;
use crate::http::extract::{Json, RawBody};
use crate::licensing::lifecycle::{self, Change, NewLicense};
use crate::licensing::model::{LICENSE_COLUMNS, LicenseRow, LicenseStatus};
use crate::state::AppState;
use crate::timestamp::now_ms;

/// Stripe's own libraries allow 5 minutes between signing and receipt.
const TOLERANCE_S: i64 = 300;

/// The outcome of a paid checkout that granted nothing for want of a product: unlike `ignored`,
/// a delivery of the same event id is applied again (an admin fixed the mapping and resent it).
const UNMAPPED: &str = "unmapped";

/// More licenses than this from one checkout are not granted unattended: a quantity typo (or a
/// customer-adjustable quantity) must not make one webhook create licenses for minutes.
const MAX_LICENSES_PER_CHECKOUT: i64 = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive_stripe_event))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StripeAck {
    pub received: bool,
    /// `processed`, `duplicate` (seen before; nothing changed) or `ignored` (see `detail`).
    #[schema(example = "processed")]
    pub outcome: &'static str,
    pub detail: Option<String>,
}

/// Why an event could not be applied: unusable (acknowledged, recorded), a paid checkout whose
/// products we cannot tell (acknowledged, recorded as `unmapped`, an admin notice), or our own
/// failure.
enum Failure {
    Unusable(String),
    Unmapped { session: String, why: String },
    Internal(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Internal(e)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Internal(e.into())
    }
}

fn unusable(msg: impl Into<String>) -> Failure {
    Failure::Unusable(msg.into())
}

/// What an applied event changed: licenses to invalidate and the `ecosire` block to forward.
#[derive(Default)]
struct Effects {
    digests: Vec<String>,
    order_id: Option<String>,
    subscription_id: Option<String>,
    license_ids: Vec<String>,
    detail: Option<String>,
    /// Mail was queued: the mail worker is woken after the commit.
    mail: bool,
}

/// Receives a Stripe event.
///
/// Verifies `Stripe-Signature` (any `v1`, 300 s tolerance, constant time) over the raw body,
/// then applies the event once. 401 `INVALID_SIGNATURE` changes nothing; 503 when
/// `STRIPE_WEBHOOK_SECRET` is not configured; 502 `STRIPE_UNAVAILABLE` when a checkout's line
/// items could not be read from Stripe (nothing recorded: Stripe delivers the event again).
#[utoipa::path(post, path = "/api/webhooks/stripe", tag = "webhooks",
    request_body(content = Object, description = "A Stripe event, exactly as Stripe sent it", content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "t=…,v1=…")),
    responses((status = 200, body = StripeAck), (status = 400, description = "MALFORMED_JSON: the event is not JSON", body = crate::error::Problem), (status = 401, description = "INVALID_SIGNATURE", body = crate::error::Problem),
              (status = 502, description = "STRIPE_UNAVAILABLE", body = crate::error::Problem),
              (status = 503, description = "STRIPE_NOT_CONFIGURED", body = crate::error::Problem)))]
pub async fn receive_stripe_event(
    State(state): State<AppState>,
    _rate: Public,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<StripeAck>> {
    let Some(secret) = &state.config.stripe_webhook_secret else {
        return Err(Error::Unavailable {
            code: "STRIPE_NOT_CONFIGURED",
            message: "STRIPE_WEBHOOK_SECRET is not set on this server".into(),
        });
    };
    let bad_sig = || {
        Error::status(
            StatusCode::UNAUTHORIZED,
            "INVALID_SIGNATURE",
            "Missing, invalid or stale Stripe-Signature",
        )
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad_sig)?;
    events::signature::verify(secret, header, &body, now_ms() / 1000, TOLERANCE_S)
        .map_err(|_| bad_sig())?;
    crate::http::extract::reject_nul_json(&body)?;
    let event: Value = serde_json::from_slice(&body)
        .map_err(|_| Error::bad_request("MALFORMED_JSON", "The event is not JSON"))?;
    let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err(Error::invalid("id", "a Stripe event needs id and type"));
    };
    if id.is_empty() || id.len() > 255 || kind.len() > 255 {
        return Err(Error::invalid(
            "id",
            "a Stripe event needs a sensible id and type",
        ));
    }
    let object = &event["data"]["object"];
    let is_checkout = matches!(
        kind,
        "checkout.session.completed" | "checkout.session.async_payment_succeeded"
    );

    // Line items read from Stripe: before the transaction, so no database lock waits on the
    // network, and not for an event already applied. A failure answers 502 with nothing
    // recorded, so Stripe delivers the event again.
    let fetched = match is_checkout
        .then(|| line_items_wanted(&state, object))
        .flatten()
    {
        Some((key, session_id)) if !settled(&state, id).await? => {
            Some(stripe_api::line_items(&state, key, session_id).await?)
        }
        _ => None,
    };

    let mut tx = state.db.begin().await?;
    // The claim: a new id, or one left `unmapped` (resent after an admin fixed the mapping).
    let fresh = sqlx::query(
        "INSERT INTO stripe_events (id, type, outcome, detail, received_at) VALUES ($1, $2, 'processed', NULL, $3) \
         ON CONFLICT (id) DO UPDATE SET outcome = excluded.outcome, detail = NULL WHERE stripe_events.outcome = 'unmapped'",
    )
    .bind(id)
    .bind(kind)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if fresh == 0 {
        return Ok(Json(StripeAck {
            received: true,
            outcome: "duplicate",
            detail: None,
        }));
    }
    let applied = match kind {
        // A delayed payment method completes unpaid and succeeds later.
        _ if is_checkout => checkout_completed(&state, &mut tx, object, fetched).await,
        "invoice.paid" => invoice_paid(&state, &mut tx, object).await,
        "customer.subscription.updated" => {
            subscription_changed(&state, &mut tx, object, false).await
        }
        "customer.subscription.deleted" => {
            subscription_changed(&state, &mut tx, object, true).await
        }
        "charge.refunded" => charge_refunded(&state, &mut tx, object).await,
        "payment_intent.payment_failed" => payment_failed(&mut tx, object).await,
        _ => Err(unusable(format!("event type {kind} is not handled"))),
    };
    match applied {
        Ok(fx) => {
            let mut forwarded = object.clone();
            if let Some(o) = forwarded.as_object_mut() {
                o.insert("ecosire".into(), json!({"order_id": fx.order_id, "subscription_id": fx.subscription_id, "license_ids": fx.license_ids}));
            }
            events::emit(&mut tx, kind, forwarded).await?;
            if let Some(d) = &fx.detail {
                sqlx::query("UPDATE stripe_events SET detail = $2 WHERE id = $1")
                    .bind(id)
                    .bind(d)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            for d in &fx.digests {
                state.licenses.changed(&state.db, d).await;
            }
            state.events.wake.notify_one();
            if fx.mail {
                state.mail.wake.notify_one();
            }
            Ok(Json(StripeAck {
                received: true,
                outcome: "processed",
                detail: fx.detail,
            }))
        }
        Err(Failure::Unusable(why)) => {
            // Nothing of it is applied; the event is remembered so a redelivery is a duplicate.
            tx.rollback().await?;
            tracing::warn!(stripe_event = %id, kind, reason = %why, "Stripe event acknowledged but not applied");
            sqlx::query(
                "INSERT INTO stripe_events (id, type, outcome, detail, received_at) VALUES ($1, $2, 'ignored', $3, $4) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(kind)
            .bind(&why)
            .bind(now_ms())
            .execute(&state.db.pool)
            .await?;
            Ok(Json(StripeAck {
                received: true,
                outcome: "ignored",
                detail: Some(why),
            }))
        }
        Err(Failure::Unmapped { session, why }) => {
            tx.rollback().await?;
            // Not silently dropped: the buyer paid and got nothing, so an admin must look.
            tracing::warn!(stripe_event = %id, checkout_session = %session, reason = %why, "paid Stripe checkout granted nothing: no product for it");
            metrics::counter!("ecosire_stripe_checkouts_unmapped_total").increment(1);
            let mut tx = state.db.begin().await?;
            sqlx::query(
                "INSERT INTO stripe_events (id, type, outcome, detail, received_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (id) DO UPDATE SET detail = excluded.detail WHERE stripe_events.outcome = $3",
            )
            .bind(id)
            .bind(kind)
            .bind(UNMAPPED)
            .bind(&why)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO notices (id, kind, subject_id, message, created_at) VALUES ($1, 'stripe_checkout_unmapped', $2, $3, $4)")
                .bind(new_id("ntc"))
                .bind(&session)
                .bind(format!(
                    "Paid Stripe checkout session {session} granted no license: {why}. Once products match it \
                     (their stripe_price_ids, or the storefront's metadata.productIds), resend event {id} from Stripe's \
                     dashboard to grant it."
                ))
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Json(StripeAck {
                received: true,
                outcome: "ignored",
                detail: Some(why),
            }))
        }
        Err(Failure::Internal(e)) => Err(e),
    }
}

/// Whether event `id` is recorded as done with (applied or ignored): a redelivery then needs
/// nothing from Stripe's API.
async fn settled(state: &AppState, id: &str) -> Result<bool> {
    let outcome: Option<(String,)> =
        sqlx::query_as("SELECT outcome FROM stripe_events WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db.pool)
            .await?;
    Ok(outcome.is_some_and(|(o,)| o != UNMAPPED))
}

/// The secret key and session id when checkout `s` is paid, does not name its products in
/// `metadata.productIds`, and carries no complete expanded `line_items`: then its line items are
/// read from Stripe (only with `STRIPE_SECRET_KEY`; without it, `metadata.priceIds` is the last
/// resort).
fn line_items_wanted<'a>(state: &'a AppState, s: &'a Value) -> Option<(&'a str, &'a str)> {
    let key = state.config.stripe_secret_key.as_deref()?;
    let paid = matches!(
        s["payment_status"].as_str(),
        Some("paid" | "no_payment_required")
    );
    let complete_in_event =
        stripe_api::List::deserialize(&s["line_items"]).is_ok_and(|l| !l.has_more());
    let session_id = s["id"].as_str().filter(|id| !id.is_empty())?;
    (paid && !s["metadata"]["productIds"].is_string() && !complete_in_event)
        .then_some((key, session_id))
}

/// A Stripe reference that may be an id string or an expanded object.
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(|i| i.as_str()).map(String::from),
        _ => None,
    }
}

/// Who a checkout's licenses go to, and the address told about them.
struct Buyer {
    /// `None` while the address belongs to an account that has not verified it.
    user_id: Option<String>,
    mail_to: String,
}

/// The buyer's account: `metadata.userId` when it names one (the storefront knows who is signed
/// in; the keys are mailed to that account's address), else the owner of the customer email
/// (`users::owner_for_email`: `None` when that address belongs to an account that has not
/// verified it, and the grant waits for the address; the keys are mailed to the address).
async fn buyer(
    tx: &mut Tx,
    metadata_user: Option<&str>,
    email: Option<&str>,
) -> Result<Buyer, Failure> {
    if let Some(uid) = metadata_user {
        let found: Option<(String, String)> =
            sqlx::query_as("SELECT id, email FROM users WHERE id = $1")
                .bind(uid)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some((id, mail_to)) = found {
            return Ok(Buyer {
                user_id: Some(id),
                mail_to,
            });
        }
    }
    let Some(email) = email.and_then(crate::http::checks::normalize_email) else {
        return Err(unusable(
            "no user: metadata.userId does not name a user and the session has no valid customer email",
        ));
    };
    Ok(Buyer {
        user_id: crate::accounts::users::owner_for_email(tx, &email).await?,
        mail_to: email,
    })
}

#[derive(Clone, sqlx::FromRow)]
struct ProductLite {
    id: String,
    slug: String,
    name: String,
    max_activations: i64,
    duration_days: Option<i64>,
    entitlements: String,
    stripe_price_ids: String,
}

/// The products checkout `s` bought, one entry per license to grant: `metadata.productIds` (a
/// JSON array in a string, ids or slugs; one license each), else its line items — expanded in the
/// event, read from Stripe (`fetched`), or `metadata.priceIds` — each price mapped through a
/// product's `stripe_price_ids`, one license per unit of quantity. All or nothing: when any of it
/// names no product, nothing is granted and the failure says what (`Failure::Unmapped`), so an
/// admin can fix the mapping and have the whole checkout granted on a resend.
async fn products_of(
    tx: &mut Tx,
    s: &Value,
    session_id: &str,
    fetched: Option<Vec<Line>>,
) -> Result<Vec<ProductLite>, Failure> {
    let unmapped = |why: String| Failure::Unmapped {
        session: session_id.to_string(),
        why,
    };
    let all: Vec<ProductLite> = sqlx::query_as("SELECT id, slug, name, max_activations, duration_days, entitlements, stripe_price_ids FROM products")
        .fetch_all(&mut **tx)
        .await?;
    let meta = &s["metadata"];
    if let Some(raw) = meta["productIds"].as_str() {
        let ids: Vec<String> = serde_json::from_str(raw)
            .map_err(|_| unmapped("metadata.productIds is not a JSON array of strings".into()))?;
        if ids.is_empty() {
            return Err(unmapped("metadata.productIds is empty".into()));
        }
        let mut out = vec![];
        for want in &ids {
            match all.iter().find(|p| &p.id == want || &p.slug == want) {
                Some(p) => out.push(p.clone()),
                None => {
                    return Err(unmapped(format!(
                        "metadata.productIds names unknown product {want}"
                    )));
                }
            }
        }
        return Ok(out);
    }
    let lines = match fetched {
        Some(lines) if lines.is_empty() => {
            return Err(unmapped("Stripe lists no line items for it".into()));
        }
        Some(lines) => lines,
        None => lines_in_event(s).map_err(unmapped)?,
    };
    if lines.is_empty() {
        return Err(unmapped(
            "it carries no metadata.productIds, no line_items and no metadata.priceIds \
             (with STRIPE_SECRET_KEY set, its line items are read from Stripe)"
                .into(),
        ));
    }
    // A price listed by two products goes to the first, as it always has.
    let mut by_price: std::collections::HashMap<String, &ProductLite> = Default::default();
    for p in &all {
        for price in serde_json::from_str::<Vec<String>>(&p.stripe_price_ids).unwrap_or_default() {
            by_price.entry(price).or_insert(p);
        }
    }
    let missing: Vec<&str> = lines
        .iter()
        .filter(|l| l.price.as_ref().is_none_or(|p| !by_price.contains_key(p)))
        .map(|l| l.label.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(unmapped(format!(
            "no product has Stripe price {}",
            missing.join(", ")
        )));
    }
    let units = lines
        .iter()
        .fold(0i64, |n, l| n.saturating_add(l.quantity.max(0)));
    if units > MAX_LICENSES_PER_CHECKOUT {
        return Err(unmapped(format!(
            "it asks for {units} licenses; at most {MAX_LICENSES_PER_CHECKOUT} are granted automatically"
        )));
    }
    let out: Vec<ProductLite> = lines
        .iter()
        .filter_map(|l| Some((by_price.get(l.price.as_ref()?)?, l.quantity)))
        .flat_map(|(p, n)| std::iter::repeat_n((*p).clone(), n.max(0) as usize))
        .collect();
    if out.is_empty() {
        return Err(unmapped("every line item has quantity 0".into()));
    }
    Ok(out)
}

/// The line items checkout `s` itself carries: expanded `line_items` (complete only: a page with
/// more behind it needs `STRIPE_SECRET_KEY`), else `metadata.priceIds` (a JSON array in a string;
/// one unit each).
fn lines_in_event(s: &Value) -> Result<Vec<Line>, String> {
    if let Ok(list) = stripe_api::List::deserialize(&s["line_items"]) {
        if list.has_more() {
            return Err(
                "the event's line_items are incomplete (has_more) and STRIPE_SECRET_KEY is not set"
                    .into(),
            );
        }
        return Ok(list.into_lines().collect());
    }
    let Some(raw) = s["metadata"]["priceIds"].as_str() else {
        return Ok(vec![]);
    };
    let prices: Vec<String> = serde_json::from_str(raw)
        .map_err(|_| "metadata.priceIds is not a JSON array of strings".to_string())?;
    Ok(prices
        .into_iter()
        .map(|price| Line {
            label: price.clone(),
            price: Some(price),
            quantity: 1,
        })
        .collect())
}

/// Finds or creates our record of a Stripe subscription; returns (id, current_period_end).
async fn upsert_subscription(
    tx: &mut Tx,
    stripe_id: &str,
    user_id: Option<&str>,
    status: Option<&str>,
    period_end: Option<i64>,
) -> Result<(String, Option<i64>), Failure> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO subscriptions (id, user_id, stripe_subscription_id, status, current_period_end, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (stripe_subscription_id) DO NOTHING",
    )
    .bind(new_id("sbs"))
    .bind(user_id)
    .bind(stripe_id)
    .bind(status.unwrap_or("active"))
    .bind(period_end)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE subscriptions SET user_id = COALESCE(user_id, $2), status = COALESCE($3, status), \
         current_period_end = CASE WHEN $4 IS NULL THEN current_period_end \
           WHEN current_period_end IS NULL OR current_period_end < $4 THEN $4 ELSE current_period_end END, updated_at = $5 \
         WHERE stripe_subscription_id = $1",
    )
    .bind(stripe_id)
    .bind(user_id)
    .bind(status)
    .bind(period_end)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let row: (String, Option<i64>) = sqlx::query_as(
        "SELECT id, current_period_end FROM subscriptions WHERE stripe_subscription_id = $1",
    )
    .bind(stripe_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row)
}

async fn checkout_completed(
    state: &AppState,
    tx: &mut Tx,
    s: &Value,
    fetched: Option<Vec<Line>>,
) -> Result<Effects, Failure> {
    let session_id = s["id"]
        .as_str()
        .ok_or_else(|| unusable("the checkout session has no id"))?;
    match s["payment_status"].as_str() {
        Some("paid") | Some("no_payment_required") => {}
        other => {
            return Err(unusable(format!(
                "payment_status is {}; an unpaid session grants nothing",
                other.unwrap_or("missing")
            )));
        }
    }
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT id FROM orders WHERE stripe_checkout_session_id = $1")
            .bind(session_id)
            .fetch_optional(&mut **tx)
            .await?;
    if let Some((order,)) = existing {
        return Err(unusable(format!(
            "checkout session {session_id} already granted order {order}"
        )));
    }
    let email = s["customer_details"]["email"]
        .as_str()
        .or_else(|| s["customer_email"].as_str());
    let Buyer { user_id, mail_to } = buyer(tx, s["metadata"]["userId"].as_str(), email).await?;
    let granted_email = email
        .and_then(crate::http::checks::normalize_email)
        .filter(|_| user_id.is_none());
    let products = products_of(tx, s, session_id, fetched).await?;
    let stripe_sub = id_of(&s["subscription"]);
    let (subscription_id, period_end) = match (&stripe_sub, s["mode"].as_str()) {
        (Some(sub), _) => {
            let (id, end) = upsert_subscription(tx, sub, user_id.as_deref(), None, None).await?;
            (Some(id), end)
        }
        (None, Some("subscription")) => {
            return Err(unusable(
                "a subscription-mode session without a subscription id",
            ));
        }
        (None, _) => (None, None),
    };
    let order_id = new_id("ord");
    let now = now_ms();
    sqlx::query(
        "INSERT INTO orders (id, user_id, status, email, stripe_checkout_session_id, stripe_payment_intent_id, stripe_subscription_id, \
         stripe_customer_id, subscription_id, amount_total, currency, created_at, updated_at) \
         VALUES ($1, $2, 'paid', $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
    )
    .bind(&order_id)
    .bind(&user_id)
    .bind(email.and_then(crate::http::checks::normalize_email))
    .bind(session_id)
    .bind(id_of(&s["payment_intent"]))
    .bind(&stripe_sub)
    // Renewals and refunds of a subscription pay through payment intents we never saw at
    // checkout: the customer is what they still share with it.
    .bind(id_of(&s["customer"]))
    .bind(&subscription_id)
    .bind(s["amount_total"].as_i64())
    .bind(s["currency"].as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let mut fx = Effects {
        order_id: Some(order_id.clone()),
        subscription_id: subscription_id.clone(),
        ..Default::default()
    };
    let mut granted = Vec::with_capacity(products.len());
    for p in &products {
        // A subscription's licenses run to its paid period when we know it; otherwise the
        // product's duration (invoice.paid then renews them).
        let expires_at = period_end.or(p.duration_days.map(|d| now + d * 86_400_000));
        let new = NewLicense {
            product_id: &p.id,
            user_id: user_id.as_deref(),
            granted_email: granted_email.as_deref(),
            max_activations: p.max_activations,
            expires_at,
            entitlements: &p.entitlements,
            metadata: "{}",
            order_id: Some(&order_id),
            subscription_id: subscription_id.as_deref(),
        };
        let (row, key) = lifecycle::create(tx, &state.keys.data, new)
            .await
            .map_err(Failure::Internal)?;
        fx.digests.push(row.key_digest.clone());
        fx.license_ids.push(row.id);
        granted.push(Granted {
            product: p.name.clone(),
            key: key.as_str().to_string(),
        });
    }
    // In the same transaction: the buyer is told exactly when the licenses exist.
    mailings::licenses_granted(state, tx, &mail_to, &granted).await?;
    fx.mail = true;
    Ok(fx)
}

async fn licenses_where(
    tx: &mut Tx,
    column: &'static str,
    value: &str,
) -> Result<Vec<LicenseRow>, Failure> {
    let sql =
        format!("SELECT {LICENSE_COLUMNS} FROM licenses l WHERE l.{column} = $1 ORDER BY l.id");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .fetch_all(&mut **tx)
        .await?)
}

/// Changes a license through the one writer of license state, recording what to invalidate and
/// report when something did change.
async fn change_license(
    state: &AppState,
    tx: &mut Tx,
    row: &LicenseRow,
    change: Change,
    fx: &mut Effects,
) -> Result<(), Failure> {
    let applied =
        lifecycle::apply(tx, &state.keys.data, row, change, serde_json::json!({})).await?;
    if applied.event.is_some() {
        fx.digests.extend(applied.digests);
        fx.license_ids.push(row.id.clone());
    }
    Ok(())
}

/// The subscription an invoice pays for (current layout, then the pre-2025-03-31 field).
fn invoice_subscription(inv: &Value) -> Option<String> {
    id_of(&inv["parent"]["subscription_details"]["subscription"])
        .or_else(|| id_of(&inv["subscription"]))
}

async fn invoice_paid(state: &AppState, tx: &mut Tx, inv: &Value) -> Result<Effects, Failure> {
    let sub =
        invoice_subscription(inv).ok_or_else(|| unusable("the invoice names no subscription"))?;
    let period_end = inv["lines"]["data"]
        .as_array()
        .and_then(|lines| {
            lines
                .iter()
                .filter_map(|l| l["period"]["end"].as_i64())
                .max()
        })
        .or_else(|| inv["period_end"].as_i64())
        .ok_or_else(|| unusable("the invoice has no period end"))?
        * 1000;
    // The invoice may arrive before the checkout: remember the period for the licenses to come.
    let (subscription_id, _) = upsert_subscription(tx, &sub, None, None, Some(period_end)).await?;
    // The checkout that started the subscription, when it came first.
    let order = orders_where(tx, "stripe_subscription_id = $1", &sub).await?;
    let mut fx = Effects {
        order_id: order.into_iter().next().map(|o| o.id),
        subscription_id: Some(subscription_id.clone()),
        ..Default::default()
    };
    for row in licenses_where(tx, "subscription_id", &subscription_id).await? {
        if row.status() == LicenseStatus::Revoked || row.expires_at.is_some_and(|e| e >= period_end)
        {
            continue;
        }
        let change = Change::Follow {
            status: row.status(),
            expires_at: Some(period_end),
        };
        change_license(state, tx, &row, change, &mut fx).await?;
    }
    Ok(fx)
}

async fn subscription_changed(
    state: &AppState,
    tx: &mut Tx,
    sub: &Value,
    deleted: bool,
) -> Result<Effects, Failure> {
    let stripe_id = sub["id"]
        .as_str()
        .ok_or_else(|| unusable("the subscription has no id"))?;
    let status = if deleted {
        "canceled"
    } else {
        sub["status"]
            .as_str()
            .ok_or_else(|| unusable("the subscription has no status"))?
    };
    let period_end = sub["items"]["data"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .filter_map(|i| i["current_period_end"].as_i64())
                .max()
        })
        .or_else(|| sub["current_period_end"].as_i64())
        .map(|s| s * 1000);
    let (subscription_id, _) =
        upsert_subscription(tx, stripe_id, None, Some(status), period_end).await?;
    let target = match status {
        "active" | "trialing" => Some(LicenseStatus::Active),
        "past_due" | "unpaid" | "canceled" | "incomplete_expired" | "paused" => {
            Some(LicenseStatus::Suspended)
        }
        _ => None,
    };
    let mut fx = Effects {
        subscription_id: Some(subscription_id.clone()),
        ..Default::default()
    };
    let Some(target) = target else {
        fx.detail = Some(format!("status {status} recorded; licenses unchanged"));
        return Ok(fx);
    };
    for row in licenses_where(tx, "subscription_id", &subscription_id).await? {
        // An active subscription extends a license to its period end, never shortens it.
        let expires_at = match (target, period_end) {
            (LicenseStatus::Active, Some(end)) if row.expires_at.is_some_and(|e| e < end) => {
                Some(end)
            }
            _ => row.expires_at,
        };
        let change = Change::Follow {
            status: target,
            expires_at,
        };
        change_license(state, tx, &row, change, &mut fx).await?;
    }
    Ok(fx)
}

/// The order a payment event is about.
#[derive(sqlx::FromRow)]
struct OrderRef {
    id: String,
    status: String,
    subscription_id: Option<String>,
}

/// The first two orders (oldest first) where `condition` holds for `value`: two are enough to
/// tell one from several.
async fn orders_where(
    tx: &mut Tx,
    condition: &'static str,
    value: &str,
) -> Result<Vec<OrderRef>, Failure> {
    let sql = format!(
        "SELECT id, status, subscription_id FROM orders WHERE {condition} ORDER BY created_at, id LIMIT 2"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .fetch_all(&mut **tx)
        .await?)
}

/// Finds the order a charge, payment intent or invoice `obj` (paid through `payment_intent`)
/// belongs to: by the payment intent its checkout remembered; else by its subscription (a
/// subscription checkout has no payment intent of its own, and each renewal pays through a new
/// one), named on the object itself when it is an invoice or on its expanded `invoice`; else by
/// the Stripe customer, among the orders whose payment intent we do not know (an order whose
/// intent we know and differs is certainly not this payment), when that leaves exactly one.
async fn order_for_payment(
    tx: &mut Tx,
    payment_intent: Option<&str>,
    obj: &Value,
) -> Result<OrderRef, Failure> {
    if let Some(pi) = payment_intent
        && let Some(o) = orders_where(tx, "stripe_payment_intent_id = $1", pi)
            .await?
            .into_iter()
            .next()
    {
        return Ok(o);
    }
    let subscription = invoice_subscription(obj).or_else(|| invoice_subscription(&obj["invoice"]));
    if let Some(sub) = &subscription
        && let Some(o) = orders_where(tx, "stripe_subscription_id = $1", sub)
            .await?
            .into_iter()
            .next()
    {
        return Ok(o);
    }
    let customer = id_of(&obj["customer"]);
    if let Some(cus) = &customer {
        let mut found = orders_where(
            tx,
            "stripe_customer_id = $1 AND stripe_payment_intent_id IS NULL",
            cus,
        )
        .await?;
        if found.len() > 1 {
            return Err(unusable(format!(
                "customer {cus} has several orders this payment could belong to"
            )));
        }
        if let Some(o) = found.pop() {
            return Ok(o);
        }
    }
    let or_none = |v: Option<&str>| v.unwrap_or("none").to_string();
    Err(unusable(format!(
        "no order matches payment_intent {}, subscription {} or customer {}",
        or_none(payment_intent),
        or_none(subscription.as_deref()),
        or_none(customer.as_deref())
    )))
}

async fn charge_refunded(
    state: &AppState,
    tx: &mut Tx,
    charge: &Value,
) -> Result<Effects, Failure> {
    let pi = id_of(&charge["payment_intent"]);
    let OrderRef {
        id: order_id,
        subscription_id,
        ..
    } = order_for_payment(tx, pi.as_deref(), charge).await?;
    let full = charge["refunded"].as_bool() == Some(true);
    sqlx::query(
        "UPDATE orders SET status = $2, amount_refunded = $3, updated_at = $4 WHERE id = $1",
    )
    .bind(&order_id)
    .bind(if full {
        "refunded"
    } else {
        "partially_refunded"
    })
    .bind(charge["amount_refunded"].as_i64().unwrap_or(0))
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    let mut fx = Effects {
        order_id: Some(order_id.clone()),
        subscription_id,
        ..Default::default()
    };
    if !full {
        fx.detail = Some("partial refund: licenses kept".into());
        return Ok(fx);
    }
    for row in licenses_where(tx, "order_id", &order_id).await? {
        if row.status() != LicenseStatus::Revoked {
            change_license(state, tx, &row, Change::Revoke, &mut fx).await?;
        }
    }
    Ok(fx)
}

/// A failed payment: usually a PaymentIntent (its own id is the payment intent); an object shaped
/// like an invoice names its payment intent, subscription and customer instead.
async fn payment_failed(tx: &mut Tx, obj: &Value) -> Result<Effects, Failure> {
    let pi = match obj["object"].as_str() {
        Some("invoice") => id_of(&obj["payment_intent"]),
        _ => Some(
            obj["id"]
                .as_str()
                .ok_or_else(|| unusable("the payment intent has no id"))?
                .to_string(),
        ),
    };
    let OrderRef {
        id: order_id,
        status,
        subscription_id,
    } = order_for_payment(tx, pi.as_deref(), obj).await?;
    let mut fx = Effects {
        order_id: Some(order_id.clone()),
        subscription_id: subscription_id.clone(),
        ..Default::default()
    };
    if status == "paid" || status == "refunded" {
        fx.detail = Some(format!(
            "order is {status}; a later failed attempt does not change it"
        ));
        return Ok(fx);
    }
    sqlx::query("UPDATE orders SET status = 'failed', updated_at = $2 WHERE id = $1")
        .bind(&order_id)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    if let Some(sid) = &subscription_id {
        sqlx::query("UPDATE subscriptions SET status = 'failed', updated_at = $2 WHERE id = $1")
            .bind(sid)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
    }
    Ok(fx)
}
