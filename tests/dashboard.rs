//! The dashboard as served (in-process): the front door, the account pages linked from mail,
//! the portal's view of a customer's licenses, the security headers and the hashed assets. The
//! browser tests (`tests/browser`) drive the same pages in Chromium.
mod common;

use common::TestApp;
use serde_json::json;

fn asset_links(html: &str) -> Vec<String> {
    html.split(['"', '\''])
        .filter(|s| s.starts_with("/assets/"))
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn the_front_door_leads_a_visitor_to_sign_in() {
    let app = TestApp::new().await;
    let r = app.get("/", None).await;
    assert_eq!(r.status.as_u16(), 307);
    assert_eq!(r.header("location"), Some("/dashboard"));
    let r = app.get("/dashboard", None).await;
    assert!(r.status.is_redirection());
    assert_eq!(r.header("location"), Some("/login?next=/dashboard"));
    // A cookie that no longer verifies (signed out elsewhere, disabled) is a visitor to sign in.
    let r = app
        .send(
            axum::http::Request::get("/dashboard")
                .header("cookie", "ecosire_auth=not-a-session")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.header("location"), Some("/login?next=/dashboard"));
    let r = app.get("/dashboard/admin/licenses", None).await;
    assert_eq!(
        r.header("location"),
        Some("/login?next=/dashboard/admin/licenses")
    );
    let r = app.get("/dashboard/api-keys", None).await;
    assert_eq!(
        r.header("location"),
        Some("/login?next=/dashboard/api-keys")
    );
    let r = app.get("/login?next=/dashboard", None).await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let csp = r.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.text.contains(r#"data-api="/api/auth/login""#));
    assert!(r.text.contains(r#"data-then="/dashboard""#));
    // Nothing from another origin: every script and stylesheet is ours.
    assert!(
        !r.text.contains("http://") && !r.text.contains("https://"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("<script>"), "no inline script");
    let links = asset_links(&r.text);
    assert_eq!(links.len(), 2, "{links:?}");
    for link in links {
        let a = app.get(&link, None).await;
        assert_eq!(a.status.as_u16(), 200, "{link}");
        assert_eq!(
            a.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
    }
    app.get("/assets/app.000000000000.js", None)
        .await
        .expect_problem(404, "NOT_FOUND");
    // `next` only ever leads to a path on this site.
    for evil in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let r = app.get(&format!("/login?next={evil}"), None).await;
        assert!(r.text.contains(r#"data-then="/dashboard""#), "{evil}");
    }
}

#[tokio::test]
async fn the_pages_behind_mail_links_carry_their_token_to_the_api() {
    let app = TestApp::new().await;
    let r = app.get("/account/set-password?token=abcDEF123", None).await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(r.text.contains(r#"value="abcDEF123""#));
    assert!(
        r.text
            .contains(r#"data-api="/api/auth/password-reset/confirm""#)
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    // Markup in a token is shown as text, never run.
    let r = app
        .get(
            "/account/reset-password?token=%22%3E%3Cscript%3Ex%3C/script%3E",
            None,
        )
        .await;
    assert!(!r.text.contains("<script>x"), "{}", r.text);
    let r = app.get("/account/reset-password", None).await;
    assert!(r.text.contains("needs the link from your email"));
    let r = app.get("/account/verify-email?token=t0k", None).await;
    assert!(
        r.text
            .contains(r#"data-api="/api/auth/verify-email/confirm""#)
    );
    // Opening the page does not use the token up: only the button does.
    let r = app.get("/account/forgot-password", None).await;
    assert!(r.text.contains(r#"data-api="/api/auth/password-reset""#));
}

#[tokio::test]
async fn a_customer_sees_only_their_own_licenses_with_keys_behind_a_button() {
    let app = TestApp::new().await;
    let (uid, _) = app.customer("pat@example.com").await;
    let (p, mine) = app
        .product_and_license(json!({"name": "Desktop Pro"}), json!({"user_id": uid}))
        .await;
    let theirs = app.license(p["id"].as_str().unwrap(), json!({})).await;
    let session = app.login("pat@example.com", "customer-pass-1").await;
    let r = app
        .send(
            axum::http::Request::get("/dashboard")
                .header("cookie", format!("ecosire_auth={session}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert!(r.text.contains("Desktop Pro") && r.text.contains("pat@example.com"));
    assert!(r.text.contains(mine["key"].as_str().unwrap()));
    assert!(!r.text.contains(theirs["key"].as_str().unwrap()));
    assert!(r.text.contains("data-reveal"));
    // A customer with nothing yet is told where licenses come from.
    app.customer("new@example.com").await;
    let s2 = app.login("new@example.com", "customer-pass-1").await;
    let r = app
        .send(
            axum::http::Request::get("/dashboard")
                .header("cookie", format!("ecosire_auth={s2}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert!(r.text.contains("No licenses yet"));
    // Admin pages: a 403 page for a customer, the page for an admin.
    let r = app
        .send(
            axum::http::Request::get("/dashboard/admin/licenses")
                .header("cookie", format!("ecosire_auth={s2}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status.as_u16(), 403);
    assert!(r.text.contains("This page is for administrators"));
    let r = app
        .send(
            axum::http::Request::get(format!(
                "/dashboard/admin/licenses?q={}",
                mine["key"].as_str().unwrap()
            ))
            .header("cookie", format!("ecosire_auth={}", app.admin_token))
            .body(axum::body::Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(r.text.contains(mine["key_last4"].as_str().unwrap()));
    assert!(r.text.contains("pat@example.com"));
}
