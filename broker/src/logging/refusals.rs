//! Refused logins in the log, without letting a flood of them flood the log.
//!
//! Each refused login (bad proof, rate limit, handshake timeout, ...) is written as one WARN
//! line `login refused` with `transport`, `peer`, `terminal` (when the login named one) and
//! `reason` (the same snake_case label as `broker_login_failures_total{reason}`). At most
//! `per_interval` lines are written per interval; the refusals past that are counted, and the
//! first refusal (or [`RefusalLog::flush`]) after the interval writes one summary line
//! `login refusals not logged one by one` with `suppressed` (how many) and `reasons`
//! (`auth_failed=120,rate_limited=30`). Nothing is lost: every refusal is still counted in
//! the metric.
//!
//! Sans-IO: the caller passes the time, so tests drive the interval without sleeping.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The message of a single refusal line.
pub const REFUSED: &str = "login refused";
/// The message of the summary line.
pub const SUMMARY: &str = "login refusals not logged one by one";

/// Lines written per interval by default.
pub const DEFAULT_PER_INTERVAL: u32 = 20;
/// The default interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// What [`RefusalLog::decide`] says to write for one refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Write the refusal's own line (after the summary of the previous interval, if any).
    Log {
        /// The previous interval's suppressed refusals, to write first.
        summary: Option<Summary>,
    },
    /// Count it only.
    Suppress,
}

/// The refusals of one interval that were not written one by one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// How many.
    pub suppressed: u64,
    /// How many per reason.
    pub by_reason: BTreeMap<&'static str, u64>,
}

impl Summary {
    /// The `reasons` field: `reason=count` pairs, comma-separated, sorted by reason.
    pub fn reasons(&self) -> String {
        let pairs: Vec<String> = self
            .by_reason
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        pairs.join(",")
    }
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    logged: u32,
    suppressed: Summary,
}

/// The rate-limited refusal log (see module docs); shared by the comet's endpoints.
#[derive(Debug)]
pub struct RefusalLog {
    per_interval: u32,
    interval: Duration,
    window: Mutex<Window>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog::new(DEFAULT_PER_INTERVAL, DEFAULT_INTERVAL)
    }
}

impl RefusalLog {
    /// At most `per_interval` lines per `interval`.
    pub fn new(per_interval: u32, interval: Duration) -> RefusalLog {
        RefusalLog {
            per_interval,
            interval,
            window: Mutex::new(Window {
                started: None,
                logged: 0,
                suppressed: Summary::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether to write a refusal for `reason` at `now` (see module docs).
    pub fn decide(&self, now: Instant, reason: &'static str) -> Decision {
        let mut w = self.lock();
        let summary = Self::roll(&mut w, now, self.interval);
        if w.logged < self.per_interval {
            w.logged += 1;
            Decision::Log { summary }
        } else {
            w.suppressed.suppressed += 1;
            *w.suppressed.by_reason.entry(reason).or_default() += 1;
            // A summary due now is kept for the next line: the window just rolled, so
            // `logged` is 0 and this branch is not reached with one pending.
            Decision::Suppress
        }
    }

    /// Starts a new interval when the current one is over; returns its suppressed refusals.
    fn roll(w: &mut Window, now: Instant, interval: Duration) -> Option<Summary> {
        let over = w
            .started
            .is_none_or(|s| now.saturating_duration_since(s) >= interval);
        if !over {
            return None;
        }
        w.started = Some(now);
        w.logged = 0;
        let s = std::mem::take(&mut w.suppressed);
        (s.suppressed > 0).then_some(s)
    }

    /// The suppressed refusals of an interval that is over at `now` (for a periodic task, so
    /// the summary is written even when the flood stopped).
    pub fn flush(&self, now: Instant) -> Option<Summary> {
        let mut w = self.lock();
        let over = w
            .started
            .is_some_and(|s| now.saturating_duration_since(s) >= self.interval);
        if over && w.suppressed.suppressed > 0 {
            Self::roll(&mut w, now, self.interval)
        } else {
            None
        }
    }

    /// Decides and writes: the summary line (if due) and the refusal's own line.
    pub fn refused(
        &self,
        now: Instant,
        transport: &'static str,
        peer: SocketAddr,
        terminal: Option<&dyn Display>,
        reason: &'static str,
    ) {
        if let Decision::Log { summary } = self.decide(now, reason) {
            if let Some(s) = summary {
                self.write_summary(&s);
            }
            match terminal {
                Some(t) => {
                    tracing::warn!(transport, %peer, terminal = %t, reason, "{REFUSED}")
                }
                None => tracing::warn!(transport, %peer, reason, "{REFUSED}"),
            }
        }
    }

    /// Writes `summary` as the summary line.
    pub fn write_summary(&self, summary: &Summary) {
        tracing::warn!(
            suppressed = summary.suppressed,
            reasons = %summary.reasons(),
            interval_secs = self.interval.as_secs(),
            "{SUMMARY}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_up_to_the_budget_then_summarised() {
        let log = RefusalLog::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                log.decide(t0, "auth_failed"),
                Decision::Log { summary: None }
            );
        }
        for i in 0..100 {
            let reason = if i % 4 == 0 {
                "rate_limited"
            } else {
                "auth_failed"
            };
            assert_eq!(
                log.decide(t0 + Duration::from_millis(i), reason),
                Decision::Suppress
            );
        }
        assert_eq!(log.flush(t0 + Duration::from_secs(9)), None);
        let next = log.decide(t0 + Duration::from_secs(10), "auth_failed");
        let Decision::Log {
            summary: Some(summary),
        } = next
        else {
            panic!("{next:?}");
        };
        assert_eq!(summary.suppressed, 100);
        assert_eq!(summary.reasons(), "auth_failed=75,rate_limited=25");
        // The new interval has its budget again (one used above).
        assert!(matches!(
            log.decide(t0 + Duration::from_secs(11), "x"),
            Decision::Log { summary: None }
        ));
    }

    #[test]
    fn flush_writes_the_summary_after_the_flood_stops() {
        let log = RefusalLog::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        log.decide(t0, "auth_failed");
        log.decide(t0, "auth_failed");
        assert_eq!(log.flush(t0 + Duration::from_secs(5)), None);
        let s = log.flush(t0 + Duration::from_secs(10)).expect("a summary");
        assert_eq!((s.suppressed, s.reasons().as_str()), (1, "auth_failed=1"));
        assert_eq!(log.flush(t0 + Duration::from_secs(30)), None);
    }
}
