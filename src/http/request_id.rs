//! `X-Request-Id` on every response, echoed from the request when it is sane, and kept in a
//! task-local so an error body (above all a 500) can name it without threading it everywhere.
//!
//! A new id is a random prefix drawn once per process and a counter: unique within the process
//! and across restarts and instances (64 random bits), and it costs no system call, unlike a
//! UUID from the OS generator per request.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
}

/// The id of the request being served on this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID
        .try_with(|id| id.to_str().ok().map(String::from))
        .ok()
        .flatten()
}

/// Calls `f` with the id of the request being served on this task, without copying it.
pub fn with_current<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    match REQUEST_ID.try_with(|id| id.clone()) {
        Ok(id) => f(id.to_str().ok()),
        Err(_) => f(None),
    }
}

fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// 32 lowercase hex digits: the process prefix, then the counter.
fn new_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{prefix:016x}{n:016x}");
    HeaderValue::from_maybe_shared(Bytes::from(id)).expect("hex digits are a valid header value")
}

/// The request's id: its own `X-Request-Id` when sane, else a new one, which is then set on the
/// request too. Serve the request inside `scope` and `stamp` the response with it.
pub fn assign(req: &mut Request) -> HeaderValue {
    match req.headers().get(HEADER) {
        Some(v) if acceptable(v) => v.clone(),
        _ => {
            let id = new_id();
            req.headers_mut().insert(HEADER, id.clone());
            id
        }
    }
}

/// Runs `f` with `id` as the current request id (`current`, `with_current`).
pub async fn scope<F: std::future::Future>(id: HeaderValue, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

pub fn stamp(res: &mut Response, id: HeaderValue) {
    res.headers_mut().insert(HEADER, id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_differ_and_look_alike() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        for id in [a, b] {
            let s = id.to_str().unwrap();
            assert_eq!(s.len(), 32);
            assert!(s.bytes().all(|c| c.is_ascii_hexdigit()), "{s}");
        }
    }
}
