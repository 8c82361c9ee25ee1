//! Anti-replay window for DATA packet counters (docs/protocol.md section 3, "Replay window").
//!
//! A receiver keeps the highest counter it accepted and a 64-bit bitmap of the 64 counters below
//! it (bit `i` = counter `highest - 1 - i`). Checking and recording are split: the session calls
//! [`ReplayWindow::check`] before decrypting (cheap rejection of old or seen counters) and
//! [`ReplayWindow::accept`] only after the packet authenticated, so a forged packet never moves the
//! window.

/// Number of counters below the highest that the window remembers.
pub const WINDOW: u64 = 64;

/// Why a counter is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReplayError {
    /// The counter was already accepted.
    Seen,
    /// The counter is more than [`WINDOW`] below the highest accepted one.
    TooOld,
}

/// Sliding anti-replay window (RFC 4303 section 3.4.3 style, highest + bitmap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplayWindow {
    /// Highest accepted counter, `None` before the first packet.
    highest: Option<u64>,
    /// Bit `i` set: counter `highest - 1 - i` was accepted.
    bitmap: u64,
}

impl ReplayWindow {
    /// An empty window: any counter is new.
    pub const fn new() -> Self {
        Self {
            highest: None,
            bitmap: 0,
        }
    }

    /// The highest counter accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Whether `counter` would be accepted. Changes nothing.
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        let Some(high) = self.highest else {
            return Ok(());
        };
        if counter > high {
            return Ok(());
        }
        if counter == high {
            return Err(ReplayError::Seen);
        }
        let back = high - counter; // 1..=high
        if back > WINDOW {
            return Err(ReplayError::TooOld);
        }
        if self.bitmap & (1u64 << (back - 1)) != 0 {
            Err(ReplayError::Seen)
        } else {
            Ok(())
        }
    }

    /// Records `counter` as seen; call only after the packet authenticated. Re-checks, so a
    /// counter is never accepted twice even if the caller skipped [`ReplayWindow::check`].
    pub fn accept(&mut self, counter: u64) -> Result<(), ReplayError> {
        self.check(counter)?;
        match self.highest {
            None => {
                self.highest = Some(counter);
                self.bitmap = 0;
            }
            Some(high) if counter > high => {
                let shift = counter - high;
                // The old highest becomes bit `shift - 1`; everything shifts up by `shift`.
                self.bitmap = if shift > WINDOW {
                    0
                } else if shift == WINDOW {
                    1u64 << (WINDOW - 1)
                } else {
                    (self.bitmap << shift) | (1u64 << (shift - 1))
                };
                self.highest = Some(counter);
            }
            Some(high) => {
                let back = high - counter;
                self.bitmap |= 1u64 << (back - 1);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_packet_any_counter() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(0), Ok(()));
        w.accept(0).unwrap();
        assert_eq!(w.check(0), Err(ReplayError::Seen));
        assert_eq!(w.accept(0), Err(ReplayError::Seen));
        assert_eq!(w.highest(), Some(0));
    }

    #[test]
    fn out_of_order_within_window() {
        let mut w = ReplayWindow::new();
        w.accept(10).unwrap();
        w.accept(5).unwrap();
        assert_eq!(w.check(5), Err(ReplayError::Seen));
        assert_eq!(w.check(6), Ok(()));
        w.accept(12).unwrap();
        assert_eq!(w.check(10), Err(ReplayError::Seen));
        assert_eq!(w.check(11), Ok(()));
        assert_eq!(w.check(5), Err(ReplayError::Seen));
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::new();
        w.accept(100).unwrap();
        // 64 below the highest is the oldest remembered; 65 below is too old.
        assert_eq!(w.check(36), Ok(()));
        assert_eq!(w.check(35), Err(ReplayError::TooOld));
        w.accept(36).unwrap();
        assert_eq!(w.check(36), Err(ReplayError::Seen));
        // Moving up by exactly 64 keeps the old highest at the last bit.
        w.accept(164).unwrap();
        assert_eq!(w.check(100), Err(ReplayError::Seen));
        assert_eq!(w.check(101), Ok(()));
        assert_eq!(w.check(99), Err(ReplayError::TooOld));
        // Moving up by more than 64 forgets everything below.
        w.accept(1000).unwrap();
        assert_eq!(w.check(999), Ok(()));
        assert_eq!(w.check(936), Ok(()));
        assert_eq!(w.check(935), Err(ReplayError::TooOld));
    }

    #[test]
    fn check_does_not_record() {
        let w = ReplayWindow::new();
        assert_eq!(w.check(3), Ok(()));
        assert_eq!(w, ReplayWindow::new());
    }

    #[test]
    fn matches_a_naive_model() {
        // Compare against a set-based model on a pseudo-random sequence.
        extern crate std;
        use std::collections::BTreeSet;
        let mut w = ReplayWindow::new();
        let mut seen: BTreeSet<u64> = BTreeSet::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let high: Option<u64> = seen.iter().next_back().copied();
            let c = match high {
                Some(h) => (h + 8).saturating_sub(x % 90),
                None => x % 4,
            };
            let expect = match high {
                None => Ok(()),
                Some(h) if c > h => Ok(()),
                Some(h) if h - c > WINDOW => Err(ReplayError::TooOld),
                Some(_) if seen.contains(&c) => Err(ReplayError::Seen),
                Some(_) => Ok(()),
            };
            assert_eq!(w.check(c), expect, "counter {c}");
            if expect.is_ok() {
                w.accept(c).unwrap();
                seen.insert(c);
            }
        }
    }
}
