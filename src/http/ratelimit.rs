//! Rate limits (GCRA, via governor) and the daily quota, per API.md § Rate limits.
//!
//! Public routes with their own row (login, register, support, CRM, newsletter, ask) are limited
//! here, in a middleware that runs after routing. Validate and activate charge their own bucket
//! in the handler, which holds the parsed key and its digest (`RateContext`): by license key when
//! the key is known, by client IP otherwise, and always before the database is asked. Every other
//! request is charged to its caller once its credentials verify (`authenticated`, one bucket per
//! API key or login session, plus the daily quota of customers), and to a per-IP `anonymous`
//! bucket otherwise — a header that does not verify buys nothing. Whoever checks a bucket leaves
//! the figures in a `RateSlot`; the middleware turns them into `X-RateLimit-*` / `X-Quota-*`
//! headers on the response, whatever its status.
//!
//! Per-minute limits are local to the instance by default. With `ECOSIRE_REDIS_URL` they are
//! shared by every instance through Redis (`shared_limits`: one GCRA Lua script per check), and
//! local again, by themselves, while Redis does not answer. The daily quota is one budget per
//! customer across instances, counted in the database in batches (`quota`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::quota::{DailyQuota, Take};
use super::shared_limits::{Decision, Gcra, SharedLimits};
use crate::config::{BUCKETS, LimitsConfig, Rule};
use crate::error::Error;
use crate::state::AppState;

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

struct Bucket {
    rule: Rule,
    gcra: Gcra,
    limiter: Limiter,
}

impl Bucket {
    fn refusal(&self, retry_after_s: u64) -> Error {
        Error::TooMany {
            code: "RATE_LIMITED",
            message: format!(
                "Rate limit of {} per {}s exceeded",
                self.rule.limit,
                self.rule.period.as_secs()
            ),
            retry_after_s,
        }
    }
}

/// What one check found, for the response headers.
#[derive(Debug, Clone, Copy)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    pub reset_unix: u64,
}

/// Filled by whoever checks a bucket or the quota while serving a request (the last check of a
/// bucket is what the headers show).
#[derive(Clone, Default)]
pub struct RateSlot {
    pub rate: Arc<Mutex<Option<RateInfo>>>,
    pub quota: Arc<OnceLock<(u64, u64)>>,
}

/// All limiters of this instance.
pub struct Limits {
    pub enabled: bool,
    pub config: LimitsConfig,
    buckets: HashMap<&'static str, Bucket>,
    /// Customer calls today, shared with the other instances through the database.
    pub quota: DailyQuota,
    /// Redis, when `ECOSIRE_REDIS_URL` is set.
    shared: Option<SharedLimits>,
    /// `bucket\0key` → when its next cell frees, for keys that have spent their allowance; lets
    /// the hot path refuse before a database lookup (`blocked`). Touched only when a bucket runs
    /// dry, never on an ordinary check.
    exhausted: Mutex<HashMap<String, std::time::Instant>>,
}

/// `rule` for governor: `limit` cells per `period`, refilled evenly, with a burst of `limit`.
fn governor_quota(rule: Rule) -> Quota {
    let burst = NonZeroU32::new(rule.limit).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(rule.period / rule.limit.max(1))
        .expect("non-zero period")
        .allow_burst(burst)
}

/// One cell from this instance's own limiter.
#[inline]
fn local(b: &Bucket, key: &str) -> Decision {
    match b.limiter.check_key(&key.to_string()) {
        Ok(snap) => Decision::Allowed {
            remaining: snap.remaining_burst_capacity(),
        },
        Err(not_until) => Decision::Refused {
            wait: not_until.wait_time_from(DefaultClock::default().now()),
        },
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Limits {
    pub fn new(enabled: bool, config: LimitsConfig) -> Self {
        let buckets = BUCKETS
            .iter()
            .map(|(name, default)| {
                let rule = config.rules.get(*name).copied().unwrap_or(*default);
                let quota = governor_quota(rule);
                (
                    *name,
                    Bucket {
                        rule,
                        gcra: Gcra::new(rule.limit, rule.period),
                        limiter: RateLimiter::keyed(quota)
                            .with_middleware::<StateInformationMiddleware>(),
                    },
                )
            })
            .collect();
        Limits {
            enabled,
            config,
            buckets,
            quota: DailyQuota::default(),
            shared: None,
            exhausted: Mutex::new(HashMap::new()),
        }
    }

    /// These limits, shared through `shared` while it answers.
    pub fn with_shared(mut self, shared: SharedLimits) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The Redis side, when configured.
    pub fn shared(&self) -> Option<&SharedLimits> {
        self.shared.as_ref()
    }

    /// How per-minute limits are enforced now, for `/api/ready`: `off`, `local`,
    /// `shared (redis)`, or `local (redis unreachable: CAUSE)`.
    pub fn mode(&self) -> String {
        match &self.shared {
            _ if !self.enabled => "off".into(),
            None => "local".into(),
            Some(s) if s.is_up() => "shared (redis)".into(),
            Some(s) => format!("local (redis unreachable: {})", s.cause()),
        }
    }

    /// Takes one cell from the `mail_address` bucket of `email`: messages asked for one address
    /// (a password reset, a new verification link), so nobody floods an inbox from many IPs. The
    /// key is the address's digest: no address sits in memory or in Redis.
    pub async fn check_address(&self, email: &str) -> Result<(), Error> {
        let key = format!("addr:{}", crate::crypto::sha256_hex(email.as_bytes()));
        self.check("mail_address", &key, None).await
    }

    /// Takes one cell from `bucket` for `key`. `Err` carries the seconds until the next cell.
    /// Through Redis when it is configured and answers; else (and without a single await) from
    /// this instance's limiter.
    pub async fn check(
        &self,
        bucket: &str,
        key: &str,
        slot: Option<&RateSlot>,
    ) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        let Some(b) = self.buckets.get(bucket) else {
            return Ok(());
        };
        let decision = match &self.shared {
            None => local(b, key),
            Some(shared) => {
                // Boxed, so the future of every caller stays small when Redis is not configured.
                let remote = if shared.is_up() {
                    Box::pin(shared.check(bucket, key, b.gcra)).await
                } else {
                    None
                };
                remote.unwrap_or_else(|| {
                    shared.fallbacks.fetch_add(1, Ordering::Relaxed);
                    local(b, key)
                })
            }
        };
        self.apply(b, bucket, key, slot, decision)
    }

    /// What a decision means for the headers, the hot path's exhausted keys and the answer.
    fn apply(
        &self,
        b: &Bucket,
        bucket: &str,
        key: &str,
        slot: Option<&RateSlot>,
        decision: Decision,
    ) -> Result<(), Error> {
        let now = unix_now();
        let per_cell = b.rule.period.as_secs_f64() / f64::from(b.rule.limit.max(1));
        let (info, verdict) = match decision {
            Decision::Allowed { remaining } => {
                if remaining == 0 {
                    self.mark_exhausted(bucket, key, Duration::from_secs_f64(per_cell));
                }
                let reset = now
                    + (f64::from(b.rule.limit - remaining.min(b.rule.limit)) * per_cell).ceil()
                        as u64;
                (
                    RateInfo {
                        limit: b.rule.limit,
                        remaining,
                        reset_unix: reset,
                    },
                    Ok(()),
                )
            }
            Decision::Refused { wait } => {
                self.mark_exhausted(bucket, key, wait);
                let retry = wait.as_secs_f64().ceil().max(1.0) as u64;
                metrics::counter!("ecosire_rate_limited_total", "bucket" => bucket.to_string())
                    .increment(1);
                (
                    RateInfo {
                        limit: b.rule.limit,
                        remaining: 0,
                        reset_unix: now + retry,
                    },
                    Err(b.refusal(retry)),
                )
            }
        };
        if let Some(s) = slot {
            *s.rate.lock().expect("rate slot") = Some(info);
        }
        verdict
    }

    fn mark_exhausted(&self, bucket: &str, key: &str, until_next_cell: Duration) {
        self.exhausted.lock().expect("exhausted keys").insert(
            format!("{bucket}\0{key}"),
            std::time::Instant::now() + until_next_cell,
        );
    }

    /// Refuses, without taking a cell, a key that has spent its allowance in `bucket` and has not
    /// earned a new cell since. The hot path asks this before a database lookup it would do only
    /// to learn which bucket to charge.
    pub fn blocked(&self, bucket: &str, key: &str, slot: Option<&RateSlot>) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        let until = {
            let mut map = self.exhausted.lock().expect("exhausted keys");
            let k = format!("{bucket}\0{key}");
            match map.get(&k) {
                Some(t) if *t > std::time::Instant::now() => *t,
                Some(_) => {
                    map.remove(&k);
                    return Ok(());
                }
                None => return Ok(()),
            }
        };
        let Some(b) = self.buckets.get(bucket) else {
            return Ok(());
        };
        let wait = until.saturating_duration_since(std::time::Instant::now());
        let retry = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Some(s) = slot {
            *s.rate.lock().expect("rate slot") = Some(RateInfo {
                limit: b.rule.limit,
                remaining: 0,
                reset_unix: unix_now() + retry,
            });
        }
        metrics::counter!("ecosire_rate_limited_total", "bucket" => bucket.to_string())
            .increment(1);
        Err(b.refusal(retry))
    }

    /// Counts one call of a customer on `plan` against today's quota (from memory: the database
    /// learns it in the next flush, `quota`).
    pub fn count_daily(
        &self,
        user_id: &str,
        plan: &str,
        slot: Option<&RateSlot>,
    ) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        let Some(limit) = self.config.quota_for(plan) else {
            return Ok(());
        };
        let now = unix_now();
        let day = (now / 86_400) as i64;
        let taken = self.quota.take(user_id, day, limit);
        if let Some(s) = slot {
            let remaining = match taken {
                Take::Allowed { remaining } => remaining,
                Take::Exhausted => 0,
            };
            let _ = s.quota.set((limit, remaining));
        }
        match taken {
            Take::Allowed { .. } => Ok(()),
            Take::Exhausted => {
                let midnight = (day as u64 + 1) * 86_400;
                Err(Error::TooMany {
                    code: "QUOTA_EXCEEDED",
                    message: format!(
                        "Daily quota of {limit} calls used up; it resets at midnight UTC"
                    ),
                    retry_after_s: midnight - now,
                })
            }
        }
    }

    /// Forgets idle keys so memory stays bounded however many distinct keys pass.
    pub fn prune(&self) {
        for b in self.buckets.values() {
            b.limiter.retain_recent();
            b.limiter.shrink_to_fit();
        }
        let now = std::time::Instant::now();
        self.exhausted
            .lock()
            .expect("exhausted keys")
            .retain(|_, t| *t > now);
    }

    /// Today's UTC day number (days since the epoch), as the quota counts days.
    pub fn today() -> i64 {
        (unix_now() / 86_400) as i64
    }

    /// Keys held across all buckets (for metrics and the memory measurement).
    pub fn keys(&self) -> usize {
        self.buckets.values().map(|b| b.limiter.len()).sum()
    }
}

/// `ip:<address>` for a request, the key of every per-IP bucket.
pub fn ip_key(parts: &Parts, state: &AppState) -> String {
    match super::client_ip::client_ip(parts, &state.config.trusted_proxies) {
        Some(ip) => format!("ip:{ip}"),
        None => "ip:unknown".into(),
    }
}

/// Gives a request its `RateSlot` (while limits are on); whoever checks a bucket or the quota
/// while serving it leaves the figures there. Who is charged to which bucket is decided inside
/// (`auth::limits`, the hot path's `RateContext`). See `write_headers`.
pub fn attach_slot(state: &AppState, req: &mut Request) -> Option<RateSlot> {
    if !state.limits.enabled {
        return None;
    }
    let slot = RateSlot::default();
    req.extensions_mut().insert(slot.clone());
    Some(slot)
}

/// What a handler that charges its own bucket needs: the client's IP key and the request's slot
/// for the headers. Never fails.
pub struct RateContext {
    pub ip_key: String,
    slot: Option<RateSlot>,
}

impl FromRequestParts<AppState> for RateContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(RateContext {
            ip_key: if state.limits.enabled {
                ip_key(parts, state)
            } else {
                String::new()
            },
            slot: parts.extensions.get::<RateSlot>().cloned(),
        })
    }
}

impl RateContext {
    /// Takes one cell from `bucket` for `key`.
    pub async fn check(&self, limits: &Limits, bucket: &str, key: &str) -> Result<(), Error> {
        limits.check(bucket, key, self.slot.as_ref()).await
    }
    /// A request refused before its key could be read (malformed JSON, invalid fields) is charged
    /// to the client's IP, so bad input is not a free way to hammer the route: the refusal
    /// `error` is answered, or 429 once the IP has spent its allowance.
    pub async fn refuse(&self, limits: &Limits, bucket: &str, error: Error) -> Error {
        match self.check(limits, bucket, &self.ip_key).await {
            Ok(()) => error,
            Err(limited) => limited,
        }
    }
    /// Refuses a key known to have spent its allowance, without taking a cell (`Limits::blocked`).
    pub fn blocked(&self, limits: &Limits, bucket: &str, key: &str) -> Result<(), Error> {
        limits.blocked(bucket, key, self.slot.as_ref())
    }
}

/// Writes what the checks left in `slot` as `X-RateLimit-*` / `X-Quota-*` headers, whatever the
/// response's status.
pub fn write_headers(h: &mut HeaderMap, slot: &RateSlot) {
    if let Some(r) = *slot.rate.lock().expect("rate slot") {
        h.insert("x-ratelimit-limit", HeaderValue::from(r.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(r.remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(r.reset_unix));
    }
    if let Some((limit, remaining)) = slot.quota.get() {
        h.insert("x-quota-limit", HeaderValue::from(*limit));
        h.insert("x-quota-remaining", HeaderValue::from(*remaining));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        assert_eq!(Rule::parse("30/min"), Some(Rule::per_minute(30)));
        assert_eq!(
            Rule::parse("5/s"),
            Some(Rule {
                limit: 5,
                period: Duration::from_secs(1)
            })
        );
        assert_eq!(Rule::parse("0/min"), None);
        assert_eq!(Rule::parse("x/min"), None);
        assert_eq!(Rule::parse("5/fortnight"), None);
    }

    #[tokio::test]
    async fn a_bucket_allows_its_limit_then_refuses() {
        let l = Limits::new(true, LimitsConfig::default());
        for i in 0..10 {
            assert!(l.check("login", "ip:1", None).await.is_ok(), "call {i}");
        }
        let Err(Error::TooMany {
            code,
            retry_after_s,
            ..
        }) = l.check("login", "ip:1", None).await
        else {
            panic!("11th call must be refused")
        };
        assert_eq!(code, "RATE_LIMITED");
        assert!((1..=6).contains(&retry_after_s), "{retry_after_s}");
        assert!(
            l.check("login", "ip:2", None).await.is_ok(),
            "other keys have their own bucket"
        );
        assert_eq!(l.mode(), "local");
    }

    #[test]
    fn the_daily_quota_counts_customers() {
        let mut cfg = LimitsConfig::default();
        cfg.plans.insert("free".into(), Some(3));
        cfg.plans.insert("pro".into(), None);
        let l = Limits::new(true, cfg);
        for _ in 0..3 {
            assert!(l.count_daily("usr_a", "free", None).is_ok());
        }
        assert!(matches!(
            l.count_daily("usr_a", "free", None),
            Err(Error::TooMany {
                code: "QUOTA_EXCEEDED",
                ..
            })
        ));
        for _ in 0..10 {
            assert!(l.count_daily("usr_b", "pro", None).is_ok());
        }
    }

    /// The Redis a test may use (`ECOSIRE_TEST_REDIS_URL`; `.ci/run` sets it), or `None` to skip.
    fn test_redis() -> Option<String> {
        let url = std::env::var("ECOSIRE_TEST_REDIS_URL").ok();
        if url.is_none() {
            eprintln!("ECOSIRE_TEST_REDIS_URL is not set: skipping a test that needs Redis");
        }
        url
    }

    /// The Lua script and governor agree, step by step, on a sequence with bursts, refusals and
    /// refills: same decisions, same remaining burst, same wait to the microsecond (both are
    /// given the same clock: the script through its test-only time argument, governor a fake
    /// clock).
    #[tokio::test]
    async fn the_lua_gcra_decides_as_governor_does() {
        let Some(url) = test_redis() else { return };
        let shared = SharedLimits::connect(&url, "unused").await.unwrap();
        assert!(shared.is_up(), "Redis at {url} must answer");
        let rule = Rule {
            limit: 4,
            period: Duration::from_secs(1),
        };
        let clock = governor::clock::FakeRelativeClock::default();
        let governor: RateLimiter<
            governor::state::NotKeyed,
            governor::state::InMemoryState,
            governor::clock::FakeRelativeClock,
            StateInformationMiddleware,
        > = RateLimiter::new(
            governor_quota(rule),
            governor::state::InMemoryState::default(),
            clock.clone(),
        );
        let gcra = Gcra::new(rule.limit, rule.period);
        let key = format!("ecosire-test:{}:gcra", uuid::Uuid::now_v7().simple());
        // An arbitrary epoch for the script, so its numbers are as large as Redis's own clock's.
        let epoch_us: u64 = 1_750_000_000_000_000;
        let steps_ms: &[u64] = &[
            0, 0, 0, 0, 0, 0, 100, 200, 249, 250, 260, 500, 510, 999, 1000, 1000, 1000, 1001, 2500,
            2500, 2500, 2500, 2500, 2500, 2750, 10_000, 10_000, 10_000, 10_000, 10_000, 10_001,
        ];
        let mut elapsed = 0;
        let (mut allowed, mut refused) = (0, 0);
        for (i, &at) in steps_ms.iter().enumerate() {
            clock.advance(Duration::from_millis(at - elapsed));
            elapsed = at;
            let expected = match governor.check() {
                Ok(snap) => Decision::Allowed {
                    remaining: snap.remaining_burst_capacity(),
                },
                Err(not_until) => Decision::Refused {
                    wait: not_until.wait_time_from(governor::clock::Clock::now(&clock)),
                },
            };
            let got = shared
                .eval(&key, gcra, Some(epoch_us + at * 1000))
                .await
                .unwrap();
            assert_eq!(got, expected, "step {i} at {at} ms");
            match got {
                Decision::Allowed { .. } => allowed += 1,
                Decision::Refused { .. } => refused += 1,
            }
        }
        assert!(
            allowed > 4 && refused > 4,
            "{allowed} allowed, {refused} refused"
        );
    }

    /// With Redis's own clock: a bucket of 5 per hour shared by two instances' limiters (one
    /// budget: the second sees what the first took), refusing the 6th call with the wait of one
    /// cell (12 minutes), and the headers' figures as the local limiter gives them.
    #[tokio::test]
    async fn two_instances_share_one_bucket_through_redis() {
        let Some(url) = test_redis() else { return };
        let prefix = format!("ecosire-test:{}", uuid::Uuid::now_v7().simple());
        let mut config = LimitsConfig::default();
        config
            .rules
            .insert("login".into(), Rule::parse("5/h").unwrap());
        let a = Limits::new(true, config.clone())
            .with_shared(SharedLimits::connect(&url, &prefix).await.unwrap());
        let b = Limits::new(true, config.clone())
            .with_shared(SharedLimits::connect(&url, &prefix).await.unwrap());
        assert_eq!(a.mode(), "shared (redis)");
        let local = Limits::new(true, config);
        for i in 0..5u32 {
            let (slot, local_slot) = (RateSlot::default(), RateSlot::default());
            let instance = if i % 2 == 0 { &a } else { &b };
            instance.check("login", "ip:9", Some(&slot)).await.unwrap();
            local
                .check("login", "ip:9", Some(&local_slot))
                .await
                .unwrap();
            let got = slot.rate.lock().unwrap().unwrap();
            let want = local_slot.rate.lock().unwrap().unwrap();
            assert_eq!((got.limit, got.remaining), (5, 4 - i), "call {i}");
            assert_eq!(got.remaining, want.remaining, "call {i}");
            assert!(got.reset_unix.abs_diff(want.reset_unix) <= 1, "call {i}");
        }
        let Err(Error::TooMany { retry_after_s, .. }) = b.check("login", "ip:9", None).await else {
            panic!("the 6th call, on either instance, is refused")
        };
        assert!((719..=720).contains(&retry_after_s), "{retry_after_s}");
        assert!(a.check("login", "ip:9", None).await.is_err());
        assert_eq!(a.shared().unwrap().fallbacks.load(Ordering::Relaxed), 0);
    }

    /// A Redis that is not there: the check is local, counted as a fallback, and `/api/ready`'s
    /// text says why, without the URL's password.
    #[tokio::test]
    async fn an_unreachable_redis_means_local_limits() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://:hunter2-pw@127.0.0.1:{port}/");
        let l = Limits::new(true, LimitsConfig::default())
            .with_shared(SharedLimits::connect(&url, "x").await.unwrap());
        let mode = l.mode();
        assert!(mode.starts_with("local (redis unreachable: "), "{mode}");
        assert!(!mode.contains("hunter2"), "{mode}");
        for i in 0..10 {
            assert!(l.check("login", "ip:1", None).await.is_ok(), "call {i}");
        }
        assert!(l.check("login", "ip:1", None).await.is_err());
        assert_eq!(l.shared().unwrap().fallbacks.load(Ordering::Relaxed), 11);
    }
}
