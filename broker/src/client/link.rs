//! The device client's session state after login, sans-IO: sealing and opening DATA packets
//! (`SecureSession`), the reliability windows (`SendWindow` / `RecvWindow` from shared-protocol),
//! delayed acknowledgements, heartbeats and the liveness check. Time (`now_ms`, monotonic) and
//! jitter are passed in; the caller does the socket I/O (see [`super::device`]).
//!
//! Reliable bodies are stored postcard-encoded in the send window and framed again (fresh `ack`,
//! new DATA counter) on retransmission. Bodies that find the window full wait in a FIFO queue.
//!
//! Besides the protocol's own liveness rules (section 6: three heartbeats of silence, or a
//! retransmission giving up), a link may carry a [`Probe`]: after a short quiet spell it Pings
//! the broker and declares the session dead when a few Pings in a row go unanswered. That is how
//! `broker client device` notices a comet that died while the device had nothing to send in
//! seconds rather than the 90 s of the heartbeat rule; over UDP the probe's Ping also makes the
//! kernel report an ICMP "port unreachable" from a dead comet (see [`super::device`]).

use std::collections::{BTreeMap, VecDeque};

use shared_protocol::frame::{Body, Frame};
use shared_protocol::handshake::Carrier;
use shared_protocol::limits::MAX_PACKET;
use shared_protocol::reliability::{RecvOutcome, RecvWindow, SendEvent, SendWindow};
use shared_protocol::session::SecureSession;

use super::output::Event;

/// Reliable frames in flight (the protocol's `MAX_IN_FLIGHT`).
const WINDOW: usize = 16;

/// The session is over.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Retransmission gave up on a frame (protocol section 5).
    #[error("the broker stopped acknowledging (retransmission gave up)")]
    PeerDead,
    /// Nothing authentic arrived for three heartbeat intervals (protocol section 6).
    #[error("no packet from the broker for {0} s")]
    Silent(u64),
    /// A body could not be framed (too large for a packet, or the session is exhausted).
    #[error("cannot send: {0}")]
    Encode(String),
    /// The [`Probe`] got no answer: `pings` Pings in a row, over `silent_ms` of silence.
    #[error("the broker answered none of {pings} probe Pings ({silent_ms} ms without a packet)")]
    ProbeUnanswered {
        /// Pings sent without an answer.
        pings: u32,
        /// How long nothing authentic was heard from the broker.
        silent_ms: u64,
    },
}

/// The client's quick liveness check (see module docs): when nothing authentic has been heard
/// from the broker for `quiet_ms`, send a Ping; while unanswered, Ping again every
/// `answer_within_ms`; after `pings` unanswered Pings and one more `answer_within_ms`, the
/// session is dead ([`LinkError::ProbeUnanswered`]). Any authentic packet (the Pong or anything
/// else) answers it. A broker that stopped answering is so noticed within
/// `quiet_ms + pings * answer_within_ms` of the last packet heard from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Silence from the broker before the first Ping, ms.
    pub quiet_ms: u64,
    /// How long each Ping may wait for an answer, ms.
    pub answer_within_ms: u64,
    /// Unanswered Pings that end the session (at least 1).
    pub pings: u32,
}

impl Probe {
    /// The `broker client device` default quiet spell, ms (its `--probe-after-ms`).
    pub const DEFAULT_QUIET_MS: u64 = 2_000;
    /// How long each probe Ping may wait for an answer, ms: a round trip and the broker's
    /// 50 ms acknowledgement delay, many times over.
    pub const ANSWER_WITHIN_MS: u64 = 1_000;
    /// Unanswered probe Pings that end a session.
    pub const PINGS: u32 = 3;

    /// A probe after `quiet_ms` of silence with the default answer wait and count.
    pub fn after(quiet_ms: u64) -> Probe {
        Probe {
            quiet_ms,
            answer_within_ms: Probe::ANSWER_WITHIN_MS,
            pings: Probe::PINGS,
        }
    }

    /// The longest silence before the probe ends the session, ms.
    pub fn gives_up_after_ms(&self) -> u64 {
        self.quiet_ms + u64::from(self.pings.max(1)) * self.answer_within_ms
    }
}

/// Where a [`Probe`] stands.
#[derive(Clone, Copy, Debug)]
struct Probing {
    probe: Probe,
    /// Pings sent since the broker was last heard.
    unanswered: u32,
    /// When the last of them was sent.
    last_ping_ms: u64,
}

/// A received frame the caller must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Print it.
    Event(Event),
    /// A command: print it and answer it (automatically or from stdin).
    Command {
        /// Its id.
        cmd_id: u32,
        /// Name.
        name: String,
        /// Arguments.
        payload: Vec<u8>,
    },
    /// The answer to a Ping (the load generator's Ping flood counts them).
    Pong,
    /// Nothing for the user (ack, duplicate, unreadable).
    Nothing,
}

/// What a received body means to the user.
fn incoming(body: Body<'_>) -> Incoming {
    let event = match body {
        Body::Deliver {
            msg_id,
            from,
            payload,
        } => Event::Deliver {
            msg_id,
            from,
            payload: payload.to_vec(),
        },
        Body::Command {
            cmd_id,
            name,
            payload,
        } => {
            return Incoming::Command {
                cmd_id,
                name: name.to_string(),
                payload: payload.to_vec(),
            };
        }
        Body::UploadAck { upload_id } => Event::UploadAck { upload_id },
        Body::Response {
            req_id,
            status,
            payload,
        } => Event::Response {
            req_id,
            status,
            payload: payload.to_vec(),
        },
        Body::Pong { .. } => return Incoming::Pong,
        Body::Presence { who, online } => Event::Presence { who, online },
        Body::Kick { reason } => Event::Kick { reason },
        Body::Goodbye { reason } => Event::Goodbye { reason },
        Body::Error { code, about_seq } => Event::Error {
            code,
            about: (about_seq != 0).then_some(about_seq),
            message: String::new(),
        },
        _ => return Incoming::Nothing,
    };
    Incoming::Event(event)
}

/// One logged-in device session.
pub struct Link {
    session: SecureSession,
    send: SendWindow<WINDOW, MAX_PACKET>,
    recv: RecvWindow,
    /// Frames received ahead of a gap (encoded), by `seq`, until the gap fills.
    held: BTreeMap<u32, Vec<u8>>,
    waiting: VecDeque<Vec<u8>>,
    heartbeat_ms: u64,
    last_sent_ms: u64,
    last_heard_ms: u64,
    probing: Option<Probing>,
}

impl Link {
    /// A link for an established `session` with the WELCOME's heartbeat, at `now_ms`.
    pub fn new(session: SecureSession, heartbeat_secs: u16, now_ms: u64) -> Link {
        Link {
            session,
            send: SendWindow::new(),
            recv: RecvWindow::new(),
            held: BTreeMap::new(),
            waiting: VecDeque::new(),
            heartbeat_ms: u64::from(heartbeat_secs.max(1)) * 1000,
            last_sent_ms: now_ms,
            last_heard_ms: now_ms,
            probing: None,
        }
    }

    /// This link over `carrier` (the default is [`Carrier::Datagram`]): over
    /// [`Carrier::Reliable`] (WebSocket) a frame is never sent again within the session, the
    /// send window's timers only find a dead peer (docs/protocol.md section 5, "Reliable
    /// transport").
    pub fn with_carrier(mut self, carrier: Carrier) -> Link {
        self.send = std::mem::take(&mut self.send).with_carrier(carrier);
        self
    }

    /// This link with a [`Probe`] (none by default: only the protocol's liveness rules).
    pub fn with_probe(mut self, probe: Probe) -> Link {
        self.probing = Some(Probing {
            probe,
            unanswered: 0,
            last_ping_ms: 0,
        });
        self
    }

    fn seal(&mut self, seq: u32, body: Body<'_>, now_ms: u64) -> Result<Vec<u8>, LinkError> {
        let frame = Frame {
            seq,
            ack: self.recv.ack(),
            body,
        };
        let mut out = vec![0u8; MAX_PACKET];
        let n = self
            .session
            .seal_frame(&frame, &mut out)
            .map_err(|e| LinkError::Encode(e.to_string()))?;
        out.truncate(n);
        self.recv.on_ack_sent();
        self.last_sent_ms = now_ms;
        Ok(out)
    }

    /// Queues `body` (reliable bodies go through the send window) and returns the packets to
    /// send now. For a reliable body, the returned `u32` is its `seq` when it went out at once.
    pub fn send(
        &mut self,
        body: &Body<'_>,
        now_ms: u64,
        jitter: u16,
    ) -> Result<(Vec<Vec<u8>>, Option<u32>), LinkError> {
        if !body.is_reliable() {
            return Ok((vec![self.seal(0, *body, now_ms)?], None));
        }
        let bytes = postcard::to_stdvec(body).map_err(|e| LinkError::Encode(e.to_string()))?;
        if bytes.len() > MAX_PACKET {
            return Err(LinkError::Encode("body larger than a packet".into()));
        }
        self.waiting.push_back(bytes);
        let before = self.send.next_seq();
        let out = self.flush_waiting(now_ms, jitter)?;
        let seq = (self.send.next_seq() > before).then_some(before);
        Ok((out, seq))
    }

    fn flush_waiting(&mut self, now_ms: u64, jitter: u16) -> Result<Vec<Vec<u8>>, LinkError> {
        let mut out = Vec::new();
        while self.send.can_send() {
            let Some(bytes) = self.waiting.pop_front() else {
                break;
            };
            let seq = match self.send.push(&bytes, now_ms, jitter) {
                Ok(seq) => seq,
                Err(e) => return Err(LinkError::Encode(format!("{e:?}"))),
            };
            let body: Body<'_> =
                postcard::from_bytes(&bytes).map_err(|e| LinkError::Encode(e.to_string()))?;
            out.push(self.seal(seq, body, now_ms)?);
        }
        Ok(out)
    }

    /// Opens a received packet and returns what it means to the user, in `seq` order (a frame
    /// that fills a gap comes with the frames held behind it; a frame ahead of a gap is held and
    /// yields nothing yet). Anything not authentic or not decodable is ignored.
    pub fn on_packet(&mut self, packet: &mut [u8], now_ms: u64) -> Vec<Incoming> {
        let Ok(frame) = self.session.open_frame(packet) else {
            return Vec::new();
        };
        self.last_heard_ms = now_ms;
        if let Some(p) = &mut self.probing {
            p.unanswered = 0;
        }
        // An ack covering never-sent frames is a violation: ignored (protocol section 5).
        let _ = self.send.on_ack(frame.ack, now_ms);
        let mut bodies = Vec::new();
        match self.recv.on_receive(frame.seq, now_ms) {
            RecvOutcome::Unreliable => bodies.push(incoming(frame.body)),
            RecvOutcome::InOrder { released } => {
                bodies.push(incoming(frame.body));
                for seq in frame.seq + 1..=frame.seq + released {
                    let held = self.held.remove(&seq).unwrap_or_default();
                    if let Ok(f) = Frame::decode(&held) {
                        bodies.push(incoming(f.body));
                    }
                }
            }
            RecvOutcome::Early => {
                let mut buf = vec![0u8; MAX_PACKET];
                if let Ok(bytes) = frame.encode(&mut buf)
                    && self.recv.hold(frame.seq)
                {
                    self.held.insert(frame.seq, bytes.to_vec());
                }
            }
            RecvOutcome::Duplicate | RecvOutcome::OutOfWindow => {}
        }
        bodies.retain(|b| *b != Incoming::Nothing);
        bodies
    }

    /// What is due at `now_ms`: retransmissions, frames that waited for window room, a delayed
    /// acknowledgement, a heartbeat. Fails when the session is dead.
    pub fn poll(&mut self, now_ms: u64, jitter: u16) -> Result<Vec<Vec<u8>>, LinkError> {
        let silence = 3 * self.heartbeat_ms;
        if now_ms.saturating_sub(self.last_heard_ms) >= silence {
            return Err(LinkError::Silent(silence / 1000));
        }
        let mut out = Vec::new();
        if self.probe_due(now_ms)? {
            out.push(self.seal(0, Body::Ping, now_ms)?);
        }
        loop {
            let (seq, bytes) = match self.send.poll(now_ms, jitter) {
                None => break,
                Some(SendEvent::PeerDead) => return Err(LinkError::PeerDead),
                Some(SendEvent::Retransmit { seq, bytes, .. }) => (seq, bytes.to_vec()),
            };
            let body: Body<'_> =
                postcard::from_bytes(&bytes).map_err(|e| LinkError::Encode(e.to_string()))?;
            out.push(self.seal(seq, body, now_ms)?);
        }
        out.extend(self.flush_waiting(now_ms, jitter)?);
        if out.is_empty() && self.recv.poll_ack(now_ms).is_some() {
            out.push(self.seal(0, Body::AckOnly, now_ms)?);
        }
        if now_ms.saturating_sub(self.last_sent_ms) >= self.heartbeat_ms {
            out.push(self.seal(0, Body::Ping, now_ms)?);
        }
        Ok(out)
    }

    /// Whether the [`Probe`] sends a Ping at `now_ms` (and counts it); its verdict when the
    /// last Ping's wait is over unanswered.
    fn probe_due(&mut self, now_ms: u64) -> Result<bool, LinkError> {
        let heard = self.last_heard_ms;
        let Some(p) = &mut self.probing else {
            return Ok(false);
        };
        if now_ms.saturating_sub(heard) < p.probe.quiet_ms {
            return Ok(false);
        }
        if p.unanswered > 0 && now_ms.saturating_sub(p.last_ping_ms) < p.probe.answer_within_ms {
            return Ok(false);
        }
        if p.unanswered >= p.probe.pings.max(1) {
            return Err(LinkError::ProbeUnanswered {
                pings: p.unanswered,
                silent_ms: now_ms.saturating_sub(heard),
            });
        }
        p.unanswered += 1;
        p.last_ping_ms = now_ms;
        Ok(true)
    }

    /// When the [`Probe`] acts next, if there is one.
    fn probe_deadline(&self) -> Option<u64> {
        let p = self.probing.as_ref()?;
        Some(if p.unanswered == 0 {
            self.last_heard_ms + p.probe.quiet_ms
        } else {
            p.last_ping_ms + p.probe.answer_within_ms
        })
    }

    /// When [`Link::poll`] must run next.
    pub fn next_deadline(&self) -> u64 {
        [
            self.send.poll_timeout(),
            self.recv.poll_timeout(),
            Some(self.last_sent_ms + self.heartbeat_ms),
            Some(self.last_heard_ms + 3 * self.heartbeat_ms),
            self.probe_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_protocol::ids::Address;
    use shared_protocol::keys::{DirectionKey, SessionKeys};
    use shared_protocol::reliability::Ack;
    use shared_protocol::session::Role;

    fn pair() -> (Link, SecureSession) {
        let keys = SessionKeys {
            d2b: DirectionKey([1; 32]),
            b2d: DirectionKey([2; 32]),
        };
        let device = SecureSession::new(Role::Device, 9, &keys);
        let broker = SecureSession::new(Role::Broker, 9, &keys);
        (Link::new(device, 30, 0), broker)
    }

    fn open(broker: &mut SecureSession, mut p: Vec<u8>) -> (u32, Ack, String) {
        let f = broker.open_frame(&mut p).unwrap();
        (f.seq, f.ack, f.body.name().to_string())
    }

    #[test]
    fn over_websocket_a_send_goes_out_once_and_the_session_dies_on_time() {
        let (link, mut broker) = pair();
        let mut link = link.with_carrier(Carrier::Reliable);
        let body = Body::Send {
            to: Address::device(2),
            payload: b"hi",
        };
        let (out, seq) = link.send(&body, 0, 0).unwrap();
        assert_eq!((out.len(), seq), (1, Some(1)));
        assert_eq!(open(&mut broker, out[0].clone()).0, 1);
        // jitter 0: a datagram sender would resend at 250, 750, ... and give up at 19 750 ms.
        for now in (10..19_750).step_by(10) {
            assert!(link.poll(now, 0).unwrap().is_empty(), "sent at {now} ms");
        }
        assert!(matches!(link.poll(19_750, 0), Err(LinkError::PeerDead)));
    }

    #[test]
    fn reliable_send_retransmits_until_acked_then_heartbeats() {
        let (mut link, mut broker) = pair();
        let body = Body::Send {
            to: Address::device(2),
            payload: b"hi",
        };
        let (out, seq) = link.send(&body, 0, 0).unwrap();
        assert_eq!(seq, Some(1));
        assert_eq!(open(&mut broker, out[0].clone()).0, 1);
        // jitter 0: the first wait is 250 ms.
        assert!(link.poll(249, 0).unwrap().is_empty());
        let again = link.poll(250, 0).unwrap();
        assert_eq!(open(&mut broker, again[0].clone()).0, 1);
        // The broker acknowledges it: no more retransmissions, next is the heartbeat.
        let ack = Frame::unreliable(Ack { next: 2, mask: 0 }, Body::AckOnly);
        let mut p = vec![0u8; MAX_PACKET];
        let n = broker.seal_frame(&ack, &mut p).unwrap();
        p.truncate(n);
        assert!(link.on_packet(&mut p, 300).is_empty());
        assert_eq!(link.next_deadline(), 250 + 30_000);
        let ping = link.poll(30_250, 0).unwrap();
        assert_eq!(open(&mut broker, ping[0].clone()).2, "Ping");
    }

    #[test]
    fn delivery_is_acked_after_delay_and_duplicates_are_not_reported() {
        let (mut link, mut broker) = pair();
        let deliver = Frame {
            seq: 1,
            ack: Ack { next: 1, mask: 0 },
            body: Body::Deliver {
                msg_id: 4,
                from: None,
                payload: b"x",
            },
        };
        let seal = |b: &mut SecureSession| {
            let mut p = vec![0u8; MAX_PACKET];
            let n = b.seal_frame(&deliver, &mut p).unwrap();
            p.truncate(n);
            p
        };
        let mut p1 = seal(&mut broker);
        let mut p2 = seal(&mut broker);
        assert!(matches!(
            link.on_packet(&mut p1, 10).as_slice(),
            [Incoming::Event(Event::Deliver { msg_id: 4, .. })]
        ));
        assert!(link.on_packet(&mut p2, 20).is_empty());
        assert!(link.poll(59, 0).unwrap().is_empty());
        let ack = link.poll(60, 0).unwrap();
        let (seq, a, name) = open(&mut broker, ack[0].clone());
        assert_eq!((seq, a.next, name.as_str()), (0, 2, "AckOnly"));
    }

    /// Seals an unreliable Pong from the broker, as its answer to a Ping.
    fn pong(broker: &mut SecureSession) -> Vec<u8> {
        let f = Frame::unreliable(Ack { next: 1, mask: 0 }, Body::Pong { server_time_ms: 1 });
        let mut p = vec![0u8; MAX_PACKET];
        let n = broker.seal_frame(&f, &mut p).unwrap();
        p.truncate(n);
        p
    }

    #[test]
    fn an_idle_link_with_a_probe_pings_after_the_quiet_spell_and_an_answer_resets_it() {
        let (link, mut broker) = pair();
        let mut link = link.with_probe(Probe::after(2_000));
        assert_eq!(link.next_deadline(), 2_000);
        assert!(link.poll(1_999, 0).unwrap().is_empty());
        let ping = link.poll(2_000, 0).unwrap();
        assert_eq!(ping.len(), 1);
        assert_eq!(open(&mut broker, ping[0].clone()).2, "Ping");
        // Waiting for the answer: the next Ping is due a second later, not before.
        assert_eq!(link.next_deadline(), 3_000);
        assert!(link.poll(2_999, 0).unwrap().is_empty());
        // The Pong answers it: quiet again until two seconds after it.
        let mut p = pong(&mut broker);
        assert!(matches!(
            link.on_packet(&mut p, 2_100).as_slice(),
            [Incoming::Pong]
        ));
        assert_eq!(link.next_deadline(), 4_100);
        assert!(link.poll(4_099, 0).unwrap().is_empty());
        assert_eq!(link.poll(4_100, 0).unwrap().len(), 1);
    }

    #[test]
    fn a_probe_unanswered_three_times_ends_the_session_within_its_bound() {
        let (link, mut broker) = pair();
        let probe = Probe::after(2_000);
        let mut link = link.with_probe(probe);
        for at in [2_000, 3_000, 4_000] {
            let ping = link.poll(at, 0).unwrap();
            assert_eq!(open(&mut broker, ping[0].clone()).2, "Ping", "at {at}");
        }
        assert!(link.poll(4_999, 0).unwrap().is_empty());
        assert_eq!(link.next_deadline(), probe.gives_up_after_ms());
        assert_eq!(
            link.poll(5_000, 0),
            Err(LinkError::ProbeUnanswered {
                pings: 3,
                silent_ms: 5_000
            })
        );
        // Without a probe, the same silence is only the protocol's: 90 s.
        let (mut plain, _) = pair();
        assert!(plain.poll(5_000, 0).unwrap().is_empty());
        assert_eq!(plain.next_deadline(), 30_000);
    }

    #[test]
    fn silence_ends_the_session() {
        let (mut link, _) = pair();
        assert_eq!(link.poll(90_000, 0), Err(LinkError::Silent(90)));
    }
}
