//! Every change to a license's state has one writer: this module.
//!
//! Admin actions, Stripe events, the heartbeat reaper and the hot path describe what they want
//! (`Change`, a seat taken, a seat released); the functions here check it against the rules,
//! write it inside the caller's transaction, emit its event into the outbox and return the new
//! row. The caller commits and only then invalidates the digests it is handed: invalidating
//! before the commit would let a concurrent load cache the old state.

use serde_json::Value;

use super::decide::{self, Code};
use super::key::LicenseKey;
use super::model::{Activation, License, LicenseRow, LicenseStatus};
use super::store;
use crate::crypto::{DataKey, new_id};
use crate::db::Tx;
use crate::error::{Error, Result, ResultExt};
use crate::events;
use crate::timestamp::{Timestamp, now_ms};

const DAY_MS: i64 = 86_400_000;

/// A license to insert; `entitlements` and `metadata` are JSON text.
pub struct NewLicense<'a> {
    pub product_id: &'a str,
    pub user_id: Option<&'a str>,
    /// The address it was granted to, while no account may own it (see `owner_for_email`).
    pub granted_email: Option<&'a str>,
    pub max_activations: i64,
    pub expires_at: Option<i64>,
    pub entitlements: &'a str,
    pub metadata: &'a str,
    pub order_id: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
}

/// Inserts a license with a fresh key inside `tx` and emits `license.created` there. The caller
/// commits and then calls `state.licenses.changed` with the row's digest.
pub async fn create(
    tx: &mut Tx,
    data_key: &DataKey,
    n: NewLicense<'_>,
) -> Result<(LicenseRow, LicenseKey)> {
    let id = new_id("lic");
    let key = LicenseKey::generate();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO licenses (id, key_digest, key_sealed, key_last4, product_id, user_id, status, expires_at, \
         max_activations, entitlements, metadata, order_id, subscription_id, granted_email, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, $10, $11, $12, $13, $14, $14)",
    )
    .bind(&id)
    .bind(key.digest_hex())
    .bind(data_key.seal(key.as_str().as_bytes(), &id))
    .bind(key.last4())
    .bind(n.product_id)
    .bind(n.user_id)
    .bind(n.expires_at)
    .bind(n.max_activations)
    .bind(n.entitlements)
    .bind(n.metadata)
    .bind(n.order_id)
    .bind(n.subscription_id)
    .bind(n.granted_email)
    .bind(now)
    .execute(&mut **tx)
    .await
    .on_unique(|| Err(Error::Internal(anyhow::anyhow!("license key collision"))))?;
    let row = store::license_by_id(&mut **tx, &id)
        .await?
        .ok_or_else(|| Error::no_such("License"))?;
    events::emit(
        tx,
        "license.created",
        serde_json::to_value(row.view(0, None)).expect("json"),
    )
    .await?
    .with_key(tx, data_key, key.as_str())
    .await?;
    Ok((row, key))
}

/// Inserts `count` licenses on the same terms inside `tx`, each with a fresh key and its
/// `license.created` event: what `create` does one by one, in multi-row statements (bulk issuing:
/// `ecosire license issue`). Returns the keys in insertion order.
pub async fn create_many(
    tx: &mut Tx,
    data_key: &DataKey,
    n: &NewLicense<'_>,
    count: usize,
) -> Result<Vec<LicenseKey>> {
    let now = now_ms();
    let rows: Vec<(LicenseRow, LicenseKey)> = (0..count)
        .map(|_| {
            let id = new_id("lic");
            let key = LicenseKey::generate();
            let row = LicenseRow {
                key_digest: key.digest_hex(),
                key_sealed: data_key.seal(key.as_str().as_bytes(), &id),
                key_last4: key.last4(),
                id,
                product_id: n.product_id.to_string(),
                user_id: n.user_id.map(String::from),
                status: LicenseStatus::Active.as_str().to_string(),
                expires_at: n.expires_at,
                max_activations: n.max_activations,
                entitlements: n.entitlements.to_string(),
                metadata: n.metadata.to_string(),
                created_at: now,
                updated_at: now,
            };
            (row, key)
        })
        .collect();
    // 16 parameters a row: well under both backends' limits per statement.
    for chunk in rows.chunks(500) {
        let sql = format!(
            "INSERT INTO licenses (id, key_digest, key_sealed, key_last4, product_id, user_id, status, expires_at, \
             max_activations, entitlements, metadata, order_id, subscription_id, granted_email, created_at, updated_at) \
             VALUES {}",
            crate::db::values_list(chunk.len(), 16)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (r, _) in chunk {
            q = q
                .bind(r.id.as_str())
                .bind(r.key_digest.as_str())
                .bind(r.key_sealed.as_str())
                .bind(r.key_last4.as_str())
                .bind(r.product_id.as_str())
                .bind(r.user_id.as_deref())
                .bind(r.status.as_str())
                .bind(r.expires_at)
                .bind(r.max_activations)
                .bind(r.entitlements.as_str())
                .bind(r.metadata.as_str())
                .bind(n.order_id)
                .bind(n.subscription_id)
                .bind(n.granted_email)
                .bind(r.created_at)
                .bind(r.updated_at);
        }
        q.execute(&mut **tx)
            .await
            .on_unique(|| Err(Error::Internal(anyhow::anyhow!("license key collision"))))?;
    }
    let events = rows
        .iter()
        .map(|(r, k)| {
            let view = serde_json::to_value(r.view(0, None)).expect("json");
            (view, Some(k.as_str()))
        })
        .collect();
    events::emit_batch(tx, "license.created", events, data_key).await?;
    Ok(rows.into_iter().map(|(_, k)| k).collect())
}

/// A change to a license's status, expiry or key.
#[derive(Debug, Clone)]
pub enum Change {
    /// For good: nothing changes a revoked license again.
    Revoke,
    Suspend,
    Reinstate,
    /// A new expiry (announced even when equal: the admin asked for a renewal).
    Renew {
        expires_at: i64,
    },
    /// `days` more, counted from the later of now and the current expiry (API.md's `renew`).
    Extend {
        days: i64,
        now: i64,
    },
    /// A new key; the old one stops at once.
    Reissue,
    /// What a subscription says the license should be: status and period end together, with
    /// the event that describes the difference (nothing when there is none). A revoked license
    /// stays revoked.
    Follow {
        status: LicenseStatus,
        expires_at: Option<i64>,
    },
}

/// What `apply` will write: the rules of the lifecycle, without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    status: LicenseStatus,
    expires_at: Option<i64>,
    new_key: bool,
    /// `None`: nothing changes (an idempotent repeat), and nothing is written or announced.
    event: Option<&'static str>,
}

fn revoked_is_final() -> Error {
    Error::conflict(
        "LICENSE_REVOKED",
        "The license is revoked; revocation is final",
    )
}

fn plan(cur: &LicenseRow, change: &Change) -> Result<Plan> {
    let status = cur.status();
    let same = Plan {
        status,
        expires_at: cur.expires_at,
        new_key: false,
        event: None,
    };
    if status == LicenseStatus::Revoked {
        return match change {
            Change::Revoke | Change::Follow { .. } => Ok(same),
            _ => Err(revoked_is_final()),
        };
    }
    let to = |status, event| Plan {
        status,
        event: Some(event),
        ..same.clone()
    };
    Ok(match *change {
        Change::Revoke => to(LicenseStatus::Revoked, "license.revoked"),
        Change::Suspend if status == LicenseStatus::Suspended => same,
        Change::Suspend => to(LicenseStatus::Suspended, "license.suspended"),
        Change::Reinstate if status == LicenseStatus::Active => same,
        Change::Reinstate => to(LicenseStatus::Active, "license.reinstated"),
        Change::Renew { expires_at } => Plan {
            expires_at: Some(expires_at),
            ..to(status, "license.renewed")
        },
        Change::Extend { days, now } => {
            let expires_at = cur.expires_at.unwrap_or(now).max(now) + days * DAY_MS;
            if expires_at > crate::timestamp::MAX_MS {
                return Err(Error::invalid(
                    "extend_days",
                    "would move the expiry past 9999-12-31",
                ));
            }
            Plan {
                expires_at: Some(expires_at),
                ..to(status, "license.renewed")
            }
        }
        Change::Reissue => Plan {
            new_key: true,
            ..to(status, "license.reissued")
        },
        Change::Follow {
            status: target,
            expires_at,
        } => {
            let event = match (status, target) {
                (LicenseStatus::Suspended, LicenseStatus::Active) => Some("license.reinstated"),
                (LicenseStatus::Active, LicenseStatus::Suspended) => Some("license.suspended"),
                _ if expires_at != cur.expires_at => Some("license.renewed"),
                _ => None,
            };
            Plan {
                status: if event.is_some() { target } else { status },
                expires_at,
                new_key: false,
                event,
            }
        }
    })
}

/// The outcome of a change, for the caller to answer with and to invalidate after commit.
#[derive(Debug)]
pub struct Applied {
    pub row: LicenseRow,
    pub activations: i64,
    /// The event announced, if anything changed.
    pub event: Option<&'static str>,
    /// Key digests whose cached snapshots are stale once the transaction commits.
    pub digests: Vec<String>,
}

/// Applies `change` to `cur` (read under the license's write lock in `tx`): checks the rules,
/// writes, and emits the event with `extra` merged into its body. Errors: 409 `LICENSE_REVOKED`.
pub async fn apply(
    tx: &mut Tx,
    data_key: &DataKey,
    cur: &LicenseRow,
    change: Change,
    extra: Value,
) -> Result<Applied> {
    let plan = plan(cur, &change)?;
    let Some(event) = plan.event else {
        return Ok(Applied {
            activations: store::count_activations(&mut **tx, &cur.id).await?,
            row: cur.clone(),
            event: None,
            digests: vec![],
        });
    };
    let new_key = plan.new_key.then(LicenseKey::generate);
    let (digest, sealed, last4) = match &new_key {
        Some(k) => (
            k.digest_hex(),
            data_key.seal(k.as_str().as_bytes(), &cur.id),
            k.last4(),
        ),
        None => (
            cur.key_digest.clone(),
            cur.key_sealed.clone(),
            cur.key_last4.clone(),
        ),
    };
    sqlx::query(
        "UPDATE licenses SET status = $2, expires_at = $3, key_digest = $4, key_sealed = $5, key_last4 = $6, updated_at = $7 WHERE id = $1",
    )
    .bind(&cur.id)
    .bind(plan.status.as_str())
    .bind(plan.expires_at)
    .bind(&digest)
    .bind(&sealed)
    .bind(&last4)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    if plan.status != cur.status() {
        // Every status change moves the license into, out of or between the sets of the
        // product's signed revocation list (there are only three statuses).
        super::revocations::bump(tx, &cur.product_id, now_ms()).await?;
    }
    let row = store::license_by_id(&mut **tx, &cur.id)
        .await?
        .ok_or_else(|| Error::no_such("License"))?;
    let activations = store::count_activations(&mut **tx, &cur.id).await?;
    let mut body = serde_json::to_value(row.view(activations, None)).expect("json");
    if let (Some(obj), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        obj.extend(extra.clone());
    }
    let emitted = events::emit(tx, event, body).await?;
    if let Some(k) = &new_key {
        emitted.with_key(tx, data_key, k.as_str()).await?;
    }
    let mut digests = vec![cur.key_digest.clone()];
    if digest != cur.key_digest {
        digests.push(digest);
    }
    Ok(Applied {
        row,
        activations,
        event: Some(event),
        digests,
    })
}

/// Refuses a license that may not be used now, from the same decision validate makes: 403
/// `LICENSE_REVOKED`, `LICENSE_SUSPENDED` or `LICENSE_EXPIRED`.
pub fn refuse_unusable(status: LicenseStatus, expires_at: Option<i64>, now: i64) -> Result<()> {
    let (code, message) = match decide::usability(status, expires_at, now) {
        Code::Revoked => ("LICENSE_REVOKED", "The license has been revoked"),
        Code::Suspended => ("LICENSE_SUSPENDED", "The license is suspended"),
        Code::Expired => ("LICENSE_EXPIRED", "The license has expired"),
        _ => return Ok(()),
    };
    Err(Error::forbidden(code, message))
}

/// The device asking for a seat.
#[derive(Debug, Clone)]
pub struct Device {
    pub fingerprint: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub hostname: Option<String>,
    /// Set for an air-gapped activation (a signed request file, see `offline`).
    pub offline: Option<OfflineLease>,
}

/// What an air-gapped activation holds besides a seat: the device's Ed25519 public key
/// (base64url), which must sign the proof that releases the seat, and the end of its lease (unix
/// ms), when the reaper frees the seat.
#[derive(Debug, Clone)]
pub struct OfflineLease {
    pub device_key: String,
    pub until: i64,
}

/// The event body of `license.activated` / `license.deactivated`: the activation with its license.
pub fn activation_event(a: &Activation, license: &License) -> Value {
    let mut v = serde_json::to_value(a).expect("serializable");
    v["license"] = serde_json::to_value(license).expect("serializable");
    v
}

/// A seat taken: `created` is false when the device already held one (then only its heartbeat
/// is refreshed, and nothing is announced).
#[derive(Debug)]
pub struct Seat {
    pub created: bool,
    pub activation: Activation,
    pub license: License,
}

/// Gives `device` a seat of `row` (read under the license's write lock in `tx`), or confirms the
/// one it has. Errors: 403 when the license may not be used, 409 `ACTIVATION_LIMIT_REACHED`.
pub async fn take_seat(tx: &mut Tx, row: &LicenseRow, device: Device, now: i64) -> Result<Seat> {
    refuse_unusable(row.status(), row.expires_at, now)?;
    let (count, existing) = store::seats(&mut **tx, &row.id, &device.fingerprint).await?;
    if let Some(existing) = match existing {
        Some(id) => store::activation_by_id(&mut **tx, &id).await?,
        None => None,
    } {
        // Re-activating the same device confirms it is alive; an offline request renews the
        // lease under the device key it names (the newest request's key signs the release).
        let offline_until = match &device.offline {
            Some(o) => {
                sqlx::query("UPDATE activations SET last_heartbeat_at = $2, device_key = $3, offline_until = $4 WHERE id = $1")
                    .bind(&existing.id)
                    .bind(now)
                    .bind(&o.device_key)
                    .bind(o.until)
                    .execute(&mut **tx)
                    .await?;
                Some(Timestamp(o.until))
            }
            None => {
                sqlx::query("UPDATE activations SET last_heartbeat_at = $2 WHERE id = $1")
                    .bind(&existing.id)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                existing.offline_until
            }
        };
        return Ok(Seat {
            created: false,
            activation: Activation {
                last_heartbeat_at: Timestamp(now),
                offline_until,
                ..existing
            },
            license: row.view(count, None),
        });
    }
    if count >= row.max_activations {
        return Err(Error::conflict(
            "ACTIVATION_LIMIT_REACHED",
            format!(
                "All {} seats of this license are in use; deactivate a device first",
                row.max_activations
            ),
        ));
    }
    let a = Activation {
        id: new_id("act"),
        license_id: row.id.clone(),
        fingerprint: device.fingerprint,
        name: device.name,
        platform: device.platform,
        hostname: device.hostname,
        created_at: Timestamp(now),
        last_heartbeat_at: Timestamp(now),
        offline_until: device.offline.as_ref().map(|o| Timestamp(o.until)),
    };
    sqlx::query(
        "INSERT INTO activations (id, license_id, fingerprint, name, platform, hostname, created_at, last_heartbeat_at, \
         device_key, offline_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)",
    )
    .bind(&a.id)
    .bind(&a.license_id)
    .bind(&a.fingerprint)
    .bind(&a.name)
    .bind(&a.platform)
    .bind(&a.hostname)
    .bind(now)
    .bind(device.offline.as_ref().map(|o| o.device_key.as_str()))
    .bind(device.offline.as_ref().map(|o| o.until))
    .execute(&mut **tx)
    .await?;
    let license = row.view(count + 1, None);
    metrics::counter!("ecosire_activations_total").increment(1);
    events::emit(tx, "license.activated", activation_event(&a, &license)).await?;
    Ok(Seat {
        created: true,
        activation: a,
        license,
    })
}

/// Records that the device holding a seat of `license_id` is alive at `now`; `None` when it holds
/// none. A single conditional update, so it needs no license lock: it races only the reaper, whose
/// delete is guarded by the time of the last heartbeat.
pub async fn heartbeat<'e, E>(
    ex: E,
    license_id: &str,
    fingerprint: &str,
    now: i64,
) -> Result<Option<Activation>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!(
        "UPDATE activations SET last_heartbeat_at = $3 WHERE license_id = $1 AND fingerprint = $2 \
         RETURNING {}",
        super::model::ACTIVATION_COLUMNS
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(license_id)
        .bind(fingerprint)
        .bind(now)
        .fetch_optional(ex)
        .await?)
}

/// New terms for a license (an admin's PATCH): each `Some` replaces the current value. Terms
/// change what a license allows, not its lifecycle, so nothing is announced.
#[derive(Debug, Default)]
pub struct Terms {
    pub max_activations: Option<i64>,
    pub expires_at: Option<Option<i64>>,
    /// JSON text.
    pub entitlements: Option<String>,
    /// JSON text.
    pub metadata: Option<String>,
    pub user_id: Option<Option<String>>,
}

/// Writes `terms` over `cur` (read under the license's write lock in `tx`) and returns the row.
pub async fn amend(tx: &mut Tx, cur: &LicenseRow, terms: Terms) -> Result<LicenseRow> {
    sqlx::query(
        "UPDATE licenses SET max_activations = $2, expires_at = $3, entitlements = $4, metadata = $5, \
         user_id = $6, updated_at = $7 WHERE id = $1",
    )
    .bind(&cur.id)
    .bind(terms.max_activations.unwrap_or(cur.max_activations))
    .bind(terms.expires_at.unwrap_or(cur.expires_at))
    .bind(terms.entitlements.unwrap_or_else(|| cur.entitlements.clone()))
    .bind(terms.metadata.unwrap_or_else(|| cur.metadata.clone()))
    .bind(terms.user_id.unwrap_or_else(|| cur.user_id.clone()))
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    store::license_by_id(&mut **tx, &cur.id)
        .await?
        .ok_or_else(|| Error::no_such("License"))
}

/// Who frees a seat: whether it counts against the churn budget, and what guards the release.
#[derive(Debug, Clone, Copy)]
pub enum Release {
    /// The key holder (deactivate, an offline device's proof) or the license's owner, at `now`:
    /// charged to the churn budget, and refused past it (409 `CHURN_LIMIT_REACHED`).
    Holder { now: i64 },
    /// An admin: not counted.
    Admin,
    /// The heartbeat reaper: only a device that has been silent since `silent_before` and holds
    /// no offline lease (a heartbeat racing the reaper wins). Not counted.
    Silent { silent_before: i64 },
    /// The reaper, for an offline lease that ended before `now` (a renewal racing it wins). Not
    /// counted.
    LeaseEnded { now: i64 },
}

/// Frees the seat `a` of `row` inside `tx` (which holds the license's write lock) and emits
/// `license.deactivated`. False when the guard of `release` left nothing to free.
pub async fn release_seat(
    tx: &mut Tx,
    row: &LicenseRow,
    a: Activation,
    release: Release,
) -> Result<bool> {
    if let Release::Holder { now } = release {
        super::churn::charge(tx, row, now).await?;
    }
    let (guard, bound) = match release {
        Release::Holder { .. } | Release::Admin => ("", 0),
        Release::Silent { silent_before } => (
            " AND last_heartbeat_at < $2 AND offline_until IS NULL",
            silent_before,
        ),
        Release::LeaseEnded { now } => (" AND offline_until < $2", now),
    };
    let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM activations WHERE id = $1{guard}"
    )))
    .bind(&a.id);
    if !guard.is_empty() {
        q = q.bind(bound);
    }
    let deleted = q.execute(&mut **tx).await?.rows_affected();
    if deleted == 0 {
        return Ok(false);
    }
    let count = store::count_activations(&mut **tx, &row.id).await?;
    let license = row.view(count, None);
    events::emit(tx, "license.deactivated", activation_event(&a, &license)).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, expires_at: Option<i64>) -> LicenseRow {
        LicenseRow {
            id: "lic_1".into(),
            key_digest: "d".into(),
            key_sealed: "s".into(),
            key_last4: "ABCD".into(),
            product_id: "prd_1".into(),
            user_id: None,
            status: status.into(),
            expires_at,
            max_activations: 1,
            entitlements: "[]".into(),
            metadata: "{}".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn event(cur: &LicenseRow, change: Change) -> Option<&'static str> {
        plan(cur, &change).unwrap().event
    }

    #[test]
    fn revocation_is_final_and_repeats_are_quiet() {
        let revoked = row("revoked", None);
        for change in [
            Change::Suspend,
            Change::Reinstate,
            Change::Reissue,
            Change::Renew { expires_at: 5 },
            Change::Extend { days: 1, now: 0 },
        ] {
            let e = plan(&revoked, &change).unwrap_err();
            assert_eq!(e.code(), "LICENSE_REVOKED");
            assert_eq!(e.status_code(), 409);
        }
        assert_eq!(event(&revoked, Change::Revoke), None);
        let follow = Change::Follow {
            status: LicenseStatus::Active,
            expires_at: Some(9),
        };
        assert_eq!(
            event(&revoked, follow),
            None,
            "a subscription cannot revive it"
        );
        let active = row("active", None);
        assert_eq!(event(&active, Change::Reinstate), None);
        assert_eq!(event(&active, Change::Suspend), Some("license.suspended"));
        assert_eq!(event(&row("suspended", None), Change::Suspend), None);
        assert_eq!(event(&active, Change::Revoke), Some("license.revoked"));
    }

    #[test]
    fn extending_counts_from_the_later_of_now_and_the_expiry() {
        let day = DAY_MS;
        let p = |cur: Option<i64>, now| {
            plan(&row("active", cur), &Change::Extend { days: 2, now })
                .unwrap()
                .expires_at
        };
        assert_eq!(p(Some(10 * day), day), Some(12 * day), "from the expiry");
        assert_eq!(
            p(Some(day), 10 * day),
            Some(12 * day),
            "from now, when expired"
        );
        assert_eq!(
            p(None, 10 * day),
            Some(12 * day),
            "from now, without expiry"
        );
        let far = plan(
            &row("active", Some(crate::timestamp::MAX_MS)),
            &Change::Extend { days: 1, now: 0 },
        );
        assert_eq!(far.unwrap_err().code(), "VALIDATION_FAILED");
    }

    #[test]
    fn a_subscription_is_followed_with_the_event_that_describes_the_difference() {
        let follow = |status, expires_at| Change::Follow { status, expires_at };
        let active = row("active", Some(10));
        let suspended = row("suspended", Some(10));
        assert_eq!(
            event(&suspended, follow(LicenseStatus::Active, Some(20))),
            Some("license.reinstated")
        );
        assert_eq!(
            event(&active, follow(LicenseStatus::Suspended, Some(10))),
            Some("license.suspended")
        );
        assert_eq!(
            event(&active, follow(LicenseStatus::Active, Some(20))),
            Some("license.renewed")
        );
        assert_eq!(
            event(&active, follow(LicenseStatus::Active, Some(10))),
            None
        );
        let p = plan(&active, &follow(LicenseStatus::Active, Some(20))).unwrap();
        assert_eq!((p.status, p.expires_at), (LicenseStatus::Active, Some(20)));
    }

    #[test]
    fn unusable_licenses_are_refused_with_the_codes_validate_uses() {
        let code = |s, e| {
            refuse_unusable(s, e, 100)
                .err()
                .map(|e| e.code())
                .unwrap_or("OK")
        };
        assert_eq!(code(LicenseStatus::Revoked, None), "LICENSE_REVOKED");
        assert_eq!(code(LicenseStatus::Suspended, None), "LICENSE_SUSPENDED");
        assert_eq!(code(LicenseStatus::Active, Some(100)), "LICENSE_EXPIRED");
        assert_eq!(code(LicenseStatus::Active, Some(101)), "OK");
        assert_eq!(code(LicenseStatus::Active, None), "OK");
    }
}
