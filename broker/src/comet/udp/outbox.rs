//! The UDP session's outbox: broker-originated reliable frames waiting for room in the send
//! window, in order.
//!
//! Events from the router's queue (`Deliver`, `Command`, `Response`, `UploadAck`, `Presence`,
//! the frame worker's `Error`s and every refusal for load) and the shard's own advisory `Error`
//! answers share the window of
//! `MAX_IN_FLIGHT` unacknowledged frames. Everything goes through the outbox, which sends from its
//! front while the window has room and keeps the rest until acks free a slot, so an `Error`
//! taking the last slot only delays the next event, never drops it. The shard pulls the next
//! router event only when the outbox is empty and the window has room, so at most one router
//! event waits here at a time (the rest wait in the router's bounded queue under its counted
//! full-queue policy). The shard's own `Error` answers are bounded by [`MAX_WAITING_ERRORS`]:
//! beyond that (a device flooding bad frames while not acknowledging) an `Error` is refused and
//! the caller counts it; the only other loss is a frame that cannot be encoded, reported by
//! [`Outbox::flush`] for counting.

use std::collections::VecDeque;

use shared_protocol::codes::Code;
use shared_protocol::limits::MAX_IN_FLIGHT;

use crate::router::Outbound;

/// Most shard-originated `Error`s that may wait for window room.
pub const MAX_WAITING_ERRORS: usize = MAX_IN_FLIGHT as usize;

/// What happened to a frame offered to the window by [`Outbox::flush`]'s callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    /// Registered in the window and sent.
    Sent,
    /// The window is full: keep it (and everything after it) for later.
    WindowFull,
    /// It can never be sent (does not encode): dropped, and counted by the caller.
    Unsendable,
}

/// Frames waiting for the send window (see module docs). Boxed and only while something
/// waits: an idle session's outbox is one null pointer.
#[derive(Debug, Default)]
pub struct Outbox {
    #[allow(
        clippy::box_collection,
        reason = "idle, it is one null pointer, not an empty collection"
    )]
    waiting: Option<Box<VecDeque<Outbound>>>,
}

/// Result of one [`Outbox::flush`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Frames sent.
    pub sent: usize,
    /// Frames dropped as unsendable.
    pub unsendable: usize,
}

impl Outbox {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.as_ref().is_none_or(|w| w.is_empty())
    }

    /// Frames waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.as_ref().map_or(0, |w| w.len())
    }

    /// Queues a router event; never refused (the shard pulls one only when the outbox is empty).
    pub fn push_event(&mut self, ev: Outbound) {
        self.waiting.get_or_insert_default().push_back(ev);
    }

    /// Queues the shard's own `Error` about a device frame; `false` (not queued, the caller
    /// counts the drop) when [`MAX_WAITING_ERRORS`] already wait.
    pub fn push_error(&mut self, code: Code, about_seq: u32) -> bool {
        let waiting = self.waiting.get_or_insert_default();
        let errors = waiting
            .iter()
            .filter(|e| matches!(e, Outbound::Error { .. }))
            .count();
        if errors >= MAX_WAITING_ERRORS {
            return false;
        }
        waiting.push_back(Outbound::Error { code, about_seq });
        true
    }

    /// Offers waiting frames to `offer` in order until the window is full or none is left.
    pub fn flush(&mut self, mut offer: impl FnMut(&Outbound) -> Offered) -> Flushed {
        let mut out = Flushed::default();
        let Some(waiting) = self.waiting.as_mut() else {
            return out;
        };
        while let Some(ev) = waiting.front() {
            match offer(ev) {
                Offered::Sent => out.sent += 1,
                Offered::Unsendable => out.unsendable += 1,
                Offered::WindowFull => break,
            }
            waiting.pop_front();
        }
        if waiting.is_empty() {
            // An idle session keeps no buffer (docs/performance.md, "Memory per session").
            self.waiting = None;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shared_protocol::reliability::Ack;

    use super::*;
    use crate::comet::sendwin::{SendWin, Tag};

    /// Offers frames to a real send window, recording what was sent.
    fn offer_to<'a>(
        win: &'a mut SendWin,
        sent: &'a mut Vec<Outbound>,
    ) -> impl FnMut(&Outbound) -> Offered + 'a {
        move |ev| {
            if !win.can_send() {
                return Offered::WindowFull;
            }
            let tag = match ev {
                Outbound::Deliver { msg_id, .. } => Tag::Deliver(*msg_id),
                _ => Tag::Plain,
            };
            win.push(vec![0].into_boxed_slice(), tag, 0, 0)
                .expect("room was checked");
            sent.push(ev.clone());
            Offered::Sent
        }
    }

    #[test]
    fn a_window_full_of_errors_delays_a_deliver_but_never_drops_it() {
        let mut win = SendWin::new();
        let mut sent = Vec::new();
        let mut outbox = Outbox::default();
        // Errors fill every slot of the window.
        for seq in 1..=MAX_IN_FLIGHT {
            assert!(outbox.push_error(Code::MALFORMED, seq));
        }
        outbox.flush(offer_to(&mut win, &mut sent));
        assert!(!win.can_send(), "the errors took every slot");
        // A Deliver arrives while the window is full: it waits.
        let deliver = Outbound::Deliver {
            msg_id: 7,
            from: None,
            payload: Bytes::from_static(b"on"),
        };
        outbox.push_event(deliver.clone());
        let f = outbox.flush(offer_to(&mut win, &mut sent));
        assert_eq!(f, Flushed::default());
        assert_eq!(outbox.len(), 1, "the Deliver still waits");
        // Another Error meanwhile queues behind it.
        assert!(outbox.push_error(Code::TOO_LARGE, 99));
        // The device acknowledges one frame: the Deliver goes first, the Error waits.
        win.on_ack(Ack { next: 2, mask: 0 }, 0).unwrap();
        let f = outbox.flush(offer_to(&mut win, &mut sent));
        assert_eq!(f.sent, 1);
        assert_eq!(sent.last(), Some(&deliver));
        assert_eq!(outbox.len(), 1);
        win.on_ack(Ack { next: 3, mask: 0 }, 0).unwrap();
        outbox.flush(offer_to(&mut win, &mut sent));
        assert!(outbox.is_empty());
        assert!(outbox.waiting.is_none(), "an empty outbox keeps no buffer");
        assert_eq!(
            sent.last(),
            Some(&Outbound::Error {
                code: Code::TOO_LARGE,
                about_seq: 99
            })
        );
    }

    #[test]
    fn waiting_errors_are_bounded_and_events_are_not() {
        let mut outbox = Outbox::default();
        for seq in 0..MAX_WAITING_ERRORS as u32 {
            assert!(outbox.push_error(Code::MALFORMED, seq));
        }
        assert!(!outbox.push_error(Code::MALFORMED, 1000), "refused");
        outbox.push_event(Outbound::UploadAck { upload_id: 1 });
        assert_eq!(outbox.len(), MAX_WAITING_ERRORS + 1);
        // An unsendable frame is dropped and reported; the rest goes on.
        let mut n = 0;
        let f = outbox.flush(|_| {
            n += 1;
            if n == 1 {
                Offered::Unsendable
            } else {
                Offered::Sent
            }
        });
        assert_eq!(
            f,
            Flushed {
                sent: MAX_WAITING_ERRORS,
                unsendable: 1
            }
        );
    }
}
