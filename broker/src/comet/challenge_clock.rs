//! The node's challenge clock: the `timestamp_ms` each CHALLENGE carries (docs/protocol.md
//! section 3.2, step 2).
//!
//! A LOGIN is accepted only if its challenge timestamp is strictly greater than the last one
//! accepted for the terminal (step 4.6, the `REPLAY` check in [`super::logins`]). Were the
//! CHALLENGE stamped with the wall clock, two HELLOs of one device answered in the same
//! millisecond (a device reconnecting at once, or two sessions of a `signed`-profile device)
//! would carry the same timestamp and the second LOGIN would be refused `REPLAY`. This clock
//! never hands one terminal the same timestamp twice: each of its slots (terminals hashed by
//! id) holds the last timestamp it issued, and the next is `max(now, last + 1)`.
//!
//! That can run ahead of the wall clock, by one millisecond for every HELLO beyond one per
//! millisecond in a slot. With [`SLOTS`] slots a node would need about a million HELLOs a
//! second spread over its terminals for that to happen; only HELLOs aimed at one slot (a flood
//! naming one device, which needs no key) get there. The lead is therefore capped at
//! [`MAX_LEAD_MS`], far inside the 30 s window in which the LOGIN check accepts a challenge
//! from ahead of its clock: at the cap the clock issues `now + MAX_LEAD_MS` again
//! (*saturated*, counted by the caller), so a flood can at worst bring back the same-millisecond
//! `REPLAY` for the terminals of its slot (who retry with a new HELLO), never `COOKIE_EXPIRED`.
//!
//! Time is injected (`now_ms`, the caller's wall clock), there is no global: the comet's
//! [`super::logins::Logins`] owns the node's one clock. The clock is per node, and needs to be:
//! a LOGIN is only accepted by the node whose cookie secret made its cookie, so only that
//! node's challenges and last-login table matter for it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Slots of the clock, terminals hashed by id (8 KiB per node).
pub const SLOTS: usize = 1024;

/// How far ahead of the wall clock a challenge timestamp may run (see the module docs).
pub const MAX_LEAD_MS: u64 = shared_protocol::limits::CHALLENGE_CLOCK_MAX_LEAD_MS;

/// A challenge timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The `timestamp_ms` to put in the CHALLENGE.
    pub timestamp_ms: u64,
    /// The slot was [`MAX_LEAD_MS`] ahead of the wall clock, so this timestamp may repeat one
    /// already issued to a terminal of the slot.
    pub saturated: bool,
}

/// The node's challenge clock (see the module docs).
pub struct ChallengeClock {
    slots: Box<[AtomicU64]>,
}

impl Default for ChallengeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ChallengeClock {
    /// A clock that has issued nothing yet.
    pub fn new() -> ChallengeClock {
        ChallengeClock {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, id: u32) -> &AtomicU64 {
        // Fibonacci hashing: consecutive ids land in different slots.
        let i = (id.wrapping_mul(0x9E37_79B9) >> 22) as usize % SLOTS;
        &self.slots[i]
    }

    /// The timestamp for a CHALLENGE to terminal `id` at wall-clock time `now_ms`: greater than
    /// every timestamp issued to `id` before, unless the slot is saturated.
    pub fn stamp(&self, id: u32, now_ms: u64) -> Stamp {
        let cap = now_ms.saturating_add(MAX_LEAD_MS);
        let slot = self.slot(id);
        let mut last = slot.load(Ordering::Relaxed);
        loop {
            let wanted = now_ms.max(last.saturating_add(1));
            let saturated = wanted > cap;
            let next = wanted.min(cap);
            match slot.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    return Stamp {
                        timestamp_ms: next,
                        saturated,
                    };
                }
                Err(seen) => last = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_terminal_never_gets_a_timestamp_twice_within_a_millisecond() {
        let clock = ChallengeClock::new();
        let stamps: Vec<u64> = (0..50)
            .map(|_| clock.stamp(7, 5_000).timestamp_ms)
            .collect();
        assert_eq!(stamps, (5_000..5_050).collect::<Vec<_>>());
        // The wall clock catching up takes over again.
        assert_eq!(clock.stamp(7, 9_000).timestamp_ms, 9_000);
    }

    #[test]
    fn terminals_in_other_slots_keep_the_wall_clock() {
        let clock = ChallengeClock::new();
        for _ in 0..10 {
            clock.stamp(1, 100);
        }
        let other = (2..u32::MAX)
            .find(|id| !std::ptr::eq(clock.slot(*id), clock.slot(1)))
            .unwrap();
        assert_eq!(clock.stamp(other, 100).timestamp_ms, 100);
    }

    #[test]
    fn the_lead_stops_at_the_cap_and_says_so() {
        let clock = ChallengeClock::new();
        let n = MAX_LEAD_MS + 1;
        for i in 0..n {
            let s = clock.stamp(3, 10_000);
            assert_eq!(s.timestamp_ms, 10_000 + i);
            assert!(!s.saturated, "{i}");
        }
        let s = clock.stamp(3, 10_000);
        assert_eq!(s.timestamp_ms, 10_000 + MAX_LEAD_MS);
        assert!(s.saturated);
        // A millisecond later the cap has moved up by one: unique again.
        let s = clock.stamp(3, 10_001);
        assert_eq!(s.timestamp_ms, 10_001 + MAX_LEAD_MS);
        assert!(!s.saturated);
        assert_eq!(
            clock.stamp(3, 10_003).timestamp_ms,
            10_003 + MAX_LEAD_MS - 1
        );
    }

    #[test]
    fn a_wall_clock_stepping_back_stays_within_the_cap() {
        let clock = ChallengeClock::new();
        clock.stamp(9, 50_000);
        let s = clock.stamp(9, 20_000);
        assert_eq!(s.timestamp_ms, 20_000 + MAX_LEAD_MS);
        assert!(s.saturated);
    }

    #[test]
    fn concurrent_stamps_for_one_terminal_are_all_different() {
        let clock = ChallengeClock::new();
        let mut all: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..200)
                            .map(|_| clock.stamp(11, 1_000).timestamp_ms)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 800);
    }
}
