//! License and activation queries, written once for both backends.

use sqlx::{Any, AssertSqlSafe, Executor};

use super::cache::Snapshot;
use super::model::{ACTIVATION_COLUMNS, Activation, LICENSE_COLUMNS, LicenseRow};
use crate::db::{Db, Tx};
use crate::timestamp::Timestamp;

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    #[sqlx(flatten)]
    license: LicenseRow,
    product_slug: String,
    offline_lease_days: i64,
    heartbeat_timeout_s: Option<i64>,
    // One live activation per row (all NULL for a license without any).
    act_id: Option<String>,
    act_fingerprint: Option<String>,
    act_name: Option<String>,
    act_platform: Option<String>,
    act_hostname: Option<String>,
    act_created_at: Option<i64>,
    act_last_heartbeat_at: Option<i64>,
    act_offline_until: Option<i64>,
}

/// Loads everything the hot path needs about the license with this key digest, in one query (a
/// cache miss on the hot path pays one round trip): the license, its product's terms, and its
/// live activations oldest first, one per row.
pub async fn load_snapshot(db: &Db, digest_hex: &str) -> Result<Option<Snapshot>, sqlx::Error> {
    let sql = format!(
        "SELECT {LICENSE_COLUMNS}, p.slug AS product_slug, p.offline_lease_days, p.heartbeat_timeout_s, \
         a.id AS act_id, a.fingerprint AS act_fingerprint, a.name AS act_name, a.platform AS act_platform, \
         a.hostname AS act_hostname, a.created_at AS act_created_at, a.last_heartbeat_at AS act_last_heartbeat_at, \
         a.offline_until AS act_offline_until \
         FROM licenses l JOIN products p ON p.id = l.product_id \
         LEFT JOIN activations a ON a.license_id = l.id \
         WHERE l.key_digest = $1 ORDER BY a.id"
    );
    let rows: Vec<SnapshotRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(digest_hex)
        .fetch_all(&db.pool)
        .await?;
    let mut activations = Vec::new();
    let mut first = None;
    for r in rows {
        if let (Some(id), Some(fingerprint), Some(created), Some(beat)) = (
            r.act_id,
            r.act_fingerprint,
            r.act_created_at,
            r.act_last_heartbeat_at,
        ) {
            activations.push(Activation {
                id,
                license_id: r.license.id.clone(),
                fingerprint,
                name: r.act_name,
                platform: r.act_platform,
                hostname: r.act_hostname,
                created_at: Timestamp(created),
                last_heartbeat_at: Timestamp(beat),
                offline_until: r.act_offline_until.map(Timestamp),
            });
        }
        if first.is_none() {
            first = Some((
                r.license,
                r.product_slug,
                r.offline_lease_days,
                r.heartbeat_timeout_s,
            ));
        }
    }
    Ok(first
        .map(|(license, slug, lease, beat)| Snapshot::new(license, slug, lease, beat, activations)))
}

/// Opens a write transaction holding the license `id` locked until commit (see `Db::row_lock`)
/// and reads it in the same statement; `None` when there is no such license.
pub async fn lock_license(db: &Db, id: &str) -> Result<(Tx, Option<LicenseRow>), sqlx::Error> {
    let mut tx = db.begin().await?;
    let sql = format!(
        "SELECT {LICENSE_COLUMNS} FROM licenses l WHERE l.id = $1{}",
        db.row_lock()
    );
    let row = sqlx::query_as(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok((tx, row))
}

/// How many seats of a license are taken, and the id of the activation `fingerprint` holds, if
/// any: one query for what the seat check needs.
pub async fn seats<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    license_id: &str,
    fingerprint: &str,
) -> Result<(i64, Option<String>), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), max(CASE WHEN fingerprint = $2 THEN id END) FROM activations WHERE license_id = $1",
    )
    .bind(license_id)
    .bind(fingerprint)
    .fetch_one(ex)
    .await
}

pub async fn license_by_id<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: &str,
) -> Result<Option<LicenseRow>, sqlx::Error> {
    let sql = format!("SELECT {LICENSE_COLUMNS} FROM licenses l WHERE l.id = $1");
    sqlx::query_as(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(ex)
        .await
}

/// Live activations of a license, oldest first.
pub async fn activations<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    license_id: &str,
) -> Result<Vec<Activation>, sqlx::Error> {
    let sql =
        format!("SELECT {ACTIVATION_COLUMNS} FROM activations WHERE license_id = $1 ORDER BY id");
    sqlx::query_as(AssertSqlSafe(sql))
        .bind(license_id)
        .fetch_all(ex)
        .await
}

pub async fn activation_by_fingerprint<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    license_id: &str,
    fingerprint: &str,
) -> Result<Option<Activation>, sqlx::Error> {
    let sql = format!(
        "SELECT {ACTIVATION_COLUMNS} FROM activations WHERE license_id = $1 AND fingerprint = $2"
    );
    sqlx::query_as(AssertSqlSafe(sql))
        .bind(license_id)
        .bind(fingerprint)
        .fetch_optional(ex)
        .await
}

pub async fn activation_by_id<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: &str,
) -> Result<Option<Activation>, sqlx::Error> {
    let sql = format!("SELECT {ACTIVATION_COLUMNS} FROM activations WHERE id = $1");
    sqlx::query_as(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(ex)
        .await
}

pub async fn count_activations<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    license_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM activations WHERE license_id = $1")
        .bind(license_id)
        .fetch_one(ex)
        .await
}
