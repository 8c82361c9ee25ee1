//! [`Liveness`]: when the runner promises to be back, so a watchdog can tell a runner that is
//! waiting on purpose from one that hangs.
//!
//! Before every `.await` the [`Runner`](super::Runner) records how long that wait may last at
//! most: until the client's next deadline, or a transport operation's own timeout. A board's
//! watchdog task feeds the hardware watchdog only while [`Liveness::is_alive`]; a runner stuck
//! past its promise (plus [`LIVENESS_GRACE_MS`]) stops the feeding and the board resets. While
//! the client has nothing scheduled at all (closed by the application) the runner makes no
//! promise and counts as alive. Times are milliseconds on the runner's clock, kept in 32 bits
//! (wrapping; a promise reaches at most [`MAX_PROMISE_MS`] ahead), so this works on cores
//! without 64-bit atomics.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Slack on every promise: scheduling delay of the runner's task and of the watchdog task.
pub const LIVENESS_GRACE_MS: u64 = 2_000;
/// The farthest a promise reaches (about 6 days); a longer wait is promised this far, and the
/// runner renews the promise when it wakes.
pub const MAX_PROMISE_MS: u64 = 1 << 29;

/// The runner's latest promise. Share one between the runner
/// ([`Runner::with_liveness`](super::Runner::with_liveness)) and the board's watchdog task.
#[derive(Debug)]
pub struct Liveness {
    until_ms: AtomicU32,
    /// A promise is in force (false before the runner starts and while it waits without a
    /// deadline).
    armed: AtomicBool,
}

impl Liveness {
    /// No promise yet: alive.
    pub const fn new() -> Self {
        Liveness {
            until_ms: AtomicU32::new(0),
            armed: AtomicBool::new(false),
        }
    }

    /// The runner will be back within `within_ms` of `now_ms`.
    pub fn promise(&self, now_ms: u64, within_ms: u64) {
        let until = now_ms
            .wrapping_add(within_ms.min(MAX_PROMISE_MS))
            .wrapping_add(LIVENESS_GRACE_MS);
        // Truncation is the point: times wrap in 32 bits.
        self.until_ms.store(until as u32, Ordering::Relaxed);
        self.armed.store(true, Ordering::Release);
    }

    /// The runner waits for the application with nothing scheduled: no promise.
    pub fn waiting_without_deadline(&self) {
        self.armed.store(false, Ordering::Release);
    }

    /// True unless the runner is past its promise at `now_ms`.
    pub fn is_alive(&self, now_ms: u64) -> bool {
        if !self.armed.load(Ordering::Acquire) {
            return true;
        }
        let until = self.until_ms.load(Ordering::Relaxed);
        // Within 2^31 ms of each other, the sign of the wrapped difference orders them.
        (until.wrapping_sub(now_ms as u32) as i32) >= 0
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_until_the_promise_plus_grace_then_not() {
        let l = Liveness::new();
        assert!(l.is_alive(5_000_000), "no promise yet");
        l.promise(10_000, 3_000);
        assert!(l.is_alive(10_000));
        assert!(l.is_alive(13_000 + LIVENESS_GRACE_MS));
        assert!(!l.is_alive(13_001 + LIVENESS_GRACE_MS));
        l.waiting_without_deadline();
        assert!(l.is_alive(u64::MAX / 2), "no deadline: nothing to miss");
    }

    #[test]
    fn promises_wrap_with_the_32_bit_clock_and_are_capped() {
        let l = Liveness::new();
        let near_wrap = u64::from(u32::MAX) - 500;
        l.promise(near_wrap, 1_000);
        assert!(l.is_alive(near_wrap + 1_000));
        assert!(!l.is_alive(near_wrap + 1_001 + LIVENESS_GRACE_MS));
        l.promise(0, u64::MAX);
        assert!(l.is_alive(MAX_PROMISE_MS + LIVENESS_GRACE_MS));
        assert!(!l.is_alive(MAX_PROMISE_MS + LIVENESS_GRACE_MS + 1));
    }
}
