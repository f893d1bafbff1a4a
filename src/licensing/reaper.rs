//! The heartbeat reaper: frees the seats of devices that stopped reporting, and of air-gapped
//! devices whose lease ended. Neither counts against a license's churn budget.

use super::lifecycle::{self, Release};
use super::store;
use crate::error::Result;
use crate::state::AppState;
use crate::timestamp::now_ms;

/// Releases activations whose device has been silent longer than its product's
/// `heartbeat_timeout_s` (air-gapped devices never report, and are left alone), and those whose
/// offline lease ended. Returns how many were released.
pub async fn reap_silent_activations(state: &AppState) -> Result<usize> {
    let now = now_ms();
    // (activation, license, the release guard): `None` for an ended lease.
    let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT a.id, a.license_id, CASE WHEN a.offline_until IS NULL THEN p.heartbeat_timeout_s END \
         FROM activations a JOIN licenses l ON l.id = a.license_id \
         JOIN products p ON p.id = l.product_id \
         WHERE (a.offline_until IS NULL AND p.heartbeat_timeout_s IS NOT NULL \
                AND a.last_heartbeat_at + p.heartbeat_timeout_s * 1000 < $1) \
            OR a.offline_until < $1 \
         ORDER BY a.id LIMIT 1000",
    )
    .bind(now)
    .fetch_all(&state.db.pool)
    .await?;
    let mut released = 0;
    for (activation_id, license_id, timeout_s) in rows {
        let (mut tx, row) = store::lock_license(&state.db, &license_id).await?;
        let (Some(row), Some(a)) = (
            row,
            store::activation_by_id(&mut *tx, &activation_id).await?,
        ) else {
            continue;
        };
        let release = match timeout_s {
            Some(t) => Release::Silent {
                silent_before: now - t * 1000,
            },
            None => Release::LeaseEnded { now },
        };
        if lifecycle::release_seat(&mut tx, &row, a, release).await? {
            tx.commit().await?;
            state.licenses.changed(&state.db, &row.key_digest).await;
            released += 1;
        }
    }
    Ok(released)
}
