//! API-key usage counters and the audit log, both kept off the request path: requests update
//! memory, and a background task (or a reader that needs exact figures) flushes in batches.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Admin;
use crate::crypto::new_id;
use crate::db::{Db, Filters};
use crate::error::{Error, Result};
use crate::http::extract::Json;
use crate::http::pagination::{Listing, Page, PageParams};
use crate::state::AppState;
use crate::timestamp::Timestamp;

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    requests: i64,
    errors: i64,
    last_used_at: i64,
}

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: i64,
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
    pub method: String,
    pub path: String,
    pub status: i64,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
}

/// How long per-day key usage is kept (the dashboard charts 30 days).
const USAGE_DAYS_KEPT: i64 = 90;

/// In-memory usage and audit buffers.
#[derive(Default)]
pub struct Accounting {
    /// Per (API key, UTC day): a request just after midnight counts for the new day.
    usage: Mutex<HashMap<(String, i64), Usage>>,
    /// The last UTC day whose old per-day rows were deleted (0: not yet).
    pruned_day: std::sync::atomic::AtomicI64,
    audit: Mutex<Vec<AuditEntry>>,
    /// Serialises flushes so two never write the same deltas.
    flushing: tokio::sync::Mutex<()>,
}

impl Accounting {
    pub fn record_key_use(&self, key_id: &str, is_error: bool, at: i64) {
        let mut map = self.usage.lock().expect("usage map");
        let u = map
            .entry((key_id.to_string(), crate::timestamp::utc_day(at)))
            .or_default();
        u.requests += 1;
        u.errors += i64::from(is_error);
        u.last_used_at = u.last_used_at.max(at);
    }

    pub fn audit(&self, entry: AuditEntry) {
        self.audit.lock().expect("audit buffer").push(entry);
    }

    /// Writes buffered usage and audit entries. On failure they are put back for the next try.
    pub async fn flush(&self, db: &Db) {
        let _guard = self.flushing.lock().await;
        let usage: Vec<((String, i64), Usage)> =
            self.usage.lock().expect("usage map").drain().collect();
        let audit: Vec<AuditEntry> = std::mem::take(&mut *self.audit.lock().expect("audit buffer"));
        self.prune(db).await;
        if usage.is_empty() && audit.is_empty() {
            return;
        }
        if let Err(e) = write(db, &usage, &audit).await {
            tracing::warn!(error = %e, "flushing API-key usage and audit log failed; will retry");
            let mut map = self.usage.lock().expect("usage map");
            for (id, u) in usage {
                let slot = map.entry(id).or_default();
                slot.requests += u.requests;
                slot.errors += u.errors;
                slot.last_used_at = slot.last_used_at.max(u.last_used_at);
            }
            self.audit.lock().expect("audit buffer").extend(audit);
        }
    }

    /// Deletes per-day key usage older than [`USAGE_DAYS_KEPT`]: once a day per instance.
    async fn prune(&self, db: &Db) {
        use std::sync::atomic::Ordering;
        let today = crate::timestamp::utc_day(crate::timestamp::now_ms());
        if self.pruned_day.swap(today, Ordering::AcqRel) == today {
            return;
        }
        if let Err(e) = sqlx::query("DELETE FROM api_key_daily_usage WHERE day < $1")
            .bind(today - USAGE_DAYS_KEPT)
            .execute(&db.pool)
            .await
        {
            self.pruned_day.store(0, Ordering::Release);
            tracing::warn!(error = %crate::db::error_cause(&e), "pruning old API-key usage failed; will retry");
        }
    }
}

async fn write(
    db: &Db,
    usage: &[((String, i64), Usage)],
    audit: &[AuditEntry],
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    for ((id, day), u) in usage {
        sqlx::query(
            "UPDATE api_keys SET request_count = request_count + $2, error_count = error_count + $3, \
             last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $4 THEN $4 ELSE last_used_at END WHERE id = $1",
        )
        .bind(id)
        .bind(u.requests)
        .bind(u.errors)
        .bind(u.last_used_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO api_key_daily_usage (api_key_id, day, requests, errors) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (api_key_id, day) DO UPDATE SET requests = api_key_daily_usage.requests + excluded.requests, \
             errors = api_key_daily_usage.errors + excluded.errors",
        )
        .bind(id)
        .bind(day)
        .bind(u.requests)
        .bind(u.errors)
        .execute(&mut *tx)
        .await?;
    }
    for e in audit {
        sqlx::query(
            "INSERT INTO audit_log (id, at, user_id, api_key_id, method, path, status, client_ip, request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(new_id("aud"))
        .bind(e.at)
        .bind(&e.user_id)
        .bind(&e.api_key_id)
        .bind(&e.method)
        .bind(&e.path)
        .bind(e.status)
        .bind(&e.client_ip)
        .bind(&e.request_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_log))
}

/// One audited request, decoded straight from its row.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: String,
    pub at: Timestamp,
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
    #[schema(example = "POST")]
    pub method: String,
    #[schema(example = "/api/licenses/lic_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4/revoke")]
    pub path: String,
    pub status: i64,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilters {
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
    pub method: Option<String>,
    /// Only entries whose path starts with this.
    pub path_prefix: Option<String>,
    pub status: Option<i64>,
}

/// The audit log, newest first (admin).
#[utoipa::path(get, path = "/api/audit-log", tag = "users", params(PageParams, AuditFilters),
    responses((status = 200, body = Page<AuditRecord>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_audit_log(
    State(state): State<AppState>,
    _admin: Admin,
    Listing { page: req, filters }: Listing<AuditFilters>,
) -> Result<Json<Page<AuditRecord>>> {
    state.accounting.flush(&state.db).await;
    let mut f = Filters::default();
    if let Some(v) = &filters.user_id {
        f.push("user_id", "=", v.clone());
    }
    if let Some(v) = &filters.api_key_id {
        f.push("api_key_id", "=", v.clone());
    }
    if let Some(v) = &filters.method {
        f.push("method", "=", v.to_ascii_uppercase());
    }
    if let Some(v) = &filters.path_prefix {
        if v.len() > 200 {
            return Err(Error::invalid(
                "path_prefix",
                "must be at most 200 characters",
            ));
        }
        // LIKE wildcards in the prefix are escaped so they match literally.
        let escaped = v
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        f.push_raw("path LIKE $? ESCAPE '\\'", format!("{escaped}%"));
    }
    if let Some(v) = filters.status {
        f.push_raw("CAST(status AS TEXT) = $?", v.to_string());
    }
    let rows = crate::db::list::page::<AuditRecord>(
        &state.db,
        "SELECT id, at, user_id, api_key_id, method, path, status, client_ip, request_id FROM audit_log",
        "id",
        f,
        &req,
        |r| &r.id,
    )
    .await?;
    Ok(Json(rows))
}
