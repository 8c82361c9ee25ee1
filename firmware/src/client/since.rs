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

    /// Every arrival order of six Delivers (seq 1..=6, msg_id 101..=106, as the broker sends
    /// them: ids increase with seq), cut off after every prefix (the session dies there), then a
    /// reconnect whose replay is every stored id above the reported since-id. Checks, for all
    /// 720 x 7 cases: the since-id never passes a message that has not arrived (no loss), every
    /// id reaches the application at least once, and an id the application got twice is one the
    /// since-id could not yet vouch for (at-least-once, duplicates only where unavoidable).
    #[test]
    fn reordered_cut_and_replayed_deliveries_lose_nothing() {
        fn permutations(items: &mut [u32], k: usize, out: &mut std::vec::Vec<std::vec::Vec<u32>>) {
            if k == items.len() {
                out.push(items.to_vec());
                return;
            }
            for i in k..items.len() {
                items.swap(k, i);
                permutations(items, k + 1, out);
                items.swap(k, i);
            }
        }
        let mut orders = std::vec::Vec::new();
        permutations(&mut [1, 2, 3, 4, 5, 6], 0, &mut orders);
        assert_eq!(orders.len(), 720);
        let msg = |seq: u32| 100 + u64::from(seq);
        for order in &orders {
            for cut in 0..=order.len() {
                let mut s = SinceTracker::new(100);
                let mut arrived = [false; 7];
                let mut app = std::vec::Vec::new();
                for &seq in &order[..cut] {
                    arrived[seq as usize] = true;
                    let ack_next = (1..=6).find(|&q| !arrived[q as usize]).unwrap_or(7);
                    if !s.is_duplicate(msg(seq)) {
                        app.push(msg(seq));
                    }
                    s.on_deliver(seq, msg(seq), ack_next);
                    let first_missing = (1..=6).find(|&q| !arrived[q as usize]).map(msg);
                    if let Some(missing) = first_missing {
                        assert!(
                            s.since_id() < missing,
                            "{order:?} cut {cut}: passed {missing}"
                        );
                    }
                }
                // Reconnect: the broker replays every stored id above the reported since-id.
                s.new_session();
                let since = s.since_id();
                let replay: std::vec::Vec<u64> = (101..=106).filter(|&id| id > since).collect();
                for (i, &id) in replay.iter().enumerate() {
                    let seq = i as u32 + 1;
                    assert!(
                        !s.is_duplicate(id),
                        "{order:?} cut {cut}: replayed {id} dropped"
                    );
                    app.push(id);
                    s.on_deliver(seq, id, seq + 1);
                }
                for id in 101..=106 {
                    let times = app.iter().filter(|&&a| a == id).count();
                    assert!(
                        times >= 1,
                        "{order:?} cut {cut}: {id} never reached the app"
                    );
                    if times > 1 {
                        assert!(
                            id > since,
                            "{order:?} cut {cut}: {id} twice though vouched for"
                        );
                    }
                }
                assert_eq!(s.since_id(), 106);
            }
        }
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
