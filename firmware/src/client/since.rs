//! Since-id tracking: the highest message id the device may report at login.
//!
//! The broker resends, after a login, the stored messages above the reported `since_id`. Frames
//! of one session can arrive out of order (selective acknowledgement), so a Deliver's `msg_id` is
//! only committed once every reliable frame before it has arrived too (the receive window's
//! `ack.next` passed its `seq`). Committing earlier could report a `since_id` above a message
//! still lost in a gap, and the broker would then never resend it.
//!
//! Delivers with `msg_id <= since_id` are known duplicates (redelivered after a reconnect):
//! acknowledged, but not given to the application again.

use heapless::Vec;

/// Out-of-order Delivers tracked per session (a Deliver's `msg_id` is committed to the since-id
/// only once every earlier frame arrived); beyond this they are simply not committed (so the
/// reported `since_id` stays conservative: more redelivery, never a loss).
pub const SINCE_PENDING: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct SinceTracker {
    committed: u64,
    pending: Vec<(u32, u64), SINCE_PENDING>,
}

impl SinceTracker {
    pub fn new(since_id: u64) -> Self {
        SinceTracker {
            committed: since_id,
            pending: Vec::new(),
        }
    }

    /// The id to report at login.
    pub fn since_id(&self) -> u64 {
        self.committed
    }

    /// Whether `msg_id` was certainly delivered already.
    pub fn is_duplicate(&self, msg_id: u64) -> bool {
        msg_id <= self.committed
    }

    /// A Deliver with `msg_id` was accepted in frame `seq`; `ack_next` is the receive window's
    /// `ack.next` after it.
    pub fn on_deliver(&mut self, seq: u32, msg_id: u64, ack_next: u32) {
        let _ = self.pending.push((seq, msg_id));
        self.advance(ack_next);
    }

    /// Commits every tracked Deliver whose frame is below `ack_next`.
    pub fn advance(&mut self, ack_next: u32) {
        let mut committed = self.committed;
        self.pending.retain(|&(seq, msg_id)| {
            if seq < ack_next {
                committed = committed.max(msg_id);
                false
            } else {
                true
            }
        });
        self.committed = committed;
    }

    /// A new session starts: sequence numbers restart, uncommitted ids are forgotten.
    pub fn new_session(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_without_gaps() {
        let mut s = SinceTracker::new(10);
        // seq 2 (msg 30) arrives before seq 1 (msg 20): ack.next stays 1.
        s.on_deliver(2, 30, 1);
        assert_eq!(s.since_id(), 10);
        // Then seq 1 arrives and ack.next jumps to 3.
        s.on_deliver(1, 20, 3);
        assert_eq!(s.since_id(), 30);
        assert!(s.is_duplicate(30) && !s.is_duplicate(31));
    }

    #[test]
    fn a_lost_gap_is_not_committed_across_sessions() {
        let mut s = SinceTracker::new(0);
        s.on_deliver(2, 7, 1);
        s.new_session();
        s.advance(100);
        assert_eq!(s.since_id(), 0);
    }
}
