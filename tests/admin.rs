mod common;

use std::collections::HashSet;

use axum::http::Method;
use common::TestApp;
use common::{fields, ids, now_ms};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const DAY_MS: i64 = 86_400_000;
const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// An RFC 3339 timestamp from the API, as unix milliseconds.
#[track_caller]
fn ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let dt = OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s}: {e}"));
    (dt.unix_timestamp_nanos() / 1_000_000) as i64
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// `^ECOS(-[0-9A-HJKMNP-TV-Z]{5}){4}$`
fn is_license_key(k: &str) -> bool {
    let parts: Vec<&str> = k.split('-').collect();
    parts.len() == 5
        && parts[0] == "ECOS"
        && parts[1..]
            .iter()
            .all(|p| p.len() == 5 && p.chars().all(|c| CROCKFORD.contains(c)))
}

/// The `field` names of a 422's `details`.
fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_string()
}

// ---------------------------------------------------------------- products

#[tokio::test]
async fn product_create_derives_slug_and_applies_defaults() {
    let app = TestApp::new().await;
    let r = app
        .admin_post("/api/products", json!({"name": "  Desktop Pro Suite! 2 "}))
        .await;
    let p = r.expect(201);
    assert!(p["id"].as_str().unwrap().starts_with("prd_"), "{p}");
    assert_eq!(p["name"], "Desktop Pro Suite! 2");
    assert_eq!(p["slug"], "desktop-pro-suite-2");
    assert_eq!(p["max_activations"], 1);
    assert_eq!(p["offline_lease_days"], 7);
    assert_eq!(p["duration_days"], Value::Null);
    assert_eq!(p["heartbeat_timeout_s"], Value::Null);
    assert_eq!(p["entitlements"], json!([]));
    assert_eq!(p["stripe_price_ids"], json!([]));

    let full = app
        .admin_post(
            "/api/products",
            json!({"name": "Server", "slug": "srv-1", "max_activations": 5, "duration_days": 365,
                   "offline_lease_days": 14, "heartbeat_timeout_s": 600,
                   "entitlements": ["pro"], "stripe_price_ids": ["price_123"]}),
        )
        .await;
    let full = full.expect(201);
    assert_eq!(full["slug"], "srv-1");
    assert_eq!(full["max_activations"], 5);
    assert_eq!(full["duration_days"], 365);
    assert_eq!(full["offline_lease_days"], 14);
    assert_eq!(full["heartbeat_timeout_s"], 600);
    assert_eq!(full["entitlements"], json!(["pro"]));
    assert_eq!(full["stripe_price_ids"], json!(["price_123"]));
}

#[tokio::test]
async fn product_slug_conflict_is_409() {
    let app = TestApp::new().await;
    app.product(json!({"name": "Desktop Pro"})).await;
    // Same derived slug.
    app.admin_post("/api/products", json!({"name": "desktop pro"}))
        .await
        .expect_problem(409, "SLUG_TAKEN");
    // Same explicit slug.
    app.admin_post(
        "/api/products",
        json!({"name": "Other", "slug": "desktop-pro"}),
    )
    .await
    .expect_problem(409, "SLUG_TAKEN");
    // Renaming another product's slug onto it.
    let other = app.product(json!({"name": "Other"})).await;
    app.admin_patch(
        &format!("/api/products/{}", id(&other)),
        json!({"slug": "desktop-pro"}),
    )
    .await
    .expect_problem(409, "SLUG_TAKEN");
}

#[tokio::test]
async fn product_validation_names_the_fields() {
    let app = TestApp::new().await;
    let r = app
        .admin_post("/api/products", json!({"name": "", "slug": "ok"}))
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["name"]
    );

    let r = app
        .admin_post("/api/products", json!({"name": "X", "max_activations": 0}))
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["max_activations"]
    );

    for bad in ["Bad Slug", "-lead", "UPPER", "", "ünïcode", &"a".repeat(64)] {
        let r = app
            .admin_post("/api/products", json!({"name": "X", "slug": bad}))
            .await;
        assert_eq!(
            fields(r.expect_problem(422, "VALIDATION_FAILED")),
            vec!["slug"],
            "slug {bad:?}"
        );
    }

    // Every failure at once.
    let r = app
        .admin_post(
            "/api/products",
            json!({"name": "", "slug": "Bad Slug", "max_activations": 0}),
        )
        .await;
    let f = fields(r.expect_problem(422, "VALIDATION_FAILED"));
    for want in ["name", "slug", "max_activations"] {
        assert!(f.iter().any(|x| x == want), "{want} missing in {f:?}");
    }

    // PATCH validates too.
    let p = app.product(json!({})).await;
    let r = app
        .admin_patch(
            &format!("/api/products/{}", id(&p)),
            json!({"max_activations": 0, "name": ""}),
        )
        .await;
    let f = fields(r.expect_problem(422, "VALIDATION_FAILED"));
    assert!(f.contains(&"max_activations".to_string()), "{f:?}");
    assert!(f.contains(&"name".to_string()), "{f:?}");
    // Nothing was written.
    let again = app.get(&format!("/api/products/{}", id(&p)), None).await;
    assert_eq!(again.expect(200)["max_activations"], p["max_activations"]);

    // Nothing was created by the failed attempts.
    let list = app.get("/api/products", None).await;
    let list = list.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], p["name"]);
}

#[tokio::test]
async fn product_name_of_blanks_is_rejected() {
    let app = TestApp::new().await;
    // A name of blanks is empty once trimmed.
    let r = app
        .admin_post("/api/products", json!({"name": "   ", "slug": "blank"}))
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["name"],
        "a whitespace-only name was accepted: {}",
        r.text
    );

    let p = app.product(json!({"name": "Kept"})).await;
    let r = app
        .admin_patch(
            &format!("/api/products/{}", id(&p)),
            json!({"name": " \t "}),
        )
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["name"],
        "PATCH accepted a whitespace-only name: {}",
        r.text
    );
    let got = app.get(&format!("/api/products/{}", id(&p)), None).await;
    assert_eq!(got.expect(200)["name"], "Kept");
}

#[tokio::test]
async fn products_are_public_to_read_by_id_and_slug() {
    let app = TestApp::new().await;
    let p = app
        .product(json!({"name": "Reader", "slug": "reader", "duration_days": 30}))
        .await;
    let by_id = app.get(&format!("/api/products/{}", id(&p)), None).await;
    assert_eq!(by_id.expect(200), &p);
    let by_slug = app.get("/api/products/reader", None).await;
    assert_eq!(by_slug.expect(200), &p);
    app.get("/api/products/no-such-product", None)
        .await
        .expect_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn product_list_is_public_and_paginated() {
    let app = TestApp::new().await;
    let mut created = vec![];
    for i in 0..3 {
        created.push(id(&app.product(json!({"name": format!("P{i}")})).await));
    }
    let first = app.get("/api/products?limit=2", None).await;
    let first = first.expect(200).clone();
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a next cursor");
    let second = app
        .get(&format!("/api/products?limit=2&cursor={cursor}"), None)
        .await;
    let second = second.expect(200).clone();
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert_eq!(second["next_cursor"], Value::Null);
    let mut seen: Vec<String> = ids(&first);
    seen.extend(ids(&second));
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 3);
    assert_eq!(unique, created.into_iter().collect::<HashSet<_>>());

    // Default page holds everything; bad limits are 422.
    let all = app.get("/api/products", None).await;
    assert_eq!(all.expect(200)["data"].as_array().unwrap().len(), 3);
    assert_eq!(all.body["next_cursor"], Value::Null);
    for bad in ["limit=0", "limit=101", "limit=abc"] {
        let r = app.get(&format!("/api/products?{bad}"), None).await;
        assert_eq!(
            fields(r.expect_problem(422, "VALIDATION_FAILED")),
            vec!["limit"],
            "{bad}"
        );
    }
}

#[tokio::test]
async fn product_patch_updates_and_clears_fields() {
    let app = TestApp::new().await;
    let p = app
        .product(json!({"name": "Patchable", "duration_days": 365, "heartbeat_timeout_s": 120}))
        .await;
    let path = format!("/api/products/{}", id(&p));

    let r = app
        .admin_patch(
            &path,
            json!({"name": "Renamed", "max_activations": 10, "entitlements": ["a", "b"]}),
        )
        .await;
    let u = r.expect(200).clone();
    assert_eq!(u["name"], "Renamed");
    assert_eq!(u["max_activations"], 10);
    assert_eq!(u["entitlements"], json!(["a", "b"]));
    // Absent fields keep their values (the slug does not follow the name).
    assert_eq!(u["slug"], p["slug"]);
    assert_eq!(u["duration_days"], 365);
    assert_eq!(u["heartbeat_timeout_s"], 120);
    assert_eq!(u["offline_lease_days"], p["offline_lease_days"]);

    let r = app
        .admin_patch(&path, json!({"duration_days": null, "slug": "new-slug"}))
        .await;
    let u = r.expect(200).clone();
    assert_eq!(u["duration_days"], Value::Null);
    assert_eq!(u["heartbeat_timeout_s"], 120);
    assert_eq!(u["slug"], "new-slug");
    assert_eq!(u["name"], "Renamed");

    let r = app
        .admin_patch(&path, json!({"heartbeat_timeout_s": null}))
        .await;
    assert_eq!(r.expect(200)["heartbeat_timeout_s"], Value::Null);

    // The change is what GET shows.
    let got = app.get("/api/products/new-slug", None).await;
    let got = got.expect(200);
    assert_eq!(got["duration_days"], Value::Null);
    assert_eq!(got["name"], "Renamed");

    app.admin_patch("/api/products/prd_nope", json!({"name": "x"}))
        .await
        .expect_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn product_delete() {
    let app = TestApp::new().await;
    let p = app.product(json!({})).await;
    let path = format!("/api/products/{}", id(&p));
    let r = app.admin_delete(&path).await;
    r.expect(204);
    assert!(r.text.is_empty(), "204 has no body: {}", r.text);
    app.get(&path, None).await.expect_problem(404, "NOT_FOUND");
    app.admin_delete(&path)
        .await
        .expect_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn product_with_licenses_cannot_be_deleted() {
    let app = TestApp::new().await;
    let (p, l) = app.product_and_license(json!({}), json!({})).await;
    let path = format!("/api/products/{}", id(&p));
    app.admin_delete(&path)
        .await
        .expect_problem(409, "PRODUCT_IN_USE");
    // Still there, and so is its license.
    app.get(&path, None).await.expect(200);
    app.admin_get(&format!("/api/licenses/{}", id(&l)))
        .await
        .expect(200);
    // Revoking does not free the product either: the license row remains.
    app.admin_post(&format!("/api/licenses/{}/revoke", id(&l)), json!({}))
        .await
        .expect(200);
    app.admin_delete(&path)
        .await
        .expect_problem(409, "PRODUCT_IN_USE");
}

#[tokio::test]
async fn product_writes_need_an_admin() {
    let app = TestApp::new().await;
    let p = app.product(json!({})).await;
    let path = format!("/api/products/{}", id(&p));
    let (_, customer) = app.customer("ann@example.com").await;

    for token in [None, Some(customer.as_str())] {
        let (status, code) = match token {
            None => (401, "UNAUTHENTICATED"),
            Some(_) => (403, "FORBIDDEN"),
        };
        app.post("/api/products", json!({"name": "Nope"}), token)
            .await
            .expect_problem(status, code);
        app.call(Method::PATCH, &path, Some(json!({"name": "Nope"})), token)
            .await
            .expect_problem(status, code);
        app.call(Method::DELETE, &path, None, token)
            .await
            .expect_problem(status, code);
    }
    // Nothing changed; reads stay public for the customer too.
    let got = app.get(&path, Some(&customer)).await;
    assert_eq!(got.expect(200), &p);
    let list = app.get("/api/products", None).await;
    assert_eq!(list.expect(200)["data"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------- licenses: create

#[tokio::test]
async fn license_create_returns_a_well_formed_key() {
    let app = TestApp::new().await;
    let p = app
        .product(json!({"max_activations": 4, "entitlements": ["pro", "export"]}))
        .await;
    let r = app
        .admin_post("/api/licenses", json!({"product_id": id(&p)}))
        .await;
    let l = r.expect(201).clone();
    let key = l["key"].as_str().expect("key on create");
    assert!(is_license_key(key), "bad key shape: {key}");
    assert_eq!(l["key_last4"].as_str().unwrap(), &key[key.len() - 4..]);
    assert!(l["id"].as_str().unwrap().starts_with("lic_"), "{l}");
    assert_eq!(l["product_id"], p["id"]);
    assert_eq!(l["user_id"], Value::Null);
    assert_eq!(l["status"], "active");
    assert_eq!(l["max_activations"], 4);
    assert_eq!(l["activations_count"], 0);
    assert_eq!(l["entitlements"], json!(["pro", "export"]));
    assert_eq!(l["metadata"], json!({}));
    assert_eq!(l["expires_at"], Value::Null);
    ms(&l["created_at"]);
    ms(&l["updated_at"]);

    // Two licenses never share a key.
    let l2 = app.license(&id(&p), json!({})).await;
    assert_ne!(l2["key"], l["key"]);

    // The product may be named by slug; explicit fields override the product's.
    let l3 = app
        .license(
            p["slug"].as_str().unwrap(),
            json!({"max_activations": 9, "entitlements": ["x"], "metadata": {"order": 7}}),
        )
        .await;
    assert_eq!(l3["product_id"], p["id"]);
    assert_eq!(l3["max_activations"], 9);
    assert_eq!(l3["entitlements"], json!(["x"]));
    assert_eq!(l3["metadata"], json!({"order": 7}));
}

#[tokio::test]
async fn license_default_expiry_follows_the_product_duration() {
    let app = TestApp::new().await;
    let timed = app.product(json!({"duration_days": 30})).await;
    let t0 = now_ms();
    let l = app.license(&id(&timed), json!({})).await;
    let t1 = now_ms();
    let exp = ms(&l["expires_at"]);
    assert!(
        (t0 + 30 * DAY_MS..=t1 + 30 * DAY_MS).contains(&exp),
        "expires_at {} not now + 30 days",
        l["expires_at"]
    );

    let forever = app.product(json!({})).await;
    let l = app.license(&id(&forever), json!({})).await;
    assert_eq!(l["expires_at"], Value::Null);

    // An explicit expiry wins over the product's duration.
    let at = now_ms() + 3 * DAY_MS;
    let l = app
        .license(&id(&timed), json!({"expires_at": rfc3339(at)}))
        .await;
    assert_eq!(ms(&l["expires_at"]), at);
}

#[tokio::test]
async fn license_with_past_expiry_is_accepted_and_stays_active() {
    let app = TestApp::new().await;
    let p = app.product(json!({"duration_days": 365})).await;
    let r = app
        .admin_post(
            "/api/licenses",
            json!({"product_id": id(&p), "expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    let l = r.expect(201).clone();
    assert_eq!(l["status"], "active");
    assert_eq!(l["expires_at"], "2020-01-01T00:00:00Z");
    let v = app.validate(json!({"key": l["key"]})).await;
    assert_eq!(v["code"], "EXPIRED");
    assert_eq!(v["valid"], false);
    assert_eq!(v["license"]["status"], "active");
}

#[tokio::test]
async fn license_email_finds_or_creates_a_customer() {
    let app = TestApp::new().await;
    let p = app.product(json!({})).await;
    let l = app
        .license(&id(&p), json!({"email": "  New.Buyer@Example.COM "}))
        .await;
    let uid = l["user_id"].as_str().expect("owner set").to_string();
    let u = app.admin_get(&format!("/api/users/{uid}")).await;
    let u = u.expect(200);
    assert_eq!(u["email"], "new.buyer@example.com");
    assert_eq!(u["role"], "customer");
    assert!(u.get("password_hash").is_none(), "{u}");

    // The same email (any case) finds the same user.
    let again = app
        .license(&id(&p), json!({"email": "new.buyer@example.com"}))
        .await;
    assert_eq!(again["user_id"], uid.as_str());

    // An existing account is found, not duplicated.
    let (ann, _) = app.customer("ann@example.com").await;
    let l = app
        .license(&id(&p), json!({"email": "ANN@example.com"}))
        .await;
    assert_eq!(l["user_id"], ann.as_str());
    let l = app.license(&id(&p), json!({"user_id": ann})).await;
    assert_eq!(l["user_id"], ann.as_str());

    let users = app.admin_get("/api/users").await;
    let emails: Vec<&str> = users.expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails
            .iter()
            .filter(|e| **e == "new.buyer@example.com")
            .count(),
        1,
        "{emails:?}"
    );

    // Bad input.
    let r = app
        .admin_post(
            "/api/licenses",
            json!({"product_id": id(&p), "email": "not-an-email"}),
        )
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["email"]
    );
    let r = app
        .admin_post(
            "/api/licenses",
            json!({"product_id": id(&p), "user_id": "usr_nope"}),
        )
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["user_id"]
    );
}

#[tokio::test]
async fn license_for_an_unknown_product_is_422() {
    let app = TestApp::new().await;
    let r = app
        .admin_post("/api/licenses", json!({"product_id": "prd_nope"}))
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["product_id"]
    );
    let r = app.admin_post("/api/licenses", json!({})).await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["product_id"]
    );
    let p = app.product(json!({})).await;
    let r = app
        .admin_post(
            "/api/licenses",
            json!({"product_id": id(&p), "max_activations": 0, "metadata": [1]}),
        )
        .await;
    let f = fields(r.expect_problem(422, "VALIDATION_FAILED"));
    assert!(f.contains(&"max_activations".to_string()), "{f:?}");
    assert!(f.contains(&"metadata".to_string()), "{f:?}");
    let list = app.admin_get("/api/licenses").await;
    assert_eq!(list.expect(200)["data"], json!([]));
}

// ---------------------------------------------------------------- licenses: list

#[tokio::test]
async fn license_list_filters() {
    let app = TestApp::new().await;
    let a = app.product(json!({"name": "A"})).await;
    let b = app.product(json!({"name": "B"})).await;
    let (ann, _) = app.customer("ann@example.com").await;
    let (bob, _) = app.customer("bob@example.com").await;
    let a_ann = app.license(&id(&a), json!({"user_id": ann})).await;
    let b_ann = app.license(&id(&b), json!({"user_id": ann})).await;
    let a_bob = app.license(&id(&a), json!({"user_id": bob})).await;
    let a_none = app.license(&id(&a), json!({})).await;
    app.admin_post(&format!("/api/licenses/{}/suspend", id(&b_ann)), json!({}))
        .await
        .expect(200);
    app.admin_post(&format!("/api/licenses/{}/revoke", id(&a_bob)), json!({}))
        .await
        .expect(200);

    let set = |page: &Value| ids(page).into_iter().collect::<HashSet<_>>();
    let want = |ls: &[&Value]| ls.iter().map(|l| id(l)).collect::<HashSet<_>>();

    let all = app.admin_get("/api/licenses").await;
    assert_eq!(
        set(all.expect(200)),
        want(&[&a_ann, &b_ann, &a_bob, &a_none])
    );
    // Listings carry the key for admins.
    for l in all.body["data"].as_array().unwrap() {
        assert!(is_license_key(l["key"].as_str().unwrap()), "{l}");
    }

    let r = app.admin_get(&format!("/api/licenses?user_id={ann}")).await;
    assert_eq!(set(r.expect(200)), want(&[&a_ann, &b_ann]));
    let r = app
        .admin_get(&format!("/api/licenses?product_id={}", id(&a)))
        .await;
    assert_eq!(set(r.expect(200)), want(&[&a_ann, &a_bob, &a_none]));
    let r = app.admin_get("/api/licenses?status=active").await;
    assert_eq!(set(r.expect(200)), want(&[&a_ann, &a_none]));
    let r = app.admin_get("/api/licenses?status=suspended").await;
    assert_eq!(set(r.expect(200)), want(&[&b_ann]));
    let r = app.admin_get("/api/licenses?status=revoked").await;
    assert_eq!(set(r.expect(200)), want(&[&a_bob]));
    let r = app
        .admin_get(&format!(
            "/api/licenses?product_id={}&user_id={ann}&status=active",
            id(&a)
        ))
        .await;
    assert_eq!(set(r.expect(200)), want(&[&a_ann]));
    let r = app.admin_get("/api/licenses?user_id=usr_nobody").await;
    assert_eq!(r.expect(200)["data"], json!([]));

    let r = app.admin_get("/api/licenses?status=expired").await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["status"]
    );
}

#[tokio::test]
async fn license_list_cursor_pagination() {
    let app = TestApp::new().await;
    let p = app.product(json!({})).await;
    let mut created = HashSet::new();
    for _ in 0..5 {
        created.insert(id(&app.license(&id(&p), json!({})).await));
    }

    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/api/licenses?limit=2".to_string(),
            Some(c) => format!("/api/licenses?limit=2&cursor={c}"),
        };
        let r = app.admin_get(&path).await;
        let page = r.expect(200).clone();
        pages += 1;
        let got = ids(&page);
        assert!(!got.is_empty() && got.len() <= 2, "{page}");
        seen.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert_eq!(page["next_cursor"], Value::Null);
                break;
            }
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 5, "{seen:?}");
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 5, "duplicates across pages: {seen:?}");
    assert_eq!(unique, created);

    // Newest first.
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted);

    // A limit that covers everything ends at once.
    let r = app.admin_get("/api/licenses?limit=5").await;
    assert_eq!(r.expect(200)["next_cursor"], Value::Null);
    assert_eq!(ids(&r.body).len(), 5);
    let r = app.admin_get("/api/licenses?limit=100").await;
    r.expect(200);
}

#[tokio::test]
async fn license_list_rejects_bad_paging() {
    let app = TestApp::new().await;
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("cursor=%40%40%40", "cursor"),
        ("cursor=not-a-cursor!", "cursor"),
    ] {
        let r = app.admin_get(&format!("/api/licenses?{q}")).await;
        assert_eq!(
            fields(r.expect_problem(422, "VALIDATION_FAILED")),
            vec![field],
            "{q}"
        );
    }
}

// ---------------------------------------------------------------- licenses: get and patch

#[tokio::test]
async fn license_get_includes_the_key() {
    let app = TestApp::new().await;
    let (_, l) = app.product_and_license(json!({}), json!({})).await;
    let r = app.admin_get(&format!("/api/licenses/{}", id(&l))).await;
    let got = r.expect(200);
    assert_eq!(got["key"], l["key"]);
    assert_eq!(got["key_last4"], l["key_last4"]);
    assert_eq!(got["status"], "active");
    app.admin_get("/api/licenses/lic_nope")
        .await
        .expect_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn license_patch() {
    let app = TestApp::new().await;
    let (_, l) = app
        .product_and_license(json!({"duration_days": 30}), json!({"metadata": {"a": 1}}))
        .await;
    assert!(l["expires_at"].is_string());
    let path = format!("/api/licenses/{}", id(&l));

    let r = app
        .admin_patch(
            &path,
            json!({"max_activations": 7, "entitlements": ["gold"], "metadata": {"seat": "x", "n": [1, 2]}}),
        )
        .await;
    let u = r.expect(200).clone();
    assert_eq!(u["max_activations"], 7);
    assert_eq!(u["entitlements"], json!(["gold"]));
    assert_eq!(u["metadata"], json!({"seat": "x", "n": [1, 2]}));
    assert_eq!(u["expires_at"], l["expires_at"], "absent field kept");
    assert_eq!(u["key"], l["key"]);
    assert_eq!(u["status"], "active");

    let r = app.admin_patch(&path, json!({"expires_at": null})).await;
    let u = r.expect(200).clone();
    assert_eq!(u["expires_at"], Value::Null);
    assert_eq!(u["max_activations"], 7);

    // A past expiry is accepted; the status stays active and validate says EXPIRED.
    let r = app
        .admin_patch(&path, json!({"expires_at": "2021-06-01T12:00:00Z"}))
        .await;
    let u = r.expect(200).clone();
    assert_eq!(u["expires_at"], "2021-06-01T12:00:00Z");
    assert_eq!(u["status"], "active");
    let v = app.validate(json!({"key": l["key"]})).await;
    assert_eq!(v["code"], "EXPIRED");

    let got = app.admin_get(&path).await;
    assert_eq!(
        got.expect(200)["metadata"],
        json!({"seat": "x", "n": [1, 2]})
    );

    let huge = json!({"blob": "m".repeat(17 * 1024)});
    let r = app.admin_patch(&path, json!({"metadata": huge})).await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["metadata"]
    );
    for bad in [json!([1]), json!("text"), json!(3)] {
        let r = app.admin_patch(&path, json!({"metadata": bad})).await;
        assert_eq!(
            fields(r.expect_problem(422, "VALIDATION_FAILED")),
            vec!["metadata"],
            "{bad}"
        );
    }
    let r = app.admin_patch(&path, json!({"max_activations": 0})).await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["max_activations"]
    );
    let r = app
        .admin_patch(&path, json!({"expires_at": "tomorrow"}))
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["expires_at"]
    );
    app.admin_patch("/api/licenses/lic_nope", json!({"max_activations": 2}))
        .await
        .expect_problem(404, "NOT_FOUND");
}

// ---------------------------------------------------------------- licenses: lifecycle

#[tokio::test]
async fn revoke_is_final() {
    let app = TestApp::new().await;
    let (_, l) = app
        .product_and_license(json!({}), json!({"expires_at": rfc3339(now_ms() + DAY_MS)}))
        .await;
    let base = format!("/api/licenses/{}", id(&l));

    let r = app
        .admin_post(&format!("{base}/revoke"), json!({"reason": "chargeback"}))
        .await;
    let body = r.expect(200).clone();
    assert_eq!(body["license"]["status"], "revoked");
    assert_eq!(body["license"]["id"], l["id"]);
    assert_eq!(body["license"]["key"], l["key"]);

    let v = app.validate(json!({"key": l["key"]})).await;
    assert_eq!(v["code"], "REVOKED");

    for (action, body) in [
        ("suspend", json!({})),
        ("reinstate", json!({})),
        ("renew", json!({"extend_days": 10})),
        ("reissue", json!({})),
    ] {
        let r = app.admin_post(&format!("{base}/{action}"), body).await;
        let p = r.expect(409).clone();
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{action}"
        );
        assert_eq!(p["status"], 409, "{action}");
    }
    let got = app.admin_get(&base).await;
    let got = got.expect(200);
    assert_eq!(got["status"], "revoked");
    assert_eq!(got["key"], l["key"]);
    assert_eq!(got["expires_at"], l["expires_at"]);
}

#[tokio::test]
async fn revoke_takes_an_empty_body() {
    let app = TestApp::new().await;
    let (_, l) = app.product_and_license(json!({}), json!({})).await;
    let token = app.admin_token.clone();
    let r = app
        .call(
            Method::POST,
            &format!("/api/licenses/{}/revoke", id(&l)),
            None,
            Some(&token),
        )
        .await;
    assert_eq!(r.expect(200)["license"]["status"], "revoked");
}

#[tokio::test]
async fn suspend_and_reinstate() {
    let app = TestApp::new().await;
    let (_, l) = app.product_and_license(json!({}), json!({})).await;
    let base = format!("/api/licenses/{}", id(&l));

    let r = app.admin_post(&format!("{base}/suspend"), json!({})).await;
    assert_eq!(r.expect(200)["license"]["status"], "suspended");
    let v = app.validate(json!({"key": l["key"]})).await;
    assert_eq!(v["code"], "SUSPENDED");
    let list = app.admin_get("/api/licenses?status=suspended").await;
    assert_eq!(ids(list.expect(200)), vec![id(&l)]);

    let r = app
        .admin_post(&format!("{base}/reinstate"), json!({}))
        .await;
    let body = r.expect(200);
    assert_eq!(body["license"]["status"], "active");
    assert_eq!(body["license"]["key"], l["key"]);
    let v = app.validate(json!({"key": l["key"]})).await;
    assert_eq!(v["code"], "VALID");

    // A suspended license can still be revoked.
    app.admin_post(&format!("{base}/suspend"), json!({}))
        .await
        .expect(200);
    let r = app.admin_post(&format!("{base}/revoke"), json!({})).await;
    assert_eq!(r.expect(200)["license"]["status"], "revoked");

    app.admin_post("/api/licenses/lic_nope/suspend", json!({}))
        .await
        .expect_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn renew_extends_from_a_future_expiry() {
    let app = TestApp::new().await;
    let current = now_ms() + 30 * DAY_MS;
    let (_, l) = app
        .product_and_license(json!({}), json!({"expires_at": rfc3339(current)}))
        .await;
    assert_eq!(ms(&l["expires_at"]), current);
    let r = app
        .admin_post(
            &format!("/api/licenses/{}/renew", id(&l)),
            json!({"extend_days": 10}),
        )
        .await;
    let body = r.expect(200);
    assert_eq!(ms(&body["license"]["expires_at"]), current + 10 * DAY_MS);
    assert_eq!(body["license"]["status"], "active");
}

#[tokio::test]
async fn renew_extends_from_now_when_expired() {
    let app = TestApp::new().await;
    let (_, l) = app
        .product_and_license(
            json!({}),
            json!({"expires_at": rfc3339(now_ms() - 30 * DAY_MS)}),
        )
        .await;
    let t0 = now_ms();
    let r = app
        .admin_post(
            &format!("/api/licenses/{}/renew", id(&l)),
            json!({"extend_days": 10}),
        )
        .await;
    let t1 = now_ms();
    let exp = ms(&r.expect(200)["license"]["expires_at"]);
    assert!(
        (t0 + 10 * DAY_MS..=t1 + 10 * DAY_MS).contains(&exp),
        "expires_at {exp} not now + 10 days ({t0}..{t1})"
    );
    let v = app.validate(json!({"key": l["key"]})).await;
    assert_eq!(v["code"], "VALID");
}

#[tokio::test]
async fn renew_without_expiry_and_to_a_date() {
    let app = TestApp::new().await;
    let (_, l) = app.product_and_license(json!({}), json!({})).await;
    assert_eq!(l["expires_at"], Value::Null);
    let path = format!("/api/licenses/{}/renew", id(&l));
    let t0 = now_ms();
    let r = app.admin_post(&path, json!({"extend_days": 10})).await;
    let t1 = now_ms();
    let exp = ms(&r.expect(200)["license"]["expires_at"]);
    assert!((t0 + 10 * DAY_MS..=t1 + 10 * DAY_MS).contains(&exp));

    let r = app
        .admin_post(&path, json!({"expires_at": "2031-01-01T00:00:00Z"}))
        .await;
    assert_eq!(
        r.expect(200)["license"]["expires_at"],
        "2031-01-01T00:00:00Z"
    );
}

#[tokio::test]
async fn renew_near_the_end_of_time_never_goes_backwards() {
    let app = TestApp::new().await;
    let (_, l) = app
        .product_and_license(json!({}), json!({"expires_at": "9999-12-30T00:00:00Z"}))
        .await;
    let before = ms(&l["expires_at"]);
    let path = format!("/api/licenses/{}", id(&l));
    let r = app
        .admin_post(&format!("{path}/renew"), json!({"extend_days": 36500}))
        .await;
    // Either refused, or a later expiry: never a wrapped or bogus date.
    if r.status.as_u16() == 422 {
        r.expect_problem(422, "VALIDATION_FAILED");
    } else {
        let after = ms(&r.expect(200)["license"]["expires_at"]);
        assert!(
            after > before,
            "renewing moved the expiry back: {}",
            r.body["license"]["expires_at"]
        );
    }
    let got = app.admin_get(&path).await;
    assert!(ms(&got.expect(200)["expires_at"]) >= before, "{}", got.text);
}

#[tokio::test]
async fn renew_needs_exactly_one_field() {
    let app = TestApp::new().await;
    let (_, l) = app.product_and_license(json!({}), json!({})).await;
    let path = format!("/api/licenses/{}/renew", id(&l));
    for body in [
        json!({}),
        json!({"extend_days": 10, "expires_at": "2031-01-01T00:00:00Z"}),
    ] {
        let r = app.admin_post(&path, body.clone()).await;
        let p = r.expect_problem(422, "VALIDATION_FAILED");
        assert!(!fields(p).is_empty(), "{body}");
    }
    let r = app.admin_post(&path, json!({"extend_days": 0})).await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["extend_days"]
    );
    // Nothing changed.
    let got = app.admin_get(&format!("/api/licenses/{}", id(&l))).await;
    assert_eq!(got.expect(200)["expires_at"], Value::Null);
}

#[tokio::test]
async fn reissue_gives_a_new_key() {
    let app = TestApp::new().await;
    let (_, l) = app.product_and_license(json!({}), json!({})).await;
    let old = l["key"].as_str().unwrap().to_string();
    let r = app
        .admin_post(&format!("/api/licenses/{}/reissue", id(&l)), json!({}))
        .await;
    let lic = r.expect(200)["license"].clone();
    let new = lic["key"].as_str().expect("new key").to_string();
    assert!(is_license_key(&new), "{new}");
    assert_ne!(new, old);
    assert_eq!(lic["key_last4"].as_str().unwrap(), &new[new.len() - 4..]);
    assert_eq!(lic["id"], l["id"]);
    assert_eq!(lic["status"], "active");

    assert_eq!(app.validate(json!({"key": old})).await["code"], "NOT_FOUND");
    assert_eq!(app.validate(json!({"key": new})).await["code"], "VALID");
    let got = app.admin_get(&format!("/api/licenses/{}", id(&l))).await;
    assert_eq!(got.expect(200)["key"], new.as_str());
}

// ---------------------------------------------------------------- visibility

#[tokio::test]
async fn customers_see_only_their_own_licenses() {
    let app = TestApp::new().await;
    let p = app.product(json!({})).await;
    let (ann, ann_token) = app.customer("ann@example.com").await;
    let (bob, bob_token) = app.customer("bob@example.com").await;
    let ann1 = app.license(&id(&p), json!({"user_id": ann})).await;
    let ann2 = app.license(&id(&p), json!({"user_id": ann})).await;
    let bobs = app.license(&id(&p), json!({"user_id": bob})).await;
    let _unowned = app.license(&id(&p), json!({})).await;

    let r = app.get("/api/licenses", Some(&ann_token)).await;
    let mine: HashSet<_> = ids(r.expect(200)).into_iter().collect();
    assert_eq!(mine, [id(&ann1), id(&ann2)].into_iter().collect());
    for l in r.body["data"].as_array().unwrap() {
        assert_eq!(l["user_id"], ann.as_str());
        assert!(l["key"].is_string(), "the owner sees the key: {l}");
    }
    // A filter cannot widen the view.
    let r = app
        .get(&format!("/api/licenses?user_id={bob}"), Some(&ann_token))
        .await;
    assert_eq!(r.expect(200)["data"], json!([]));
    // Paging works for customers too.
    let r = app.get("/api/licenses?limit=1", Some(&ann_token)).await;
    let first = r.expect(200).clone();
    assert_eq!(ids(&first).len(), 1);
    let c = first["next_cursor"].as_str().unwrap();
    let r = app
        .get(
            &format!("/api/licenses?limit=1&cursor={c}"),
            Some(&ann_token),
        )
        .await;
    assert_eq!(ids(r.expect(200)).len(), 1);
    assert_eq!(r.body["next_cursor"], Value::Null);

    let r = app
        .get(&format!("/api/licenses/{}", id(&ann1)), Some(&ann_token))
        .await;
    assert_eq!(r.expect(200)["key"], ann1["key"]);
    app.get(
        &format!("/api/licenses/{}/activations", id(&ann1)),
        Some(&ann_token),
    )
    .await
    .expect(200);

    // Bob's license does not exist for Ann — the same answer as a missing id.
    let theirs = app
        .get(&format!("/api/licenses/{}", id(&bobs)), Some(&ann_token))
        .await;
    let missing = app.get("/api/licenses/lic_nope", Some(&ann_token)).await;
    theirs.expect_problem(404, "NOT_FOUND");
    missing.expect_problem(404, "NOT_FOUND");
    assert_eq!(theirs.body["detail"], missing.body["detail"]);
    app.get(
        &format!("/api/licenses/{}/activations", id(&bobs)),
        Some(&ann_token),
    )
    .await
    .expect_problem(404, "NOT_FOUND");
    // Bob sees his.
    app.get(&format!("/api/licenses/{}", id(&bobs)), Some(&bob_token))
        .await
        .expect(200);

    // Seats: Bob's device is invisible to Ann, and only Bob (or an admin) can free it.
    let act = app
        .activate(bobs["key"].as_str().unwrap(), "bob-laptop")
        .await;
    let act_id = id(&act.expect(201)["activation"]);
    let r = app
        .get(
            &format!("/api/licenses/{}/activations", id(&bobs)),
            Some(&bob_token),
        )
        .await;
    assert_eq!(ids(r.expect(200)), vec![act_id.clone()]);
    let r = app
        .get(
            &format!("/api/licenses/{}/activations", id(&ann1)),
            Some(&ann_token),
        )
        .await;
    assert_eq!(r.expect(200)["data"], json!([]));
    app.call(
        Method::DELETE,
        &format!("/api/activations/{act_id}"),
        None,
        Some(&ann_token),
    )
    .await
    .expect_problem(404, "NOT_FOUND");
    let r = app.admin_get(&format!("/api/licenses/{}", id(&bobs))).await;
    assert_eq!(r.expect(200)["activations_count"], 1);
    app.call(
        Method::DELETE,
        &format!("/api/activations/{act_id}"),
        None,
        Some(&bob_token),
    )
    .await
    .expect(204);
    let r = app.admin_get(&format!("/api/licenses/{}", id(&bobs))).await;
    assert_eq!(r.expect(200)["activations_count"], 0);

    // Anonymous callers get nothing.
    app.get("/api/licenses", None)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    app.get(&format!("/api/licenses/{}", id(&ann1)), None)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn customers_cannot_administer_licenses() {
    let app = TestApp::new().await;
    let p = app.product(json!({})).await;
    let (ann, token) = app.customer("ann@example.com").await;
    let own = app.license(&id(&p), json!({"user_id": ann})).await;
    let path = format!("/api/licenses/{}", id(&own));

    app.post(
        "/api/licenses",
        json!({"product_id": id(&p), "user_id": ann}),
        Some(&token),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
    app.call(
        Method::PATCH,
        &path,
        Some(json!({"max_activations": 100})),
        Some(&token),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
    for (action, body) in [
        ("revoke", json!({})),
        ("suspend", json!({})),
        ("reinstate", json!({})),
        ("renew", json!({"extend_days": 10})),
        ("reissue", json!({})),
    ] {
        app.post(&format!("{path}/{action}"), body, Some(&token))
            .await
            .expect_problem(403, "FORBIDDEN");
    }
    // Anonymous writes are 401.
    app.post("/api/licenses", json!({"product_id": id(&p)}), None)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    app.call(
        Method::PATCH,
        &path,
        Some(json!({"max_activations": 100})),
        None,
    )
    .await
    .expect_problem(401, "UNAUTHENTICATED");

    let got = app.get(&path, Some(&token)).await;
    let got = got.expect(200);
    assert_eq!(got["max_activations"], own["max_activations"]);
    assert_eq!(got["status"], "active");
    assert_eq!(got["key"], own["key"]);
    let all = app.admin_get("/api/licenses").await;
    assert_eq!(ids(all.expect(200)), vec![id(&own)]);
}

#[tokio::test]
async fn users_are_admin_only() {
    let app = TestApp::new().await;
    let (ann, token) = app.customer("ann@example.com").await;
    app.get("/api/users", Some(&token))
        .await
        .expect_problem(403, "FORBIDDEN");
    app.get(&format!("/api/users/{ann}"), Some(&token))
        .await
        .expect_problem(403, "FORBIDDEN");
    app.get("/api/users", None)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    app.get(&format!("/api/users/{ann}"), None)
        .await
        .expect_problem(401, "UNAUTHENTICATED");

    let r = app.admin_get("/api/users").await;
    let emails: HashSet<_> = r.expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        emails,
        ["ann@example.com", common::ADMIN_EMAIL]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let u = app.admin_get(&format!("/api/users/{ann}")).await;
    let u = u.expect(200);
    assert_eq!(u["email"], "ann@example.com");
    assert_eq!(u["role"], "customer");
    app.admin_get("/api/users/usr_nope")
        .await
        .expect_problem(404, "NOT_FOUND");
}
