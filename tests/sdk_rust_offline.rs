//! The Rust SDK's air-gapped activation against the real `ecosire serve` binary: a client that
//! can never reach the server makes a request, a connected machine turns it into a license file,
//! the client imports it and checks offline from it, and gives it up with a proof that frees the
//! seat. And the churn budget's 409 as the typed `Error::ChurnLimitReached`. Runs on SQLite, and
//! on PostgreSQL with `ECOSIRE_TEST_DATABASE_URL`.
mod common;

use std::time::{Duration, SystemTime};

use common::process::Server;
use ecosire_client::{Error, LicenseClient, OfflineReason, PublicKeys, Status, TokenError};
use serde_json::{Value, json};

const DAY: u64 = 86_400;

/// A port nothing listens on: the air-gapped machine's view of the server.
fn unreachable_base() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

struct Setup {
    server: Server,
    http: reqwest::Client,
    admin: String,
    product_id: String,
    license_id: String,
    key: String,
    jwks: String,
}

async fn setup(product: Value) -> Setup {
    let server = Server::start(&[("ECOSIRE_DB_MAX_CONNECTIONS", "4")]).await;
    let http = reqwest::Client::new();
    let admin = server.admin_token(&http).await;
    let p = server.product_with(&http, &admin, product).await;
    let product_id = p["id"].as_str().unwrap().to_string();
    let (license_id, key) = server.license(&http, &admin, &product_id).await;
    let jwks = server.jwks(&http).await;
    Setup {
        server,
        http,
        admin,
        product_id,
        license_id,
        key,
        jwks,
    }
}

impl Setup {
    fn client(&self, base: &str, dir: &std::path::Path, machine: &str) -> LicenseClient {
        LicenseClient::builder()
            .base_url(base)
            .product(&self.product_id)
            .public_keys(PublicKeys::from_jwks(&self.jwks).unwrap())
            .cache_dir(dir)
            .machine_id(machine)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    async fn seats(&self) -> i64 {
        let (_, l) = self
            .server
            .get(
                &self.http,
                &format!("/api/licenses/{}", self.license_id),
                &self.admin,
            )
            .await;
        l["activations_count"].as_i64().unwrap()
    }

    /// What a connected machine does with a request: the license file.
    async fn carry(&self, request: &str) -> String {
        let (st, answer) = self
            .server
            .post(
                &self.http,
                "/api/licenses/offline-activations",
                None,
                &json!({"request": request}),
            )
            .await;
        assert_eq!(st, 201, "{answer}");
        answer["license_file"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn an_air_gapped_client_activates_checks_offline_and_gives_the_seat_back() {
    let s = setup(json!({"max_activations": 1, "offline_activation": true,
                         "offline_activation_lease_days": 30, "max_deactivations_per_30d": 1}))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = s.client(&unreachable_base(), dir.path(), "air-gapped-machine");

    // Nothing to import or give up before a request.
    let err = client.import_license_file("a.b.c").await.unwrap_err();
    assert!(matches!(err, Error::NoOfflineRequest), "{err:?}");

    let request = client.request_offline_activation(&s.key).await.unwrap();
    let file = s.carry(&request).await;
    assert_eq!(s.seats().await, 1);

    // Another machine's client (its own request) refuses this machine's file.
    let other_dir = tempfile::tempdir().unwrap();
    let other = s.client(&unreachable_base(), other_dir.path(), "another-machine");
    other.request_offline_activation(&s.key).await.unwrap();
    let err = other.import_license_file(&file).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::TokenRefused(TokenError::Claim {
                claim: "fingerprint",
                ..
            })
        ),
        "{err:?}"
    );

    let grant = client.import_license_file(&file).await.unwrap();
    assert_eq!(grant.license_id, s.license_id);
    assert_eq!(grant.fingerprint, client.machine_fingerprint());
    let lease = grant.expires_at.duration_since(grant.issued_at).unwrap();
    assert_eq!(lease, Duration::from_secs(30 * DAY));
    // From now on a check answers from the license file: the server is never reachable here.
    let status = client.check().await.unwrap();
    match &status {
        Status::Offline {
            until,
            reason,
            grant,
        } => {
            assert_eq!(*until, grant.expires_at);
            assert!(
                matches!(reason, OfflineReason::Unreachable(_)),
                "{reason:?}"
            );
            assert_eq!(grant.license_id, s.license_id);
        }
        other => panic!("expected Offline, got {other:?}"),
    }

    // Giving it up: the proof, and the license is forgotten on this machine.
    let proof = client.deactivation_proof().await.unwrap();
    let err = client.check().await.unwrap_err();
    assert!(matches!(err, Error::NotActivated), "{err:?}");
    let (st, body) = s
        .server
        .post(
            &s.http,
            "/api/licenses/offline-deactivations",
            None,
            &json!({"proof": proof}),
        )
        .await;
    assert_eq!(st, 204, "{body}");
    assert_eq!(s.seats().await, 0);

    // That release spent the product's churn budget (1 in 30 days): an online client's
    // deactivation is refused with a typed error that says when to try again.
    let online_dir = tempfile::tempdir().unwrap();
    let online = s.client(&s.server.base, online_dir.path(), "online-machine");
    let status = online
        .activate(&s.key, online.machine_fingerprint())
        .await
        .unwrap();
    assert!(matches!(status, Status::Valid(_)), "{status:?}");
    let before = SystemTime::now();
    let err = online.deactivate().await.unwrap_err();
    let Error::ChurnLimitReached { retry_at, .. } = err else {
        panic!("expected ChurnLimitReached, got {err:?}")
    };
    let wait = retry_at.duration_since(before).unwrap();
    assert!(
        wait > Duration::from_secs(30 * DAY - 60) && wait <= Duration::from_secs(30 * DAY + 5),
        "{wait:?}"
    );
    // Refused means kept: the seat and the local activation are still there.
    assert_eq!(s.seats().await, 1);
    assert!(matches!(online.check().await.unwrap(), Status::Valid(_)));
}
