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
//! Limits are per instance: with N instances behind a balancer that spreads a client evenly,
//! configure each instance with limit/N for the same overall limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::{BUCKETS, LimitsConfig, Rule};
use crate::error::Error;
use crate::state::AppState;

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

struct Bucket {
    rule: Rule,
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
    /// Customer calls today: user id → (UTC day number, count).
    daily: Mutex<HashMap<String, (i64, u64)>>,
    /// `bucket\0key` → when its next cell frees, for keys that have spent their allowance; lets
    /// the hot path refuse before a database lookup (`blocked`). Touched only when a bucket runs
    /// dry, never on an ordinary check.
    exhausted: Mutex<HashMap<String, std::time::Instant>>,
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
                let burst = NonZeroU32::new(rule.limit).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(rule.period / rule.limit.max(1))
                    .expect("non-zero period")
                    .allow_burst(burst);
                (
                    *name,
                    Bucket {
                        rule,
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
            daily: Mutex::new(HashMap::new()),
            exhausted: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one cell from `bucket` for `key`. `Err` carries the seconds until the next cell.
    pub fn check(&self, bucket: &str, key: &str, slot: Option<&RateSlot>) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        let Some(b) = self.buckets.get(bucket) else {
            return Ok(());
        };
        let now = unix_now();
        let per_cell = b.rule.period.as_secs_f64() / f64::from(b.rule.limit.max(1));
        let (info, verdict) = match b.limiter.check_key(&key.to_string()) {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
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
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
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

    /// Counts one call of a customer on `plan` against today's quota.
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
        let used = {
            let mut map = self.daily.lock().expect("daily quota");
            let entry = map.entry(user_id.to_string()).or_insert((day, 0));
            if entry.0 != day {
                *entry = (day, 0);
            }
            entry.1 += 1;
            entry.1
        };
        if let Some(s) = slot {
            let _ = s.quota.set((limit, limit.saturating_sub(used)));
        }
        if used > limit {
            let midnight = (day as u64 + 1) * 86_400;
            return Err(Error::TooMany {
                code: "QUOTA_EXCEEDED",
                message: format!("Daily quota of {limit} calls used up; it resets at midnight UTC"),
                retry_after_s: midnight - now,
            });
        }
        Ok(())
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
        let today = (unix_now() / 86_400) as i64;
        self.daily
            .lock()
            .expect("daily quota")
            .retain(|_, (day, _)| *day == today);
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

/// Gives every request a `RateSlot` and writes what the checks left in it as `X-RateLimit-*` /
/// `X-Quota-*` headers on the response, whatever its status. Who is charged to which bucket is
/// decided inside it (`auth::limits`, the hot path's `RateContext`).
pub async fn headers(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !state.limits.enabled {
        return next.run(req).await;
    }
    let slot = RateSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut res = next.run(req).await;
    write_headers(res.headers_mut(), &slot);
    res
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
    pub fn check(&self, limits: &Limits, bucket: &str, key: &str) -> Result<(), Error> {
        limits.check(bucket, key, self.slot.as_ref())
    }
    /// A request refused before its key could be read (malformed JSON, invalid fields) is charged
    /// to the client's IP, so bad input is not a free way to hammer the route: the refusal
    /// `error` is answered, or 429 once the IP has spent its allowance.
    pub fn refuse(&self, limits: &Limits, bucket: &str, error: Error) -> Error {
        match self.check(limits, bucket, &self.ip_key) {
            Ok(()) => error,
            Err(limited) => limited,
        }
    }
    /// Refuses a key known to have spent its allowance, without taking a cell (`Limits::blocked`).
    pub fn blocked(&self, limits: &Limits, bucket: &str, key: &str) -> Result<(), Error> {
        limits.blocked(bucket, key, self.slot.as_ref())
    }
}

fn write_headers(h: &mut HeaderMap, slot: &RateSlot) {
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

    #[test]
    fn a_bucket_allows_its_limit_then_refuses() {
        let l = Limits::new(true, LimitsConfig::default());
        for i in 0..10 {
            assert!(l.check("login", "ip:1", None).is_ok(), "call {i}");
        }
        let Err(Error::TooMany {
            code,
            retry_after_s,
            ..
        }) = l.check("login", "ip:1", None)
        else {
            panic!("11th call must be refused")
        };
        assert_eq!(code, "RATE_LIMITED");
        assert!((1..=6).contains(&retry_after_s), "{retry_after_s}");
        assert!(
            l.check("login", "ip:2", None).is_ok(),
            "other keys have their own bucket"
        );
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
}
