//! Reconnect delays read from a host TAP board's log, and the check that they follow the
//! device SDK's reconnect backoff (`broker-away`, docs/hil.md).
//!
//! The board logs with millisecond timestamps (`[2026-12-03T16:07:00.123Z WARN  ...]`). The SDK
//! logs `disconnected, endpoint N` when a session or a login attempt fails and then waits its
//! backoff delay before it logs `login: attempt N to endpoint M`; the time between the two lines
//! is the delay it drew. After the `k`-th consecutive failure (k = 0 for the first) the delay is
//! drawn uniformly from `0..=min(cap, base * 2^k)` ("full jitter", `firmware/src/backoff.rs`),
//! and a successful login starts the count again.
//!
//! [`reconnect_delays`] pairs the lines into [`Delay`]s; [`check_backoff`] holds them against
//! the ceilings of [`Backoff`].

use std::time::Duration;

/// The backoff a board is configured with (the SDK's `ClientConfig::default()`: `base_ms`
/// 1,000, `cap_ms` 60,000; the host TAP board keeps the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first delay.
    pub base: Duration,
    /// Upper bound of every delay.
    pub cap: Duration,
}

/// The SDK's default backoff, which every board of the virtual rigs uses.
pub const SDK_DEFAULT: Backoff = Backoff {
    base: Duration::from_millis(1_000),
    cap: Duration::from_millis(60_000),
};

/// Scheduling slack allowed over a ceiling (the board's executor, the log's clock reads).
pub const SLACK: Duration = Duration::from_millis(150);

/// A delay within this fraction of its ceiling counts as "at the ceiling" for the jitter check.
const AT_CEILING: f64 = 0.95;

impl Backoff {
    /// The largest delay after `failures` consecutive failures: `min(cap, base * 2^failures)`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// Milliseconds since midnight (UTC) of a log line that starts with `[<RFC 3339 time>...`,
/// e.g. `[2026-12-03T16:07:00.123Z INFO ...]`; `None` for a line without one.
pub fn line_time_ms(line: &str) -> Option<u64> {
    let rest = line.strip_prefix('[')?;
    let time = rest.split_once('T')?.1;
    let hh: u64 = time.get(0..2)?.parse().ok()?;
    let mm: u64 = time.get(3..5)?.parse().ok()?;
    let ss: u64 = time.get(6..8)?.parse().ok()?;
    if time.get(8..9)? != "." {
        return None;
    }
    let ms: u64 = time.get(9..12)?.parse().ok()?;
    Some(((hh * 60 + mm) * 60 + ss) * 1_000 + ms)
}

/// One reconnect delay read from a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// Consecutive failures before it, minus one (0: the first failure since the last login
    /// that went online).
    pub failures: u32,
    /// From the `disconnected` line to the next `login: attempt` line.
    pub waited: Duration,
}

/// The delay before each login attempt that followed a failure, in log order: the time from
/// a `disconnected` line to the next `login: attempt` line, numbered by consecutive failures
/// (an `online:` line starts the count again). A midnight between the two lines is allowed
/// for; lines without a timestamp are skipped.
pub fn reconnect_delays(log: &str) -> Vec<Delay> {
    const DAY_MS: u64 = 24 * 60 * 60 * 1_000;
    let mut failed_at: Option<u64> = None;
    let mut failures = 0;
    let mut delays = Vec::new();
    for line in log.lines() {
        let Some(at) = line_time_ms(line) else {
            continue;
        };
        if line.contains("online: session") {
            failures = 0;
        } else if line.contains("disconnected, endpoint") {
            failed_at = Some(at);
        } else if line.contains("login: attempt")
            && let Some(failed) = failed_at.take()
        {
            delays.push(Delay {
                failures,
                waited: Duration::from_millis((at + DAY_MS - failed) % DAY_MS),
            });
            failures += 1;
        }
    }
    delays
}

/// Checks reconnect delays against `backoff`: a delay after `k + 1` consecutive failures is
/// at most `ceiling(k)` plus [`SLACK`], and they are jittered: with two or more, not every
/// one lies within 5% of its ceiling (a board that waits the ceiling each time would).
/// Returns the delays with their ceilings, for the report.
pub fn check_backoff(delays: &[Delay], backoff: Backoff) -> Result<String, String> {
    if delays.is_empty() {
        return Err("no reconnect delay in the board's log".into());
    }
    let mut shown = Vec::new();
    let mut at_ceiling = 0;
    for (n, delay) in delays.iter().enumerate() {
        let ceiling = backoff.ceiling(delay.failures);
        let waited = delay.waited;
        shown.push(format!(
            "{} ms (<= {})",
            waited.as_millis(),
            ceiling.as_millis()
        ));
        if waited > ceiling + SLACK {
            return Err(format!(
                "reconnect delay {} is {} ms, over its ceiling {} ms (delays: {})",
                n + 1,
                waited.as_millis(),
                ceiling.as_millis(),
                shown.join(", ")
            ));
        }
        if waited.as_secs_f64() >= ceiling.as_secs_f64() * AT_CEILING {
            at_ceiling += 1;
        }
    }
    if delays.len() >= 2 && at_ceiling == delays.len() {
        return Err(format!(
            "every reconnect delay is at its ceiling, no jitter (delays: {})",
            shown.join(", ")
        ));
    }
    Ok(shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[2026-12-03T16:07:00.100Z INFO  firmware::client] online: session 7
[2026-12-03T16:07:06.200Z WARN  firmware::client] disconnected, endpoint 0
[2026-12-03T16:07:06.900Z INFO  firmware::client] login: attempt 2 to endpoint 0
no timestamp: login: attempt 9
[2026-12-03T16:07:16.900Z WARN  firmware::client] disconnected, endpoint 0
[2026-12-03T16:07:18.400Z INFO  firmware::client] login: attempt 3 to endpoint 0
[2026-12-03T16:07:19.000Z INFO  firmware::client] login: attempt 4 to endpoint 0
";

    #[test]
    fn times_are_read_to_the_millisecond() {
        assert_eq!(
            line_time_ms("[2026-12-03T01:02:03.456Z INFO x] y"),
            Some(3_723_456)
        );
        assert_eq!(line_time_ms("[2026-12-03T01:02:03Z INFO x] y"), None);
        assert_eq!(line_time_ms("plain line"), None);
    }

    #[test]
    fn delays_pair_each_failure_with_the_next_attempt() {
        let waited: Vec<(u32, u128)> = reconnect_delays(LOG)
            .iter()
            .map(|d| (d.failures, d.waited.as_millis()))
            .collect();
        assert_eq!(waited, vec![(0, 700), (1, 1_500)]);
        // A login that went online starts the count again.
        let again = format!(
            "{LOG}[2026-12-03T16:07:19.500Z INFO  x] online: session 8\n\
             [2026-12-03T16:08:00.000Z WARN  x] disconnected, endpoint 0\n\
             [2026-12-03T16:08:00.250Z INFO  x] login: attempt 5 to endpoint 0\n"
        );
        let last = *reconnect_delays(&again).last().unwrap();
        assert_eq!((last.failures, last.waited.as_millis()), (0, 250));
        let across_midnight = "[2026-12-03T23:59:59.900Z W] disconnected, endpoint 0\n\
                               [2026-12-04T00:00:00.300Z I] login: attempt 2 to endpoint 0\n";
        assert_eq!(
            reconnect_delays(across_midnight)[0].waited,
            Duration::from_millis(400)
        );
    }

    #[test]
    fn ceilings_double_then_cap() {
        let ceilings: Vec<u128> = (0..8).map(|k| SDK_DEFAULT.ceiling(k).as_millis()).collect();
        assert_eq!(
            ceilings,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(SDK_DEFAULT.ceiling(40), SDK_DEFAULT.cap);
    }

    #[test]
    fn delays_over_a_ceiling_or_without_jitter_fail() {
        let run = |ms: &[u64]| -> Vec<Delay> {
            ms.iter()
                .enumerate()
                .map(|(k, ms)| Delay {
                    failures: k as u32,
                    waited: Duration::from_millis(*ms),
                })
                .collect()
        };
        assert!(check_backoff(&run(&[700, 1_500]), SDK_DEFAULT).is_ok());
        // The second delay may be up to 2 s, not more.
        let over = check_backoff(&run(&[700, 2_400]), SDK_DEFAULT).unwrap_err();
        assert!(over.contains("over its ceiling 2000 ms"), "{over}");
        // A board that always waits the ceiling is not jittered.
        let fixed = check_backoff(&run(&[1_000, 2_000, 4_000]), SDK_DEFAULT).unwrap_err();
        assert!(fixed.contains("no jitter"), "{fixed}");
        assert!(check_backoff(&[], SDK_DEFAULT).is_err());
    }
}
