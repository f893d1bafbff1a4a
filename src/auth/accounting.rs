//! Per-request accounting after the response is known: the access log, API-key usage counters
//! and the audit log. Extractors that authenticate leave the caller in an `AuthSlot`; `finish`
//! reads it.

use std::sync::{Arc, OnceLock};

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;

use super::{Credential, Environment, Principal, Role};
use crate::ops::audit::AuditEntry;
use crate::state::AppState;
use crate::timestamp::now_ms;

/// Filled by the access extractors with the authenticated caller.
#[derive(Clone, Default)]
pub struct AuthSlot(pub Arc<OnceLock<Principal>>);

/// Should this request be written to the audit log?
fn audited(p: &Principal, method: &Method, path: &str) -> bool {
    let writes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let live_key = matches!(
        &p.credential,
        Credential::ApiKey {
            environment: Environment::Live,
            ..
        }
    );
    live_key || (writes && (p.role == Role::Admin || path.starts_with("/api/api-keys")))
}

/// What accounting keeps of a request while it is served: `begin` before, `finish` after.
pub struct Pending {
    slot: AuthSlot,
    method: Method,
    // Cheap handles only (reference-counted), turned into text once a line or entry needs it.
    uri: axum::http::Uri,
    ip: Option<std::net::IpAddr>,
    route: Option<axum::extract::MatchedPath>,
}

/// Gives the request its `AuthSlot` (which the access extractors fill) and notes what the log
/// and the audit need.
pub fn begin(state: &AppState, req: Request) -> (Request, Pending) {
    let (mut parts, body) = req.into_parts();
    let slot = AuthSlot::default();
    parts.extensions.insert(slot.clone());
    let pending = Pending {
        slot,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        ip: crate::http::client_ip::client_ip(&parts, &state.config.trusted_proxies),
        route: parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .cloned(),
    };
    (Request::from_parts(parts, body), pending)
}

impl Pending {
    /// The access-log line, the API key's usage counters and the audit entry of a served
    /// request. Call inside the request id's scope.
    pub fn finish(self, state: &AppState, res: &Response, started: std::time::Instant) {
        let Pending {
            slot,
            method,
            uri,
            ip,
            route,
        } = self;
        let principal = slot.0.get();
        let status = res.status().as_u16();
        // The access log: one line per request, never a secret (ids only). Absent values are left
        // out (`Option` fields record nothing) and the latency is rounded to microseconds. The
        // fields are only evaluated when the line is enabled.
        crate::http::request_id::with_current(|request_id| {
            tracing::info!(
                target: "ecosire::access",
                request_id,
                method = crate::http::method_label(&method),
                route = route.as_ref().map_or("unmatched", |r| r.as_str()),
                status,
                latency_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
                principal = principal.map(|p| p.user_id.as_str()),
                api_key = principal.and_then(|p| match &p.credential {
                    Credential::ApiKey { id, .. } => Some(id.as_str()),
                    _ => None,
                }),
                "request"
            )
        });
        let Some(p) = principal else {
            return;
        };
        let now = now_ms();
        if let Credential::ApiKey { id, .. } = &p.credential {
            state.accounting.record_key_use(id, status >= 400, now);
        }
        if audited(p, &method, uri.path()) {
            state.accounting.audit(AuditEntry {
                at: now,
                user_id: Some(p.user_id.clone()),
                api_key_id: match &p.credential {
                    Credential::ApiKey { id, .. } => Some(id.clone()),
                    _ => None,
                },
                method: crate::http::method_label(&method).to_string(),
                path: uri.path().to_string(),
                status: i64::from(status),
                client_ip: ip.map(|i| i.to_string()),
                request_id: crate::http::request_id::current(),
            });
        }
    }
}
