//! Faults, with real processes: `kill -9` of a server under load, PostgreSQL stopped and started
//! again under load, and a SQLite database on a full disk or made read-only. What was answered
//! must be kept, the database must never be corrupt, failures must be fast 503s with a clear log
//! line, and the server must recover by itself.
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{Deployment, Server};
use serde_json::{Value, json};
use sqlx::Connection;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Polls `probe` (no sleeping for timing: a short pause between tries) until it answers `Some`,
/// for at most `limit`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A webhook receiver on loopback that records every event body it is sent.
struct Receiver {
    url: String,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = events.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        sink.lock().unwrap().push(v);
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, events }
    }

    /// How many times each event id was received.
    fn counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for e in self.events.lock().unwrap().iter() {
            *m.entry(e["id"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
        m
    }
}

/// kill -9 under activation load, then restart: every activation answered 201 is there, no
/// license holds more activations than seats, and every event committed to the outbox reaches the
/// webhook receiver after the restart. Runs on SQLite, and on PostgreSQL with
/// `ECOSIRE_TEST_DATABASE_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_activation_load_loses_nothing_that_was_answered() {
    let receiver = Receiver::start().await;
    let d = Deployment::new().await;
    let mut s = d
        .start(&[
            ("ECOSIRE_RATE_LIMITS", "off"),
            ("ECOSIRE_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("ECOSIRE_WEBHOOK_BACKOFF_BASE_S", "1"),
            // A delivery the killed process had claimed is sent again once its lease ends.
            ("ECOSIRE_WEBHOOK_LEASE_S", "15"),
        ])
        .await;
    let http = client();
    let token = s.admin_token(&http).await;
    const TYPES: [&str; 2] = ["license.created", "license.activated"];
    let (st, ep) = s
        .post(
            &http,
            "/api/webhook-endpoints",
            Some(&token),
            &json!({"url": receiver.url, "events": TYPES}),
        )
        .await;
    assert_eq!(st, 201, "{ep}");
    // Half the requests go to a few "hot" licenses of 3 seats (full at once: many requests race
    // for the same seats), half are spread over many licenses of 10 seats (seats stay free long
    // enough for the kill to come while activations are still being granted).
    const HOT: usize = 10;
    const WIDE: usize = 300;
    const WORKERS: usize = 32;
    let hot = s.product(&http, &token, 3).await;
    let wide = s.product(&http, &token, 10).await;
    let mut licenses: Vec<(String, String, i64)> = vec![];
    for i in 0..(HOT + WIDE) / 10 {
        let (p, seats) = if i < HOT / 10 { (&hot, 3) } else { (&wide, 10) };
        let batch = (0..10).map(|_| s.license(&http, &token, p));
        let made = futures_util::future::join_all(batch).await;
        licenses.extend(made.into_iter().map(|(id, key)| (id, key, seats)));
    }
    let seats: usize = licenses.iter().map(|l| l.2 as usize).sum();
    let licenses = Arc::new(licenses);

    // WORKERS clients activate distinct fingerprints round the licenses until the server is
    // gone; each 201 is remembered with its activation id.
    let created: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let base = s.base.clone();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (http, base, licenses, created, refused, lost) = (
                http.clone(),
                base.clone(),
                licenses.clone(),
                created.clone(),
                refused.clone(),
                lost.clone(),
            );
            tokio::spawn(async move {
                for j in 0.. {
                    // Even workers on the hot licenses, odd ones round the wide ones.
                    let n = (w + j * WORKERS) / 2;
                    let (id, key, _) = if w.is_multiple_of(2) {
                        &licenses[n % HOT]
                    } else {
                        &licenses[HOT + n % WIDE]
                    };
                    let res = http
                        .post(format!("{base}/api/licenses/activate"))
                        .json(&json!({"key": key, "fingerprint": format!("fp-{w}-{j}")}))
                        .send()
                        .await;
                    let res = match res {
                        Ok(r) => r,
                        Err(_) => {
                            lost.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    };
                    let status = res.status().as_u16();
                    let body: Value = match res.json().await {
                        Ok(b) => b,
                        Err(_) => {
                            lost.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    };
                    match status {
                        201 => created.lock().unwrap().push((
                            id.clone(),
                            body["activation"]["id"].as_str().unwrap().to_string(),
                        )),
                        409 => {
                            assert_eq!(body["code"], "ACTIVATION_LIMIT_REACHED", "{body}");
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => panic!("unexpected {status}: {body}"),
                    }
                }
            })
        })
        .collect();
    // Kill in the thick of it: activations being granted, and the dispatcher sending their
    // events.
    until(
        Duration::from_secs(30),
        "activation events going out under the load",
        || {
            let activated = receiver
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "license.activated")
                .count();
            async move { (activated >= 50).then_some(()) }
        },
    )
    .await;
    let seats_taken = created.lock().unwrap().len();
    s.kill9();
    for w in workers {
        w.await.unwrap();
    }
    let created = created.lock().unwrap().clone();
    let delivered_before = receiver.counts().len();
    let lost = lost.load(Ordering::Relaxed);
    println!(
        "kill -9 after {} activations answered 201 and {} answered 409; {lost} requests cut off; {delivered_before} events delivered before the kill",
        created.len(),
        refused.load(Ordering::Relaxed)
    );
    assert_eq!(lost, WORKERS, "every worker stopped on the kill");
    assert!(seats_taken < seats, "the load was over before the kill");

    // Restart on the same database and keys.
    let restarted = Instant::now();
    s.restart().await;
    let token = s.admin_token(&http).await;
    let mut answered: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (lic, act) in &created {
        answered.entry(lic).or_default().insert(act);
    }
    let mut total = 0;
    for (id, _, seats) in licenses.iter() {
        let (st, page) = s
            .get(&http, &format!("/api/licenses/{id}/activations"), &token)
            .await;
        assert_eq!(st, 200, "{page}");
        let kept: HashSet<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        assert!(
            kept.len() as i64 <= *seats,
            "license {id} holds {} activations for {seats} seats",
            kept.len()
        );
        if let Some(want) = answered.get(id.as_str()) {
            let missing: Vec<_> = want.difference(&kept).collect();
            assert!(
                missing.is_empty(),
                "answered 201 but gone after kill -9: {missing:?}"
            );
        }
        total += kept.len();
    }

    // Every event in the outbox for the endpoint's types reaches the receiver, and every 201
    // has its license.activated among them.
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&d.database_url).await.unwrap();
    let committed: Vec<String> = sqlx::query_scalar("SELECT id FROM outbox WHERE type IN ($1, $2)")
        .bind(TYPES[0])
        .bind(TYPES[1])
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(
        committed.len(),
        licenses.len() + total,
        "one event per license and per activation"
    );
    let all_delivered = until(
        Duration::from_secs(40),
        "every committed event delivered after the restart",
        || {
            let counts = receiver.counts();
            let done = committed.iter().all(|id| counts.contains_key(id));
            async move { done.then(Instant::now) }
        },
    )
    .await;
    let counts = receiver.counts();
    let twice = counts.values().filter(|n| **n > 1).count();
    let activated: HashSet<String> = receiver
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "license.activated")
        .filter_map(|e| e["data"]["object"]["id"].as_str().map(String::from))
        .collect();
    for (_, act) in &created {
        assert!(activated.contains(act), "no license.activated for {act}");
    }
    println!(
        "after the restart: {total} activations kept (all {} answered 201 among them), none over its seats; \
         all {} committed events delivered {:.1} s after the restart ({twice} twice: sent before the kill, not yet recorded)",
        created.len(),
        committed.len(),
        (all_delivered - restarted).as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL stopped and started again under load, on a private cluster (never the shared one).

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| Some(e.ok()?.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.push(PathBuf::from("/usr/local/bin"));
    dirs.into_iter()
        .rev()
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
}

/// A throwaway PostgreSQL cluster in a temporary folder, run as the `postgres` user on a free
/// loopback port, trust authentication. Stopped (immediately) when dropped.
struct PrivatePg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePg {
    async fn as_postgres(&self, program: &str, args: &[&str]) {
        let out = tokio::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn create(bin: PathBuf) -> PrivatePg {
        let dir = tempfile::tempdir().unwrap();
        let owner = |what: &str| -> u32 {
            let out = std::process::Command::new("id")
                .args([what, "postgres"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        std::os::unix::fs::chown(dir.path(), Some(owner("-u")), Some(owner("-g"))).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePg { bin, dir, port };
        let data = pg.data();
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .await;
        pg.start().await;
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn start(&self) {
        let log = self.dir.path().join("log").display().to_string();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &opts,
                "-w",
                "-t",
                "30",
                "start",
            ],
        )
        .await;
    }

    async fn stop(&self) {
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
            .await;
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// One request of the load: when it started, how long it took, what it answered.
#[derive(Debug, Clone)]
struct Sample {
    kind: &'static str,
    started: Instant,
    took: Duration,
    status: u16,
    code: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_under_load_fails_fast_and_recovers_by_itself() {
    let Some(bin) = pg_bin() else {
        eprintln!(
            "postgres restart: skipped: no initdb/pg_ctl in /usr/lib/postgresql/*/bin or /usr/local/bin"
        );
        return;
    };
    let pg = PrivatePg::create(bin).await;
    let d = Deployment::on(&pg.url(), tempfile::tempdir().unwrap());
    // The default acquire timeout (ECOSIRE_DB_ACQUIRE_TIMEOUT_S=3) is what is measured.
    let s = d.start(&[("ECOSIRE_RATE_LIMITS", "off")]).await;
    let http = client();
    let token = s.admin_token(&http).await;
    let product = s.product(&http, &token, 1_000).await;
    let mut keys = vec![];
    for _ in 0..20 {
        keys.push(s.license(&http, &token, &product).await.1);
    }
    let keys = Arc::new(keys);

    // Load: 6 clients, each alternating an activation (a write) and a validation (a cache hit
    // while the cache is trusted).
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (http, base, keys, samples, stop) = (
                http.clone(),
                s.base.clone(),
                keys.clone(),
                samples.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut j = 0;
                while !stop.load(Ordering::Relaxed) {
                    j += 1;
                    let key = &keys[(w * 7 + j) % keys.len()];
                    let (kind, path, body) = if j % 2 == 0 {
                        (
                            "activate",
                            "/api/licenses/activate",
                            json!({"key": key, "fingerprint": format!("pg-{w}-{j}")}),
                        )
                    } else {
                        ("validate", "/api/licenses/validate", json!({"key": key}))
                    };
                    let started = Instant::now();
                    let res = http.post(format!("{base}{path}")).json(&body).send().await;
                    let (status, body) = match res {
                        Ok(r) => {
                            let st = r.status().as_u16();
                            (st, r.json::<Value>().await.unwrap_or(Value::Null))
                        }
                        Err(e) => panic!("{kind}: no answer: {e}"),
                    };
                    samples.lock().unwrap().push(Sample {
                        kind,
                        started,
                        took: started.elapsed(),
                        status,
                        code: body["code"].as_str().unwrap_or("").to_string(),
                    });
                }
            })
        })
        .collect();
    let count_after = |t: Instant, kind: &'static str, status: u16| {
        samples
            .lock()
            .unwrap()
            .iter()
            .filter(|x| x.started >= t && x.kind == kind && x.status == status)
            .count()
    };
    let begin = Instant::now();
    until(Duration::from_secs(10), "activations under load", || {
        let n = count_after(begin, "activate", 201);
        async move { (n >= 50).then_some(()) }
    })
    .await;

    // Stop PostgreSQL.
    let stopping = Instant::now();
    pg.stop().await;
    let stopped = Instant::now();
    let (ready_503, problem) = until(Duration::from_secs(15), "/api/ready answers 503", || {
        let (http, url) = (http.clone(), s.url("/api/ready"));
        async move {
            let r = http.get(url).send().await.unwrap();
            let st = r.status().as_u16();
            let retry = r.headers().contains_key("retry-after");
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (st == 503).then(|| {
                assert!(retry, "503 without Retry-After");
                (Instant::now(), body)
            })
        }
    })
    .await;
    assert_eq!(problem["code"], "DATABASE_UNAVAILABLE", "{problem}");
    assert_eq!(problem["status"], 503, "{problem}");
    let cause = problem["cause"].as_str().unwrap_or_default().to_string();
    assert!(!cause.is_empty(), "no cause: {problem}");
    // Requests made while the database is down fail with 503 DATABASE_UNAVAILABLE, fast.
    until(
        Duration::from_secs(20),
        "activations answered during the outage",
        || {
            let n = count_after(stopped, "activate", 503);
            async move { (n >= 12).then_some(()) }
        },
    )
    .await;

    // Start it again: the server recovers by itself.
    let restarting = Instant::now();
    pg.start().await;
    let started = Instant::now();
    let ready_again = until(
        Duration::from_secs(20),
        "/api/ready answers 200 again",
        || {
            let (http, url) = (http.clone(), s.url("/api/ready"));
            async move {
                let st = http.get(url).send().await.unwrap().status().as_u16();
                (st == 200).then(Instant::now)
            }
        },
    )
    .await;
    let activation_again = until(Duration::from_secs(20), "activations succeed again", || {
        let first = samples
            .lock()
            .unwrap()
            .iter()
            .filter(|x| x.started >= started && x.kind == "activate" && x.status == 201)
            .map(|x| x.started + x.took)
            .min();
        async move { first }
    })
    .await;
    until(Duration::from_secs(20), "validations succeed again", || {
        let n = count_after(started, "validate", 200);
        async move { (n >= 5).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    // What the load saw.
    let samples = samples.lock().unwrap().clone();
    let mut by_answer: BTreeMap<(&str, u16, String), usize> = BTreeMap::new();
    for x in &samples {
        *by_answer
            .entry((x.kind, x.status, x.code.clone()))
            .or_default() += 1;
    }
    for x in &samples {
        match x.status {
            200 | 201 => {}
            503 => assert_eq!(x.code, "DATABASE_UNAVAILABLE", "{x:?}"),
            _ => panic!("unexpected answer during the restart: {x:?}; all: {by_answer:?}"),
        }
    }
    let mut outage: Vec<Duration> = samples
        .iter()
        .filter(|x| x.started >= stopped && x.started + x.took <= restarting && x.status == 503)
        .map(|x| x.took)
        .collect();
    outage.sort();
    let slowest = *outage.last().unwrap();
    assert!(
        slowest < Duration::from_millis(4_500),
        "a request took {slowest:?} to fail while the database was down"
    );
    let ok_during: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.started >= stopped && x.started + x.took <= restarting && x.status < 300)
        .collect();
    s.log_line(0, &["database unavailable", "answering 503"])
        .await;
    println!(
        "PostgreSQL stopped (pg_ctl stop -m fast took {:.0} ms): /api/ready 503 after {:.0} ms (cause: {cause}); \
         {} requests failed with 503 DATABASE_UNAVAILABLE during the outage in {:.0}–{:.0} ms (median {:.0} ms), {} answered from the cache",
        ms(stopped - stopping),
        ms(ready_503 - stopped),
        outage.len(),
        ms(outage[0]),
        ms(slowest),
        ms(outage[outage.len() / 2]),
        ok_during.len()
    );
    println!(
        "PostgreSQL started again (pg_ctl start took {:.0} ms): /api/ready 200 after {:.0} ms, first activation 201 after {:.0} ms; answers: {by_answer:?}",
        ms(started - restarting),
        ms(ready_again - started),
        ms(activation_again.saturating_duration_since(started)),
    );
}

// ---------------------------------------------------------------------------------------------
// SQLite: a full disk and a read-only database file.

/// A tmpfs of `size` mounted on `dir` (we run as root), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}

/// `PRAGMA integrity_check` of a SQLite file, with no server running.
async fn integrity(path: &Path) -> String {
    let url = format!("sqlite://{}", path.display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut c)
        .await
        .unwrap();
    rows.join("; ")
}

async fn count_activations(path: &Path, ids: &[String]) -> usize {
    let url = format!("sqlite://{}", path.display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mut n = 0;
    for id in ids {
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM activations WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut c)
            .await
            .unwrap();
        n += usize::from(found.is_some());
    }
    n
}

/// An activation answer: (status, code, activation id).
async fn activate(s: &Server, http: &reqwest::Client, key: &str, fp: &str) -> (u16, Value) {
    let (st, body) = s
        .post(
            http,
            "/api/licenses/activate",
            None,
            &json!({"key": key, "fingerprint": fp}),
        )
        .await;
    (st, body)
}

/// Checks a 503 answer: the stable code, and nothing internal in it.
#[track_caller]
fn expect_unavailable(body: &Value) {
    assert_eq!(body["code"], "DATABASE_UNAVAILABLE", "{body}");
    assert_eq!(body["status"], 503, "{body}");
    let text = body.to_string().to_lowercase();
    for leak in ["sqlite", "/tmp", ".db", "disk", "select", "insert"] {
        assert!(!text.contains(leak), "the answer leaks '{leak}': {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_on_a_full_disk_answers_503_and_is_never_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let db_path = disk.join("ecosire.db");
    let d = Deployment::on(&format!("sqlite://{}", db_path.display()), dir);
    let Some(_mount) = Tmpfs::mount(&disk, "8m") else {
        eprintln!("full disk: skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let mut s = d.start(&[("ECOSIRE_RATE_LIMITS", "off")]).await;
    let http = client();
    let token = s.admin_token(&http).await;
    let product = s.product(&http, &token, 1_000_000).await;
    let (_, key) = s.license(&http, &token, &product).await;
    let mut created = vec![];
    let (st, a) = activate(&s, &http, &key, "before").await;
    assert_eq!(st, 201, "{a}");
    created.push(a["activation"]["id"].as_str().unwrap().to_string());

    // Fill the disk.
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // Writes go on until the database needs a page the disk does not have; from then on they
    // fail with 503, never a 500.
    let mut first_503 = None;
    for i in 0..5_000 {
        let (st, body) = activate(&s, &http, &key, &format!("full-{i}")).await;
        match st {
            201 => created.push(body["activation"]["id"].as_str().unwrap().to_string()),
            503 => {
                expect_unavailable(&body);
                first_503 = Some(i);
                break;
            }
            _ => panic!(
                "unexpected {st} on a full disk: {body}\n{}",
                s.log_lines().join("\n")
            ),
        }
    }
    let first_503 = first_503.expect("the disk never filled up");
    for i in 0..20 {
        let (st, body) = activate(&s, &http, &key, &format!("still-full-{i}")).await;
        assert_eq!(st, 503, "{body}\n{}", s.log_lines().join("\n"));
        expect_unavailable(&body);
    }
    // Reads still work.
    let (st, v) = s
        .post(&http, "/api/licenses/validate", None, &json!({"key": key}))
        .await;
    assert_eq!((st, v["code"].as_str()), (200, Some("VALID")), "{v}");
    let line = s
        .log_line(
            0,
            &["database unavailable", "disk is full", "answering 503"],
        )
        .await;
    println!(
        "full disk: {first_503} activations fitted after filling the disk, then 503; log: {line}"
    );

    // Space again: the same process writes again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let recovered = until(
        Duration::from_secs(10),
        "writes after the disk has room",
        || {
            let (s, http, key) = (&s, &http, &key);
            async move {
                let (st, body) =
                    activate(s, http, key, &format!("room-{}", uuid::Uuid::now_v7())).await;
                (st == 201).then(|| body["activation"]["id"].as_str().unwrap().to_string())
            }
        },
    )
    .await;
    created.push(recovered);

    // Crash it, and look at the file: intact, with every activation that was answered 201.
    s.kill9();
    assert_eq!(integrity(&db_path).await, "ok");
    assert_eq!(count_activations(&db_path, &created).await, created.len());
    s.restart().await;
    let (st, body) = activate(&s, &http, &key, "after-restart").await;
    assert_eq!(st, 201, "{body}");
}

/// `chattr +i` / `-i`: an immutable file cannot be written, even by root and even through a
/// descriptor opened before.
fn chattr(flag: &str, files: &[PathBuf]) -> bool {
    files.iter().filter(|f| f.exists()).all(|f| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(f)
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Clears the immutable flag when dropped, whatever happens to the test.
struct Immutable(Vec<PathBuf>);

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_read_only_file_answers_503_and_is_never_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("data").join("ecosire.db");
    let d = Deployment::on(&format!("sqlite://{}", db_path.display()), dir);
    let mut s = d.start(&[("ECOSIRE_RATE_LIMITS", "off")]).await;
    let http = client();
    let token = s.admin_token(&http).await;
    let product = s.product(&http, &token, 1_000_000).await;
    let (_, key) = s.license(&http, &token, &product).await;
    let mut created = vec![];
    let (st, a) = activate(&s, &http, &key, "before").await;
    assert_eq!(st, 201, "{a}");
    created.push(a["activation"]["id"].as_str().unwrap().to_string());

    // The database and its write-ahead log become read-only under the running server.
    let files: Vec<PathBuf> = ["", "-wal"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", db_path.display())))
        .collect();
    let guard = Immutable(files.clone());
    if !chattr("+i", &files) {
        eprintln!("read-only file: skipped: chattr +i is not supported here");
        return;
    }
    for i in 0..10 {
        let (st, body) = activate(&s, &http, &key, &format!("ro-{i}")).await;
        assert_eq!(st, 503, "{body}\n{}", s.log_lines().join("\n"));
        expect_unavailable(&body);
    }
    let (st, v) = s
        .post(&http, "/api/licenses/validate", None, &json!({"key": key}))
        .await;
    assert_eq!((st, v["code"].as_str()), (200, Some("VALID")), "{v}");
    let live_line = s
        .log_line(0, &["database unavailable", "answering 503"])
        .await;

    // Writable again: the same process writes again.
    drop(guard);
    created.push(writes_again(&s, &http, &key).await);

    // Started on a read-only file, the server serves reads and refuses writes the same way.
    s.kill9();
    let guard = Immutable(files.clone());
    assert!(chattr("+i", &files));
    let logged = s.log_lines().len();
    s.restart().await;
    let (st, v) = s
        .post(&http, "/api/licenses/validate", None, &json!({"key": key}))
        .await;
    assert_eq!((st, v["code"].as_str()), (200, Some("VALID")), "{v}");
    let (st, body) = activate(&s, &http, &key, "ro-after-restart").await;
    assert_eq!(st, 503, "{body}");
    expect_unavailable(&body);
    let restart_line = s
        .log_line(logged, &["database is read-only", "answering 503"])
        .await;
    println!("read-only file under a running server: {live_line}");
    println!("server started on a read-only file: {restart_line}");

    // Writable again: this process, whose connections were opened read-only, writes again too
    // (a write refused as read-only retires the connections opened before it).
    drop(guard);
    created.push(writes_again(&s, &http, &key).await);
    s.kill9();
    assert_eq!(integrity(&db_path).await, "ok");
    assert_eq!(count_activations(&db_path, &created).await, created.len());
}

/// Waits (bounded) until an activation on `key` succeeds again: the id of the new activation.
async fn writes_again(s: &Server, http: &reqwest::Client, key: &str) -> String {
    until(
        Duration::from_secs(10),
        "writes once the file is writable",
        || async move {
            let (st, body) = activate(s, http, key, &format!("rw-{}", uuid::Uuid::now_v7())).await;
            (st == 201).then(|| body["activation"]["id"].as_str().unwrap().to_string())
        },
    )
    .await
}
