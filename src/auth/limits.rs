//! Which bucket pays for a request: the public routes' own per-IP buckets (login, register,
//! support, CRM, newsletter; ask per principal, else IP), and for everything else the caller —
//! its own bucket once its credentials verify, the per-IP anonymous bucket otherwise. Validate
//! and activate are charged by their handlers (`RateContext`), which hold the parsed key.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;
use crate::http::ratelimit::{RateSlot, ip_key};
use crate::state::AppState;

/// Which public bucket a route belongs to.
fn bucket_for(method: &Method, path: &str) -> Option<&'static str> {
    if method != Method::POST {
        return None;
    }
    Some(match path {
        "/api/support" => "support",
        "/api/crm/capture" => "crm",
        "/api/ecosire-ai/ask" => "ask",
        "/api/licenses/validate" => "validate",
        "/api/licenses/activate" => "activate",
        "/api/newsletter/subscribe" => "newsletter",
        "/api/auth/login" => "login",
        "/api/auth/register" => "register",
        _ => return None,
    })
}

/// Checks the public buckets, charges every other request to its verified caller or its IP, and
/// writes the rate-limit headers on every response.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.limits.enabled {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let slot = parts
        .extensions
        .get::<RateSlot>()
        .cloned()
        .unwrap_or_default();
    let path = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let verdict = match bucket_for(&parts.method, &path) {
        // The hot path charges its own bucket once it has parsed the key (`RateContext`).
        Some("validate" | "activate") => Ok(()),
        // Per principal once its credentials verify, else per IP.
        Some("ask") => {
            let key = match super::extract::resolve(&mut parts, &state).await {
                Ok(Some(p)) => format!("user:{}", p.user_id),
                _ => ip_key(&parts, &state),
            };
            state.limits.check("ask", &key, Some(&slot))
        }
        Some(b) => state.limits.check(b, &ip_key(&parts, &state), Some(&slot)),
        None => match super::extract::resolve(&mut parts, &state).await {
            Ok(p) => super::extract::charge(&mut parts, &state, p.as_ref()),
            Err(Error::Unauthenticated | Error::Forbidden { .. }) => {
                super::extract::charge(&mut parts, &state, None)
            }
            Err(e) => Err(e),
        },
    };
    match verdict {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(e) => e.into_response(),
    }
}
