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
