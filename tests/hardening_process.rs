//! Review findings that only show in a real process: its memory, and its environment.
mod common;

use common::process::Server;

use std::time::Duration;

use serde_json::{Value, json};

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
