//! The message-id scheme both offline stores use: `id = max(last + 1, floor)`, where `last` is the
//! highest id the store has issued and `floor` is [`clock_floor`] of the injected time (raised, in
//! the Redis store, to just above the highest id the running broker has issued or read).
//!
//! The persisted `last + 1` keeps ids strictly increasing while the store keeps its data, even
//! when the clock goes back. The clock floor keeps them increasing when the store lost `last`
//! (Redis restarted without persistence, a failover to a replica that had not seen the last
//! writes): the new ids start above every id issued before the loss as long as those ids did not
//! run more than the loss's duration ahead of the clock. Ids run ahead of the clock only when more
//! than [`IDS_PER_MS`] messages are stored in one millisecond on average, or after the clock
//! stepped back; they then simply continue at `last + 1` until the clock catches up.
//!
//! Bound: `now_ms << 10` stays at or below [`MAX_MSG_ID`] (2^53 - 1) until `now_ms` reaches 2^43
//! (the year 2248); past it the floor is capped at [`MAX_MSG_ID`], and once [`MAX_MSG_ID`] has been
//! issued every append fails with [`StoreError::IdsExhausted`] instead of reusing an id.

use super::{MAX_MSG_ID, StoreError};

/// Bits of the id below the millisecond clock.
pub const CLOCK_SHIFT: u32 = 10;

/// Ids that can be issued per millisecond before ids run ahead of the clock.
pub const IDS_PER_MS: u64 = 1 << CLOCK_SHIFT;

/// The smallest id the clock allows at `now_ms` (Unix ms): `now_ms << 10`, capped at
/// [`MAX_MSG_ID`].
pub fn clock_floor(now_ms: u64) -> u64 {
    now_ms.saturating_mul(IDS_PER_MS).min(MAX_MSG_ID)
}

/// The next id after `last` (0: none issued yet) given a `floor`: `max(last + 1, floor)`, or
/// [`StoreError::IdsExhausted`] once that would pass [`MAX_MSG_ID`].
pub fn next_id(last: u64, floor: u64) -> Result<u64, StoreError> {
    if last >= MAX_MSG_ID {
        return Err(StoreError::IdsExhausted);
    }
    Ok((last + 1).max(floor.min(MAX_MSG_ID)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_clock_and_never_goes_back() {
        let t = 1_764_000_000_000; // December 2025
        assert_eq!(next_id(0, clock_floor(t)).unwrap(), t << 10);
        // Many in one millisecond: counting on.
        let a = next_id(t << 10, clock_floor(t)).unwrap();
        assert_eq!(a, (t << 10) + 1);
        // Clock went back an hour: still above the last id.
        assert_eq!(next_id(a, clock_floor(t - 3_600_000)).unwrap(), a + 1);
        // Clock moved on: jumps to it.
        assert_eq!(next_id(a, clock_floor(t + 5)).unwrap(), (t + 5) << 10);
        // The last id lost (store restarted empty) a second later: above every earlier one.
        assert!(next_id(0, clock_floor(t + 1000)).unwrap() > a);
    }

    #[test]
    fn bound_and_exhaustion() {
        assert!(clock_floor((1 << 43) - 1) <= MAX_MSG_ID);
        assert_eq!(clock_floor(1 << 43), MAX_MSG_ID);
        assert_eq!(clock_floor(u64::MAX), MAX_MSG_ID);
        assert_eq!(next_id(0, u64::MAX).unwrap(), MAX_MSG_ID);
        assert_eq!(next_id(MAX_MSG_ID - 1, 0).unwrap(), MAX_MSG_ID);
        assert!(matches!(
            next_id(MAX_MSG_ID, 0),
            Err(StoreError::IdsExhausted)
        ));
        assert!(matches!(
            next_id(u64::MAX, 0),
            Err(StoreError::IdsExhausted)
        ));
    }
}
