//! State-machine fuzzing of the reliability windows, `shared_protocol::reliability::SendWindow`
//! and `RecvWindow` (docs/protocol.md section 5), against a plain model of each.
//!
//! Both sides of every session run these windows (the broker and the device SDK), and the
//! acknowledgements and sequence numbers they read come from the peer, so their bookkeeping must
//! hold whatever the peer sends. The input is a program: byte 0 picks the window (4 or 20 slots:
//! the 20 must be capped at `MAX_IN_FLIGHT`) and the carrier (datagram or reliable); then each
//! step pushes a frame, applies an acknowledgement with arbitrary `next`/`mask`, lets time pass
//! and polls the timers, receives a `seq` (arbitrary, or a frame the sender really sent), holds
//! an early frame, marks the ack sent, or returns the real receiver's ack to the sender.
//!
//! Checked after every step, besides "no panic":
//! * never more than the capacity in flight; `push` numbers frames 1, 2, 3... and refuses only
//!   for the documented reasons; the stored bytes are the pushed bytes;
//! * an ack is refused exactly when it covers a frame never sent, and then changes nothing; an
//!   accepted one retires exactly the in-flight frames it covers, in increasing order;
//! * a resend is of an in-flight frame with its bytes, counted 1..=`MAX_TRANSMISSIONS`, never
//!   over a reliable carrier; `PeerDead` is reported once, then the window is dead; after polling
//!   until `None`, nothing is overdue;
//! * the receiver's outcome matches the model (in order, early, duplicate, out of window); frames
//!   become deliverable strictly in increasing order with no gap, held frames released after the
//!   one that fills the gap; its `Ack` is exactly what was received;
//! * the acknowledgement of a receiver fed only the sender's frames is always accepted.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use shared_protocol::handshake::Carrier;
use shared_protocol::limits::{MAX_IN_FLIGHT, MAX_TRANSMISSIONS, RECEIVE_WINDOW};
use shared_protocol::reliability::{
    Ack, AckError, RecvOutcome, RecvWindow, SendError, SendEvent, SendWindow,
};

/// Bytes stored per frame.
const B: usize = 8;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

/// The receiver as a set: what was recorded (delivered or held), and the next in-order `seq`.
struct RecvModel {
    next: u32,
    held: BTreeSet<u32>,
    /// The last `seq` that became deliverable (0: none yet).
    delivered: u32,
}

impl RecvModel {
    fn new() -> Self {
        RecvModel {
            next: 1,
            held: BTreeSet::new(),
            delivered: 0,
        }
    }

    /// Applies `on_receive(seq)` to the window and the model, checking one against the other.
    fn receive(&mut self, window: &mut RecvWindow, seq: u32, now: u64) {
        let outcome = window.on_receive(seq, now);
        let expected = if seq == 0 {
            RecvOutcome::Unreliable
        } else if seq < self.next || self.held.contains(&seq) {
            RecvOutcome::Duplicate
        } else if seq - self.next > RECEIVE_WINDOW {
            RecvOutcome::OutOfWindow
        } else if seq == self.next {
            let mut released = 0;
            while self.held.remove(&(seq + 1 + released)) {
                released += 1;
            }
            RecvOutcome::InOrder { released }
        } else {
            RecvOutcome::Early
        };
        assert_eq!(outcome, expected, "seq {seq} with next {}", self.next);
        if let RecvOutcome::InOrder { released } = outcome {
            // Deliverable now: seq, then the released ones, continuing the delivered run.
            assert_eq!(
                seq,
                self.delivered + 1,
                "a gap or a step back in delivery order"
            );
            self.delivered = seq + released;
            self.next = self.delivered + 1;
        }
        if seq != 0 {
            assert!(window.ack_pending(), "a reliable seq makes an ack due");
        }
        self.check(window);
    }

    /// Applies `hold(seq)`.
    fn hold(&mut self, window: &mut RecvWindow, seq: u32) {
        let expected =
            seq > self.next && seq - self.next <= RECEIVE_WINDOW && !self.held.contains(&seq);
        assert_eq!(
            window.hold(seq),
            expected,
            "hold({seq}) with next {}",
            self.next
        );
        if expected {
            self.held.insert(seq);
        }
        self.check(window);
    }

    /// The window's ack describes exactly the model.
    fn check(&self, window: &RecvWindow) {
        let ack = window.ack();
        assert_eq!(ack.next, self.next);
        for off in 1..=RECEIVE_WINDOW {
            let seq = self.next + off;
            assert_eq!(
                ack.covers(seq),
                self.held.contains(&seq),
                "ack bit of {seq}"
            );
        }
        assert!(
            self.held
                .iter()
                .all(|&s| s > self.next && s - self.next <= RECEIVE_WINDOW)
        );
    }
}

fn run<const N: usize>(input: &mut Input<'_>, carrier: Carrier) {
    let capacity = N.min(MAX_IN_FLIGHT as usize);
    let reliable = matches!(carrier, Carrier::Reliable);
    let mut send: SendWindow<N, B> = SendWindow::new().with_carrier(carrier);
    // The sender's model: in-flight frames and their bytes, the next seq, whether dead.
    let mut flight: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut next_seq: u32 = 1;
    let mut dead = false;
    let mut dead_reports = 0;
    // A receiver fed only what the sender sent, and one fed anything.
    let mut peer = RecvWindow::new();
    let mut peer_model = RecvModel::new();
    let mut free = RecvWindow::new();
    let mut free_model = RecvModel::new();
    let mut now: u64 = 0;

    while !input.0.is_empty() {
        match input.byte() % 10 {
            // Push a frame (up to B + 2 bytes: the last two sizes are too large).
            0 | 1 => {
                let len = usize::from(input.byte()) % (B + 3);
                let bytes: Vec<u8> = (0..len).map(|i| i as u8 ^ next_seq as u8).collect();
                let jitter = input.u16();
                let result = send.push(&bytes, now, jitter);
                let expected = if dead {
                    Err(SendError::PeerDead)
                } else if flight.len() >= capacity {
                    Err(SendError::WindowFull)
                } else if len > B {
                    Err(SendError::TooLarge)
                } else {
                    Ok(next_seq)
                };
                assert_eq!(result, expected);
                if let Ok(seq) = result {
                    flight.insert(seq, bytes);
                    next_seq += 1;
                }
            }
            // An acknowledgement with arbitrary fields (near the window, or anything).
            2 | 3 => {
                let ack = match input.byte() {
                    k @ 0..=199 => Ack {
                        next: next_seq.saturating_sub(u32::from(k % 8)).max(1) + u32::from(k / 100),
                        mask: input.u32() >> (input.byte() % 32),
                    },
                    _ => Ack {
                        next: input.u32(),
                        mask: input.u32(),
                    },
                };
                let covers_unsent = ack.next > next_seq
                    || (0..=32).any(|i| next_seq.checked_add(i).is_some_and(|s| ack.covers(s)));
                match send.on_ack(ack, now) {
                    Ok(acked) => {
                        assert!(!covers_unsent, "{ack:?} acknowledges a frame never sent");
                        assert!(acked.windows(2).all(|w| w[0] < w[1]), "acked out of order");
                        let covered: Vec<u32> =
                            flight.keys().copied().filter(|&s| ack.covers(s)).collect();
                        assert_eq!(acked.as_slice(), covered.as_slice());
                        for seq in acked {
                            flight.remove(&seq);
                        }
                    }
                    Err(AckError::Unsent) => {
                        assert!(covers_unsent, "{ack:?} refused though every frame was sent");
                    }
                }
            }
            // Time passes; the timers run until nothing is due.
            4 | 5 => {
                now += u64::from(input.u16());
                for _ in 0..(2 * MAX_IN_FLIGHT as usize + 2) {
                    let jitter = input.u16();
                    match send.poll(now, jitter) {
                        None => break,
                        Some(SendEvent::PeerDead) => {
                            dead_reports += 1;
                            assert_eq!(dead_reports, 1, "PeerDead reported twice");
                            dead = true;
                        }
                        Some(SendEvent::Retransmit {
                            seq,
                            bytes,
                            transmission,
                        }) => {
                            assert!(!reliable, "a resend over a reliable carrier");
                            assert_eq!(flight.get(&seq).map(Vec::as_slice), Some(bytes));
                            assert!((1..=MAX_TRANSMISSIONS).contains(&transmission));
                            // The resend reaches the peer receiver when the input says so.
                            if input.byte() & 1 == 1 {
                                peer_model.receive(&mut peer, seq, now);
                            }
                        }
                    }
                }
                assert_eq!(send.is_dead(), dead);
                if !dead {
                    assert!(
                        send.poll_timeout().is_none_or(|t| t > now),
                        "still overdue after polling until None"
                    );
                }
            }
            // An arbitrary seq at the free receiver (near its window, 0, or anything).
            6 => {
                let seq = match input.byte() {
                    k @ 0..=199 => free_model.next.saturating_sub(4) + u32::from(k % 40),
                    200..=219 => 0,
                    _ => input.u32(),
                };
                if input.byte() & 1 == 1 {
                    free_model.receive(&mut free, seq, now);
                } else {
                    free_model.hold(&mut free, seq);
                }
            }
            // An in-flight frame reaches the peer receiver, which holds it if early.
            7 => {
                let pick = usize::from(input.byte());
                if let Some(&seq) = flight.keys().nth(pick % flight.len().max(1)) {
                    peer_model.receive(&mut peer, seq, now);
                    if input.byte() & 1 == 1 && seq > peer_model.next {
                        peer_model.hold(&mut peer, seq);
                    }
                }
            }
            // The peer's ack goes back to the sender: always valid.
            8 => {
                let ack = peer.ack();
                let acked = send
                    .on_ack(ack, now)
                    .expect("a genuine receiver's ack refused");
                for seq in acked {
                    assert!(flight.remove(&seq).is_some());
                }
                if input.byte() & 1 == 1 {
                    peer.on_ack_sent();
                    assert!(!peer.ack_pending());
                }
            }
            // Acks due at the free receiver.
            _ => {
                let due = free.poll_timeout();
                let at = now + u64::from(input.byte());
                assert_eq!(free.poll_ack(at).is_some(), due.is_some_and(|d| d <= at));
                if input.byte() & 1 == 1 {
                    free.on_ack_sent();
                    assert_eq!(free.poll_timeout(), None);
                }
            }
        }
        // The sender against its model after every step.
        assert!(
            send.in_flight() <= capacity,
            "more than the capacity in flight"
        );
        assert_eq!(send.in_flight(), flight.len());
        assert_eq!(send.next_seq(), next_seq);
        for (seq, bytes) in &flight {
            assert_eq!(send.get(*seq), Some(bytes.as_slice()));
        }
        assert_eq!(send.can_send(), !dead && flight.len() < capacity);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let pick = input.byte();
    let carrier = if pick & 1 == 0 {
        Carrier::Datagram
    } else {
        Carrier::Reliable
    };
    if pick & 2 == 0 {
        run::<4>(&mut input, carrier);
    } else {
        run::<20>(&mut input, carrier);
    }
});
