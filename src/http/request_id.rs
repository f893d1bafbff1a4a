//! `X-Request-Id` on every response, echoed from the request when it is sane, and kept in a
//! task-local so an error body (above all a 500) can name it without threading it everywhere.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

fn acceptable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_string())
}

pub async fn middleware(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(acceptable)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let value = HeaderValue::from_str(&id).expect("checked visible ASCII");
    req.headers_mut().insert(HEADER, value.clone());
    let mut res = REQUEST_ID.scope(id, next.run(req)).await;
    res.headers_mut().insert(HEADER, value);
    res
}
