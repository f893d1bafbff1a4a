//! The churn budget: how many seats one license may free in any 30 days, so that a seat cannot be
//! passed around by deactivating and re-activating all day. The product sets the cap
//! (`max_deactivations_per_30d`, none: unlimited); the seats freed by the key holder (deactivate,
//! an offline device's proof) and by the owner count, those freed by an admin or the heartbeat
//! reaper do not. Every check and charge runs under the license's write lock, so two
//! deactivations at the edge of the budget cannot both pass.

use axum::extract::State;
use serde::Serialize;
use sqlx::{Any, Executor};
use utoipa::ToSchema;

use super::admin::LicenseEnvelope;
use super::model::LicenseRow;
use super::store;
use crate::auth::Admin;
use crate::crypto::new_id;
use crate::db::Tx;
use crate::error::{Error, Result};
use crate::http::extract::{Json, Path};
use crate::state::AppState;
use crate::timestamp::Timestamp;

/// The rolling window.
pub const WINDOW_MS: i64 = 30 * 86_400_000;

/// A license's churn budget, as its admin and owner see it in the license object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Churn {
    /// The product's cap on seats freed per 30 days; `null`: unlimited.
    #[schema(example = 3)]
    pub max_deactivations_per_30d: Option<i64>,
    /// Seats freed in the last 30 days that count against the cap.
    #[schema(example = 1)]
    pub deactivations_30d: i64,
    /// When the next deactivation is possible, while the budget is spent; else `null`.
    pub next_deactivation_at: Option<Timestamp>,
}

/// The budget of `license_id` (of product `product_id`) at `now`: one query.
pub async fn budget<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    license_id: &str,
    product_id: &str,
    now: i64,
) -> Result<Churn, sqlx::Error> {
    // One row per counted release in the window, oldest first, each carrying the product's
    // cap; a single row with a NULL time when there is none.
    let rows: Vec<(Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT p.max_deactivations_per_30d, r.at FROM products p \
         LEFT JOIN seat_releases r ON r.license_id = $1 AND r.at > $2 \
         WHERE p.id = $3 ORDER BY r.at",
    )
    .bind(license_id)
    .bind(now - WINDOW_MS)
    .bind(product_id)
    .fetch_all(ex)
    .await?;
    let limit = rows.first().and_then(|r| r.0);
    let times: Vec<i64> = rows.iter().filter_map(|r| r.1).collect();
    Ok(Churn {
        max_deactivations_per_30d: limit,
        deactivations_30d: times.len() as i64,
        next_deactivation_at: next_allowed(limit, &times).map(Timestamp),
    })
}

/// When one more release fits the budget, given the counted releases in the window (oldest
/// first); `None` while one fits now. With `n` releases and a cap of `m`, the window must lose
/// `n - m + 1` of them: the one at index `n - m` is the last to leave.
fn next_allowed(limit: Option<i64>, times: &[i64]) -> Option<i64> {
    let limit = usize::try_from(limit?).ok()?.max(1);
    (times.len() >= limit).then(|| times[times.len() - limit] + WINDOW_MS)
}

/// Charges one release of `row` at `now` to its budget inside `tx` (which holds the license's
/// write lock), or refuses it: 409 `CHURN_LIMIT_REACHED` with the time the next one fits.
/// Releases that left the window are pruned here, so the table stays small.
pub async fn charge(tx: &mut Tx, row: &LicenseRow, now: i64) -> Result<()> {
    let churn = budget(&mut **tx, &row.id, &row.product_id, now).await?;
    if let Some(at) = churn.next_deactivation_at {
        return Err(Error::ChurnLimitReached {
            message: format!(
                "This license has freed {} seats in the last 30 days, as many as its product allows; \
                 the next deactivation is possible at {}",
                churn.deactivations_30d,
                at.to_rfc3339()
            ),
            retry_at_ms: at.ms(),
        });
    }
    sqlx::query("DELETE FROM seat_releases WHERE license_id = $1 AND at <= $2")
        .bind(&row.id)
        .bind(now - WINDOW_MS)
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO seat_releases (id, license_id, at) VALUES ($1, $2, $3)")
        .bind(new_id("rel"))
        .bind(&row.id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Resets a license's churn budget (admin): the seats it freed so far no longer count. The
/// reset is recorded in the audit log, as every admin write is.
#[utoipa::path(post, path = "/api/licenses/{id}/churn/reset", tag = "licenses", params(("id" = String, Path)),
    responses((status = 200, body = LicenseEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn reset_churn(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<LicenseEnvelope>> {
    let (mut tx, row) = store::lock_license(&state.db, &id).await?;
    let row = row.ok_or_else(|| Error::no_such("License"))?;
    sqlx::query("DELETE FROM seat_releases WHERE license_id = $1")
        .bind(&row.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let n = store::count_activations(&state.db.pool, &row.id).await?;
    Ok(Json(LicenseEnvelope {
        license: super::admin::full_view(&state, &row, n).await?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_release_fits_when_the_oldest_counted_one_leaves_the_window() {
        assert_eq!(next_allowed(None, &[1, 2, 3]), None, "unlimited");
        assert_eq!(next_allowed(Some(3), &[1, 2]), None, "one left");
        assert_eq!(next_allowed(Some(3), &[1, 2, 3]), Some(1 + WINDOW_MS));
        assert_eq!(next_allowed(Some(1), &[5]), Some(5 + WINDOW_MS));
        // A cap lowered below what was already freed: the window must lose three.
        assert_eq!(next_allowed(Some(2), &[1, 2, 3, 4]), Some(3 + WINDOW_MS));
    }
}
