//! HTTP: what an answer means for the client, and how long to leave a busy server alone.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::status::OfflineReason;

/// The longest any server answer can make the client wait before asking again: a misconfigured
/// `Retry-After` must not silence the client for days.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The wait after a 429 that says no `Retry-After` (the server's limits are per minute).
const DEFAULT_429_WAIT: Duration = Duration::from_secs(60);
/// The first wait after a 5xx without `Retry-After`; each further one doubles, up to
/// `MAX_5XX_WAIT`.
const FIRST_5XX_WAIT: Duration = Duration::from_secs(5);
const MAX_5XX_WAIT: Duration = Duration::from_secs(300);

/// Why a request brought no 2xx answer, sorted by what the client does next.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 429 or 5xx: come back later.
    Busy {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// A problem+json 4xx from the server: the request itself was refused.
    Problem {
        status: u16,
        code: String,
        detail: String,
        /// `Retry-After` as sent (not capped: a churn budget can be spent for weeks).
        retry_after: Option<Duration>,
    },
    /// No usable answer.
    Failed(OfflineReason),
}

#[derive(Deserialize)]
struct Problem {
    code: String,
    #[serde(default)]
    detail: String,
}

/// Sends a request: the body of a 2xx answer, else why there is none.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    now: SystemTime,
) -> Result<Vec<u8>, Failure> {
    let res = req
        .send()
        .await
        .map_err(|e| Failure::Failed(transport(&e)))?;
    let status = res.status().as_u16();
    let retry_after = retry_after(res.headers(), now);
    let body = res
        .bytes()
        .await
        .map_err(|e| Failure::Failed(transport(&e)))?;
    classify(status, retry_after, body.to_vec())
}

fn classify(status: u16, retry_after: Option<Duration>, body: Vec<u8>) -> Result<Vec<u8>, Failure> {
    Err(match status {
        200..=299 => return Ok(body),
        429 | 500..=599 => Failure::Busy {
            status,
            retry_after: retry_after.map(|d| d.min(MAX_BACKOFF)),
        },
        // Only a problem document with a `code` is the server refusing the request; any other
        // page (a captive portal's login, a proxy's error) is not an answer from it at all.
        _ => match serde_json::from_slice::<Problem>(&body) {
            Ok(p) => Failure::Problem {
                status,
                code: p.code,
                detail: p.detail,
                retry_after,
            },
            Err(_) => Failure::Failed(OfflineReason::UnexpectedAnswer(format!(
                "HTTP {status} without a problem document"
            ))),
        },
    })
}

/// Decodes a 2xx body; anything else is not an answer from the server.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, OfflineReason> {
    serde_json::from_slice(body)
        .map_err(|e| OfflineReason::UnexpectedAnswer(format!("unexpected body: {e}")))
}

fn transport(e: &reqwest::Error) -> OfflineReason {
    if e.is_timeout() {
        return OfflineReason::TimedOut;
    }
    // reqwest's own message is terse ("error sending request"); the cause says what happened.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    OfflineReason::Unreachable(text)
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3), as the server sent it:
/// `classify` caps what a busy server asks for at `MAX_BACKOFF`, not what a refusal says (a
/// churn budget can be spent for weeks).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    Some(match v.parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    })
}

/// How long to leave the server alone after a 429/5xx: what it asked for, else a minute for 429
/// and a doubling, jittered wait for the `failures`-th 5xx in a row (so many clients that saw
/// the same outage do not come back in step).
pub(crate) fn busy_wait(status: u16, retry_after: Option<Duration>, failures: u32) -> Duration {
    if let Some(d) = retry_after {
        return d;
    }
    if status == 429 {
        return DEFAULT_429_WAIT;
    }
    let doubled = FIRST_5XX_WAIT.saturating_mul(1 << failures.saturating_sub(1).min(16));
    jittered(doubled.min(MAX_5XX_WAIT), 0.5)
}

/// A uniformly random duration in `[d × low, d]`.
pub(crate) fn jittered(d: Duration, low: f64) -> Duration {
    d.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), low..=1.0))
}

/// When the client may ask again after a busy answer: a window `[set_at, retry_at)` on the
/// client's clock. A clock set back before `set_at` ends the window rather than stretching it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub failures: u32,
    pub set_at: SystemTime,
    pub retry_at: SystemTime,
}

impl Backoff {
    pub fn after(
        previous: Option<Backoff>,
        status: u16,
        retry_after: Option<Duration>,
        now: SystemTime,
    ) -> Backoff {
        let failures = previous.map_or(0, |b| b.failures) + 1;
        Backoff {
            failures,
            set_at: now,
            retry_at: now + busy_wait(status, retry_after, failures),
        }
    }

    pub fn holds(&self, now: SystemTime) -> bool {
        now >= self.set_at && now < self.retry_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_busy_waits_are_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers("42"), now),
            Some(Duration::from_secs(42))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            retry_after(&headers(&later), now),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(retry_after(&headers(&past), now), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&headers("999999999"), now),
            Some(Duration::from_secs(999_999_999))
        );
        // A busy server's wait is capped; a refusal's is passed on as sent.
        assert!(matches!(
            classify(503, Some(Duration::from_secs(999_999_999)), vec![]),
            Err(Failure::Busy {
                retry_after: Some(MAX_BACKOFF),
                ..
            })
        ));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn busy_waits_follow_the_server_else_back_off_exponentially_with_jitter() {
        assert_eq!(
            busy_wait(429, Some(Duration::from_secs(7)), 1),
            Duration::from_secs(7)
        );
        assert_eq!(
            busy_wait(503, Some(Duration::from_secs(7)), 9),
            Duration::from_secs(7)
        );
        assert_eq!(busy_wait(429, None, 1), DEFAULT_429_WAIT);
        for (failures, full) in [(1, 5), (2, 10), (3, 20), (7, 300), (40, 300)] {
            let w = busy_wait(500, None, failures);
            let full = Duration::from_secs(full);
            assert!(w <= full && w >= full / 2, "{failures}: {w:?}");
        }
    }

    #[test]
    fn a_backoff_window_counts_failures_and_ends_if_the_clock_goes_back() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let b = Backoff::after(None, 429, Some(Duration::from_secs(30)), t0);
        assert_eq!(b.failures, 1);
        assert!(b.holds(t0));
        assert!(b.holds(t0 + Duration::from_secs(29)));
        assert!(!b.holds(t0 + Duration::from_secs(30)));
        assert!(!b.holds(t0 - Duration::from_secs(1)));
        assert_eq!(Backoff::after(Some(b), 500, None, t0).failures, 2);
    }

    #[test]
    fn answers_are_sorted_by_what_the_client_does_next() {
        assert!(matches!(classify(200, None, b"{}".to_vec()), Ok(b) if b == b"{}"));
        assert!(matches!(
            classify(429, Some(Duration::from_secs(3)), vec![]),
            Err(Failure::Busy {
                status: 429,
                retry_after: Some(_)
            })
        ));
        assert!(matches!(
            classify(502, None, b"<html>".to_vec()),
            Err(Failure::Busy { status: 502, .. })
        ));
        let problem = br#"{"code":"LICENSE_REVOKED","detail":"revoked","status":403}"#;
        assert!(matches!(
            classify(403, None, problem.to_vec()),
            Err(Failure::Problem { status: 403, ref code, .. }) if code == "LICENSE_REVOKED"
        ));
        assert!(matches!(
            classify(403, None, b"<html>captive portal</html>".to_vec()),
            Err(Failure::Failed(OfflineReason::UnexpectedAnswer(_)))
        ));
    }
}
