mod common;

use std::collections::HashSet;

use axum::body::Body;
use axum::http::{Method, Request};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, TestResponse};
use serde_json::{Value, json};

const COOKIE: &str = "ecosire_auth";

/// Asserts the full problem+json shape of API.md and returns the body.
#[track_caller]
fn problem<'a>(r: &'a TestResponse, status: u16, code: &str) -> &'a Value {
    let b = r.expect_problem(status, code);
    let reason = r.status.canonical_reason().unwrap();
    assert_eq!(
        b["type"],
        format!(
            "https://docs.ecosire.com/errors/{}",
            code.to_ascii_lowercase().replace('_', "-")
        ),
        "{b}"
    );
    assert_eq!(b["title"], reason, "{b}");
    assert_eq!(b["error"], reason, "{b}");
    assert_eq!(b["status"], status, "{b}");
    assert_eq!(b["statusCode"], status, "{b}");
    assert_eq!(b["code"], code, "{b}");
    let detail = b["detail"].as_str().expect("detail is a string");
    assert!(!detail.is_empty(), "{b}");
    assert_eq!(b["message"], detail, "{b}");
    let rid = r.header("x-request-id").expect("X-Request-Id on errors");
    if let Some(body_rid) = b.get("request_id") {
        assert_eq!(body_rid, rid, "{b}");
    }
    b
}

/// A problem without field errors: `details` must be absent.
#[track_caller]
fn plain_problem<'a>(r: &'a TestResponse, status: u16, code: &str) -> &'a Value {
    let b = problem(r, status, code);
    assert!(b.get("details").is_none(), "no details expected: {b}");
    b
}

/// A 422 whose `details` name exactly these fields.
#[track_caller]
fn field_problem(r: &TestResponse, want: &[&str]) {
    let b = problem(r, 422, "VALIDATION_FAILED");
    let details = b["details"].as_array().expect("details on a 422");
    let got: Vec<&str> = details
        .iter()
        .map(|d| {
            assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
            d["field"].as_str().expect("field")
        })
        .collect();
    assert_eq!(got, want, "{b}");
}

fn raw(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(path)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::new().await;
    for body in [
        "{",
        "{\"name\": }",
        "not json",
        "{\"name\": \"x\"} trailing",
    ] {
        let req = raw(Method::POST, "/api/products")
            .header("authorization", bearer(&app.admin_token))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let r = app.send(req).await;
        plain_problem(&r, 400, "MALFORMED_JSON");
    }
    // Public endpoints too.
    let req = raw(Method::POST, "/api/licenses/validate")
        .header("content-type", "application/json")
        .body(Body::from("{\"key\": "))
        .unwrap();
    plain_problem(&app.send(req).await, 400, "MALFORMED_JSON");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = TestApp::new().await;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut b =
            raw(Method::POST, "/api/products").header("authorization", bearer(&app.admin_token));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let r = app
            .send(b.body(Body::from("{\"name\": \"x\"}")).unwrap())
            .await;
        assert_eq!(r.status.as_u16(), 415, "{ct:?}: {}", r.text);
        plain_problem(&r, 415, r.body["code"].as_str().unwrap_or("?"));
    }
    // `application/json; charset=utf-8` is JSON.
    let req = raw(Method::POST, "/api/products")
        .header("authorization", bearer(&app.admin_token))
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from("{\"name\": \"x\"}"))
        .unwrap();
    app.send(req).await.expect(201);
    let req = raw(Method::POST, "/api/licenses/validate")
        .header("content-type", "text/plain")
        .body(Body::from("{\"key\": \"ECOS\"}"))
        .unwrap();
    assert_eq!(app.send(req).await.status.as_u16(), 415);
}

#[tokio::test]
async fn missing_field_is_422_naming_it() {
    let app = TestApp::new().await;
    let r = app
        .admin_post("/api/products", json!({"max_activations": 2}))
        .await;
    field_problem(&r, &["name"]);
    let r = app.admin_post("/api/licenses", json!({})).await;
    field_problem(&r, &["product_id"]);
    let r = app
        .post("/api/licenses/validate", json!({"fingerprint": "x"}), None)
        .await;
    field_problem(&r, &["key"]);
    let r = app
        .post("/api/auth/login", json!({"email": "a@b.io"}), None)
        .await;
    field_problem(&r, &["password"]);
}

#[tokio::test]
async fn wrong_type_is_422_naming_the_field() {
    let app = TestApp::new().await;
    let r = app
        .admin_post(
            "/api/products",
            json!({"name": "X", "max_activations": "x"}),
        )
        .await;
    field_problem(&r, &["max_activations"]);
    let r = app.admin_post("/api/products", json!({"name": 5})).await;
    field_problem(&r, &["name"]);
    let r = app
        .admin_post(
            "/api/products",
            json!({"name": "X", "entitlements": ["ok", 3]}),
        )
        .await;
    let b = problem(&r, 422, "VALIDATION_FAILED");
    assert!(
        b["details"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("entitlements"),
        "{b}"
    );
    // A body that is not an object at all.
    let r = app.admin_post("/api/products", json!([1, 2])).await;
    problem(&r, 422, "VALIDATION_FAILED");
    // Nothing was created.
    let list = app.get("/api/products", None).await;
    assert_eq!(list.expect(200)["data"], json!([]));
}

#[tokio::test]
async fn unknown_route_is_404() {
    let app = TestApp::new().await;
    for path in ["/api/nope", "/nope", "/api/licenses/x/y/z"] {
        let r = app.get(path, None).await;
        plain_problem(&r, 404, "NOT_FOUND");
    }
    let r = app.post("/api/nope", json!({}), None).await;
    plain_problem(&r, 404, "NOT_FOUND");
}

#[tokio::test]
async fn wrong_method_is_405() {
    let app = TestApp::new().await;
    let r = app
        .call(Method::PUT, "/api/licenses/validate", Some(json!({})), None)
        .await;
    assert_eq!(r.status.as_u16(), 405, "{}", r.text);
    plain_problem(&r, 405, r.body["code"].as_str().unwrap_or("?"));
    // RFC 9110 §15.5.6: a 405 names the methods the resource supports.
    let allow = r.header("allow").expect("Allow header on a 405");
    assert!(allow.contains("POST"), "Allow: {allow}");
    let r = app.get("/api/licenses/validate", None).await;
    assert_eq!(r.status.as_u16(), 405, "{}", r.text);
    let r = app
        .call(
            Method::DELETE,
            "/api/products",
            None,
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(r.status.as_u16(), 405, "{}", r.text);
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = TestApp::new().await;
    let big = json!({"name": "x".repeat(70 * 1024)}).to_string();
    assert!(big.len() > 64 * 1024);
    let req = raw(Method::POST, "/api/products")
        .header("authorization", bearer(&app.admin_token))
        .header("content-type", "application/json")
        .body(Body::from(big))
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.status.as_u16(), 413, "{}", r.text);
    plain_problem(&r, 413, r.body["code"].as_str().unwrap_or("?"));

    // Public hot path too.
    let big = json!({"key": "ECOS", "nonce": "n".repeat(65 * 1024)}).to_string();
    let req = raw(Method::POST, "/api/licenses/validate")
        .header("content-type", "application/json")
        .body(Body::from(big))
        .unwrap();
    assert_eq!(app.send(req).await.status.as_u16(), 413);

    // Just under the limit is parsed (and then judged on its merits).
    let ok = json!({"name": "x".repeat(60 * 1024)}).to_string();
    let req = raw(Method::POST, "/api/products")
        .header("authorization", bearer(&app.admin_token))
        .header("content-type", "application/json")
        .body(Body::from(ok))
        .unwrap();
    field_problem(&app.send(req).await, &["name"]);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::new().await;
    let mut seen = HashSet::new();
    let responses = vec![
        app.get("/api/health", None).await,
        app.get("/api/products", None).await,
        app.admin_post("/api/products", json!({"name": "Rid"}))
            .await,
        app.get("/api/nope", None).await,
        app.get("/api/users", None).await,
        app.admin_post("/api/products", json!({})).await,
        app.call(Method::PUT, "/api/licenses/validate", None, None)
            .await,
        app.post(
            "/api/auth/login",
            json!({"email": "x@y.io", "password": "wrong-password"}),
            None,
        )
        .await,
        app.send(
            raw(Method::POST, "/api/licenses/validate")
                .header("content-type", "text/plain")
                .body(Body::from("x"))
                .unwrap(),
        )
        .await,
        app.send(
            raw(Method::POST, "/api/licenses/validate")
                .header("content-type", "application/json")
                .body(Body::from(vec![b' '; 65 * 1024]))
                .unwrap(),
        )
        .await,
    ];
    for r in &responses {
        let rid = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-Id on {}: {}", r.status, r.text));
        assert!(!rid.is_empty());
        assert!(seen.insert(rid.to_string()), "request id reused: {rid}");
        if r.status.as_u16() >= 400 {
            assert_eq!(r.body["request_id"], rid, "{}", r.text);
        }
    }
}

#[tokio::test]
async fn request_id_is_echoed() {
    let app = TestApp::new().await;
    let cases: Vec<(Method, &str, Option<&str>, u16)> = vec![
        (Method::GET, "/api/health", None, 200),
        (Method::GET, "/api/products", None, 200),
        (Method::GET, "/api/nope", None, 404),
        (Method::GET, "/api/users", None, 401),
        (Method::POST, "/api/products", Some("{"), 400),
        (Method::PUT, "/api/licenses/validate", None, 405),
    ];
    for (i, (method, path, body, status)) in cases.into_iter().enumerate() {
        let rid = format!("client-req-{i}.abc_XYZ");
        let mut b = raw(method, path).header("x-request-id", &rid);
        if body.is_some() {
            b = b
                .header("content-type", "application/json")
                .header("authorization", bearer(&app.admin_token));
        }
        let req = b.body(Body::from(body.unwrap_or("").to_string())).unwrap();
        let r = app.send(req).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.text);
        assert_eq!(r.header("x-request-id"), Some(rid.as_str()), "{path}");
        if status >= 400 {
            assert_eq!(r.body["request_id"], rid.as_str(), "{}", r.text);
        }
    }
}

#[tokio::test]
async fn unusable_request_ids_are_replaced() {
    let app = TestApp::new().await;
    let long = "x".repeat(129);
    let bad: Vec<axum::http::HeaderValue> = vec![
        axum::http::HeaderValue::from_static("has space"),
        axum::http::HeaderValue::from_static(""),
        axum::http::HeaderValue::from_str(&long).unwrap(),
        axum::http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
    ];
    for v in bad {
        let req = raw(Method::GET, "/api/nope")
            .header("x-request-id", v.clone())
            .body(Body::empty())
            .unwrap();
        let r = app.send(req).await;
        let rid = r.header("x-request-id").expect("a request id");
        assert!(!rid.is_empty());
        assert_ne!(rid.as_bytes(), v.as_bytes());
        assert_eq!(r.body["request_id"], rid);
    }
    // 128 visible characters are kept.
    let max = "y".repeat(128);
    let req = raw(Method::GET, "/api/health")
        .header("x-request-id", &max)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.send(req).await.header("x-request-id"),
        Some(max.as_str())
    );
}

#[tokio::test]
async fn authentication_comes_before_the_body() {
    let app = TestApp::new().await;
    let (_, customer) = app.customer("ann@example.com").await;
    for (token, status, code) in [
        (None, 401, "UNAUTHENTICATED"),
        (Some(customer.as_str()), 403, "FORBIDDEN"),
    ] {
        let mut b = raw(Method::POST, "/api/products").header("content-type", "application/json");
        if let Some(t) = token {
            b = b.header("authorization", bearer(t));
        }
        let r = app.send(b.body(Body::from("{")).unwrap()).await;
        plain_problem(&r, status, code);
    }
}

// ---------------------------------------------------------------- auth: login and sessions

/// The attributes of a Set-Cookie value, lower-cased, without the name=value pair.
fn cookie_attrs(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

fn set_cookie(r: &TestResponse) -> String {
    let all: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with(&format!("{COOKIE}=")))
        .collect();
    assert_eq!(all.len(), 1, "one {COOKIE} cookie: {all:?}");
    all[0].to_string()
}

async fn login(app: &TestApp, email: &str, password: &str) -> TestResponse {
    app.post(
        "/api/auth/login",
        json!({"email": email, "password": password}),
        None,
    )
    .await
}

#[tokio::test]
async fn login_returns_token_user_and_cookie() {
    let app = TestApp::new().await;
    let r = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let b = r.expect(200).clone();
    let token = b["token"].as_str().expect("token");
    assert_eq!(token.split('.').count(), 3, "a compact JWS: {token}");
    let user = &b["user"];
    assert!(user["id"].as_str().unwrap().starts_with("usr_"), "{b}");
    assert_eq!(user["email"], ADMIN_EMAIL);
    assert_eq!(user["role"], "admin");
    assert!(user["name"].is_string(), "{b}");
    assert!(user.get("password_hash").is_none(), "{b}");

    let c = set_cookie(&r);
    assert!(c.starts_with(&format!("{COOKIE}={token};")), "{c}");
    let attrs = cookie_attrs(&c);
    for want in ["httponly", "samesite=lax", "path=/"] {
        assert!(attrs.iter().any(|a| a == want), "{want} missing: {c}");
    }
    assert!(
        !attrs.iter().any(|a| a == "secure"),
        "cookie_secure is off: {c}"
    );

    // Email is matched case-insensitively and trimmed.
    let r = login(&app, "  ADMIN@Test.Local ", ADMIN_PASSWORD).await;
    assert_eq!(r.expect(200)["user"]["email"], ADMIN_EMAIL);

    // A customer logs in as a customer.
    let (uid, _) = app.customer("ann@example.com").await;
    let r = login(&app, "ann@example.com", "customer-pass-1").await;
    let u = &r.expect(200)["user"];
    assert_eq!(u["id"], uid.as_str());
    assert_eq!(u["role"], "customer");
}

#[tokio::test]
async fn secure_cookie_when_configured() {
    let app = TestApp::with_config(|c| c.cookie_secure = true).await;
    let r = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    r.expect(200);
    let c = set_cookie(&r);
    let attrs = cookie_attrs(&c);
    for want in ["httponly", "samesite=lax", "path=/", "secure"] {
        assert!(attrs.iter().any(|a| a == want), "{want} missing: {c}");
    }
}

#[tokio::test]
async fn bad_credentials_are_indistinguishable() {
    let app = TestApp::new().await;
    app.customer("ann@example.com").await;
    let wrong_pw = login(&app, "ann@example.com", "wrong-password-1").await;
    let unknown = login(&app, "nobody@example.com", "wrong-password-1").await;
    let wrong_admin = login(&app, ADMIN_EMAIL, "admin-password-124").await;
    let not_email = login(&app, "not-an-email", "whatever-123").await;
    // A customer created by granting a license to an email has no password yet.
    let p = app.product(json!({})).await;
    app.license(
        p["id"].as_str().unwrap(),
        json!({"email": "nopass@example.com"}),
    )
    .await;
    let no_password = login(&app, "nopass@example.com", "anything-at-all").await;
    let empty_password = login(&app, "nopass@example.com", "").await;
    let strip = |r: &TestResponse| {
        let mut b = plain_problem(r, 401, "INVALID_CREDENTIALS").clone();
        b.as_object_mut().unwrap().remove("request_id");
        b
    };
    let reference = strip(&wrong_pw);
    for r in [
        &unknown,
        &wrong_admin,
        &not_email,
        &no_password,
        &empty_password,
    ] {
        assert_eq!(strip(r), reference);
        assert!(
            r.headers.get("set-cookie").is_none(),
            "no cookie on failure"
        );
    }
    assert!(wrong_pw.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn me_with_bearer_token() {
    let app = TestApp::new().await;
    let (uid, token) = app.customer("ann@example.com").await;
    let r = app.get("/api/auth/me", Some(&token)).await;
    let u = &r.expect(200)["user"];
    assert_eq!(u["id"], uid.as_str());
    assert_eq!(u["email"], "ann@example.com");
    assert_eq!(u["role"], "customer");
    assert!(u.get("password_hash").is_none());

    let r = app.get("/api/auth/me", Some(&app.admin_token)).await;
    assert_eq!(r.expect(200)["user"]["role"], "admin");

    let r = app.get("/api/auth/me", None).await;
    plain_problem(&r, 401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn cookie_alone_authenticates() {
    let app = TestApp::new().await;
    let r = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    r.expect(200);
    let c = set_cookie(&r);
    let pair = c.split(';').next().unwrap().to_string();
    let req = raw(Method::GET, "/api/auth/me")
        .header("cookie", format!("theme=dark; {pair}; other=1"))
        .body(Body::empty())
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.expect(200)["user"]["email"], ADMIN_EMAIL);

    // A cookie with a bad value is a 401, not an anonymous request.
    let req = raw(Method::GET, "/api/auth/me")
        .header("cookie", format!("{COOKIE}=garbage"))
        .body(Body::empty())
        .unwrap();
    plain_problem(&app.send(req).await, 401, "UNAUTHENTICATED");
}

fn cookie_post(token: &str, path: &str) -> axum::http::request::Builder {
    raw(Method::POST, path)
        .header("cookie", format!("{COOKIE}={token}"))
        .header("content-type", "application/json")
}

#[tokio::test]
async fn cookie_writes_need_csrf_proof() {
    let app = TestApp::new().await;
    let token = app.admin_token.clone();
    let body = json!({"name": "Csrf"}).to_string();

    // No Origin, no X-Requested-With.
    let req = cookie_post(&token, "/api/products")
        .body(Body::from(body.clone()))
        .unwrap();
    plain_problem(&app.send(req).await, 403, "CSRF_REJECTED");
    // An origin that is not configured.
    let req = cookie_post(&token, "/api/products")
        .header("origin", "https://evil.example")
        .body(Body::from(body.clone()))
        .unwrap();
    plain_problem(&app.send(req).await, 403, "CSRF_REJECTED");
    // PATCH and DELETE are state-changing too.
    let p = app.product(json!({"name": "Target"})).await;
    let path = format!("/api/products/{}", p["id"].as_str().unwrap());
    for method in [Method::PATCH, Method::DELETE] {
        let req = raw(method.clone(), &path)
            .header("cookie", format!("{COOKIE}={token}"))
            .header("content-type", "application/json")
            .body(Body::from("{\"name\": \"Hijacked\"}"))
            .unwrap();
        plain_problem(&app.send(req).await, 403, "CSRF_REJECTED");
    }
    let got = app.get(&path, None).await;
    assert_eq!(got.expect(200)["name"], "Target");
    // Logout by cookie is a write as well.
    let req = raw(Method::POST, "/api/auth/logout")
        .header("cookie", format!("{COOKIE}={token}"))
        .body(Body::empty())
        .unwrap();
    plain_problem(&app.send(req).await, 403, "CSRF_REJECTED");
    app.get("/api/auth/me", Some(&token)).await.expect(200);

    // With X-Requested-With it goes through.
    let req = cookie_post(&token, "/api/products")
        .header("x-requested-with", "x")
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(app.send(req).await.expect(201)["name"], "Csrf");

    // A GET by cookie needs nothing extra.
    let req = raw(Method::GET, "/api/users")
        .header("cookie", format!("{COOKIE}={token}"))
        .body(Body::empty())
        .unwrap();
    app.send(req).await.expect(200);

    // A Bearer token is not subject to the check, whatever the Origin.
    let req = raw(Method::POST, "/api/products")
        .header("authorization", bearer(&token))
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .body(Body::from(json!({"name": "Bearer"}).to_string()))
        .unwrap();
    app.send(req).await.expect(201);
    app.admin_post("/api/products", json!({"name": "Bearer 2"}))
        .await
        .expect(201);
}

#[tokio::test]
async fn cookie_writes_from_an_allowed_origin() {
    let app =
        TestApp::with_config(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let token = app.admin_token.clone();
    let req = cookie_post(&token, "/api/products")
        .header("origin", "https://app.example.com")
        .body(Body::from(json!({"name": "Origin ok"}).to_string()))
        .unwrap();
    app.send(req).await.expect(201);
    for bad in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "null",
    ] {
        let req = cookie_post(&token, "/api/products")
            .header("origin", bad)
            .body(Body::from(json!({"name": "Origin bad"}).to_string()))
            .unwrap();
        plain_problem(&app.send(req).await, 403, "CSRF_REJECTED");
    }
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = TestApp::new().await;
    let (_, token) = app.customer("ann@example.com").await;
    let other = app.login("ann@example.com", "customer-pass-1").await;
    assert_ne!(token, other, "each login is its own session");

    let r = app
        .call(Method::POST, "/api/auth/logout", None, Some(&token))
        .await;
    r.expect(204);
    // The cookie is cleared.
    let c = set_cookie(&r);
    assert!(c.starts_with(&format!("{COOKIE}=;")), "{c}");
    assert!(cookie_attrs(&c).iter().any(|a| a == "max-age=0"), "{c}");

    plain_problem(
        &app.get("/api/auth/me", Some(&token)).await,
        401,
        "UNAUTHENTICATED",
    );
    plain_problem(
        &app.call(Method::POST, "/api/auth/logout", None, Some(&token))
            .await,
        401,
        "UNAUTHENTICATED",
    );
    // Only that session ended.
    app.get("/api/auth/me", Some(&other)).await.expect(200);

    // Logout by cookie (with CSRF proof) ends the cookie's session.
    let req = raw(Method::POST, "/api/auth/logout")
        .header("cookie", format!("{COOKIE}={other}"))
        .header("x-requested-with", "XMLHttpRequest")
        .body(Body::empty())
        .unwrap();
    app.send(req).await.expect(204);
    let req = raw(Method::GET, "/api/auth/me")
        .header("cookie", format!("{COOKIE}={other}"))
        .body(Body::empty())
        .unwrap();
    plain_problem(&app.send(req).await, 401, "UNAUTHENTICATED");

    plain_problem(
        &app.call(Method::POST, "/api/auth/logout", None, None).await,
        401,
        "UNAUTHENTICATED",
    );
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn flip(c: u8) -> char {
    if c == b'A' { 'B' } else { 'A' }
}

#[tokio::test]
async fn forged_tokens_are_401() {
    let app = TestApp::new().await;
    let token = app.admin_token.clone();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let (h, p, s) = (parts[0], parts[1], parts[2]);

    // A flipped character in the middle of the signature.
    let mut sig = s.as_bytes().to_vec();
    let i = sig.len() / 2;
    sig[i] = flip(sig[i]) as u8;
    let tampered_sig = format!("{h}.{p}.{}", String::from_utf8(sig).unwrap());

    // A payload made to name another subject, with the original signature.
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    let (ann, ann_token) = app.customer("ann@example.com").await;
    claims["sub"] = json!(ann);
    let tampered_payload = format!("{h}.{}.{s}", b64(&claims));

    // `alg: none`, unsigned, and `alg: none` keeping the old signature.
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    let mut none = header.clone();
    none["alg"] = json!("none");
    let alg_none = format!("{}.{p}.", b64(&none));
    let alg_none_sig = format!("{}.{p}.{s}", b64(&none));
    // HS256 with the payload: algorithm confusion.
    let mut hs = header.clone();
    hs["alg"] = json!("HS256");
    let alg_hs = format!("{}.{p}.{s}", b64(&hs));

    for (what, bad) in [
        ("tampered signature", tampered_sig.as_str()),
        ("tampered payload", tampered_payload.as_str()),
        ("alg none", alg_none.as_str()),
        ("alg none with signature", alg_none_sig.as_str()),
        ("alg HS256", alg_hs.as_str()),
        ("garbage", "garbage"),
        ("two parts", "a.b"),
        ("empty parts", ".."),
        (
            "api-key lookalike",
            "ecos_live_0123456789abcdefghijABCDEFGHIJ01",
        ),
        (
            "customer token with a trailing char",
            format!("{ann_token}x").as_str(),
        ),
    ] {
        let r = app.get("/api/auth/me", Some(bad)).await;
        assert_eq!(r.status.as_u16(), 401, "{what}: {}", r.text);
        plain_problem(&r, 401, "UNAUTHENTICATED");
        let r = app.get("/api/users", Some(bad)).await;
        plain_problem(&r, 401, "UNAUTHENTICATED");
    }
    // The untouched token still works, so the failures above are the forgeries'.
    app.get("/api/auth/me", Some(&token)).await.expect(200);

    // An empty or scheme-less Authorization header is not a credential.
    for value in [
        "Bearer",
        "Bearer ",
        "Basic YWRtaW46cGFzcw==",
        token.as_str(),
    ] {
        let req = raw(Method::GET, "/api/auth/me")
            .header("authorization", value)
            .body(Body::empty())
            .unwrap();
        let r = app.send(req).await;
        plain_problem(&r, 401, "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn validly_signed_but_wrong_tokens_are_401() {
    use ecosire::auth::{SESSION_AUDIENCE, SessionClaims};
    let app = TestApp::new().await;
    let token = app.admin_token.clone();
    let p = token.split('.').nth(1).unwrap();
    let claims: SessionClaims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    let now = claims.iat;
    let remake = |f: fn(&mut SessionClaims, i64)| {
        let mut c = SessionClaims {
            iss: claims.iss.clone(),
            aud: claims.aud.clone(),
            sub: claims.sub.clone(),
            sid: claims.sid.clone(),
            iat: claims.iat,
            exp: claims.exp,
        };
        f(&mut c, now);
        c
    };
    // Re-signing the same claims with the session key is a working token (the harness is sound).
    let same = app.state.keys.session.sign(&remake(|_, _| {}));
    app.get("/api/auth/me", Some(&same)).await.expect(200);

    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            app.state.keys.session.sign(&remake(|c, now| {
                c.iat = now - 7200;
                c.exp = now - 3600;
            })),
        ),
        (
            "wrong audience",
            app.state
                .keys
                .session
                .sign(&remake(|c, _| c.aud = "ecosire:license".into())),
        ),
        (
            "wrong issuer",
            app.state
                .keys
                .session
                .sign(&remake(|c, _| c.iss = "someone-else".into())),
        ),
        (
            "unknown session",
            app.state
                .keys
                .session
                .sign(&remake(|c, _| c.sid = "x".repeat(32))),
        ),
        (
            "subject swapped",
            app.state
                .keys
                .session
                .sign(&remake(|c, _| c.sub = "usr_someone".into())),
        ),
        (
            "signed with the license key",
            app.state.keys.signer().sign(&remake(|_, _| {})),
        ),
    ];
    assert_eq!(claims.aud, SESSION_AUDIENCE);
    for (what, bad) in cases {
        let r = app.get("/api/auth/me", Some(&bad)).await;
        assert_eq!(r.status.as_u16(), 401, "{what}: {}", r.text);
        plain_problem(&r, 401, "UNAUTHENTICATED");
    }
}
