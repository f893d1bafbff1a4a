//! The churn budget: a product caps how many seats one license may free per rolling 30 days;
//! past it deactivation answers 409 `CHURN_LIMIT_REACHED` with when the next one is possible.
//! The reaper's and admins' releases do not count; an admin can reset the count (audited).

mod common;

use std::sync::Arc;

use common::{TestApp, now_ms};
use serde_json::{Value, json};

const DAY_MS: i64 = 86_400_000;
const WINDOW_MS: i64 = 30 * DAY_MS;

fn s(v: &Value) -> String {
    v.as_str().expect("string").to_string()
}

/// A license of a product with `seats` seats and a budget of `budget` deactivations per 30 days,
/// owned by a customer: (license id, key, the owner's token).
async fn setup(app: &TestApp, seats: i64, budget: Option<i64>) -> (String, String, String) {
    let p = app
        .product(json!({"max_activations": seats, "max_deactivations_per_30d": budget}))
        .await;
    assert_eq!(p["max_deactivations_per_30d"], json!(budget));
    let (uid, token) = app
        .customer(&format!("c{}@churn.test", uuid::Uuid::now_v7().simple()))
        .await;
    let l = app
        .license(p["id"].as_str().unwrap(), json!({"user_id": uid}))
        .await;
    (s(&l["id"]), s(&l["key"]), token)
}

async fn deactivate(app: &TestApp, key: &str, fp: &str) -> common::TestResponse {
    app.post(
        "/api/licenses/deactivate",
        json!({"key": key, "fingerprint": fp}),
        None,
    )
    .await
}

async fn churn(app: &TestApp, id: &str) -> Value {
    app.admin_get(&format!("/api/licenses/{id}"))
        .await
        .expect(200)["churn"]
        .clone()
}

/// Counted releases as the database holds them, for seeding history at chosen times.
async fn seed_release(app: &TestApp, license_id: &str, at: i64) {
    sqlx::query("INSERT INTO seat_releases (id, license_id, at) VALUES ($1, $2, $3)")
        .bind(format!("rel_seed_{}", uuid::Uuid::now_v7().simple()))
        .bind(license_id)
        .bind(at)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
}

fn parse_rfc3339_ms(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test]
async fn the_budget_refuses_the_next_deactivation_until_the_oldest_leaves_the_window() {
    let app = TestApp::new().await;
    let (id, key, _) = setup(&app, 5, Some(2)).await;
    // Freed 31 days ago (outside the window) and 29 days ago (inside).
    let inside = now_ms() - 29 * DAY_MS;
    seed_release(&app, &id, now_ms() - 31 * DAY_MS).await;
    seed_release(&app, &id, inside).await;
    let c = churn(&app, &id).await;
    assert_eq!(c["max_deactivations_per_30d"], 2);
    assert_eq!(c["deactivations_30d"], 1);
    assert_eq!(c["next_deactivation_at"], Value::Null);

    for fp in ["a", "b"] {
        app.activate(&key, fp).await.expect(201);
    }
    deactivate(&app, &key, "a").await.expect(204);
    let r = deactivate(&app, &key, "b").await;
    let p = r.expect_problem(409, "CHURN_LIMIT_REACHED");
    // The next one fits when the release of 29 days ago leaves the window.
    let retry_at = parse_rfc3339_ms(p["retry_at"].as_str().expect("retry_at"));
    assert_eq!(retry_at, inside + WINDOW_MS);
    let retry_after: i64 = r.header("retry-after").unwrap().parse().unwrap();
    let expected_s = (inside + WINDOW_MS - now_ms()) / 1000;
    assert!(
        (expected_s - 2..=expected_s + 2).contains(&retry_after),
        "Retry-After {retry_after}, expected ≈{expected_s}"
    );
    // Refused means nothing changed: the seat is still held, the device still validates.
    let v = app.validate(json!({"key": key, "fingerprint": "b"})).await;
    assert_eq!(v["code"], "VALID");
    let c = churn(&app, &id).await;
    assert_eq!(c["deactivations_30d"], 2);
    assert_eq!(
        parse_rfc3339_ms(c["next_deactivation_at"].as_str().unwrap()),
        inside + WINDOW_MS
    );
}

#[tokio::test]
async fn owners_count_admins_and_the_reaper_do_not_and_an_admin_reset_is_audited() {
    let app = TestApp::new().await;
    let (id, key, owner) = setup(&app, 5, Some(1)).await;
    sqlx::query("UPDATE products SET heartbeat_timeout_s = 10 WHERE id = (SELECT product_id FROM licenses WHERE id = $1)")
        .bind(&id)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    app.state.licenses.invalidate_all(&app.state.db).await;
    for fp in ["a", "b", "c", "d"] {
        app.activate(&key, fp).await.expect(201);
    }
    let act = |fp: &'static str| {
        let app = &app;
        let id = id.clone();
        async move {
            let list = app
                .admin_get(&format!("/api/licenses/{id}/activations"))
                .await;
            let a = list.expect(200)["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["fingerprint"] == fp)
                .cloned()
                .unwrap();
            s(&a["id"])
        }
    };
    // The reaper frees a silent device: not counted.
    sqlx::query("UPDATE activations SET last_heartbeat_at = $1 WHERE fingerprint = 'a'")
        .bind(now_ms() - 60_000)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let reaped = ecosire::licensing::reaper::reap_silent_activations(&app.state)
        .await
        .unwrap();
    assert_eq!(reaped, 1);
    assert_eq!(churn(&app, &id).await["deactivations_30d"], 0);
    // An admin frees one: not counted.
    let b = act("b").await;
    app.admin_delete(&format!("/api/activations/{b}"))
        .await
        .expect(204);
    assert_eq!(churn(&app, &id).await["deactivations_30d"], 0);
    // The owner frees one from the portal: counted, and the budget (1) is spent.
    let c = act("c").await;
    app.call(
        axum::http::Method::DELETE,
        &format!("/api/activations/{c}"),
        None,
        Some(&owner),
    )
    .await
    .expect(204);
    let own_view = app.get(&format!("/api/licenses/{id}"), Some(&owner)).await;
    assert_eq!(own_view.expect(200)["churn"]["deactivations_30d"], 1);
    assert!(own_view.body["churn"]["next_deactivation_at"].is_string());
    deactivate(&app, &key, "d")
        .await
        .expect_problem(409, "CHURN_LIMIT_REACHED");
    // The owner cannot reset it; an admin can, and the reset is in the audit log.
    app.post(
        &format!("/api/licenses/{id}/churn/reset"),
        json!({}),
        Some(&owner),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
    let reset = app
        .admin_post(&format!("/api/licenses/{id}/churn/reset"), json!({}))
        .await;
    let c = &reset.expect(200)["license"]["churn"];
    assert_eq!(c["deactivations_30d"], 0);
    assert_eq!(c["next_deactivation_at"], Value::Null);
    deactivate(&app, &key, "d").await.expect(204);
    let audit = app
        .admin_get(&format!(
            "/api/audit-log?path_prefix=/api/licenses/{id}/churn/reset"
        ))
        .await;
    let entries = audit.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["method"], "POST");
    assert_eq!(entries[0]["status"], 200);
}

#[tokio::test]
async fn without_a_cap_deactivations_are_unlimited_but_still_shown() {
    let app = TestApp::new().await;
    let (id, key, _) = setup(&app, 1, None).await;
    for _ in 0..5 {
        app.activate(&key, "laptop").await.expect(201);
        deactivate(&app, &key, "laptop").await.expect(204);
    }
    let c = churn(&app, &id).await;
    assert_eq!(c["max_deactivations_per_30d"], Value::Null);
    assert_eq!(c["deactivations_30d"], 5);
    assert_eq!(c["next_deactivation_at"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deactivations_at_the_budget_edge_cannot_all_pass() {
    let app = Arc::new(TestApp::new().await);
    const N: usize = 12;
    const BUDGET: usize = 3;
    let (id, key, _) = setup(&app, N as i64, Some(BUDGET as i64)).await;
    for i in 0..N {
        app.activate(&key, &format!("device-{i:02}"))
            .await
            .expect(201);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let (app, key, barrier) = (Arc::clone(&app), key.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            deactivate(&app, &key, &format!("device-{i:02}")).await
        }));
    }
    let (mut freed, mut refused) = (0, 0);
    for t in tasks {
        let r = t.await.expect("task");
        match r.status.as_u16() {
            204 => freed += 1,
            409 => {
                r.expect_problem(409, "CHURN_LIMIT_REACHED");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert_eq!(freed, BUDGET);
    assert_eq!(refused, N - BUDGET);
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM activations WHERE license_id = $1")
        .bind(&id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(live, (N - BUDGET) as i64);
    let counted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM seat_releases WHERE license_id = $1")
            .bind(&id)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(counted, BUDGET as i64);
}

#[tokio::test]
async fn the_budget_is_a_product_term_checked_like_the_others() {
    let app = TestApp::new().await;
    let r = app
        .admin_post(
            "/api/products",
            json!({"name": "Bad", "max_deactivations_per_30d": 0}),
        )
        .await;
    r.expect_problem(422, "VALIDATION_FAILED");
    assert_eq!(common::fields(&r.body), vec!["max_deactivations_per_30d"]);
    let p = app.product(json!({"max_deactivations_per_30d": 4})).await;
    let id = s(&p["id"]);
    let patched = app
        .admin_patch(
            &format!("/api/products/{id}"),
            json!({"max_deactivations_per_30d": null}),
        )
        .await;
    assert_eq!(
        patched.expect(200)["max_deactivations_per_30d"],
        Value::Null
    );
    let patched = app
        .admin_patch(
            &format!("/api/products/{id}"),
            json!({"max_deactivations_per_30d": 2}),
        )
        .await;
    assert_eq!(patched.expect(200)["max_deactivations_per_30d"], 2);
}
