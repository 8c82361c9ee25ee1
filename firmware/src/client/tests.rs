//! Client tests: the real client against an in-memory broker built from shared-protocol's
//! server handshake ([`Acceptor`]) and session, on a fake clock. No sockets, no sleeps.

use std::collections::VecDeque;
use std::string::String;
use std::vec;
use std::vec::Vec;

use shared_protocol::codes::Code;
use shared_protocol::frame::{Ack, Body, Frame};
use shared_protocol::handshake::{
    Acceptor, HelloReply, SessionGrant, TerminalRecord, WelcomeParams, reject_packet,
};
use shared_protocol::ids::{Address, IdProfile};
use shared_protocol::keys::{CookieSecret, DeviceKey, PeerAddr};
use shared_protocol::limits::MAX_PACKET;
use shared_protocol::packet::{PacketType, peek_header};
use shared_protocol::reliability::{RecvOutcome, RecvWindow};
use shared_protocol::session::SecureSession;

use super::*;
use crate::backoff::BackoffConfig;
use crate::config::Endpoint;
use crate::lookup::{LookupConfig, LookupError};
use crate::queue::FullPolicy;
use crate::rng::SplitMix64;

pub(crate) const DEVICE_ID: u32 = 42;
pub(crate) const KEY: DeviceKey = DeviceKey([7; 32]);
const PEER: PeerAddr = PeerAddr::V4([10, 0, 2, 15], 40_000);

pub(crate) static ENDPOINTS: [Endpoint<'static>; 2] = [
    Endpoint::udp(core::net::SocketAddr::V4(core::net::SocketAddrV4::new(
        core::net::Ipv4Addr::new(10, 0, 2, 2),
        7000,
    ))),
    Endpoint::udp(core::net::SocketAddr::V4(core::net::SocketAddrV4::new(
        core::net::Ipv4Addr::new(10, 0, 2, 3),
        7000,
    ))),
];

/// UDP addresses of the brokers 2 and 3, only known through the lookup.
const LOOKED_UP: [&str; 2] = ["10.0.3.1:7000", "10.0.3.2:7000"];

/// Where the test's lookup is served.
static LOOKUP: LookupConfig<'static> = LookupConfig {
    addr: core::net::SocketAddr::V4(core::net::SocketAddrV4::new(
        core::net::Ipv4Addr::new(10, 0, 2, 2),
        8080,
    )),
    host: "10.0.2.2:8080",
    udp: true,
    ws: false,
};

/// A broker's lookup answer listing `udp` addresses in order.
fn lookup_answer(udp: &[&str]) -> Vec<u8> {
    let nodes: Vec<String> = udp
        .iter()
        .enumerate()
        .map(|(i, a)| std::format!(r#"{{"id":"c{i}","udp":"{a}","ws":"ws://{a}/"}}"#))
        .collect();
    let body = std::format!(r#"{{"nodes":[{}],"stale":false}}"#, nodes.join(","));
    std::format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What the broker received from the device (owned copies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Got {
    Ping,
    AckOnly,
    Goodbye,
    Upload {
        seq: u32,
        id: u32,
        topic: String,
        payload: Vec<u8>,
    },
    CommandResult {
        cmd_id: u32,
        status: u16,
        payload: Vec<u8>,
    },
    Request {
        req_id: u32,
        path: String,
    },
    Send {
        to: Address,
        payload: Vec<u8>,
    },
}

/// One broker endpoint: the real server handshake and session, minimal routing.
pub(crate) struct Broker {
    acceptor: Acceptor,
    key: DeviceKey,
    up: bool,
    last_login_ms: Option<u64>,
    session: Option<SecureSession>,
    recv: RecvWindow,
    next_seq: u32,
    pub(crate) got: Vec<Got>,
    pub(crate) logins: Vec<u64>,
    /// The upload epoch of every accepted LOGIN, in order.
    pub(crate) epochs: Vec<u64>,
    /// Outcome of every LOGIN, in arrival order.
    login_results: Vec<&'static str>,
    hellos: Vec<u64>,
    auto_upload_ack: bool,
    /// Refuse this many of the next uploads with `Error RATE_LIMITED` (not stored).
    refuse_uploads: usize,
    /// Upload ids refused, in order.
    refused: Vec<u32>,
    /// Stop answering (and acknowledging) data once online, but keep the session.
    silent: bool,
    params: WelcomeParams,
    next_session_id: u32,
}

impl Broker {
    pub(crate) fn new(key: DeviceKey) -> Self {
        Broker {
            acceptor: Acceptor::new(IdProfile::Plug, CookieSecret([3; 32])),
            key,
            up: true,
            last_login_ms: None,
            session: None,
            recv: RecvWindow::new(),
            next_seq: 1,
            got: Vec::new(),
            logins: Vec::new(),
            epochs: Vec::new(),
            login_results: Vec::new(),
            hellos: Vec::new(),
            auto_upload_ack: true,
            refuse_uploads: 0,
            refused: Vec::new(),
            silent: false,
            params: WelcomeParams {
                heartbeat_secs: 30,
                session_timeout_secs: 90,
                max_payload: 1024,
                server_time_ms: 0,
            },
            next_session_id: 100,
        }
    }

    pub(crate) fn on_packet(&mut self, packet: &[u8], now: u64, replies: &mut VecDeque<Vec<u8>>) {
        if !self.up {
            return;
        }
        let mut out = [0u8; MAX_PACKET];
        match peek_header(packet).map(|(t, _)| t) {
            Ok(PacketType::Hello) => {
                self.hellos.push(now);
                if let Ok(HelloReply::Challenge(c) | HelloReply::Reject { packet: c, .. }) =
                    self.acceptor.on_hello(&PEER, packet, now, &mut out)
                {
                    replies.push_back(c.to_vec());
                }
            }
            Ok(PacketType::Login) => {
                let record = TerminalRecord {
                    key: self.key.clone(),
                    last_login_ms: self.last_login_ms,
                };
                self.next_session_id += 1;
                let sid = self.next_session_id;
                match self.acceptor.on_login(
                    &PEER,
                    packet,
                    now,
                    |a| (a == Address::device(DEVICE_ID)).then_some(record),
                    SessionGrant {
                        session_id: sid,
                        // Distinct per login, as a real broker's random nonce is.
                        broker_nonce: [sid as u8; 16],
                    },
                    &self.params,
                    &mut out,
                ) {
                    Ok(accepted) => {
                        self.login_results.push("accepted");
                        self.last_login_ms = Some(accepted.login_timestamp_ms);
                        self.logins.push(accepted.since_id);
                        self.epochs.push(accepted.upload_epoch);
                        replies.push_back(accepted.welcome.to_vec());
                        self.session = Some(accepted.session);
                        self.recv = RecvWindow::new();
                        self.next_seq = 1;
                    }
                    Err(e) => {
                        self.login_results.push("refused");
                        if let Some(code) = e.code() {
                            let p = reject_packet(code, 0, &mut out).unwrap();
                            replies.push_back(p.to_vec());
                        }
                    }
                }
            }
            Ok(PacketType::Data) => self.on_data(packet, now, replies),
            _ => {}
        }
    }

    fn on_data(&mut self, packet: &[u8], now: u64, replies: &mut VecDeque<Vec<u8>>) {
        if self.silent {
            return;
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let mut copy = packet.to_vec();
        let Ok(frame) = session.open_frame(&mut copy) else {
            return;
        };
        // This broker holds no early frames (the smallest receiver section 5 allows): a frame
        // ahead of a gap is dropped unrecorded and the device resends it.
        if frame.seq != 0
            && self.recv.on_receive(frame.seq, now) != (RecvOutcome::InOrder { released: 0 })
        {
            let ack = self.recv.ack();
            self.send(Frame::unreliable(ack, Body::AckOnly), replies);
            return;
        }
        let seq = frame.seq;
        if let Body::Upload { upload_id, .. } = frame.body
            && self.refuse_uploads > 0
        {
            self.refuse_uploads -= 1;
            self.refused.push(upload_id);
            let error = Body::Error {
                code: Code::RATE_LIMITED,
                about_seq: seq,
            };
            self.send_reliable(error, replies);
            self.recv.on_ack_sent();
            return;
        }
        let got = match frame.body {
            Body::Ping => {
                let ack = self.recv.ack();
                self.send(
                    Frame::unreliable(
                        ack,
                        Body::Pong {
                            server_time_ms: now,
                        },
                    ),
                    replies,
                );
                Got::Ping
            }
            Body::AckOnly => Got::AckOnly,
            Body::Goodbye { .. } => {
                self.session = None;
                Got::Goodbye
            }
            Body::Upload {
                upload_id,
                topic,
                payload,
            } => Got::Upload {
                seq,
                id: upload_id,
                topic: topic.into(),
                payload: payload.to_vec(),
            },
            Body::CommandResult {
                cmd_id,
                status,
                payload,
            } => Got::CommandResult {
                cmd_id,
                status,
                payload: payload.to_vec(),
            },
            Body::Request { req_id, path, .. } => Got::Request {
                req_id,
                path: path.into(),
            },
            Body::Send { to, payload } => Got::Send {
                to,
                payload: payload.to_vec(),
            },
            other => panic!("unexpected body from device: {other:?}"),
        };
        self.got.push(got.clone());
        if seq != 0 {
            match got {
                Got::Upload { id, .. } if self.auto_upload_ack => {
                    self.send_reliable(Body::UploadAck { upload_id: id }, replies);
                }
                _ => {
                    let ack = self.recv.ack();
                    self.send(Frame::unreliable(ack, Body::AckOnly), replies);
                }
            }
            self.recv.on_ack_sent();
        }
    }

    fn send(&mut self, frame: Frame<'_>, replies: &mut VecDeque<Vec<u8>>) {
        let session = self.session.as_mut().expect("broker session");
        let mut out = [0u8; MAX_PACKET];
        let n = session.seal_frame(&frame, &mut out).unwrap();
        replies.push_back(out[..n].to_vec());
    }

    pub(crate) fn send_reliable(&mut self, body: Body<'_>, replies: &mut VecDeque<Vec<u8>>) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.send_with_seq(seq, body, replies);
        seq
    }

    fn send_with_seq(&mut self, seq: u32, body: Body<'_>, replies: &mut VecDeque<Vec<u8>>) {
        let ack = self.recv.ack();
        self.send(Frame { seq, ack, body }, replies);
    }

    pub(crate) fn uploads(&self) -> Vec<(u32, u32)> {
        self.got
            .iter()
            .filter_map(|g| match g {
                Got::Upload { seq, id, .. } => Some((*seq, *id)),
                _ => None,
            })
            .collect()
    }
}

/// The test client's payload size: room for the plug's largest report.
const TP: usize = crate::plug::REPORT_MAX;

/// The default event queue; an outbox of 4, so one test can hold a result, a request and a send.
type TestClient = DeviceClient<'static, SplitMix64, 4, TP, { super::EVENT_QUEUE }, 4>;

/// The client, two brokers, a clock and lossy links.
struct Net {
    client: TestClient,
    /// Brokers 0 and 1 at the static endpoints, 2 and 3 at [`LOOKED_UP`] addresses.
    brokers: Vec<Broker>,
    /// What the node lookup answers (`None`: it never answers).
    lookup_answer: Option<Result<Vec<u8>, LookupError>>,
    /// Lookups the client asked for.
    lookups: usize,
    now: Instant,
    to_client: VecDeque<Vec<u8>>,
    /// Drop device-to-broker packets while true.
    lose_up: bool,
    /// Drop broker-to-device packets while true.
    lose_down: bool,
    /// Drop each packet, either way, with this chance (percent), drawn from the generator.
    random_loss: Option<(u64, SplitMix64)>,
    /// Hold broker-to-device packets (in `held`) while true: a slow downlink.
    hold_down: bool,
    held: VecDeque<Vec<u8>>,
    events: Vec<Event<TP>>,
    /// (time, connection_id, endpoint index) of each transmitted packet.
    sent: Vec<(Instant, u32, usize)>,
}

fn client_config() -> ClientConfig {
    ClientConfig {
        backoff: BackoffConfig {
            base_ms: 1_000,
            cap_ms: 8_000,
        },
        ..ClientConfig::default()
    }
}

impl Net {
    fn new() -> Self {
        Self::with_keys(KEY, KEY)
    }

    fn with_keys(device: DeviceKey, broker: DeviceKey) -> Self {
        Self::build(device, broker, &ENDPOINTS, None, client_config())
    }

    /// A client asking [`LOOKUP`] first, with `endpoints` as its static list.
    fn with_lookup(endpoints: &'static [Endpoint<'static>]) -> Self {
        Self::build(KEY, KEY, endpoints, Some(LOOKUP), client_config())
    }

    fn build(
        device: DeviceKey,
        broker: DeviceKey,
        endpoints: &'static [Endpoint<'static>],
        lookup: Option<LookupConfig<'static>>,
        client: ClientConfig,
    ) -> Self {
        let config = DeviceConfig {
            device_id: DEVICE_ID,
            key: device,
            endpoints,
            lookup,
            since_id: 0,
        };
        Net {
            client: DeviceClient::new(config, client, SplitMix64::new(1), Instant::ZERO),
            brokers: (0..4).map(|_| Broker::new(broker.clone())).collect(),
            lookup_answer: None,
            lookups: 0,
            now: Instant::ZERO,
            to_client: VecDeque::new(),
            lose_up: false,
            lose_down: false,
            random_loss: None,
            hold_down: false,
            held: VecDeque::new(),
            events: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Exchanges packets until nothing moves at the current instant.
    fn settle(&mut self) {
        let mut buf = [0u8; MAX_PACKET];
        for _ in 0..1000 {
            let mut moved = false;
            if let Some(req) = self.client.lookup_request()
                && let Some(answer) = &self.lookup_answer
            {
                moved = true;
                self.lookups += 1;
                let answer = answer.clone();
                self.client
                    .lookup_done(req.id, answer.as_deref().map_err(|e| *e), self.now);
            }
            while let Some(n) = self.client.poll_transmit(self.now, &mut buf) {
                moved = true;
                let endpoint = self.client.endpoint().unwrap().0;
                self.sent
                    .push((self.now, self.client.connection_id(), endpoint));
                if !self.lose_up && !self.randomly_lost() {
                    let i = self.broker_index();
                    let now = self.now.as_millis();
                    self.brokers[i].on_packet(&buf[..n], now, &mut self.to_client);
                }
            }
            while let Some(mut p) = self.to_client.pop_front() {
                moved = true;
                if self.hold_down {
                    self.held.push_back(p);
                } else if !self.lose_down && !self.randomly_lost() {
                    let _ = self.client.handle_datagram(&mut p, self.now);
                }
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    /// Whether the random loss, if set, drops the next packet.
    fn randomly_lost(&mut self) -> bool {
        self.random_loss
            .as_mut()
            .is_some_and(|(pct, rng)| rng.next_u64() % 100 < *pct)
    }

    /// Runs the event loop until `until` (inclusive).
    fn run_until(&mut self, until: Instant) {
        self.settle();
        while let Some(t) = self.client.poll_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.client.handle_timeout(self.now);
            self.settle();
        }
        self.now = self.now.max(until);
        self.client.handle_timeout(self.now);
        self.settle();
    }

    /// The broker at the current endpoint's address.
    fn broker_index(&self) -> usize {
        let addr = self.client.endpoint().unwrap().1.addr;
        ENDPOINTS
            .iter()
            .map(|e| e.addr)
            .chain(LOOKED_UP.iter().map(|a| a.parse().unwrap()))
            .position(|a| a == addr)
            .expect("a known broker address")
    }

    /// Delivers the held downlink packets, oldest first.
    fn release_held(&mut self) {
        self.hold_down = false;
        self.to_client.extend(self.held.drain(..));
        self.settle();
    }

    fn run_for(&mut self, ms: u64) {
        let until = self.now.plus_millis(ms);
        self.run_until(until);
    }

    fn take_events(&mut self) -> Vec<Event<TP>> {
        core::mem::take(&mut self.events)
    }

    /// The broker of the current endpoint sends a reliable body now.
    fn broker_sends(&mut self, body: Body<'_>) -> u32 {
        let i = self.broker_index();
        let mut q = VecDeque::new();
        let seq = self.brokers[i].send_reliable(body, &mut q);
        self.to_client.extend(q);
        self.settle();
        seq
    }

    fn broker_sends_frame(&mut self, seq: u32, body: Body<'_>) {
        let i = self.broker_index();
        let mut q = VecDeque::new();
        self.brokers[i].send_with_seq(seq, body, &mut q);
        self.to_client.extend(q);
        self.settle();
    }

    fn online(&mut self) {
        self.run_for(0);
        assert_eq!(self.client.state(), ConnectionState::Online);
    }
}

fn connected(events: &[Event<TP>]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count()
}

fn disconnects(events: &[Event<TP>]) -> Vec<DisconnectReason> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Disconnected { reason } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn logs_in_at_once_and_reports_connected() {
    let mut net = Net::new();
    assert_eq!(net.client.poll_timeout(), Some(Instant::ZERO));
    net.online();
    let events = net.take_events();
    assert!(matches!(events[..], [Event::Connected { session_id: 101 }]));
    assert_eq!(net.client.session_id(), Some(101));
    let s = net.client.stats();
    assert_eq!((s.logins, s.reconnects, s.login_failures), (1, 0, 0));
    // HELLO, LOGIN: two packets, one attempt.
    assert_eq!(s.tx_packets, 2);
    assert_eq!(net.brokers[0].logins, [0]);
    assert!(net.client.is_online());
}

#[test]
fn pings_after_heartbeat_when_idle_and_stays_online() {
    let mut net = Net::new();
    net.online();
    net.run_for(29_999);
    assert!(!net.brokers[0].got.contains(&Got::Ping));
    net.run_for(1);
    assert_eq!(net.brokers[0].got, [Got::Ping]);
    // Ten minutes of pings and pongs: one ping per 30 s, never a disconnect.
    net.run_for(600_000);
    assert_eq!(net.client.stats().pings, 21);
    assert_eq!(net.client.state(), ConnectionState::Online);
    assert!(disconnects(&net.take_events()).is_empty());
}

/// When each packet after `online_at` left, ms after it (with nothing else to send, the
/// session's Pings).
fn ping_times(net: &Net, online_at: Instant) -> Vec<u64> {
    net.sent
        .iter()
        .filter(|(at, _, _)| *at > online_at)
        .map(|(at, _, _)| at.millis_since(online_at))
        .collect()
}

/// A broker that stops answering: once a Ping goes unanswered the device pings every quarter
/// interval (docs/protocol.md section 6, "Probing"), eight Pings before the session timeout,
/// where a device pinging only once per interval had two.
#[test]
fn pings_every_quarter_interval_while_the_broker_is_silent() {
    let (mut net, pings) = pings_to_a_silent_broker(Net::new());
    assert_eq!(
        pings,
        [
            30_000, 37_500, 45_000, 52_500, 60_000, 67_500, 75_000, 82_500
        ]
    );
    assert!(disconnects(&net.take_events()).is_empty());
    net.run_for(1);
    assert_eq!(
        disconnects(&net.take_events()),
        [DisconnectReason::SessionTimeout]
    );
}

/// Logs `net` in, then loses everything the broker sends for 89.999 s (the session timeout is
/// 90 s); returns the network and when the device's packets left, ms after login.
fn pings_to_a_silent_broker(mut net: Net) -> (Net, Vec<u64>) {
    net.online();
    let online_at = net.now;
    net.lose_down = true;
    net.run_for(89_999);
    let pings = ping_times(&net, online_at);
    (net, pings)
}

/// One lost Pong costs a quarter interval: the next probe's Pong arrives, and the device goes
/// back to one Ping per interval.
#[test]
fn a_lost_pong_is_probed_again_after_a_quarter_interval() {
    let mut net = Net::new();
    net.online();
    let online_at = net.now;
    net.lose_down = true;
    net.run_for(30_000);
    net.lose_down = false;
    net.run_for(70_000);
    assert_eq!(
        ping_times(&net, online_at),
        [30_000, 37_500, 67_500, 97_500]
    );
    assert_eq!(net.client.state(), ConnectionState::Online);
}

/// Sessions that end on their liveness timeout in `hours` simulated hours of an idle device
/// at 20% loss each way (a fixed seed: the same count every run).
fn lossy_idle_timeouts(hours: u64) -> usize {
    let mut net = Net::new();
    net.online();
    net.take_events();
    net.random_loss = Some((20, SplitMix64::new(7)));
    net.run_for(hours * 3_600_000);
    disconnects(&net.take_events())
        .into_iter()
        .filter(|r| *r == DisconnectReason::SessionTimeout)
        .count()
}

/// At 20% loss each way an idle session rides out its lost Pings and Pongs: a device pinging
/// once per interval loses about one round trip in three, and two or three of them in a row
/// end its session (about ten times an hour); probing while the broker is silent makes that
/// rare (docs/protocol.md section 6, "Probing").
#[test]
fn an_idle_session_rides_out_a_lossy_link() {
    // Measured with this seed: 2 (244 when pinging only once per interval).
    let timeouts = lossy_idle_timeouts(24);
    assert!(timeouts <= 12, "{timeouts} session timeouts in 24 h");
}

/// Over WebSocket nothing is lost, so a silent broker gets no extra Pings.
#[test]
fn over_websocket_a_silent_broker_gets_one_ping_per_interval() {
    let ws = Net::build(KEY, KEY, &WS_ENDPOINTS, None, client_config());
    assert_eq!(pings_to_a_silent_broker(ws).1, [30_000, 60_000]);
}

#[test]
fn upload_is_acknowledged_and_leaves_the_queue() {
    let mut net = Net::new();
    net.online();
    net.take_events();
    let id = net.client.upload("power", b"{\"mw\":1}").unwrap();
    net.run_for(0);
    assert_eq!(net.brokers[0].uploads(), [(1, id.0)]);
    assert_eq!(net.take_events(), [Event::UploadAcked { id }]);
    assert_eq!(net.client.uploads_pending(), 0);
    assert_eq!(net.client.stats().uploads_acked, 1);
}

#[test]
fn lost_frame_is_retransmitted_with_the_same_seq_within_the_rto_bounds() {
    let mut net = Net::new();
    net.online();
    net.lose_up = true;
    let id = net.client.upload("t", b"x").unwrap();
    net.run_for(0);
    let first_send = net.now;
    assert!(net.brokers[0].uploads().is_empty());
    net.lose_up = false;
    // First RTO is 500 ms with jitter factor [0.5, 1.0]: nothing before 250 ms, resent by 500.
    net.run_for(249);
    assert!(net.brokers[0].uploads().is_empty());
    net.run_until(first_send.plus_millis(500));
    assert_eq!(net.brokers[0].uploads(), [(1, id.0)]);
    assert_eq!(net.client.stats().retransmits, 1);
    assert_eq!(net.client.uploads_pending(), 0);
}

#[test]
fn unanswered_frames_end_the_session_after_max_transmissions() {
    let mut net = Net::new();
    net.online();
    net.take_events();
    net.lose_up = true;
    net.client.upload("t", b"x").unwrap();
    // 8 transmissions: waits of at most 0.5+1+2+4+8+8+8 s = 31.5 s, then dead.
    net.run_for(32_000);
    let reasons = disconnects(&net.take_events());
    assert_eq!(reasons, [DisconnectReason::RetransmitLimit]);
    assert_eq!(net.client.stats().retransmits, 7);
    // The upload survives and goes out after the reconnect (to the next endpoint).
    net.lose_up = false;
    net.run_for(10_000);
    assert_eq!(net.client.endpoint().unwrap().0, 1);
    assert_eq!(net.brokers[1].uploads().len(), 1);
    assert_eq!(net.client.uploads_pending(), 0);
}

#[test]
fn backoff_follows_full_jitter_bounds_and_cap_while_brokers_are_down() {
    let mut net = Net::new();
    net.brokers[0].up = false;
    net.brokers[1].up = false;
    net.run_for(300_000);
    // Each attempt: HELLO resends inside the 10 s handshake timeout, then backoff.
    let mut starts: Vec<Instant> = Vec::new();
    let mut last_id = 0;
    for &(t, id, _) in &net.sent {
        if id != last_id {
            starts.push(t);
            last_id = id;
        }
    }
    assert!(starts.len() >= 10, "only {} attempts", starts.len());
    let mut delays = Vec::new();
    for (n, pair) in starts.windows(2).enumerate() {
        let delay = pair[1].millis_since(pair[0]) - 10_000;
        let ceiling = (1_000u64 << n.min(20)).min(8_000);
        assert!(delay <= ceiling, "attempt {n}: delay {delay} > {ceiling}");
        delays.push(delay);
    }
    // Jittered, not fixed: the capped delays differ from each other.
    let capped = &delays[3..];
    assert!(capped.iter().any(|&d| d != capped[0]));
    let s = net.client.stats();
    // Every attempt failed; the last one too unless the run ended while it was under way.
    let failed = match net.client.state() {
        ConnectionState::Handshaking => starts.len() - 1,
        _ => starts.len(),
    };
    assert_eq!(s.login_failures as usize, failed);
    assert_eq!(s.reconnects as usize, starts.len() - 1);
    // Failover alternates the endpoints: attempt n goes to endpoint n % 2.
    assert!(
        net.sent
            .iter()
            .all(|&(_, id, e)| e == (id as usize - 1) % 2)
    );
    let reasons = disconnects(&net.take_events());
    assert!(
        reasons
            .iter()
            .all(|r| *r == DisconnectReason::HandshakeTimeout)
    );
}

#[test]
fn hello_is_resent_inside_one_attempt() {
    let mut net = Net::new();
    net.brokers[0].up = false;
    net.run_for(9_999);
    // ClientHandshake waits 1 s four times, then 2 s, then 4 s (docs/protocol.md section 3.2,
    // step 6), each plus a jitter below 250 ms: HELLOs at about 0, 1, 2, 3, 4 and 6 s, all in
    // attempt 1 (the next would come after 10 s, past the handshake timeout).
    assert_eq!(net.sent.len(), 6, "{:?}", net.sent);
    assert!(net.sent.iter().all(|&(_, id, e)| id == 1 && e == 0));
    let gaps: Vec<u64> = net
        .sent
        .windows(2)
        .map(|w| w[1].0.millis_since(w[0].0))
        .collect();
    for (k, gap) in gaps.iter().enumerate() {
        let base = if k < 4 { 1_000 } else { 2_000 };
        assert!((base..base + 250).contains(gap), "wait {}: {gap} ms", k + 1);
    }
    assert!(
        gaps[..4].iter().any(|&g| g != gaps[0]),
        "jittered, not fixed: {gaps:?}"
    );
}

/// Two WebSocket endpoints (the test network carries their packets like datagrams).
pub(crate) static WS_ENDPOINTS: [Endpoint<'static>; 2] = [
    Endpoint::websocket(ENDPOINTS[0].addr, "broker", "/device"),
    Endpoint::websocket(ENDPOINTS[1].addr, "broker", "/device"),
];

/// Over WebSocket nothing is lost, so the HELLO is never resent with a new nonce
/// (docs/protocol.md section 3.2, step 6): one HELLO per connection, and the attempt ends at the
/// handshake timeout.
#[test]
fn hello_is_not_resent_over_websocket() {
    let mut net = Net::build(KEY, KEY, &WS_ENDPOINTS, None, client_config());
    net.brokers[0].up = false;
    net.run_for(9_999);
    assert_eq!(net.sent.len(), 1, "one HELLO in attempt 1");
    net.run_for(1);
    assert_eq!(
        disconnects(&net.take_events()),
        [DisconnectReason::HandshakeTimeout]
    );
}

/// Over WebSocket nothing is resent within the session (docs/protocol.md section 5, "Reliable
/// transport"): an upload whose acknowledgement is 20 s late goes out once, and the late
/// acknowledgement still retires it. Over UDP the same upload is resent.
#[test]
fn over_websocket_a_late_acknowledgement_gets_no_resend() {
    for (endpoints, resends) in [(&WS_ENDPOINTS, false), (&ENDPOINTS, true)] {
        let mut net = Net::build(KEY, KEY, endpoints, None, client_config());
        net.online();
        net.hold_down = true;
        let sent_before = net.sent.len();
        net.client.upload("t", b"x").unwrap();
        net.run_for(19_000);
        let sent = net.sent.len() - sent_before;
        let s = net.client.stats();
        if resends {
            assert!(sent > 1 && s.retransmits > 0, "UDP: {sent} packets");
        } else {
            assert_eq!(
                (sent, s.retransmits),
                (1, 0),
                "WebSocket: one packet, no resend"
            );
        }
        net.release_held();
        assert_eq!(net.client.uploads_pending(), 0);
        assert_eq!(net.client.state(), ConnectionState::Online);
    }
}

/// A broker that never acknowledges ends a WebSocket session when the send window gives up,
/// as over UDP (at most 39.5 s after the first send), with nothing resent meanwhile.
#[test]
fn over_websocket_an_unacknowledged_frame_still_ends_the_session() {
    let mut net = Net::build(KEY, KEY, &WS_ENDPOINTS, None, client_config());
    net.online();
    net.take_events();
    net.brokers[0].silent = true;
    net.client.upload("t", b"x").unwrap();
    net.run_for(19_700);
    assert!(
        disconnects(&net.take_events()).is_empty(),
        "not before 19.75 s"
    );
    net.run_for(39_500 - 19_700);
    assert_eq!(
        disconnects(&net.take_events()),
        [DisconnectReason::RetransmitLimit]
    );
    assert_eq!(net.client.stats().retransmits, 0);
}

/// The first broker sends `count` empty Delivers (`msg_id` 1 to `count`) as reliable frames;
/// the device's replies go to `replies`.
fn send_empty_delivers(net: &mut Net, count: u64, replies: &mut VecDeque<Vec<u8>>) {
    for msg_id in 1..=count {
        net.brokers[0].send_reliable(
            Body::Deliver {
                msg_id,
                from: None,
                payload: b"",
            },
            replies,
        );
    }
}

/// Over WebSocket a frame refused for want of event room would never come back within the
/// session, so the driver stops reading instead while the application is behind.
#[test]
fn over_websocket_a_full_event_queue_pauses_input() {
    for (endpoints, pauses) in [(&WS_ENDPOINTS, true), (&ENDPOINTS, false)] {
        let mut net = Net::build(KEY, KEY, endpoints, None, client_config());
        net.online();
        assert!(!net.client.input_paused());
        let mut q = VecDeque::new();
        send_empty_delivers(&mut net, EVENT_FRAME_LIMIT as u64, &mut q);
        for mut p in q {
            assert_eq!(net.client.handle_datagram(&mut p, net.now), Ok(()));
        }
        assert_eq!(net.client.input_paused(), pauses);
        assert!(net.client.poll_event().is_some());
        assert!(!net.client.input_paused(), "room again");
    }
}

/// A CHALLENGE that comes late over WebSocket is answered with the nonce it was made for.
#[test]
fn a_late_challenge_over_websocket_logs_in_with_one_login() {
    let mut net = Net::build(KEY, KEY, &WS_ENDPOINTS, None, client_config());
    net.hold_down = true;
    net.run_for(0);
    net.run_for(5_000);
    assert_eq!(net.brokers[0].hellos, [0], "no second HELLO");
    net.release_held();
    assert_eq!(net.client.state(), ConnectionState::Online);
    assert_eq!(net.brokers[0].login_results, ["accepted"]);
    let s = net.client.stats();
    assert_eq!((s.logins, s.login_failures), (1, 0));
}

#[test]
fn failover_to_the_second_endpoint() {
    let mut net = Net::new();
    net.brokers[0].up = false;
    net.run_for(10_000 + 8_000);
    assert_eq!(net.client.state(), ConnectionState::Online);
    assert_eq!(net.client.endpoint().unwrap().0, 1);
    assert_eq!(net.brokers[1].logins.len(), 1);
    let events = net.take_events();
    assert_eq!(disconnects(&events), [DisconnectReason::HandshakeTimeout]);
    assert_eq!(connected(&events), 1);
}

#[test]
fn key_mismatch_is_rejected_reported_and_retried_after_backoff() {
    let mut net = Net::with_keys(KEY, DeviceKey([8; 32]));
    net.run_for(0);
    let events = net.take_events();
    assert_eq!(
        disconnects(&events),
        [DisconnectReason::Rejected {
            code: Code::AUTH_FAILED,
            retry_after_ms: 0
        }]
    );
    assert_eq!(net.client.state(), ConnectionState::Backoff);
    assert_eq!(net.client.stats().login_failures, 1);
    let retry = net.client.poll_timeout().unwrap();
    assert!(retry <= Instant::from_millis(1_000));
    net.run_until(retry);
    assert_eq!(net.client.stats().login_failures, 2);
    assert_eq!(
        net.brokers[1].hellos.len(),
        1,
        "the retry goes to the next endpoint"
    );
}

#[test]
fn reject_retry_after_is_a_minimum_wait() {
    let mut net = Net::new();
    net.run_for(0);
    let mut p = vec![0u8; 64];
    let reject = reject_packet(Code::SERVER_BUSY, 30_000, &mut p)
        .unwrap()
        .to_vec();
    net.client.close();
    net.run_for(1);
    net.client.connect(net.now);
    // Deliver a REJECT while the HELLO is outstanding.
    let _ = net.client.handle_datagram(&mut reject.clone(), net.now);
    assert_eq!(net.client.state(), ConnectionState::Backoff);
    assert!(net.client.poll_timeout().unwrap() >= net.now.plus_millis(30_000));
}

/// A (forged) REJECT asking for u32::MAX ms (about 50 days) is honoured only up to
/// REJECT_RETRY_AFTER_CAP_MS.
#[test]
fn reject_retry_after_is_capped() {
    let mut net = Net::new();
    net.run_for(0);
    let mut p = vec![0u8; 64];
    let reject = reject_packet(Code::SERVER_BUSY, u32::MAX, &mut p)
        .unwrap()
        .to_vec();
    net.client.close();
    net.run_for(1);
    net.client.connect(net.now);
    let _ = net.client.handle_datagram(&mut reject.clone(), net.now);
    assert_eq!(net.client.state(), ConnectionState::Backoff);
    let wake = net.client.poll_timeout().unwrap();
    let cap = u64::from(shared_protocol::limits::REJECT_RETRY_AFTER_CAP_MS);
    // The test backoff never exceeds 8 s, so the wait is exactly the cap.
    assert_eq!(wake, net.now.plus_millis(cap));
}

#[test]
fn full_upload_queue_rejects_the_newest_and_counts_it() {
    let mut net = Net::new();
    net.brokers[0].up = false;
    net.brokers[1].up = false;
    let ids: Vec<_> = (0..4)
        .map(|i| net.client.upload("t", &[i]).unwrap())
        .collect();
    assert_eq!(net.client.upload("t", b"late"), Err(UploadError::QueueFull));
    assert_eq!(net.client.stats().uploads_rejected, 1);
    assert_eq!(net.client.uploads_pending(), 4);
    // Once a broker is back, the four accepted uploads arrive in order.
    net.brokers[0].up = true;
    net.brokers[1].up = true;
    net.run_for(20_000);
    let got: Vec<u32> = net
        .brokers
        .iter()
        .flat_map(|b| b.uploads())
        .map(|u| u.1)
        .collect();
    assert_eq!(got, ids.iter().map(|i| i.0).collect::<Vec<_>>());
}

#[test]
fn keep_newest_drops_the_oldest_upload_and_counts_it() {
    let mut net = Net::new();
    net.brokers[0].up = false;
    net.brokers[1].up = false;
    let ids: Vec<_> = (0..6)
        .map(|i| {
            net.client
                .upload_with("t", &[i], FullPolicy::KeepNewest)
                .unwrap()
        })
        .collect();
    let s = net.client.stats();
    assert_eq!((s.uploads_evicted, s.uploads_rejected), (2, 0));
    assert_eq!(net.client.uploads_pending(), 4);
    net.brokers[0].up = true;
    net.brokers[1].up = true;
    net.run_for(20_000);
    let got: Vec<u32> = net
        .brokers
        .iter()
        .flat_map(|b| b.uploads())
        .map(|u| u.1)
        .collect();
    assert_eq!(
        got,
        ids[2..].iter().map(|i| i.0).collect::<Vec<_>>(),
        "the newest four, in order"
    );
}

/// Every boot draws its own upload epoch from the RNG (64 bits, never 0), so the upload ids a new
/// boot starts from never collide with an earlier boot's uploads downstream.
#[test]
fn each_boot_draws_its_own_nonzero_upload_epoch() {
    let config = || DeviceConfig {
        device_id: DEVICE_ID,
        key: KEY,
        endpoints: &[],
        lookup: None,
        since_id: 0,
    };
    let boot = |seed| {
        DeviceClient::<_, 4, 64>::new(
            config(),
            client_config(),
            SplitMix64::new(seed),
            Instant::ZERO,
        )
        .upload_epoch()
    };
    let epochs: std::collections::BTreeSet<u64> = (1..=50).map(boot).collect();
    assert_eq!(epochs.len(), 50, "50 boots, 50 epochs");
    assert!(!epochs.contains(&0));
    // Uses all 64 bits: some epoch has a high half that is not 0.
    assert!(epochs.iter().any(|e| e >> 32 != 0));

    /// An RNG whose first two draws are 0: the epoch is drawn again.
    struct ZerosFirst(u32, SplitMix64);
    impl crate::rng::Rng for ZerosFirst {
        fn next_u32(&mut self) -> u32 {
            self.0 += 1;
            // Draw 1 is the first upload id; draws 2 and 3 would make epoch 0.
            if (2..=3).contains(&self.0) {
                0
            } else {
                self.1.next_u32()
            }
        }
    }
    let c = DeviceClient::<_, 4, 64>::new(
        config(),
        client_config(),
        ZerosFirst(0, SplitMix64::new(7)),
        Instant::ZERO,
    );
    assert_ne!(c.upload_epoch(), 0);
}

#[test]
fn uploads_refused_for_load_go_again_first_after_a_pause() {
    let mut net = Net::new();
    net.online();
    net.take_events();
    // This test broker refuses the first two and stores the third (it has no upload gate).
    net.brokers[0].refuse_uploads = 2;
    let ids: Vec<UploadId> = (0..3)
        .map(|i| net.client.upload("t", &[i]).unwrap())
        .collect();
    net.run_for(0);
    assert_eq!(net.brokers[0].refused, [ids[0].0, ids[1].0]);
    assert_eq!(net.brokers[0].uploads(), [(3, ids[2].0)]);
    let errors: Vec<(Code, u32)> = net
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::BrokerError { code, about_seq } => Some((code, about_seq)),
            _ => None,
        })
        .collect();
    assert_eq!(errors, [(Code::RATE_LIMITED, 1), (Code::RATE_LIMITED, 2)]);
    assert_eq!(
        net.client.uploads_pending(),
        2,
        "refused uploads stay queued"
    );
    // Nothing new goes out during the pause...
    net.run_for(super::REFUSED_UPLOAD_PAUSE_MS - 1);
    assert_eq!(net.brokers[0].uploads().len(), 1);
    // ...then the refused ones, oldest first, in the same session.
    net.run_for(1);
    assert_eq!(
        net.brokers[0].uploads(),
        [(3, ids[2].0), (4, ids[0].0), (5, ids[1].0)]
    );
    assert_eq!(net.brokers[0].logins.len(), 1, "no new login");
    assert_eq!(net.client.uploads_pending(), 0);
    // Frame 1's refusal marked the uploads of frames 1 to 3 (the third's UploadAck came
    // after it); frame 2's found its upload already marked.
    assert_eq!(net.client.stats().uploads_resent, 3);
}

/// The broker refuses the uploads sent behind a refused one, but the device may hear of those
/// refusals only after it has sent the first again: it sends them again with it, in order, and
/// the late refusals change nothing.
#[test]
fn uploads_sent_behind_a_refused_one_go_again_with_it_before_their_own_refusals_arrive() {
    let mut net = Net::new();
    net.brokers[0].auto_upload_ack = false;
    net.online();
    let ids: Vec<UploadId> = (0..3)
        .map(|i| net.client.upload("t", &[i]).unwrap())
        .collect();
    net.run_for(0);
    assert_eq!(
        net.brokers[0].uploads(),
        [(1, ids[0].0), (2, ids[1].0), (3, ids[2].0)]
    );
    // Only the first refusal arrives before the pause ends.
    net.broker_sends(Body::Error {
        code: Code::RATE_LIMITED,
        about_seq: 1,
    });
    net.run_for(super::REFUSED_UPLOAD_PAUSE_MS);
    let again = [(4, ids[0].0), (5, ids[1].0), (6, ids[2].0)];
    assert_eq!(
        net.brokers[0].uploads()[3..],
        again,
        "all three, oldest first"
    );
    // The late refusals name frames whose uploads already went again: no pause, no resend.
    for about_seq in [2, 3] {
        net.broker_sends(Body::Error {
            code: Code::RATE_LIMITED,
            about_seq,
        });
    }
    let late = net.client.upload("t", b"late").unwrap();
    net.run_for(0);
    assert_eq!(
        net.brokers[0].uploads()[3..],
        [again[0], again[1], again[2], (7, late.0)]
    );
    assert_eq!(net.client.stats().uploads_resent, 3);
    assert_eq!(net.brokers[0].logins.len(), 1, "no new login");
}

#[test]
fn a_non_retryable_error_about_an_upload_does_not_resend_it_in_the_session() {
    let mut net = Net::new();
    net.brokers[0].auto_upload_ack = false;
    net.online();
    let id = net.client.upload("t", b"x").unwrap();
    net.run_for(0);
    assert_eq!(net.brokers[0].uploads(), [(1, id.0)]);
    net.broker_sends(Body::Error {
        code: Code::TOO_LARGE,
        about_seq: 1,
    });
    net.run_for(5_000);
    assert_eq!(net.brokers[0].uploads(), [(1, id.0)], "sent once");
    assert_eq!(net.client.uploads_pending(), 1, "kept for the next session");
    assert_eq!(net.client.stats().uploads_resent, 0);
}

#[test]
fn upload_is_resent_after_reconnect_until_acknowledged() {
    let mut net = Net::new();
    net.brokers[0].auto_upload_ack = false;
    net.brokers[1].auto_upload_ack = false;
    net.online();
    let id = net.client.upload("t", b"kWh").unwrap();
    net.run_for(0);
    assert_eq!(net.brokers[0].uploads(), [(1, id.0)]);
    // The broker restarts: Kick, then a new session on the other endpoint.
    let mut q = VecDeque::new();
    net.brokers[0].send(
        Frame::unreliable(
            Ack { next: 2, mask: 0 },
            Body::Kick {
                reason: Code::SHUTDOWN,
            },
        ),
        &mut q,
    );
    net.to_client.extend(q);
    net.run_for(10_000);
    assert_eq!(net.client.state(), ConnectionState::Online);
    assert_eq!(
        net.brokers[1].uploads(),
        [(1, id.0)],
        "same upload_id in the new session"
    );
    // And the same upload epoch: the resend keeps its de-duplication key.
    let epoch = net.client.upload_epoch();
    assert_ne!(epoch, 0);
    assert_eq!(net.brokers[0].epochs, [epoch]);
    assert_eq!(net.brokers[1].epochs, [epoch]);
    assert_eq!(net.client.stats().uploads_resent, 1);
    assert_eq!(net.client.uploads_pending(), 1);
    net.broker_sends(Body::UploadAck { upload_id: id.0 });
    assert_eq!(net.client.uploads_pending(), 0);
    assert!(net.take_events().contains(&Event::UploadAcked { id }));
}

#[test]
fn reconnect_reports_since_id_and_drops_redelivered_messages() {
    let mut net = Net::new();
    net.online();
    net.take_events();
    net.broker_sends(Body::Deliver {
        msg_id: 5,
        from: None,
        payload: b"a",
    });
    net.broker_sends(Body::Deliver {
        msg_id: 9,
        from: Some(Address::phone(3)),
        payload: b"b",
    });
    let events = net.take_events();
    assert_eq!(events.len(), 2);
    assert!(
        matches!(&events[1], Event::Deliver { msg_id: 9, from: Some(a), payload } if *a == Address::phone(3) && payload.as_slice() == b"b")
    );
    assert_eq!(net.client.since_id(), 9);
    // Frame 2 again (as if its acknowledgement had been lost): not passed on, and counted.
    let mut q = VecDeque::new();
    net.brokers[0].send_with_seq(
        2,
        Body::Deliver {
            msg_id: 9,
            from: None,
            payload: b"b",
        },
        &mut q,
    );
    net.to_client.extend(q);
    net.settle();
    assert!(
        net.take_events().is_empty(),
        "a repeated frame is not passed on"
    );
    assert_eq!(net.client.stats().deliveries_suppressed, 1);
    // Session dies silently; the client notices at the session timeout and logs in again.
    net.brokers[0].silent = true;
    net.run_for(90_000 + 10_000);
    assert!(disconnects(&net.take_events()).contains(&DisconnectReason::SessionTimeout));
    assert_eq!(net.client.state(), ConnectionState::Online);
    assert_eq!(net.brokers[1].logins, [9], "since_id reported at login");
    // The broker resends 9 (it never saw the ack) and then 10: only 10 reaches the app.
    net.broker_sends(Body::Deliver {
        msg_id: 9,
        from: None,
        payload: b"b",
    });
    net.broker_sends(Body::Deliver {
        msg_id: 10,
        from: None,
        payload: b"c",
    });
    let events = net.take_events();
    let ids: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Deliver { msg_id, .. } => Some(*msg_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [10]);
    assert_eq!(
        net.client.stats().deliveries_suppressed,
        2,
        "the redelivered msg_id 9 is counted too"
    );
}

/// Frames are taken in `seq` order: a Deliver that overtakes an earlier one is not taken (no
/// event, no acknowledgement, counted as dropped) until the broker resends it after the gap.
#[test]
fn a_frame_ahead_of_a_gap_is_left_for_the_broker_to_resend() {
    let mut net = Net::new();
    net.online();
    net.take_events();
    let deliver = |msg_id| Body::Deliver {
        msg_id,
        from: None,
        payload: b"",
    };
    // Frame 1 (msg 5) is lost, frame 2 (msg 6) arrives.
    let dropped_before = net.client.stats().rx_dropped;
    let mut q = VecDeque::new();
    net.brokers[0].next_seq = 2;
    net.brokers[0].send_with_seq(2, deliver(6), &mut q);
    net.to_client.extend(q);
    net.settle();
    assert_eq!(net.client.since_id(), 0);
    assert!(net.take_events().is_empty(), "msg 6 must wait for msg 5");
    assert_eq!(net.client.stats().rx_dropped, dropped_before + 1);
    net.broker_sends_frame(1, deliver(5));
    assert_eq!(net.client.since_id(), 5);
    // The broker resends frame 2.
    let mut q = VecDeque::new();
    net.brokers[0].send_with_seq(2, deliver(6), &mut q);
    net.to_client.extend(q);
    net.settle();
    assert_eq!(net.client.since_id(), 6);
    let ids: Vec<u64> = net
        .take_events()
        .iter()
        .filter_map(|e| match e {
            Event::Deliver { msg_id, .. } => Some(*msg_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![5, 6]);
}

#[test]
fn commands_become_events_and_results_reach_the_broker() {
    let mut net = Net::new();
    net.online();
    net.take_events();
    net.broker_sends(Body::Command {
        cmd_id: 77,
        name: "relay.set",
        payload: b"on",
    });
    let events = net.take_events();
    assert_eq!(events.len(), 1);
    let Event::Command {
        cmd_id,
        name,
        payload,
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    assert_eq!(
        (*cmd_id, name.as_str(), payload.as_slice()),
        (77, "relay.set", &b"on"[..])
    );
    net.client
        .command_result(77, 0, b"{\"relay\":\"on\"}")
        .unwrap();
    let req = net.client.request("time", b"").unwrap();
    net.client.send(Address::phone(9), b"hi").unwrap();
    net.run_for(0);
    let got = &net.brokers[0].got;
    assert!(got.contains(&Got::CommandResult {
        cmd_id: 77,
        status: 0,
        payload: b"{\"relay\":\"on\"}".to_vec()
    }));
    assert!(got.contains(&Got::Request {
        req_id: req,
        path: "time".into()
    }));
    assert!(got.contains(&Got::Send {
        to: Address::phone(9),
        payload: b"hi".to_vec()
    }));
    net.run_for(100);
    assert_eq!(
        net.client.outbox_pending(),
        0,
        "acknowledged entries leave the outbox"
    );
}

#[test]
fn received_frames_are_acknowledged_within_ack_delay() {
    let mut net = Net::new();
    net.online();
    let before = net.brokers[0].got.len();
    net.broker_sends(Body::Presence {
        who: Address::phone(1),
        online: true,
    });
    assert_eq!(net.brokers[0].got.len(), before, "no ack before the delay");
    net.run_for(50);
    assert_eq!(net.brokers[0].got[before..], [Got::AckOnly]);
}

#[test]
fn full_event_queue_leaves_frames_unacknowledged() {
    let mut net = Net::new();
    net.online();
    // Stop draining events: fill the frame-event quota.
    let mut q = VecDeque::new();
    send_empty_delivers(&mut net, EVENT_FRAME_LIMIT as u64 + 1, &mut q);
    let mut results = Vec::new();
    // Connected is still queued (taken by online()), so fill via the raw client.
    for mut p in q {
        results.push(net.client.handle_datagram(&mut p, net.now));
    }
    assert_eq!(results.last(), Some(&Err(RxError::Busy)));
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        EVENT_FRAME_LIMIT
    );
    assert_eq!(net.client.since_id(), EVENT_FRAME_LIMIT as u64);
}

#[test]
fn malformed_and_forged_packets_are_errors_and_change_nothing() {
    let mut net = Net::new();
    net.online();
    let session = net.client.session_id();
    const V: u8 = shared_protocol::limits::PROTOCOL_VERSION;
    for mut junk in [
        vec![],
        vec![V],
        vec![V, 0x10, 0, 0],
        vec![0xff; 1500],
        vec![
            V, 0x10, 101, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            13, 14, 15, 16, 17, 18, 19, 20,
        ],
    ] {
        assert!(net.client.handle_datagram(&mut junk, net.now).is_err());
    }
    assert_eq!(net.client.stats().rx_dropped, 5);
    assert_eq!(net.client.session_id(), session);
    // Still works afterwards.
    net.client.upload("t", b"x").unwrap();
    net.run_for(0);
    assert_eq!(net.client.uploads_pending(), 0);
}

#[test]
fn a_body_only_a_device_sends_is_dropped_unread_and_unacknowledged() {
    let mut net = Net::new();
    net.online();
    let mut q = VecDeque::new();
    // A reliable Upload (seq 1) and an unreliable Ping, as a broker never sends them.
    net.brokers[0].send_with_seq(
        1,
        Body::Upload {
            upload_id: 1,
            topic: "t",
            payload: b"x",
        },
        &mut q,
    );
    net.brokers[0].send_with_seq(0, Body::Ping, &mut q);
    let dropped = net.client.stats().rx_dropped;
    for mut packet in q.drain(..) {
        assert!(matches!(
            net.client.handle_datagram(&mut packet, net.now),
            Err(RxError::Session(SessionError::Decode))
        ));
    }
    assert_eq!(net.client.stats().rx_dropped, dropped + 2);
    // seq 1 was not taken: a Deliver with seq 1 is delivered.
    net.brokers[0].send_with_seq(
        1,
        Body::Deliver {
            msg_id: 1,
            from: None,
            payload: b"d",
        },
        &mut q,
    );
    let mut packet = q.pop_front().unwrap();
    assert!(net.client.handle_datagram(&mut packet, net.now).is_ok());
    let mut delivered = false;
    while let Some(event) = net.client.poll_event() {
        delivered |= matches!(event, Event::Deliver { msg_id: 1, .. });
    }
    assert!(delivered);
}

#[test]
fn replayed_packet_is_dropped() {
    let mut net = Net::new();
    net.online();
    let mut q = VecDeque::new();
    net.brokers[0].send_reliable(
        Body::Deliver {
            msg_id: 1,
            from: None,
            payload: b"x",
        },
        &mut q,
    );
    let packet = q.pop_front().unwrap();
    assert!(
        net.client
            .handle_datagram(&mut packet.clone(), net.now)
            .is_ok()
    );
    assert!(matches!(
        net.client.handle_datagram(&mut packet.clone(), net.now),
        Err(RxError::Session(SessionError::Replayed))
    ));
}

#[test]
fn close_says_goodbye_and_stays_idle_until_connect() {
    let mut net = Net::new();
    net.online();
    net.take_events();
    net.client.close();
    net.run_for(0);
    assert_eq!(net.brokers[0].got.last(), Some(&Got::Goodbye));
    assert_eq!(net.client.state(), ConnectionState::Idle);
    assert!(!net.client.wants_transport());
    assert_eq!(net.client.poll_timeout(), None);
    assert_eq!(disconnects(&net.take_events()), [DisconnectReason::Closed]);
    // A login needs a newer challenge timestamp than the last one (REPLAY otherwise).
    net.now = net.now.plus_millis(1);
    net.client.connect(net.now);
    net.run_for(0);
    assert_eq!(net.client.state(), ConnectionState::Online);
}

#[test]
fn broker_goodbye_and_transport_failure_reconnect() {
    let mut net = Net::new();
    net.online();
    let mut q = VecDeque::new();
    net.brokers[0].send(
        Frame::unreliable(
            Ack { next: 1, mask: 0 },
            Body::Goodbye {
                reason: Code::SHUTDOWN,
            },
        ),
        &mut q,
    );
    net.to_client.extend(q);
    net.settle();
    assert_eq!(net.client.state(), ConnectionState::Backoff);
    net.run_for(10_000);
    assert_eq!(net.client.state(), ConnectionState::Online);
    let id_before = net.client.connection_id();
    net.client.transport_failed(net.now);
    assert_eq!(net.client.state(), ConnectionState::Backoff);
    net.run_for(10_000);
    assert!(net.client.connection_id() > id_before);
    assert_eq!(
        disconnects(&net.take_events()),
        [
            DisconnectReason::Goodbye {
                reason: Code::SHUTDOWN
            },
            DisconnectReason::TransportFailed
        ]
    );
}

#[test]
fn oversized_command_gets_too_large_result() {
    let mut net = Net::new();
    net.online();
    net.take_events();
    let big = [0u8; TP + 1];
    net.broker_sends(Body::Command {
        cmd_id: 5,
        name: "x",
        payload: &big,
    });
    assert!(net.take_events().is_empty());
    net.run_for(0);
    assert!(net.brokers[0].got.contains(&Got::CommandResult {
        cmd_id: 5,
        status: Code::TOO_LARGE.0,
        payload: vec![]
    }));
}

#[test]
fn plug_application_over_the_real_client() {
    use crate::plug::{MemoryRelay, Plug, PlugConfig, Relay, SimulatedMeter};
    let mut net = Net::new();
    let config = PlugConfig {
        firmware_version: "0.1.0",
        meter_interval_ms: 60_000,
    };
    let mut plug = Plug::new(
        MemoryRelay::default(),
        SimulatedMeter::new(5_000),
        config,
        net.now,
    );
    let step = |net: &mut Net, plug: &mut Plug<MemoryRelay, SimulatedMeter>| {
        for event in net.take_events() {
            plug.on_event(&event, net.now, &mut net.client);
        }
        net.run_for(0);
    };
    net.online();
    step(&mut net, &mut plug);
    net.broker_sends(Body::Command {
        cmd_id: 1,
        name: "relay.set",
        payload: b"on",
    });
    step(&mut net, &mut plug);
    assert!(plug.relay().is_on());
    let got = &net.brokers[0].got;
    assert!(got.contains(&Got::CommandResult {
        cmd_id: 1,
        status: 0,
        payload: br#"{"relay":"on"}"#.to_vec()
    }));
    let topics: Vec<(&str, &[u8])> = got
        .iter()
        .filter_map(|g| match g {
            Got::Upload { topic, payload, .. } => Some((topic.as_str(), payload.as_slice())),
            _ => None,
        })
        .collect();
    // The state after login, then the change.
    assert_eq!(
        topics,
        [
            ("relay", &br#"{"relay":"off"}"#[..]),
            ("relay", &br#"{"relay":"on"}"#[..])
        ]
    );
    // A minute later a meter reading goes up.
    plug.on_timer(Instant::from_millis(60_000), &mut net.client);
    net.run_until(Instant::from_millis(60_000));
    let last = net.brokers[0].got.iter().rev().find_map(|g| match g {
        Got::Upload { topic, payload, .. } if topic == "power" => Some(payload.clone()),
        _ => None,
    });
    let last = last.unwrap_or_else(|| panic!("{:?} {:?}", net.brokers[0].got, net.client.stats()));
    assert!(String::from_utf8(last).unwrap().contains(r#""power_mw":5"#));
}

/// By when the first HELLO has been resent: its wait is 1 s plus a jitter below 250 ms, and the
/// second HELLO's wait ends 1 s later at the earliest.
const FIRST_RESEND_BY: u64 = 1_249;

/// The host-TAP flake: the first HELLO's CHALLENGE arrives only after the HELLO was resent (a
/// 1 s delay on the first packet: ARP resolution, TCP connect). The client then holds the
/// second nonce while the CHALLENGE's cookie was made for the first one; answering it with the
/// second nonce alone earned REJECT BAD_COOKIE and a backoff.
#[test]
fn challenge_to_a_resent_hello_still_logs_in() {
    let mut net = Net::new();
    net.hold_down = true;
    net.run_for(0);
    net.run_for(FIRST_RESEND_BY);
    // Two HELLOs with different nonces, both answered, both answers still on the way.
    let hellos = &net.brokers[0].hellos;
    assert_eq!(hellos.len(), 2, "{hellos:?}");
    assert!((1_000..=FIRST_RESEND_BY).contains(&hellos[1]), "{hellos:?}");
    assert_eq!(net.held.len(), 2);
    net.release_held();
    assert_eq!(net.client.state(), ConnectionState::Online);
    let events = net.take_events();
    assert_eq!(disconnects(&events), []);
    assert_eq!(connected(&events), 1);
    let s = net.client.stats();
    assert_eq!((s.logins, s.login_failures, s.reconnects), (1, 0, 0));
    assert_eq!(net.brokers[0].logins.len(), 1);
    // The matching LOGIN (first nonce) went first: a WebSocket broker closes the connection
    // after a refused one. The second, refused, LOGIN's REJECT is dropped while online.
    assert_eq!(net.brokers[0].login_results, ["accepted", "refused"]);
    // The session works: an upload is acknowledged.
    let id = net.client.upload("t", b"x").unwrap();
    net.run_for(0);
    assert_eq!(net.brokers[0].uploads().len(), 1);
    assert_eq!(net.take_events(), [Event::UploadAcked { id }]);
}

/// The same race with the CHALLENGEs arriving in the other order (the first one late).
#[test]
fn challenges_in_reverse_order_still_log_in() {
    let mut net = Net::new();
    net.hold_down = true;
    net.run_for(0);
    net.run_for(FIRST_RESEND_BY);
    net.held.swap(0, 1);
    net.release_held();
    assert_eq!(net.client.state(), ConnectionState::Online);
    assert_eq!(disconnects(&net.take_events()), []);
    assert_eq!(net.client.stats().login_failures, 0);
}

/// After a resend two LOGINs may be out; the attempt fails only when both were refused.
#[test]
fn both_logins_refused_after_a_resend_end_the_attempt() {
    let mut net = Net::with_keys(KEY, DeviceKey([8; 32]));
    net.hold_down = true;
    net.run_for(0);
    net.run_for(FIRST_RESEND_BY);
    net.release_held();
    let reasons = disconnects(&net.take_events());
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(matches!(
        reasons[0],
        DisconnectReason::Rejected {
            code: Code::AUTH_FAILED | Code::BAD_COOKIE,
            ..
        }
    ));
    assert_eq!(net.client.state(), ConnectionState::Backoff);
    assert_eq!(net.client.stats().login_failures, 1);
}

// ----- node lookup (policy: docs/firmware.md "Failover and node lookup") --------------------

#[test]
fn lookup_answer_is_dialled_first() {
    let mut net = Net::with_lookup(&ENDPOINTS);
    net.lookup_answer = Some(Ok(lookup_answer(&[LOOKED_UP[0]])));
    assert_eq!(net.client.state(), ConnectionState::Backoff);
    net.online();
    assert_eq!(net.lookups, 1);
    assert_eq!(net.brokers[2].logins.len(), 1);
    assert!(net.brokers[0].hellos.is_empty() && net.brokers[1].hellos.is_empty());
    let s = net.client.stats();
    assert_eq!((s.lookups, s.lookup_failures, s.login_failures), (1, 0, 0));
    assert_eq!(
        net.client.endpoint().unwrap().1.addr,
        LOOKED_UP[0].parse().unwrap()
    );
}

#[test]
fn lookup_down_falls_back_to_the_static_list_at_once() {
    let mut net = Net::with_lookup(&ENDPOINTS);
    net.lookup_answer = Some(Err(LookupError::Connect));
    net.online();
    assert_eq!(net.now, Instant::ZERO);
    assert_eq!(net.brokers[0].logins.len(), 1);
    let s = net.client.stats();
    assert_eq!((s.lookups, s.lookup_failures), (0, 1));
    assert_eq!(disconnects(&net.take_events()), []);
}

#[test]
fn silent_lookup_times_out_then_the_static_list() {
    let mut net = Net::with_lookup(&ENDPOINTS);
    net.run_for(0);
    assert_eq!(net.client.state(), ConnectionState::LookingUp);
    assert!(!net.client.wants_transport());
    assert!(net.client.lookup_request().is_some());
    net.run_for(4_999);
    assert_eq!(net.client.state(), ConnectionState::LookingUp);
    net.run_for(1);
    assert_eq!(net.client.state(), ConnectionState::Online);
    assert_eq!(net.brokers[0].logins.len(), 1);
    assert_eq!(net.client.stats().lookup_failures, 1);
    // A late answer to the finished lookup changes nothing.
    let id = net.client.connection_id();
    net.client
        .lookup_done(1, Ok(&lookup_answer(&[LOOKED_UP[1]])), net.now);
    assert_eq!(net.client.state(), ConnectionState::Online);
    assert_eq!(net.client.connection_id(), id);
}

#[test]
fn dead_looked_up_node_then_the_live_one() {
    let mut net = Net::with_lookup(&ENDPOINTS);
    net.brokers[2].up = false;
    net.lookup_answer = Some(Ok(lookup_answer(&LOOKED_UP)));
    // Attempt 1 to the dead primary: 10 s, then at most 1 s of backoff, then its fallback.
    net.run_for(11_000);
    assert_eq!(net.client.state(), ConnectionState::Online);
    // Attempt 1 (six HELLOs: 1 s four times, then 2 s, then 4 s, cut at 10 s) went to round
    // position 0, the dead node; attempt 2 to its fallback.
    let first: Vec<usize> = net.sent.iter().filter(|s| s.1 == 1).map(|s| s.2).collect();
    assert_eq!(first, [0; 6]);
    assert_eq!(net.brokers[3].logins.len(), 1);
    assert!(net.brokers[0].hellos.is_empty());
    // One lookup for the round.
    assert_eq!(net.lookups, 1);
    let events = net.take_events();
    assert_eq!(disconnects(&events), [DisconnectReason::HandshakeTimeout]);
    assert_eq!(connected(&events), 1);
}

#[test]
fn malformed_lookup_body_falls_back_to_the_static_list() {
    let mut net = Net::with_lookup(&ENDPOINTS);
    net.lookup_answer = Some(Ok(
        b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{\"nodes\":".to_vec(),
    ));
    net.online();
    assert_eq!(net.brokers[0].logins.len(), 1);
    assert_eq!(net.client.stats().lookup_failures, 1);
    let mut net = Net::with_lookup(&ENDPOINTS);
    net.lookup_answer = Some(Ok(b"HTTP/1.1 503 Service Unavailable\r\n\r\n".to_vec()));
    net.online();
    assert_eq!(net.brokers[0].logins.len(), 1);
}

#[test]
fn every_endpoint_failed_starts_a_new_round_with_a_new_lookup() {
    let mut net = Net::with_lookup(&ENDPOINTS);
    for b in &mut net.brokers {
        b.up = false;
    }
    net.lookup_answer = Some(Ok(lookup_answer(&LOOKED_UP)));
    // Round 1: lookup, 2 looked-up + 2 static endpoints (10 s each plus backoffs), then a
    // second lookup.
    while net.lookups < 2 {
        net.run_for(100);
        assert!(net.now < Instant::from_millis(4 * 10_000 + 15_000 + 100));
    }
    // Connections 1-4 went to round positions 0-3: both looked-up nodes, then both static ones.
    let positions: Vec<(u32, usize)> = net.sent.iter().map(|s| (s.1, s.2)).collect();
    for (id, pos) in [(1, 0), (2, 1), (3, 2), (4, 3)] {
        assert!(positions.contains(&(id, pos)), "{positions:?}");
    }
    // Round 2 dials the new answer first: the first node, now up, takes the login.
    net.brokers[2].up = true;
    // Within one attempt wait (1 s plus a jitter below 250 ms).
    net.run_for(1_250);
    assert_eq!(net.client.state(), ConnectionState::Online);
    assert_eq!(net.brokers[2].logins.len(), 1);
}

#[test]
fn lookup_without_static_endpoints_retries_after_backoff() {
    let mut net = Net::with_lookup(&[]);
    net.lookup_answer = Some(Err(LookupError::Status(503)));
    net.run_for(0);
    assert_eq!(net.client.state(), ConnectionState::Backoff);
    assert_eq!(
        disconnects(&net.take_events()),
        [DisconnectReason::NoEndpoint]
    );
    net.lookup_answer = Some(Ok(lookup_answer(&[LOOKED_UP[1]])));
    net.run_for(1_000);
    assert_eq!(net.client.state(), ConnectionState::Online);
    assert_eq!(net.lookups, 2);
    assert_eq!(net.brokers[3].logins.len(), 1);
}

#[test]
fn state_events_the_queue_cannot_hold_are_dropped_and_counted() {
    let mut net = Net::new();
    net.online();
    net.take_events();
    // The application stops reading; every failed attempt adds a Disconnected.
    let mut now = net.now;
    for _ in 0..super::EVENT_QUEUE + 2 {
        if net.client.state() == ConnectionState::Backoff {
            let at = net.client.poll_timeout().expect("a backoff deadline");
            now = Instant::from_millis(at.as_millis().max(now.as_millis()));
            net.client.handle_timeout(now);
        }
        assert!(
            matches!(
                net.client.state(),
                ConnectionState::Handshaking | ConnectionState::Online
            ),
            "{:?}",
            net.client.state()
        );
        net.client.transport_failed(now);
    }
    assert_eq!(net.client.stats().events_dropped, 2);
    let events: Vec<_> = core::iter::from_fn(|| net.client.poll_event()).collect();
    assert_eq!(events.len(), super::EVENT_QUEUE);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Event::Disconnected { .. })),
        "{events:?}"
    );
}

/// A device cut off from every broker (no packet either way) for 10 minutes while its
/// application uploads once a second. Pass criteria: the queue never holds more than its `N`
/// (4 here) uploads; every upload beyond them is refused with `QueueFull` and counted in
/// `uploads_rejected` (596 of 600); after the network returns the client logs in again and the
/// 4 kept uploads reach the broker once each, in the order accepted, after the one acknowledged
/// before the cut; nothing refused ever reaches the broker. Time is simulated, so the 10 minutes
/// take milliseconds.
#[test]
fn ten_minutes_cut_off_at_one_upload_a_second_keeps_the_queue_bounded_and_the_kept_uploads_in_order()
 {
    const CUT_SECS: u32 = 600;
    let mut net = Net::new();
    net.online();
    let before = net.client.upload("meter", b"0").unwrap();
    net.run_for(0);
    assert_eq!(
        net.client.uploads_pending(),
        0,
        "acknowledged before the cut"
    );

    net.lose_up = true;
    net.lose_down = true;
    let mut kept = Vec::new();
    let mut refused = 0u32;
    for s in 1..=CUT_SECS {
        match net.client.upload("meter", std::format!("{s}").as_bytes()) {
            Ok(id) => kept.push((id.0, s)),
            Err(UploadError::QueueFull) => refused += 1,
            Err(e) => panic!("upload {s}: {e:?}"),
        }
        assert!(
            net.client.uploads_pending() <= 4,
            "queue over its bound at {s} s"
        );
        net.run_for(1_000);
    }
    assert_ne!(
        net.client.state(),
        ConnectionState::Online,
        "the cut was noticed"
    );
    assert_eq!(kept.len(), 4);
    assert_eq!(refused, CUT_SECS - 4);
    assert_eq!(net.client.stats().uploads_rejected, CUT_SECS - 4);

    // The network returns. The application reads each event as it comes (the test client lets
    // only EVENT_FRAME_LIMIT frame events wait, and this simulated broker never retransmits),
    // so packets to the device are handed over one at a time.
    net.lose_up = false;
    net.lose_down = false;
    net.hold_down = true;
    for _ in 0..300 {
        net.run_for(100);
        while let Some(mut p) = net.held.pop_front() {
            let _ = net.client.handle_datagram(&mut p, net.now);
            net.settle();
        }
    }
    assert_eq!(
        net.client.state(),
        ConnectionState::Online,
        "back after the cut"
    );
    assert_eq!(
        net.client.uploads_pending(),
        0,
        "every kept upload acknowledged"
    );
    let arrived: Vec<(u32, Vec<u8>)> = net
        .brokers
        .iter()
        .flat_map(|b| b.got.iter())
        .filter_map(|g| match g {
            Got::Upload { id, payload, .. } => Some((*id, payload.clone())),
            _ => None,
        })
        .collect();
    let mut want = vec![(before.0, b"0".to_vec())];
    want.extend(
        kept.iter()
            .map(|(id, s)| (*id, std::format!("{s}").into_bytes())),
    );
    assert_eq!(arrived, want, "once each, in order, nothing refused");
}

/// An UploadAck that arrives ahead of a gap is held (acknowledged at once, no resend needed)
/// and applied right after the frame that fills the gap; a Deliver ahead of a gap is not.
#[test]
fn an_early_upload_ack_is_held_and_applied_after_the_gap() {
    let mut net = Net::new();
    net.brokers[0].auto_upload_ack = false;
    net.online();
    net.take_events();
    let a = net.client.upload("power", b"1").unwrap();
    let b = net.client.upload("power", b"2").unwrap();
    net.run_for(0);
    assert_eq!(net.client.uploads_pending(), 2);
    let dropped_before = net.client.stats().rx_dropped;
    // The broker's frame 1 (UploadAck a) is lost; frame 2 (UploadAck b) arrives first.
    let mut q = VecDeque::new();
    net.brokers[0].next_seq = 2;
    net.brokers[0].send_with_seq(2, Body::UploadAck { upload_id: b.0 }, &mut q);
    net.to_client.extend(q);
    net.settle();
    assert_eq!(
        net.client.stats().rx_dropped,
        dropped_before,
        "held, not dropped"
    );
    assert_eq!(
        net.client.uploads_pending(),
        2,
        "not applied before the gap fills"
    );
    assert!(net.take_events().is_empty());
    net.broker_sends_frame(1, Body::UploadAck { upload_id: a.0 });
    assert_eq!(net.client.uploads_pending(), 0);
    assert_eq!(
        net.take_events(),
        [Event::UploadAcked { id: a }, Event::UploadAcked { id: b }]
    );
    assert_eq!(net.client.stats().rx_dropped, dropped_before);
}

/// A whole receive window of UploadAcks behind one lost frame is held: the broker retires each
/// held frame from its send window when the device's `ack.mask` covers it and sends the next,
/// so up to `RECEIVE_WINDOW - 1` may arrive early, and every one the client dropped would wait
/// for its own backed-off resend (docs/protocol.md section 5, "Receiver").
#[test]
fn a_full_receive_window_of_early_upload_acks_is_held() {
    use shared_protocol::limits::RECEIVE_WINDOW;
    let mut net = Net::new();
    net.brokers[0].auto_upload_ack = false;
    net.online();
    net.take_events();
    let ids: Vec<u32> = (0..4)
        .map(|i| net.client.upload("power", &[b'0' + i]).unwrap().0)
        .collect();
    net.run_for(0);
    let dropped_before = net.client.stats().rx_dropped;
    // Frame 1 (the first upload's UploadAck) is lost; frames 2..=RECEIVE_WINDOW arrive early:
    // the other three uploads' acks, then acks of ids this client never used (held all the
    // same: the client holds by frame, not by id).
    for seq in 2..=RECEIVE_WINDOW {
        let upload_id = ids
            .get(seq as usize - 1)
            .copied()
            .unwrap_or(1_000_000 + seq);
        net.broker_sends_frame(seq, Body::UploadAck { upload_id });
    }
    assert_eq!(
        net.client.stats().rx_dropped,
        dropped_before,
        "every early UploadAck of the receive window held, none dropped"
    );
    assert_eq!(
        net.client.uploads_pending(),
        4,
        "nothing applied before the gap"
    );
    net.broker_sends_frame(1, Body::UploadAck { upload_id: ids[0] });
    assert_eq!(net.client.uploads_pending(), 0, "all four applied in order");
    assert_eq!(net.client.stats().uploads_acked, 4);
}

/// UploadAcks are taken while the application leaves its events waiting: their event is only
/// a notice, so a busy uploader's queue is not stalled by a slow event reader (each refused
/// frame would wait for the broker's backed-off resend).
#[test]
fn upload_acks_are_taken_while_the_event_queue_is_full() {
    let mut net = Net::new();
    net.brokers[0].auto_upload_ack = false;
    net.online();
    net.take_events();
    let ids: Vec<u32> = (0..4)
        .map(|i| net.client.upload("power", &[b'0' + i]).unwrap().0)
        .collect();
    net.run_for(0);
    let dropped_before = net.client.stats().rx_dropped;
    // Nobody drains the events: after two UploadAcked events the queue has no room for
    // events from frames (`EVENT_FRAME_LIMIT`).
    for (seq, id) in (1..).zip(&ids) {
        net.broker_sends_frame(seq, Body::UploadAck { upload_id: *id });
    }
    assert_eq!(net.client.uploads_pending(), 0, "every UploadAck taken");
    assert_eq!(
        net.client.stats().rx_dropped,
        dropped_before,
        "none refused"
    );
    assert_eq!(net.client.stats().uploads_acked, 4);
}

#[test]
fn a_goodbye_acknowledging_unsent_frames_is_reported_unexpected_and_still_ends_the_session() {
    // Found by the `client_datagram` fuzz target: RxError's documentation said no error changes
    // the client's state, but an acknowledgement of frames never sent is reported as
    // `Unexpected` while the rest of the frame is still taken.
    let mut net = Net::new();
    net.online();
    let mut q = VecDeque::new();
    net.brokers[0].send(
        Frame::unreliable(
            Ack { next: 7, mask: 0 },
            Body::Goodbye {
                reason: Code::NORMAL,
            },
        ),
        &mut q,
    );
    let mut packet = q.pop_front().unwrap();
    assert_eq!(
        net.client.handle_datagram(&mut packet, net.now),
        Err(RxError::Unexpected)
    );
    assert_eq!(net.client.state(), ConnectionState::Backoff);
}
