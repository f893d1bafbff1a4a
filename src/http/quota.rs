//! The daily quota of customers: one budget per customer and UTC day, shared by every instance
//! through the database (`daily_usage`), counted off the request path.
//!
//! A request decides from memory: the customer's total as the database last told this instance,
//! plus the calls this instance has accepted since (being written, or not yet). Every
//! [`FLUSH_INTERVAL`] (and at shutdown) the instance adds its new calls to the database — one
//! transaction, one `UPSERT … calls = calls + delta RETURNING calls` per customer, in a fixed
//! order so that instances never deadlock — and learns the new total, which includes what the
//! other instances wrote.
//!
//! The bound: an instance accepts a call only while its view is under the quota, and its view
//! misses only what the others accepted since it last flushed. Each other instance keeps at most
//! one flush interval of calls (plus one write) unwritten, and never more than the quota allows
//! from its own view, so a customer with quota Q gets at most
//! Q + Σ over the other instances of min(what it accepts from that customer in one flush interval,
//! Q − its view) calls a day: with N instances each taking R calls/s of the customer,
//! Q + (N − 1) × R × 1 s. One instance alone never overshoots. An instance that restarts counts
//! as another instance for its first interval (it learns the total at its first flush).
//! Refused calls are not counted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::db::Db;

/// How often the counts of an instance reach the database.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    /// The UTC day (days since the epoch) these figures are for.
    day: i64,
    /// The customer's total for `day` as the database last answered this instance.
    known: u64,
    /// Calls taken by the flush under way.
    writing: u64,
    /// Calls accepted since.
    pending: u64,
}

impl Usage {
    fn used(&self) -> u64 {
        self.known + self.writing + self.pending
    }
}

/// The quota counters of one instance.
#[derive(Default)]
pub struct DailyQuota {
    users: Mutex<HashMap<String, Usage>>,
    /// One flush at a time, so the same calls are never written twice.
    flushing: tokio::sync::Mutex<()>,
    /// The last day whose older rows were deleted.
    pruned_before: std::sync::atomic::AtomicI64,
}

/// What `take` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Counted; this many calls are left today.
    Allowed { remaining: u64 },
    /// The quota is used up (the call is not counted).
    Exhausted,
}

impl DailyQuota {
    /// Counts one call of `user_id` on `day` against `limit`, from memory.
    pub fn take(&self, user_id: &str, day: i64, limit: u64) -> Take {
        let mut users = self.users.lock().expect("quota");
        if !users.contains_key(user_id) {
            users.insert(user_id.to_string(), Usage::default());
        }
        let usage = users.get_mut(user_id).expect("inserted");
        if usage.day != day {
            *usage = Usage {
                day,
                ..Usage::default()
            };
        }
        let used = usage.used();
        if used >= limit {
            return Take::Exhausted;
        }
        usage.pending += 1;
        Take::Allowed {
            remaining: limit - used - 1,
        }
    }

    /// Adds the calls accepted since the last flush to the database and learns the totals. On
    /// failure the calls stay counted here and are written by the next flush.
    pub async fn flush(&self, db: &Db) {
        let _one = self.flushing.lock().await;
        let mut batch: Vec<(String, i64, u64)> = {
            let mut users = self.users.lock().expect("quota");
            users
                .iter_mut()
                .filter(|(_, u)| u.pending > 0)
                .map(|(id, u)| {
                    u.writing = u.pending;
                    u.pending = 0;
                    (id.clone(), u.day, u.writing)
                })
                .collect()
        };
        if batch.is_empty() {
            return;
        }
        // Rows are always locked in the same order, so two instances never deadlock.
        batch.sort_unstable();
        let written = write(db, &batch).await;
        let mut users = self.users.lock().expect("quota");
        match written {
            Ok(totals) => {
                for ((id, day, _), total) in batch.iter().zip(totals) {
                    if let Some(u) = users.get_mut(id)
                        && u.day == *day
                    {
                        u.known = u.known.max(total);
                        u.writing = 0;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::db::error_cause(&e), "writing daily quota counts failed; will retry");
                for (id, day, _) in &batch {
                    if let Some(u) = users.get_mut(id)
                        && u.day == *day
                    {
                        u.pending += u.writing;
                        u.writing = 0;
                    }
                }
            }
        }
    }

    /// Forgets the counters of past days, here and in the database: once per day and instance
    /// (a no-op on every other call).
    pub async fn prune(&self, db: &Db, today: i64) {
        use std::sync::atomic::Ordering;
        let before = self.pruned_before.swap(today, Ordering::AcqRel);
        if before == today {
            return;
        }
        self.users
            .lock()
            .expect("quota")
            .retain(|_, u| u.day >= today);
        if let Err(e) = sqlx::query("DELETE FROM daily_usage WHERE day < $1")
            .bind(today)
            .execute(&db.pool)
            .await
        {
            self.pruned_before.store(before, Ordering::Release);
            tracing::warn!(error = %crate::db::error_cause(&e), "pruning old daily quota counts failed; will retry");
        }
    }

    /// Customers counted in memory (for tests and metrics).
    pub fn len(&self) -> usize {
        self.users.lock().expect("quota").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One transaction: each customer's delta added, the new totals returned in `batch` order.
async fn write(db: &Db, batch: &[(String, i64, u64)]) -> Result<Vec<u64>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut totals = Vec::with_capacity(batch.len());
    for (id, day, delta) in batch {
        let total: i64 = sqlx::query_scalar(
            "INSERT INTO daily_usage (user_id, day, calls) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, day) DO UPDATE SET calls = daily_usage.calls + excluded.calls \
             RETURNING calls",
        )
        .bind(id)
        .bind(*day)
        .bind(i64::try_from(*delta).unwrap_or(i64::MAX))
        .fetch_one(&mut *tx)
        .await?;
        totals.push(u64::try_from(total).unwrap_or(0));
    }
    tx.commit().await?;
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn database() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("q.db").display()))
            .await
            .unwrap();
        db.migrate().await.unwrap();
        (db, dir)
    }

    async fn total(db: &Db, user: &str, day: i64) -> i64 {
        sqlx::query_scalar("SELECT calls FROM daily_usage WHERE user_id = $1 AND day = $2")
            .bind(user)
            .bind(day)
            .fetch_optional(&db.pool)
            .await
            .unwrap()
            .unwrap_or(0)
    }

    fn allowed(q: &DailyQuota, n: usize, limit: u64) -> Vec<u64> {
        (0..n)
            .map_while(|_| match q.take("usr_1", 1, limit) {
                Take::Allowed { remaining } => Some(remaining),
                Take::Exhausted => None,
            })
            .collect()
    }

    /// Two instances (two counters) on one database, flushed by hand: one budget, and exactly
    /// the documented slack: what one accepted while its view missed the other's calls.
    #[tokio::test]
    async fn instances_share_one_budget_through_the_database() {
        let (db, _dir) = database().await;
        let (a, b) = (DailyQuota::default(), DailyQuota::default());
        assert_eq!(allowed(&a, 4, 10), [9, 8, 7, 6]);
        a.flush(&db).await;
        assert_eq!(total(&db, "usr_1", 1).await, 4);
        // b has not heard of a's calls yet: its first flush tells it.
        assert_eq!(allowed(&b, 1, 10), [9]);
        b.flush(&db).await;
        assert_eq!(total(&db, "usr_1", 1).await, 5);
        assert_eq!(allowed(&b, 1, 10), [4]);
        // a still believes 4 (plus its own): it accepts up to its view's limit, 6 more.
        assert_eq!(allowed(&a, 20, 10), [5, 4, 3, 2, 1, 0]);
        // b believes 6: 4 more, the slack (a's 6 calls that b did not know of, capped by b's view).
        assert_eq!(allowed(&b, 20, 10), [3, 2, 1, 0]);
        a.flush(&db).await;
        b.flush(&db).await;
        assert_eq!(total(&db, "usr_1", 1).await, 16);
        // Both know now: nothing more for anyone today, whoever is asked.
        assert!(allowed(&a, 1, 10).is_empty() && allowed(&b, 1, 10).is_empty());
        // A new day is a new budget; pruning drops the old rows.
        assert_eq!(a.take("usr_1", 2, 10), Take::Allowed { remaining: 9 });
        a.flush(&db).await;
        a.prune(&db, 2).await;
        assert_eq!(total(&db, "usr_1", 1).await, 0);
        assert_eq!(total(&db, "usr_1", 2).await, 1);
    }

    /// A flush that fails keeps its calls counted and writes them next time.
    #[tokio::test]
    async fn a_failed_flush_loses_nothing() {
        let (db, _dir) = database().await;
        let q = DailyQuota::default();
        assert_eq!(allowed(&q, 3, 5), [4, 3, 2]);
        sqlx::query("ALTER TABLE daily_usage RENAME TO daily_usage_away")
            .execute(&db.pool)
            .await
            .unwrap();
        q.flush(&db).await;
        assert_eq!(allowed(&q, 5, 5), [1, 0], "the unwritten calls still count");
        sqlx::query("ALTER TABLE daily_usage_away RENAME TO daily_usage")
            .execute(&db.pool)
            .await
            .unwrap();
        q.flush(&db).await;
        assert_eq!(total(&db, "usr_1", 1).await, 5);
    }
}
