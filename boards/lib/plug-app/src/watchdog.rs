//! Feeding a board's hardware watchdog from the network task's progress.
//!
//! The SDK's runner records before every wait how long it may last
//! ([`Liveness`], given to [`crate::app::start`] through `AppConfig::liveness`). A board runs
//! [`feed_while_alive`] in a task of its own over its chip's watchdog (behind [`Feed`]): it
//! feeds while the runner keeps its promise and stops once the runner is late, so the chip
//! resets and reports [`ResetReason::Watchdog`](crate::reset::ResetReason::Watchdog) on the next
//! boot. A hang of the whole executor stops this task too and is caught the same way.
//!
//! Pick the watchdog timeout well above the feeding period (the boards use 8 s and 1 s): the
//! liveness grace already covers task scheduling, the timeout only has to cover one period.

use firmware::net::Liveness;

/// A hardware watchdog that has been started.
pub trait Feed {
    /// Restarts its countdown.
    fn feed(&mut self);
}

/// Whether to feed now: the runner is within its promise at `now_ms` (its clock, ms).
pub fn should_feed(liveness: &Liveness, now_ms: u64) -> bool {
    liveness.is_alive(now_ms)
}

/// Feeds `watchdog` every `period_ms` while [`should_feed`]; never returns. Run it in its own
/// task, started once the runner has its `Liveness`.
pub async fn feed_while_alive(mut watchdog: impl Feed, liveness: &Liveness, period_ms: u64) -> ! {
    loop {
        if should_feed(liveness, embassy_time::Instant::now().as_millis()) {
            watchdog.feed();
        }
        embassy_time::Timer::after_millis(period_ms).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware::net::LIVENESS_GRACE_MS;

    #[test]
    fn feeds_within_the_promise_and_stops_after_it() {
        let liveness = Liveness::new();
        assert!(should_feed(&liveness, 0), "before the runner starts");
        liveness.promise(1_000, 5_000);
        assert!(should_feed(&liveness, 6_000 + LIVENESS_GRACE_MS));
        assert!(
            !should_feed(&liveness, 6_001 + LIVENESS_GRACE_MS),
            "a runner past its promise gets no more food"
        );
    }
}
