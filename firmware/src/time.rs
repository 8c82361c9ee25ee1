//! Time as the sans-IO core sees it: milliseconds on a monotonic clock the caller owns.
//!
//! The core never reads a clock: every entry point takes `now`. The runner converts from
//! `embassy_time::Instant`; host tests use a fake clock.

/// A point on the caller's monotonic clock, in milliseconds since an arbitrary origin (boot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

impl Instant {
    /// The clock's origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant plus `ms` milliseconds (saturating at the far future).
    pub const fn plus_millis(self, ms: u64) -> Self {
        Instant(self.0.saturating_add(ms))
    }

    /// Milliseconds elapsed from `earlier` to `self`, or 0 if `earlier` is later.
    pub const fn millis_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The earlier of two optional deadlines (`None` means "no deadline").
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(u64::MAX - 1);
        assert_eq!(t.plus_millis(10).as_millis(), u64::MAX);
        assert_eq!(
            Instant::from_millis(5).millis_since(Instant::from_millis(9)),
            0
        );
        assert_eq!(
            Instant::from_millis(9).millis_since(Instant::from_millis(5)),
            4
        );
    }

    #[test]
    fn earliest_prefers_some_and_smaller() {
        let a = Some(Instant::from_millis(3));
        let b = Some(Instant::from_millis(7));
        assert_eq!(earliest(a, b), a);
        assert_eq!(earliest(None, b), b);
        assert_eq!(earliest(a, None), a);
        assert_eq!(earliest(None, None), None);
    }
}
