//! The heartbeat reaper: frees the seats of devices that stopped reporting.

use super::{lifecycle, store};
use crate::error::Result;
use crate::state::AppState;
use crate::timestamp::now_ms;

/// Releases activations whose device has been silent longer than its product's
/// `heartbeat_timeout_s`. Returns how many were released.
pub async fn reap_silent_activations(state: &AppState) -> Result<usize> {
    let now = now_ms();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT a.id, a.license_id, p.heartbeat_timeout_s FROM activations a JOIN licenses l ON l.id = a.license_id \
         JOIN products p ON p.id = l.product_id \
         WHERE p.heartbeat_timeout_s IS NOT NULL AND a.last_heartbeat_at + p.heartbeat_timeout_s * 1000 < $1 \
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
        if lifecycle::release_seat(&mut tx, &row, a, Some(now - timeout_s * 1000)).await? {
            tx.commit().await?;
            state.licenses.changed(&state.db, &row.key_digest).await;
            released += 1;
        }
    }
    Ok(released)
}
