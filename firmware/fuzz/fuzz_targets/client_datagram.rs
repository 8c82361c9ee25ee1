//! Fuzzes `firmware::client::DeviceClient::handle_datagram`, the device's entry point for every
//! packet from the network, in each phase: backing off, looking up, handshaking (HELLO sent,
//! then LOGIN sent after a real challenge) and online (over UDP and over WebSocket).
//!
//! To get online the target logs the client in against shared-protocol's broker side
//! (`Acceptor::on_hello`, `on_login`), so it holds the broker's real `SecureSession`. The rest of
//! the input is a program of steps: raw packets; plaintexts sealed with the session keys (which
//! reach the frame decoder behind the AEAD); frames built from fuzzed fields (sequence numbers,
//! acknowledgements, bodies: Deliver, Command, UploadAck, Error, Kick...) sealed the same way,
//! which reach the reliability logic; replays and tampered copies of sealed packets; time
//! passing; uploads and the application taking events.
//!
//! Checked after every packet, besides "no panic":
//! * `rx_packets` counts it, and `rx_dropped` counts it exactly when the result is an error;
//! * a packet refused before it is authenticated (`NotExpected`, `HandshakeIgnored`,
//!   `RxError::Session`: forged, tampered, replayed, wrong session) changes nothing the
//!   application can observe: state, session, statistics other than the two rx counters,
//!   since-id, queues, events, next timeout;
//! * no other error changes the connection state or the session, but `Unexpected`: an
//!   acknowledgement of frames never sent is refused, and the frame's body is still taken;
//! * a replayed or tampered sealed packet is never accepted;
//! * every DATA packet the client sends in the session opens at the broker.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use firmware::DeviceApi;
use firmware::client::{ConnectionState, DeviceClient, RxError};
use firmware::config::{ClientConfig, DeviceConfig, Endpoint};
use firmware::lookup::LookupConfig;
use firmware::rng::SplitMix64;
use firmware::stats::Stats;
use firmware::time::Instant;
use libfuzzer_sys::fuzz_target;
use shared_protocol::codes::Code;
use shared_protocol::frame::{Ack, Body, Frame};
use shared_protocol::handshake::{
    Acceptor, HelloReply, SessionGrant, TerminalRecord, WelcomeParams,
};
use shared_protocol::ids::{Address, IdProfile};
use shared_protocol::keys::{CookieSecret, DeviceKey, PeerAddr};
use shared_protocol::limits::MAX_PACKET;
use shared_protocol::packet::{PacketType, peek_header};
use shared_protocol::session::SecureSession;

const DEVICE_ID: u32 = 42;
const KEY: DeviceKey = DeviceKey([7; 32]);
const PEER: PeerAddr = PeerAddr::V4([10, 0, 2, 15], 40_000);
const ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 7000));
static UDP: [Endpoint<'static>; 1] = [Endpoint::udp(ADDR)];
static WS: [Endpoint<'static>; 1] = [Endpoint::websocket(ADDR, "10.0.2.2:7000", "/device")];
const LOOKUP: LookupConfig<'static> = LookupConfig {
    addr: ADDR,
    host: "10.0.2.2:8080",
    udp: true,
    ws: false,
};
const PARAMS: WelcomeParams = WelcomeParams {
    heartbeat_secs: 30,
    session_timeout_secs: 90,
    max_payload: 1024,
    server_time_ms: 0,
};

/// A plug-sized client: 4 uploads, payloads of up to 384 bytes, 4 events, 2 outbox entries.
type Client = DeviceClient<'static, SplitMix64, 4, 384, 4, 2>;

/// Reads the input a piece at a time (zeros once it runs out).
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
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// Everything the application can observe of the client, but the two rx counters.
#[derive(Debug, PartialEq)]
struct Observed {
    state: ConnectionState,
    session: Option<u32>,
    stats: Stats,
    since_id: u64,
    uploads: usize,
    outbox: usize,
    events: bool,
    timeout: Option<Instant>,
    connection: u32,
    paused: bool,
}

fn observe(client: &Client) -> Observed {
    let mut stats = client.stats();
    stats.rx_packets = 0;
    stats.rx_dropped = 0;
    Observed {
        state: client.state(),
        session: client.session_id(),
        stats,
        since_id: client.since_id(),
        uploads: client.uploads_pending(),
        outbox: client.outbox_pending(),
        events: client.has_events(),
        timeout: client.poll_timeout(),
        connection: client.connection_id(),
        paused: client.input_paused(),
    }
}

/// The broker side of the one login: its acceptor and, once logged in, its session.
struct Broker {
    acceptor: Acceptor,
    session: Option<SecureSession>,
    /// The session id granted.
    session_id: u32,
    /// The last packet sealed for the device (for replays and tampering).
    last_sealed: Vec<u8>,
}

impl Broker {
    /// Hands the client's pending packets to the broker side: HELLO and LOGIN are answered
    /// (the answer is returned), DATA packets of the session must open.
    fn drain(&mut self, client: &mut Client, now: Instant) -> Vec<Vec<u8>> {
        let mut replies = Vec::new();
        let mut buf = [0u8; MAX_PACKET];
        while let Some(n) = client.poll_transmit(now, &mut buf) {
            assert!(n <= MAX_PACKET);
            let packet = &buf[..n];
            let mut out = [0u8; MAX_PACKET];
            match peek_header(packet).map(|(t, _)| t) {
                Ok(PacketType::Hello) => {
                    if let Ok(HelloReply::Challenge(c)) =
                        self.acceptor
                            .on_hello(&PEER, packet, now.as_millis(), &mut out)
                    {
                        replies.push(c.to_vec());
                    }
                }
                Ok(PacketType::Login) if self.session.is_none() => {
                    let record = TerminalRecord {
                        key: KEY,
                        last_login_ms: None,
                    };
                    if let Ok(accepted) = self.acceptor.on_login(
                        &PEER,
                        packet,
                        now.as_millis(),
                        |a| (a == Address::device(DEVICE_ID)).then_some(record),
                        SessionGrant {
                            session_id: self.session_id,
                            broker_nonce: [5; 16],
                        },
                        &PARAMS,
                        &mut out,
                    ) {
                        replies.push(accepted.welcome.to_vec());
                        self.session = Some(accepted.session);
                    }
                }
                Ok(PacketType::Data) if client.session_id() == Some(self.session_id) => {
                    let session = self.session.as_mut().expect("a session");
                    let mut copy = packet.to_vec();
                    assert!(
                        session.open_frame(&mut copy).is_ok(),
                        "a DATA packet of the session that the broker cannot open"
                    );
                }
                _ => {}
            }
        }
        replies
    }

    /// Seals `frame` (or raw `plaintext`) for the device; `None` when the session is gone or
    /// the frame does not encode.
    fn seal(&mut self, frame: Option<&Frame<'_>>, plaintext: &[u8]) -> Option<Vec<u8>> {
        let session = self.session.as_mut()?;
        let mut out = [0u8; MAX_PACKET];
        let n = match frame {
            Some(f) => session.seal_frame(f, &mut out).ok()?,
            None => session.seal(plaintext, &mut out).ok()?,
        };
        self.last_sealed = out[..n].to_vec();
        Some(self.last_sealed.clone())
    }
}

/// Feeds one packet and checks the invariants; returns the result.
fn deliver(client: &mut Client, packet: &[u8], now: Instant) -> Result<(), RxError> {
    let before = observe(client);
    let stats = client.stats();
    let mut copy = packet.to_vec();
    let result = client.handle_datagram(&mut copy, now);
    let after = client.stats();
    assert_eq!(after.rx_packets, stats.rx_packets.saturating_add(1));
    let dropped = u32::from(result.is_err());
    assert_eq!(after.rx_dropped, stats.rx_dropped.saturating_add(dropped));
    match result {
        Err(RxError::NotExpected | RxError::HandshakeIgnored | RxError::Session(_)) => {
            assert_eq!(observe(client), before, "{result:?} changed the client");
        }
        // An acknowledgement of frames never sent is reported, but the frame's body is still
        // taken: a Kick or Goodbye with one ends the session.
        Err(RxError::Unexpected) => {}
        Err(_) => {
            assert_eq!(client.state(), before.state, "{result:?} changed the state");
            assert_eq!(client.session_id(), before.session);
        }
        Ok(()) => {}
    }
    result
}

/// A frame from fuzzed fields, as a broker (or a confused one) might send it.
fn frame<'p>(input: &mut Input<'_>, payload: &'p [u8]) -> Frame<'p> {
    let seq = match input.byte() {
        s @ 0..=199 => u32::from(s % 40),
        _ => input.u32(),
    };
    let ack = match input.byte() {
        a @ 0..=199 => Ack {
            next: u32::from(a % 8),
            mask: u32::from(input.byte() % 8),
        },
        _ => Ack {
            next: input.u32(),
            mask: input.u32(),
        },
    };
    let id = u32::from(input.byte() % 8);
    let body = match input.byte() % 14 {
        0 => Body::Pong {
            server_time_ms: u64::from(input.u32()),
        },
        1 => Body::AckOnly,
        2 => Body::Deliver {
            msg_id: u64::from(input.u32()),
            from: (id & 1 == 1).then_some(Address::phone(id)),
            payload,
        },
        3 => Body::UploadAck { upload_id: id },
        4 => Body::Command {
            cmd_id: id,
            name: "on",
            payload,
        },
        5 => Body::Response {
            req_id: id,
            status: 0,
            payload,
        },
        6 => Body::Presence {
            who: Address::device(id),
            online: id & 1 == 0,
        },
        7 => Body::Kick {
            reason: Code(u16::from(input.byte())),
        },
        8 => Body::Goodbye { reason: Code(0) },
        9 => Body::Error {
            code: Code(u16::from(input.byte())),
            about_seq: id,
        },
        10 => Body::Ping,
        11 => Body::Upload {
            upload_id: id,
            topic: "t",
            payload,
        },
        12 => Body::Welcome {
            session_id: id,
            heartbeat_secs: 30,
            session_timeout_secs: 90,
            max_payload: 1024,
            server_time_ms: 0,
        },
        _ => Body::CommandResult {
            cmd_id: id,
            status: 0,
            payload,
        },
    };
    Frame { seq, ack, body }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let phase = input.byte() % 7;
    let (endpoints, lookup): (&'static [Endpoint<'static>], _) = match phase {
        1 => (&UDP, Some(LOOKUP)),
        5 => (&WS, None),
        _ => (&UDP, None),
    };
    let device = DeviceConfig {
        device_id: DEVICE_ID,
        key: KEY,
        endpoints,
        lookup,
        since_id: 0,
    };
    let mut now = Instant::from_millis(1_000);
    let mut client = Client::new(device, ClientConfig::default(), SplitMix64::new(1), now);
    let mut broker = Broker {
        acceptor: Acceptor::new(IdProfile::Plug, CookieSecret([3; 32])),
        session: None,
        session_id: 77,
        last_sealed: Vec::new(),
    };
    // Phase 0: backing off (the first attempt not started); 6: closed.
    if phase == 6 {
        client.close();
    }
    if (1..=5).contains(&phase) {
        client.handle_timeout(now);
    }
    // Log in as far as the phase says: 2 stops with HELLO sent, 3 with LOGIN sent.
    if phase >= 2 && phase <= 5 {
        let steps = if phase == 2 {
            0
        } else if phase == 3 {
            1
        } else {
            2
        };
        let mut replies = broker.drain(&mut client, now);
        for _ in 0..steps {
            for reply in std::mem::take(&mut replies) {
                deliver(&mut client, &reply, now).expect("a genuine login packet");
            }
            replies = broker.drain(&mut client, now);
        }
        if phase >= 4 {
            assert_eq!(client.state(), ConnectionState::Online, "the real login");
        }
    }

    while !input.0.is_empty() {
        match input.byte() % 9 {
            // A raw packet.
            0 => {
                let len = usize::from(u16::from_le_bytes([input.byte(), input.byte()]));
                let packet = input.take(len % (MAX_PACKET + 100)).to_vec();
                let _ = deliver(&mut client, &packet, now);
            }
            // A plaintext sealed with the session keys: the frame decoder behind the AEAD.
            1 => {
                let len = usize::from(input.byte());
                let plaintext = input.take(len).to_vec();
                if let Some(p) = broker.seal(None, &plaintext) {
                    let _ = deliver(&mut client, &p, now);
                }
            }
            // A frame from fuzzed fields, sealed: the reliability logic and the bodies.
            2 | 3 => {
                let len = usize::from(input.byte()) * 2;
                let payload = input.take(len).to_vec();
                let f = frame(&mut input, &payload);
                if let Some(p) = broker.seal(Some(&f), &[]) {
                    let _ = deliver(&mut client, &p, now);
                }
            }
            // The last sealed packet again: a replay is refused.
            4 => {
                let p = broker.last_sealed.clone();
                if !p.is_empty() {
                    assert!(deliver(&mut client, &p, now).is_err(), "a replay accepted");
                }
            }
            // The last sealed packet with one byte changed: never accepted.
            5 => {
                let mut p = broker.last_sealed.clone();
                let (at, x) = (usize::from(input.byte()), input.byte() | 1);
                if !p.is_empty() {
                    let i = at % p.len();
                    p[i] ^= x;
                    assert!(
                        deliver(&mut client, &p, now).is_err(),
                        "a tampered packet accepted"
                    );
                }
            }
            // Time passes; the client's timers run and what it sends goes to the broker.
            6 => {
                now = now.plus_millis(u64::from(input.byte()) * 100);
                client.handle_timeout(now);
                for reply in broker.drain(&mut client, now) {
                    let _ = deliver(&mut client, &reply, now);
                }
            }
            // The application uploads.
            7 => {
                let len = usize::from(input.byte());
                let payload = input.take(len).to_vec();
                let _ = client.upload("power", &payload);
                for reply in broker.drain(&mut client, now) {
                    let _ = deliver(&mut client, &reply, now);
                }
            }
            // The application takes an event.
            _ => {
                let _ = client.poll_event();
            }
        }
        // The client's answers (acks, pings, resends) go out; their DATA must open.
        let _ = broker.drain(&mut client, now);
    }
});
