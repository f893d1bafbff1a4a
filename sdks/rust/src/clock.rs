//! Time as the client sees it. Injectable so that tests (and applications with a trusted time
//! source of their own) can say what "now" is; everything that compares against token times or
//! waits out a server's `Retry-After` reads this clock, never `SystemTime::now()` directly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Any `Fn() -> SystemTime` is a clock: `.clock(move || SystemTime::now() - skew)`.
impl<F: Fn() -> SystemTime + Send + Sync + 'static> Clock for F {
    fn now(&self) -> SystemTime {
        self()
    }
}

/// Unix seconds of `t` (negative before 1970: a badly wrong clock is still ordered correctly).
pub(crate) fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The time at unix seconds `s`.
pub(crate) fn from_unix(s: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::from_secs(s.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_round_trips_on_both_sides_of_the_epoch() {
        for s in [-86_400, 0, 1, 1_700_000_000] {
            assert_eq!(unix(from_unix(s)), s);
        }
    }

    #[test]
    fn closures_are_clocks() {
        let fixed = from_unix(42);
        let clock: Box<dyn Clock> = Box::new(move || fixed);
        assert_eq!(unix(clock.now()), 42);
    }
}
