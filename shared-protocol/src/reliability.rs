//! Reliability: per-direction sequence numbers, acknowledgements, retransmission with exponential
//! backoff and jitter, and duplicate suppression (docs/protocol.md section 5).
//!
//! Two sans-IO halves, one per direction of a session:
//! * [`SendWindow`]: numbers reliable frames (1, 2, 3...), keeps the bytes of up to `N`
//!   unacknowledged frames in inline storage, retires them on [`Ack`]s, and says when to resend
//!   ([`SendWindow::poll`], [`SendWindow::poll_timeout`]) or that the peer is dead.
//! * [`RecvWindow`]: classifies received sequence numbers (in order, early, duplicate, out of
//!   window), keeps the [`Ack`] to send and the deadline by which to send it (`ACK_DELAY`).
//!   Reliable frames are delivered in `seq` order: a frame that arrives ahead of a gap is
//!   [`RecvOutcome::Early`]; the caller either keeps it and records it with
//!   [`RecvWindow::hold`] (it is then acknowledged, and released by the in-order frame that fills
//!   the gap: [`RecvOutcome::InOrder`]'s `released`), or drops it unrecorded and the sender
//!   resends it. Where the held frames live is the caller's choice (the broker allocates on
//!   demand; a device keeps a few fixed slots).
//!
//! While the peer keeps acknowledging, no frame waits out a long backed-off timer: an ack that
//! retires frames brings every other frame's resend to at most `RTO_INITIAL_MS` after it
//! ([`live_peer_deadline`]; such a resend does not count towards giving up). The backoff is for
//! a silent peer.
//!
//! Over a transport that loses nothing ([`Carrier::Reliable`], set with
//! [`SendWindow::with_carrier`]) the same backoff timers run, but a wait that ends only counts
//! the transmission it would have sent: [`SendWindow::poll`] never reports a resend, only
//! [`SendEvent::PeerDead`], when the oldest frame's eighth wait runs out, as a datagram sender
//! gives up. The live-peer rule, which only hurries resends, does not apply there.
//!
//! Time is `now_ms: u64` from the caller; the jitter is a random `u16` from the caller per
//! scheduled wait: `wait = rto/2 + (rto/2) * jitter / 65535`, i.e. a factor in [0.5, 1.0].
//! What the stored bytes are is the caller's choice (typically the postcard `Body`, so a resend is
//! framed again with a fresh `ack` and a fresh DATA counter).

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::handshake::Carrier;
use crate::limits::{
    ACK_DELAY_MS, MAX_IN_FLIGHT, MAX_TRANSMISSIONS, RECEIVE_WINDOW, RTO_INITIAL_MS, RTO_MAX_MS,
};

/// Acknowledgement carried in every frame: all reliable frames below `next` were received, and bit
/// `i` of `mask` says frame `next + 1 + i` was received too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ack {
    /// Every reliable frame with a sequence number below this one was received.
    pub next: u32,
    /// Selective acknowledgements above `next`: bit `i` covers sequence `next + 1 + i`.
    pub mask: u32,
}

impl Ack {
    /// Whether this acknowledgement covers reliable frame `seq`.
    pub fn covers(&self, seq: u32) -> bool {
        if seq < self.next {
            return true;
        }
        let off = seq - self.next;
        (1..=32).contains(&off) && self.mask & (1u32 << (off - 1)) != 0
    }
}

/// The wait before retransmission number `transmissions` (1 = after the first send):
/// `min(500 * 2^(transmissions-1), 8000)` ms scaled by the jitter factor in [0.5, 1.0].
pub fn retransmit_wait(transmissions: u32, jitter: u16) -> u64 {
    let doublings = transmissions.saturating_sub(1).min(16);
    let rto = (RTO_INITIAL_MS << doublings).min(RTO_MAX_MS);
    let half = rto / 2;
    half + half * u64::from(jitter) / u64::from(u16::MAX)
}

/// Why [`SendWindow::push`] refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SendError {
    /// `N` (or `MAX_IN_FLIGHT`) frames are unacknowledged: wait for acks.
    WindowFull,
    /// The bytes exceed the per-frame storage `B`.
    TooLarge,
    /// Sequence numbers are used up (2^32 - 1 reliable frames): log in again.
    SeqExhausted,
    /// The peer was declared dead; the window takes nothing more.
    PeerDead,
}

/// Why [`SendWindow::on_ack`] refused an acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AckError {
    /// The ack covers sequence numbers that were never sent (a protocol violation).
    Unsent,
}

/// What the sender must do now.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SendEvent<'a> {
    /// Send this frame again (same `seq`, fresh `ack`, new DATA packet). `transmission` counts
    /// sends including this one (2..=8); a resend brought forward by a live peer
    /// ([`live_peer_deadline`]) is not counted and repeats the count of the one before.
    Retransmit {
        /// Sequence number of the frame.
        seq: u32,
        /// The stored bytes given to [`SendWindow::push`].
        bytes: &'a [u8],
        /// Which transmission this is.
        transmission: u32,
    },
    /// A frame was sent `MAX_TRANSMISSIONS` times without acknowledgement: the session is dead.
    /// Reported once; afterwards [`SendWindow::is_dead`] stays true.
    PeerDead,
}

#[derive(Debug)]
struct Slot<const B: usize> {
    seq: u32,
    transmissions: u32,
    deadline: u64,
    /// The deadline was brought forward by an acknowledgement ([`live_peer_deadline`]): the
    /// resend it triggers does not count as a transmission.
    brought_forward: bool,
    bytes: Vec<u8, B>,
}

/// The resend deadline of a frame still unacknowledged when an acknowledgement that retired
/// other frames arrives at `now_ms` (docs/protocol.md section 5, "Live peer"): at most
/// `RTO_INITIAL_MS` after it, and whether that brought it forward. The peer just proved it
/// hears this sender, so the frame was most likely lost on its own, not in a dead or congested
/// path, and waiting out a backed-off timer (up to `RTO_MAX_MS`) would stall every frame the
/// receiver delivers after it.
pub fn live_peer_deadline(deadline: u64, now_ms: u64) -> (u64, bool) {
    let cap = now_ms.saturating_add(RTO_INITIAL_MS);
    if deadline > cap {
        (cap, true)
    } else {
        (deadline, false)
    }
}

/// Sender half: sequence numbers, in-flight storage for `N` frames of at most `B` bytes each,
/// retransmission timers. `N` is capped at `MAX_IN_FLIGHT` (16) at run time.
#[derive(Debug)]
pub struct SendWindow<const N: usize, const B: usize> {
    next_seq: u32,
    slots: Vec<Slot<B>, N>,
    dead: bool,
    dead_reported: bool,
    /// Whether a wait that ends sends the frame again ([`Carrier::Datagram`]) or only counts
    /// it ([`Carrier::Reliable`]).
    resend: bool,
}

impl<const N: usize, const B: usize> Default for SendWindow<N, B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const B: usize> SendWindow<N, B> {
    /// A window whose first reliable frame will be `seq` 1.
    pub const fn new() -> Self {
        Self {
            next_seq: 1,
            slots: Vec::new(),
            dead: false,
            dead_reported: false,
            resend: true,
        }
    }

    /// The same window for frames carried over `carrier` (the default is
    /// [`Carrier::Datagram`]). Over [`Carrier::Reliable`] nothing is resent within the session
    /// (docs/protocol.md section 5, "Reliable transport"): the timers only find a dead peer.
    pub const fn with_carrier(mut self, carrier: Carrier) -> Self {
        self.resend = matches!(carrier, Carrier::Datagram);
        self
    }

    /// Whether the frames' carrier may lose them ([`Carrier::Datagram`]), so lost frames are
    /// resent.
    pub const fn carrier_loses(&self) -> bool {
        self.resend
    }

    fn capacity() -> usize {
        N.min(MAX_IN_FLIGHT as usize)
    }

    /// Frames sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Whether [`SendWindow::push`] would take another frame now.
    pub fn can_send(&self) -> bool {
        !self.dead && self.slots.len() < Self::capacity() && self.next_seq != u32::MAX
    }

    /// Whether the peer was declared dead.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The sequence number the next pushed frame gets.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Registers a reliable frame the caller sends now (its first transmission) and returns its
    /// `seq`. `jitter` is fresh randomness for its first timer.
    pub fn push(&mut self, bytes: &[u8], now_ms: u64, jitter: u16) -> Result<u32, SendError> {
        if self.dead {
            return Err(SendError::PeerDead);
        }
        if self.next_seq == u32::MAX {
            return Err(SendError::SeqExhausted);
        }
        if self.slots.len() >= Self::capacity() {
            return Err(SendError::WindowFull);
        }
        let stored = Vec::from_slice(bytes).map_err(|_| SendError::TooLarge)?;
        let seq = self.next_seq;
        let slot = Slot {
            seq,
            transmissions: 1,
            deadline: now_ms.saturating_add(retransmit_wait(1, jitter)),
            brought_forward: false,
            bytes: stored,
        };
        if self.slots.push(slot).is_err() {
            return Err(SendError::WindowFull);
        }
        self.next_seq += 1;
        Ok(seq)
    }

    /// The stored bytes of in-flight frame `seq`, if it is still unacknowledged.
    pub fn get(&self, seq: u32) -> Option<&[u8]> {
        self.slots
            .iter()
            .find(|s| s.seq == seq)
            .map(|s| s.bytes.as_slice())
    }

    /// Applies an acknowledgement received at `now_ms`; returns the sequence numbers it newly
    /// acknowledged. An ack covering never-sent frames is refused and changes nothing.
    pub fn on_ack(&mut self, ack: Ack, now_ms: u64) -> Result<Vec<u32, N>, AckError> {
        if ack.next > self.next_seq {
            return Err(AckError::Unsent);
        }
        // Bits for seq >= next_seq would acknowledge frames never sent.
        let sent_above = self.next_seq.saturating_sub(ack.next.saturating_add(1));
        if sent_above < 32 && ack.mask >> sent_above != 0 {
            return Err(AckError::Unsent);
        }
        let oldest_before = self.oldest();
        // Slots stay in push order, that is by `seq` (`push` appends, `retain` keeps the order),
        // so `acked` comes out sorted.
        let mut acked = Vec::new();
        self.slots.retain(|s| {
            if ack.covers(s.seq) {
                // Capacity N >= slots.len(): cannot fail.
                let _ = acked.push(s.seq);
                false
            } else {
                true
            }
        });
        self.restart_new_oldest(oldest_before, now_ms);
        // "Live peer" hurries resends; over a reliable carrier there is nothing to resend.
        if self.resend && !acked.is_empty() {
            for slot in self.slots.iter_mut() {
                let (deadline, forward) = live_peer_deadline(slot.deadline, now_ms);
                slot.deadline = deadline;
                slot.brought_forward |= forward;
            }
        }
        Ok(acked)
    }

    /// The sequence number of the oldest unacknowledged frame.
    fn oldest(&self) -> Option<u32> {
        self.slots.iter().map(|s| s.seq).min()
    }

    /// A frame that just became the oldest unacknowledged one (docs/protocol.md section 5)
    /// counts its transmissions from 1 again and is due at most `RTO_INITIAL_MS` after `now_ms`:
    /// only the oldest frame's transmissions can declare the peer dead, because a receiver that
    /// holds few early frames drops later ones until the gap before them fills, and those drops
    /// say nothing about the peer; and a frame dropped that way is resent soon, not after the
    /// long backoff it built up meanwhile.
    fn restart_new_oldest(&mut self, oldest_before: Option<u32>, now_ms: u64) {
        let oldest = self.oldest();
        if oldest == oldest_before {
            return;
        }
        if let Some(slot) = self.slots.iter_mut().find(|s| Some(s.seq) == oldest) {
            slot.transmissions = 1;
            slot.deadline = slot.deadline.min(now_ms.saturating_add(RTO_INITIAL_MS));
        }
    }

    /// The earliest retransmission deadline (`None` with nothing in flight or once dead).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.dead {
            return None;
        }
        self.slots.iter().map(|s| s.deadline).min()
    }

    /// What is due at `now_ms`: the earliest overdue frame to resend (its next timer uses
    /// `jitter`), or `PeerDead` when an overdue frame was already sent `MAX_TRANSMISSIONS` times.
    /// Call repeatedly until `None`. Over [`Carrier::Reliable`] every overdue wait is counted
    /// here as if its frame had been sent again, and only `PeerDead` is ever returned.
    pub fn poll(&mut self, now_ms: u64, jitter: u16) -> Option<SendEvent<'_>> {
        if self.dead {
            if self.dead_reported {
                return None;
            }
            self.dead_reported = true;
            return Some(SendEvent::PeerDead);
        }
        // Nothing leaves the window here, so the oldest frame stays the same.
        let oldest = self.oldest();
        let idx = loop {
            // The overdue frame with the earliest (deadline, seq).
            let mut due: Option<(u64, u32, usize)> = None;
            for (i, s) in self.slots.iter().enumerate() {
                if s.deadline <= now_ms && due.is_none_or(|(d, q, _)| (s.deadline, s.seq) < (d, q))
                {
                    due = Some((s.deadline, s.seq, i));
                }
            }
            let (_, _, idx) = due?;
            let slot = &mut self.slots[idx];
            let is_oldest = oldest == Some(slot.seq);
            // A resend brought forward by a live peer's acknowledgement keeps the frame's count
            // and its backoff step: only waits that ran their full course count towards giving up.
            let counted = !core::mem::take(&mut slot.brought_forward);
            if counted && is_oldest && slot.transmissions >= MAX_TRANSMISSIONS {
                self.dead = true;
                self.dead_reported = true;
                return Some(SendEvent::PeerDead);
            }
            if counted {
                slot.transmissions = (slot.transmissions + 1).min(MAX_TRANSMISSIONS);
            }
            slot.deadline = now_ms.saturating_add(retransmit_wait(slot.transmissions, jitter));
            if self.resend {
                break idx;
            }
        };
        let slot = &self.slots[idx];
        Some(SendEvent::Retransmit {
            seq: slot.seq,
            bytes: slot.bytes.as_slice(),
            transmission: slot.transmissions,
        })
    }
}

/// What the receiver should do with a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RecvOutcome {
    /// `seq` 0: an unreliable frame; deliver it, nothing to acknowledge.
    Unreliable,
    /// The frame every earlier one preceded (`seq == ack.next` before it): recorded. Deliver it
    /// now, then the `released` frames held after it, `seq + 1 ..= seq + released`, in that order.
    InOrder {
        /// How many held frames directly follow this one and are now deliverable.
        released: u32,
    },
    /// A new frame ahead of a gap (`next < seq <= next + RECEIVE_WINDOW`): not recorded yet.
    /// Keep it and call [`RecvWindow::hold`] (it is then acknowledged and later released in
    /// order), or drop it: it stays unacknowledged and the sender resends it.
    Early,
    /// Already received (delivered or held): do not deliver again (it is acknowledged again).
    Duplicate,
    /// More than `RECEIVE_WINDOW` ahead of `ack.next`: dropped, not recorded.
    OutOfWindow,
}

/// Receiver half: which reliable frames arrived, the [`Ack`] describing them, and when it is due.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RecvWindow {
    next: u32,
    mask: u32,
    /// When the pending acknowledgement is due; [`NO_ACK_DUE`] when none is pending (a plain
    /// `u64` rather than an `Option` keeps the window at 16 bytes, which a broker holding many
    /// sessions notices).
    ack_due: u64,
}

/// [`RecvWindow::ack_due`]'s value while no acknowledgement is pending.
const NO_ACK_DUE: u64 = u64::MAX;

impl Default for RecvWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvWindow {
    /// Nothing received: `ack = { next: 1, mask: 0 }`.
    pub const fn new() -> Self {
        Self {
            next: 1,
            mask: 0,
            ack_due: NO_ACK_DUE,
        }
    }

    /// The acknowledgement describing everything received so far.
    pub fn ack(&self) -> Ack {
        Ack {
            next: self.next,
            mask: self.mask,
        }
    }

    /// Classifies a received frame's `seq` and records it. Any reliable `seq` (even a duplicate
    /// or out-of-window one) makes an acknowledgement due within `ACK_DELAY`.
    pub fn on_receive(&mut self, seq: u32, now_ms: u64) -> RecvOutcome {
        if seq == 0 {
            return RecvOutcome::Unreliable;
        }
        if self.ack_due == NO_ACK_DUE {
            // At worst one millisecond early, never "none" by accident.
            self.ack_due = now_ms.saturating_add(ACK_DELAY_MS).min(NO_ACK_DUE - 1);
        }
        if seq < self.next {
            return RecvOutcome::Duplicate;
        }
        let off = seq - self.next;
        if off > RECEIVE_WINDOW {
            return RecvOutcome::OutOfWindow;
        }
        if off == 0 {
            // In order: advance past it and past every held frame directly after it.
            self.next += 1;
            let mut released = 0;
            while self.mask & 1 != 0 {
                self.mask >>= 1;
                self.next += 1;
                released += 1;
            }
            self.mask >>= 1;
            return RecvOutcome::InOrder { released };
        }
        if self.mask & Self::bit(off) != 0 {
            return RecvOutcome::Duplicate;
        }
        RecvOutcome::Early
    }

    /// Records an [`RecvOutcome::Early`] frame the caller keeps: it is acknowledged from now on
    /// and released by the in-order frame that fills the gap before it. Returns `false` (and
    /// records nothing) for a `seq` that is not early: in order, already received or outside
    /// the window.
    pub fn hold(&mut self, seq: u32) -> bool {
        let Some(off) = seq.checked_sub(self.next) else {
            return false;
        };
        if off == 0 || off > RECEIVE_WINDOW || self.mask & Self::bit(off) != 0 {
            return false;
        }
        self.mask |= Self::bit(off);
        true
    }

    /// The mask bit of the frame `off` (1..=32) above `next`.
    fn bit(off: u32) -> u32 {
        1u32 << (off - 1)
    }

    /// When the pending acknowledgement must be sent (`None` if none is pending).
    pub fn poll_timeout(&self) -> Option<u64> {
        (self.ack_due != NO_ACK_DUE).then_some(self.ack_due)
    }

    /// Whether an acknowledgement is pending.
    pub fn ack_pending(&self) -> bool {
        self.ack_due != NO_ACK_DUE
    }

    /// If the acknowledgement is due at `now_ms`, returns it: send an AckOnly frame with it (then
    /// call [`RecvWindow::on_ack_sent`]).
    pub fn poll_ack(&self, now_ms: u64) -> Option<Ack> {
        match self.poll_timeout() {
            Some(due) if due <= now_ms => Some(self.ack()),
            _ => None,
        }
    }

    /// The current [`Ack`] went out in some frame: nothing is pending any more.
    pub fn on_ack_sent(&mut self) {
        self.ack_due = NO_ACK_DUE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Acknowledged frames come back in increasing `seq` order (the slots' push order; no
        /// sort is linked), whichever selective acknowledgements retire them.
        #[test]
        fn on_ack_returns_seqs_in_increasing_order(
            acks in proptest::collection::vec(
                (0u32..24, proptest::prelude::any::<u32>()),
                1..16,
            )
        ) {
            let mut w = SendWindow::<16, 1>::new();
            let mut in_flight = ::std::collections::BTreeSet::new();
            for (now, (next, mask)) in (0u64..).zip(acks) {
                while w.can_send() && w.next_seq() < 40 {
                    in_flight.insert(w.push(&[0], now, 0).unwrap());
                }
                // An acceptable ack: nothing above what was sent.
                let next = next.min(w.next_seq());
                let sent_above = w.next_seq().saturating_sub(next + 1);
                let mask = if sent_above >= 32 { mask } else { mask & ((1u32 << sent_above) - 1) };
                let ack = Ack { next, mask };
                let acked = w.on_ack(ack, now).unwrap();
                proptest::prop_assert!(acked.windows(2).all(|p| p[0] < p[1]), "{:?}", acked);
                let expected: ::std::vec::Vec<u32> =
                    in_flight.iter().copied().filter(|&s| ack.covers(s)).collect();
                proptest::prop_assert_eq!(acked.as_slice(), expected.as_slice());
                in_flight.retain(|&s| !ack.covers(s));
            }
        }
    }

    /// A receiver that keeps at most `room` early frames (`None`: unbounded).
    fn deliver_all(arrivals: &[u32], room: Option<usize>) -> (::std::vec::Vec<u32>, RecvWindow) {
        let mut r = RecvWindow::new();
        let mut held = ::std::collections::BTreeSet::new();
        let mut delivered = ::std::vec::Vec::new();
        for &seq in arrivals {
            match r.on_receive(seq, 0) {
                RecvOutcome::InOrder { released } => {
                    delivered.push(seq);
                    for next in seq + 1..=seq + released {
                        assert!(held.remove(&next), "released {next} was never held");
                        delivered.push(next);
                    }
                }
                RecvOutcome::Early if room.is_none_or(|k| held.len() < k) => {
                    assert!(r.hold(seq));
                    held.insert(seq);
                }
                RecvOutcome::Early | RecvOutcome::Duplicate | RecvOutcome::OutOfWindow => {}
                RecvOutcome::Unreliable => unreachable!("only reliable seqs are sent"),
            }
            // The ack covers exactly what was delivered or held.
            let ack = r.ack();
            for s in 1..=64 {
                let known = delivered.contains(&s) || held.contains(&s);
                assert_eq!(ack.covers(s), known, "seq {s} after {seq}: {ack:?}");
            }
        }
        (delivered, r)
    }

    proptest::proptest! {
        /// Whatever the arrival order, duplication and loss, and however few frames the
        /// receiver can hold, it delivers 1, 2, 3... with no gap and no repeat; once every
        /// frame has been sent again in order (the sender's retransmissions), all of them.
        #[test]
        fn delivery_is_in_seq_order_whatever_arrives(
            n in 1u32..=40,
            noise in proptest::collection::vec(1u32..=48, 0..120),
            room in proptest::option::of(0usize..=3),
        ) {
            let mut arrivals = noise.clone();
            arrivals.extend(1..=n);
            let (delivered, r) = deliver_all(&arrivals, room);
            let expected: ::std::vec::Vec<u32> = (1..=delivered.len() as u32).collect();
            proptest::prop_assert_eq!(&delivered, &expected);
            proptest::prop_assert!(delivered.len() as u32 >= n);
            proptest::prop_assert_eq!(r.ack().next, delivered.len() as u32 + 1);
        }
    }

    #[test]
    fn ack_covers() {
        let a = Ack {
            next: 5,
            mask: 0b101,
        };
        assert!(a.covers(1) && a.covers(4));
        assert!(!a.covers(5));
        assert!(a.covers(6) && !a.covers(7) && a.covers(8));
        assert!(!a.covers(38));
    }

    #[test]
    fn wait_bounds() {
        assert_eq!(retransmit_wait(1, 0), 250);
        assert_eq!(retransmit_wait(1, u16::MAX), 500);
        assert_eq!(retransmit_wait(2, u16::MAX), 1000);
        assert_eq!(retransmit_wait(5, u16::MAX), 8000);
        assert_eq!(retransmit_wait(6, u16::MAX), 8000);
        assert_eq!(retransmit_wait(40, 0), 4000);
    }

    #[test]
    fn recv_holds_early_frames_and_releases_them_in_order() {
        let mut r = RecvWindow::new();
        assert_eq!(r.on_receive(1, 0), RecvOutcome::InOrder { released: 0 });
        assert_eq!(r.ack(), Ack { next: 2, mask: 0 });
        assert_eq!(r.on_receive(4, 0), RecvOutcome::Early);
        // Not recorded until held.
        assert_eq!(r.ack(), Ack { next: 2, mask: 0 });
        assert!(r.hold(4));
        assert_eq!(
            r.ack(),
            Ack {
                next: 2,
                mask: 0b10
            }
        );
        assert_eq!(r.on_receive(4, 0), RecvOutcome::Duplicate);
        assert_eq!(r.on_receive(2, 0), RecvOutcome::InOrder { released: 0 });
        assert_eq!(r.ack(), Ack { next: 3, mask: 0b1 });
        assert_eq!(r.on_receive(3, 0), RecvOutcome::InOrder { released: 1 });
        assert_eq!(r.ack(), Ack { next: 5, mask: 0 });
    }

    #[test]
    fn an_early_frame_not_held_stays_unacknowledged_and_counts_again() {
        let mut r = RecvWindow::new();
        assert_eq!(r.on_receive(3, 0), RecvOutcome::Early);
        assert_eq!(r.on_receive(3, 0), RecvOutcome::Early);
        assert_eq!(r.ack(), Ack { next: 1, mask: 0 });
        assert_eq!(r.on_receive(1, 0), RecvOutcome::InOrder { released: 0 });
        assert_eq!(r.on_receive(2, 0), RecvOutcome::InOrder { released: 0 });
        assert_eq!(r.on_receive(3, 0), RecvOutcome::InOrder { released: 0 });
    }

    #[test]
    fn hold_refuses_what_is_not_early() {
        let mut r = RecvWindow::new();
        assert!(!r.hold(1), "in order is delivered, not held");
        assert!(!r.hold(0));
        assert!(!r.hold(1 + 1 + RECEIVE_WINDOW), "outside the window");
        assert!(r.hold(1 + RECEIVE_WINDOW));
        assert!(!r.hold(1 + RECEIVE_WINDOW), "already held");
        assert_eq!(r.on_receive(1, 0), RecvOutcome::InOrder { released: 0 });
        assert!(!r.hold(1), "already delivered");
    }

    #[test]
    fn send_push_limits() {
        let mut s: SendWindow<2, 4> = SendWindow::new();
        assert_eq!(s.push(b"toolong", 0, 0), Err(SendError::TooLarge));
        assert_eq!(s.push(b"a", 0, 0), Ok(1));
        assert_eq!(s.push(b"b", 0, 0), Ok(2));
        assert!(!s.can_send());
        assert_eq!(s.push(b"c", 0, 0), Err(SendError::WindowFull));
    }
}
