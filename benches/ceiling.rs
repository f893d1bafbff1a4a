//! The ceiling: the least an axum server on this machine can do per request, for
//! `scripts/load.sh` to load alternately with the real server in the same run.
//!
//! `GET /api/health` answers `{"status":"ok"}`; `POST /api/licenses/validate` reads a JSON body
//! with a `key` and answers with the bytes of `$CEILING_VALIDATE_BODY` (a file holding a real
//! validate answer, so both servers put the same bytes on the wire), or a small JSON object.
//! Plain `axum::serve`, no middleware, tokio's default multi-threaded runtime: what the real
//! server's numbers are measured against.
//!
//! Run: `cargo run --release --bench ceiling -- 127.0.0.1:8099`. Not a criterion benchmark
//! (`bench = false`): `cargo bench` does not start it.

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;

#[derive(Deserialize)]
struct Ask {
    #[allow(dead_code)]
    key: String,
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".into());
    let body: Bytes = match std::env::var("CEILING_VALIDATE_BODY") {
        Ok(path) => std::fs::read(&path)
            .unwrap_or_else(|e| panic!("CEILING_VALIDATE_BODY={path}: {e}"))
            .into(),
        Err(_) => Bytes::from_static(br#"{"valid":true,"code":"VALID"}"#),
    };
    let app = Router::new()
        .route(
            "/api/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/api/licenses/validate",
            post(move |axum::Json(_ask): axum::Json<Ask>| {
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body).into_response() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    println!(
        "ceiling listening on http://{}",
        listener.local_addr().unwrap()
    );
    axum::serve(listener, app).await.unwrap();
}
