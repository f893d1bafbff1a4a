//! Limits across instances, with real `ecosire serve` processes, a real Redis and a real database:
//! per-minute limits shared through Redis (one budget, not one per instance), the local fallback
//! while Redis is away and the return to shared limits when it comes back, and the daily quota
//! as one budget counted in the database.
//!
//! Redis comes from `ECOSIRE_TEST_REDIS_URL` (`.ci/run` sets it); each test writes under a prefix
//! of its own. The recovery test runs a private `redis-server` it can kill. Tests that need two
//! instances on one database run on PostgreSQL only.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{Deployment, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn test_redis() -> Option<String> {
    let url = std::env::var("ECOSIRE_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("ECOSIRE_TEST_REDIS_URL is not set: skipping a test that needs Redis");
    }
    url
}

fn two_instances_possible() -> bool {
    if !common::is_postgres() {
        eprintln!("two instances on one database need PostgreSQL: skipping");
    }
    common::is_postgres()
}

/// A key prefix no other test or CI run uses.
fn unique_prefix() -> String {
    format!("ecosire-test:{}", uuid::Uuid::now_v7().simple())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One validation: (status, X-RateLimit-Remaining, Retry-After).
async fn validate(
    http: &reqwest::Client,
    s: &Server,
    key: &str,
) -> (StatusCode, Option<u64>, Option<u64>) {
    let r = http
        .post(s.url("/api/licenses/validate"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    (
        r.status(),
        header("x-ratelimit-remaining"),
        header("retry-after"),
    )
}

/// A product and a license through the admin API of `s`; returns the license key.
async fn license_key(http: &reqwest::Client, s: &Server) -> String {
    let token = s.admin_token(http).await;
    let p = common::post_json(
        http,
        &s.url("/api/products"),
        Some(&token),
        &json!({"name": format!("P {}", uuid::Uuid::now_v7().simple()), "max_activations": 3}),
    )
    .await;
    let l = common::post_json(
        http,
        &s.url("/api/licenses"),
        Some(&token),
        &json!({"product_id": p["id"]}),
    )
    .await;
    l["key"]
        .as_str()
        .unwrap_or_else(|| panic!("license: {l}"))
        .to_string()
}

async fn ready(http: &reqwest::Client, s: &Server) -> Value {
    let r = http.get(s.url("/api/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn rate_limits(ready: &Value) -> String {
    ready["details"]["rate_limits"]
        .as_str()
        .unwrap_or_else(|| panic!("no details.rate_limits: {ready}"))
        .to_string()
}

/// Polls `/api/ready` until its `rate_limits` satisfies `ok` (10 s at most).
async fn ready_until(http: &reqwest::Client, s: &Server, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mode = rate_limits(&ready(http, s).await);
        if ok(&mode) {
            return mode;
        }
        assert!(
            Instant::now() < deadline,
            "rate_limits stayed '{mode}'; log:\n{}",
            s.log_lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Validations alternating between two instances get one budget through Redis — exactly the
/// configured 10, with one countdown of `X-RateLimit-Remaining` — and 40 validations racing on
/// both instances at once get exactly 10 too. Without Redis, the same pair grants 10 each.
#[tokio::test]
async fn per_minute_limits_are_one_budget_across_instances_through_redis() {
    let Some(redis) = test_redis() else { return };
    if !two_instances_possible() {
        return;
    }
    let http = http();
    let prefix = unique_prefix();
    let env = [
        ("ECOSIRE_REDIS_URL", redis.as_str()),
        ("ECOSIRE_REDIS_PREFIX", prefix.as_str()),
        // Per hour, so no cell comes back while the test runs, however slow the machine.
        ("ECOSIRE_RATE_LIMIT_VALIDATE", "10/h"),
    ];
    let d = Deployment::new().await;
    let a = d.start(&env).await;
    let b = d.start(&env).await;
    for s in [&a, &b] {
        assert_eq!(rate_limits(&ready(&http, s).await), "shared (redis)");
        assert_eq!(s.metric(&http, "ecosire_rate_limit_shared", "").await, 1.0);
    }

    let key = license_key(&http, &a).await;
    let mut answers = vec![];
    for i in 0..20 {
        answers.push(validate(&http, if i % 2 == 0 { &a } else { &b }, &key).await);
    }
    for (i, (status, remaining, retry)) in answers.iter().enumerate() {
        if i < 10 {
            assert_eq!(*status, 200, "call {i}");
            assert_eq!(*remaining, Some(9 - i as u64), "call {i}: one countdown");
        } else {
            assert_eq!(
                *status, 429,
                "call {i}: the budget is spent on both instances"
            );
            assert_eq!(*remaining, Some(0));
            // One cell of 10/h frees every 6 minutes.
            assert!(retry.is_some_and(|r| (355..=360).contains(&r)), "{retry:?}");
        }
    }

    // A real race: 20 concurrent validations on each instance, one key.
    let key = license_key(&http, &a).await;
    let racers = (0..40).map(|i| {
        let (http, key) = (http.clone(), key.clone());
        let s = if i % 2 == 0 { &a } else { &b };
        async move { validate(&http, s, &key).await.0 }
    });
    let statuses = futures_util::future::join_all(racers).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (10, 30), "{statuses:?}");
    assert_eq!(
        a.metric(&http, "ecosire_rate_limit_local_fallbacks_total", "")
            .await,
        0.0
    );
    drop((a, b));

    // The same pair without Redis: each instance has its own 10.
    let local_env = [("ECOSIRE_RATE_LIMIT_VALIDATE", "10/h")];
    let a = d.start(&local_env).await;
    let b = d.start(&local_env).await;
    assert_eq!(rate_limits(&ready(&http, &a).await), "local");
    let key = license_key(&http, &a).await;
    let mut ok = 0;
    for i in 0..22 {
        let s = if i % 2 == 0 { &a } else { &b };
        let (status, remaining, _) = validate(&http, s, &key).await;
        if status == 200 {
            ok += 1;
            assert_eq!(
                remaining,
                Some(9 - i / 2),
                "call {i}: a countdown per instance"
            );
        } else {
            assert_eq!(status, 429);
            assert!(i >= 20, "call {i}");
        }
    }
    assert_eq!(ok, 20, "local limits: 2 × 10 for two instances");
}

/// Redis configured but not there (a closed port): the server serves with local limits, says so
/// in `/api/ready` (still 200: limits apply) and in metrics, logs it once — and never shows the
/// password of the URL.
#[tokio::test]
async fn an_unreachable_redis_leaves_local_limits_and_says_so() {
    let port = free_port();
    let url = format!("redis://:hunter2-redis-pw@127.0.0.1:{port}/0");
    let s = Server::start(&[
        ("ECOSIRE_REDIS_URL", &url),
        ("ECOSIRE_RATE_LIMIT_VALIDATE", "3/h"),
    ])
    .await;
    let http = http();
    let r = ready(&http, &s).await;
    assert_eq!(r["status"], "ready");
    assert_eq!(r["details"]["database"], "ok");
    assert_eq!(
        rate_limits(&r),
        "local (redis unreachable: connection refused)"
    );
    // Local limits still hold: 3, then 429 (an unknown key is charged to the client's IP).
    let statuses: Vec<u16> = {
        let mut v = vec![];
        for _ in 0..6 {
            v.push(validate(&http, &s, "not-a-key").await.0.as_u16());
        }
        v
    };
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    assert_eq!(s.metric(&http, "ecosire_rate_limit_shared", "").await, 0.0);
    assert!(
        s.metric(&http, "ecosire_rate_limit_local_fallbacks_total", "")
            .await
            >= 6.0
    );
    let log = s.log_lines();
    let warnings = log
        .iter()
        .filter(|l| l.contains("Redis unreachable"))
        .count();
    assert_eq!(
        warnings,
        1,
        "one line per outage, not per request:\n{}",
        log.join("\n")
    );
    assert!(
        !log.iter().any(|l| l.contains("hunter2")) && !r.to_string().contains("hunter2"),
        "{}",
        log.join("\n")
    );
}

/// A "Redis" that accepts connections and never answers (a hung server, a black-holed route):
/// the server falls back to local limits, says why, and requests do not wait for it — 20
/// requests take less than the 20 × 100 ms they would if each waited for Redis's timeout.
#[tokio::test]
async fn a_redis_that_never_answers_means_local_limits_without_waiting() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = vec![];
        for conn in silent.incoming() {
            match conn {
                Ok(c) => held.push(c),
                Err(_) => return,
            }
        }
    });
    let s = Server::start(&[
        ("ECOSIRE_REDIS_URL", &format!("redis://127.0.0.1:{port}")),
        ("ECOSIRE_RATE_LIMIT_VALIDATE", "100/h"),
    ])
    .await;
    let http = http();
    let mode = rate_limits(&ready(&http, &s).await);
    assert!(mode.starts_with("local (redis unreachable: "), "{mode}");
    eprintln!("a silent Redis: {mode}");
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(validate(&http, &s, "not-a-key").await.0, 200);
    }
    let took = started.elapsed();
    eprintln!("20 requests with a silent Redis: {took:?}");
    assert!(took < Duration::from_secs(2), "20 requests took {took:?}");
    assert!(
        s.metric(&http, "ecosire_rate_limit_local_fallbacks_total", "")
            .await
            >= 20.0
    );
}

/// A private Redis, killed and started again on the same port: shared limits, then local ones
/// while it is away (requests keep being served), then shared again without a restart of the
/// server — each change logged once.
#[tokio::test]
async fn limits_go_local_while_redis_is_away_and_shared_when_it_returns() {
    if test_redis().is_none() {
        return;
    }
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let prefix = unique_prefix();
    let s = Server::start(&[
        ("ECOSIRE_REDIS_URL", &redis.url()),
        ("ECOSIRE_REDIS_PREFIX", &prefix),
        ("ECOSIRE_RATE_LIMIT_VALIDATE", "100/h"),
    ])
    .await;
    let http = http();
    let bucket = format!("{prefix}:rl:validate:ip:127.0.0.1");
    assert_eq!(rate_limits(&ready(&http, &s).await), "shared (redis)");
    assert_eq!(validate(&http, &s, "not-a-key").await.0, 200);
    assert!(redis.exists(&bucket).await, "the check ran in Redis");

    redis.kill();
    for _ in 0..5 {
        let (status, remaining, _) = validate(&http, &s, "not-a-key").await;
        assert_eq!(status, 200, "served while Redis is away");
        assert!(remaining.is_some());
    }
    let mode = ready_until(&http, &s, |m| m.starts_with("local (redis unreachable")).await;
    eprintln!("Redis killed: {mode}");
    assert!(mode.starts_with("local (redis unreachable: "), "{mode}");
    assert_eq!(s.metric(&http, "ecosire_rate_limit_shared", "").await, 0.0);
    assert!(
        s.metric(&http, "ecosire_rate_limit_local_fallbacks_total", "")
            .await
            >= 4.0
    );

    redis.restart().await;
    let back = Instant::now();
    ready_until(&http, &s, |m| m == "shared (redis)").await;
    eprintln!("shared again {:?} after Redis answered", back.elapsed());
    assert_eq!(s.metric(&http, "ecosire_rate_limit_shared", "").await, 1.0);
    assert!(!redis.exists(&bucket).await, "a fresh Redis");
    assert_eq!(validate(&http, &s, "not-a-key").await.0, 200);
    assert!(redis.exists(&bucket).await, "checks run in Redis again");

    let log = s.log_lines();
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("Redis unreachable"), 1, "{}", log.join("\n"));
    assert_eq!(count("Redis answers again"), 1, "{}", log.join("\n"));
}

/// The daily quota of a customer is one budget across instances, counted in the database: an
/// instance's view misses only what the others accepted since it last flushed, and each step
/// here waits for the flush it needs (polling the database), so every figure is exact except
/// the last instance's slack, which is bounded by the calls it had not heard of.
#[tokio::test]
async fn the_daily_quota_is_one_budget_across_instances() {
    if !two_instances_possible() {
        return;
    }
    let http = http();
    let env = [("ECOSIRE_QUOTA_PLANS", "free=10")];
    let d = Deployment::new().await;
    let a = d.start(&env).await;
    let b = d.start(&env).await;
    let db = sqlx::PgPool::connect(&d.database_url).await.unwrap();

    let email = format!("q{}@example.com", uuid::Uuid::now_v7().simple());
    let password = "customer-password-1";
    let r = http
        .post(a.url("/api/auth/register"))
        .json(&json!({"email": email, "password": password, "name": "Q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user: Value = r.json().await.unwrap();
    let user_id = user["user"]["id"].as_str().unwrap().to_string();
    let login = common::post_json(
        &http,
        &a.url("/api/auth/login"),
        None,
        &json!({"email": email, "password": password}),
    )
    .await;
    let token = login["token"].as_str().unwrap().to_string();

    let flushed = |total: i64| {
        let (db, user_id) = (db.clone(), user_id.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let got: Option<i64> =
                    sqlx::query_scalar("SELECT calls FROM daily_usage WHERE user_id = $1")
                        .bind(&user_id)
                        .fetch_optional(&db)
                        .await
                        .unwrap();
                if got == Some(total) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the database shows {got:?}, not {total}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let ok = |rs: &[u64]| rs.iter().map(|r| (200, Some(*r))).collect::<Vec<_>>();

    // a: 4 calls, written.
    assert_eq!(seq(&http, &token, &a, 4).await, ok(&[9, 8, 7, 6]));
    flushed(4).await;
    // b has not heard of them: its view starts at 0, until its first flush tells it 5.
    assert_eq!(seq(&http, &token, &b, 1).await, ok(&[9]));
    flushed(5).await;
    // a's view is 4 until its next flush (then 6).
    assert_eq!(seq(&http, &token, &a, 1).await, ok(&[5]));
    flushed(6).await;
    // a knows everything (b is idle): exactly 4 more, then QUOTA_EXCEEDED.
    assert_eq!(
        seq(&http, &token, &a, 6).await,
        [ok(&[3, 2, 1, 0]), vec![(429, Some(0)), (429, Some(0))]].concat()
    );
    flushed(10).await;
    // b's view is 5: it accepts until its view is full or its flush tells it 10 — at most
    // 10 − 5 = 5 calls, exactly the calls a made that b had not heard of (the documented slack).
    let mut slack = 0u64;
    loop {
        let (status, remaining) = call(&http, &token, &b).await;
        if status == 429 {
            break;
        }
        assert_eq!(
            remaining,
            Some(4 - slack),
            "b counts down from its own view"
        );
        slack += 1;
        assert!(slack <= 5, "b accepted more than its view allows");
    }
    assert!((1..=5).contains(&slack), "{slack}");
    eprintln!("b accepted {slack} call(s) on its stale view (bound: 5)");
    flushed(10 + slack as i64).await;
    // Everyone knows now: refused everywhere.
    assert_eq!(seq(&http, &token, &a, 1).await, [(429, Some(0))]);
    assert_eq!(seq(&http, &token, &b, 1).await, [(429, Some(0))]);
}

/// (status, X-Quota-Remaining) of one authenticated call of a customer; a 429 must be
/// `QUOTA_EXCEEDED` with `Retry-After` until midnight UTC.
async fn call(http: &reqwest::Client, token: &str, s: &Server) -> (u16, Option<u64>) {
    let r = http
        .get(s.url("/api/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let remaining = r
        .headers()
        .get("x-quota-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let status = r.status().as_u16();
    if status == 429 {
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let to_midnight = 86_400 - (common::now_s() as u64 % 86_400);
        assert!(retry.abs_diff(to_midnight) <= 5, "{retry} vs {to_midnight}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "QUOTA_EXCEEDED");
    }
    (status, remaining)
}

/// `n` calls in a row.
async fn seq(http: &reqwest::Client, token: &str, s: &Server, n: usize) -> Vec<(u16, Option<u64>)> {
    let mut v = vec![];
    for _ in 0..n {
        v.push(call(http, token, s).await);
    }
    v
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the test's own, on a port of its own, that it can kill and restart.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    const BINARY: &str = "/usr/bin/redis-server";

    async fn start() -> Option<PrivateRedis> {
        if !std::path::Path::new(Self::BINARY).exists() {
            eprintln!("{} is not installed: skipping", Self::BINARY);
            return None;
        }
        let mut r = PrivateRedis {
            port: free_port(),
            child: None,
        };
        r.restart().await;
        Some(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and waits until it answers.
    async fn restart(&mut self) {
        let child = Command::new(Self::BINARY)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.connection().await.is_none() {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()?;
        Some(conn)
    }

    async fn exists(&self, key: &str) -> bool {
        let mut conn = self.connection().await.expect("redis answers");
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<i64>(&mut conn)
            .await
            .unwrap()
            == 1
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
