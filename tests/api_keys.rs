mod common;

use std::collections::HashSet;

use axum::http::Method;
use common::ids;
use common::{ADMIN_EMAIL, TestApp, TestResponse};
use ecosire::auth::{ApiKeyToken, Environment};
use ecosire::timestamp::{Timestamp, now_ms};
use serde_json::{Value, json};
use sqlx::Row;

const HOUR_MS: i64 = 3_600_000;

/// `^ecos_(live|test)_[0-9A-Za-z]{32}$`
fn is_api_key(k: &str) -> bool {
    let Some(rest) = k
        .strip_prefix("ecos_live_")
        .or_else(|| k.strip_prefix("ecos_test_"))
    else {
        return false;
    };
    rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Creates an API key with `token` (a session or an admin-scoped key) and returns the answer.
async fn create_key(app: &TestApp, token: &str, body: Value) -> TestResponse {
    app.post("/api/api-keys", body, Some(token)).await
}

/// Creates a key that must succeed; returns (id, key).
async fn new_key(app: &TestApp, token: &str, scope: &str, env: &str) -> (String, String) {
    let r = create_key(
        app,
        token,
        json!({"name": format!("{scope} {env}"), "scope": scope, "environment": env}),
    )
    .await;
    let b = r.expect(201);
    (
        b["id"].as_str().unwrap().to_string(),
        b["key"].as_str().unwrap().to_string(),
    )
}

async fn me(app: &TestApp, token: &str) -> TestResponse {
    app.get("/api/auth/me", Some(token)).await
}

async fn admin_id(app: &TestApp) -> String {
    me(app, &app.admin_token).await.expect(200)["user"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A license of `user_id` with one activation: returns (license id, activation id).
async fn license_with_activation(app: &TestApp, user_id: &str) -> (String, String) {
    let p = app.product(json!({})).await;
    let l = app
        .license(p["id"].as_str().unwrap(), json!({"user_id": user_id}))
        .await;
    let a = app.activate(l["key"].as_str().unwrap(), "device-1").await;
    let act = a.expect(201)["activation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    (l["id"].as_str().unwrap().to_string(), act)
}

#[tokio::test]
async fn a_created_key_is_shown_once_works_and_is_stored_only_as_a_digest() {
    let app = TestApp::new().await;
    let (uid, token) = app.customer("keys@example.com").await;

    let r = create_key(
        &app,
        &token,
        json!({"name": "CI deploys", "scope": "read-write"}),
    )
    .await;
    let b = r.expect(201).clone();
    for field in [
        "id",
        "key",
        "prefix",
        "name",
        "scope",
        "environment",
        "expires_at",
        "created_at",
    ] {
        assert!(b.get(field).is_some(), "missing {field}: {b}");
    }
    let id = b["id"].as_str().unwrap().to_string();
    let key = b["key"].as_str().unwrap().to_string();
    let prefix = b["prefix"].as_str().unwrap();
    assert!(id.starts_with("key_") && id.len() == 4 + 26, "{id}");
    assert!(is_api_key(&key), "bad key shape: {key}");
    assert!(key.starts_with("ecos_live_"), "live is the default: {key}");
    assert!(
        key.starts_with(prefix) && prefix.len() < key.len(),
        "{prefix} vs {key}"
    );
    assert_eq!(b["name"], "CI deploys");
    assert_eq!(b["scope"], "read-write");
    assert_eq!(b["environment"], "live");
    assert!(b["expires_at"].is_null());
    assert!(b["created_at"].is_string());

    // The key authenticates as its owner.
    let m = me(&app, &key).await;
    assert_eq!(m.expect(200)["user"]["id"], uid.as_str());

    // The secret is never shown again.
    let secret = &key["ecos_live_".len()..];
    let list = app.get("/api/api-keys", Some(&token)).await;
    let listed = list.expect(200);
    assert_eq!(ids(listed), vec![id.clone()]);
    assert_eq!(listed["data"][0]["prefix"], prefix);
    assert!(listed["data"][0].get("key").is_none(), "{}", list.text);
    assert!(!list.text.contains(secret), "{}", list.text);
    let one = app.get(&format!("/api/api-keys/{id}"), Some(&token)).await;
    one.expect(200);
    assert_eq!(one.body["id"], id.as_str());
    assert!(one.body.get("key").is_none(), "{}", one.text);
    assert!(!one.text.contains(secret), "{}", one.text);

    // The database holds a digest, not the key.
    let rows = sqlx::query(
        "SELECT id, user_id, name, scope, environment, prefix, key_digest, rotated_from FROM api_keys",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let mut digest_seen = false;
    for row in &rows {
        for i in 0..row.len() {
            let v: Option<String> = row.try_get(i).unwrap();
            if let Some(v) = v {
                assert!(
                    !v.contains(secret),
                    "column {i} of api_keys holds the secret"
                );
                digest_seen |= v == ecosire::crypto::sha256_hex(key.as_bytes());
            }
        }
    }
    assert!(digest_seen, "the key's SHA-256 digest is stored");

    // Test keys, and an expiry that is echoed.
    let expires = Timestamp(now_ms() + 48 * HOUR_MS).to_rfc3339();
    let r = create_key(
        &app,
        &token,
        json!({"name": "sandbox", "scope": "read-only", "environment": "test", "expires_at": expires}),
    )
    .await;
    let t = r.expect(201);
    assert!(t["key"].as_str().unwrap().starts_with("ecos_test_"), "{t}");
    assert!(is_api_key(t["key"].as_str().unwrap()));
    assert_eq!(t["environment"], "test");
    assert_eq!(t["scope"], "read-only");
    assert_eq!(t["expires_at"], expires.as_str());

    // An expiry in the past, an empty name or an unknown scope are refused.
    let past = Timestamp(now_ms() - HOUR_MS).to_rfc3339();
    create_key(
        &app,
        &token,
        json!({"name": "x", "scope": "read-only", "expires_at": past}),
    )
    .await
    .expect_problem(422, "VALIDATION_FAILED");
    create_key(&app, &token, json!({"name": "", "scope": "read-only"}))
        .await
        .expect_problem(422, "VALIDATION_FAILED");
    create_key(&app, &token, json!({"name": "x", "scope": "root"}))
        .await
        .expect(422);
    // Anonymous callers cannot create keys.
    app.post(
        "/api/api-keys",
        json!({"name": "x", "scope": "read-only"}),
        None,
    )
    .await
    .expect_problem(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn scopes_limit_what_a_key_may_do() {
    let app = TestApp::new().await;
    let (uid, token) = app.customer("scopes@example.com").await;
    let (lic, act) = license_with_activation(&app, &uid).await;

    // A customer cannot hold an admin-scoped key.
    create_key(&app, &token, json!({"name": "root", "scope": "admin"}))
        .await
        .expect_problem(403, "FORBIDDEN");

    // read-only: reads pass, writes are refused.
    let (_, ro) = new_key(&app, &token, "read-only", "live").await;
    me(&app, &ro).await.expect(200);
    app.get("/api/licenses", Some(&ro)).await.expect(200);
    app.get(&format!("/api/licenses/{lic}"), Some(&ro))
        .await
        .expect(200);
    app.call(Method::POST, "/api/auth/logout", None, Some(&ro))
        .await
        .expect_problem(403, "FORBIDDEN");
    app.call(
        Method::DELETE,
        &format!("/api/activations/{act}"),
        None,
        Some(&ro),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
    let acts = app
        .get(&format!("/api/licenses/{lic}/activations"), Some(&token))
        .await;
    assert_eq!(ids(acts.expect(200)), vec![act.clone()], "seat still taken");

    // read-write: the owner's own actions, no admin-only endpoints, no key management.
    let (_, rw) = new_key(&app, &token, "read-write", "live").await;
    app.get("/api/users", Some(&rw))
        .await
        .expect_problem(403, "FORBIDDEN");
    app.post(
        "/api/api-keys",
        json!({"name": "more", "scope": "read-only"}),
        Some(&rw),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
    // Reading the key list is a GET like any other (no secret is listed); changing keys is not.
    app.get("/api/api-keys", Some(&rw)).await.expect(200);
    app.post("/api/products", json!({"name": "Mine"}), Some(&rw))
        .await
        .expect_problem(403, "FORBIDDEN");
    let own = app.get("/api/licenses", Some(&rw)).await;
    assert_eq!(ids(own.expect(200)), vec![lic.clone()]);
    app.call(
        Method::DELETE,
        &format!("/api/activations/{act}"),
        None,
        Some(&rw),
    )
    .await
    .expect(204);

    // Admin keys: admin scope does everything the admin may, read-write no admin-only writes.
    let (_, adm) = new_key(&app, &app.admin_token, "admin", "live").await;
    let p = app
        .post("/api/products", json!({"name": "By key"}), Some(&adm))
        .await;
    p.expect(201);
    let (kid, _) = new_key(&app, &adm, "read-only", "test").await;
    let keys = app.get("/api/api-keys", Some(&adm)).await;
    assert!(ids(keys.expect(200)).contains(&kid));
    app.get(&format!("/api/api-keys/{kid}"), Some(&adm))
        .await
        .expect(200);

    let (_, arw) = new_key(&app, &app.admin_token, "read-write", "live").await;
    app.post("/api/products", json!({"name": "Nope"}), Some(&arw))
        .await
        .expect_problem(403, "FORBIDDEN");
    app.get("/api/users", Some(&arw))
        .await
        .expect_problem(403, "FORBIDDEN");
    let all = app.get("/api/licenses", Some(&arw)).await;
    assert!(
        ids(all.expect(200)).contains(&lic),
        "an admin's read-write key lists every license"
    );

    let (_, aro) = new_key(&app, &app.admin_token, "read-only", "live").await;
    app.get("/api/users", Some(&aro)).await.expect(200);
    app.post("/api/products", json!({"name": "Nope"}), Some(&aro))
        .await
        .expect_problem(403, "FORBIDDEN");
}

#[tokio::test]
async fn expired_malformed_and_unknown_keys_are_unauthenticated() {
    let app = TestApp::new().await;
    let (_, token) = app.customer("expiry@example.com").await;
    let (id, key) = new_key(&app, &token, "read-write", "live").await;
    me(&app, &key).await.expect(200);

    sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
        .bind(now_ms() - 1000)
        .bind(&id)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    me(&app, &key).await.expect_problem(401, "UNAUTHENTICATED");
    app.get("/api/licenses", Some(&key))
        .await
        .expect_problem(401, "UNAUTHENTICATED");

    me(&app, "ecos_live_short")
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    let unknown = format!("ecos_live_{}", "A1b2C3d4".repeat(4));
    assert!(is_api_key(&unknown));
    me(&app, &unknown)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    me(&app, &format!("ecos_test_{}", "Z".repeat(32)))
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    // An expired key cannot be rotated back to life.
    app.post(
        &format!("/api/api-keys/{id}/rotate"),
        json!({}),
        Some(&token),
    )
    .await
    .expect_problem(409, "API_KEY_INACTIVE");
}

#[tokio::test]
async fn revoked_keys_stop_at_once_and_keys_are_private() {
    let app = TestApp::new().await;
    let (_, ann) = app.customer("ann@example.com").await;
    let (_, bob) = app.customer("bob@example.com").await;
    let (ann_key_id, ann_key) = new_key(&app, &ann, "read-write", "live").await;
    let (bob_key_id, _) = new_key(&app, &bob, "read-only", "live").await;

    // Another customer's key does not exist for Bob.
    app.get(&format!("/api/api-keys/{ann_key_id}"), Some(&bob))
        .await
        .expect_problem(404, "NOT_FOUND");
    app.call(
        Method::DELETE,
        &format!("/api/api-keys/{ann_key_id}"),
        None,
        Some(&bob),
    )
    .await
    .expect_problem(404, "NOT_FOUND");
    app.post(
        &format!("/api/api-keys/{ann_key_id}/rotate"),
        json!({}),
        Some(&bob),
    )
    .await
    .expect_problem(404, "NOT_FOUND");
    me(&app, &ann_key).await.expect(200);

    // Lists: own for customers, all for admins.
    let a = app.get("/api/api-keys", Some(&ann)).await;
    assert_eq!(ids(a.expect(200)), vec![ann_key_id.clone()]);
    let b = app.get("/api/api-keys", Some(&bob)).await;
    assert_eq!(ids(b.expect(200)), vec![bob_key_id.clone()]);
    let all = app.admin_get("/api/api-keys").await;
    let all: HashSet<String> = ids(all.expect(200)).into_iter().collect();
    assert!(
        all.contains(&ann_key_id) && all.contains(&bob_key_id),
        "{all:?}"
    );
    app.admin_get(&format!("/api/api-keys/{bob_key_id}"))
        .await
        .expect(200);

    // Revocation takes effect on the very next request.
    app.call(
        Method::DELETE,
        &format!("/api/api-keys/{ann_key_id}"),
        None,
        Some(&ann),
    )
    .await
    .expect(204);
    me(&app, &ann_key)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    let k = app
        .get(&format!("/api/api-keys/{ann_key_id}"), Some(&ann))
        .await;
    assert!(k.expect(200)["revoked_at"].is_string(), "{}", k.text);
    // A revoked key cannot be rotated.
    app.post(
        &format!("/api/api-keys/{ann_key_id}/rotate"),
        json!({}),
        Some(&ann),
    )
    .await
    .expect_problem(409, "API_KEY_INACTIVE");
    // Unknown ids are 404.
    app.get("/api/api-keys/key_nope", Some(&ann))
        .await
        .expect_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn rotation_issues_a_new_key_and_keeps_the_old_one_within_grace() {
    let app = TestApp::new().await;
    let (uid, token) = app.customer("rotate@example.com").await;
    let expires = Timestamp(now_ms() + 72 * HOUR_MS).to_rfc3339();
    let created = create_key(
        &app,
        &token,
        json!({"name": "deploy", "scope": "read-only", "environment": "test", "expires_at": expires}),
    )
    .await;
    let created = created.expect(201).clone();
    let old_id = created["id"].as_str().unwrap();
    let old_key = created["key"].as_str().unwrap();

    let r = app
        .post(
            &format!("/api/api-keys/{old_id}/rotate"),
            json!({}),
            Some(&token),
        )
        .await;
    let new = r.expect(201).clone();
    let new_key = new["key"].as_str().unwrap();
    assert!(is_api_key(new_key), "{new_key}");
    assert_ne!(new_key, old_key);
    assert_ne!(new["id"], created["id"]);
    assert_eq!(new["name"], "deploy");
    assert_eq!(new["scope"], "read-only");
    assert_eq!(new["environment"], "test");
    assert!(new_key.starts_with("ecos_test_"));
    assert_eq!(
        new["expires_at"],
        expires.as_str(),
        "the expiry carries over"
    );

    // Both work during the grace period.
    assert_eq!(
        me(&app, new_key).await.expect(200)["user"]["id"],
        uid.as_str()
    );
    assert_eq!(
        me(&app, old_key).await.expect(200)["user"]["id"],
        uid.as_str()
    );
    // The rotated-out key's secret is not shown again either.
    let list = app.get("/api/api-keys", Some(&token)).await;
    assert_eq!(ids(list.expect(200)).len(), 2);
    assert!(!list.text.contains(&old_key[10..]) && !list.text.contains(&new_key[10..]));

    // Rotating a revoked key is refused.
    app.call(
        Method::DELETE,
        &format!("/api/api-keys/{old_id}"),
        None,
        Some(&token),
    )
    .await
    .expect(204);
    me(&app, old_key)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    me(&app, new_key).await.expect(200);
    app.post(
        &format!("/api/api-keys/{old_id}/rotate"),
        json!({}),
        Some(&token),
    )
    .await
    .expect_problem(409, "API_KEY_INACTIVE");
}

#[tokio::test]
async fn without_grace_the_rotated_key_stops_at_once() {
    let app = TestApp::with_config(|c| c.api_key_grace_s = 0).await;
    let (_, token) = app.customer("nograce@example.com").await;
    let (id, old) = new_key(&app, &token, "read-write", "live").await;
    me(&app, &old).await.expect(200);
    let r = app
        .post(
            &format!("/api/api-keys/{id}/rotate"),
            json!({}),
            Some(&token),
        )
        .await;
    let new = r.expect(201)["key"].as_str().unwrap().to_string();
    me(&app, &old).await.expect_problem(401, "UNAUTHENTICATED");
    me(&app, &new).await.expect(200);
}

#[tokio::test]
async fn usage_counters_count_requests_and_errors() {
    let app = TestApp::new().await;
    let (uid, token) = app.customer("usage@example.com").await;
    let (lic, _) = license_with_activation(&app, &uid).await;
    let (id, key) = new_key(&app, &token, "read-write", "live").await;

    let fresh = app.get(&format!("/api/api-keys/{id}"), Some(&token)).await;
    let fresh = fresh.expect(200);
    assert_eq!(fresh["request_count"], 0);
    assert_eq!(fresh["error_count"], 0);
    assert!(fresh["last_used_at"].is_null());

    me(&app, &key).await.expect(200);
    app.get("/api/licenses", Some(&key)).await.expect(200);
    app.get(&format!("/api/licenses/{lic}"), Some(&key))
        .await
        .expect(200);
    for _ in 0..2 {
        app.get("/api/licenses/lic_nope", Some(&key))
            .await
            .expect_problem(404, "NOT_FOUND");
    }

    let k = app.get(&format!("/api/api-keys/{id}"), Some(&token)).await;
    let k = k.expect(200);
    assert_eq!(k["request_count"], 5, "{k}");
    assert_eq!(k["error_count"], 2, "{k}");
    assert!(k["last_used_at"].is_string(), "{k}");
    let list = app.get("/api/api-keys", Some(&token)).await;
    let listed = &list.expect(200)["data"][0];
    assert_eq!(listed["request_count"], 5, "{listed}");
    assert_eq!(listed["error_count"], 2, "{listed}");

    // Per day: the last 30 days, oldest first, today holding what was just counted; an earlier
    // day lands at its place and the window's edge is honoured.
    let today = ecosire::timestamp::utc_day(now_ms());
    sqlx::query("INSERT INTO api_key_daily_usage (api_key_id, day, requests, errors) VALUES ($1, $2, 7, 1), ($1, $3, 9, 0)")
        .bind(&id)
        .bind(today - 3)
        .bind(today - 30)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let usage = app
        .get(&format!("/api/api-keys/{id}/usage"), Some(&token))
        .await;
    let usage = usage.expect(200);
    let days = usage["data"].as_array().unwrap();
    assert_eq!(days.len(), 30, "{usage}");
    let day = |n: i64| Timestamp(n * 86_400_000).to_rfc3339()[..10].to_string();
    assert_eq!(
        days[29],
        json!({"day": day(today), "requests": 5, "errors": 2})
    );
    assert_eq!(
        days[26],
        json!({"day": day(today - 3), "requests": 7, "errors": 1})
    );
    assert_eq!(
        days[0],
        json!({"day": day(today - 29), "requests": 0, "errors": 0})
    );
    let total: i64 = days.iter().map(|d| d["requests"].as_i64().unwrap()).sum();
    assert_eq!(total, 12, "the day 30 days back is outside the window");
    let longer = app
        .get(&format!("/api/api-keys/{id}/usage?days=31"), Some(&token))
        .await;
    let longer = longer.expect(200);
    assert_eq!(longer["data"][0]["requests"], 9);
    for bad in ["0", "91", "x"] {
        app.get(
            &format!("/api/api-keys/{id}/usage?days={bad}"),
            Some(&token),
        )
        .await
        .expect_problem(422, "VALIDATION_FAILED");
    }
    // Someone else's key has no usage to show.
    let (_, other) = app.customer("other-usage@example.com").await;
    app.get(&format!("/api/api-keys/{id}/usage"), Some(&other))
        .await
        .expect_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn live_key_requests_and_admin_writes_are_audited() {
    let app = TestApp::new().await;
    let admin = admin_id(&app).await;
    let (uid, token) = app.customer("audit@example.com").await;
    let (lic, _) = license_with_activation(&app, &uid).await;
    let (live_id, live) = new_key(&app, &token, "read-write", "live").await;
    let (test_id, test) = new_key(&app, &token, "read-write", "test").await;

    app.get("/api/licenses", Some(&live)).await.expect(200);
    app.get("/api/licenses/lic_nope", Some(&live))
        .await
        .expect(404);
    app.get("/api/licenses", Some(&test)).await.expect(200);
    me(&app, &test).await.expect(200);
    app.admin_post(&format!("/api/licenses/{lic}/revoke"), json!({}))
        .await
        .expect(200);

    let by_key = app
        .admin_get(&format!("/api/audit-log?api_key_id={live_id}"))
        .await;
    let by_key = by_key.expect(200)["data"].as_array().unwrap().clone();
    let seen: Vec<(String, String, i64)> = by_key
        .iter()
        .map(|e| {
            assert_eq!(e["api_key_id"], live_id.as_str(), "{e}");
            assert_eq!(e["user_id"], uid.as_str(), "{e}");
            assert!(e["at"].is_string() && e["id"].is_string(), "{e}");
            (
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_i64().unwrap(),
            )
        })
        .collect();
    // Newest first.
    assert_eq!(
        seen,
        vec![
            ("GET".to_string(), "/api/licenses/lic_nope".to_string(), 404),
            ("GET".to_string(), "/api/licenses".to_string(), 200),
        ],
        "{by_key:?}"
    );

    // Reads with a test key are not audited.
    let t = app
        .admin_get(&format!("/api/audit-log?api_key_id={test_id}"))
        .await;
    assert_eq!(t.expect(200)["data"], json!([]), "{}", t.text);

    // The admin's revoke (a write with a session) is.
    let revoke_path = format!("/api/licenses/{lic}/revoke");
    let by_prefix = app
        .admin_get(&format!("/api/audit-log?path_prefix={revoke_path}"))
        .await;
    let entries = by_prefix.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["method"], "POST");
    assert_eq!(entries[0]["path"], revoke_path.as_str());
    assert_eq!(entries[0]["status"], 200);
    assert_eq!(entries[0]["user_id"], admin.as_str());
    assert!(entries[0]["api_key_id"].is_null());

    // Filters.
    let mine = app
        .admin_get(&format!("/api/audit-log?user_id={uid}"))
        .await;
    let mine = mine.expect(200)["data"].as_array().unwrap().clone();
    assert!(mine.len() >= 3, "{mine:?}");
    assert!(
        mine.iter().all(|e| e["user_id"] == uid.as_str()),
        "{mine:?}"
    );
    let posts = app.admin_get("/api/audit-log?method=post").await;
    let posts = posts.expect(200)["data"].as_array().unwrap().clone();
    assert!(!posts.is_empty());
    assert!(posts.iter().all(|e| e["method"] == "POST"), "{posts:?}");
    assert!(posts.iter().any(|e| e["path"] == revoke_path.as_str()));
    let admin_posts = app
        .admin_get(&format!("/api/audit-log?method=POST&user_id={admin}"))
        .await;
    let admin_posts = admin_posts.expect(200)["data"].as_array().unwrap().clone();
    assert!(
        admin_posts
            .iter()
            .all(|e| e["user_id"] == admin.as_str() && e["method"] == "POST")
    );
    assert!(
        admin_posts
            .iter()
            .any(|e| e["path"] == revoke_path.as_str())
    );
    let nope = app
        .admin_get("/api/audit-log?path_prefix=/api/licenses/lic_nope")
        .await;
    assert_eq!(ids(nope.expect(200)).len(), 1, "{}", nope.text);

    // Nothing anywhere in the log comes from the test key.
    let everything = app.admin_get("/api/audit-log?limit=100").await;
    let everything = everything.expect(200).clone();
    let all_ids = ids(&everything);
    assert!(all_ids.len() >= 5, "{everything}");
    assert!(
        everything["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["api_key_id"] != test_id.as_str())
    );
    assert!(everything["next_cursor"].is_null());

    // Pagination walks the same entries, two at a time.
    let mut walked = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("/api/audit-log?limit=2&cursor={c}"),
            None => "/api/audit-log?limit=2".to_string(),
        };
        let page = app.admin_get(&url).await;
        let page = page.expect(200).clone();
        let got = ids(&page);
        assert!(got.len() <= 2);
        walked.extend(got);
        pages += 1;
        assert!(pages <= all_ids.len() + 1, "pagination does not end");
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(walked, all_ids);
    assert!(pages >= 3);
    app.admin_get("/api/audit-log?limit=0")
        .await
        .expect_problem(422, "VALIDATION_FAILED");

    // Customers, with a session or a key, cannot read the log.
    app.get("/api/audit-log", Some(&token))
        .await
        .expect_problem(403, "FORBIDDEN");
    app.get("/api/audit-log", Some(&live))
        .await
        .expect_problem(403, "FORBIDDEN");
}

#[tokio::test]
async fn registration_creates_customers_unless_closed() {
    let app = TestApp::new().await;
    let body =
        json!({"email": "New.User@Example.com", "password": "long-enough-1", "name": "New User"});
    let r = app.post("/api/auth/register", body.clone(), None).await;
    let user = r.expect(201)["user"].clone();
    assert_eq!(user["role"], "customer");
    assert_eq!(user["email"], "new.user@example.com");
    assert_eq!(user["name"], "New User");
    let id = user["id"].as_str().unwrap();
    assert!(id.starts_with("usr_"), "{id}");
    assert!(
        !r.text.contains("long-enough-1") && !r.text.contains("argon2"),
        "{}",
        r.text
    );

    // The new account can log in.
    let token = app.login("new.user@example.com", "long-enough-1").await;
    assert_eq!(me(&app, &token).await.expect(200)["user"]["id"], id);

    // Duplicates (any case) are refused.
    app.post("/api/auth/register", body, None)
        .await
        .expect_problem(409, "EMAIL_TAKEN");
    app.post(
        "/api/auth/register",
        json!({"email": "NEW.USER@example.com", "password": "another-pass", "name": "Again"}),
        None,
    )
    .await
    .expect_problem(409, "EMAIL_TAKEN");
    app.post(
        "/api/auth/register",
        json!({"email": ADMIN_EMAIL, "password": "another-pass", "name": "Not admin"}),
        None,
    )
    .await
    .expect_problem(409, "EMAIL_TAKEN");

    // Short passwords are named.
    let r = app
        .post(
            "/api/auth/register",
            json!({"email": "short@example.com", "password": "short", "name": "Short"}),
            None,
        )
        .await;
    let p = r.expect_problem(422, "VALIDATION_FAILED");
    let fields: Vec<&str> = p["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {p}"))
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"password"), "{p}");

    let closed = TestApp::with_config(|c| c.registration = false).await;
    closed
        .post(
            "/api/auth/register",
            json!({"email": "late@example.com", "password": "long-enough-1", "name": "Late"}),
            None,
        )
        .await
        .expect_problem(403, "REGISTRATION_CLOSED");
}

#[test]
fn api_key_tokens_do_not_print_their_secret() {
    let k = ApiKeyToken::generate(Environment::Live);
    let shown = format!("{k:?}");
    assert!(!shown.contains(&k.expose()[10..]), "{shown}");
}
