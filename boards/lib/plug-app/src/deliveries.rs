//! Counts the messages (Delivers) the plug application receives, so a test can tell that a
//! broadcast reached a board exactly once.
//!
//! The SDK already drops the Delivers it knows to be repeats (a `msg_id` at or below the highest
//! one taken, redelivered after a reconnect) before the application sees them. [`Deliveries`]
//! counts what does reach the application, and counts separately any Deliver whose `msg_id` is
//! not above the highest one seen so far: a repeat the SDK let through, which must never happen.
//! The plug task ([`crate::app`]) logs one line per Deliver with both counts:
//!
//! ```text
//! delivery 1: msg_id 7, 14 bytes (repeats let through: 0)
//! ```
//!
//! The repeats the SDK suppresses itself (`firmware::Stats::deliveries_suppressed`) are counted
//! by the SDK, not here: they never reach the application. The plug task answers the command
//! [`COMMAND`] with all three counts ([`Counted::report`]), so a test can read them too.

/// The command the plug task answers with [`Counted::report`] (the plug itself does not know
/// it).
pub const COMMAND: &str = "deliveries";

/// The two counts of [`Deliveries`] after one Deliver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    /// Delivers received since boot whose `msg_id` was new (above every earlier one).
    pub received: u32,
    /// Delivers received since boot whose `msg_id` was not above the highest earlier one.
    pub repeats: u32,
}

impl Counted {
    /// The [`COMMAND`] answer: `{"received":R,"repeats":P,"suppressed":S}`, with `suppressed`
    /// the SDK's count of Delivers it took again and did not pass on.
    pub fn report(&self, suppressed: u32) -> heapless::Vec<u8, 80> {
        let mut out = heapless::Vec::new();
        for (key, value) in [
            ("{\"received\":", self.received),
            (",\"repeats\":", self.repeats),
            (",\"suppressed\":", suppressed),
        ] {
            let _ = out.extend_from_slice(key.as_bytes());
            push_decimal(&mut out, value);
        }
        let _ = out.push(b'}');
        out
    }
}

/// Appends `n` in decimal (no `core::fmt`: its machinery costs flash on a microcontroller).
fn push_decimal<const N: usize>(out: &mut heapless::Vec<u8, N>, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let _ = out.extend_from_slice(&digits[i..]);
}

/// Delivery counters since boot (they saturate instead of wrapping).
#[derive(Debug, Default)]
pub struct Deliveries {
    highest: Option<u64>,
    counted: Counted,
}

impl Deliveries {
    /// No deliveries yet.
    pub const fn new() -> Self {
        Deliveries {
            highest: None,
            counted: Counted {
                received: 0,
                repeats: 0,
            },
        }
    }

    /// Counts a Deliver of `msg_id`; returns the counts including it.
    pub fn on_deliver(&mut self, msg_id: u64) -> Counted {
        match self.highest {
            Some(h) if msg_id <= h => {
                self.counted.repeats = self.counted.repeats.saturating_add(1);
            }
            _ => {
                self.highest = Some(msg_id);
                self.counted.received = self.counted.received.saturating_add(1);
            }
        }
        self.counted
    }

    /// The counts so far.
    pub fn counted(&self) -> Counted {
        self.counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_holds_all_three_counts_and_fits_the_largest() {
        let c = Counted {
            received: 3,
            repeats: 0,
        };
        assert_eq!(
            c.report(12).as_slice(),
            br#"{"received":3,"repeats":0,"suppressed":12}"#
        );
        let max = Counted {
            received: u32::MAX,
            repeats: u32::MAX,
        };
        assert_eq!(
            max.report(u32::MAX).as_slice(),
            br#"{"received":4294967295,"repeats":4294967295,"suppressed":4294967295}"#
        );
    }

    #[test]
    fn new_ids_count_as_received_repeats_separately() {
        let mut d = Deliveries::new();
        assert_eq!(
            d.on_deliver(7),
            Counted {
                received: 1,
                repeats: 0
            }
        );
        assert_eq!(d.on_deliver(9).received, 2);
        assert_eq!(
            d.on_deliver(9),
            Counted {
                received: 2,
                repeats: 1
            },
            "the same id again is a repeat"
        );
        assert_eq!(d.on_deliver(3).repeats, 2, "an older id is a repeat too");
        assert_eq!(d.on_deliver(10).received, 3);
        assert_eq!(d.counted().repeats, 2);
    }
}
