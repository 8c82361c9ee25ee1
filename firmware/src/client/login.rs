//! One login attempt over shared-protocol's [`ClientHandshake`], robust to answers of a HELLO
//! that was already resent.
//!
//! Over UDP the protocol (docs/protocol.md 3.2, step 6) restarts a silent attempt with a HELLO
//! carrying a **new** `client_nonce` (over WebSocket the handshake is [`Carrier::Reliable`] and
//! never resends, so `previous` stays empty there), and a CHALLENGE does not say which HELLO it
//! answers. When the first HELLO's answer is late (the first packet of a boot waits for ARP, a TCP connect eats into the
//! 1 s wait, a slow link), the CHALLENGE made for nonce 1 reaches a device that now holds
//! nonce 2; a LOGIN with nonce 2 and that cookie earns REJECT `BAD_COOKIE` and a backoff. This
//! was the intermittent first-login failure on the host TAP rig.
//!
//! [`LoginAttempt`] therefore keeps the handshake a resend replaced (`previous`, one level
//! deep). A CHALLENGE is answered by every handshake still waiting for one, the replaced one
//! first, so the LOGIN that matches the CHALLENGE's HELLO is among them; a WELCOME is opened by whichever handshake's
//! LOGIN it accepts. While more than one LOGIN is unanswered, a REJECT (which names no LOGIN)
//! only retires one of them; the REJECT for the last one ends the attempt as before. The cost
//! is a second LOGIN (and a `BAD_COOKIE` REJECT for it) only after a resend.

use heapless::Vec;
use shared_protocol::aead::{PacketAead, SessionAead};
#[cfg(doc)]
use shared_protocol::handshake::Carrier;
use shared_protocol::handshake::{ClientEvent, ClientHandshake, Established};
use shared_protocol::packet::{PacketType, Reject};

/// Buffer for a pending HELLO (128 bytes) or LOGIN (about 110 bytes).
pub const HANDSHAKE_BUF: usize = 160;

/// Largest WELCOME the previous handshake is offered (a WELCOME packet is about 60 bytes).
const WELCOME_MAX: usize = 128;

/// Packets one received packet can make the attempt send (a LOGIN per waiting handshake).
const PENDING: usize = 2;

/// What a received packet meant for the attempt.
pub(crate) enum LoginStep {
    /// Handled; packets to send may be pending.
    Progress,
    /// The broker accepted a LOGIN.
    Established(Established),
    /// The broker refused every LOGIN of the attempt (or the HELLO).
    Rejected(Reject),
    /// Not for this attempt (undecodable, not authentic, wrong state).
    Ignored,
}

/// Packets waiting to be sent, in order, each written straight into its own slot by the
/// handshake that makes it (no copy between making and sending but the one into the caller's
/// buffer).
struct Pending {
    slots: [[u8; HANDSHAKE_BUF]; PENDING],
    lens: [u8; PENDING],
    /// Slots in use, from slot 0.
    count: usize,
}

impl Pending {
    const fn new() -> Self {
        Pending {
            slots: [[0; HANDSHAKE_BUF]; PENDING],
            lens: [0; PENDING],
            count: 0,
        }
    }

    /// Lets `make` write a packet into the next free slot and keeps it if `make` returns its
    /// length. With every slot in use nothing is made: at most [`PENDING`] packets are made
    /// between two drains.
    fn push(&mut self, make: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        let Some(slot) = self.slots.get_mut(self.count) else {
            return false;
        };
        match make(slot) {
            Some(len) if len <= HANDSHAKE_BUF => {
                // HANDSHAKE_BUF fits in a u8.
                self.lens[self.count] = len as u8;
                self.count += 1;
                true
            }
            _ => false,
        }
    }

    /// Copies the oldest packet into `out` and returns its length (`None` when none waits or
    /// `out` is too small; the packet then stays).
    fn pop_into(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        let len = usize::from(self.lens[0]);
        out.get_mut(..len)?.copy_from_slice(&self.slots[0][..len]);
        // Move the rest up (one slot at most: a copy, no rotate or memmove linked).
        for i in 1..self.count {
            self.slots[i - 1] = self.slots[i];
            self.lens[i - 1] = self.lens[i];
        }
        self.count -= 1;
        Some(len)
    }
}

/// One login attempt: the current handshake, the one its last resend replaced, and what to send.
pub(crate) struct LoginAttempt {
    current: ClientHandshake,
    previous: Option<ClientHandshake>,
    pending: Pending,
    /// LOGINs sent in this attempt and not yet answered by a REJECT.
    logins_out: u8,
}

impl LoginAttempt {
    /// Starts with a HELLO using `nonce` (queued for [`Self::pop_pending`]).
    pub(crate) fn start(handshake: ClientHandshake, now_ms: u64, nonce: [u8; 16]) -> Self {
        let mut attempt = LoginAttempt {
            current: handshake,
            previous: None,
            pending: Pending::new(),
            logins_out: 0,
        };
        let current = &mut attempt.current;
        attempt
            .pending
            .push(|out| current.start(now_ms, nonce, out).ok().map(<[u8]>::len));
        attempt
    }

    /// Whether a packet waits for [`Self::pop_pending`].
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.count > 0
    }

    /// Copies the next packet to send into `out` and returns its length (`None` when none
    /// waits or `out` is too small for it).
    pub(crate) fn pop_pending(&mut self, out: &mut [u8]) -> Option<usize> {
        self.pending.pop_into(out)
    }

    /// When [`Self::handle_timeout`] must run (the current handshake's resend time).
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        self.current.poll_timeout()
    }

    /// Resends the HELLO with the fresh `nonce` when the current handshake's wait is over,
    /// keeping the replaced handshake for late answers. Returns whether a HELLO was queued.
    pub(crate) fn handle_timeout(&mut self, now_ms: u64, nonce: [u8; 16]) -> bool {
        if !matches!(self.current.poll_timeout(), Some(d) if d <= now_ms) {
            return false;
        }
        let replaced = self.current.clone();
        let current = &mut self.current;
        let queued = self
            .pending
            .push(|out| match current.handle_timeout(now_ms, nonce, out) {
                Ok(Some(hello)) => Some(hello.len()),
                _ => None,
            });
        if queued {
            self.previous = Some(replaced);
        }
        queued
    }

    /// Feeds one received packet (decrypted in place when it is the WELCOME).
    pub(crate) fn on_packet(&mut self, packet: &mut [u8]) -> LoginStep {
        match packet.get(1).copied() {
            Some(t) if t == PacketType::Challenge as u8 => self.on_challenge(packet),
            Some(t) if t == PacketType::Reject as u8 => self.on_reject(packet),
            _ => self.on_other(packet),
        }
    }

    fn on_challenge(&mut self, packet: &mut [u8]) -> LoginStep {
        // Both handshakes see the same bytes: a CHALLENGE is not modified by decoding.
        let mut answered = false;
        // The replaced handshake answers first: a late CHALLENGE most likely answers the older
        // HELLO, and a WebSocket broker closes the connection after the first refused LOGIN
        // (after an accepted one it ignores further handshake packets).
        for current in [false, true] {
            let handshake = if current {
                Some(&mut self.current)
            } else {
                self.previous.as_mut()
            };
            let Some(handshake) = handshake else { continue };
            let packet = &mut *packet;
            if self
                .pending
                .push(|out| match handshake.on_packet(packet, out) {
                    Ok(ClientEvent::Send(login)) => Some(login.len()),
                    _ => None,
                })
            {
                self.logins_out = self.logins_out.saturating_add(1);
                answered = true;
            }
        }
        if answered {
            LoginStep::Progress
        } else {
            LoginStep::Ignored
        }
    }

    fn on_reject(&mut self, packet: &mut [u8]) -> LoginStep {
        if self.logins_out > 1 {
            // Which LOGIN it refuses is unknown: one fewer is waiting, the others may still win.
            self.logins_out -= 1;
            return LoginStep::Progress;
        }
        // A REJECT makes nothing to send: no output buffer.
        match self.current.on_packet(packet, &mut []) {
            Ok(ClientEvent::Rejected(r)) => LoginStep::Rejected(r),
            _ => match self.previous.as_mut().map(|p| p.on_packet(packet, &mut [])) {
                Some(Ok(ClientEvent::Rejected(r))) => LoginStep::Rejected(r),
                _ => LoginStep::Ignored,
            },
        }
    }

    fn on_other(&mut self, packet: &mut [u8]) -> LoginStep {
        // Neither a WELCOME nor anything else but a CHALLENGE makes a packet to send: no output
        // buffer.
        if <SessionAead as PacketAead>::FAILED_OPEN_KEEPS_INPUT {
            // A WELCOME the current handshake cannot open is left as received (the backend's
            // promise), so the previous handshake gets the same bytes without a copy. One the
            // current handshake opened is under its keys, which the previous one cannot open.
            if let Ok(ClientEvent::Established(e)) = self.current.on_packet(packet, &mut []) {
                return LoginStep::Established(e);
            }
            if let Some(previous) = self.previous.as_mut()
                && let Ok(ClientEvent::Established(e)) = previous.on_packet(packet, &mut [])
            {
                return LoginStep::Established(e);
            }
            return LoginStep::Ignored;
        }
        // A backend that zeroes a packet it failed to open: the previous handshake gets a copy
        // of the bytes as received (a WELCOME is small).
        let copy: Option<Vec<u8, WELCOME_MAX>> = match self.previous {
            Some(_) => Vec::from_slice(packet).ok(),
            None => None,
        };
        if let Ok(ClientEvent::Established(e)) = self.current.on_packet(packet, &mut []) {
            return LoginStep::Established(e);
        }
        if let (Some(previous), Some(mut copy)) = (self.previous.as_mut(), copy)
            && let Ok(ClientEvent::Established(e)) = previous.on_packet(&mut copy, &mut [])
        {
            return LoginStep::Established(e);
        }
        LoginStep::Ignored
    }
}
