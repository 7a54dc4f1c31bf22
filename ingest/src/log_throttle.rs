//! Throttles for log lines that a flood of requests would repeat.
//!
//! TradingView sends thousands of webhooks within a second at a bar close.
//! When something fails for all of them at once (the database is down, the
//! spool is full, strangers' bad tokens hold the budget for unverified
//! tokens), a WARN or ERROR line per request would write thousands of lines
//! a second: CPU on a small box, disk, a log shipper's bill, and the one
//! line an operator needs buried among identical ones. So each such line
//! has a [`LogThrottle`] of its own, one per call site and kind of event
//! (never per token or address: nothing from the request picks a
//! throttle, so a stranger cannot make room for more lines). The first
//! occurrence is logged at once; further ones within the window are only
//! counted; the next line after the window carries that count as
//! `suppressed`, so every occurrence is either a line or part of a later
//! line's count. The exact totals are in `/metrics` regardless.
//!
//! The hot path is two atomic operations and no allocation or lock; the
//! caller passes the time in, so tests drive the window without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The window of [`LogThrottle`] unless configured otherwise
/// (`INGEST_LOG_REPEAT_WINDOW`).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// Whether one occurrence of a repeated event is logged: the first one, and
/// the first one after each window; the others are counted.
#[derive(Debug)]
pub struct LogThrottle {
    /// Times are kept as nanoseconds since this instant, to fit an atomic.
    origin: Instant,
    window: u64,
    /// When the next occurrence may be logged (nanoseconds since `origin`).
    next: AtomicU64,
    /// Occurrences counted and not logged since the last logged one.
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub fn new(window: Duration) -> Self {
        Self {
            origin: Instant::now(),
            window: nanos(window),
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// One occurrence at `now`: `Some(suppressed)` when it is to be logged,
    /// with how many occurrences were counted instead since the last logged
    /// one; `None` when it was counted.
    ///
    /// Under concurrency exactly one caller per window logs; a count that
    /// lands while another caller opens the next window goes to that
    /// window's line, so the counts always add up.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let at = nanos(now.saturating_duration_since(self.origin));
        let next = self.next.load(Ordering::Acquire);
        if at >= next
            && self
                .next
                .compare_exchange(
                    next,
                    at.saturating_add(self.window),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The throttled lines of the webhook path, one throttle per call site and
/// kind, all with the same window.
#[derive(Debug)]
pub struct RepeatedLines {
    /// "The budget for unverified tokens is in use; answered 503".
    pub unverified_busy: LogThrottle,
    /// "Spool refused a webhook", by [`crate::spool_admission::Refused::label`].
    spool_refused: [LogThrottle; 3],
    /// "Database path failed", by kind of failure (`App::db_failed`).
    db_failed: [LogThrottle; 4],
    /// "The database raised on this alert; answered 500".
    pub alert_failed: LogThrottle,
    /// "`ingest_signal` accepted without a signal id".
    pub missing_signal_id: LogThrottle,
    /// "`ingest_signal` returned an outcome this edge does not know".
    pub unknown_outcome: LogThrottle,
}

impl RepeatedLines {
    pub fn new(window: Duration) -> Self {
        Self {
            unverified_busy: LogThrottle::new(window),
            spool_refused: std::array::from_fn(|_| LogThrottle::new(window)),
            db_failed: std::array::from_fn(|_| LogThrottle::new(window)),
            alert_failed: LogThrottle::new(window),
            missing_signal_id: LogThrottle::new(window),
            unknown_outcome: LogThrottle::new(window),
        }
    }

    /// The throttle of a spool refusal with this label: a full spool, a
    /// stranger's limit and a failing disk are separate lines, so one never
    /// hides the other.
    pub fn spool_refused(&self, label: &str) -> &LogThrottle {
        match label {
            "spool_full" => &self.spool_refused[0],
            "spool_limited" => &self.spool_refused[1],
            _ => &self.spool_refused[2],
        }
    }

    /// The throttle of a database failure of this kind (a timeout and a
    /// refused connection are separate lines).
    pub fn db_failed(&self, kind: &str) -> &LogThrottle {
        match kind {
            "timeout" => &self.db_failed[0],
            "unreachable" => &self.db_failed[1],
            "status" => &self.db_failed[2],
            _ => &self.db_failed[3],
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn the_first_occurrence_is_logged_and_the_rest_of_its_window_counted() {
        let throttle = LogThrottle::new(WINDOW);
        let start = Instant::now();
        assert_eq!(throttle.admit(start), Some(0));
        for ms in [0, 1, 500, 9_999] {
            assert_eq!(throttle.admit(start + Duration::from_millis(ms)), None);
        }
        // The window has passed: logged, with the exact count.
        assert_eq!(throttle.admit(start + WINDOW), Some(4));
        // A new window opened there.
        assert_eq!(
            throttle.admit(start + WINDOW + Duration::from_secs(1)),
            None
        );
        assert_eq!(throttle.admit(start + WINDOW * 3), Some(1));
        // Nothing suppressed since: the next line after a quiet window says 0.
        assert_eq!(throttle.admit(start + WINDOW * 5), Some(0));
    }

    #[test]
    fn a_late_caller_with_an_older_time_is_counted() {
        let throttle = LogThrottle::new(WINDOW);
        let start = Instant::now();
        assert_eq!(throttle.admit(start + WINDOW), Some(0));
        assert_eq!(throttle.admit(start), None);
        assert_eq!(throttle.admit(start + WINDOW * 2), Some(1));
    }

    #[test]
    fn concurrent_callers_in_one_window_log_once_and_are_all_counted() {
        let throttle = Arc::new(LogThrottle::new(WINDOW));
        let start = Instant::now();
        let threads = 8;
        let each = 10_000;
        let logged: Vec<Vec<u64>> = (0..threads)
            .map(|_| {
                let throttle = Arc::clone(&throttle);
                std::thread::spawn(move || {
                    (0..each)
                        .filter_map(|i| throttle.admit(start + Duration::from_micros(i)))
                        .collect()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().expect("a thread"))
            .collect();
        let lines: Vec<u64> = logged.into_iter().flatten().collect();
        assert_eq!(lines.len(), 1, "one line in the window");
        assert_eq!(lines[0], 0, "the first says nothing was held back");
        assert_eq!(
            throttle.admit(start + WINDOW),
            Some(threads * each - 1),
            "the summary counts every other occurrence"
        );
    }

    #[test]
    fn concurrent_callers_across_windows_add_up() {
        let window = Duration::from_millis(10);
        let throttle = Arc::new(LogThrottle::new(window));
        let start = Instant::now();
        let threads: u64 = 8;
        let each: u64 = 20_000;
        // Each thread walks through 2 s of fake time: 200 windows.
        let logged: Vec<Vec<u64>> = (0..threads)
            .map(|_| {
                let throttle = Arc::clone(&throttle);
                std::thread::spawn(move || {
                    (0..each)
                        .filter_map(|i| throttle.admit(start + Duration::from_micros(i * 100)))
                        .collect()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().expect("a thread"))
            .collect();
        let lines: Vec<u64> = logged.into_iter().flatten().collect();
        let last = throttle
            .admit(start + Duration::from_hours(1))
            .expect("logged");
        let total = threads * each;
        assert_eq!(
            lines.len() as u64 + lines.iter().sum::<u64>() + last,
            total,
            "every occurrence is a line or in a line's count"
        );
        // At most one line per window opened, plus the first.
        assert!(lines.len() <= 201, "{} lines for 200 windows", lines.len());
    }

    #[test]
    fn kinds_have_throttles_of_their_own() {
        let lines = RepeatedLines::new(WINDOW);
        let now = Instant::now();
        assert_eq!(lines.db_failed("timeout").admit(now), Some(0));
        assert_eq!(lines.db_failed("unreachable").admit(now), Some(0));
        assert_eq!(lines.db_failed("timeout").admit(now), None);
        assert_eq!(lines.spool_refused("spool_full").admit(now), Some(0));
        assert_eq!(lines.spool_refused("spool_failed").admit(now), Some(0));
        assert_eq!(lines.spool_refused("spool_limited").admit(now), Some(0));
        assert_eq!(lines.unverified_busy.admit(now), Some(0));
        assert_eq!(lines.unverified_busy.admit(now), None);
    }
}
