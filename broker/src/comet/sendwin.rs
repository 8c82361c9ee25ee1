//! The broker's send half of the reliability layer (docs/protocol.md section 5), heap-backed.
//!
//! `shared_protocol::reliability::SendWindow` keeps `N x B` bytes inline (16 x 1170 ~ 19 KiB per
//! session, allocated even when idle), which suits a device but not a broker holding many idle
//! sessions. This window has the same rules (sequence numbers from 1, at most `MAX_IN_FLIGHT`
//! unacknowledged, `retransmit_wait` backoff with caller jitter, resends brought forward by a
//! live peer's acks (`live_peer_deadline`, not counted), dead after `MAX_TRANSMISSIONS`,
//! acks covering unsent frames refused) but keeps each in-flight body in its own allocation, so
//! an idle session costs only the empty `VecDeque` header. Each frame carries a [`Tag`] that is
//! handed back when the frame is acknowledged (a Deliver's `msg_id` for the router's ack).
//! Tags come back with their `seq`, selectively acknowledged frames included: the caller decides
//! what a selective acknowledgement means (for a Deliver: held by the device, not delivered yet,
//! see [`crate::comet::link`]).
//!
//! The frames in flight live in one box with what the window's owner keeps while a gap is open
//! (an [`Attachment`]: the link's held frames and selectively acknowledged Delivers), allocated
//! while either has anything and freed when both are empty, so an idle session pays one pointer
//! for both.
//!
//! Over a transport that loses nothing (WebSocket: [`SendWin::with_carrier`] with
//! [`Carrier::Reliable`]) the backoff timers run the same but send nothing: a wait that ends
//! counts the transmission a datagram sender would make, so the window gives up on the oldest
//! frame after the same eight waits and never resends a frame within the session; the live-peer
//! rule, which only hurries resends, is off (docs/protocol.md section 5, "Reliable transport").

use std::collections::VecDeque;

use shared_protocol::handshake::Carrier;
use shared_protocol::limits::{MAX_IN_FLIGHT, MAX_TRANSMISSIONS, RTO_INITIAL_MS};
use shared_protocol::reliability::{Ack, live_peer_deadline, retransmit_wait};

/// What an acknowledged frame means to the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// Nothing to report.
    Plain,
    /// A Deliver of this message id: acknowledge it to the router.
    Deliver(u64),
}

#[derive(Debug)]
struct Slot {
    seq: u32,
    transmissions: u32,
    deadline: u64,
    /// Brought forward by a live peer's ack: its resend is not counted.
    brought_forward: bool,
    tag: Tag,
    body: Box<[u8]>,
}

/// What is due now.
#[derive(Debug, PartialEq, Eq)]
pub enum Due<'a> {
    /// Send frame `seq` again with these body bytes.
    Retransmit {
        /// The frame's sequence number.
        seq: u32,
        /// The stored postcard `Body`.
        body: &'a [u8],
    },
    /// A frame went unacknowledged `MAX_TRANSMISSIONS` times: the peer is dead.
    Dead,
}

/// What the window's owner keeps in the window's box (see module docs).
pub trait Attachment: Default {
    /// Whether it holds nothing (the box may then go once no frame is in flight).
    fn is_empty(&self) -> bool;
}

/// No attachment.
impl Attachment for () {
    fn is_empty(&self) -> bool {
        true
    }
}

/// The window's box: the frames in flight, in `seq` order, and the owner's attachment.
#[derive(Debug, Default)]
struct Busy<A> {
    slots: VecDeque<Slot>,
    attached: A,
}

/// Heap-backed send window (see module docs).
#[derive(Debug)]
pub struct SendWin<A = ()> {
    next_seq: u32,
    dead: bool,
    /// Whether a wait that ends sends the frame again (datagram) or only counts it (stream).
    resend: bool,
    /// `None` (one null pointer, no buffer) while no frame is in flight and the attachment is
    /// empty, as in an idle session (docs/performance.md, "Memory per session").
    busy: Option<Box<Busy<A>>>,
}

impl<A: Attachment> Default for SendWin<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Attachment> SendWin<A> {
    /// An empty window; the first frame gets `seq` 1.
    pub const fn new() -> SendWin<A> {
        SendWin {
            next_seq: 1,
            dead: false,
            resend: true,
            busy: None,
        }
    }

    /// The same window for frames carried over `carrier` (the default is
    /// [`Carrier::Datagram`]): over [`Carrier::Reliable`] nothing is resent (module docs).
    pub fn with_carrier(mut self, carrier: Carrier) -> SendWin<A> {
        self.resend = matches!(carrier, Carrier::Datagram);
        self
    }

    /// The attachment, when the box exists.
    pub fn attached(&self) -> Option<&A> {
        self.busy.as_ref().map(|b| &b.attached)
    }

    /// The attachment to change, when the box exists (call [`SendWin::tidy`] after emptying it).
    pub fn attached_mut(&mut self) -> Option<&mut A> {
        self.busy.as_mut().map(|b| &mut b.attached)
    }

    /// The attachment to add to, allocating the box when there is none.
    pub fn attach(&mut self) -> &mut A {
        &mut self.busy.get_or_insert_default().attached
    }

    /// Frees the box once nothing is in flight and the attachment is empty.
    pub fn tidy(&mut self) {
        if self
            .busy
            .as_ref()
            .is_some_and(|b| b.slots.is_empty() && b.attached.is_empty())
        {
            self.busy = None;
        }
    }

    fn slots(&self) -> Option<&VecDeque<Slot>> {
        self.busy.as_ref().map(|b| &b.slots)
    }

    /// Whether another reliable frame may be sent now.
    pub fn can_send(&self) -> bool {
        !self.dead && self.in_flight() < MAX_IN_FLIGHT as usize && self.next_seq != u32::MAX
    }

    /// Frames in flight.
    pub fn in_flight(&self) -> usize {
        self.slots().map_or(0, VecDeque::len)
    }

    /// Whether the peer was declared dead.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The `seq` the next frame will get.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Registers a frame sent now; returns its `seq`, or `None` when [`SendWin::can_send`] is
    /// false.
    pub fn push(&mut self, body: Box<[u8]>, tag: Tag, now_ms: u64, jitter: u16) -> Option<u32> {
        if !self.can_send() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.busy.get_or_insert_default().slots.push_back(Slot {
            seq,
            transmissions: 1,
            deadline: now_ms.saturating_add(retransmit_wait(1, jitter)),
            brought_forward: false,
            tag,
            body,
        });
        Some(seq)
    }

    /// Applies a peer's ack received at `now_ms`; returns the newly acknowledged frames' `seq`
    /// and tag, in `seq` order, or `None` (nothing changed) when it covers frames never sent.
    pub fn on_ack(&mut self, ack: Ack, now_ms: u64) -> Option<Vec<(u32, Tag)>> {
        if ack.next > self.next_seq {
            return None;
        }
        let sent_above = self.next_seq.saturating_sub(ack.next.saturating_add(1));
        if sent_above < 32 && ack.mask >> sent_above != 0 {
            return None;
        }
        let Some(slots) = self.busy.as_mut().map(|b| &mut b.slots) else {
            return Some(Vec::new());
        };
        let oldest_before = slots.front().map(|s| s.seq);
        let mut acked = Vec::new();
        slots.retain(|s| {
            if ack.covers(s.seq) {
                acked.push((s.seq, s.tag));
                false
            } else {
                true
            }
        });
        if slots.front().map(|s| s.seq) != oldest_before
            && let Some(oldest) = slots.front_mut()
        {
            // The new oldest frame counts from 1 again and is due soon (docs/protocol.md
            // section 5): the receiver may have dropped it while the gap before it was open.
            oldest.transmissions = 1;
            oldest.deadline = oldest.deadline.min(now_ms.saturating_add(RTO_INITIAL_MS));
        }
        if self.resend && !acked.is_empty() {
            // A live peer (docs/protocol.md section 5): nothing waits out a long backoff. Over
            // a reliable carrier there is nothing to resend, so nothing to hurry.
            for slot in slots.iter_mut() {
                let (deadline, forward) = live_peer_deadline(slot.deadline, now_ms);
                slot.deadline = deadline;
                slot.brought_forward |= forward;
            }
        }
        // Nothing in flight and nothing attached: an idle session keeps no box
        // (docs/performance.md, "Memory per session"); the next send allocates it again.
        self.tidy();
        Some(acked)
    }

    /// The earliest retransmission deadline.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.dead {
            return None;
        }
        self.slots()?.iter().map(|s| s.deadline).min()
    }

    /// The next overdue frame to resend (its next timer uses `jitter`), or [`Due::Dead`].
    /// Call until `None`. Over [`Carrier::Reliable`] every overdue wait is only counted here,
    /// and nothing but [`Due::Dead`] is returned.
    pub fn poll(&mut self, now_ms: u64, jitter: u16) -> Option<Due<'_>> {
        if self.dead {
            return None;
        }
        let resend = self.resend;
        let slots = &mut self.busy.as_mut()?.slots;
        let idx = loop {
            let idx = slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.deadline <= now_ms)
                .min_by_key(|(_, s)| (s.deadline, s.seq))
                .map(|(i, _)| i)?;
            // Only the oldest frame can declare the peer dead (docs/protocol.md section 5); the
            // slots are in `seq` order, so it is the first.
            // A resend brought forward by a live peer's ack is not counted (section 5, "Live
            // peer").
            let slot = &mut slots[idx];
            let counted = !std::mem::take(&mut slot.brought_forward);
            if counted && idx == 0 && slot.transmissions >= MAX_TRANSMISSIONS {
                self.dead = true;
                return Some(Due::Dead);
            }
            if counted {
                slot.transmissions = (slot.transmissions + 1).min(MAX_TRANSMISSIONS);
            }
            slot.deadline = now_ms.saturating_add(retransmit_wait(slot.transmissions, jitter));
            if resend {
                break idx;
            }
        };
        let slot = &slots[idx];
        Some(Due::Retransmit {
            seq: slot.seq,
            body: &slot.body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window without an attachment.
    type Plain = SendWin<()>;

    fn b(x: u8) -> Box<[u8]> {
        vec![x].into_boxed_slice()
    }

    #[test]
    fn acks_retire_frames_and_return_tags() {
        let mut w = Plain::new();
        assert_eq!(w.push(b(1), Tag::Deliver(10), 0, 0), Some(1));
        assert_eq!(w.push(b(2), Tag::Plain, 0, 0), Some(2));
        assert_eq!(w.push(b(3), Tag::Deliver(11), 0, 0), Some(3));
        // Frame 3 selectively, then 1 and 2 cumulatively.
        assert_eq!(
            w.on_ack(
                Ack {
                    next: 1,
                    mask: 0b10
                },
                0
            ),
            Some(vec![(3, Tag::Deliver(11))])
        );
        assert_eq!(w.in_flight(), 2);
        assert_eq!(
            w.on_ack(Ack { next: 4, mask: 0 }, 0),
            Some(vec![(1, Tag::Deliver(10)), (2, Tag::Plain)])
        );
        assert_eq!(w.in_flight(), 0);
        assert!(w.busy.is_none(), "an idle window keeps no box");
        assert_eq!(
            w.on_ack(Ack { next: 4, mask: 0 }, 0),
            Some(vec![]),
            "duplicate ack is harmless"
        );
        assert_eq!(w.push(b(4), Tag::Plain, 0, 0), Some(4), "and sends again");

        assert_eq!(w.on_ack(Ack { next: 9, mask: 0 }, 0), None, "unsent frames");
        assert_eq!(
            w.on_ack(Ack { next: 4, mask: 1 }, 0),
            None,
            "unsent frame 5"
        );
    }

    #[test]
    fn window_caps_in_flight() {
        let mut w = Plain::new();
        for i in 0..MAX_IN_FLIGHT {
            assert!(w.push(b(0), Tag::Plain, 0, 0).is_some(), "frame {i}");
        }
        assert!(!w.can_send());
        assert_eq!(w.push(b(0), Tag::Plain, 0, 0), None);
        w.on_ack(Ack { next: 2, mask: 0 }, 0).unwrap();
        assert!(w.can_send());
    }

    #[test]
    fn retransmits_with_backoff_then_dies() {
        let mut w = Plain::new();
        w.push(b(7), Tag::Plain, 0, u16::MAX).unwrap();
        assert_eq!(w.poll_timeout(), Some(500));
        assert_eq!(w.poll(499, 0), None);
        let mut now = 500;
        for _ in 2..=MAX_TRANSMISSIONS {
            assert_eq!(
                w.poll(now, u16::MAX),
                Some(Due::Retransmit { seq: 1, body: &[7] })
            );
            now = w.poll_timeout().unwrap();
        }
        assert_eq!(now, 500 + 1000 + 2000 + 4000 + 8000 * 4);
        assert_eq!(w.poll(now, 0), Some(Due::Dead));
        assert!(w.is_dead() && !w.can_send());
        assert_eq!(w.poll(now + 10_000, 0), None);
    }

    #[test]
    fn a_live_peers_ack_brings_resends_forward_without_counting_them() {
        let mut w = Plain::new();
        w.push(b(1), Tag::Plain, 0, u16::MAX).unwrap();
        // Frame 1 at its last counted transmission: the next full wait ends the session.
        let mut now = 0;
        for _ in 2..=MAX_TRANSMISSIONS {
            now = w.poll_timeout().unwrap();
            assert!(matches!(
                w.poll(now, u16::MAX),
                Some(Due::Retransmit { seq: 1, .. })
            ));
        }
        assert_eq!(w.poll_timeout(), Some(now + 8_000));
        // The peer holds frame 2: frame 1 is due 500 ms later, and that resend is not counted.
        w.push(b(2), Tag::Plain, now, u16::MAX).unwrap();
        w.on_ack(Ack { next: 1, mask: 1 }, now + 10).unwrap();
        assert_eq!(w.poll_timeout(), Some(now + 510));
        now += 510;
        assert_eq!(
            w.poll(now, u16::MAX),
            Some(Due::Retransmit { seq: 1, body: &[1] })
        );
        assert_eq!(w.poll_timeout(), Some(now + 8_000), "its own step again");
        now += 8_000;
        assert_eq!(w.poll(now, u16::MAX), Some(Due::Dead));
    }

    #[test]
    fn only_the_oldest_frame_ends_the_session_and_the_next_oldest_restarts() {
        let mut w = Plain::new();
        w.push(b(1), Tag::Plain, 0, u16::MAX).unwrap();
        w.push(b(2), Tag::Plain, 0, u16::MAX).unwrap();
        let mut now = 0;
        let mut resends_of_2 = 0;
        // 38 s: frame 2 (not the oldest) is resent past its 8th transmission without ending it.
        while now < 38_000 {
            while let Some(due) = w.poll(now, u16::MAX) {
                match due {
                    Due::Retransmit { seq: 2, .. } => resends_of_2 += 1,
                    Due::Retransmit { .. } => {}
                    Due::Dead => panic!("dead at {now} ms"),
                }
            }
            now += 100;
        }
        assert!(resends_of_2 >= 6);
        // Frame 1 is acknowledged: frame 2 is the oldest, due within 500 ms, 8 transmissions left.
        assert_eq!(
            w.on_ack(Ack { next: 2, mask: 0 }, now),
            Some(vec![(1, Tag::Plain)])
        );
        assert!(w.poll_timeout().unwrap() <= now + 500);
        let mut transmissions = 1;
        loop {
            let due = w.poll_timeout().unwrap();
            match w.poll(due, u16::MAX) {
                Some(Due::Retransmit { seq: 2, .. }) => transmissions += 1,
                Some(Due::Dead) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(transmissions, MAX_TRANSMISSIONS);
    }

    #[test]
    fn a_stream_window_never_resends_and_dies_with_the_datagram_one() {
        let mut udp = Plain::new();
        let mut ws = Plain::new().with_carrier(Carrier::Reliable);
        udp.push(b(1), Tag::Deliver(1), 0, 0).unwrap();
        ws.push(b(1), Tag::Deliver(1), 0, 0).unwrap();
        let mut udp_resends = 0;
        for now in 1..=40_000 {
            let u = udp.poll(now, 0);
            let w = ws.poll(now, 0);
            if matches!(u, Some(Due::Retransmit { .. })) {
                udp_resends += 1;
            }
            assert!(
                !matches!(w, Some(Due::Retransmit { .. })),
                "resent at {now} ms"
            );
            assert_eq!(u == Some(Due::Dead), w == Some(Due::Dead), "at {now} ms");
            if w == Some(Due::Dead) {
                assert_eq!(now, 19_750);
                break;
            }
        }
        assert_eq!(udp_resends, MAX_TRANSMISSIONS - 1);
        assert!(ws.is_dead());
    }

    #[test]
    fn a_stream_window_does_not_hurry_a_frame_the_peer_skipped() {
        let mut udp = Plain::new();
        let mut ws = Plain::new().with_carrier(Carrier::Reliable);
        for w in [&mut udp, &mut ws] {
            w.push(b(1), Tag::Plain, 0, u16::MAX).unwrap();
            assert!(w.poll(500, u16::MAX).is_none() || w.resend);
            w.push(b(2), Tag::Plain, 500, u16::MAX).unwrap();
            w.on_ack(Ack { next: 1, mask: 1 }, 600).unwrap();
        }
        // Frame 1's second wait ends at 1 500 ms; over UDP the selective ack brought its
        // (uncounted) resend forward to 1 100 ms, over a stream there is nothing to hurry.
        assert_eq!(udp.poll_timeout(), Some(1_100));
        assert_eq!(ws.poll_timeout(), Some(1_500));
    }
}
