//! Reconnect delays: exponential backoff with "full jitter" and a cap.
//!
//! After the `n`-th consecutive failure (n = 0 for the first) the device waits a delay drawn
//! uniformly from `0..=min(cap, base * 2^n)` (the AWS architecture blog's "full jitter", also the
//! FreeRTOS backoffAlgorithm library). Spreading the whole interval keeps a fleet that lost its
//! broker at the same moment from reconnecting in lockstep. A successful login resets the count.

use crate::rng::Rng;

/// Parameters of the reconnect backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BackoffConfig {
    /// Upper bound of the first delay, in milliseconds.
    pub base_ms: u32,
    /// Upper bound no delay exceeds, in milliseconds.
    pub cap_ms: u32,
}

impl Default for BackoffConfig {
    /// 1 s base, 60 s cap.
    fn default() -> Self {
        BackoffConfig {
            base_ms: 1_000,
            cap_ms: 60_000,
        }
    }
}

/// Counts consecutive failures and draws the next delay.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
}

impl Backoff {
    /// A backoff with no failures yet.
    pub const fn new(config: BackoffConfig) -> Self {
        Backoff {
            config,
            failures: 0,
        }
    }

    /// Consecutive failures since the last [`reset`](Self::reset).
    pub const fn failures(&self) -> u32 {
        self.failures
    }

    /// The upper bound of the delay after `failures` consecutive failures:
    /// `min(cap, base * 2^failures)`.
    pub fn ceiling_ms(&self, failures: u32) -> u32 {
        let shifted = u64::from(self.config.base_ms)
            .checked_shl(failures.min(32))
            .unwrap_or(u64::MAX);
        shifted.min(u64::from(self.config.cap_ms)) as u32
    }

    /// Records a failure and returns the delay to wait before the next attempt, in milliseconds.
    pub fn next_delay_ms(&mut self, rng: &mut impl Rng) -> u32 {
        let ceiling = self.ceiling_ms(self.failures);
        self.failures = self.failures.saturating_add(1);
        rng.below_or_equal(ceiling)
    }

    /// Forgets the failures (after a successful login).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = Backoff::new(BackoffConfig {
            base_ms: 500,
            cap_ms: 10_000,
        });
        let ceilings: [u32; 7] = core::array::from_fn(|n| b.ceiling_ms(n as u32));
        assert_eq!(ceilings, [500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(b.ceiling_ms(200), 10_000);
    }

    #[test]
    fn delays_stay_within_full_jitter_bounds_and_use_the_whole_range() {
        let config = BackoffConfig {
            base_ms: 100,
            cap_ms: 1_600,
        };
        let mut rng = SplitMix64::new(3);
        for failures in 0..8u32 {
            let ceiling = Backoff::new(config).ceiling_ms(failures);
            let (mut low, mut high) = (u32::MAX, 0);
            for _ in 0..400 {
                let mut b = Backoff::new(config);
                for _ in 0..failures {
                    b.next_delay_ms(&mut rng);
                }
                let d = b.next_delay_ms(&mut rng);
                assert!(d <= ceiling, "delay {d} above ceiling {ceiling}");
                low = low.min(d);
                high = high.max(d);
            }
            // Full jitter spreads over the whole interval, not just its top half.
            assert!(low < ceiling / 4, "failures {failures}: min {low}");
            assert!(high > ceiling * 3 / 4, "failures {failures}: max {high}");
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut rng = SplitMix64::new(9);
        for _ in 0..5 {
            b.next_delay_ms(&mut rng);
        }
        assert_eq!(b.failures(), 5);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay_ms(&mut rng) <= 1_000);
    }
}
