//! One device session on the broker's sans-IO [`Link`], driven by a fuzzed sequence of events:
//! authentic frames of any content from the device, replays, tampered packets, garbage, broker
//! Delivers, device acks and the passage of time. The session is set up by the real handshake.
//!
//! Checked after every step: nothing panics; a replayed, tampered or forged packet is refused
//! (and hands nothing to the caller); the broker never hands the same reliable seq to the caller
//! twice; every `delivered` id is one the broker sent, reported once; every packet the broker
//! emits opens on the device; `poll` always ends (Idle or Dead) within a bounded number of calls.
#![no_main]

use std::collections::BTreeSet;

use broker::comet::link::{Link, Polled};
use broker::comet::sendwin::Tag;
use libfuzzer_sys::fuzz_target;
use shared_protocol::frame::{Body, Frame};
use shared_protocol::handshake::{
    Acceptor, ClientEvent, ClientHandshake, HelloReply, SessionGrant, TerminalRecord, WelcomeParams,
};
use shared_protocol::ids::{Address, IdProfile};
use shared_protocol::keys::{CookieSecret, DeviceKey, PeerAddr};
use shared_protocol::limits::MAX_PACKET;
use shared_protocol::reliability::RecvWindow;
use shared_protocol::session::SecureSession;

/// The broker link's silence timeout, passed to each `Link::poll`.
const TIMEOUT_MS: u64 = 90_000;

/// A broker link and the device's session, through the real handshake at t = 1000 ms.
fn pair() -> (Link, SecureSession) {
    let key = DeviceKey([7; 32]);
    let acceptor = Acceptor::new(IdProfile::Plug, CookieSecret([1; 32]));
    let peer = PeerAddr::V4([127, 0, 0, 1], 9);
    let mut dev = ClientHandshake::new(Address::device(5), key.clone(), 0, 1);
    let (mut a, mut b, mut c) = ([0u8; MAX_PACKET], [0u8; MAX_PACKET], [0u8; MAX_PACKET]);
    let hello = dev.start(1000, [3; 16], &mut a).unwrap().to_vec();
    let mut challenge = match acceptor.on_hello(&peer, &hello, 1000, &mut b).unwrap() {
        HelloReply::Challenge(p) => p.to_vec(),
        other => panic!("{other:?}"),
    };
    let login = match dev.on_packet(&mut challenge, &mut a).unwrap() {
        ClientEvent::Send(p) => p.to_vec(),
        other => panic!("{other:?}"),
    };
    let params = WelcomeParams {
        heartbeat_secs: 30,
        session_timeout_secs: 90,
        max_payload: 1024,
        server_time_ms: 0,
    };
    let lookup = |_| {
        Some(TerminalRecord {
            key: key.clone(),
            last_login_ms: None,
        })
    };
    let grant = SessionGrant {
        session_id: 77,
        broker_nonce: [9; 16],
    };
    let acc = acceptor
        .on_login(&peer, &login, 1001, lookup, grant, &params, &mut c)
        .unwrap();
    let mut welcome = acc.welcome.to_vec();
    let est = match dev.on_packet(&mut welcome, &mut a).unwrap() {
        ClientEvent::Established(e) => e,
        other => panic!("{other:?}"),
    };
    (Link::new(acc.session, 1001), est.session)
}

/// The device's view: its session, what it received, and the packets it sent.
struct Device {
    session: SecureSession,
    recv: RecvWindow,
    sent: Vec<Vec<u8>>,
}

impl Device {
    /// Opens a packet from the broker (it must open) and records a reliable frame's seq.
    fn take(&mut self, packet: &[u8], now: u64) {
        let mut p = packet.to_vec();
        let frame = self
            .session
            .open_frame(&mut p)
            .expect("every packet the broker emits opens on the device");
        if frame.seq != 0 {
            self.recv.on_receive(frame.seq, now);
        }
    }
}

struct Broker {
    link: Link,
    accepted_seqs: BTreeSet<u32>,
    deliver_ids: BTreeSet<u64>,
    delivered: BTreeSet<u64>,
    dead: bool,
}

impl Broker {
    /// Feeds one packet; returns whether it was accepted (authentic and new).
    fn receive(&mut self, packet: &[u8], now: u64) -> bool {
        let mut p = packet.to_vec();
        let Ok(r) = self.link.receive(&mut p, now) else {
            return false;
        };
        if let Some(f) = r.frame
            && f.seq != 0
        {
            assert!(
                self.accepted_seqs.insert(f.seq),
                "reliable seq {} handed over twice",
                f.seq
            );
        }
        for id in r.delivered {
            assert!(self.deliver_ids.contains(&id), "delivered {id}: never sent");
            assert!(self.delivered.insert(id), "delivered {id} reported twice");
        }
        true
    }
}

/// Reads the fuzz input as a sequence of small fields.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.byte()?).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b)
    }
}

fuzz_target!(|data: &[u8]| {
    let (link, session) = pair();
    let mut broker = Broker {
        link,
        accepted_seqs: BTreeSet::new(),
        deliver_ids: BTreeSet::new(),
        delivered: BTreeSet::new(),
        dead: false,
    };
    let mut dev = Device {
        session,
        recv: RecvWindow::new(),
        sent: Vec::new(),
    };
    let mut input = Input(data);
    let mut now = 1001u64;
    let mut next_msg = 1u64;
    let mut out = [0u8; MAX_PACKET];
    while !broker.dead {
        let Some(op) = input.byte() else { break };
        match op % 7 {
            // An authentic device packet carrying any frame that encodes.
            0 => {
                let Some(plain) = input.bytes() else { break };
                let Ok(frame) = Frame::decode(plain) else {
                    continue;
                };
                let Ok(n) = dev.session.seal_frame(&frame, &mut out) else {
                    continue;
                };
                dev.sent.push(out[..n].to_vec());
                broker.receive(&out[..n], now);
            }
            // A replay of an earlier packet: refused.
            1 => {
                let Some(i) = input.byte() else { break };
                if dev.sent.is_empty() {
                    continue;
                }
                let p = dev.sent[usize::from(i) % dev.sent.len()].clone();
                assert!(!broker.receive(&p, now), "a replayed packet was accepted");
            }
            // A tampered copy of an earlier packet (one bit flipped): refused.
            2 => {
                let (Some(i), Some(pos), Some(bit)) = (input.byte(), input.u16(), input.byte())
                else {
                    break;
                };
                if dev.sent.is_empty() {
                    continue;
                }
                let mut p = dev.sent[usize::from(i) % dev.sent.len()].clone();
                let at = usize::from(pos) % p.len();
                p[at] ^= 1 << (bit % 8);
                assert!(!broker.receive(&p, now), "a tampered packet was accepted");
            }
            // Bytes from nowhere: refused.
            3 => {
                let Some(junk) = input.bytes() else { break };
                assert!(!broker.receive(junk, now), "a forged packet was accepted");
            }
            // The broker delivers a message (when its window allows).
            4 => {
                let Some(payload) = input.bytes() else { break };
                let id = next_msg;
                let body = Body::Deliver {
                    msg_id: id,
                    from: None,
                    payload,
                };
                let jitter = u16::from(input.byte().unwrap_or(0));
                if let Ok(n) =
                    broker
                        .link
                        .seal_reliable(body, Tag::Deliver(id), now, jitter, &mut out)
                {
                    next_msg += 1;
                    broker.deliver_ids.insert(id);
                    dev.take(&out[..n], now);
                }
            }
            // The device acknowledges what it received.
            5 => {
                let frame = Frame::unreliable(dev.recv.ack(), Body::AckOnly);
                let n = dev
                    .session
                    .seal_frame(&frame, &mut out)
                    .expect("AckOnly seals");
                dev.recv.on_ack_sent();
                dev.sent.push(out[..n].to_vec());
                assert!(
                    broker.receive(&out[..n], now),
                    "an authentic ack was refused"
                );
            }
            // Time passes; the broker runs its timers until idle or dead.
            _ => {
                let Some(dt) = input.u16() else { break };
                now += u64::from(dt) * 16;
                let jitter = u16::from(input.byte().unwrap_or(0));
                let mut polls = 0;
                loop {
                    polls += 1;
                    assert!(polls < 1000, "poll does not settle");
                    match broker.link.poll(now, TIMEOUT_MS, jitter, &mut out) {
                        Polled::Send(n) | Polled::Resend(n) => dev.take(&out[..n], now),
                        Polled::Dead(_) => {
                            broker.dead = true;
                            break;
                        }
                        Polled::Idle => break,
                    }
                }
            }
        }
    }
});
