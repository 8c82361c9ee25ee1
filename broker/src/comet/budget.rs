//! How much work one device session may ask of the broker: a token bucket on the frames that
//! cause work (Send, Upload, Request), a bound on the Requests in flight, and (in
//! [`super::worker`]) a bound on the Sends and Uploads waiting to be applied.
//!
//! [`TokenBucket`] is sans-IO: the caller passes the time in, so its arithmetic is tested
//! without clocks. [`WorkLimits`] carries the configured values (`[limits]`) to each session's
//! [`super::worker::FrameWorker`], which owns one bucket and one Request semaphore per session.
//! A device terminal has one live session at a time (a new login replaces the old one), so the
//! session's bucket is the terminal's rate.

/// The per-session work limits from `[limits]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkLimits {
    /// Sends and Uploads waiting for the session's worker (`max_queued_frames_per_session`).
    pub queued_frames: usize,
    /// Device Requests in flight (`max_requests_in_flight_per_session`).
    pub requests_in_flight: usize,
    /// Work frames per second, sustained (`frames_per_sec_per_terminal`).
    pub frames_per_sec: u32,
    /// Work frames allowed in a burst (`frame_burst_per_terminal`).
    pub frame_burst: u32,
}

/// The config keys of these limits, which are also their `limit` metric labels.
pub const LIMIT_KEYS: [&str; 3] = [
    "max_queued_frames_per_session",
    "max_requests_in_flight_per_session",
    "frames_per_sec_per_terminal",
];

/// A token bucket: holds up to `burst` tokens, refilled at `rate` tokens per second; each
/// admitted event takes one. Time is milliseconds on any monotonic clock the caller chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// Refill, milli-tokens per millisecond (= tokens per second).
    rate: u64,
    /// Capacity in milli-tokens.
    cap: u64,
    /// Milli-tokens now.
    tokens: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens (at least 1) refilled at `rate_per_sec` (at least 1).
    pub fn new(rate_per_sec: u32, burst: u32, now_ms: u64) -> TokenBucket {
        let cap = u64::from(burst.max(1)) * 1000;
        TokenBucket {
            rate: u64::from(rate_per_sec.max(1)),
            cap,
            tokens: cap,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.cap);
        // A clock read earlier than the last one never takes time back.
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Takes one token at `now_ms`; `false` (nothing taken) when the bucket is empty.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now_ms` (it then holds no information and may be
    /// forgotten).
    pub fn is_full_at(&self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            >= self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_admits_its_burst_then_refuses() {
        let mut b = TokenBucket::new(10, 3, 5_000);
        assert!(b.try_take(5_000));
        assert!(b.try_take(5_000));
        assert!(b.try_take(5_000));
        assert!(!b.try_take(5_000), "burst of 3 used up");
        assert!(!b.try_take(5_099), "99 ms at 10/s is under one token");
        assert!(b.try_take(5_100), "100 ms at 10/s is one token");
        assert!(!b.try_take(5_100));
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let mut b = TokenBucket::new(1000, 2, 0);
        assert!(b.try_take(0) && b.try_take(0));
        // An hour idle still only refills the burst.
        let later = 3_600_000;
        assert!(b.is_full_at(later));
        assert!(b.try_take(later) && b.try_take(later));
        assert!(!b.try_take(later));
    }

    #[test]
    fn the_sustained_rate_is_the_configured_one() {
        let mut b = TokenBucket::new(50, 10, 0);
        let mut admitted = 0;
        // One attempt every millisecond for 10 s.
        for ms in 0..10_000 {
            if b.try_take(ms) {
                admitted += 1;
            }
        }
        // The burst plus 50/s over 10 s (the last partial token not counted).
        assert!((509..=510).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let mut b = TokenBucket::new(1, 1, 10_000);
        assert!(b.try_take(10_000));
        assert!(!b.try_take(5_000));
        assert!(!b.try_take(10_999));
        assert!(b.try_take(11_000));
    }

    #[test]
    fn zero_rate_or_burst_are_treated_as_one() {
        let mut b = TokenBucket::new(0, 0, 0);
        assert!(b.try_take(0));
        assert!(!b.try_take(999));
        assert!(b.try_take(1000));
    }
}
