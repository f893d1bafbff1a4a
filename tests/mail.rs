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
    assert!(metrics.text.contains("ecosire_mail_pending 1"), "{}", metrics.text);
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
    assert!(metrics.text.contains("ecosire_mail_pending 0"), "{}", metrics.text);
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
    let smtpd = Smtpd::start_on(port);
    // The restarted instance finds the message waiting; make it due now rather than wait.
    sqlx::query("UPDATE mail_outbox SET next_attempt_at = 0")
        .execute(
            &ecosire::db::Db::connect(&d.database_url)
                .await
                .unwrap()
                .pool,
        )
        .await
        .unwrap();
    s.restart().await;
    let mail = smtpd.wait_for(1).await;
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].to, "kai@example.com");
    assert_eq!(mail[0].subject, "Confirm your email address");
}
