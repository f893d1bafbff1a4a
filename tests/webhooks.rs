mod common;

// Outbound webhooks (API.md § Webhooks → Outbound events): endpoints, the signed deliveries a
// real receiver gets, retries, durability across a restart, the configured endpoint, disabling
// an endpoint that keeps failing, and the event catalog. A small recording receiver (an axum
// server on 127.0.0.1) stands in for the customer's system; deliveries are driven by calling the
// dispatcher directly, except for `license.validated`, which needs the real server's writer.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::TestApp;
use common::{fields, now_s};
use ecosire::config::Config;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;

const LICENSE_TYPES: [&str; 9] = [
    "license.validated",
    "license.activated",
    "license.deactivated",
    "license.created",
    "license.revoked",
    "license.suspended",
    "license.reinstated",
    "license.renewed",
    "license.reissued",
];
const STRIPE_TYPES: [&str; 6] = [
    "checkout.session.completed",
    "invoice.paid",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "charge.refunded",
    "payment_intent.payment_failed",
];

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
            .to_str()
            .unwrap()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
    fn kind(&self) -> String {
        self.header("x-ecosire-event").to_string()
    }
    fn object(&self) -> Value {
        self.json()["data"]["object"].clone()
    }
}

/// A recording webhook receiver: answers `script` in order, then `fallback`.
#[derive(Clone)]
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    fallback: Arc<AtomicU16>,
}

async fn record(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.hits.lock().unwrap().push(Hit {
        headers,
        body: body.to_vec(),
    });
    let status = r
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| r.fallback.load(Ordering::SeqCst));
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    async fn start(script: &[u16], fallback: u16) -> Receiver {
        Receiver::on(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            script,
            fallback,
        )
        .await
    }

    async fn on(listener: TcpListener, script: &[u16], fallback: u16) -> Receiver {
        let r = Receiver {
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            hits: Default::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            fallback: Arc::new(AtomicU16::new(fallback)),
        };
        let router = Router::new()
            .route("/hook", post(record))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        r
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    fn answer(&self, status: u16) {
        self.fallback.store(status, Ordering::SeqCst);
    }
}

async fn webhook_app() -> TestApp {
    TestApp::with_config(|c| {
        c.webhook_allow_private = true;
        c.webhook_backoff_base_s = 0;
    })
    .await
}

/// Runs the dispatcher until `done` holds (bounded; no waiting on the clock).
async fn pump(app: &TestApp, done: impl Fn() -> bool) {
    for _ in 0..60 {
        if done() {
            return;
        }
        ecosire::events::dispatcher::run_once(&app.state)
            .await
            .expect("dispatcher");
    }
    assert!(done(), "the expected deliveries did not arrive");
}

/// Runs the dispatcher until nothing is due any more (bounded).
async fn drain(app: &TestApp) {
    for _ in 0..60 {
        let n = ecosire::events::dispatcher::run_once(&app.state)
            .await
            .expect("dispatcher");
        if n == 0 {
            return;
        }
    }
    panic!("deliveries kept coming due");
}

/// Creates an endpoint (admin) and returns it, `secret` included.
async fn endpoint(app: &TestApp, url: &str, events: &[&str]) -> Value {
    app.admin_post(
        "/api/webhook-endpoints",
        json!({"url": url, "events": events, "description": "test receiver"}),
    )
    .await
    .expect(201)
    .clone()
}

fn secret_of(endpoint: &Value) -> String {
    endpoint["secret"].as_str().expect("secret").to_string()
}

fn hmac_hex(secret: &str, t: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks `X-License-Signature` as a receiver would: `t=…,v1=…`, HMAC-SHA256 keyed with the whole
/// secret over `"{t}.{raw body}"`, lowercase hex, and a fresh `t`.
#[track_caller]
fn assert_signed(hit: &Hit, secret: &str) {
    let header = hit.header("x-license-signature");
    let mut t = None;
    let mut v1 = vec![];
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_string()),
            Some(("v1", v)) => v1.push(v.to_string()),
            _ => {}
        }
    }
    let t = t.unwrap_or_else(|| panic!("no t in {header}"));
    assert!(
        (now_s() - t.parse::<i64>().unwrap()).abs() <= 300,
        "stale t in {header}"
    );
    let expected = hmac_hex(secret, &t, &hit.body);
    assert!(
        v1.contains(&expected),
        "no v1 in {header} matches {expected}"
    );
    assert!(
        v1.iter().all(|s| s.len() == 64
            && s.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))),
        "{header}"
    );
}

/// The envelope every delivery has.
#[track_caller]
fn assert_envelope(hit: &Hit) {
    let body = hit.json();
    assert!(body["id"].as_str().unwrap().starts_with("evt_"), "{body}");
    assert_eq!(body["object"], "event", "{body}");
    assert_eq!(body["type"], hit.kind().as_str(), "{body}");
    let created = body["created"].as_i64().expect("created is unix seconds");
    assert!((now_s() - created).abs() < 600, "{body}");
    assert!(body["data"]["object"].is_object(), "{body}");
    assert!(
        hit.header("x-ecosire-delivery").starts_with("dlv_"),
        "{:?}",
        hit.headers
    );
    assert!(
        hit.header("content-type").starts_with("application/json"),
        "{:?}",
        hit.headers
    );
}

fn is_base62(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric())
}

async fn deliveries(app: &TestApp, endpoint_id: &str) -> Vec<Value> {
    app.admin_get(&format!("/api/webhook-endpoints/{endpoint_id}/deliveries"))
        .await
        .expect(200)["data"]
        .as_array()
        .unwrap()
        .clone()
}

fn status_codes(delivery: &Value) -> Vec<Option<i64>> {
    delivery["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts: {delivery}"))
        .iter()
        .map(|a| a["status_code"].as_i64())
        .collect()
}

/// The `field` names of a 422's `details`.
async fn outbox_payload(app: &TestApp, event_id: &str) -> String {
    let (payload,): (String,) = sqlx::query_as("SELECT payload FROM outbox WHERE id = $1")
        .bind(event_id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    payload
}

#[tokio::test]
async fn endpoints_are_admin_only_checked_and_show_their_secret_once() {
    let app = webhook_app().await;
    let ep = endpoint(&app, "http://127.0.0.1:9/hook", &["license.created"]).await;
    let id = ep["id"].as_str().unwrap();
    assert!(id.starts_with("whe_"), "{ep}");
    let secret = secret_of(&ep);
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(secret.len(), "whsec_".len() + 32, "{secret}");
    assert!(is_base62(&secret["whsec_".len()..]), "{secret}");
    assert_eq!(ep["events"], json!(["license.created"]));
    assert_eq!(ep["enabled"], true);
    assert_eq!(ep["url"], "http://127.0.0.1:9/hook");

    let got = app
        .admin_get(&format!("/api/webhook-endpoints/{id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(got["id"], id);
    assert!(got.get("secret").is_none(), "{got}");
    assert!(!got.to_string().contains(&secret));
    let list = app
        .admin_get("/api/webhook-endpoints")
        .await
        .expect(200)
        .clone();
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert!(!list.to_string().contains(&secret), "{list}");
    let second = endpoint(&app, "http://127.0.0.1:9/other", &["*"]).await;
    assert_ne!(
        secret_of(&second),
        secret,
        "every endpoint has its own secret"
    );

    let long = format!("https://example.com/{}", "a".repeat(2100));
    let bad = [
        (
            json!({"url": "ftp://example.com/hook", "events": ["license.created"]}),
            "url",
        ),
        (json!({"url": long, "events": ["license.created"]}), "url"),
        (
            json!({"url": "not a url", "events": ["license.created"]}),
            "url",
        ),
        (
            json!({"url": "https://example.com/hook", "events": ["license.exploded"]}),
            "events[0]",
        ),
        (
            json!({"url": "https://example.com/hook", "events": []}),
            "events",
        ),
    ];
    for (body, field) in bad {
        let r = app.admin_post("/api/webhook-endpoints", body.clone()).await;
        let p = r.expect_problem(422, "VALIDATION_FAILED");
        assert!(fields(p).contains(&field.to_string()), "{body}: {p}");
    }

    let (_, customer) = app.customer("cust@example.com").await;
    app.post(
        "/api/webhook-endpoints",
        json!({"url": "https://example.com/hook", "events": ["*"]}),
        Some(&customer),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
    app.get("/api/webhook-endpoints", Some(&customer))
        .await
        .expect_problem(403, "FORBIDDEN");
    app.get(&format!("/api/webhook-endpoints/{id}"), Some(&customer))
        .await
        .expect_problem(403, "FORBIDDEN");
    app.post(
        &format!("/api/webhook-endpoints/{id}/test"),
        json!({}),
        Some(&customer),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
    app.get("/api/webhook-endpoints", None)
        .await
        .expect_problem(401, "UNAUTHENTICATED");

    // PATCH is checked like POST, and a new filter applies at once.
    let r = app
        .admin_patch(
            &format!("/api/webhook-endpoints/{id}"),
            json!({"url": "ftp://example.com/x"}),
        )
        .await;
    assert!(fields(r.expect_problem(422, "VALIDATION_FAILED")).contains(&"url".to_string()));
    let patched = app
        .admin_patch(
            &format!("/api/webhook-endpoints/{id}"),
            json!({"events": ["license.revoked", "license.suspended"], "description": "CRM"}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(
        patched["events"],
        json!(["license.revoked", "license.suspended"])
    );
    assert_eq!(patched["description"], "CRM");
    assert!(patched.get("secret").is_none(), "{patched}");

    app.admin_delete(&format!("/api/webhook-endpoints/{id}"))
        .await
        .expect(204);
    app.admin_get(&format!("/api/webhook-endpoints/{id}"))
        .await
        .expect_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn private_targets_are_refused_by_default() {
    let app = TestApp::new().await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost:8080/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
    ] {
        let r = app
            .admin_post(
                "/api/webhook-endpoints",
                json!({"url": url, "events": ["*"]}),
            )
            .await;
        let p = r.expect_problem(422, "VALIDATION_FAILED");
        assert!(fields(p).contains(&"url".to_string()), "{url}: {p}");
    }
    assert_eq!(
        app.admin_get("/api/webhook-endpoints").await.expect(200)["data"],
        json!([])
    );
    // A public address is fine.
    endpoint(&app, "https://93.184.216.34/hook", &["*"]).await;
}

#[tokio::test]
async fn license_events_arrive_signed_with_their_objects() {
    let app = webhook_app().await;
    let all = Receiver::start(&[], 200).await;
    let revoked_only = Receiver::start(&[], 200).await;
    let ep_all = endpoint(&app, &all.url, &["*"]).await;
    let ep_revoked = endpoint(&app, &revoked_only.url, &["license.revoked"]).await;

    let p = app.product(json!({"max_activations": 3})).await;
    let l = app.license(p["id"].as_str().unwrap(), json!({})).await;
    let lid = l["id"].as_str().unwrap().to_string();
    let key = l["key"].as_str().unwrap().to_string();
    // Sent before the reissue below (a_late_delivery_carries_the_key_of_its_event covers after).
    pump(&app, || all.count() >= 1).await;
    app.activate(&key, "machine-1").await.expect(201);
    app.post(
        "/api/licenses/deactivate",
        json!({"key": key, "fingerprint": "machine-1"}),
        None,
    )
    .await
    .expect(204);
    for (action, body) in [
        ("suspend", json!({})),
        ("reinstate", json!({})),
        ("renew", json!({"extend_days": 30})),
    ] {
        app.admin_post(&format!("/api/licenses/{lid}/{action}"), body)
            .await
            .expect(200);
    }
    let reissued = app
        .admin_post(&format!("/api/licenses/{lid}/reissue"), json!({}))
        .await
        .expect(200)
        .clone();
    let new_key = reissued["license"]["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    app.admin_post(
        &format!("/api/licenses/{lid}/revoke"),
        json!({"reason": "chargeback"}),
    )
    .await
    .expect(200);

    let want = [
        "license.created",
        "license.activated",
        "license.deactivated",
        "license.suspended",
        "license.reinstated",
        "license.renewed",
        "license.reissued",
        "license.revoked",
    ];
    pump(&app, || {
        all.count() >= want.len() && revoked_only.count() >= 1
    })
    .await;
    drain(&app).await;

    let hits = all.hits();
    let mut kinds: Vec<String> = hits.iter().map(Hit::kind).collect();
    kinds.sort();
    let mut expected: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(kinds, expected, "each event exactly once");

    let secret = secret_of(&ep_all);
    for hit in &hits {
        assert_envelope(hit);
        assert_signed(hit, &secret);
        let obj = hit.object();
        let kind = hit.kind();
        match kind.as_str() {
            "license.activated" | "license.deactivated" => {
                assert!(obj["id"].as_str().unwrap().starts_with("act_"), "{obj}");
                assert_eq!(obj["license_id"], lid.as_str(), "{kind}: {obj}");
                assert_eq!(obj["fingerprint"], "machine-1", "{kind}: {obj}");
                assert_eq!(obj["license"]["id"], lid.as_str(), "{kind}: {obj}");
                assert!(obj["license"].get("key").is_none(), "{kind}: {obj}");
            }
            _ => {
                assert_eq!(obj["id"], lid.as_str(), "{kind}: {obj}");
                assert_eq!(obj["product_id"], p["id"], "{kind}: {obj}");
            }
        }
        match kind.as_str() {
            "license.created" => assert_eq!(obj["key"], key.as_str(), "{obj}"),
            "license.reissued" => assert_eq!(obj["key"], new_key.as_str(), "{obj}"),
            _ => {
                assert!(obj.get("key").is_none(), "{kind} carries a key: {obj}");
                assert!(!hit.json().to_string().contains(&new_key), "{kind}");
            }
        }
        match kind.as_str() {
            "license.suspended" => assert_eq!(obj["status"], "suspended"),
            "license.reinstated" => assert_eq!(obj["status"], "active"),
            "license.revoked" => assert_eq!(obj["status"], "revoked"),
            "license.renewed" => assert!(obj["expires_at"].is_string(), "{obj}"),
            _ => {}
        }
        if kind == "license.created" || kind == "license.reissued" {
            // The outbox keeps no plaintext key.
            let id = hit.json()["id"].as_str().unwrap().to_string();
            let stored = outbox_payload(&app, &id).await;
            let v: Value = serde_json::from_str(&stored).unwrap();
            assert!(v["data"]["object"].get("key").is_none(), "{stored}");
            assert!(
                !stored.contains(&key) && !stored.contains(&new_key),
                "{stored}"
            );
            let bare = |k: &str| k.replace('-', "");
            assert!(!stored.contains(&bare(&key)) && !stored.contains(&bare(&new_key)));
        }
    }

    // The deliveries list agrees: one succeeded delivery per event, one 200 attempt each.
    let list = deliveries(&app, ep_all["id"].as_str().unwrap()).await;
    assert_eq!(list.len(), want.len(), "{list:?}");
    let mut header_ids: Vec<String> = hits
        .iter()
        .map(|h| h.header("x-ecosire-delivery").to_string())
        .collect();
    header_ids.sort();
    let mut listed: Vec<String> = list
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(header_ids, listed);
    for d in &list {
        assert_eq!(d["status"], "succeeded", "{d}");
        assert_eq!(status_codes(d), vec![Some(200)], "{d}");
        assert!(d["attempts"][0]["error"].is_null(), "{d}");
        assert!(d["attempts"][0]["duration_ms"].is_i64(), "{d}");
        assert!(d["next_attempt_at"].is_null(), "{d}");
        let hit = hits
            .iter()
            .find(|h| h.header("x-ecosire-delivery") == d["id"].as_str().unwrap())
            .unwrap();
        assert_eq!(d["event_id"], hit.json()["id"]);
        assert_eq!(d["event_type"], hit.kind().as_str());
    }

    // The filtered endpoint got only license.revoked, signed with its own secret.
    let only = revoked_only.hits();
    assert_eq!(
        only.iter().map(Hit::kind).collect::<Vec<_>>(),
        vec!["license.revoked"]
    );
    assert_envelope(&only[0]);
    assert_signed(&only[0], &secret_of(&ep_revoked));
    assert_eq!(only[0].object()["id"], lid.as_str());
    assert_eq!(
        only[0].json()["id"],
        hits.iter()
            .find(|h| h.kind() == "license.revoked")
            .unwrap()
            .json()["id"],
        "one event, delivered to each endpoint"
    );
}

#[tokio::test]
async fn a_late_delivery_carries_the_key_of_its_event() {
    // Deliveries may be sent late (a receiver down, retries over a day): license.created must
    // still carry the key that was created, and license.reissued the key it issued, each
    // consistent with the `key_last4` beside it.
    let app = webhook_app().await;
    let receiver = Receiver::start(&[], 200).await;
    endpoint(
        &app,
        &receiver.url,
        &["license.created", "license.reissued"],
    )
    .await;
    let p = app.product(json!({})).await;
    let l = app.license(p["id"].as_str().unwrap(), json!({})).await;
    let lid = l["id"].as_str().unwrap();
    let first = l["key"].as_str().unwrap().to_string();
    let mut keys = vec![first.clone()];
    for _ in 0..2 {
        let r = app
            .admin_post(&format!("/api/licenses/{lid}/reissue"), json!({}))
            .await
            .expect(200)
            .clone();
        keys.push(r["license"]["key"].as_str().unwrap().to_string());
    }
    pump(&app, || receiver.count() >= 3).await;
    drain(&app).await;
    let mut hits = receiver.hits();
    assert_eq!(hits.len(), 3);
    hits.sort_by_key(|h| h.json()["id"].as_str().unwrap().to_string());
    let sent: Vec<(String, String)> = hits
        .iter()
        .map(|h| (h.kind(), h.object()["key"].as_str().unwrap().to_string()))
        .collect();
    for h in &hits {
        let obj = h.object();
        let key = obj["key"].as_str().unwrap().replace('-', "");
        let last4 = obj["key_last4"].as_str().unwrap();
        assert!(
            key.ends_with(last4),
            "{}: key {key} does not end with its key_last4 {last4}",
            h.kind()
        );
    }
    assert_eq!(
        sent,
        vec![
            ("license.created".to_string(), keys[0].clone()),
            ("license.reissued".to_string(), keys[1].clone()),
            ("license.reissued".to_string(), keys[2].clone()),
        ],
        "each event must carry its own key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn license_validated_is_sent_only_when_subscribed() {
    let app = webhook_app().await;
    let created = Receiver::start(&[], 200).await;
    let validated = Receiver::start(&[], 200).await;
    let server = common::spawn(app.state.clone()).await;

    endpoint(&app, &created.url, &["license.created", "license.revoked"]).await;
    let p = app.product(json!({})).await;
    let l = app.license(p["id"].as_str().unwrap(), json!({})).await;
    let key = l["key"].as_str().unwrap().to_string();
    assert_eq!(app.validate(json!({"key": key})).await["code"], "VALID");

    let ep = endpoint(&app, &validated.url, &["license.validated"]).await;
    // Only known keys are announced.
    assert_eq!(
        app.validate(json!({"key": "ECOS-00000-00000-00000-00000"}))
            .await["code"],
        "NOT_FOUND"
    );
    assert_eq!(
        app.validate(json!({"key": key, "nonce": "n-1"})).await["code"],
        "VALID"
    );
    for _ in 0..500 {
        if validated.count() >= 1 && created.count() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hits = validated.hits();
    assert_eq!(hits.len(), 1, "one license.validated delivery");
    let hit = &hits[0];
    assert_eq!(hit.kind(), "license.validated");
    assert_envelope(hit);
    assert_signed(hit, &secret_of(&ep));
    let obj = hit.object();
    assert_eq!(obj["valid"], true, "{obj}");
    assert_eq!(obj["code"], "VALID", "{obj}");
    assert_eq!(obj["license"]["id"], l["id"], "{obj}");
    assert!(obj["fingerprint"].is_null(), "{obj}");
    assert!(obj["license"].get("key").is_none(), "{obj}");

    // Before anyone subscribed, validations were not even recorded.
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE type = 'license.validated'")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        created.hits().iter().map(Hit::kind).collect::<Vec<_>>(),
        vec!["license.created"]
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_validations_are_written_out_at_shutdown() {
    let app = webhook_app().await;
    // Nothing listens at this URL: the deliveries stay pending, the events must not be lost.
    let url = format!("http://127.0.0.1:{}/hook", free_port().await);
    endpoint(&app, &url, &["license.validated"]).await;
    let p = app.product(json!({})).await;
    let l = app.license(p["id"].as_str().unwrap(), json!({})).await;
    let server = common::spawn(app.state.clone()).await;
    for _ in 0..5 {
        assert_eq!(
            app.validate(json!({"key": l["key"]})).await["code"],
            "VALID"
        );
    }
    server.stop().await.unwrap();
    let (events,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE type = 'license.validated'")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(events, 5);
    let (queued,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM deliveries WHERE event_type = 'license.validated' AND status = 'pending'",
    )
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(queued, 5);
}

#[tokio::test]
async fn test_send_and_retries_until_success() {
    let app = webhook_app().await;

    // POST …/test sends webhook.test whatever the filter, and answers the delivery.
    let tester = Receiver::start(&[], 200).await;
    let ep = endpoint(&app, &tester.url, &["license.revoked"]).await;
    let eid = ep["id"].as_str().unwrap();
    let d = app
        .admin_post(&format!("/api/webhook-endpoints/{eid}/test"), json!({}))
        .await
        .expect(200)
        .clone();
    assert!(d["id"].as_str().unwrap().starts_with("dlv_"), "{d}");
    assert_eq!(d["event_type"], "webhook.test");
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(status_codes(&d), vec![Some(200)], "{d}");
    assert!(d["attempts"][0]["error"].is_null());
    assert!(d["attempts"][0]["at"].is_string());
    assert!(d["attempts"][0]["duration_ms"].as_i64().unwrap() >= 0);
    let hits = tester.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].kind(), "webhook.test");
    assert_eq!(
        hits[0].header("x-ecosire-delivery"),
        d["id"].as_str().unwrap()
    );
    assert_eq!(hits[0].json()["id"], d["event_id"]);
    assert_envelope(&hits[0]);
    assert_signed(&hits[0], &secret_of(&ep));
    drain(&app).await;
    assert_eq!(tester.count(), 1, "the test event is sent once");

    // 500, 500, then 200: retried to success, every attempt recorded.
    let flaky = Receiver::start(&[500, 500], 200).await;
    let ep = endpoint(&app, &flaky.url, &["license.created"]).await;
    let eid = ep["id"].as_str().unwrap();
    let p = app.product(json!({})).await;
    app.license(p["id"].as_str().unwrap(), json!({})).await;
    pump(&app, || flaky.count() >= 3).await;
    drain(&app).await;
    let hits = flaky.hits();
    assert_eq!(hits.len(), 3);
    let dlv = hits[0].header("x-ecosire-delivery").to_string();
    let event_id = hits[0].json()["id"].clone();
    for h in &hits {
        assert_eq!(h.header("x-ecosire-delivery"), dlv, "one delivery, retried");
        assert_eq!(h.json()["id"], event_id, "the same event each time");
        assert_signed(h, &secret_of(&ep));
    }
    let list = deliveries(&app, eid).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let d = &list[0];
    assert_eq!(d["id"], dlv.as_str());
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(
        status_codes(d),
        vec![Some(500), Some(500), Some(200)],
        "{d}"
    );
    let errors: Vec<bool> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"].is_string())
        .collect();
    assert_eq!(errors, vec![true, true, false], "{d}");
    assert!(d["next_attempt_at"].is_null(), "{d}");

    // A manual retry re-sends even a succeeded delivery.
    let again = app
        .admin_post(
            &format!("/api/webhook-endpoints/{eid}/deliveries/{dlv}/retry"),
            json!({}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["attempts"].as_array().unwrap().len(), 4, "{again}");
    assert_eq!(flaky.count(), 4);
    assert_eq!(flaky.hits()[3].json()["id"], event_id);
    app.admin_post(
        &format!("/api/webhook-endpoints/{eid}/deliveries/dlv_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4/retry"),
        json!({}),
    )
    .await
    .expect_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn a_delivery_that_never_succeeds_is_given_up_then_retried_by_hand() {
    let app = webhook_app().await;
    let down = Receiver::start(&[], 503).await;
    let ep = endpoint(&app, &down.url, &["license.created"]).await;
    let eid = ep["id"].as_str().unwrap();
    let p = app.product(json!({})).await;
    app.license(p["id"].as_str().unwrap(), json!({})).await;
    drain(&app).await;

    let list = deliveries(&app, eid).await;
    assert_eq!(list.len(), 1);
    let d = &list[0];
    assert_eq!(d["status"], "failed", "{d}");
    let codes = status_codes(d);
    assert!(codes.len() >= 8, "at least 8 attempts: {d}");
    assert!(codes.iter().all(|c| *c == Some(503)), "{d}");
    assert_eq!(down.count(), codes.len());
    assert!(d["next_attempt_at"].is_null(), "{d}");

    down.answer(200);
    let dlv = d["id"].as_str().unwrap();
    let again = app
        .admin_post(
            &format!("/api/webhook-endpoints/{eid}/deliveries/{dlv}/retry"),
            json!({}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(status_codes(&again).last(), Some(&Some(200)));
    assert_eq!(down.count(), codes.len() + 1);
    assert_signed(&down.hits()[codes.len()], &secret_of(&ep));
}

/// A configuration whose database and keys live in `root`, so a second server can take over.
fn durable_config(root: &Path, database_url: String) -> Config {
    Config {
        database_url,
        keys_dir: root.join("keys"),
        admin_email: Some(common::ADMIN_EMAIL.into()),
        admin_password: Some(common::ADMIN_PASSWORD.into()),
        cookie_secure: false,
        reaper_interval: Duration::from_secs(3600),
        webhook_allow_private: true,
        webhook_backoff_base_s: 0,
        ..Config::default()
    }
}

/// A free port on 127.0.0.1 with nothing listening on it.
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let config = durable_config(root.path(), common::fresh_database_url(root.path()).await);
    let port = free_port().await;
    let url = format!("http://127.0.0.1:{port}/hook");

    let app = TestApp::from_config(config.clone(), tempfile::tempdir().unwrap()).await;
    let ep = endpoint(&app, &url, &["license.created"]).await;
    let eid = ep["id"].as_str().unwrap().to_string();
    let p = app.product(json!({})).await;
    let l = app.license(p["id"].as_str().unwrap(), json!({})).await;
    let key = l["key"].as_str().unwrap().to_string();
    assert_eq!(
        ecosire::events::dispatcher::run_once(&app.state)
            .await
            .unwrap(),
        1
    );
    let list = deliveries(&app, &eid).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "pending", "{}", list[0]);
    assert_eq!(status_codes(&list[0]), vec![None], "{}", list[0]);
    assert!(list[0]["attempts"][0]["error"].is_string(), "{}", list[0]);
    assert!(list[0]["next_attempt_at"].is_string(), "{}", list[0]);
    app.state.db.pool.close().await;
    drop(app);

    // The receiver comes up; so does a new server on the same database and keys.
    let receiver = Receiver::on(
        TcpListener::bind(("127.0.0.1", port)).await.unwrap(),
        &[],
        200,
    )
    .await;
    let app = TestApp::from_config(config, tempfile::tempdir().unwrap()).await;
    pump(&app, || receiver.count() >= 1).await;
    drain(&app).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].kind(), "license.created");
    assert_envelope(&hits[0]);
    assert_signed(&hits[0], &secret_of(&ep));
    assert_eq!(hits[0].object()["key"], key.as_str());
    let list = deliveries(&app, &eid).await;
    assert_eq!(list[0]["status"], "succeeded", "{}", list[0]);
    assert_eq!(status_codes(&list[0]), vec![None, Some(200)], "{}", list[0]);
}

#[tokio::test]
async fn the_configured_endpoint_gets_every_event() {
    let receiver = Receiver::start(&[], 200).await;
    let secret = "whsec_Configured0123456789abcdefghijK";
    let root = tempfile::tempdir().unwrap();
    let mut config = durable_config(root.path(), common::fresh_database_url(root.path()).await);
    config.webhook_url = Some(receiver.url.clone());
    config.license_secret = Some(secret.into());

    let app = TestApp::from_config(config.clone(), tempfile::tempdir().unwrap()).await;
    let list = app
        .admin_get("/api/webhook-endpoints")
        .await
        .expect(200)
        .clone();
    let eps = list["data"].as_array().unwrap();
    assert_eq!(eps.len(), 1, "{list}");
    assert_eq!(eps[0]["url"], receiver.url.as_str());
    assert_eq!(eps[0]["events"], json!(["*"]));
    assert_eq!(eps[0]["enabled"], true);
    assert!(!list.to_string().contains(secret));

    let p = app.product(json!({})).await;
    let l = app.license(p["id"].as_str().unwrap(), json!({})).await;
    let lid = l["id"].as_str().unwrap();
    app.admin_post(&format!("/api/licenses/{lid}/suspend"), json!({}))
        .await
        .expect(200);
    pump(&app, || receiver.count() >= 2).await;
    let mut kinds: Vec<String> = receiver.hits().iter().map(Hit::kind).collect();
    kinds.sort();
    assert_eq!(kinds, vec!["license.created", "license.suspended"]);
    for h in receiver.hits() {
        assert_envelope(&h);
        assert_signed(&h, secret);
    }

    // A restart with the same configuration keeps the one endpoint.
    app.state.db.pool.close().await;
    drop(app);
    let app = TestApp::from_config(config, tempfile::tempdir().unwrap()).await;
    let list = app
        .admin_get("/api/webhook-endpoints")
        .await
        .expect(200)
        .clone();
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn an_endpoint_failing_too_long_is_disabled_with_a_notice() {
    let app = TestApp::with_config(|c| {
        c.webhook_allow_private = true;
        c.webhook_backoff_base_s = 0;
        c.webhook_disable_after = Duration::ZERO;
    })
    .await;
    let receiver = Receiver::start(&[], 500).await;
    let ep = endpoint(&app, &receiver.url, &["license.created"]).await;
    let eid = ep["id"].as_str().unwrap();
    let p = app.product(json!({})).await;
    app.license(p["id"].as_str().unwrap(), json!({})).await;

    pump(&app, || receiver.count() >= 1).await;
    let got = app
        .admin_get(&format!("/api/webhook-endpoints/{eid}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(got["enabled"], true, "one failure is not enough: {got}");
    assert!(got["failing_since"].is_string(), "{got}");
    pump(&app, || receiver.count() >= 2).await;
    drain(&app).await;
    assert_eq!(
        receiver.count(),
        2,
        "nothing is sent to a disabled endpoint"
    );

    let got = app
        .admin_get(&format!("/api/webhook-endpoints/{eid}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(got["enabled"], false, "{got}");
    assert!(
        got["disabled_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{got}"
    );
    let notices = app
        .admin_get("/api/webhooks/notices")
        .await
        .expect(200)
        .clone();
    let data = notices["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{notices}");
    assert_eq!(data[0]["kind"], "webhook_endpoint_disabled");
    assert_eq!(data[0]["subject_id"], eid);
    assert!(
        data[0]["message"].as_str().unwrap().contains(eid),
        "{notices}"
    );
    let (_, customer) = app.customer("nosy@example.com").await;
    app.get("/api/webhooks/notices", Some(&customer))
        .await
        .expect_problem(403, "FORBIDDEN");

    // New events are not queued for a disabled endpoint.
    app.license(p["id"].as_str().unwrap(), json!({})).await;
    let list = deliveries(&app, eid).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["status"], "failed", "{}", list[0]);

    // Re-enabled and fixed, the failed delivery can be retried.
    let got = app
        .admin_patch(
            &format!("/api/webhook-endpoints/{eid}"),
            json!({"enabled": true}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(got["enabled"], true);
    assert!(got["disabled_reason"].is_null(), "{got}");
    receiver.answer(200);
    let dlv = list[0]["id"].as_str().unwrap();
    let again = app
        .admin_post(
            &format!("/api/webhook-endpoints/{eid}/deliveries/{dlv}/retry"),
            json!({}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(receiver.count(), 3);
    assert_signed(&receiver.hits()[2], &secret_of(&ep));
}

#[tokio::test]
async fn forwarded_stripe_events_carry_what_they_granted() {
    const STRIPE_SECRET: &str = "whsec_test_secret";
    let app = TestApp::with_config(|c| {
        c.webhook_allow_private = true;
        c.webhook_backoff_base_s = 0;
        c.stripe_webhook_secret = Some(STRIPE_SECRET.into());
    })
    .await;
    let receiver = Receiver::start(&[], 200).await;
    let ep = endpoint(&app, &receiver.url, &["checkout.session.completed"]).await;
    let (user_id, _) = app.customer("stripe-buyer@example.com").await;
    let p = app.product(json!({})).await;
    let session = json!({
        "id": "cs_test_a1B2c3D4e5F6g7H8", "object": "checkout.session", "mode": "payment",
        "status": "complete", "payment_status": "paid", "amount_total": 4900, "currency": "eur",
        "customer": "cus_QxYz123", "customer_email": null,
        "customer_details": {"email": "stripe-buyer@example.com", "name": "Buyer"},
        "client_reference_id": null, "payment_intent": "pi_3QxYz123AbCdEf", "subscription": null,
        "metadata": {"userId": user_id, "productIds": serde_json::to_string(&[p["id"].as_str().unwrap()]).unwrap()},
        "livemode": false
    });
    let ev = json!({"id": "evt_1QxYz123AbCdEfGh", "object": "event", "type": "checkout.session.completed",
        "api_version": "2026-10-28.endive", "created": now_s(), "livemode": false, "data": {"object": session}});
    let body = ev.to_string();
    let t = now_s().to_string();
    let sig = format!("t={t},v1={}", hmac_hex(STRIPE_SECRET, &t, body.as_bytes()));
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/api/webhooks/stripe")
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(axum::body::Body::from(body))
        .unwrap();
    assert_eq!(app.send(req).await.expect(200)["outcome"], "processed");

    pump(&app, || receiver.count() >= 1).await;
    drain(&app).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "only the subscribed type");
    assert_eq!(hits[0].kind(), "checkout.session.completed");
    assert_envelope(&hits[0]);
    assert_signed(&hits[0], &secret_of(&ep));
    let obj = hits[0].object();
    assert_eq!(obj["id"], "cs_test_a1B2c3D4e5F6g7H8", "{obj}");
    assert_eq!(obj["payment_intent"], "pi_3QxYz123AbCdEf", "{obj}");
    let order = app.admin_get("/api/orders").await.expect(200)["data"][0].clone();
    assert_eq!(obj["ecosire"]["order_id"], order["id"], "{obj}");
    assert_eq!(obj["ecosire"]["license_ids"], order["license_ids"], "{obj}");
    assert_eq!(obj["ecosire"]["license_ids"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_event_catalog_lists_every_type() {
    let app = TestApp::new().await;
    let r = app.get("/api/webhooks/events", None).await;
    let data = r.expect(200)["data"].as_array().unwrap().clone();
    for kind in LICENSE_TYPES.iter().chain(STRIPE_TYPES.iter()) {
        let entry = data
            .iter()
            .find(|e| e["type"] == *kind)
            .unwrap_or_else(|| panic!("{kind} is missing from the catalog"));
        assert!(
            entry["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty()),
            "{entry}"
        );
        let ex = &entry["example"];
        assert_eq!(ex["type"], *kind, "{entry}");
        assert_eq!(ex["object"], "event", "{entry}");
        assert!(ex["id"].as_str().unwrap().starts_with("evt_"), "{entry}");
        assert!(ex["created"].is_i64(), "{entry}");
        assert!(ex["data"]["object"].is_object(), "{entry}");
        if kind.starts_with("license.") && *kind != "license.validated" {
            let obj = &ex["data"]["object"];
            assert!(obj.get("id").is_some(), "{entry}");
        }
        if STRIPE_TYPES.contains(kind) {
            assert!(ex["data"]["object"]["ecosire"].is_object(), "{entry}");
        }
    }
    let validated = data
        .iter()
        .find(|e| e["type"] == "license.validated")
        .unwrap();
    let obj = &validated["example"]["data"]["object"];
    for member in ["license", "valid", "code", "fingerprint"] {
        assert!(obj.get(member).is_some(), "{validated}");
    }
    let activated = data
        .iter()
        .find(|e| e["type"] == "license.activated")
        .unwrap();
    assert!(activated["example"]["data"]["object"]["license"].is_object());
    for kind in ["license.created", "license.reissued"] {
        let e = data.iter().find(|e| e["type"] == kind).unwrap();
        assert!(e["example"]["data"]["object"]["key"].is_string(), "{e}");
    }

    // Every listed type (webhook.test aside) can be subscribed to.
    let all: Vec<&str> = LICENSE_TYPES
        .iter()
        .chain(STRIPE_TYPES.iter())
        .copied()
        .collect();
    endpoint(&app, "https://93.184.216.34/hook", &all).await;
}
