//! Two dispatchers on one database (two instances) share the deliveries and never send one twice.
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use common::TestApp;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_never_send_the_same_delivery_twice() {
    let app = TestApp::with_config(|c| {
        c.webhook_allow_private = true;
        c.webhook_backoff_base_s = 0;
    })
    .await;

    // A receiver that counts each delivery id it is sent.
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let recorder = seen.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let recorder = recorder.clone();
            async move {
                let id = headers
                    .get("x-ecosire-delivery")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                *recorder.lock().unwrap().entry(id).or_default() += 1;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    app.admin_post(
        "/api/webhook-endpoints",
        json!({"url": url, "events": ["license.created"]}),
    )
    .await
    .expect(201);
    let p = app.product(json!({})).await;
    const N: usize = 40;
    for _ in 0..N {
        app.license(p["id"].as_str().unwrap(), json!({})).await;
    }

    // A second instance on the same database and keys.
    let other = ecosire::build_state(app.state.config.clone())
        .await
        .unwrap();
    let mut rounds = 0;
    while seen.lock().unwrap().len() < N {
        rounds += 1;
        assert!(
            rounds < 200,
            "deliveries did not complete: {:?}",
            seen.lock().unwrap().len()
        );
        let (a, b) = tokio::join!(
            ecosire::events::dispatcher::run_once(&app.state),
            ecosire::events::dispatcher::run_once(&other)
        );
        a.unwrap();
        b.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), N);
    assert!(
        seen.values().all(|n| *n == 1),
        "a delivery was sent twice: {seen:?}"
    );
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, attempt_count FROM deliveries")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), N);
    assert!(
        rows.iter().all(|(s, n)| s == "succeeded" && *n == 1),
        "{rows:?}"
    );
}
