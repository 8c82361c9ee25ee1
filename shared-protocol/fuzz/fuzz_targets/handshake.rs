//! State-machine fuzzing of the login handshake and the secure session.
//!
//! The input is a program: each step picks an operation (deliver a genuine or a mutated packet to
//! the broker or the device, advance the clock, time out, seal, open, replay...). Invariants
//! checked: nothing panics; a mutated packet never authenticates; an established pair always
//! exchanges frames in both directions; replays are always refused. Two acceptors share one cookie
//! secret (the worst case for a replayed LOGIN) and each draws a fresh broker nonce per LOGIN.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared_protocol::frame::{Ack, Body, Frame};
use shared_protocol::handshake::{
    Acceptor, ClientEvent, ClientHandshake, HelloReply, SessionGrant, TerminalRecord, WelcomeParams,
};
use shared_protocol::ids::{Address, IdProfile};
use shared_protocol::keys::{CookieSecret, DeviceKey, PeerAddr};
use shared_protocol::session::{SecureSession, SessionError};

const PARAMS: WelcomeParams = WelcomeParams {
    heartbeat_secs: 30,
    session_timeout_secs: 90,
    max_payload: 1024,
    server_time_ms: 0,
};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let key = DeviceKey([7; 32]);
    let acceptors = [
        Acceptor::new(IdProfile::Plug, CookieSecret([9; 32])),
        Acceptor::new(IdProfile::Plug, CookieSecret([9; 32])),
    ];
    // Stand-in for the broker's CSPRNG: a distinct nonce for every LOGIN handled.
    let mut grants: u32 = 0;
    let mut grant = |session_id: u32| {
        grants = grants.wrapping_add(1);
        let mut broker_nonce = [0x5a; 16];
        broker_nonce[..4].copy_from_slice(&grants.to_le_bytes());
        SessionGrant {
            session_id,
            broker_nonce,
        }
    };
    let peer = PeerAddr::V4([192, 0, 2, 1], 1000);
    let mut client = ClientHandshake::new(Address::device(42), key.clone(), 0, 1);
    let mut now: u64 = 1_000_000;
    let mut nonce_ctr: u8 = 0;
    let mut last_login: Option<u64> = None;
    // The last packet each way, and the sessions once established.
    let mut to_broker: Vec<u8> = Vec::new();
    let mut to_device: Vec<u8> = Vec::new();
    let mut device: Option<SecureSession> = None;
    let mut broker: Option<SecureSession> = None;
    let mut sent_data: Vec<Vec<u8>> = Vec::new();
    let mut out = [0u8; 1400];

    let mut buf = [0u8; 256];
    if let Ok(h) = client.start(now, [0; 16], &mut buf) {
        to_broker = h.to_vec();
    }

    while let Some(op) = input.byte() {
        match op % 10 {
            // Broker handles the pending device packet (HELLO or LOGIN), possibly mutated.
            0 | 1 => {
                let acceptor = &acceptors[usize::from(input.byte().unwrap_or(0) & 1)];
                let mut pkt = to_broker.clone();
                let mutated = op % 10 == 1 && !pkt.is_empty();
                if mutated {
                    let at = input.byte().unwrap_or(0) as usize % pkt.len();
                    pkt[at] ^= input.byte().unwrap_or(1) | 1;
                }
                if let Ok(HelloReply::Challenge(c)) = acceptor.on_hello(&peer, &pkt, now, &mut out)
                {
                    to_device = c.to_vec();
                }
                let res = acceptor.on_login(
                    &peer,
                    &pkt,
                    now,
                    |_| {
                        Some(TerminalRecord {
                            key: key.clone(),
                            last_login_ms: last_login,
                        })
                    },
                    grant(1 + u32::from(nonce_ctr)),
                    &PARAMS,
                    &mut out,
                );
                if let Ok(acc) = res {
                    // A mutated LOGIN may still decode the same (padding), but must be genuine:
                    // its proof verified, so it matches what the client built.
                    assert!(last_login.is_none_or(|l| acc.login_timestamp_ms > l));
                    last_login = Some(acc.login_timestamp_ms);
                    to_device = acc.welcome.to_vec();
                    broker = Some(acc.session);
                }
            }
            // Device handles the pending broker packet, possibly mutated.
            2 | 3 => {
                let mut pkt = to_device.clone();
                if op % 10 == 3 && !pkt.is_empty() {
                    let at = input.byte().unwrap_or(0) as usize % pkt.len();
                    pkt[at] ^= input.byte().unwrap_or(1) | 1;
                }
                let mut b = [0u8; 256];
                match client.on_packet(&mut pkt, &mut b) {
                    Ok(ClientEvent::Send(l)) => to_broker = l.to_vec(),
                    Ok(ClientEvent::Established(e)) => device = Some(e.session),
                    _ => {}
                }
            }
            // Time passes; maybe a timeout restarts the handshake.
            4 => {
                now += u64::from(input.byte().unwrap_or(0)) * 250;
                nonce_ctr = nonce_ctr.wrapping_add(1);
                let mut b = [0u8; 256];
                if let Ok(Some(h)) = client.handle_timeout(now, [nonce_ctr; 16], &mut b) {
                    to_broker = h.to_vec();
                }
            }
            // Arbitrary bytes to every entry point.
            5 => {
                let n = input.byte().unwrap_or(0) as usize * 5;
                let mut raw = input.take(n).to_vec();
                let _ = acceptors[0].on_hello(&peer, &raw, now, &mut out);
                let _ =
                    acceptors[1].on_login(&peer, &raw, now, |_| None, grant(1), &PARAMS, &mut out);
                let mut b = [0u8; 256];
                let _ = client.on_packet(&mut raw.clone(), &mut b);
                if let Some(s) = broker.as_mut() {
                    let _ = s.open_frame(&mut raw);
                }
            }
            // Device seals a frame; broker opens it (genuine) or a mutation (must fail).
            6 | 7 => {
                let (Some(d), Some(b)) = (device.as_mut(), broker.as_mut()) else {
                    continue;
                };
                if d.session_id() != b.session_id() {
                    continue;
                }
                let len = input.byte().unwrap_or(0) as usize;
                let payload = input.take(len).to_vec();
                let frame = Frame {
                    seq: 1,
                    ack: Ack { next: 1, mask: 0 },
                    body: Body::Send {
                        to: Address::device(9),
                        payload: &payload,
                    },
                };
                let mut pkt = [0u8; 1200];
                let Ok(n) = d.seal_frame(&frame, &mut pkt) else {
                    continue;
                };
                let mut p = pkt[..n].to_vec();
                sent_data.push(p.clone());
                if op % 10 == 7 {
                    let at = input.byte().unwrap_or(0) as usize % n;
                    p[at] ^= input.byte().unwrap_or(1) | 1;
                    assert!(b.open_frame(&mut p).is_err(), "mutated DATA authenticated");
                } else {
                    let got = b.open_frame(&mut p).expect("genuine DATA must open");
                    assert_eq!(got, frame);
                }
            }
            // Replay an earlier DATA packet: never accepted twice.
            8 => {
                let Some(b) = broker.as_mut() else { continue };
                if sent_data.is_empty() {
                    continue;
                }
                let i = input.byte().unwrap_or(0) as usize % sent_data.len();
                let mut p = sent_data[i].clone();
                let first = b.open_frame(&mut p).is_ok();
                let mut again = sent_data[i].clone();
                let second = b.open_frame(&mut again);
                assert!(second.is_err());
                if first {
                    assert_eq!(second.unwrap_err(), SessionError::Replayed);
                }
            }
            // Broker -> device DATA.
            _ => {
                let (Some(d), Some(b)) = (device.as_mut(), broker.as_mut()) else {
                    continue;
                };
                if d.session_id() != b.session_id() {
                    continue;
                }
                let frame = Frame::unreliable(
                    Ack { next: 1, mask: 0 },
                    Body::Pong {
                        server_time_ms: now,
                    },
                );
                let mut pkt = [0u8; 64];
                if let Ok(n) = b.seal_frame(&frame, &mut pkt) {
                    assert_eq!(d.open_frame(&mut pkt[..n]).expect("b2d opens"), frame);
                }
            }
        }
    }
});
