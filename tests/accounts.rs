//! Accounts people can use: verification, invitations, password reset and change, admin user
//! management, and the mail that carries the links (`.eml` files here; a real SMTP server in
//! `mail.rs`).
mod common;

use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use serde_json::{Value, json};

const SET_PASSWORD: &str = "/account/set-password";
const VERIFY: &str = "/account/verify-email";
const RESET: &str = "/account/reset-password";

async fn register(app: &TestApp, email: &str) -> Value {
    app.post(
        "/api/auth/register",
        json!({"email": email, "password": "first-password-1", "name": "Ann Lee"}),
        None,
    )
    .await
    .expect(201)["user"]
        .clone()
}

async fn me(app: &TestApp, token: &str) -> Value {
    app.get("/api/auth/me", Some(token)).await.expect(200)["user"].clone()
}

async fn sql_exec(app: &TestApp, sql: &str, arg: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(arg)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn registration_sends_a_link_that_verifies_the_address_once() {
    let app = TestApp::new().await;
    let user = register(&app, "Ann@Example.com").await;
    assert_eq!(user["email_verified_at"], Value::Null);
    assert_eq!(user["disabled"], false);
    let mail = app.mail_to("ann@example.com", 1).await;
    assert_eq!(mail.len(), 1);
    let m = &mail[0];
    assert_eq!(m.subject, "Confirm your email address");
    assert_eq!(m.from, "noreply@localhost");
    assert!(m.text.contains("Hello Ann Lee"), "{}", m.text);
    let token = m.token(VERIFY);
    assert!(token.len() >= 22, "a token of at least 128 bits");
    // The link starts with the public URL (ECOSIRE_PUBLIC_URL, else the bind address).
    assert!(
        m.text
            .contains(&format!("http://127.0.0.1:8080{VERIFY}?token={token}"))
    );
    // The database holds the token only as a digest, and the queued message only sealed.
    let stored: Vec<String> = sqlx::query_scalar("SELECT digest FROM account_tokens")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert!(!stored.is_empty() && !stored.iter().any(|d| d.contains(&token)));
    let bodies: Vec<Option<String>> = sqlx::query_scalar("SELECT message_sealed FROM mail_outbox")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(bodies, vec![None], "a sent message keeps no body");
    // The .eml file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&m.file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let session = app.login("ann@example.com", "first-password-1").await;
    app.post(
        "/api/auth/verify-email/confirm",
        json!({"token": token}),
        None,
    )
    .await
    .expect(204);
    let verified = me(&app, &session).await;
    assert!(verified["email_verified_at"].is_string(), "{verified}");
    // Used: refused, nothing changes.
    app.post(
        "/api/auth/verify-email/confirm",
        json!({"token": token}),
        None,
    )
    .await
    .expect_problem(400, "INVALID_TOKEN");
    // Forged, or of the wrong shape.
    for bad in [
        "A".repeat(32),
        "short".into(),
        format!("{token}x"),
        String::new(),
    ] {
        app.post(
            "/api/auth/verify-email/confirm",
            json!({"token": bad}),
            None,
        )
        .await
        .expect_problem(400, "INVALID_TOKEN");
    }
    // Asking again once verified sends nothing.
    app.post("/api/auth/verify-email", json!({}), Some(&session))
        .await
        .expect(202);
    assert_eq!(app.delivered_mail().await.len(), 1);
}

#[tokio::test]
async fn a_new_link_can_be_asked_for_and_the_old_one_still_works_once() {
    let app = TestApp::new().await;
    register(&app, "ben@example.com").await;
    let session = app.login("ben@example.com", "first-password-1").await;
    app.post("/api/auth/verify-email", json!({}), Some(&session))
        .await
        .expect(202);
    let mail = app.mail_to("ben@example.com", 2).await;
    let (first, second) = (mail[0].token(VERIFY), mail[1].token(VERIFY));
    assert_ne!(first, second);
    app.post(
        "/api/auth/verify-email/confirm",
        json!({"token": second}),
        None,
    )
    .await
    .expect(204);
    assert!(me(&app, &session).await["email_verified_at"].is_string());
}

#[tokio::test]
async fn a_license_granted_to_an_address_waits_for_its_verification() {
    let app = TestApp::new().await;
    let user = register(&app, "carol@example.com").await;
    let session = app.login("carol@example.com", "first-password-1").await;
    let (p, lic) = app
        .product_and_license(
            json!({"name": "Desktop Pro"}),
            json!({"email": "carol@example.com"}),
        )
        .await;
    // Not hers yet: the address is not verified.
    assert_eq!(lic["user_id"], Value::Null);
    let mine = app.get("/api/licenses", Some(&session)).await;
    assert_eq!(mine.expect(200)["data"].as_array().unwrap().len(), 0);
    // The key still reaches the address, without an invitation (the account has a password).
    let mail = app.mail_to("carol@example.com", 2).await;
    let keys = mail
        .iter()
        .find(|m| m.subject == "Your license key for Desktop Pro")
        .expect("the license message");
    assert!(keys.text.contains(lic["key"].as_str().unwrap()));
    assert!(!keys.text.contains(SET_PASSWORD));
    // The validate answer is cached with no owner…
    let key = lic["key"].as_str().unwrap();
    assert_eq!(
        app.validate(json!({"key": key})).await["license"]["user_id"],
        Value::Null
    );
    // …until she verifies: then the license is hers, on the very next call.
    let verify = mail
        .iter()
        .find(|m| m.subject.starts_with("Confirm"))
        .unwrap();
    app.post(
        "/api/auth/verify-email/confirm",
        json!({"token": verify.token(VERIFY)}),
        None,
    )
    .await
    .expect(204);
    let mine = app.get("/api/licenses", Some(&session)).await;
    let data = mine.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], lic["id"]);
    assert_eq!(data[0]["key"], lic["key"]);
    assert_eq!(
        app.validate(json!({"key": key})).await["license"]["user_id"],
        user["id"]
    );
    let _ = p;
}

#[tokio::test]
async fn an_invitation_carries_the_key_and_a_link_that_sets_the_password() {
    let app = TestApp::new().await;
    let (_, lic) = app
        .product_and_license(
            json!({"name": "Studio"}),
            json!({"email": "dan@example.com"}),
        )
        .await;
    let uid = lic["user_id"]
        .as_str()
        .expect("a new account owns it")
        .to_string();
    // The account exists but nobody can log in yet.
    app.post(
        "/api/auth/login",
        json!({"email": "dan@example.com", "password": "anything-at-all"}),
        None,
    )
    .await
    .expect_problem(401, "INVALID_CREDENTIALS");
    let mail = app.mail_to("dan@example.com", 1).await;
    assert_eq!(mail.len(), 1, "one message: the key and the invitation");
    let m = &mail[0];
    assert_eq!(m.subject, "Your license key for Studio");
    assert!(m.text.contains(lic["key"].as_str().unwrap()));
    assert!(m.html.contains(lic["key"].as_str().unwrap()));
    let token = m.token(SET_PASSWORD);

    // A password that is too short changes nothing and keeps the token.
    app.post(
        "/api/auth/password-reset/confirm",
        json!({"token": token, "password": "short"}),
        None,
    )
    .await
    .expect_problem(422, "VALIDATION_FAILED");
    app.post(
        "/api/auth/password-reset/confirm",
        json!({"token": token, "password": "dans-own-password"}),
        None,
    )
    .await
    .expect(204);
    let session = app.login("dan@example.com", "dans-own-password").await;
    let user = me(&app, &session).await;
    assert_eq!(user["id"], uid.as_str());
    assert!(
        user["email_verified_at"].is_string(),
        "setting it verified the address"
    );
    let own = app
        .get(
            &format!("/api/licenses/{}", lic["id"].as_str().unwrap()),
            Some(&session),
        )
        .await;
    assert_eq!(own.expect(200)["key"], lic["key"]);
    // The link works once.
    app.post(
        "/api/auth/password-reset/confirm",
        json!({"token": token, "password": "another-password"}),
        None,
    )
    .await
    .expect_problem(400, "INVALID_TOKEN");
    // A second license to the same address: the key, no new invitation.
    let p2 = app.product(json!({"name": "Studio Plus"})).await;
    app.license(
        p2["id"].as_str().unwrap(),
        json!({"email": "dan@example.com"}),
    )
    .await;
    let mail = app.mail_to("dan@example.com", 2).await;
    assert!(!mail[1].text.contains(SET_PASSWORD));
}

#[tokio::test]
async fn password_reset_answers_alike_for_every_address_and_ends_every_session() {
    let app = TestApp::new().await;
    let (uid, _) = app.customer("erin@example.com").await;
    let s1 = app.login("erin@example.com", "customer-pass-1").await;
    let s2 = app.login("erin@example.com", "customer-pass-1").await;
    let known = app
        .post(
            "/api/auth/password-reset",
            json!({"email": "Erin@Example.com"}),
            None,
        )
        .await;
    let unknown = app
        .post(
            "/api/auth/password-reset",
            json!({"email": "nobody@example.com"}),
            None,
        )
        .await;
    assert_eq!(known.expect(202), unknown.expect(202));
    let mail = app.mail_to("erin@example.com", 1).await;
    let token = mail[0].token(RESET);
    assert!(mail[0].text.contains("expires in 1 hour"));
    // The unknown address got nothing (its task ran: every message of both is out).
    assert!(
        app.delivered_mail()
            .await
            .iter()
            .all(|m| m.to != "nobody@example.com")
    );

    // A verification token is not a reset token.
    app.post(
        "/api/auth/password-reset/confirm",
        json!({"token": "A".repeat(32), "password": "new-password-1"}),
        None,
    )
    .await
    .expect_problem(400, "INVALID_TOKEN");
    app.post(
        "/api/auth/verify-email/confirm",
        json!({"token": token}),
        None,
    )
    .await
    .expect_problem(400, "INVALID_TOKEN");
    app.post(
        "/api/auth/password-reset/confirm",
        json!({"token": token, "password": "new-password-1"}),
        None,
    )
    .await
    .expect(204);
    for s in [&s1, &s2] {
        app.get("/api/auth/me", Some(s))
            .await
            .expect_problem(401, "UNAUTHENTICATED");
    }
    app.post(
        "/api/auth/login",
        json!({"email": "erin@example.com", "password": "customer-pass-1"}),
        None,
    )
    .await
    .expect_problem(401, "INVALID_CREDENTIALS");
    let s3 = app.login("erin@example.com", "new-password-1").await;
    assert_eq!(me(&app, &s3).await["id"], uid.as_str());
    app.post(
        "/api/auth/password-reset/confirm",
        json!({"token": token, "password": "new-password-2"}),
        None,
    )
    .await
    .expect_problem(400, "INVALID_TOKEN");
}

#[tokio::test]
async fn an_expired_reset_link_changes_nothing() {
    let app = TestApp::new().await;
    app.customer("fay@example.com").await;
    app.post(
        "/api/auth/password-reset",
        json!({"email": "fay@example.com"}),
        None,
    )
    .await
    .expect(202);
    let token = app.mail_to("fay@example.com", 1).await[0].token(RESET);
    // An hour and a moment later.
    sql_exec(
        &app,
        "UPDATE account_tokens SET expires_at = created_at - 1 WHERE purpose = $1",
        "reset",
    )
    .await;
    app.post(
        "/api/auth/password-reset/confirm",
        json!({"token": token, "password": "new-password-1"}),
        None,
    )
    .await
    .expect_problem(400, "INVALID_TOKEN");
    app.login("fay@example.com", "customer-pass-1").await;
}

#[tokio::test]
async fn password_change_needs_the_current_password_and_ends_other_sessions() {
    let app = TestApp::new().await;
    app.customer("gil@example.com").await;
    let here = app.login("gil@example.com", "customer-pass-1").await;
    let elsewhere = app.login("gil@example.com", "customer-pass-1").await;
    app.post(
        "/api/auth/password",
        json!({"current_password": "wrong-password", "new_password": "changed-pass-1"}),
        Some(&here),
    )
    .await
    .expect_problem(401, "INVALID_CREDENTIALS");
    app.post(
        "/api/auth/password",
        json!({"current_password": "customer-pass-1", "new_password": "short"}),
        Some(&here),
    )
    .await
    .expect_problem(422, "VALIDATION_FAILED");
    // An API key is not a person at a keyboard.
    let key = app
        .post(
            "/api/api-keys",
            json!({"name": "ci", "scope": "read-write"}),
            Some(&here),
        )
        .await
        .expect(201)["key"]
        .as_str()
        .unwrap()
        .to_string();
    app.post(
        "/api/auth/password",
        json!({"current_password": "customer-pass-1", "new_password": "changed-pass-1"}),
        Some(&key),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
    app.post(
        "/api/auth/password",
        json!({"current_password": "customer-pass-1", "new_password": "changed-pass-1"}),
        Some(&here),
    )
    .await
    .expect(204);
    me(&app, &here).await;
    app.get("/api/auth/me", Some(&elsewhere))
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    app.login("gil@example.com", "changed-pass-1").await;
    let warning = app.mail_to("gil@example.com", 1).await;
    assert_eq!(warning[0].subject, "Your password was changed");
}

#[tokio::test]
async fn a_disabled_user_is_refused_at_once_and_can_be_enabled_again() {
    let app = TestApp::new().await;
    let (uid, _) = app.customer("hal@example.com").await;
    let session = app.login("hal@example.com", "customer-pass-1").await;
    let key = app
        .post(
            "/api/api-keys",
            json!({"name": "ci", "scope": "read-only"}),
            Some(&session),
        )
        .await
        .expect(201)["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/users/{uid}");
    let patched = app
        .admin_patch(
            &path,
            json!({"disabled": true, "plan": "pro", "name": "Hal B."}),
        )
        .await;
    let u = &patched.expect(200)["user"];
    assert_eq!(
        (u["disabled"].clone(), u["plan"].clone(), u["name"].clone()),
        (json!(true), json!("pro"), json!("Hal B."))
    );
    for t in [&session, &key] {
        app.get("/api/auth/me", Some(t))
            .await
            .expect_problem(401, "UNAUTHENTICATED");
    }
    app.post(
        "/api/auth/login",
        json!({"email": "hal@example.com", "password": "customer-pass-1"}),
        None,
    )
    .await
    .expect_problem(403, "ACCOUNT_DISABLED");
    // A wrong password says nothing about the account.
    app.post(
        "/api/auth/login",
        json!({"email": "hal@example.com", "password": "not-the-password"}),
        None,
    )
    .await
    .expect_problem(401, "INVALID_CREDENTIALS");
    app.admin_patch(&path, json!({"disabled": false}))
        .await
        .expect(200);
    app.get("/api/auth/me", Some(&key)).await.expect(200);
    let s = app.login("hal@example.com", "customer-pass-1").await;
    assert_eq!(me(&app, &s).await["plan"], "pro");
    // Bad input.
    app.admin_patch(&path, json!({"role": "owner"}))
        .await
        .expect_problem(422, "VALIDATION_FAILED");
    app.admin_patch(&path, json!({"plan": "has space"}))
        .await
        .expect_problem(422, "VALIDATION_FAILED");
    app.admin_patch(
        "/api/users/usr_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4",
        json!({"name": "x"}),
    )
    .await
    .expect_problem(404, "NOT_FOUND");
}

async fn admin_id(app: &TestApp) -> String {
    me(app, &app.admin_token.clone()).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_last_active_admin_cannot_be_demoted_disabled_or_deleted() {
    let app = TestApp::new().await;
    let me_id = admin_id(&app).await;
    let path = format!("/api/users/{me_id}");
    app.admin_patch(&path, json!({"role": "customer"}))
        .await
        .expect_problem(409, "LAST_ADMIN");
    app.admin_patch(&path, json!({"disabled": true}))
        .await
        .expect_problem(409, "LAST_ADMIN");
    app.admin_delete(&path)
        .await
        .expect_problem(409, "LAST_ADMIN");
    // Renaming is fine.
    app.admin_patch(&path, json!({"name": "Root"}))
        .await
        .expect(200);
    // With a second admin, the first may step down.
    let (other, _) = app.customer("ivy@example.com").await;
    app.admin_patch(&format!("/api/users/{other}"), json!({"role": "admin"}))
        .await
        .expect(200);
    app.admin_patch(&path, json!({"role": "customer"}))
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    let app = TestApp::new().await;
    for round in 0..10 {
        let email = format!("jo{round}@example.com");
        let (other, _) = app.customer(&email).await;
        app.admin_patch(&format!("/api/users/{other}"), json!({"role": "admin"}))
            .await
            .expect(200);
        let other_session = app.login(&email, "customer-pass-1").await;
        let first = admin_id(&app).await;
        // Each demotes the other, at the same moment, on two tasks.
        let demote = |target: &str, token: String| {
            let router = app.router.clone();
            let path = format!("/api/users/{target}");
            tokio::spawn(async move {
                use tower::ServiceExt;
                let req = axum::http::Request::patch(path)
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {token}"))
                    .body(axum::body::Body::from(r#"{"role":"customer"}"#))
                    .unwrap();
                router.oneshot(req).await.unwrap().status().as_u16()
            })
        };
        let ta = demote(&other, app.admin_token.clone());
        let tb = demote(&first, other_session.clone());
        let (a, b) = (ta.await.unwrap(), tb.await.unwrap());
        let mut statuses = [a, b];
        statuses.sort();
        // One wins; the other is refused (LAST_ADMIN, or 403 if the winner demoted it first).
        assert_eq!(statuses[0], 200, "{a} {b}");
        assert!(matches!(statuses[1], 403 | 409), "{a} {b}");
        let admins: i64 =
            sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0")
                .fetch_one(&app.state.db.pool)
                .await
                .unwrap();
        assert_eq!(admins, 1, "round {round}");
        // Put the first admin back for the next round.
        if a != 200 {
            sqlx::query("UPDATE users SET role = 'admin' WHERE id = $1")
                .bind(&first)
                .execute(&app.state.db.pool)
                .await
                .unwrap();
            sqlx::query("UPDATE users SET role = 'customer' WHERE id = $1")
                .bind(&other)
                .execute(&app.state.db.pool)
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn deleting_a_user_erases_personal_data_and_keeps_licenses_and_orders() {
    let app = TestApp::new().await;
    let (uid, _) = app.customer("kim@example.com").await;
    let session = app.login("kim@example.com", "customer-pass-1").await;
    let key = app
        .post(
            "/api/api-keys",
            json!({"name": "ci", "scope": "read-only"}),
            Some(&session),
        )
        .await
        .expect(201)["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, lic) = app
        .product_and_license(json!({}), json!({"user_id": uid}))
        .await;
    let ticket = app
        .post(
            "/api/support",
            json!({"email": "kim@example.com", "subject": "Help", "message": "Please"}),
            Some(&session),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.admin_delete(&format!("/api/users/{uid}"))
        .await
        .expect(204);
    let u = app.admin_get(&format!("/api/users/{uid}")).await;
    let u = u.expect(200);
    assert_eq!(u["email"], format!("deleted+{uid}@invalid"));
    assert_eq!(u["name"], "");
    assert_eq!(u["disabled"], true);
    for t in [&session, &key] {
        app.get("/api/auth/me", Some(t))
            .await
            .expect_problem(401, "UNAUTHENTICATED");
    }
    let l = app
        .admin_get(&format!("/api/licenses/{}", lic["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        l.expect(200)["user_id"],
        uid.as_str(),
        "the license stays, for the books"
    );
    let t = app
        .admin_get(&format!("/api/support/tickets/{ticket}"))
        .await;
    assert_ne!(t.expect(200)["email"], "kim@example.com");
    let users = app.admin_get("/api/users?limit=100").await;
    assert!(!users.text.contains("kim@example.com"));
    // The address is free again, for a new account.
    register(&app, "kim@example.com").await;
}

#[tokio::test]
async fn addresses_with_line_breaks_or_bad_domains_are_refused() {
    let app = TestApp::new().await;
    let p = app.product(json!({})).await;
    for bad in [
        "ann@example.com\r\nBcc: all@example.com",
        "ann@example.com\n",
        "ann@-example.com",
        "ann@example.c0m",
        "ann@example",
    ] {
        app.post(
            "/api/auth/register",
            json!({"email": bad, "password": "first-password-1", "name": "Ann"}),
            None,
        )
        .await
        .expect_problem(422, "VALIDATION_FAILED");
        app.post("/api/auth/password-reset", json!({"email": bad}), None)
            .await
            .expect_problem(422, "VALIDATION_FAILED");
        app.admin_post(
            "/api/licenses",
            json!({"product_id": p["id"], "email": bad}),
        )
        .await
        .expect_problem(422, "VALIDATION_FAILED");
    }
    assert!(app.delivered_mail().await.is_empty());
}

#[tokio::test]
async fn reset_requests_are_limited_per_address_and_per_ip() {
    let app = TestApp::with_config(|c| c.rate_limits = true).await;
    app.customer("lee@example.com").await;
    // Per address (5/h by default), whatever the IP: the sixth is refused.
    let mut statuses = vec![];
    for i in 0..6 {
        let r = app
            .send(
                axum::http::Request::post("/api/auth/password-reset")
                    .header("content-type", "application/json")
                    .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                        [10, 0, 0, i as u8 + 1],
                        4000,
                    ))))
                    .body(axum::body::Body::from(
                        json!({"email": "lee@example.com"}).to_string(),
                    ))
                    .unwrap(),
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429]);
    // Per IP (5/min by default), whatever the address.
    let mut statuses = vec![];
    for i in 0..6 {
        let r = app
            .post(
                "/api/auth/password-reset",
                json!({"email": format!("x{i}@example.com")}),
                None,
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429]);
}

#[tokio::test]
async fn the_admin_can_always_get_back_in_with_a_reset() {
    let app = TestApp::new().await;
    app.post(
        "/api/auth/password-reset",
        json!({"email": ADMIN_EMAIL}),
        None,
    )
    .await
    .expect(202);
    let token = app.mail_to(ADMIN_EMAIL, 1).await[0].token(RESET);
    app.post(
        "/api/auth/password-reset/confirm",
        json!({"token": token, "password": "brand-new-admin-pass"}),
        None,
    )
    .await
    .expect(204);
    app.post(
        "/api/auth/login",
        json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        None,
    )
    .await
    .expect_problem(401, "INVALID_CREDENTIALS");
    app.login(ADMIN_EMAIL, "brand-new-admin-pass").await;
}
