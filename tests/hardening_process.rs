//! Review findings that only show in a real process: its memory, and its environment.
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("admin@proc.local", "proc-admin-password");

/// The release-or-debug `ecosire` binary, serving a fresh database on an ephemeral port.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = common::fresh_database_url(dir.path()).await;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecosire"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ECOSIRE_BIND", "127.0.0.1:0")
            .env("DATABASE_URL", &db)
            .env("ECOSIRE_KEYS_DIR", dir.path().join("keys"))
            .env("ECOSIRE_ADMIN_EMAIL", ADMIN.0)
            .env("ECOSIRE_ADMIN_PASSWORD", ADMIN.1)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start ecosire");
        let stdout = child.stdout.take().unwrap();
        // Read stdout to its end on a thread of its own (a closed pipe would fail the server's
        // later prints), handing over the first address it shows.
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
        let base = rx.await.expect("the server printed its address");
        Server {
            child,
            base,
            _dir: dir,
        }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/…/status"))
    }

    async fn admin_token(&self, http: &reqwest::Client) -> String {
        let url = format!("{}/api/auth/login", self.base);
        let body = json!({"email": ADMIN.0, "password": ADMIN.1});
        let r = common::post_json(http, &url, None, &body).await;
        r["token"].as_str().expect("login").to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_registrations_keep_memory_bounded() {
    // Registration's own limit is lifted so that every request reaches the hasher.
    let server = Server::start(&[("ECOSIRE_RATE_LIMITS", "off")]).await;
    let http = reqwest::Client::new();
    let calls = (0..200).map(|i| {
        let http = http.clone();
        let url = format!("{}/api/auth/register", server.base);
        async move {
            let r = http
                .post(url)
                .json(&json!({"email": format!("u{i}@example.com"), "password": "password-1234", "name": "U"}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").is_some();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, retry, body)
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let mut created = 0;
    for (status, retry, body) in &answers {
        match status {
            201 => created += 1,
            503 => {
                assert_eq!(body["code"], "BUSY", "{body}");
                assert!(retry, "503 BUSY carries Retry-After");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(created > 0, "some registrations were served");
    let peak_kib = server.status_kib("VmHWM:");
    assert!(
        peak_kib < 300 * 1024,
        "peak RSS {} MiB with 200 concurrent registrations",
        peak_kib / 1024
    );
}

#[tokio::test]
async fn webhooks_never_go_through_a_proxy_from_the_environment() {
    // A "proxy" that records every connection it gets and answers 502.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = proxy.accept().await {
            let _ = seen_tx.send(());
            let _ = s
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let server = Server::start(&[
        ("HTTP_PROXY", &proxy_url),
        ("HTTPS_PROXY", &proxy_url),
        ("ALL_PROXY", &proxy_url),
        ("http_proxy", &proxy_url),
        ("ECOSIRE_WEBHOOK_BACKOFF_BASE_S", "3600"),
    ])
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let token = server.admin_token(&http).await;
    // A name that does not resolve here passes the URL check (delivery would retry it); through
    // a proxy it would reach whatever the proxy can resolve.
    let ep = common::post_json(
        &http,
        &format!("{}/api/webhook-endpoints", server.base),
        Some(&token),
        &json!({"url": "http://internal-only.invalid/hook", "events": ["*"]}),
    )
    .await;
    let ep_id = ep["id"].as_str().unwrap_or_else(|| panic!("{ep}"));
    let r = http
        .post(format!(
            "{}/api/webhook-endpoints/{ep_id}/test",
            server.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // Wait (bounded) until the dispatcher has recorded its attempt.
    let deliveries = format!("{}/api/webhook-endpoints/{ep_id}/deliveries", server.base);
    let attempt = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let d = common::get_json(&http, &deliveries, &token).await;
            if let Some(a) = d["data"][0]["attempts"].as_array().and_then(|a| a.first()) {
                return a.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the dispatcher attempted the delivery");
    assert!(
        seen.try_recv().is_err(),
        "the webhook client connected to the environment's proxy"
    );
    assert_eq!(attempt["status_code"], Value::Null, "{attempt}");
}
