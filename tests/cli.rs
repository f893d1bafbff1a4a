//! The `ecosire` binary as an operator meets it: started as a process with pipes (never a
//! terminal) for stdout and stderr and an environment holding only what each test sets; plus
//! `GET /` through the router.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A bound on how long a debug build may take to start (database, keys, an Argon2 hash), so a
/// broken start fails the test instead of hanging it. Nothing waits for it to pass.
const START_LIMIT: Duration = Duration::from_secs(120);

/// Values that would each stop `ecosire serve`, none of them read by the commands that need no
/// server.
const UNRELATED_BAD: &[(&str, &str)] = &[
    ("ECOSIRE_BIND", "nope"),
    ("DATABASE_URL", "mysql://x"),
    ("ECOSIRE_LOG_FORMAT", "xml"),
    ("RUST_LOG", "ecosire=loud"),
    ("ECOSIRE_HEADER_TIMEOUT_S", "0"),
    ("ECOSIRE_ADMIN_EMAIL", "not-an-address"),
];

/// `ecosire` with an empty environment, run in `dir`.
fn ecosire(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ecosire"));
    c.env_clear().current_dir(dir);
    c
}

/// `ecosire serve` on any free loopback port, with a fresh database in `dir/db` and keys in
/// `dir/keys`.
fn server(dir: &Path) -> Command {
    let mut c = ecosire(dir);
    c.arg("serve")
        .env("ECOSIRE_BIND", "127.0.0.1:0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/db/ecosire.db", dir.display()),
        )
        .env("ECOSIRE_KEYS_DIR", dir.join("keys"));
    c
}

fn with_admin(c: &mut Command) -> &mut Command {
    c.env("ECOSIRE_ADMIN_EMAIL", common::ADMIN_EMAIL)
        .env("ECOSIRE_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(String::from)
        .collect()
}

/// One stream of a running server, read line by line on its own thread so the pipe never fills.
struct Stream {
    rx: Receiver<String>,
    seen: Vec<String>,
}

impl Stream {
    fn new(pipe: impl Read + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Stream { rx, seen: vec![] }
    }

    /// The next line, or `None` once the process has closed the stream. Panics at `deadline`,
    /// so a process that should have printed or exited cannot hang the test.
    #[track_caller]
    fn next_line(&mut self, deadline: Instant, what: &str) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "no {what} within {START_LIMIT:?}; so far:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// Reads until a line matches, and returns it.
    #[track_caller]
    fn wait_for(&mut self, what: &str, found: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + START_LIMIT;
        while let Some(line) = self.next_line(deadline, what) {
            if found(&line) {
                return line;
            }
        }
        panic!(
            "the stream ended without {what}; it had:\n{}",
            self.seen.join("\n")
        )
    }

    /// Every line, until the process closes the stream.
    #[track_caller]
    fn until_closed(mut self, deadline: Instant) -> Vec<String> {
        while self.next_line(deadline, "exit").is_some() {}
        self.seen
    }

    /// Every line, once the process is gone.
    fn all(mut self) -> Vec<String> {
        self.seen.extend(self.rx.iter());
        self.seen
    }
}

/// A child process, killed when dropped, so a failing test leaves no server behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A started server.
struct Running {
    child: Killed,
    stdout: Stream,
    stderr: Stream,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ecosire");
        let stdout = Stream::new(child.stdout.take().expect("stdout"));
        let stderr = Stream::new(child.stderr.take().expect("stderr"));
        Running {
            child: Killed(child),
            stdout,
            stderr,
        }
    }

    /// Waits for the text-mode banner on stdout and returns the address it announces.
    fn address(&mut self) -> String {
        let line = self
            .stdout
            .wait_for("listening line", |l| l.contains("listening on http://"));
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .expect("an address")
            .to_string()
    }

    /// Waits for a process that should stop by itself (a failed start); returns its exit code,
    /// stdout and stderr.
    fn exit(self) -> (Option<i32>, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + START_LIMIT;
        let Running {
            mut child,
            stdout,
            stderr,
        } = self;
        let (stdout, stderr) = (stdout.until_closed(deadline), stderr.until_closed(deadline));
        (child.0.wait().expect("exit status").code(), stdout, stderr)
    }

    /// Stops the server and returns everything it wrote: (stdout, stderr).
    fn stop(self) -> (Vec<String>, Vec<String>) {
        let Running {
            child,
            stdout,
            stderr,
        } = self;
        drop(child);
        (stdout.all(), stderr.all())
    }
}

/// POSTs a JSON body over a plain socket and returns the status code.
fn post_status(addr: &str, path: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"))
}

// --- 16: configuration reference -------------------------------------------------------------

#[test]
fn serve_help_lists_every_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = ecosire(dir.path())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let listed = ecosire::config::variables();
    for name in [
        "ECOSIRE_HEADER_TIMEOUT_S",
        "ECOSIRE_REQUEST_TIMEOUT_S",
        "ECOSIRE_IDLE_TIMEOUT_S",
        "ECOSIRE_MAX_CONNECTIONS",
        "ECOSIRE_HASH_CONCURRENCY",
        "ECOSIRE_HASH_QUEUE_TIMEOUT_S",
        "ECOSIRE_QUOTA_PLANS",
        "ECOSIRE_RATE_LIMIT_LOGIN",
    ] {
        assert!(
            listed.iter().any(|v| v.name == name),
            "{name} is not listed"
        );
    }
    for v in listed {
        assert!(
            help.contains(&v.name),
            "{} is missing from:\n{help}",
            v.name
        );
    }
}

#[test]
fn a_misspelled_variable_is_named_with_the_closest_known_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut running =
        Running::start(with_admin(&mut server(dir.path())).env("ECOSIRE_RATE_LIMTS", "off"));
    running.address();
    let (_, stderr) = running.stop();
    let warning = stderr
        .iter()
        .find(|l| l.contains("ECOSIRE_RATE_LIMTS"))
        .unwrap_or_else(|| panic!("no warning in:\n{}", stderr.join("\n")));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("did you mean ECOSIRE_RATE_LIMITS?"),
        "{warning}"
    );
}

// --- 17: validation before "listening", one line per failure ---------------------------------

#[test]
fn a_bad_admin_email_stops_the_start_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = Running::start(
        server(dir.path())
            .env("ECOSIRE_ADMIN_EMAIL", "admin")
            .env("ECOSIRE_ADMIN_PASSWORD", "long-enough-password"),
    )
    .exit();
    assert_eq!(stdout, Vec::<String>::new());
    assert_eq!(
        stderr,
        ["error: ECOSIRE_ADMIN_EMAIL: 'admin' is not a valid email address"]
    );
    assert_eq!(code, Some(2));
    assert!(
        !dir.path().join("db").exists(),
        "nothing is created before the configuration is checked"
    );
}

#[test]
fn a_start_up_failure_is_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (code, stdout, stderr) = Running::start(
        with_admin(&mut server(dir.path()))
            .env("ECOSIRE_BIND", addr.to_string())
            .env("RUST_LOG", "warn"),
    )
    .exit();
    assert_eq!(stdout, Vec::<String>::new());
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(
        stderr[0].starts_with(&format!("error: ECOSIRE_BIND: cannot listen on {addr}: ")),
        "{stderr:?}"
    );
    assert_eq!(code, Some(1));

    let (code, _, stderr) =
        Running::start(server(dir.path()).env("ECOSIRE_HEADER_TIMEOUT_S", "0")).exit();
    assert_eq!(
        stderr,
        ["error: ECOSIRE_HEADER_TIMEOUT_S: expected a whole number of at least 1, got '0'"]
    );
    assert_eq!(code, Some(2));
}

// --- 18: logs ------------------------------------------------------------------------------

#[test]
fn logs_are_not_coloured_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Running::start(with_admin(&mut server(dir.path())));
    running.address();
    let (_, stderr) = running.stop();
    assert!(
        !stderr.is_empty(),
        "the first start logs the keys it generates"
    );
    for line in &stderr {
        assert!(!line.contains('\u{1b}'), "colour codes in {line:?}");
    }
}

#[test]
fn json_logs_carry_the_banner_and_nothing_else_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Running::start(
        with_admin(&mut server(dir.path()))
            .env("ECOSIRE_LOG_FORMAT", "json")
            // The banner is shown whatever the filter says.
            .env("RUST_LOG", "warn"),
    );
    let listening = running
        .stderr
        .wait_for("listening event", |l| l.contains("listening"));
    let event: Value = serde_json::from_str(&listening).expect("a JSON event");
    let address = event["fields"]["address"].as_str().expect("address field");
    let addr = address.strip_prefix("http://127.0.0.1:").expect(address);
    assert!(addr.parse::<u16>().is_ok_and(|p| p > 0), "{address}");
    // The admin line follows the listening one: wait for it before stopping the server, or a
    // stop sent in between would race it.
    running.stderr.wait_for("the admin event", |l| {
        l.contains("created from ECOSIRE_ADMIN_EMAIL")
    });
    let (stdout, stderr) = running.stop();
    assert!(stdout.is_empty(), "stdout: {stdout:?}");
    for line in &stderr {
        assert!(
            serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()),
            "not a JSON event: {line}"
        );
    }
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("created from ECOSIRE_ADMIN_EMAIL")),
        "the whole banner is logged: {stderr:?}"
    );
}

#[cfg(unix)]
#[test]
fn a_generated_admin_password_goes_to_a_private_file_not_the_log() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut running = Running::start(&mut server(dir.path()));
    let addr = running.address();
    let path = dir.path().join("db").join("initial-admin-password.txt");
    running.stdout.wait_for("the password file's path", |l| {
        l.contains(&path.display().to_string())
    });
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let password = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert!(password.len() >= 16, "{password:?}");
    let login = serde_json::json!({"email": "admin@ecosire.local", "password": password});
    assert_eq!(
        post_status(&addr, "/api/auth/login", &login.to_string()),
        200
    );
    let (stdout, stderr) = running.stop();
    for line in stdout.iter().chain(&stderr) {
        assert!(
            !line.contains(&password),
            "the password was written out: {line}"
        );
    }
}

// --- 19: commands that need no server ------------------------------------------------------

#[test]
fn openapi_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    // Closed before the command writes anything: every write fails with EPIPE, as it does once
    // `head` has read its lines.
    drop(reader);
    let out = ecosire(dir.path())
        .arg("openapi")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(lines(&out.stderr), Vec::<String>::new());
    assert!(out.status.success(), "{:?}", out.status);
}

fn run_with(dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    ecosire(dir)
        .args(args)
        .envs(UNRELATED_BAD.iter().copied())
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn commands_without_a_server_ignore_unrelated_bad_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with(dir.path(), &["openapi"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(spec["openapi"].is_string());

    let out = run_with(
        dir.path(),
        &[
            "webhooks",
            "sample",
            "license.activated",
            "--url",
            "https://example.com/h",
            "--secret",
            "whsec_test",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("curl "));

    let out = run_with(
        dir.path(),
        &[
            "webhooks",
            "verify",
            "--secret",
            "whsec_test",
            "--header",
            "t=1,v1=00",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("INVALID: "));

    let keys = dir.path().join("keys");
    let generated = ecosire(dir.path())
        .args(["keys", "generate"])
        .env("ECOSIRE_KEYS_DIR", &keys)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let out = run_with(
        dir.path(),
        &["license", "verify-token", "not.a.token"],
        &[
            ("ECOSIRE_KEYS_DIR", keys.to_str().unwrap()),
            ("ECOSIRE_TOKEN_ISSUER", "x"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("INVALID: "), "{stderr}");
}

// --- 20: GET / -----------------------------------------------------------------------------

#[tokio::test]
async fn the_root_redirects_to_the_api_docs() {
    let app = common::TestApp::new().await;
    let r = app.get("/", None).await;
    assert_eq!(r.status.as_u16(), 307, "{}", r.text);
    let location = r.header("location").expect("Location").to_string();
    assert_eq!(location, "/api/docs");
    let docs = app.get(&location, None).await;
    assert!(
        docs.status.is_success() || docs.status.is_redirection(),
        "{location} answers {}",
        docs.status
    );
}

#[test]
fn the_access_log_rounds_latency_and_leaves_out_what_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Running::start(
        with_admin(&mut server(dir.path()))
            .env("ECOSIRE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info"),
    );
    let listening = running
        .stderr
        .wait_for("listening event", |l| l.contains("listening"));
    let event: Value = serde_json::from_str(&listening).unwrap();
    let addr = event["fields"]["address"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    // An anonymous request: no principal, no API key.
    assert_eq!(
        post_status(&addr, "/api/licenses/validate", r#"{"key":"ECOS-0"}"#),
        200
    );
    let line = running
        .stderr
        .wait_for("the access log line", |l| l.contains("ecosire::access"));
    let access: Value = serde_json::from_str(&line).unwrap();
    let fields = &access["fields"];
    let latency = fields["latency_ms"]
        .as_f64()
        .expect("latency_ms is a number");
    let text = fields["latency_ms"].to_string();
    let decimals = text.split('.').nth(1).map_or(0, str::len);
    assert!(latency >= 0.0 && decimals <= 3, "latency_ms {text}");
    for absent in ["principal", "api_key"] {
        assert!(
            fields.get(absent).is_none(),
            "empty {absent} logged: {line}"
        );
    }
    assert_eq!(fields["route"], "/api/licenses/validate", "{line}");
    assert_eq!(fields["status"], 200, "{line}");
    running.stop();
}

#[tokio::test]
async fn licenses_issued_in_bulk_validate_and_are_announced() {
    let app = common::TestApp::new().await;
    let product = app
        .product(serde_json::json!({"max_activations": 2, "entitlements": ["pro"]}))
        .await;
    let out = app.dir.path().join("issued.txt");
    let issue = |product: &str, count: &str| {
        ecosire(app.dir.path())
            .env("DATABASE_URL", &app.state.config.database_url)
            .env("ECOSIRE_KEYS_DIR", &app.state.config.keys_dir)
            .args(["license", "issue", "--product", product, "--count", count])
            .arg("--keys-out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let slug = product["slug"].as_str().unwrap();
    let o = issue(slug, "1200");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let keys: Vec<String> = lines(&std::fs::read(&out).unwrap());
    assert_eq!(keys.len(), 1200);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600,
        "the keys file is private"
    );
    for key in [&keys[0], &keys[1199]] {
        let v = app.validate(serde_json::json!({"key": key})).await;
        assert_eq!(v["code"], "VALID", "{v}");
        assert_eq!(v["license"]["max_activations"], 2);
        assert_eq!(v["license"]["entitlements"], serde_json::json!(["pro"]));
    }
    let created: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE type = 'license.created' AND key_sealed IS NOT NULL",
    )
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(
        created, 1200,
        "each license is announced with its sealed key"
    );

    // The keys file is never overwritten, and an unknown product is named.
    let o = issue(slug, "1");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(lines(&std::fs::read(&out).unwrap()).len(), 1200);
    std::fs::remove_file(&out).unwrap();
    let o = issue("no-such-product", "1");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--product"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_into_a_working_server() {
    let app = common::TestApp::new().await;
    let backup_dir = app.dir.path().join("backup");
    let backup = {
        let (cwd, db, keys, out) = (
            app.dir.path().to_path_buf(),
            app.state.config.database_url.clone(),
            app.state.config.keys_dir.clone(),
            backup_dir.clone(),
        );
        move || {
            ecosire(&cwd)
                .env("DATABASE_URL", &db)
                .env("ECOSIRE_KEYS_DIR", &keys)
                .arg("backup")
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap()
        }
    };
    if common::is_postgres() {
        let o = backup();
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("pg_dump"));
        return;
    }
    let (product, license) = app
        .product_and_license(
            serde_json::json!({}),
            serde_json::json!({"max_activations": 1000}),
        )
        .await;
    let product_id = product["id"].as_str().unwrap().to_string();
    let key = license["key"].as_str().unwrap().to_string();
    app.activate(&key, "before-backup").await.expect(201);
    // Writes keep coming while the copy is taken.
    let writer = {
        let app_router = app.router.clone();
        let key = key.clone();
        tokio::spawn(async move {
            use tower::ServiceExt;
            for i in 0..200 {
                let req = axum::http::Request::post("/api/licenses/activate")
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(
                        serde_json::json!({"key": key, "fingerprint": format!("during-{i}")})
                            .to_string(),
                    ))
                    .unwrap();
                let res = app_router.clone().oneshot(req).await.unwrap();
                assert_eq!(res.status(), 201);
            }
        })
    };
    let o = tokio::task::spawn_blocking(backup.clone()).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    writer.await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [
        (backup_dir.clone(), 0o700),
        (backup_dir.join("ecosire.db"), 0o600),
        (backup_dir.join("keys").join("data.key"), 0o600),
    ] {
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            mode,
            "{}",
            path.display()
        );
    }
    // The restore drill: a server started on the copy alone.
    let restored = common::process::Deployment {
        database_url: format!("sqlite://{}", backup_dir.join("ecosire.db").display()),
        keys_dir: backup_dir.join("keys"),
        dir: std::sync::Arc::new(tempfile::tempdir().unwrap()),
    }
    .start(&[
        ("ECOSIRE_ADMIN_EMAIL", common::ADMIN_EMAIL),
        ("ECOSIRE_ADMIN_PASSWORD", common::ADMIN_PASSWORD),
    ])
    .await;
    let http = reqwest::Client::new();
    let v = common::post_json(
        &http,
        &restored.url("/api/licenses/validate"),
        None,
        &serde_json::json!({"key": key, "fingerprint": "before-backup"}),
    )
    .await;
    assert_eq!(v["code"], "VALID", "{v}");
    let login = common::post_json(
        &http,
        &restored.url("/api/auth/login"),
        None,
        &serde_json::json!({"email": common::ADMIN_EMAIL, "password": common::ADMIN_PASSWORD}),
    )
    .await;
    let token = login["token"].as_str().unwrap_or_else(|| panic!("{login}"));
    // The key is sealed in the database: only the keys of the same backup open it.
    let l = common::get_json(
        &http,
        &restored.url(&format!(
            "/api/licenses/{}",
            license["id"].as_str().unwrap()
        )),
        token,
    )
    .await;
    assert_eq!(l["key"], key.as_str(), "{l}");
    assert_eq!(l["product_id"], product_id.as_str());
    // One moment's state: the activation from before, and some of those made meanwhile.
    let n = l["activations_count"].as_i64().unwrap();
    assert!((1..=201).contains(&n), "{n} activations in the copy");
    // Refuses to write over an existing folder.
    let o = backup();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists"));
}

/// `ecosire users …` on the app's database, with `stdin` as standard input (a pipe: never a
/// terminal, so the password is read from it).
fn users_cmd(app: &common::TestApp, args: &[&str], stdin: &str) -> Output {
    let mut child = ecosire(app.dir.path())
        .env("DATABASE_URL", &app.state.config.database_url)
        .arg("users")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn a_lost_admin_password_is_recovered_from_the_command_line() {
    let app = common::TestApp::new().await;
    let admin = app.admin_token.clone();
    // `users list` shows who is there.
    let o = users_cmd(&app, &["list"], "");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listing = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        listing.contains(common::ADMIN_EMAIL) && listing.contains("admin"),
        "{listing}"
    );

    // set-password: the new one works, the old one and every session do not.
    let o = users_cmd(
        &app,
        &["set-password", common::ADMIN_EMAIL],
        "recovered-pass-1\n",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("sessions were ended"));
    app.get("/api/auth/me", Some(&admin))
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    app.post(
        "/api/auth/login",
        serde_json::json!({"email": common::ADMIN_EMAIL, "password": common::ADMIN_PASSWORD}),
        None,
    )
    .await
    .expect_problem(401, "INVALID_CREDENTIALS");
    app.login(common::ADMIN_EMAIL, "recovered-pass-1").await;

    // Bad input is named and changes nothing.
    let o = users_cmd(&app, &["set-password", common::ADMIN_EMAIL], "short\n");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("8 to 1024"));
    let o = users_cmd(
        &app,
        &["set-password", "nobody@example.com"],
        "long-enough-pass\n",
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no user has the email"));

    // create-admin: a new admin, or a customer (even a disabled one) made an active admin.
    let o = users_cmd(
        &app,
        &["create-admin", "ops@example.com"],
        "ops-password-1\n",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ops = app.login("ops@example.com", "ops-password-1").await;
    let me = app.get("/api/auth/me", Some(&ops)).await;
    assert_eq!(me.expect(200)["user"]["role"], "admin");
    assert!(me.body["user"]["email_verified_at"].is_string());
    let (cid, _) = app.customer("cus@example.com").await;
    app.call(
        axum::http::Method::PATCH,
        &format!("/api/users/{cid}"),
        Some(serde_json::json!({"disabled": true})),
        Some(&ops),
    )
    .await
    .expect(200);
    let o = users_cmd(
        &app,
        &["create-admin", "cus@example.com"],
        "cus-admin-pass\n",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = app.login("cus@example.com", "cus-admin-pass").await;
    let me = app.get("/api/auth/me", Some(&s)).await;
    assert_eq!(me.expect(200)["user"]["role"], "admin");
    assert_eq!(me.body["user"]["disabled"], false);
}
