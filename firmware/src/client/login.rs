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

use heapless::{Deque, Vec};
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

/// One login attempt: the current handshake, the one its last resend replaced, and what to send.
pub(crate) struct LoginAttempt {
    current: ClientHandshake,
    previous: Option<ClientHandshake>,
    pending: Deque<Vec<u8, HANDSHAKE_BUF>, PENDING>,
    /// LOGINs sent in this attempt and not yet answered by a REJECT.
    logins_out: u8,
}

impl LoginAttempt {
    /// Starts with a HELLO using `nonce` (queued for [`Self::take_pending`]).
    pub(crate) fn start(mut handshake: ClientHandshake, now_ms: u64, nonce: [u8; 16]) -> Self {
        let mut attempt = LoginAttempt {
            current: handshake.clone(),
            previous: None,
            pending: Deque::new(),
            logins_out: 0,
        };
        let mut buf = [0u8; HANDSHAKE_BUF];
        if let Ok(hello) = handshake.start(now_ms, nonce, &mut buf) {
            attempt.queue(hello);
        }
        attempt.current = handshake;
        attempt
    }

    fn queue(&mut self, packet: &[u8]) {
        if let Ok(p) = Vec::from_slice(packet) {
            // At most PENDING packets are produced between two drains.
            let _ = self.pending.push_back(p);
        }
    }

    /// Whether a packet waits for [`Self::take_pending`].
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next packet to send.
    pub(crate) fn take_pending(&mut self) -> Option<Vec<u8, HANDSHAKE_BUF>> {
        self.pending.pop_front()
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
        let mut buf = [0u8; HANDSHAKE_BUF];
        match self.current.handle_timeout(now_ms, nonce, &mut buf) {
            Ok(Some(hello)) => {
                self.previous = Some(replaced);
                self.queue(hello);
                true
            }
            _ => false,
        }
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
        let mut out = [0u8; HANDSHAKE_BUF];
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
            if let Ok(ClientEvent::Send(login)) = handshake.on_packet(packet, &mut out) {
                self.queue(login);
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
        let mut out = [0u8; HANDSHAKE_BUF];
        match self.current.on_packet(packet, &mut out) {
            Ok(ClientEvent::Rejected(r)) => LoginStep::Rejected(r),
            _ => match self
                .previous
                .as_mut()
                .map(|p| p.on_packet(packet, &mut out))
            {
                Some(Ok(ClientEvent::Rejected(r))) => LoginStep::Rejected(r),
                _ => LoginStep::Ignored,
            },
        }
    }

    fn on_other(&mut self, packet: &mut [u8]) -> LoginStep {
        let mut out = [0u8; HANDSHAKE_BUF];
        // The previous handshake gets the bytes as received (a WELCOME is small).
        let copy: Option<Vec<u8, WELCOME_MAX>> = match self.previous {
            Some(_) => Vec::from_slice(packet).ok(),
            None => None,
        };
        if let Ok(ClientEvent::Established(e)) = self.current.on_packet(packet, &mut out) {
            return LoginStep::Established(e);
        }
        if let (Some(previous), Some(mut copy)) = (self.previous.as_mut(), copy)
            && let Ok(ClientEvent::Established(e)) = previous.on_packet(&mut copy, &mut out)
        {
            return LoginStep::Established(e);
        }
        LoginStep::Ignored
    }
}
