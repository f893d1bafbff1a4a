//! Signed revocation lists (`GET /api/licenses/revocations`): what they list, their `seq`, the
//! signature checked with the served JWKS, `ETag`/304, the compact filter for large sets, and a
//! `seq` that survives a restart. Runs on SQLite, and on PostgreSQL with
//! `ECOSIRE_TEST_DATABASE_URL`.
mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::TestApp;
use ecosire::licensing::revocations::{self, RevocationClaims};
use serde_json::{Value, json};

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// Verifies a list with the JWKS the server publishes, as any client would.
async fn verify(app: &TestApp, jws: &str) -> RevocationClaims {
    let jwks = app
        .get("/.well-known/jwks.json", None)
        .await
        .expect(200)
        .clone();
    let key_for = |kid: &str| common::jwks_key(&jwks, kid);
    ecosire::jws::verify(jws, revocations::TYP, key_for).expect("a list the JWKS verifies")
}

/// The list of `product` (id or slug): the raw answer and its verified claims.
async fn list(app: &TestApp, product: &str) -> (common::TestResponse, RevocationClaims) {
    let r = app
        .get(
            &format!("/api/licenses/revocations?product={product}"),
            None,
        )
        .await;
    r.expect(200);
    let claims = verify(app, &r.text).await;
    (r, claims)
}

async fn lifecycle(app: &TestApp, id: &str, action: &str) {
    app.admin_post(&format!("/api/licenses/{id}/{action}"), json!({}))
        .await
        .expect(200);
}

#[tokio::test]
async fn a_list_names_revoked_and_suspended_licenses_under_a_growing_seq() {
    let app = TestApp::new().await;
    let p = app.product(json!({"slug": "desk-pro"})).await;
    let pid = str_of(&p["id"]);
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(str_of(&app.license(&pid, json!({})).await["id"]));
    }
    let (other, _) = app.product_and_license(json!({}), json!({})).await;

    let (r, c) = list(&app, "desk-pro").await;
    assert_eq!(r.header("content-type"), Some("application/jwt"));
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=60, stale-while-revalidate=60")
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(r.text.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "revocations+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(
        (c.seq, c.product.as_str(), c.aud.as_str(), c.iss.as_str()),
        (0, pid.as_str(), "ecosire:revocations", "ecosire")
    );
    assert_eq!(c.revoked, Some(vec![]));
    assert_eq!(c.suspended, Some(vec![]));
    assert!(c.iat <= common::now_s() && c.iat > common::now_s() - 3600);
    assert_eq!(c.exp, c.iat + 3 * 86_400);

    lifecycle(&app, &ids[0], "revoke").await;
    lifecycle(&app, &ids[1], "suspend").await;
    let (r, c) = list(&app, &pid).await;
    assert_eq!(c.seq, 2);
    let iat = c.iat;
    assert_eq!(c.revoked, Some(vec![ids[0].clone()]));
    assert_eq!(c.suspended, Some(vec![ids[1].clone()]));
    // By slug, the same bytes: a list is named by (product, seq, hour, key), not by the URL.
    let (by_slug, _) = list(&app, "desk-pro").await;
    assert_eq!(by_slug.text, r.text);
    let etag = r.header("etag").expect("an ETag").to_string();
    assert_eq!(by_slug.header("etag"), Some(etag.as_str()));

    // Revalidation: 304 without a body for the current ETag (also weak, or in a list).
    for inm in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}")] {
        let req = axum::http::Request::get(format!("/api/licenses/revocations?product={pid}"))
            .header("if-none-match", inm)
            .body(axum::body::Body::empty())
            .unwrap();
        let not_modified = app.send(req).await;
        assert_eq!(not_modified.status.as_u16(), 304);
        assert!(not_modified.text.is_empty());
        assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
        assert!(not_modified.header("cache-control").is_some());
    }

    // What does not change a status changes nothing here either …
    app.admin_post(
        &format!("/api/licenses/{}/renew", ids[2]),
        json!({"extend_days": 5}),
    )
    .await
    .expect(200);
    lifecycle(&app, &ids[1], "suspend").await;
    let (same, c) = list(&app, &pid).await;
    assert_eq!(c.seq, 2);
    if c.iat == iat {
        // (Unless the hour turned meanwhile: then the same seq is signed anew.)
        assert_eq!(
            same.header("etag"),
            Some(etag.as_str()),
            "the very same list"
        );
    }
    // … and a reinstatement takes the license off the list under a new seq.
    lifecycle(&app, &ids[1], "reinstate").await;
    let (moved, c) = list(&app, &pid).await;
    assert_ne!(moved.header("etag"), Some(etag.as_str()));
    assert_eq!((c.seq, c.suspended), (3, Some(vec![])));
    assert_eq!(c.revoked, Some(vec![ids[0].clone()]));
    // A suspended license revoked moves between the sets.
    lifecycle(&app, &ids[2], "suspend").await;
    lifecycle(&app, &ids[2], "revoke").await;
    let (_, c) = list(&app, &pid).await;
    assert_eq!(c.seq, 5);
    let mut revoked = vec![ids[0].clone(), ids[2].clone()];
    revoked.sort();
    assert_eq!(c.revoked, Some(revoked));

    // Other products have lists of their own.
    let (_, c) = list(&app, other["id"].as_str().unwrap()).await;
    assert_eq!((c.seq, c.revoked), (0, Some(vec![])));

    // Unknown product, missing parameter; no credentials needed anywhere above.
    app.get("/api/licenses/revocations?product=nope", None)
        .await
        .expect_problem(404, "NOT_FOUND");
    let r = app.get("/api/licenses/revocations", None).await;
    r.expect_problem(422, "VALIDATION_FAILED");
    assert_eq!(common::fields(&r.body), ["product"]);

    // The seq lives in the database: a restarted instance (or another one) goes on from it.
    let again = TestApp::from_config(app.state.config.clone(), tempfile::tempdir().unwrap()).await;
    let (r2, c2) = list(&again, &pid).await;
    assert_eq!(c2.seq, 5);
    let (r1, c1) = list(&app, &pid).await;
    if c1.iat == c2.iat {
        // Same key, same hour: byte-identical, so CDNs and load balancers see one ETag.
        assert_eq!(r1.text, r2.text);
        assert_eq!(r1.header("etag"), r2.header("etag"));
    }
}

#[tokio::test]
async fn a_large_set_is_sent_as_a_golomb_coded_filter() {
    let app = TestApp::new().await;
    let p = app.product(json!({})).await;
    let pid = str_of(&p["id"]);
    let n = revocations::EXPLICIT_LIMIT + 1;
    // Bulk setup as `ecosire license issue` does it, then one revocation through the API.
    let mut tx = app.state.db.begin().await.unwrap();
    let terms = ecosire::licensing::lifecycle::NewLicense {
        product_id: &pid,
        user_id: None,
        granted_email: None,
        max_activations: 1,
        expires_at: None,
        entitlements: "[]",
        metadata: "{}",
        order_id: None,
        subscription_id: None,
    };
    ecosire::licensing::lifecycle::create_many(&mut tx, &app.state.keys.data, &terms, n)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("UPDATE licenses SET status = 'revoked' WHERE product_id = $1")
        .bind(&pid)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let extra = str_of(&app.license(&pid, json!({})).await["id"]);
    let kept = str_of(&app.license(&pid, json!({})).await["id"]);
    lifecycle(&app, &extra, "revoke").await;

    let (r, c) = list(&app, &pid).await;
    assert_eq!(c.seq, 1);
    assert!(c.revoked.is_none());
    let f = c.revoked_filter.as_ref().expect("a filter above the limit");
    assert_eq!(
        (f.alg.as_str(), f.p, f.count),
        ("gcs-sha256", 20, n as u64 + 1)
    );
    let revoked: Vec<String> =
        sqlx::query_scalar("SELECT id FROM licenses WHERE product_id = $1 AND status = 'revoked'")
            .bind(&pid)
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(revoked.len(), n + 1);
    for id in &revoked {
        assert_eq!(revocations::gcs_contains(f, id), Some(true), "{id}");
    }
    assert_eq!(revocations::gcs_contains(f, &kept), Some(false));
    assert_eq!(c.suspended, Some(vec![]));
    // ≈ 2.7 bytes an id, ≈ 4.8 once base64url twice (in the claims, then as the JWS payload),
    // instead of ≈ 44 for a list of ids.
    assert!(r.text.len() < (n + 1) * 6, "{} bytes", r.text.len());
}
