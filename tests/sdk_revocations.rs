//! The Rust SDK (`ecosire-client`) with the real `ecosire serve` binary: signed revocation lists
//! (a revoked license is refused offline at the next list the client sees, from the server or,
//! with the server down, from a mirror; older, tampered and foreign lists are refused) and staged
//! key rotation (a client that pinned the old JWKS keeps verifying through it). Runs on SQLite,
//! and on PostgreSQL with `ECOSIRE_TEST_DATABASE_URL`.
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use common::process::{Deployment, Server};
use ecosire_client::{Error, LicenseClient, ListError, PublicKeys, Status};
use serde_json::{Value, json};

/// A static-file host standing in for a CDN mirror: serves whatever `body` holds.
struct Mirror {
    body: Arc<Mutex<String>>,
    url: String,
}

impl Mirror {
    async fn start() -> Mirror {
        let body = Arc::new(Mutex::new(String::new()));
        let app = axum::Router::new()
            .route(
                "/lists/product.jws",
                axum::routing::get(|State(b): State<Arc<Mutex<String>>>| async move {
                    b.lock().unwrap().clone()
                }),
            )
            .with_state(body.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/lists/product.jws",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Mirror { body, url }
    }

    fn serve(&self, list: &str) {
        *self.body.lock().unwrap() = list.to_string();
    }
}

struct Setup {
    server: Server,
    deployment: Deployment,
    http: reqwest::Client,
    admin: String,
    product_id: String,
    jwks: String,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let deployment = Deployment::new().await;
        let server = deployment
            .start(&[("ECOSIRE_DB_MAX_CONNECTIONS", "4")])
            .await;
        let http = reqwest::Client::new();
        let admin = server.admin_token(&http).await;
        let product_id = server.product(&http, &admin, 5).await;
        let jwks = server.jwks(&http).await;
        Setup {
            server,
            deployment,
            http,
            admin,
            product_id,
            jwks,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A client on machine `machine` (its own cache folder), pinning the JWKS of the start.
    fn client(&self, machine: &str, mirror: Option<&str>) -> LicenseClient {
        let mut b = LicenseClient::builder()
            .base_url(&self.server.base)
            .product(&self.product_id)
            .public_keys(PublicKeys::from_jwks(&self.jwks).unwrap())
            .cache_dir(self.dir.path().join(machine))
            .machine_id(machine)
            .timeout(Duration::from_secs(5));
        if let Some(m) = mirror {
            b = b.revocation_mirror(m);
        }
        b.build().unwrap()
    }

    async fn list(&self) -> String {
        let url = self.server.url(&format!(
            "/api/licenses/revocations?product={}",
            self.product_id
        ));
        let res = self.http.get(url).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        res.text().await.unwrap()
    }

    async fn lifecycle(&self, id: &str, action: &str) {
        let (st, r) = self
            .server
            .post(
                &self.http,
                &format!("/api/licenses/{id}/{action}"),
                Some(&self.admin),
                &json!({}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
    }
}

fn offline(status: &Status) -> bool {
    matches!(status, Status::Offline { .. })
}

#[tokio::test]
async fn a_revoked_license_is_refused_offline_at_the_next_list_the_client_sees() {
    let mut s = Setup::new().await;
    let mirror = Mirror::start().await;
    let (revoked_id, revoked_key) = s.server.license(&s.http, &s.admin, &s.product_id).await;
    let (suspended_id, suspended_key) = s.server.license(&s.http, &s.admin, &s.product_id).await;
    let (_, kept_key) = s.server.license(&s.http, &s.admin, &s.product_id).await;
    let a = s.client("a", Some(&mirror.url));
    let b = s.client("b", Some(&mirror.url));
    let c = s.client("c", Some(&mirror.url));
    for (client, key) in [(&a, &revoked_key), (&b, &suspended_key), (&c, &kept_key)] {
        let st = client
            .activate(key, client.machine_fingerprint())
            .await
            .unwrap();
        assert!(matches!(st, Status::Valid(_)), "{st:?}");
    }
    // Online, each check also fetched the list: seq 0, nothing listed.
    assert_eq!(a.update_revocations().await.unwrap(), Some(0));
    let seq0 = s.list().await;

    // Revoked and suspended on the server; then the server goes down before the clients ask.
    s.lifecycle(&revoked_id, "revoke").await;
    s.lifecycle(&suspended_id, "suspend").await;
    let seq2 = s.list().await;
    s.server.kill9();

    // Without a newer list, the tokens still hold offline until their exp (what a token is).
    mirror.serve(&seq0);
    assert!(offline(&a.check().await.unwrap()));
    // The mirror publishes the new list: the next offline check refuses, long before exp.
    mirror.serve(&seq2);
    let st = a.check().await.unwrap();
    let Status::Invalid { code, detail } = &st else {
        panic!("{st:?}")
    };
    assert_eq!(code, "REVOKED");
    assert!(detail.contains("seq 2"), "{detail}");
    let st = b.check().await.unwrap();
    assert!(
        matches!(&st, Status::Invalid { code, .. } if code == "SUSPENDED"),
        "{st:?}"
    );
    assert!(offline(&c.check().await.unwrap()), "others keep working");

    // A stale mirror cannot take it back: an older seq is refused, the newer list stays.
    mirror.serve(&seq0);
    let err = a.update_revocations().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::RevocationList(ListError::Rollback { seq: 0, seen: 2 })
        ),
        "{err:?}"
    );
    let st = b.check().await.unwrap();
    assert!(matches!(&st, Status::Invalid { code, .. } if code == "SUSPENDED"));
    // Nor can a forged one (another payload under the real signature).
    let mut parts: Vec<&str> = seq2.split('.').collect();
    let forged_claims = base64_url(
        &json!({"iss": "ecosire", "aud": "ecosire:revocations", "product": s.product_id,
            "seq": 99, "iat": 0, "exp": 9_999_999_999_i64, "revoked": [], "suspended": []})
        .to_string(),
    );
    parts[1] = &forged_claims;
    mirror.serve(&parts.join("."));
    let err = b.update_revocations().await.unwrap_err();
    assert!(
        matches!(err, Error::RevocationList(ListError::Token(_))),
        "{err:?}"
    );
    // The revoked license's token is gone for good; a list is kept across restarts of the app.
    let restarted = s.client("b", Some(&mirror.url));
    let st = restarted.check().await.unwrap();
    assert!(matches!(&st, Status::Invalid { code, .. } if code == "SUSPENDED"));
    assert!(matches!(
        a.check().await.unwrap_err(),
        Error::NoStoredToken { .. }
    ));

    // Back online: reinstated, and the next list (from the server this time) frees the device.
    s.server.restart().await;
    s.lifecycle(&suspended_id, "reinstate").await;
    let back = LicenseClient::builder()
        .base_url(&s.server.base)
        .product(&s.product_id)
        .public_keys(PublicKeys::from_jwks(&s.jwks).unwrap())
        .cache_dir(s.dir.path().join("b"))
        .machine_id("b")
        .build()
        .unwrap();
    assert!(matches!(back.check().await.unwrap(), Status::Valid(_)));
    assert_eq!(back.update_revocations().await.unwrap(), Some(3));
    s.server.kill9();
    assert!(offline(&back.check().await.unwrap()));
    let _ = &s.deployment;
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn a_client_that_pinned_the_old_jwks_keeps_verifying_through_a_staged_rotation() {
    let mut s = Setup::new().await;
    let (_, key) = s.server.license(&s.http, &s.admin, &s.product_id).await;
    let client = s.client("a", None);
    assert!(matches!(
        client
            .activate(&key, client.machine_fingerprint())
            .await
            .unwrap(),
        Status::Valid(_)
    ));
    let kid_of = |st: &Status| {
        let token = &st.grant().expect("valid").token;
        let h = token.split('.').next().unwrap();
        use base64::Engine;
        let h: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap();
        h["kid"].as_str().unwrap().to_string()
    };
    let old = kid_of(&client.check().await.unwrap());

    // Staged: published at once (the running server re-reads its keys folder), not yet signing.
    let (new, _) =
        ecosire::keyring::rotate_license_key(&s.deployment.keys_dir, Duration::from_secs(86_400))
            .unwrap();
    let st = client.check().await.unwrap();
    assert_eq!(kid_of(&st), old, "the old key signs during the lead");
    // The list fetched with that check is signed by the old key too: verified with pinned keys.
    assert_eq!(client.update_revocations().await.unwrap(), Some(0));

    // Activation: tokens and lists are signed by the new kid; the client learns it from the
    // JWKS (once) and keeps verifying, online and then offline.
    ecosire::keyring::activate_license_key(&s.deployment.keys_dir, &new).unwrap();
    let jwks: Value = serde_json::from_str(&s.server.jwks(&s.http).await).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let st = client.check().await.unwrap();
    assert!(matches!(st, Status::Valid(_)), "{st:?}");
    assert_eq!(kid_of(&st), new);
    assert!(client.update_revocations().await.is_ok());
    s.server.kill9();
    let st = client.check().await.unwrap();
    assert!(offline(&st), "{st:?}");
    assert_eq!(kid_of(&st), new);
}
