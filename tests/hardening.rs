//! The findings of the security review (issue 9): each test reproduces one and shows it closed.
mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use common::{TestApp, TestResponse};
use ecosire::config::Rule;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads from `stream` until the server closes it (EOF or reset), failing after `bound`.
async fn closed_within(stream: &mut tokio::net::TcpStream, bound: Duration) -> Vec<u8> {
    let mut got = vec![];
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read)
        .await
        .expect("the server kept the connection open past its timeout");
    got
}

// --- 2. Slow clients -------------------------------------------------------------------------

#[tokio::test]
async fn half_a_request_line_is_closed_at_the_header_timeout() {
    let app = TestApp::with_config(|c| c.header_timeout = Duration::from_secs(1)).await;
    let server = common::spawn(app.state.clone()).await;
    let mut s = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(b"GET /api/hea").await.unwrap();
    let started = std::time::Instant::now();
    closed_within(&mut s, Duration::from_secs(10)).await;
    // Closed by the header timeout, not by the idle one (60 s by default).
    assert!(started.elapsed() < Duration::from_secs(10));
    // The server still serves others.
    let ok = reqwest::get(format!("{}/api/health", server.base))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let app = TestApp::with_config(|c| {
        c.idle_timeout = Duration::from_secs(1);
        c.header_timeout = Duration::from_secs(30);
    })
    .await;
    let server = common::spawn(app.state.clone()).await;
    let mut s = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    // One whole request on a keep-alive connection is answered...
    s.write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // ...then the quiet connection is closed by the idle timeout.
    closed_within(&mut s, Duration::from_secs(10)).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let app = TestApp::with_config(|c| c.request_timeout = Duration::from_millis(500)).await;
    // A body stream that sends a first chunk and then nothing, forever.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
        axum::body::Bytes::from_static(b"{\"key\": \"ECOS-"),
    )])
    .chain(futures_util::stream::pending());
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/licenses/validate")
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), app.send(req))
        .await
        .expect("the request timeout answers");
    r.expect_problem(408, "REQUEST_TIMEOUT");
    assert_eq!(r.header("connection"), Some("close"));
}

use futures_util::StreamExt;

#[tokio::test]
async fn past_the_connection_cap_a_newcomer_waits_for_a_slot() {
    let app = TestApp::with_config(|c| {
        c.max_connections = 1;
        c.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let server = common::spawn(app.state.clone()).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    // The only slot is held by a connection that says nothing...
    let mut holder = tokio::net::TcpStream::connect(&addr).await.unwrap();
    holder.write_all(b"").await.unwrap();
    // ...so a second client is answered only once the idle timeout has freed it.
    let (tx, mut order) = tokio::sync::mpsc::unbounded_channel::<&str>();
    let tx2 = tx.clone();
    let watch_holder = tokio::spawn(async move {
        closed_within(&mut holder, Duration::from_secs(10)).await;
        tx.send("holder closed").unwrap();
    });
    let base = server.base.clone();
    let newcomer = tokio::spawn(async move {
        let r = reqwest::get(format!("{base}/api/health")).await.unwrap();
        assert_eq!(r.status(), 200);
        tx2.send("newcomer answered").unwrap();
    });
    watch_holder.await.unwrap();
    newcomer.await.unwrap();
    assert_eq!(order.recv().await, Some("holder closed"));
    assert_eq!(order.recv().await, Some("newcomer answered"));
    server.stop().await.unwrap();
}

// --- 3. Ownership by email follows only trusted addresses ------------------------------------

async fn register(app: &TestApp, email: &str) -> String {
    app.post(
        "/api/auth/register",
        json!({"email": email, "password": "squatter-pass-1", "name": "Squatter"}),
        None,
    )
    .await
    .expect(201);
    app.login(email, "squatter-pass-1").await
}

#[tokio::test]
async fn a_self_registered_account_does_not_collect_what_is_granted_to_its_address() {
    let app = TestApp::new().await;
    // Someone registers carol@… before Carol buys anything.
    let squatter = register(&app, "carol@example.com").await;
    let p = app.product(json!({})).await;
    let lic = app
        .license(
            p["id"].as_str().unwrap(),
            json!({"email": "carol@example.com"}),
        )
        .await;
    assert_eq!(lic["user_id"], Value::Null, "{lic}");
    let mine = app.get("/api/licenses", Some(&squatter)).await;
    assert_eq!(mine.expect(200)["data"], json!([]), "{}", mine.text);
    app.get(
        &format!("/api/licenses/{}", lic["id"].as_str().unwrap()),
        Some(&squatter),
    )
    .await
    .expect_problem(404, "NOT_FOUND");

    // An account the server created for an address does receive its grants.
    let (dave, dave_token) = app.customer("dave@example.com").await;
    let lic = app
        .license(
            p["id"].as_str().unwrap(),
            json!({"email": "dave@example.com"}),
        )
        .await;
    assert_eq!(lic["user_id"], dave.as_str());
    let mine = app.get("/api/licenses", Some(&dave_token)).await;
    assert_eq!(mine.expect(200)["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_self_registered_account_cannot_read_or_answer_tickets_filed_under_its_address() {
    let app = TestApp::new().await;
    let squatter = register(&app, "erin@example.com").await;
    let t = app
        .post(
            "/api/support",
            json!({"email": "erin@example.com", "subject": "Refund", "message": "my card 4242"}),
            None,
        )
        .await;
    let id = t.expect(201)["id"].as_str().unwrap().to_string();
    let list = app.get("/api/support/tickets", Some(&squatter)).await;
    assert_eq!(list.expect(200)["data"], json!([]), "{}", list.text);
    app.get(&format!("/api/support/tickets/{id}"), Some(&squatter))
        .await
        .expect_problem(404, "NOT_FOUND");
    app.post(
        &format!("/api/support/tickets/{id}/replies"),
        json!({"message": "as Erin"}),
        Some(&squatter),
    )
    .await
    .expect_problem(404, "NOT_FOUND");

    // A server-created account for the address sees the ticket.
    let (_, frank) = app.customer("frank@example.com").await;
    let t = app
        .post(
            "/api/support",
            json!({"email": "frank@example.com", "subject": "Hi", "message": "hello"}),
            None,
        )
        .await;
    let id = t.expect(201)["id"].as_str().unwrap().to_string();
    app.get(&format!("/api/support/tickets/{id}"), Some(&frank))
        .await
        .expect(200);
}

// --- 6. U+0000 in any text input -------------------------------------------------------------

#[tokio::test]
async fn nul_characters_are_refused_with_422_naming_the_field_or_404_in_paths() {
    let app = TestApp::new().await;
    let (_, lic) = app.product_and_license(json!({}), json!({})).await;
    let key = lic["key"].as_str().unwrap();
    let nul = "a\u{0}b";
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/api/licenses/activate",
            json!({"key": key, "fingerprint": nul}),
            "fingerprint",
        ),
        (
            "/api/licenses/heartbeat",
            json!({"key": key, "fingerprint": nul}),
            "fingerprint",
        ),
        (
            "/api/licenses/deactivate",
            json!({"key": key, "fingerprint": nul}),
            "fingerprint",
        ),
        (
            "/api/licenses/validate",
            json!({"key": key, "entitlements": ["pro", nul]}),
            "entitlements[1]",
        ),
        (
            "/api/support",
            json!({"email": "a@b.io", "subject": nul, "message": "m"}),
            "subject",
        ),
        (
            "/api/crm/capture",
            json!({"email": "a@b.io", "company": nul}),
            "company",
        ),
        (
            "/api/auth/register",
            json!({"email": "n@b.io", "password": "password-1", "name": nul}),
            "name",
        ),
    ];
    for (path, body, field) in cases {
        let r = app.post(path, body, None).await;
        r.expect_problem(422, "VALIDATION_FAILED");
        assert_eq!(
            common::fields(&r.body),
            vec![field.to_string()],
            "{path}: {}",
            r.text
        );
    }
    let r = app
        .admin_post(
            "/api/licenses",
            json!({"product_id": lic["product_id"], "metadata": {"note": nul}}),
        )
        .await;
    r.expect_problem(422, "VALIDATION_FAILED");
    assert_eq!(common::fields(&r.body), vec!["metadata.note".to_string()]);
    app.admin_get("/api/products/%00")
        .await
        .expect_problem(404, "NOT_FOUND");
    app.admin_get("/api/licenses/lic_%00x")
        .await
        .expect_problem(404, "NOT_FOUND");
    let r = app.admin_get("/api/contacts?q=%00").await;
    r.expect_problem(422, "VALIDATION_FAILED");
    assert_eq!(common::fields(&r.body), vec!["q".to_string()]);
    let r = app.admin_get("/api/licenses?status=active%00").await;
    r.expect_problem(422, "VALIDATION_FAILED");
    // A backslash followed by u0000 as text is not a NUL and is stored as sent.
    let r = app
        .post(
            "/api/support",
            json!({"email": "a@b.io", "subject": "\\u0000 literally", "message": "m"}),
            None,
        )
        .await;
    r.expect(201);
}

// --- 7. Metric labels come from fixed sets ---------------------------------------------------

#[tokio::test]
async fn invented_methods_do_not_add_metric_series() {
    let app = TestApp::new().await;
    for i in 0..20 {
        let m = Method::from_bytes(format!("INVENTED{i}{}", "X".repeat(200)).as_bytes()).unwrap();
        let req = Request::builder()
            .method(m)
            .uri("/api/health")
            .body(Body::empty())
            .unwrap();
        app.send(req).await;
    }
    let text = app.get("/metrics", None).await.text;
    assert!(
        !text.contains("INVENTED"),
        "a client-chosen method became a label"
    );
    assert!(
        text.contains("method=\"other\""),
        "unknown methods are counted as other"
    );
}

// --- 9. A refused validate does not read the database ----------------------------------------

#[tokio::test]
async fn refused_validations_never_reach_the_database() {
    let app = TestApp::with_config(|c| {
        c.rate_limits = true;
        c.limits.rules.insert("login".into(), Rule::per_minute(100));
        c.limits
            .rules
            .insert("validate".into(), Rule::per_minute(5));
    })
    .await;
    let misses = || {
        app.state
            .licenses
            .misses
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // A known key past its allowance.
    let (_, lic) = app.product_and_license(json!({}), json!({})).await;
    let key = lic["key"].as_str().unwrap();
    for _ in 0..5 {
        app.validate(json!({"key": key})).await;
    }
    let before = misses();
    for _ in 0..50 {
        app.post("/api/licenses/validate", json!({"key": key}), None)
            .await
            .expect_problem(429, "RATE_LIMITED");
    }
    assert_eq!(
        misses(),
        before,
        "refused known-key requests looked the key up"
    );

    // Random unknown keys from one client, past the IP's allowance: no lookups either.
    let random_key = || {
        let k = ecosire::licensing::key::LicenseKey::generate();
        k.as_str().to_string()
    };
    let mut refused = 0;
    for _ in 0..5 {
        let r = app
            .post("/api/licenses/validate", json!({"key": random_key()}), None)
            .await;
        if r.status == 429 {
            refused += 1;
        }
    }
    assert_eq!(refused, 0, "the first five unknown keys are answered");
    let before = misses();
    for _ in 0..50 {
        app.post("/api/licenses/validate", json!({"key": random_key()}), None)
            .await
            .expect_problem(429, "RATE_LIMITED");
    }
    assert_eq!(
        misses(),
        before,
        "refused unknown-key requests looked keys up"
    );
}

// --- 10. Rotation ----------------------------------------------------------------------------

#[tokio::test]
async fn a_key_is_rotated_once_even_when_rotations_race() {
    let app = TestApp::new().await;
    let created = app
        .admin_post(
            "/api/api-keys",
            json!({"name": "ci", "scope": "read-write"}),
        )
        .await;
    let id = created.expect(201)["id"].as_str().unwrap().to_string();
    let path = format!("/api/api-keys/{id}/rotate");
    let answers =
        futures_util::future::join_all((0..8).map(|_| app.admin_post(&path, json!({})))).await;
    let ok: Vec<&TestResponse> = answers.iter().filter(|r| r.status == 201).collect();
    assert_eq!(ok.len(), 1, "{answers:?}");
    for r in answers.iter().filter(|r| r.status != 201) {
        r.expect_problem(409, "API_KEY_ROTATED");
    }
    // Rotating the old key again is refused; its successor rotates.
    app.admin_post(&path, json!({}))
        .await
        .expect_problem(409, "API_KEY_ROTATED");
    let successor = ok[0].body["id"].as_str().unwrap();
    app.admin_post(&format!("/api/api-keys/{successor}/rotate"), json!({}))
        .await
        .expect(201);
    let live = app.admin_get("/api/api-keys?limit=100").await;
    let live: Vec<&Value> = live.expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "ci")
        .collect();
    assert_eq!(
        live.len(),
        3,
        "original, successor, its successor: {live:?}"
    );
}

// --- 14. Read-only keys may list keys --------------------------------------------------------

#[tokio::test]
async fn a_read_only_key_lists_api_keys_but_cannot_create_them() {
    let app = TestApp::new().await;
    let (_, customer) = app.customer("gina@example.com").await;
    let ro = app
        .post(
            "/api/api-keys",
            json!({"name": "dash", "scope": "read-only"}),
            Some(&customer),
        )
        .await;
    let ro = ro.expect(201)["key"].as_str().unwrap().to_string();
    let list = app.get("/api/api-keys", Some(&ro)).await;
    let data = list.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 1);
    assert!(data[0].get("key").is_none(), "listings show no secret");
    app.post(
        "/api/api-keys",
        json!({"name": "more", "scope": "read-only"}),
        Some(&ro),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
}

// --- 22, 23. Messages that say what to do ----------------------------------------------------

#[tokio::test]
async fn a_private_webhook_target_names_the_setting_that_allows_it() {
    let app = TestApp::new().await;
    let r = app
        .admin_post(
            "/api/webhook-endpoints",
            json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
        )
        .await;
    r.expect_problem(422, "VALIDATION_FAILED");
    assert!(
        r.text.contains("ECOSIRE_WEBHOOK_ALLOW_PRIVATE"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn renew_without_a_body_names_its_fields_and_revoked_is_409_as_documented() {
    let app = TestApp::new().await;
    let (_, lic) = app.product_and_license(json!({}), json!({})).await;
    let id = lic["id"].as_str().unwrap();
    let r = app
        .call(
            Method::POST,
            &format!("/api/licenses/{id}/renew"),
            None,
            Some(&app.admin_token.clone()),
        )
        .await;
    r.expect_problem(422, "VALIDATION_FAILED");
    assert_eq!(common::fields(&r.body), vec!["expires_at", "extend_days"]);

    app.admin_post(&format!("/api/licenses/{id}/revoke"), json!({}))
        .await
        .expect(200);
    app.admin_post(&format!("/api/licenses/{id}/reinstate"), json!({}))
        .await
        .expect_problem(409, "LICENSE_REVOKED");
    let docs = std::fs::read_to_string("docs/errors.md").unwrap();
    let heading = docs
        .lines()
        .find(|l| l.starts_with("### LICENSE_REVOKED"))
        .unwrap();
    assert!(heading.contains("409"), "errors.md: {heading}");
}
