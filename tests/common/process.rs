//! Real `ecosire serve` processes: one, or several sharing one database and one keys folder (the
//! multi-instance deployment of docs/scaling.md), which a test can kill (SIGKILL) and restart.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

pub const ADMIN: (&str, &str) = ("admin@proc.local", "proc-admin-password");

/// What the instances of one deployment share: the database and the keys folder.
pub struct Deployment {
    pub database_url: String,
    pub keys_dir: PathBuf,
    pub dir: Arc<tempfile::TempDir>,
}

impl Deployment {
    /// A fresh database (SQLite file, or a throwaway PostgreSQL database when
    /// `ECOSIRE_TEST_DATABASE_URL` is set) and an empty keys folder.
    pub async fn new() -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let database_url = super::fresh_database_url(dir.path()).await;
        Deployment {
            database_url,
            keys_dir: dir.path().join("keys"),
            dir: Arc::new(dir),
        }
    }

    /// A deployment on a database of the caller's choosing (a SQLite file on a small disk, a
    /// private PostgreSQL), with its keys in `dir`.
    pub fn on(database_url: &str, dir: tempfile::TempDir) -> Deployment {
        Deployment {
            database_url: database_url.to_string(),
            keys_dir: dir.path().join("keys"),
            dir: Arc::new(dir),
        }
    }

    /// Starts one more instance of this deployment, with `env` on top of the defaults.
    pub async fn start(&self, env: &[(&str, &str)]) -> Server {
        Server::spawn(
            &self.database_url,
            &self.keys_dir,
            env,
            Arc::clone(&self.dir),
        )
        .await
    }
}

/// One `ecosire serve` process on an ephemeral loopback port. Dropping it kills it.
pub struct Server {
    pub child: Child,
    pub base: String,
    env: Vec<(String, String)>,
    database_url: String,
    keys_dir: PathBuf,
    /// Everything the process wrote to stderr (its log), for assertions and failure messages.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
    _dir: Arc<tempfile::TempDir>,
}

impl Server {
    /// A single server on a fresh database of its own.
    pub async fn start(env: &[(&str, &str)]) -> Server {
        Deployment::new().await.start(env).await
    }

    async fn spawn(
        database_url: &str,
        keys_dir: &Path,
        env: &[(&str, &str)],
        dir: Arc<tempfile::TempDir>,
    ) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (child, base) = launch(database_url, keys_dir, &env, &log).await;
        Server {
            child,
            base,
            env,
            database_url: database_url.to_string(),
            keys_dir: keys_dir.to_path_buf(),
            log,
            _dir: dir,
        }
    }

    /// SIGKILL: no graceful shutdown, no flush; what was committed is all that survives.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again on the same database and keys (on a new port: see `base`).
    pub async fn restart(&mut self) {
        self.kill9();
        let (child, base) = launch(&self.database_url, &self.keys_dir, &self.env, &self.log).await;
        self.child = child;
        self.base = base;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/…/status"))
    }

    /// The keys folder the process was started with.
    pub fn keys_dir(&self) -> &Path {
        &self.keys_dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The published JWKS, as the text a client would pin.
    pub async fn jwks(&self, http: &reqwest::Client) -> String {
        let res = http
            .get(self.url("/.well-known/jwks.json"))
            .send()
            .await
            .expect("GET /.well-known/jwks.json");
        assert_eq!(res.status(), 200);
        res.text().await.expect("the JWKS")
    }

    pub async fn admin_token(&self, http: &reqwest::Client) -> String {
        let body = json!({"email": ADMIN.0, "password": ADMIN.1});
        let r = super::post_json(http, &self.url("/api/auth/login"), None, &body).await;
        r["token"]
            .as_str()
            .unwrap_or_else(|| panic!("login: {r}"))
            .to_string()
    }

    /// One JSON request (with a bearer `token` if given): the status and the JSON body (`Null`
    /// when there is none). A transport error (the server is gone) is an `Err`.
    pub async fn try_call(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// `try_call` that panics on a transport error.
    pub async fn call(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.try_call(http, method.clone(), path, token, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn post(
        &self,
        http: &reqwest::Client,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        self.call(http, reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn get(&self, http: &reqwest::Client, path: &str, token: &str) -> (u16, Value) {
        self.call(http, reqwest::Method::GET, path, Some(token), None)
            .await
    }

    /// The sum of the samples of metric `name` in `GET /metrics` whose labels contain `labels`
    /// (e.g. `outcome="success"`; "" for all).
    pub async fn metric(&self, http: &reqwest::Client, name: &str, labels: &str) -> f64 {
        let text = http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']) && rest.contains(labels))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// A new product with `max` seats per license (admin `token`): its id.
    pub async fn product(&self, http: &reqwest::Client, token: &str, max: i64) -> String {
        let p = self
            .product_with(http, token, json!({"max_activations": max}))
            .await;
        p["id"].as_str().unwrap().to_string()
    }

    /// A new product with a unique name and the fields of `fields` (admin `token`): as answered.
    pub async fn product_with(
        &self,
        http: &reqwest::Client,
        token: &str,
        fields: serde_json::Value,
    ) -> serde_json::Value {
        let mut body = json!({"name": format!("Product {}", uuid::Uuid::now_v7().simple())});
        super::merge(&mut body, fields);
        let (st, p) = self.post(http, "/api/products", Some(token), &body).await;
        assert_eq!(st, 201, "{p}");
        p
    }

    /// A new license of `product` (admin `token`): (id, key).
    pub async fn license(
        &self,
        http: &reqwest::Client,
        token: &str,
        product: &str,
    ) -> (String, String) {
        let (st, l) = self
            .post(
                http,
                "/api/licenses",
                Some(token),
                &json!({"product_id": product}),
            )
            .await;
        assert_eq!(st, 201, "{l}");
        (
            l["id"].as_str().unwrap().to_string(),
            l["key"].as_str().unwrap().to_string(),
        )
    }

    /// The first log line from index `from` on that contains every one of `words`, waiting up to
    /// 5 s for it (the log is read from the process's stderr on another thread, and some lines
    /// come from background tasks).
    pub async fn log_line(&self, from: usize, words: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log_lines();
            if let Some(l) = log
                .iter()
                .skip(from)
                .find(|l| words.iter().all(|w| l.contains(w)))
            {
                return l.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {words:?}:\n{}",
                log.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log lines written so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn launch(
    database_url: &str,
    keys_dir: &Path,
    env: &[(String, String)],
    log: &Arc<std::sync::Mutex<Vec<String>>>,
) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecosire"));
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ECOSIRE_BIND", "127.0.0.1:0")
        .env("DATABASE_URL", database_url)
        .env("ECOSIRE_KEYS_DIR", keys_dir)
        // Mail (no SMTP unless a test sets it) stays in the deployment's folder, whatever the
        // database.
        .env("ECOSIRE_MAIL_DIR", keys_dir.with_file_name("mail"))
        .env("ECOSIRE_ADMIN_EMAIL", ADMIN.0)
        .env("ECOSIRE_ADMIN_PASSWORD", ADMIN.1)
        .env("ECOSIRE_COOKIE_SECURE", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start ecosire");
    // Both pipes are read to their end on threads of their own (a closed pipe would fail the
    // server's later writes); stdout hands over the first address the server shows.
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(i) = line.find("http://127.0.0.1:")
                && let Some(tx) = tx.take()
            {
                let rest = &line[i..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '"' || c == ')')
                    .unwrap_or(rest.len());
                let _ = tx.send(rest[..end].trim_end_matches('/').to_string());
            }
        }
    });
    let base = match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(base)) => base,
        _ => panic!(
            "the server did not print its address; its log:\n{}",
            log.lock().unwrap().join("\n")
        ),
    };
    (child, base)
}
