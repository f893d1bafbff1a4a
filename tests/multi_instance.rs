//! The multi-instance deployment of docs/scaling.md, proven with real processes: two
//! `ecosire serve` on different ports sharing one PostgreSQL database and one keys folder.
//! PostgreSQL only (`.ci/run` runs the suite a second time with `ECOSIRE_TEST_DATABASE_URL`); on
//! SQLite one process owns the file and each test says so and returns.
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use common::process::{Deployment, Server};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::Barrier;

const ENV: &[(&str, &str)] = &[
    ("ECOSIRE_RATE_LIMITS", "off"),
    ("ECOSIRE_WEBHOOK_ALLOW_PRIVATE", "true"),
    ("ECOSIRE_WEBHOOK_BACKOFF_BASE_S", "1"),
    // Two instances per test, tests in parallel, one PostgreSQL (max_connections 100) shared
    // with the rest of the suite: pools sized as docs/scaling.md says.
    ("ECOSIRE_DB_MAX_CONNECTIONS", "8"),
];

fn skip(test: &str) -> bool {
    if common::is_postgres() {
        return false;
    }
    eprintln!(
        "{test}: skipped: several instances share a database only on PostgreSQL \
         (set ECOSIRE_TEST_DATABASE_URL=postgres://…; .ci/run does)"
    );
    true
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// Two instances of one deployment; the first is up (migrated, keys written, admin created)
/// before the second starts.
async fn two_instances() -> (Deployment, Server, Server) {
    let d = Deployment::new().await;
    let a = d.start(ENV).await;
    let b = d.start(ENV).await;
    (d, a, b)
}

async fn validate(s: &Server, http: &reqwest::Client, key: &str) -> String {
    let (st, v) = s
        .post(http, "/api/licenses/validate", None, &json!({"key": key}))
        .await;
    assert_eq!(st, 200, "{v}");
    v["code"].as_str().unwrap().to_string()
}

async fn revoke(s: &Server, http: &reqwest::Client, token: &str, id: &str) {
    let (st, r) = s
        .post(
            http,
            &format!("/api/licenses/{id}/revoke"),
            Some(token),
            &json!({}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
}

/// Polls `validate` on `s` back to back (no sleeping) until it answers REVOKED; `None` if it
/// did not within `limit`.
async fn until_revoked(
    s: &Server,
    http: &reqwest::Client,
    key: &str,
    limit: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if validate(s, http, key).await == "REVOKED" {
            return Some(Instant::now());
        }
    }
    None
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// min / p50 / p90 / p99 / max of `v` (sorted here), in ms.
fn distribution(v: &mut [Duration]) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:.2} ms, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
        ms(v[0]),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(v[v.len() - 1]),
        v.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_through_one_instance_reaches_the_other_within_a_second_every_time() {
    if skip("revocation propagation") {
        return;
    }
    let (_d, a, b) = two_instances().await;
    let http = client();
    let token = a.admin_token(&http).await;
    let product = a.product(&http, &token, 3).await;
    const TRIES: usize = 100;
    let hits_before = b
        .metric(&http, "ecosire_license_cache_hits_total", "")
        .await;
    // From the revoke's answer (committed and announced) to B's first REVOKED, and from the
    // moment the revoke was sent, which is what a client of B could notice at the earliest.
    let mut after_answer = Vec::with_capacity(TRIES);
    let mut after_send = Vec::with_capacity(TRIES);
    for _ in 0..TRIES {
        let (id, key) = a.license(&http, &token, &product).await;
        // Warm both caches: B's second answer comes from its cache.
        assert_eq!(validate(&a, &http, &key).await, "VALID");
        assert_eq!(validate(&b, &http, &key).await, "VALID");
        assert_eq!(validate(&b, &http, &key).await, "VALID");
        // B is polled back to back from before the revoke is sent until it says REVOKED.
        let poller = {
            let (b_base, http, key) = (b.base.clone(), http.clone(), key.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    let v: Value = http
                        .post(format!("{b_base}/api/licenses/validate"))
                        .json(&json!({"key": key}))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    if v["code"] == "REVOKED" {
                        return Some(Instant::now());
                    }
                }
                None
            })
        };
        let sent = Instant::now();
        revoke(&a, &http, &token, &id).await;
        let answered = Instant::now();
        let seen = poller
            .await
            .unwrap()
            .expect("B never answered REVOKED within 5 s");
        after_answer.push(seen.saturating_duration_since(answered));
        after_send.push(seen - sent);
    }
    let hits = b
        .metric(&http, "ecosire_license_cache_hits_total", "")
        .await
        - hits_before;
    println!(
        "revocation seen on the other instance, after the revoke's answer: {}",
        distribution(&mut after_answer)
    );
    println!(
        "revocation seen on the other instance, after the revoke was sent: {}",
        distribution(&mut after_send)
    );
    // B really answered from its cache (so only the notification can have told it).
    assert!(
        hits >= TRIES as f64,
        "B served {hits} validations from its cache"
    );
    let slow: Vec<_> = after_answer
        .iter()
        .filter(|d| **d >= Duration::from_secs(1))
        .collect();
    assert!(slow.is_empty(), "seen after 1 s or more: {slow:?}");
}

/// The backend pids of the LISTEN connection of the instance with process id `pid`.
async fn listeners(pg: &mut sqlx::PgConnection, pid: u32) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
    )
    .bind(format!("ecosire-listen/{pid}"))
    .fetch_all(pg)
    .await
    .unwrap()
}

/// Waits (bounded) until the instance with process id `pid` listens on a connection other than
/// `old`, and returns its backend pid.
async fn wait_for_listener(pg: &mut sqlx::PgConnection, pid: u32, old: Option<i32>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(p) = listeners(pg, pid)
            .await
            .into_iter()
            .find(|p| Some(*p) != old)
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "instance {pid} did not LISTEN again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `n` validations of unknown keys on `s` at once, so its pool holds several open
/// connections (used while the database refuses new ones).
async fn open_connections(s: &Server, http: &reqwest::Client, n: usize) {
    let bodies: Vec<Value> = (0..n)
        .map(|i| json!({"key": format!("ECOS-AAAAA-BBBBB-CCCCC-{i:05}")}))
        .collect();
    let calls = bodies
        .iter()
        .map(|body| s.post(http, "/api/licenses/validate", None, body));
    for (st, v) in futures_util::future::join_all(calls).await {
        assert_eq!(st, 200, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_listen_connection_reconnects_and_nothing_stale_is_served_meanwhile() {
    if skip("LISTEN kill") {
        return;
    }
    let (d, a, b) = two_instances().await;
    let http = client();
    let token = a.admin_token(&http).await;
    let product = a.product(&http, &token, 3).await;
    let mut pg = sqlx::PgConnection::connect(&d.database_url).await.unwrap();
    let mut keys = vec![];
    for _ in 0..4 {
        let (id, key) = a.license(&http, &token, &product).await;
        assert_eq!(validate(&b, &http, &key).await, "VALID");
        keys.push((id, key));
    }

    // 1. Killed: B connects again, re-subscribes, and invalidations reach it again.
    let first = wait_for_listener(&mut pg, b.pid(), None).await;
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert!(killed);
    let t = Instant::now();
    let second = wait_for_listener(&mut pg, b.pid(), Some(first)).await;
    println!(
        "LISTEN connection killed: listening again after {:.0} ms",
        ms(t.elapsed())
    );
    let (id, key) = &keys[0];
    assert_eq!(validate(&b, &http, key).await, "VALID");
    revoke(&a, &http, &token, id).await;
    let t = Instant::now();
    until_revoked(&b, &http, key, Duration::from_secs(1))
        .await
        .expect("after reconnecting, B hears revocations within 1 s");
    println!(
        "revocation after the reconnection seen in {:.2} ms",
        ms(t.elapsed())
    );

    // 2. Killed and kept from reconnecting (the database refuses new connections, while the
    // pools keep the ones they hold): B cannot hear anything, so it must not trust its cache.
    open_connections(&a, &http, 8).await;
    open_connections(&b, &http, 8).await;
    let (id1, key1) = &keys[1];
    assert_eq!(validate(&b, &http, key1).await, "VALID"); // cached before the loss
    // (from another database: PostgreSQL refuses this for the current one)
    let (prefix, db) = d.database_url.rsplit_once('/').unwrap();
    let mut maintenance = sqlx::PgConnection::connect(&format!("{prefix}/postgres"))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {db} ALLOW_CONNECTIONS false"
    )))
    .execute(&mut maintenance)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(second)
        .execute(&mut pg)
        .await
        .unwrap();
    let (id2, key2) = &keys[2];
    // Cached while deaf: such entries must not outlive the next failed reconnection attempt.
    assert_eq!(validate(&b, &http, key2).await, "VALID");
    revoke(&a, &http, &token, id1).await;
    revoke(&a, &http, &token, id2).await;
    let t = Instant::now();
    until_revoked(&b, &http, key1, Duration::from_secs(3))
        .await
        .expect("a license cached before the loss is read again while B is deaf");
    let t1 = t.elapsed();
    until_revoked(&b, &http, key2, Duration::from_secs(3))
        .await
        .expect("a license cached while B is deaf is dropped within the retry interval");
    let t2 = t.elapsed();
    assert!(
        listeners(&mut pg, b.pid()).await.is_empty(),
        "B was still deaf during the check"
    );
    println!(
        "while B could not LISTEN: revocations seen after {:.0} ms (cached before the loss) and {:.0} ms (cached while deaf)",
        ms(t1),
        ms(t2)
    );
    b.log_line(0, &["LISTEN connection lost"]).await;
    b.log_line(0, &["cannot LISTEN for license changes"]).await;

    // 3. Connections allowed again: B listens again by itself, and hears the next revocation.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {db} ALLOW_CONNECTIONS true"
    )))
    .execute(&mut maintenance)
    .await
    .unwrap();
    let t = Instant::now();
    wait_for_listener(&mut pg, b.pid(), None).await;
    println!(
        "connections allowed again: B listening after {:.0} ms",
        ms(t.elapsed())
    );
    let (id3, key3) = &keys[3];
    assert_eq!(validate(&b, &http, key3).await, "VALID");
    assert_eq!(validate(&b, &http, key3).await, "VALID");
    revoke(&a, &http, &token, id3).await;
    until_revoked(&b, &http, key3, Duration::from_secs(1))
        .await
        .expect("B hears revocations within 1 s again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_parallel_activations_over_two_instances_take_exactly_three_seats() {
    if skip("parallel activations") {
        return;
    }
    let (d, a, b) = two_instances().await;
    let http = client();
    let token = a.admin_token(&http).await;
    let product = a.product(&http, &token, 3).await;
    let a = Arc::new(a);
    let b = Arc::new(b);
    let mut pg = sqlx::PgConnection::connect(&d.database_url).await.unwrap();
    const N: usize = 60;
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        let (id, key) = a.license(&http, &token, &product).await;
        // Both instances know the license before the race.
        assert_eq!(validate(&a, &http, &key).await, "VALID");
        assert_eq!(validate(&b, &http, &key).await, "VALID");
        let start = Arc::new(Barrier::new(N));
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let server = if i % 2 == 0 { a.clone() } else { b.clone() };
                let (http, key, start) = (http.clone(), key.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    server
                        .post(
                            &http,
                            "/api/licenses/activate",
                            None,
                            &json!({"key": key, "fingerprint": format!("device-{round}-{i}")}),
                        )
                        .await
                })
            })
            .collect();
        let mut created = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                (201, _) => created += 1,
                (409, p) => {
                    assert_eq!(p["code"], "ACTIVATION_LIMIT_REACHED", "{p}");
                    assert_eq!(p["status"], 409, "{p}");
                    refused += 1;
                }
                (st, p) => panic!("unexpected {st}: {p}"),
            }
        }
        assert_eq!((created, refused), (3, N - 3), "round {round}");
        let in_db: i64 =
            sqlx::query_scalar("SELECT count(*) FROM activations WHERE license_id = $1")
                .bind(&id)
                .fetch_one(&mut pg)
                .await
                .unwrap();
        assert_eq!(in_db, 3, "round {round}");
        let (st, listed) = b
            .get(&http, &format!("/api/licenses/{id}/activations"), &token)
            .await;
        assert_eq!(st, 200);
        assert_eq!(listed["data"].as_array().unwrap().len(), 3);
        // Both instances answer with the three seats taken.
        for s in [&a, &b] {
            let (st, v) = s
                .post(&http, "/api/licenses/validate", None, &json!({"key": key}))
                .await;
            assert_eq!(st, 200);
            assert_eq!(v["license"]["activations_count"], 3, "{v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_dispatchers_deliver_each_event_exactly_once() {
    if skip("webhook exactly-once") {
        return;
    }
    // The receiver: every delivery it gets, by event id (from the body) and by delivery id.
    type Seen = Arc<Mutex<(HashMap<String, u32>, HashMap<String, u32>)>>;
    let seen: Seen = Arc::default();
    let recorder = seen.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let recorder = recorder.clone();
            async move {
                let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let delivery = headers
                    .get("x-ecosire-delivery")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                {
                    let mut s = recorder.lock().unwrap();
                    *s.0.entry(event["id"].as_str().unwrap_or("").to_string())
                        .or_default() += 1;
                    *s.1.entry(delivery).or_default() += 1;
                }
                // A little work per delivery, so that both dispatchers have batches in flight.
                tokio::time::sleep(Duration::from_millis(5)).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let (d, a, b) = two_instances().await;
    let http = client();
    let token = a.admin_token(&http).await;
    const TYPES: [&str; 3] = ["license.created", "license.suspended", "license.reinstated"];
    let (st, ep) = a
        .post(
            &http,
            "/api/webhook-endpoints",
            Some(&token),
            &json!({"url": url, "events": TYPES}),
        )
        .await;
    assert_eq!(st, 201, "{ep}");
    let product = a.product(&http, &token, 3).await;
    let mut pg = sqlx::PgConnection::connect(&d.database_url).await.unwrap();

    // Lifecycle events through both instances, in rounds of four made at once (a license created
    // through each, then one suspended and reinstated), until there are at least 50 and both
    // dispatchers have sent some: each claims due deliveries once a second, so the two compete.
    let success = "outcome=\"success\"";
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut events = 0;
    loop {
        let (x, _) = tokio::join!(
            a.license(&http, &token, &product),
            b.license(&http, &token, &product)
        );
        let (s1, r1) = a
            .post(
                &http,
                &format!("/api/licenses/{}/suspend", x.0),
                Some(&token),
                &json!({}),
            )
            .await;
        let (s2, r2) = b
            .post(
                &http,
                &format!("/api/licenses/{}/reinstate", x.0),
                Some(&token),
                &json!({}),
            )
            .await;
        assert_eq!((s1, s2), (200, 200), "{r1} {r2}");
        events += 4;
        if events >= 50
            && a.metric(&http, "ecosire_webhook_attempts_total", success)
                .await
                > 0.0
            && b.metric(&http, "ecosire_webhook_attempts_total", success)
                .await
                > 0.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both dispatchers did not take part within 20 s"
        );
    }

    // Every event recorded for the endpoint reaches the receiver; then nothing more is pending.
    let ep_id = ep["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let expected: Vec<String> = loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM deliveries WHERE endpoint_id = $1 AND status <> 'succeeded'",
        )
        .bind(ep_id)
        .fetch_one(&mut pg)
        .await
        .unwrap();
        if pending == 0 {
            break sqlx::query_scalar("SELECT event_id FROM deliveries WHERE endpoint_id = $1")
                .bind(ep_id)
                .fetch_all(&mut pg)
                .await
                .unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{pending} deliveries still pending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(expected.len(), events);
    let (by_event, by_delivery) = seen.lock().unwrap().clone();
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for id in &expected {
        *counts
            .entry(by_event.get(id).copied().unwrap_or(0))
            .or_default() += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([(1, expected.len())]),
        "events by number of times received (0 = lost, 2+ = sent twice)"
    );
    assert_eq!(
        by_event.len(),
        expected.len(),
        "received events not recorded"
    );
    assert!(by_delivery.values().all(|n| *n == 1), "{by_delivery:?}");
    let attempts: Vec<i64> =
        sqlx::query_scalar("SELECT attempt_count FROM deliveries WHERE endpoint_id = $1")
            .bind(ep_id)
            .fetch_all(&mut pg)
            .await
            .unwrap();
    assert!(attempts.iter().all(|n| *n == 1), "{attempts:?}");
    // Both dispatchers took part.
    let sent_a = a
        .metric(&http, "ecosire_webhook_attempts_total", success)
        .await;
    let sent_b = b
        .metric(&http, "ecosire_webhook_attempts_total", success)
        .await;
    println!(
        "{} events delivered once each: {sent_a} sent by A, {sent_b} by B",
        expected.len()
    );
    assert_eq!(sent_a + sent_b, expected.len() as f64);
}
