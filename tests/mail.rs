//! Mail through a real SMTP server (aiosmtpd): messages wait and retry while it is down, the
//! request that caused them still succeeds, two instances never send one twice, and a message
//! queued before a crash goes out after the restart.
mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::TestApp;
use common::mail::Smtpd;
use common::process::Deployment;
use serde_json::json;

#[tokio::test]
async fn mail_waits_while_smtp_is_down_and_goes_out_when_it_returns() {
    let port = Smtpd::reserve_port();
    let app = TestApp::with_config(|c| {
        c.smtp_url = Some(format!("smtp://127.0.0.1:{port}?tls=none"));
        c.mail_backoff_base = Duration::ZERO;
        c.mail_from = "Licenses <licenses@example.com>".into();
        c.public_url = Some("https://licenses.example.com".into());
    })
    .await;
    // Nothing listens: the registration still succeeds, its message waits.
    app.post(
        "/api/auth/register",
        json!({"email": "ann@example.com", "password": "first-password-1", "name": "Ann"}),
        None,
    )
    .await
    .expect(201);
    for attempt in 1..=2 {
        assert_eq!(ecosire::mail::run_once(&app.state).await.unwrap(), 1);
        let (status, attempts, error): (String, i64, Option<String>) =
            sqlx::query_as("SELECT status, attempt_count, last_error FROM mail_outbox")
                .fetch_one(&app.state.db.pool)
                .await
                .unwrap();
        assert_eq!((status.as_str(), attempts), ("pending", attempt));
        assert!(error.is_some_and(|e| !e.is_empty()));
    }
    let metrics = app.get("/metrics", None).await;
    assert!(
        metrics.text.contains("ecosire_mail_pending 1"),
        "{}",
        metrics.text
    );
    // The server comes up on that port: the next round delivers it, once.
    let smtpd = Smtpd::start_on(port);
    assert_eq!(ecosire::mail::run_once(&app.state).await.unwrap(), 1);
    assert_eq!(ecosire::mail::run_once(&app.state).await.unwrap(), 0);
    let mail = smtpd.wait_for(1).await;
    assert_eq!(mail.len(), 1);
    let m = &mail[0];
    assert_eq!(
        (m.to.as_str(), m.from.as_str()),
        ("ann@example.com", "licenses@example.com")
    );
    assert!(
        m.text
            .contains("https://licenses.example.com/account/verify-email?token=")
    );
    let token = m.token("/account/verify-email");
    app.post(
        "/api/auth/verify-email/confirm",
        json!({"token": token}),
        None,
    )
    .await
    .expect(204);
    let (status, sealed): (String, Option<String>) =
        sqlx::query_as("SELECT status, message_sealed FROM mail_outbox")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), sealed), ("sent", None));
    let metrics = app.get("/metrics", None).await;
    assert!(
        metrics.text.contains("ecosire_mail_pending 0"),
        "{}",
        metrics.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_never_send_the_same_message_twice() {
    let smtpd = Smtpd::start();
    let app = TestApp::with_config(|c| c.smtp_url = Some(smtpd.url())).await;
    let p = app.product(json!({"name": "Desktop Pro"})).await;
    const N: usize = 40;
    for i in 0..N {
        app.license(
            p["id"].as_str().unwrap(),
            json!({"email": format!("buyer{i}@example.com")}),
        )
        .await;
    }
    // A second instance on the same database and keys; both workers drain the outbox at once.
    let other = ecosire::build_state(app.state.config.clone())
        .await
        .unwrap();
    let (a, b) = (app.state.clone(), other.clone());
    let t1 = tokio::spawn(async move {
        let mut n = 0;
        loop {
            let k = ecosire::mail::run_once(&a).await.unwrap();
            if k == 0 {
                return n;
            }
            n += k;
        }
    });
    let t2 = tokio::spawn(async move {
        let mut n = 0;
        loop {
            let k = ecosire::mail::run_once(&b).await.unwrap();
            if k == 0 {
                return n;
            }
            n += k;
        }
    });
    let (n1, n2) = (t1.await.unwrap(), t2.await.unwrap());
    assert_eq!(n1 + n2, N, "each message attempted once ({n1} + {n2})");
    let mail = smtpd.wait_for(N).await;
    let mut per: HashMap<String, usize> = HashMap::new();
    for m in &mail {
        *per.entry(m.to.clone()).or_default() += 1;
    }
    assert_eq!(mail.len(), N);
    assert!(per.values().all(|n| *n == 1), "{per:?}");
    println!("two workers: {n1} + {n2} messages");
}

#[tokio::test]
async fn a_message_queued_before_a_kill_is_sent_after_the_restart() {
    let port = Smtpd::reserve_port();
    let smtp = format!("smtp://127.0.0.1:{port}?tls=none");
    let d = Deployment::new().await;
    let mut s = d.start(&[("ECOSIRE_SMTP_URL", &smtp)]).await;
    let http = reqwest::Client::new();
    let (status, _) = s
        .post(
            &http,
            "/api/auth/register",
            None,
            &json!({"email": "kai@example.com", "password": "first-password-1", "name": "Kai"}),
        )
        .await;
    assert_eq!(status, 201);
    // The worker tried (nothing listens) and will retry in about 30 s; the process dies first.
    s.log_line(0, &["mail not sent; will retry"]).await;
    s.kill9();
    let db = ecosire::db::Db::connect(&d.database_url).await.unwrap();
    let (attempts, locked): (i64, Option<i64>) =
        sqlx::query_as("SELECT attempt_count, locked_until FROM mail_outbox")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (attempts, locked),
        (1, None),
        "the failed attempt was recorded before its log line"
    );
    let smtpd = Smtpd::start_on(port);
    // The restarted instance finds the message waiting; make it due now rather than wait.
    sqlx::query("UPDATE mail_outbox SET next_attempt_at = 0")
        .execute(&db.pool)
        .await
        .unwrap();
    s.restart().await;
    let mail = smtpd.wait_for(1).await;
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].to, "kai@example.com");
    assert_eq!(mail[0].subject, "Confirm your email address");
}

/// Issue 12's whole buyer path: a Payment Link checkout (no `metadata.productIds`) signed as
/// Stripe signs it → its line items read from a local stand-in of Stripe's API → the license →
/// one message in the SMTP server's maildir → the password set from its link → login → the
/// buyer's own license, with its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_stripe_checkout_ends_with_the_buyer_signed_in_and_holding_the_key() {
    // Stripe's line-items endpoint, as documented: a list object of items with a price.
    let stripe = axum::Router::new().route(
        "/v1/checkout/sessions/{id}/line_items",
        axum::routing::get(
            |axum::extract::Path(id): axum::extract::Path<String>,
             headers: axum::http::HeaderMap| async move {
                assert_eq!(id, "cs_test_buyer");
                assert_eq!(
                    headers.get("authorization").and_then(|v| v.to_str().ok()),
                    Some("Bearer sk_test_buyer")
                );
                axum::Json(json!({
                    "object": "list",
                    "data": [{"id": "li_1", "object": "item", "price": {"id": "price_pro_yearly"}, "quantity": 1}],
                    "has_more": false,
                    "url": format!("/v1/checkout/sessions/{id}/line_items")
                }))
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stripe_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, stripe).await });
    let smtpd = Smtpd::start();
    let app = TestApp::with_config(|c| {
        c.stripe_webhook_secret = Some("whsec_buyerpath".into());
        c.stripe_secret_key = Some("sk_test_buyer".into());
        c.stripe_api_base = stripe_base.clone();
        c.smtp_url = Some(smtpd.url());
        c.public_url = Some("https://licenses.example.com".into());
    })
    .await;
    let product = app
        .product(json!({"name": "Desktop Pro", "stripe_price_ids": ["price_pro_yearly"]}))
        .await;

    let body = json!({
        "id": "evt_buyer_path",
        "object": "event",
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": "cs_test_buyer",
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "payment_intent": "pi_buyer",
            "customer": "cus_buyer",
            "customer_details": {"email": "Buyer@Example.com", "name": "Bea Buyer"},
            "amount_total": 4900,
            "currency": "eur",
            "metadata": {}
        }}
    })
    .to_string();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signature = ecosire::events::signature::header("whsec_buyerpath", t, body.as_bytes());
    let r = app
        .send(
            axum::http::Request::post("/api/webhooks/stripe")
                .header("content-type", "application/json")
                .header("stripe-signature", signature)
                .body(axum::body::Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.expect(200)["outcome"], "processed", "{}", r.text);

    // The message, through SMTP.
    while ecosire::mail::run_once(&app.state).await.unwrap() > 0 {}
    let mail = smtpd.wait_for(1).await;
    assert_eq!(mail.len(), 1, "one message: the key and the invitation");
    let m = &mail[0];
    assert_eq!(
        (m.to.as_str(), m.subject.as_str()),
        ("buyer@example.com", "Your license key for Desktop Pro")
    );
    let key: String = m
        .text
        .split_whitespace()
        .find(|w| w.starts_with("ECOS-"))
        .expect("the key in the message")
        .to_string();
    assert!(
        m.text
            .contains("https://licenses.example.com/account/set-password?token=")
    );
    let token = m.token("/account/set-password");

    // The buyer sets a password from the link, logs in, and finds the license with its key.
    app.post(
        "/api/auth/password-reset/confirm",
        json!({"token": token, "password": "bea-chose-this"}),
        None,
    )
    .await
    .expect(204);
    let session = app.login("buyer@example.com", "bea-chose-this").await;
    let me = app.get("/api/auth/me", Some(&session)).await;
    assert!(me.expect(200)["user"]["email_verified_at"].is_string());
    let mine = app.get("/api/licenses", Some(&session)).await;
    let data = mine.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["key"], key.as_str());
    assert_eq!(data[0]["product_id"], product["id"]);
    let orders = app.get("/api/orders", Some(&session)).await;
    assert_eq!(orders.expect(200)["data"].as_array().unwrap().len(), 1);
    // And the key works on the buyer's machine.
    let v = app
        .validate(json!({"key": key, "product": product["id"]}))
        .await;
    assert_eq!(v["code"], "VALID", "{v}");
}
