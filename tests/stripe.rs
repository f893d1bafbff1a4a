mod common;

// Inbound Stripe webhooks (API.md § Webhooks, STRIPE.md): the signature, once-only processing,
// and what each event does to orders, subscriptions and licenses. Bodies are shaped like the
// events Stripe really sends (API version `2026-10-28.endive`, with the pre-basil field names
// where an older account would send them) and signed here with an independent HMAC.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use common::now_s;
use common::{TestApp, TestResponse};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const SECRET: &str = "whsec_test_secret";
const DAY_S: i64 = 86_400;

fn uid() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Lowercase hex HMAC-SHA256 of `"{t}.{body}"` keyed with the whole secret string.
fn sign(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A `Stripe-Signature` header as Stripe sends it for a test event (`v1`, plus a fake `v0`).
fn stripe_signature(body: &str) -> String {
    let t = now_s();
    format!(
        "t={t},v1={},v0={}",
        sign(SECRET, t, body),
        sign("whsec_some_other_secret", t, body)
    )
}

/// An RFC 3339 timestamp for unix seconds, as the API prints whole seconds.
fn rfc3339(s: i64) -> String {
    OffsetDateTime::from_unix_timestamp(s)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// A Stripe event envelope around `object`.
fn event(kind: &str, object: Value) -> Value {
    json!({
        "id": format!("evt_1{}", &uid()[..24]),
        "object": "event",
        "type": kind,
        "api_version": "2026-10-28.endive",
        "created": now_s(),
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": object}
    })
}

/// `metadata.productIds` as Stripe carries it: a JSON array inside a string.
fn product_ids(ids: &[&str]) -> String {
    serde_json::to_string(ids).unwrap()
}

/// A completed, paid, payment-mode Checkout Session; `metadata` and `extra` members override.
fn session(metadata: Value, extra: Value) -> Value {
    let mut s = json!({
        "id": format!("cs_test_{}", uid()),
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "amount_subtotal": 9800,
        "amount_total": 9800,
        "currency": "usd",
        "customer": format!("cus_{}", &uid()[..14]),
        "customer_email": null,
        "customer_details": {"email": "buyer@example.com", "name": "Ann Buyer", "address": null, "phone": null, "tax_exempt": "none", "tax_ids": []},
        "client_reference_id": null,
        "metadata": metadata,
        "payment_intent": format!("pi_{}", &uid()[..24]),
        "subscription": null,
        "invoice": null,
        "livemode": false,
        "created": now_s() - 60,
        "expires_at": now_s() + DAY_S,
        "success_url": "https://example.com/thanks",
        "cancel_url": "https://example.com/cart"
    });
    common::merge(&mut s, extra);
    s
}

async fn post_raw(app: &TestApp, body: &str, signature: Option<String>) -> TestResponse {
    let mut b = Request::builder()
        .method("POST")
        .uri("/api/webhooks/stripe")
        .header("content-type", "application/json; charset=utf-8")
        .header(
            "user-agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        );
    if let Some(s) = signature {
        b = b.header("stripe-signature", s);
    }
    app.send(b.body(Body::from(body.to_string())).unwrap())
        .await
}

/// Sends `event` correctly signed (a fresh signature each time, as Stripe does on retries).
async fn deliver(app: &TestApp, event: &Value) -> TestResponse {
    let body = event.to_string();
    post_raw(app, &body, Some(stripe_signature(&body))).await
}

/// Sends `event` and asserts the acknowledgement's outcome; returns the ack.
async fn deliver_expect(app: &TestApp, event: &Value, outcome: &str) -> Value {
    let r = deliver(app, event).await;
    let ack = r.expect(200).clone();
    assert_eq!(ack["received"], true, "{ack}");
    assert_eq!(ack["outcome"], outcome, "{ack}");
    ack
}

async fn stripe_app() -> TestApp {
    TestApp::with_config(|c| c.stripe_webhook_secret = Some(SECRET.into())).await
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    n
}

async fn orders(app: &TestApp) -> Vec<Value> {
    app.admin_get("/api/orders").await.expect(200)["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn license(app: &TestApp, id: &str) -> Value {
    app.admin_get(&format!("/api/licenses/{id}"))
        .await
        .expect(200)
        .clone()
}

/// The validation code of license `id`'s key.
async fn code_of(app: &TestApp, id: &str) -> String {
    let l = license(app, id).await;
    let key = l["key"].as_str().expect("admins see the key");
    app.validate(json!({"key": key})).await["code"]
        .as_str()
        .unwrap()
        .to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn without_a_secret_the_endpoint_is_not_configured() {
    let app = TestApp::new().await;
    let p = app.product(json!({})).await;
    let ev = event(
        "checkout.session.completed",
        session(
            json!({"productIds": product_ids(&[p["id"].as_str().unwrap()])}),
            json!({}),
        ),
    );
    deliver(&app, &ev)
        .await
        .expect_problem(503, "STRIPE_NOT_CONFIGURED");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders").await, 0);
}

#[tokio::test]
async fn bad_signatures_are_refused_and_change_nothing() {
    let app = stripe_app().await;
    let p = app.product(json!({})).await;
    let ev = event(
        "checkout.session.completed",
        session(
            json!({"productIds": product_ids(&[p["id"].as_str().unwrap()])}),
            json!({}),
        ),
    );
    let body = ev.to_string();
    let t = now_s();
    let good = sign(SECRET, t, &body);
    let stale_t = t - 600;
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("garbage", Some("not a signature".into())),
        (
            "wrong secret",
            Some(format!("t={t},v1={}", sign("whsec_wrong", t, &body))),
        ),
        (
            "other body",
            Some(format!(
                "t={t},v1={}",
                sign(SECRET, t, "{\"id\":\"evt_x\"}")
            )),
        ),
        (
            "signature for another timestamp",
            Some(format!("t={},v1={good}", t - 1)),
        ),
        (
            "stale (10 minutes old)",
            Some(format!("t={stale_t},v1={}", sign(SECRET, stale_t, &body))),
        ),
        ("v0 only", Some(format!("t={t},v0={good}"))),
        ("no timestamp", Some(format!("v1={good}"))),
        (
            "uppercase hex",
            Some(format!("t={t},v1={}", good.to_uppercase())),
        ),
    ];
    for (what, sig) in cases {
        let r = post_raw(&app, &body, sig).await;
        assert_eq!(r.status.as_u16(), 401, "{what}: {}", r.text);
        r.expect_problem(401, "INVALID_SIGNATURE");
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM stripe_events").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM licenses").await, 0);
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM outbox WHERE type = 'checkout.session.completed'"
        )
        .await,
        0
    );

    // While a secret is being rolled Stripe sends one v1 per secret: any match is enough.
    let rolled = format!(
        "t={t},v1={},v1={good},v0={}",
        sign("whsec_old_secret", t, &body),
        sign("whsec_v0", t, &body)
    );
    let r = post_raw(&app, &body, Some(rolled)).await;
    assert_eq!(r.expect(200)["outcome"], "processed", "{}", r.text);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM stripe_events").await, 1);
}

#[tokio::test]
async fn a_paid_checkout_creates_an_order_with_one_license_per_product() {
    let app = stripe_app().await;
    let (user_id, token) = app.customer("ann@example.com").await;
    let (_, other_token) = app.customer("bob@example.com").await;
    let p1 = app.product(json!({"duration_days": 365})).await;
    let p2 = app
        .product(json!({"slug": format!("desk-{}", &uid()[20..]), "max_activations": 2}))
        .await;
    let pi = format!("pi_{}", &uid()[..24]);
    let s = session(
        json!({"userId": user_id, "productIds": product_ids(&[p1["id"].as_str().unwrap(), p2["slug"].as_str().unwrap()])}),
        json!({"payment_intent": pi, "customer_details": {"email": "ann@example.com", "name": "Ann"}}),
    );
    let ev = event("checkout.session.completed", s.clone());
    let ack = deliver_expect(&app, &ev, "processed").await;
    assert_eq!(ack["received"], true);

    let all = orders(&app).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let order = &all[0];
    assert!(order["id"].as_str().unwrap().starts_with("ord_"), "{order}");
    assert_eq!(order["status"], "paid");
    assert_eq!(order["user_id"], user_id.as_str());
    assert_eq!(order["stripe_payment_intent_id"], pi.as_str());
    assert_eq!(order["stripe_checkout_session_id"], s["id"]);
    assert_eq!(order["amount_total"], 9800);
    assert_eq!(order["currency"], "usd");
    let license_ids = strings(&order["license_ids"]);
    assert_eq!(license_ids.len(), 2, "{order}");
    let order_id = order["id"].as_str().unwrap().to_string();

    // The customer sees the order; another customer does not learn it exists.
    let mine = app
        .get("/api/orders", Some(&token))
        .await
        .expect(200)
        .clone();
    assert_eq!(mine["data"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["data"][0]["id"], order_id.as_str());
    let one = app
        .get(&format!("/api/orders/{order_id}"), Some(&token))
        .await
        .expect(200)
        .clone();
    assert_eq!(strings(&one["license_ids"]).len(), 2);
    app.get(&format!("/api/orders/{order_id}"), Some(&other_token))
        .await
        .expect_problem(404, "NOT_FOUND");
    let theirs = app
        .get("/api/orders", Some(&other_token))
        .await
        .expect(200)
        .clone();
    assert_eq!(theirs["data"].as_array().unwrap().len(), 0, "{theirs}");

    // The licenses: the user's, one of each product, valid.
    let mut products = vec![];
    for id in &license_ids {
        let l = license(&app, id).await;
        assert_eq!(l["user_id"], user_id.as_str(), "{l}");
        assert_eq!(l["status"], "active");
        products.push(l["product_id"].as_str().unwrap().to_string());
        assert_eq!(code_of(&app, id).await, "VALID");
    }
    products.sort();
    let mut want = vec![
        p1["id"].as_str().unwrap().to_string(),
        p2["id"].as_str().unwrap().to_string(),
    ];
    want.sort();
    assert_eq!(products, want);
    let own = app
        .get(&format!("/api/licenses?user_id={user_id}"), Some(&token))
        .await
        .expect(200)
        .clone();
    assert_eq!(own["data"].as_array().unwrap().len(), 2, "{own}");

    // The Stripe event is forwarded with what it granted.
    let (payload,): (String,) =
        sqlx::query_as("SELECT payload FROM outbox WHERE type = 'checkout.session.completed'")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    let fwd: Value = serde_json::from_str(&payload).unwrap();
    assert!(fwd["id"].as_str().unwrap().starts_with("evt_"), "{fwd}");
    assert_eq!(fwd["type"], "checkout.session.completed");
    let obj = &fwd["data"]["object"];
    assert_eq!(obj["id"], s["id"], "the Stripe object as received: {fwd}");
    assert_eq!(obj["payment_intent"], pi.as_str());
    assert_eq!(obj["ecosire"]["order_id"], order_id.as_str(), "{fwd}");
    let mut fwd_ids = strings(&obj["ecosire"]["license_ids"]);
    fwd_ids.sort();
    let mut sorted = license_ids.clone();
    sorted.sort();
    assert_eq!(fwd_ids, sorted);
}

#[tokio::test]
async fn without_user_id_the_user_is_found_or_created_by_email() {
    let app = stripe_app().await;
    let p = app.product(json!({})).await;
    let pid = p["id"].as_str().unwrap();

    // An existing customer, found by the email Stripe collected.
    let (existing, _) = app.customer("carol@example.com").await;
    let ev = event(
        "checkout.session.completed",
        session(
            json!({"productIds": product_ids(&[pid])}),
            json!({"customer_details": {"email": "carol@example.com", "name": "Carol"}}),
        ),
    );
    deliver_expect(&app, &ev, "processed").await;
    let all = orders(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["user_id"], existing.as_str(), "{all:?}");

    // A new buyer: created as a customer.
    let ev = event(
        "checkout.session.completed",
        session(
            json!({"productIds": product_ids(&[pid])}),
            json!({"customer_details": {"email": "dave.new@example.com", "name": "Dave"}}),
        ),
    );
    deliver_expect(&app, &ev, "processed").await;
    let users = app
        .admin_get("/api/users?limit=100")
        .await
        .expect(200)
        .clone();
    let dave = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "dave.new@example.com")
        .unwrap_or_else(|| panic!("the buyer was not created: {users}"))
        .clone();
    assert_eq!(dave["role"], "customer", "{dave}");
    let all = orders(&app).await;
    assert_eq!(all.len(), 2);
    let order = all
        .iter()
        .find(|o| o["user_id"] == dave["id"])
        .unwrap_or_else(|| panic!("no order for the new user: {all:?}"));
    for id in strings(&order["license_ids"]) {
        assert_eq!(license(&app, &id).await["user_id"], dave["id"]);
    }

    // metadata.userId naming no user falls back to the email too.
    let ev = event(
        "checkout.session.completed",
        session(
            json!({"userId": "usr_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4", "productIds": product_ids(&[pid])}),
            json!({"customer_details": {"email": "Carol@Example.com", "name": "Carol"}}),
        ),
    );
    deliver_expect(&app, &ev, "processed").await;
    let carol_orders = orders(&app)
        .await
        .into_iter()
        .filter(|o| o["user_id"] == existing.as_str())
        .count();
    assert_eq!(carol_orders, 2);
}

#[tokio::test]
async fn a_redelivered_event_is_applied_once() {
    let app = stripe_app().await;
    let (user_id, _) = app.customer("erin@example.com").await;
    let p = app.product(json!({})).await;
    let ev = event(
        "checkout.session.completed",
        session(
            json!({"userId": user_id, "productIds": product_ids(&[p["id"].as_str().unwrap()])}),
            json!({}),
        ),
    );
    deliver_expect(&app, &ev, "processed").await;
    for _ in 0..4 {
        deliver_expect(&app, &ev, "duplicate").await;
    }
    assert_eq!(orders(&app).await.len(), 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM licenses").await, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM stripe_events").await, 1);
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM outbox WHERE type = 'checkout.session.completed'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redeliveries_are_applied_once() {
    let app = Arc::new(stripe_app().await);
    let (user_id, _) = app.customer("frank@example.com").await;
    let p1 = app.product(json!({})).await;
    let p2 = app.product(json!({})).await;
    let ev = event(
        "checkout.session.completed",
        session(
            json!({"userId": user_id, "productIds": product_ids(&[p1["id"].as_str().unwrap(), p2["id"].as_str().unwrap()])}),
            json!({}),
        ),
    );
    let mut tasks = vec![];
    for _ in 0..5 {
        let app = app.clone();
        let ev = ev.clone();
        tasks.push(tokio::spawn(async move {
            let r = deliver(&app, &ev).await;
            r.expect(200)["outcome"].as_str().unwrap().to_string()
        }));
    }
    let mut outcomes = vec![];
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec![
            "duplicate",
            "duplicate",
            "duplicate",
            "duplicate",
            "processed"
        ]
    );
    let all = orders(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!(strings(&all[0]["license_ids"]).len(), 2);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM licenses").await, 2);
}

#[tokio::test]
async fn unpaid_or_unusable_sessions_grant_nothing() {
    let app = stripe_app().await;
    let (user_id, _) = app.customer("gina@example.com").await;
    let p = app.product(json!({})).await;
    let pid = p["id"].as_str().unwrap();
    let cases = vec![
        (
            "unpaid",
            session(
                json!({"userId": user_id, "productIds": product_ids(&[pid])}),
                json!({"payment_status": "unpaid"}),
            ),
        ),
        (
            "productIds absent",
            session(json!({"userId": user_id}), json!({})),
        ),
        (
            "productIds not JSON",
            session(json!({"userId": user_id, "productIds": pid}), json!({})),
        ),
        (
            "productIds a JSON object",
            session(
                json!({"userId": user_id, "productIds": "{\"id\":\"x\"}"}),
                json!({}),
            ),
        ),
        (
            "productIds empty",
            session(json!({"userId": user_id, "productIds": "[]"}), json!({})),
        ),
        (
            "unknown product",
            session(
                json!({"userId": user_id, "productIds": product_ids(&["prd_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4"])}),
                json!({}),
            ),
        ),
        (
            "one known, one unknown",
            session(
                json!({"userId": user_id, "productIds": product_ids(&[pid, "no-such-product"])}),
                json!({}),
            ),
        ),
    ];
    for (what, s) in cases {
        let ack = deliver_expect(&app, &event("checkout.session.completed", s), "ignored").await;
        assert!(
            ack["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {ack}"
        );
        assert_eq!(
            count(&app, "SELECT COUNT(*) FROM orders").await,
            0,
            "{what}"
        );
        assert_eq!(
            count(&app, "SELECT COUNT(*) FROM licenses").await,
            0,
            "{what}"
        );
        assert_eq!(
            count(&app, "SELECT COUNT(*) FROM subscriptions").await,
            0,
            "{what}"
        );
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox").await, 0);
    assert_eq!(orders(&app).await.len(), 0);
}

#[tokio::test]
async fn malformed_and_unknown_events() {
    let app = stripe_app().await;
    let body = "this is not JSON {";
    post_raw(&app, body, Some(stripe_signature(body)))
        .await
        .expect_problem(400, "MALFORMED_JSON");

    let ev = event(
        "customer.created",
        json!({"id": "cus_NffrFeUfNV2Hib", "object": "customer", "email": "x@example.com", "metadata": {}}),
    );
    let ack = deliver_expect(&app, &ev, "ignored").await;
    assert!(ack["detail"].is_string(), "{ack}");
    deliver_expect(&app, &ev, "duplicate").await;
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox").await, 0);
}

/// A Subscription object; `period_end` goes where the API version puts it.
fn subscription(id: &str, status: &str, period_end: i64, old_layout: bool) -> Value {
    let mut item = json!({
        "id": format!("si_{}", &uid()[..14]), "object": "subscription_item",
        "price": {"id": "price_1Pro", "object": "price", "recurring": {"interval": "month", "interval_count": 1}},
        "quantity": 1
    });
    let mut sub = json!({
        "id": id, "object": "subscription", "customer": "cus_Sub123", "status": status,
        "cancel_at_period_end": false, "cancel_at": null, "canceled_at": null, "ended_at": null,
        "trial_end": null, "latest_invoice": format!("in_{}", &uid()[..14]), "metadata": {},
        "items": {"object": "list", "data": [], "has_more": false}
    });
    if old_layout {
        sub["current_period_start"] = json!(period_end - 30 * DAY_S);
        sub["current_period_end"] = json!(period_end);
    } else {
        item["current_period_start"] = json!(period_end - 30 * DAY_S);
        item["current_period_end"] = json!(period_end);
    }
    sub["items"]["data"] = json!([item]);
    sub
}

/// An Invoice paying subscription `sub` for a period ending at `period_end`.
fn invoice(sub: &str, period_end: i64, old_layout: bool) -> Value {
    let mut inv = json!({
        "id": format!("in_{}", &uid()[..14]), "object": "invoice", "customer": "cus_Sub123",
        "customer_email": "sub@example.com", "status": "paid", "billing_reason": "subscription_cycle",
        "amount_paid": 1500, "currency": "usd",
        "period_start": now_s() - 30 * DAY_S, "period_end": now_s(),
        "lines": {"object": "list", "has_more": false, "data": [{
            "id": format!("il_{}", &uid()[..14]), "object": "line_item", "amount": 1500,
            "period": {"start": period_end - 30 * DAY_S, "end": period_end}
        }]}
    });
    if old_layout {
        inv["subscription"] = json!(sub);
        inv["lines"]["data"][0]["price"] = json!({"id": "price_1Pro", "object": "price"});
    } else {
        inv["parent"] = json!({"type": "subscription_details", "quote_details": null,
            "subscription_details": {"subscription": sub, "metadata": {}}});
        inv["lines"]["data"][0]["pricing"] = json!({"type": "price_details", "price_details": {"price": "price_1Pro", "product": "prod_1"}});
    }
    inv
}

#[tokio::test]
async fn a_subscription_keeps_its_licenses_in_step() {
    let app = stripe_app().await;
    let (user_id, token) = app.customer("hank@example.com").await;
    let p1 = app.product(json!({"duration_days": 30})).await;
    let p2 = app.product(json!({"duration_days": 30})).await;
    let sub = format!("sub_1{}", &uid()[..22]);
    let s = session(
        json!({"userId": user_id, "productIds": product_ids(&[p1["id"].as_str().unwrap(), p2["id"].as_str().unwrap()])}),
        json!({"mode": "subscription", "subscription": sub, "payment_intent": null, "invoice": format!("in_{}", &uid()[..14])}),
    );
    deliver_expect(&app, &event("checkout.session.completed", s), "processed").await;

    let subs = app
        .admin_get("/api/subscriptions")
        .await
        .expect(200)
        .clone();
    assert_eq!(subs["data"].as_array().unwrap().len(), 1, "{subs}");
    let record = &subs["data"][0];
    assert!(
        record["id"].as_str().unwrap().starts_with("sbs_"),
        "{record}"
    );
    assert_eq!(record["stripe_subscription_id"], sub.as_str());
    assert_eq!(record["user_id"], user_id.as_str());
    let mut ids = strings(&record["license_ids"]);
    ids.sort();
    assert_eq!(ids.len(), 2, "{record}");
    let sbs_id = record["id"].as_str().unwrap().to_string();
    let order = &orders(&app).await[0];
    let mut order_ids = strings(&order["license_ids"]);
    order_ids.sort();
    assert_eq!(
        order_ids, ids,
        "the order's licenses are the subscription's"
    );
    assert_eq!(order["subscription_id"], sbs_id.as_str());
    assert_eq!(order["stripe_subscription_id"], sub.as_str());
    let mine = app
        .get(&format!("/api/subscriptions/{sbs_id}"), Some(&token))
        .await
        .expect(200)
        .clone();
    assert_eq!(mine["id"], sbs_id.as_str());
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "VALID");
    }

    // invoice.paid, current layout: renewed to the line's period end.
    let end1 = now_s() + 40 * DAY_S;
    deliver_expect(
        &app,
        &event("invoice.paid", invoice(&sub, end1, false)),
        "processed",
    )
    .await;
    for id in &ids {
        assert_eq!(
            license(&app, id).await["expires_at"],
            rfc3339(end1).as_str()
        );
    }
    // invoice.paid, pre-basil layout (`subscription` on the invoice).
    let end2 = now_s() + 70 * DAY_S;
    deliver_expect(
        &app,
        &event("invoice.paid", invoice(&sub, end2, true)),
        "processed",
    )
    .await;
    for id in &ids {
        let l = license(&app, id).await;
        assert_eq!(l["expires_at"], rfc3339(end2).as_str(), "{l}");
        assert_eq!(l["status"], "active");
    }

    // past_due suspends, active reinstates: current layout (period on the item)...
    let ev = event(
        "customer.subscription.updated",
        subscription(&sub, "past_due", end2, false),
    );
    deliver_expect(&app, &ev, "processed").await;
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "SUSPENDED");
    }
    let updated = app
        .admin_get(&format!("/api/subscriptions/{sbs_id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(updated["status"], "past_due");
    let ev = event(
        "customer.subscription.updated",
        subscription(&sub, "active", end2, false),
    );
    deliver_expect(&app, &ev, "processed").await;
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "VALID");
    }
    // ...and the older layout (period on the subscription), which also moves the period on.
    let ev = event(
        "customer.subscription.updated",
        subscription(&sub, "past_due", end2, true),
    );
    deliver_expect(&app, &ev, "processed").await;
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "SUSPENDED");
    }
    let end3 = now_s() + 100 * DAY_S;
    let ev = event(
        "customer.subscription.updated",
        subscription(&sub, "active", end3, true),
    );
    deliver_expect(&app, &ev, "processed").await;
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "VALID");
        assert_eq!(
            license(&app, id).await["expires_at"],
            rfc3339(end3).as_str()
        );
    }
    let updated = app
        .admin_get(&format!("/api/subscriptions/{sbs_id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(updated["status"], "active");
    assert_eq!(updated["current_period_end"], rfc3339(end3).as_str());

    // Deleted: the subscription ended, its licenses are suspended.
    let ev = event(
        "customer.subscription.deleted",
        subscription(&sub, "canceled", end3, false),
    );
    deliver_expect(&app, &ev, "processed").await;
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "SUSPENDED");
    }
    let ended = app
        .admin_get(&format!("/api/subscriptions/{sbs_id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(ended["status"], "canceled");

    // Each applied event was forwarded with the subscription it touched.
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT payload FROM outbox WHERE type = 'invoice.paid'")
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    for (payload,) in rows {
        let v: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(
            v["data"]["object"]["ecosire"]["subscription_id"],
            sbs_id.as_str()
        );
    }
}

/// A Charge as `charge.refunded` carries it.
fn charge(pi: &str, refunded: bool, amount_refunded: i64) -> Value {
    json!({
        "id": format!("ch_{}", &uid()[..24]), "object": "charge", "amount": 9800,
        "amount_captured": 9800, "amount_refunded": amount_refunded, "captured": true,
        "currency": "usd", "customer": "cus_Ref123", "metadata": {}, "paid": true,
        "payment_intent": pi, "refunded": refunded, "status": "succeeded",
        "refunds": {"object": "list", "has_more": false, "data": [
            {"id": format!("re_{}", &uid()[..24]), "object": "refund", "amount": amount_refunded, "status": "succeeded"}
        ]}
    })
}

/// A PaymentIntent as `payment_intent.payment_failed` carries it.
fn failed_payment_intent(pi: &str) -> Value {
    json!({
        "id": pi, "object": "payment_intent", "amount": 9800, "currency": "usd",
        "customer": "cus_Ref123", "metadata": {}, "status": "requires_payment_method",
        "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.", "type": "card_error"}
    })
}

#[tokio::test]
async fn refunds_and_failed_payments() {
    let app = stripe_app().await;
    let (user_id, _) = app.customer("ivy@example.com").await;
    let p1 = app.product(json!({})).await;
    let p2 = app.product(json!({})).await;
    let pi = format!("pi_{}", &uid()[..24]);
    let s = session(
        json!({"userId": user_id, "productIds": product_ids(&[p1["id"].as_str().unwrap(), p2["id"].as_str().unwrap()])}),
        json!({"payment_intent": pi}),
    );
    deliver_expect(&app, &event("checkout.session.completed", s), "processed").await;
    let order = orders(&app).await[0].clone();
    let order_id = order["id"].as_str().unwrap().to_string();
    let ids = strings(&order["license_ids"]);
    assert_eq!(ids.len(), 2);

    // A failed payment attempt for a PaymentIntent we never saw: acknowledged, nothing changes.
    let unknown = format!("pi_{}", &uid()[..24]);
    let ack = deliver_expect(
        &app,
        &event(
            "payment_intent.payment_failed",
            failed_payment_intent(&unknown),
        ),
        "ignored",
    )
    .await;
    assert!(ack["detail"].is_string(), "{ack}");
    // A late failure on the paid order's PaymentIntent does not unpay it.
    deliver(
        &app,
        &event("payment_intent.payment_failed", failed_payment_intent(&pi)),
    )
    .await
    .expect(200);
    let o = app
        .admin_get(&format!("/api/orders/{order_id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(o["status"], "paid", "{o}");
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "VALID");
    }

    // A refund for an unknown payment: ignored.
    deliver_expect(
        &app,
        &event("charge.refunded", charge(&unknown, true, 9800)),
        "ignored",
    )
    .await;

    // Partial refund: the licenses stay.
    deliver_expect(
        &app,
        &event("charge.refunded", charge(&pi, false, 1000)),
        "processed",
    )
    .await;
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "VALID");
    }
    let o = app
        .admin_get(&format!("/api/orders/{order_id}"))
        .await
        .expect(200)
        .clone();
    assert_ne!(o["status"], "refunded", "{o}");
    assert_eq!(o["amount_refunded"], 1000);

    // Full refund: revoked, the order refunded.
    deliver_expect(
        &app,
        &event("charge.refunded", charge(&pi, true, 9800)),
        "processed",
    )
    .await;
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "REVOKED");
        assert_eq!(license(&app, id).await["status"], "revoked");
    }
    let o = app
        .admin_get(&format!("/api/orders/{order_id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(o["status"], "refunded", "{o}");
    assert_eq!(o["amount_refunded"], 9800);
    let (payload,): (String,) =
        sqlx::query_as("SELECT payload FROM outbox WHERE type = 'charge.refunded' ORDER BY created_at DESC, id DESC")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    let v: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        v["data"]["object"]["ecosire"]["order_id"],
        order_id.as_str()
    );
    assert_eq!(v["data"]["object"]["refunded"], true, "{v}");
}

#[tokio::test]
async fn an_invoice_paid_before_the_checkout_still_sets_the_period() {
    // Stripe does not guarantee order: invoice.paid often arrives before the checkout.
    let app = stripe_app().await;
    let (user_id, _) = app.customer("jane@example.com").await;
    let p = app.product(json!({"duration_days": 30})).await;
    let sub = format!("sub_1{}", &uid()[..22]);
    let end = now_s() + 45 * DAY_S;
    deliver_expect(
        &app,
        &event("invoice.paid", invoice(&sub, end, false)),
        "processed",
    )
    .await;
    let s = session(
        json!({"userId": user_id, "productIds": product_ids(&[p["id"].as_str().unwrap()])}),
        json!({"mode": "subscription", "subscription": sub, "payment_intent": null}),
    );
    deliver_expect(&app, &event("checkout.session.completed", s), "processed").await;
    let subs = app
        .admin_get("/api/subscriptions")
        .await
        .expect(200)
        .clone();
    assert_eq!(subs["data"].as_array().unwrap().len(), 1, "{subs}");
    assert_eq!(subs["data"][0]["user_id"], user_id.as_str(), "{subs}");
    let ids = strings(&subs["data"][0]["license_ids"]);
    assert_eq!(ids.len(), 1, "{subs}");
    let l = license(&app, &ids[0]).await;
    assert_eq!(l["expires_at"], rfc3339(end).as_str(), "{l}");
    assert_eq!(code_of(&app, &ids[0]).await, "VALID");
}

#[tokio::test]
async fn a_free_trial_checkout_grants_licenses() {
    let app = stripe_app().await;
    let (user_id, _) = app.customer("kim@example.com").await;
    let p = app.product(json!({})).await;
    let s = session(
        json!({"userId": user_id, "productIds": product_ids(&[p["id"].as_str().unwrap()])}),
        json!({"mode": "subscription", "subscription": format!("sub_1{}", &uid()[..22]),
               "payment_intent": null, "payment_status": "no_payment_required", "amount_total": 0}),
    );
    deliver_expect(&app, &event("checkout.session.completed", s), "processed").await;
    let all = orders(&app).await;
    assert_eq!(all.len(), 1);
    let ids = strings(&all[0]["license_ids"]);
    assert_eq!(ids.len(), 1);
    assert_eq!(code_of(&app, &ids[0]).await, "VALID");
}

#[tokio::test]
async fn events_larger_than_the_usual_body_limit_are_accepted() {
    let app = stripe_app().await;
    let sub = format!("sub_1{}", &uid()[..22]);
    let end = now_s() + 30 * DAY_S;
    let mut inv = invoice(&sub, end, false);
    let line = inv["lines"]["data"][0].clone();
    let lines: Vec<Value> = (0..400)
        .map(|i| {
            let mut l = line.clone();
            l["id"] = json!(format!("il_{i:014}"));
            l["description"] = json!(format!(
                "1 × ECOSIRE seat {i} (at $15.00 / month) {}",
                "·".repeat(120)
            ));
            l
        })
        .collect();
    inv["lines"]["data"] = json!(lines);
    inv["lines"]["has_more"] = json!(false);
    let ev = event("invoice.paid", inv);
    assert!(ev.to_string().len() > 100 * 1024);
    deliver_expect(&app, &ev, "processed").await;
}

#[tokio::test]
async fn a_checkout_for_an_unverified_self_registered_address_grants_to_nobody_yet() {
    let app = stripe_app().await;
    let p = app.product(json!({})).await;
    let pid = p["id"].as_str().unwrap();
    // Someone registered the buyer's address before the buyer paid.
    app.post(
        "/api/auth/register",
        json!({"email": "hana@example.com", "password": "squatter-pass-1", "name": "Not Hana"}),
        None,
    )
    .await
    .expect(201);
    let squatter = app.login("hana@example.com", "squatter-pass-1").await;
    let ev = event(
        "checkout.session.completed",
        session(
            json!({"productIds": product_ids(&[pid])}),
            json!({"customer_details": {"email": "hana@example.com", "name": "Hana"}}),
        ),
    );
    deliver_expect(&app, &ev, "processed").await;
    let all = orders(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["user_id"], Value::Null, "{all:?}");
    for id in strings(&all[0]["license_ids"]) {
        assert_eq!(license(&app, &id).await["user_id"], Value::Null);
    }
    let mine = app.get("/api/licenses", Some(&squatter)).await;
    assert_eq!(mine.expect(200)["data"], json!([]));
    let mine = app.get("/api/orders", Some(&squatter)).await;
    assert_eq!(mine.expect(200)["data"], json!([]));
}

// Issue 12 §3: any Stripe checkout grants licenses — line items read from Stripe's API, one
// license per unit, a notice for what maps to nothing, the buyer told by mail, and payments
// matched through the subscription or the customer.

const STRIPE_KEY: &str = "sk_test_51ecosireLineItems";

// Ids made here take the random tail of a UUIDv7: two made in the same millisecond share a head.

/// What the stand-in for Stripe's API knows and saw.
#[derive(Default)]
struct FakeStripeState {
    /// Line item objects by checkout session id.
    sessions: std::sync::Mutex<std::collections::HashMap<String, Vec<Value>>>,
    /// Answer 500 to everything.
    failing: std::sync::atomic::AtomicBool,
    /// At most this many items a page, whatever `limit` asks: pagination shows with few items.
    page_size: usize,
    /// The query string of each request that carried the right key.
    requests: std::sync::Mutex<Vec<std::collections::HashMap<String, String>>>,
    /// Requests without the right `Authorization: Bearer` key.
    refused: std::sync::atomic::AtomicUsize,
}

/// `GET /v1/checkout/sessions/{id}/line_items` as Stripe serves it: the secret key as a Bearer
/// token, a list object, `has_more` and `starting_after` pagination.
struct FakeStripe {
    base: String,
    state: Arc<FakeStripeState>,
}

impl FakeStripe {
    async fn start(page_size: usize) -> FakeStripe {
        use axum::extract::{Path, Query, State};
        use std::collections::HashMap;
        use std::sync::atomic::Ordering;
        let state = Arc::new(FakeStripeState {
            page_size,
            ..Default::default()
        });
        let app = axum::Router::new()
            .route(
                "/v1/checkout/sessions/{id}/line_items",
                axum::routing::get(
                    |State(s): State<Arc<FakeStripeState>>,
                     Path(id): Path<String>,
                     Query(q): Query<HashMap<String, String>>,
                     headers: axum::http::HeaderMap| async move {
                        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                        if auth != Some(format!("Bearer {STRIPE_KEY}").as_str()) {
                            s.refused.fetch_add(1, Ordering::SeqCst);
                            let err = json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****"}});
                            return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(err));
                        }
                        s.requests.lock().unwrap().push(q.clone());
                        if s.failing.load(Ordering::SeqCst) {
                            let err = json!({"error": {"type": "api_error", "message": "Something went wrong on Stripe's end."}});
                            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(err));
                        }
                        let Some(items) = s.sessions.lock().unwrap().get(&id).cloned() else {
                            let err = json!({"error": {"type": "invalid_request_error", "message": format!("No such checkout.session: '{id}'")}});
                            return (axum::http::StatusCode::NOT_FOUND, axum::Json(err));
                        };
                        let start = match q.get("starting_after") {
                            Some(after) => items.iter().position(|i| i["id"] == after.as_str()).unwrap() + 1,
                            None => 0,
                        };
                        let limit: usize = q.get("limit").map_or(10, |l| l.parse().unwrap());
                        let end = items.len().min(start + limit.min(s.page_size));
                        let page = json!({
                            "object": "list", "url": format!("/v1/checkout/sessions/{id}/line_items"),
                            "data": items[start..end], "has_more": end < items.len()
                        });
                        (axum::http::StatusCode::OK, axum::Json(page))
                    },
                ),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeStripe { base, state }
    }

    /// Gives session `id` these (price, quantity) line items; returns the item ids.
    fn session(&self, id: &str, lines: &[(&str, i64)]) -> Vec<String> {
        let items: Vec<Value> = lines
            .iter()
            .map(|(price, quantity)| {
                json!({
                    "id": format!("li_1{}", &uid()[9..]), "object": "item",
                    "amount_subtotal": 4900 * quantity, "amount_total": 4900 * quantity,
                    "currency": "usd", "description": "ECOSIRE",
                    "price": {"id": price, "object": "price", "product": "prod_Ecosire", "unit_amount": 4900, "currency": "usd"},
                    "quantity": quantity
                })
            })
            .collect();
        let ids = items
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        self.state
            .sessions
            .lock()
            .unwrap()
            .insert(id.to_string(), items);
        ids
    }

    fn fail(&self, failing: bool) {
        self.state
            .failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<std::collections::HashMap<String, String>> {
        self.state.requests.lock().unwrap().clone()
    }

    fn refused(&self) -> usize {
        self.state.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A Stripe-enabled app that reads line items from `stripe` with `key`.
async fn stripe_app_with_api(stripe: &FakeStripe, key: &str) -> TestApp {
    let base = stripe.base.clone();
    TestApp::with_config(|c| {
        c.stripe_webhook_secret = Some(SECRET.into());
        c.stripe_secret_key = Some(key.into());
        c.stripe_api_base = base;
    })
    .await
}

/// A buyer address no other test uses (with PostgreSQL every test writes to the same mail folder).
fn buyer_email(name: &str) -> String {
    format!("{name}.{}@example.com", &uid()[20..])
}

/// Sends the queued mail and returns the messages to `to`.
async fn mail_to(app: &TestApp, to: &str) -> Vec<common::mail::Mail> {
    ecosire::mail::run_once(&app.state).await.unwrap();
    common::mail::eml_messages(&app.state.config.mail_dir())
        .into_iter()
        .filter(|m| m.to == to)
        .collect()
}

/// How many licenses of each product `ids` are, by product id.
async fn per_product(app: &TestApp, ids: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut n = std::collections::BTreeMap::new();
    for id in ids {
        let l = license(app, id).await;
        *n.entry(l["product_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    n
}

/// Asserts that one message tells about exactly the keys of licenses `ids`.
async fn assert_keys_mailed(app: &TestApp, mail: &common::mail::Mail, ids: &[String]) {
    let keys: Vec<String> = mail
        .text
        .lines()
        .filter_map(|l| l.trim().rsplit_once(": ").map(|(_, k)| k.to_string()))
        .filter(|k| k.starts_with("ECOS-"))
        .collect();
    let mut want = vec![];
    for id in ids {
        want.push(license(app, id).await["key"].as_str().unwrap().to_string());
    }
    let (mut keys, mut want) = (keys, want);
    keys.sort();
    want.sort();
    assert_eq!(keys, want, "{}", mail.text);
}

#[tokio::test]
async fn a_checkout_without_product_ids_grants_its_line_items_read_from_stripe() {
    let stripe = FakeStripe::start(2).await;
    let app = stripe_app_with_api(&stripe, STRIPE_KEY).await;
    let solo = app
        .product(
            json!({"name": "Solo", "stripe_price_ids": ["price_1SoloMonth", "price_1SoloYear"]}),
        )
        .await;
    let team = app
        .product(json!({"name": "Team Seat", "stripe_price_ids": ["price_1TeamSeat"]}))
        .await;
    let buyer = buyer_email("lina");
    let s = session(
        json!({}),
        json!({"customer_details": {"email": buyer, "name": "Lina"}}),
    );
    let sid = s["id"].as_str().unwrap();
    let items = stripe.session(
        sid,
        &[
            ("price_1SoloYear", 1),
            ("price_1TeamSeat", 3),
            ("price_1SoloMonth", 1),
        ],
    );
    let ev = event("checkout.session.completed", s.clone());
    deliver_expect(&app, &ev, "processed").await;

    // Two pages: the second starts after the first page's last item.
    let reqs = stripe.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].get("limit").map(String::as_str), Some("100"));
    assert_eq!(reqs[0].get("starting_after"), None);
    assert_eq!(reqs[1].get("starting_after"), Some(&items[1]));
    assert_eq!(stripe.refused(), 0);

    let all = orders(&app).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["stripe_customer_id"], s["customer"], "{}", all[0]);
    let ids = strings(&all[0]["license_ids"]);
    let want = std::collections::BTreeMap::from([
        (solo["id"].as_str().unwrap().to_string(), 2),
        (team["id"].as_str().unwrap().to_string(), 3),
    ]);
    assert_eq!(per_product(&app, &ids).await, want);
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "VALID");
    }

    // One message to the buyer with every key; the account was made for them, so it invites.
    let mails = mail_to(&app, &buyer).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_keys_mailed(&app, &mails[0], &ids).await;
    assert!(mails[0].text.contains("Team Seat: "), "{}", mails[0].text);
    mails[0].token("/account/set-password");

    // A redelivery changes nothing and does not ask Stripe again.
    deliver_expect(&app, &ev, "duplicate").await;
    assert_eq!(stripe.requests().len(), 2);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM licenses").await, 5);
    assert_eq!(mail_to(&app, &buyer).await.len(), 1);
}

#[tokio::test]
async fn line_items_in_the_event_and_metadata_price_ids_still_grant_per_unit() {
    // No secret key: what the event carries is all there is.
    let app = stripe_app().await;
    let mona = buyer_email("mona");
    let (user_id, _) = app.customer(&mona).await;
    let p = app
        .product(json!({"name": "Studio", "stripe_price_ids": ["price_1Studio"]}))
        .await;
    let pid = p["id"].as_str().unwrap().to_string();
    // Signed in as one account, paying with another address: the account is told.
    let paid_with = buyer_email("mona.billing");
    let s = session(
        json!({"userId": user_id}),
        json!({"customer_details": {"email": paid_with, "name": "Mona"},
               "line_items": {"object": "list", "has_more": false, "url": "/v1/checkout/sessions/x/line_items",
                 "data": [{"id": "li_1Studio", "object": "item", "price": {"id": "price_1Studio", "object": "price"}, "quantity": 2}]}}),
    );
    deliver_expect(&app, &event("checkout.session.completed", s), "processed").await;
    let ids = strings(&orders(&app).await[0]["license_ids"]);
    assert_eq!(
        per_product(&app, &ids).await,
        std::collections::BTreeMap::from([(pid.clone(), 2)])
    );
    for id in &ids {
        assert_eq!(license(&app, id).await["user_id"], user_id.as_str());
    }
    let mails = mail_to(&app, &mona).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_keys_mailed(&app, &mails[0], &ids).await;
    assert_eq!(mail_to(&app, &paid_with).await.len(), 0);

    // metadata.priceIds: one license per listed price.
    let s = session(
        json!({"userId": user_id, "priceIds": "[\"price_1Studio\",\"price_1Studio\",\"price_1Studio\"]"}),
        json!({}),
    );
    deliver_expect(&app, &event("checkout.session.completed", s), "processed").await;
    assert_eq!(count(&app, "SELECT COUNT(*) FROM licenses").await, 5);
    assert_eq!(mail_to(&app, &mona).await.len(), 2);
}

#[tokio::test]
async fn a_paid_checkout_that_maps_to_no_product_leaves_a_notice_and_can_be_resent() {
    let stripe = FakeStripe::start(100).await;
    let app = stripe_app_with_api(&stripe, STRIPE_KEY).await;
    let p = app
        .product(json!({"stripe_price_ids": ["price_1Known"]}))
        .await;
    let buyer = buyer_email("nils");
    let s = session(
        json!({}),
        json!({"customer_details": {"email": buyer, "name": "Nils"}}),
    );
    let sid = s["id"].as_str().unwrap().to_string();
    stripe.session(&sid, &[("price_1Known", 1), ("price_1Mystery", 2)]);
    let ev = event("checkout.session.completed", s);

    // Acknowledged (Stripe stops retrying), but nothing granted and an admin is told.
    let ack = deliver_expect(&app, &ev, "ignored").await;
    let detail = ack["detail"].as_str().unwrap();
    assert!(detail.contains("price_1Mystery"), "{ack}");
    assert!(
        !detail.contains("price_1Known"),
        "only what maps to nothing: {ack}"
    );
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM licenses").await, 0);
    let notices = app
        .admin_get("/api/webhooks/notices")
        .await
        .expect(200)
        .clone();
    let notices = notices["data"].as_array().unwrap().clone();
    assert_eq!(notices.len(), 1, "{notices:?}");
    let n = &notices[0];
    assert_eq!(n["kind"], "stripe_checkout_unmapped", "{n}");
    assert_eq!(n["subject_id"], sid.as_str(), "{n}");
    let message = n["message"].as_str().unwrap();
    for part in [sid.as_str(), "price_1Mystery", ev["id"].as_str().unwrap()] {
        assert!(message.contains(part), "the notice names {part}: {message}");
    }
    let metrics = app.get("/metrics", None).await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l.starts_with("ecosire_stripe_checkouts_unmapped_total ")),
        "{}",
        metrics.text
    );
    assert_eq!(mail_to(&app, &buyer).await.len(), 0);

    // Once the price is mapped, resending the event from Stripe's dashboard grants it all.
    app.admin_patch(
        &format!("/api/products/{}", p["id"].as_str().unwrap()),
        json!({"stripe_price_ids": ["price_1Known", "price_1Mystery"]}),
    )
    .await
    .expect(200);
    deliver_expect(&app, &ev, "processed").await;
    assert_eq!(count(&app, "SELECT COUNT(*) FROM licenses").await, 3);
    deliver_expect(&app, &ev, "duplicate").await;
    assert_eq!(count(&app, "SELECT COUNT(*) FROM licenses").await, 3);
    let ids = strings(&orders(&app).await[0]["license_ids"]);
    let mails = mail_to(&app, &buyer).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_keys_mailed(&app, &mails[0], &ids).await;

    // A checkout that says nothing at all about what it bought is noticed as well.
    let s = session(json!({}), json!({}));
    stripe.session(s["id"].as_str().unwrap(), &[]);
    deliver_expect(&app, &event("checkout.session.completed", s), "ignored").await;
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM notices WHERE kind = 'stripe_checkout_unmapped'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn when_stripe_cannot_be_read_the_event_fails_and_a_redelivery_grants_once() {
    let stripe = FakeStripe::start(100).await;
    let app = stripe_app_with_api(&stripe, STRIPE_KEY).await;
    app.product(json!({"stripe_price_ids": ["price_1Solo"]}))
        .await;
    let buyer = buyer_email("olga");
    let s = session(
        json!({}),
        json!({"customer_details": {"email": buyer, "name": "Olga"}}),
    );
    stripe.session(s["id"].as_str().unwrap(), &[("price_1Solo", 1)]);
    let ev = event("checkout.session.completed", s);

    // Stripe answers 500: a 5xx, so Stripe delivers again; nothing is recorded.
    stripe.fail(true);
    for _ in 0..2 {
        let r = deliver(&app, &ev).await;
        r.expect_problem(502, "STRIPE_UNAVAILABLE");
        assert!(!r.text.contains(STRIPE_KEY), "{}", r.text);
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM stripe_events").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM licenses").await, 0);

    // Stripe is back: the next delivery grants, exactly once.
    stripe.fail(false);
    deliver_expect(&app, &ev, "processed").await;
    deliver_expect(&app, &ev, "duplicate").await;
    assert_eq!(count(&app, "SELECT COUNT(*) FROM licenses").await, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM stripe_events").await, 1);
    assert_eq!(mail_to(&app, &buyer).await.len(), 1);

    // A wrong key (Stripe answers 401) and an unreachable API are failures to retry too.
    let wrong = stripe_app_with_api(&stripe, "sk_test_revoked").await;
    let r = deliver(&wrong, &ev).await;
    r.expect_problem(502, "STRIPE_UNAVAILABLE");
    assert!(!r.text.contains("sk_test_revoked"), "{}", r.text);
    assert_eq!(stripe.refused(), 1);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let down = TestApp::with_config(|c| {
        c.stripe_webhook_secret = Some(SECRET.into());
        c.stripe_secret_key = Some(STRIPE_KEY.into());
        c.stripe_api_base = closed;
    })
    .await;
    deliver(&down, &ev)
        .await
        .expect_problem(502, "STRIPE_UNAVAILABLE");
    assert_eq!(count(&down, "SELECT COUNT(*) FROM stripe_events").await, 0);
}

#[tokio::test]
async fn refunds_and_failed_payments_find_their_order_through_the_subscription_or_the_customer() {
    let app = stripe_app().await;
    let (user_id, _) = app.customer(&buyer_email("pia")).await;
    let p = app.product(json!({})).await;
    let pid = p["id"].as_str().unwrap().to_string();
    let customer = format!("cus_{}", &uid()[18..]);
    let sub = format!("sub_1{}", &uid()[10..]);
    // A subscription checkout has no payment intent of its own: renewals bring new ones.
    let subscription_checkout = |sub: &str| {
        session(
            json!({"userId": user_id, "productIds": product_ids(&[&pid])}),
            json!({"mode": "subscription", "subscription": sub, "payment_intent": null, "customer": customer}),
        )
    };
    deliver_expect(
        &app,
        &event("checkout.session.completed", subscription_checkout(&sub)),
        "processed",
    )
    .await;
    let order = orders(&app).await[0].clone();
    let order_id = order["id"].as_str().unwrap().to_string();
    assert_eq!(order["stripe_customer_id"], customer.as_str());
    let ids = strings(&order["license_ids"]);
    let renewal_pi = || format!("pi_{}", &uid()[8..]);

    // A failed renewal (an older-API PaymentIntent with its invoice expanded) finds the order
    // through the invoice's subscription; a paid order stays paid.
    let mut failed = failed_payment_intent(&renewal_pi());
    failed["customer"] = json!("cus_SomeoneElse");
    failed["invoice"] =
        json!({"id": format!("in_{}", &uid()[18..]), "object": "invoice", "subscription": sub});
    let ack = deliver_expect(
        &app,
        &event("payment_intent.payment_failed", failed),
        "processed",
    )
    .await;
    assert!(ack["detail"].as_str().unwrap().contains("paid"), "{ack}");
    let (payload,): (String,) =
        sqlx::query_as("SELECT payload FROM outbox WHERE type = 'payment_intent.payment_failed'")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    let fwd: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        fwd["data"]["object"]["ecosire"]["order_id"],
        order_id.as_str(),
        "{fwd}"
    );
    // ...or, naming only the customer, through the customer.
    let mut failed = failed_payment_intent(&renewal_pi());
    failed["customer"] = json!(customer);
    deliver_expect(
        &app,
        &event("payment_intent.payment_failed", failed),
        "processed",
    )
    .await;

    // A partial refund of a charge without a payment intent: found by the customer.
    let mut partial = charge("", false, 500);
    partial["payment_intent"] = Value::Null;
    partial["customer"] = json!(customer);
    deliver_expect(&app, &event("charge.refunded", partial), "processed").await;
    let o = app
        .admin_get(&format!("/api/orders/{order_id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(o["status"], "partially_refunded", "{o}");
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "VALID");
    }
    // A full refund of a renewal's charge, its invoice expanded (current layout): revoked.
    let mut full = charge(&renewal_pi(), true, 1500);
    full["customer"] = json!("cus_SomeoneElse");
    full["invoice"] = json!({"id": format!("in_{}", &uid()[18..]), "object": "invoice",
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub, "metadata": {}}}});
    deliver_expect(&app, &event("charge.refunded", full), "processed").await;
    let o = app
        .admin_get(&format!("/api/orders/{order_id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(o["status"], "refunded", "{o}");
    for id in &ids {
        assert_eq!(code_of(&app, id).await, "REVOKED");
    }

    // The customer alone is not enough once it has two such orders: nothing is guessed.
    deliver_expect(
        &app,
        &event(
            "checkout.session.completed",
            subscription_checkout(&format!("sub_1{}", &uid()[10..])),
        ),
        "processed",
    )
    .await;
    let mut ambiguous = charge("", true, 1500);
    ambiguous["payment_intent"] = Value::Null;
    ambiguous["customer"] = json!(customer);
    let ack = deliver_expect(&app, &event("charge.refunded", ambiguous), "ignored").await;
    assert!(ack["detail"].as_str().unwrap().contains("several"), "{ack}");

    // An order whose payment intent we know is never matched by its customer alone: a charge
    // with another (or no) intent is some other payment.
    let other_customer = format!("cus_{}", &uid()[18..]);
    let pi = renewal_pi();
    let s = session(
        json!({"userId": user_id, "productIds": product_ids(&[&pid])}),
        json!({"payment_intent": pi, "customer": other_customer}),
    );
    deliver_expect(&app, &event("checkout.session.completed", s), "processed").await;
    let mut unrelated = charge("", true, 9800);
    unrelated["payment_intent"] = Value::Null;
    unrelated["customer"] = json!(other_customer);
    deliver_expect(&app, &event("charge.refunded", unrelated), "ignored").await;
    deliver_expect(
        &app,
        &event("charge.refunded", charge(&pi, false, 100)),
        "processed",
    )
    .await;
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM orders WHERE status = 'partially_refunded'"
        )
        .await,
        1
    );
}
