//! The real binary at start-up: file permissions under a permissive umask, refusing to replace
//! keys the database needs, and one-line start-up errors that name the variable to fix.
//!
//! Each test runs `ecosire` in its own temporary folder with the default relative paths
//! (`data/ecosire.db`, `keys/`), or a throwaway PostgreSQL database when
//! `ECOSIRE_TEST_DATABASE_URL` is set.
//!
//! `ECOSIRE_TEST_BIN` names another binary to test: a `CARGO_TARGET_DIR` shared by several
//! checkouts has one `debug/ecosire` for all of them, and another checkout's build can replace it
//! between this build and this run.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const ADMIN_EMAIL: &str = "admin@startup.test";
const ADMIN_PASSWORD: &str = "startup-password-1";

/// The binary under a shell that sets umask 022 (the common default, which leaves new files
/// readable by everyone) so that any privacy of our files is our own doing.
fn ecosire(cwd: &Path, env: &[(&str, &str)]) -> Command {
    let bin = std::env::var_os("ECOSIRE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ecosire").into());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"umask 022; exec "$0" "$@""#)
        .arg(bin)
        .current_dir(cwd);
    // Only what the test sets: none of the caller's configuration leaks in.
    for (k, _) in std::env::vars() {
        if k.starts_with("ECOSIRE_") || k == "DATABASE_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("ECOSIRE_BIND", "127.0.0.1:0")
        .env("ECOSIRE_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ECOSIRE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A running server (killed if a test fails before stopping it).
struct Server {
    child: Child,
    base: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    /// Starts the server and waits until it serves; panics with its stderr if it exits instead.
    async fn start(cwd: &Path, env: &[(&str, &str)]) -> Server {
        let child = ecosire(cwd, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ecosire");
        // Owned by `server` from here on, so a failing test kills it.
        let mut server = Server {
            child,
            base: String::new(),
            stderr: None,
        };
        let mut stderr = server.child.stderr.take().expect("stderr");
        // Read all along, so the server never blocks on a full pipe.
        server.stderr = Some(std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        }));
        let mut stdout = BufReader::new(server.child.stdout.take().expect("stdout"));
        let mut line = String::new();
        while server.base.is_empty() {
            line.clear();
            if stdout.read_line(&mut line).expect("read stdout") == 0 {
                let status = server.child.wait();
                let logged = server.stderr.take().expect("stderr").join().unwrap();
                panic!("ecosire exited before listening: {status:?}\n{logged}");
            }
            if let Some(rest) = line.split("listening on ").nth(1) {
                server.base = rest.split_whitespace().next().expect("address").to_string();
            }
        }
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        // The banner comes before the server (and its SIGTERM handler) runs; an answer means
        // both do.
        let health = reqwest::get(format!("{}/api/health", server.base))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        server
    }

    /// Graceful stop (SIGTERM), as an operator or a service manager does it; returns what the
    /// server logged.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("wait for ecosire");
        let logged = self.stderr.take().expect("stderr").join().unwrap();
        assert!(status.success(), "ecosire stopped with {status}: {logged}");
        logged
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary to completion (it is expected to refuse to start).
async fn run(cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::from(ecosire(cwd, env));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run ecosire");
    // Not a timing check: only keeps a server that wrongly starts from hanging the test.
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("ecosire should have refused to start but is still running")
        .expect("wait for ecosire")
}

/// Asserts that the start failed with exactly one line on stderr, and returns that line.
#[track_caller]
fn failure_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected a failed start; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

/// The database for one test: the default SQLite file (relative to the test's folder) or a new
/// PostgreSQL database.
async fn database_env(dir: &Path) -> Vec<(&'static str, String)> {
    if common::is_postgres() {
        vec![("DATABASE_URL", common::fresh_database_url(dir).await)]
    } else {
        vec![]
    }
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

#[cfg(unix)]
#[tokio::test]
async fn folders_keys_and_database_files_are_private_under_umask_022() {
    let dir = tempfile::tempdir().unwrap();
    let env = database_env(dir.path()).await;
    let server = Server::start(dir.path(), &env_refs(&env)).await;
    let keys = dir.path().join("keys");
    assert_eq!(mode(&keys), 0o700, "keys/");
    for f in std::fs::read_dir(&keys).unwrap() {
        let f = f.unwrap().path();
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    if !common::is_postgres() {
        let db = dir.path().join("data/ecosire.db");
        assert_eq!(mode(&dir.path().join("data")), 0o700, "data/");
        // WAL mode: the server holds the -wal and -shm files open while it runs.
        for f in [db.clone(), sibling(&db, "-wal"), sibling(&db, "-shm")] {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
    server.stop();
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_database_file_readable_by_others_is_restricted_at_start() {
    use std::os::unix::fs::PermissionsExt;
    if common::is_postgres() {
        return; // SQLite files only
    }
    let dir = tempfile::tempdir().unwrap();
    Server::start(dir.path(), &[]).await.stop();
    let db = dir.path().join("data/ecosire.db");
    // As earlier versions left it (and a crash can leave the -wal behind). A -wal the stopped
    // server left keeps its content: emptying it under its -shm index would corrupt the database.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    if !sibling(&db, "-wal").exists() {
        std::fs::write(sibling(&db, "-wal"), b"").unwrap();
    }
    std::fs::set_permissions(sibling(&db, "-wal"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start(dir.path(), &[]).await;
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&sibling(&db, "-wal")), 0o600);
    let logged = server.stop();
    assert!(
        logged.contains("readable by others") && logged.contains("ecosire.db"),
        "the change is logged: {logged}"
    );
}

/// Logs in as the configured admin and creates a product and a license; returns the license.
async fn create_license(base: &str) -> Value {
    let http = reqwest::Client::new();
    let login = common::post_json(
        &http,
        &format!("{base}/api/auth/login"),
        None,
        &json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
    )
    .await;
    let token = login["token"].as_str().expect("token").to_string();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let product = post(
        "/api/products",
        json!({"name": "Desktop Pro", "slug": "desktop-pro", "max_activations": 2}),
    )
    .await
    .unwrap();
    assert_eq!(product.status(), 201);
    let license = post(
        "/api/licenses",
        json!({"product_id": "desktop-pro", "email": "ann@example.com"}),
    )
    .await
    .unwrap();
    assert_eq!(license.status(), 201);
    license.json().await.unwrap()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_lost_data_key_stops_the_start_instead_of_being_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let env = database_env(dir.path()).await;
    let env = env_refs(&env);
    let keys = dir.path().join("keys");

    // A fresh store: everything is generated.
    let server = Server::start(dir.path(), &env).await;
    let names = file_names(&keys);
    assert!(names.contains(&"data.key".to_string()), "{names:?}");
    assert!(names.contains(&"session.pem".to_string()), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("license-")), "{names:?}");
    let license = create_license(&server.base).await;
    server.stop();

    let data_key = std::fs::read(keys.join("data.key")).unwrap();
    std::fs::remove_file(keys.join("data.key")).unwrap();
    let line = failure_line(&run(dir.path(), &env).await);
    assert_eq!(
        line,
        "error: ECOSIRE_KEYS_DIR: keys/data.key is missing but the database holds 1 license and \
         1 webhook event sealed with it; restore the keys folder from backup (or point \
         ECOSIRE_KEYS_DIR at it)"
    );
    assert!(!keys.join("data.key").exists(), "nothing was generated");

    // Another installation's data key (a misplaced folder) is refused too.
    ecosire::crypto::DataKey::generate(&keys.join("data.key")).unwrap();
    let line = failure_line(&run(dir.path(), &env).await);
    assert!(
        line.starts_with(
            "error: ECOSIRE_KEYS_DIR: keys/data.key does not open the license keys in the database"
        ),
        "{line}"
    );
    std::fs::remove_file(keys.join("data.key")).unwrap();

    // Restored from backup: the server starts and reads the sealed key again.
    std::fs::write(keys.join("data.key"), data_key).unwrap();
    let server = Server::start(dir.path(), &env).await;
    let http = reqwest::Client::new();
    let login = common::post_json(
        &http,
        &format!("{}/api/auth/login", server.base),
        None,
        &json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
    )
    .await;
    let got = http
        .get(format!(
            "{}/api/licenses/{}",
            server.base,
            license["id"].as_str().unwrap()
        ))
        .bearer_auth(login["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let got: Value = got.json().await.unwrap();
    assert_eq!(got["key"], license["key"]);
    server.stop();
}

#[tokio::test]
async fn lost_license_signing_keys_stop_the_start_when_licenses_exist() {
    let dir = tempfile::tempdir().unwrap();
    let env = database_env(dir.path()).await;
    let env = env_refs(&env);
    let keys = dir.path().join("keys");
    let server = Server::start(dir.path(), &env).await;
    create_license(&server.base).await;
    server.stop();

    let before = file_names(&keys);
    for name in before.iter().filter(|n| n.starts_with("license-")) {
        std::fs::remove_file(keys.join(name)).unwrap();
    }
    let line = failure_line(&run(dir.path(), &env).await);
    assert!(line.starts_with("error: ECOSIRE_KEYS_DIR: "), "{line}");
    assert!(line.contains("no license signing key"), "{line}");
    assert!(line.contains("1 license"), "{line}");
    assert!(
        line.contains("restore the keys folder from backup"),
        "{line}"
    );
    assert!(
        !file_names(&keys).iter().any(|n| n.starts_with("license-")),
        "no new signing key"
    );
}

#[tokio::test]
async fn an_unreachable_postgres_is_one_line_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://postgres@127.0.0.1:1/x";
    let line = failure_line(&run(dir.path(), &[("DATABASE_URL", url)]).await);
    assert_eq!(
        line,
        format!("error: DATABASE_URL: cannot connect to {url}: connection refused")
    );
}

#[tokio::test]
async fn a_rejected_postgres_login_shows_the_server_message_once() {
    if !common::is_postgres() {
        eprintln!("skipped: needs ECOSIRE_TEST_DATABASE_URL (a PostgreSQL server)");
        return;
    }
    let base = std::env::var("ECOSIRE_TEST_DATABASE_URL").unwrap();
    let (_, host_and_db) = base.split_once('@').expect("URL with a user");
    let url = format!("postgres://nobody_{}@{host_and_db}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let line = failure_line(&run(dir.path(), &[("DATABASE_URL", &url)]).await);
    let message = format!("role \"nobody_{}\" does not exist", std::process::id());
    assert_eq!(
        line,
        format!("error: DATABASE_URL: cannot connect to {url}: {message}")
    );
}

#[tokio::test]
async fn an_unusable_sqlite_path_names_the_path_as_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a-folder")).unwrap();
    std::fs::write(dir.path().join("a-file"), b"").unwrap();
    for (url, expected) in [
        (
            "sqlite://a-folder",
            "error: DATABASE_URL: a-folder is a folder, not a database file",
        ),
        (
            "sqlite://a-file/ecosire.db",
            "error: DATABASE_URL: a-file is a file, not a folder",
        ),
    ] {
        let line = failure_line(&run(dir.path(), &[("DATABASE_URL", url)]).await);
        assert!(line.starts_with(expected), "{url}: {line}");
        assert!(!line.contains("mode=rwc"), "{line}");
    }
}

#[tokio::test]
async fn an_unreadable_key_file_names_the_variable_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let env = database_env(dir.path()).await;
    let env = env_refs(&env);
    // Root reads any file whatever its mode; a folder in the key's place is unreadable for all.
    std::fs::create_dir_all(dir.path().join("keys/license-0000000000000001.pem")).unwrap();
    let line = failure_line(&run(dir.path(), &env).await);
    assert_eq!(
        line,
        "error: ECOSIRE_KEYS_DIR: cannot read keys/license-0000000000000001.pem: is a directory"
    );

    std::fs::remove_dir(dir.path().join("keys/license-0000000000000001.pem")).unwrap();
    std::fs::write(
        dir.path().join("keys/license-0000000000000001.pem"),
        "not a key",
    )
    .unwrap();
    let line = failure_line(&run(dir.path(), &env).await);
    assert!(
        line.starts_with(
            "error: ECOSIRE_KEYS_DIR: keys/license-0000000000000001.pem is not an Ed25519 \
             PKCS#8 PEM key ("
        ),
        "{line}"
    );
}
