//! Rate limits shared by every instance through Redis (`ECOSIRE_REDIS_URL`), as API gateways do
//! it: each check of a bucket is one Lua script (`GCRA`) run atomically by Redis, with Redis's
//! clock, so N instances enforce one limit instead of N.
//!
//! The script computes exactly what governor computes locally (same theoretical arrival time,
//! same remaining burst, same wait), so the `X-RateLimit-*` headers do not depend on where the
//! check ran. When Redis does not answer (refused, or no answer within [`CALL_TIMEOUT`]) the check
//! falls back to the local governor limiter of the instance, and the instance stops asking Redis
//! (no request waits for a dead Redis) until a background probe sees it answer again:
//! [`SharedLimits::supervise`]. Each change is logged once; `/api/ready` shows the state, and the
//! metrics `ecosire_rate_limit_shared` (1 shared, 0 local) and
//! `ecosire_rate_limit_local_fallbacks_total` (checks served locally while Redis was configured).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Notify, watch};

/// A check that Redis does not answer within this is served locally.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// How often the probe asks a Redis that is down, and one that is up.
const PROBE_DOWN: Duration = Duration::from_millis(500);
const PROBE_UP: Duration = Duration::from_secs(2);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// GCRA, as governor does it (`governor::gcra::Gcra::test_and_update` and
/// `StateSnapshot::remaining_burst_capacity`), in microseconds:
/// `KEYS[1]` the bucket's key, `ARGV[1]` the emission interval T, `ARGV[2]` the tolerance
/// τ = T × (burst − 1), `ARGV[3]` (tests only) the time instead of Redis's clock.
/// The key holds the theoretical arrival time (TAT) and expires when it is in the past (a key
/// whose TAT has passed is the same as no key). Answers `{allowed, remaining, wait_µs}`.
/// Times are integers of microseconds since the epoch (exact in Lua's doubles until 2255).
pub const GCRA_LUA: &str = r#"
-- A script that reads TIME and writes must replicate its effects (the default from Redis 5 on).
if redis.replicate_commands then redis.replicate_commands() end
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local now
if ARGV[3] then
  now = tonumber(ARGV[3])
else
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local earliest = tat - tau
if now < earliest then
  return {0, 0, earliest - now}
end
local nxt = math.max(tat, now) + t
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000))
local remaining = math.floor(math.min(now + tau + t - nxt, tau + t) / t)
return {1, remaining, 0}
"#;

/// What one check decided (the same shape for the Redis and the local limiter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` cells are left in the burst.
    Allowed { remaining: u32 },
    /// Refused; the next cell frees after `wait`.
    Refused { wait: Duration },
}

/// One bucket's GCRA parameters, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    pub t_us: u64,
    pub tau_us: u64,
}

impl Gcra {
    /// The parameters of `limit` per `period` with a burst of `limit`, as `Limits` gives governor.
    pub fn new(limit: u32, period: Duration) -> Gcra {
        let limit = limit.max(1);
        let t_us = u64::try_from((period / limit).as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        Gcra {
            t_us,
            tau_us: t_us.saturating_mul(u64::from(limit - 1)),
        }
    }
}

/// The Redis side of the limits of one instance.
pub struct SharedLimits {
    manager: ConnectionManager,
    script: redis::Script,
    prefix: String,
    /// The password of the URL, kept only to be scrubbed from error texts.
    password: Option<String>,
    up: AtomicBool,
    /// Why Redis is not used, while it is not.
    cause: Mutex<String>,
    /// Checks served locally while Redis was configured.
    pub fallbacks: AtomicU64,
    /// Wakes the probe when a check finds Redis gone.
    lost: Notify,
}

impl SharedLimits {
    /// Prepares the connection to `url` and tries it once (for at most a second): a Redis that is
    /// down at start only means local limits until it answers. Errs only on a URL that cannot be
    /// used at all.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<SharedLimits> {
        let client = redis::Client::open(url).map_err(|_| {
            anyhow::anyhow!(
                "ECOSIRE_REDIS_URL: not a Redis URL: {}",
                crate::config::redact_url(url)
            )
        })?;
        let password = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_string);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
            anyhow::anyhow!(
                "ECOSIRE_REDIS_URL: {}",
                scrub(&e.to_string(), password.as_deref())
            )
        })?;
        let shared = SharedLimits {
            manager,
            script: redis::Script::new(GCRA_LUA),
            prefix: prefix.to_string(),
            password,
            up: AtomicBool::new(false),
            cause: Mutex::new("not connected yet".into()),
            fallbacks: AtomicU64::new(0),
            lost: Notify::new(),
        };
        let target = crate::config::redact_url(url);
        match shared.probe(Duration::from_secs(1)).await {
            Ok(()) => {
                shared.up.store(true, Ordering::Release);
                tracing::info!(redis = %target, "rate limits are shared through Redis");
            }
            Err(cause) => {
                tracing::warn!(redis = %target, %cause, "Redis unreachable: rate limits are local until it answers");
                *shared.cause.lock().expect("cause") = cause;
            }
        }
        Ok(shared)
    }

    /// Whether checks go to Redis now.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Why Redis is not used (meaningful while `!is_up()`).
    pub fn cause(&self) -> String {
        self.cause.lock().expect("cause").clone()
    }

    /// Takes one cell of `bucket` for `key` in Redis. `None` when Redis failed; the caller then
    /// decides locally (and the failure has been recorded: state, log line, probe woken).
    pub async fn check(&self, bucket: &str, key: &str, gcra: Gcra) -> Option<Decision> {
        let redis_key = format!("{}:rl:{bucket}:{key}", self.prefix);
        match self.eval(&redis_key, gcra, None).await {
            Ok(d) => Some(d),
            Err(cause) => {
                self.went_down(cause);
                None
            }
        }
    }

    /// Runs the script once (EVALSHA, and EVAL + SCRIPT LOAD when Redis does not know it), with
    /// `now_us` instead of Redis's clock when given.
    pub async fn eval(
        &self,
        redis_key: &str,
        gcra: Gcra,
        now_us: Option<u64>,
    ) -> Result<Decision, String> {
        self.eval_within(redis_key, gcra, now_us, CALL_TIMEOUT)
            .await
    }

    async fn eval_within(
        &self,
        redis_key: &str,
        gcra: Gcra,
        now_us: Option<u64>,
        timeout: Duration,
    ) -> Result<Decision, String> {
        let mut conn = self.manager.clone();
        let mut call = self.script.key(redis_key);
        call.arg(gcra.t_us).arg(gcra.tau_us);
        if let Some(now) = now_us {
            call.arg(now);
        }
        let reply: (i64, i64, i64) =
            match tokio::time::timeout(timeout, call.invoke_async(&mut conn)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(self.cause_of(&e)),
                Err(_) => {
                    return Err(format!("no answer within {} ms", timeout.as_millis()));
                }
            };
        Ok(match reply {
            (1, remaining, _) => Decision::Allowed {
                remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            },
            (_, _, wait_us) => Decision::Refused {
                wait: Duration::from_micros(u64::try_from(wait_us.max(0)).unwrap_or(0)),
            },
        })
    }

    fn went_down(&self, cause: String) {
        // One line per outage, not one per request: only the check that flips the state logs.
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(%cause, "Redis unreachable: rate limits are local until it answers again");
        }
        *self.cause.lock().expect("cause") = cause;
        self.lost.notify_one();
    }

    /// Runs the script on a key of its own: Redis answers checks, not just pings (a read-only
    /// replica or a full `maxmemory` answers PING but refuses the script).
    async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let probe = Gcra {
            t_us: 1000,
            tau_us: 0,
        };
        self.eval_within(&format!("{}:rl:probe", self.prefix), probe, None, timeout)
            .await
            .map(|_| ())
    }

    /// Pings Redis: every 2 s while it is used (so `/api/ready` is right even without traffic),
    /// every 0.5 s while it is not, and at once when a check finds it gone. Turns shared limits
    /// back on when it answers.
    pub async fn supervise(&self, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = if self.is_up() { PROBE_UP } else { PROBE_DOWN };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.lost.notified() => {
                    // Let the connection manager start its reconnect before asking again.
                    tokio::select! {
                        _ = tokio::time::sleep(PROBE_DOWN) => {}
                        _ = stop.changed() => return,
                    }
                }
                _ = stop.changed() => return,
            }
            // A failed call makes the connection manager start a new connection; a second try
            // waits for that one, so a Redis that is back is seen at the first probe.
            let timeout = CALL_TIMEOUT.max(CONNECT_TIMEOUT);
            let answer = match self.probe(timeout).await {
                Err(_) => self.probe(timeout).await,
                ok => ok,
            };
            match answer {
                Ok(()) => {
                    if !self.up.swap(true, Ordering::AcqRel) {
                        tracing::warn!("Redis answers again: rate limits are shared again");
                    }
                }
                Err(cause) => self.went_down(cause),
            }
        }
    }

    /// An error as a short cause for the log and `/api/ready`, never with the password.
    fn cause_of(&self, e: &redis::RedisError) -> String {
        let text = if e.is_connection_refusal() {
            "connection refused".to_string()
        } else if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connection_dropped() {
            "connection lost".to_string()
        } else {
            e.to_string()
        };
        scrub(&text, self.password.as_deref())
    }
}

/// `text` without `secret`, on one line and at most 200 characters.
fn scrub(text: &str, secret: Option<&str>) -> String {
    let mut s = text.replace(['\n', '\r'], " ");
    if let Some(p) = secret.filter(|p| !p.is_empty()) {
        s = s.replace(p, "***");
    }
    if s.chars().count() > 200 {
        s = s.chars().take(200).collect::<String>() + "…";
    }
    s
}
