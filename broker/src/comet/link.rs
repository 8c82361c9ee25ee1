//! The broker's side of one established device session, sans-IO: the [`SecureSession`] (seal /
//! open of DATA packets), the heap-backed send window ([`SendWin`]), the receive window
//! ([`RecvWindow`]) and the silence timer. The UDP and device WebSocket endpoints drive the same
//! [`Link`] with bytes and `now_ms`; it never does I/O, never reads a clock and takes its jitter
//! from the caller.
//!
//! Over WebSocket the link is made [`Link::with_carrier`] `Carrier::Reliable`: its send window
//! never resends a frame within the session, its timers only find a dead peer (docs/protocol.md
//! section 5, "Reliable transport"). A resend over UDP is reported as [`Polled::Resend`] so the
//! endpoint can count it.
//!
//! Every outgoing frame carries the current [`RecvWindow::ack`], so acknowledgements ride on any
//! traffic; an AckOnly is sent only when one is due (`ACK_DELAY`) and nothing else went out, or
//! sooner when the endpoint asks ([`Link::seal_pending_ack`]: after a CommandResult, which no
//! frame is likely to follow soon).
//!
//! Reliable frames are handed to the caller in `seq` order (docs/protocol.md section 5): a frame
//! that arrives ahead of a gap is held here (encoded; at most `RECEIVE_WINDOW` frames) and handed
//! over, as [`Received::released`], with the frame that fills the gap.
//!
//! A Deliver is reported acknowledged ([`Received::delivered`]) only once the device's `ack.next`
//! passes its `seq`: a selective acknowledgement means the device holds it, not that it
//! delivered it, and the router's ack of a `msg_id` covers every lower id too, so reporting it
//! early would let a session that dies before the gap fills take the gap's messages with it.
//! Both kinds of gap state live in one [`Gaps`], kept in the send window's box (see
//! [`crate::comet::sendwin`]), so a session with nothing in flight and no gap pays one pointer
//! for all of it.

use std::collections::BTreeMap;

use shared_protocol::codes::Code;
use shared_protocol::frame::{Body, Frame};
use shared_protocol::handshake::Carrier;
use shared_protocol::limits::MAX_FRAME;
use shared_protocol::reliability::{RecvOutcome, RecvWindow};
use shared_protocol::session::{SecureSession, SessionError};

use super::sendwin::{Attachment, Due, SendWin, Tag};

/// Why a frame could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The send window is full (or the peer is dead): try again after acks.
    #[error("send window full")]
    WindowFull,
    /// The body breaks a protocol limit or does not encode.
    #[error("frame does not encode")]
    Encode,
    /// The session cannot seal any more (counter exhausted): it must end.
    #[error("session cannot send: {0}")]
    Session(SessionError),
}

/// A received, authenticated packet.
#[derive(Debug)]
pub struct Received<'p> {
    /// The frame to act on now; `None` for a duplicate or out-of-window reliable frame (already
    /// handled, or to be resent by the peer) and for a frame held until the gap before it fills.
    pub frame: Option<Frame<'p>>,
    /// Held frames that `frame` made deliverable: act on them after it, in this order
    /// ([`Received::frames`] yields both).
    pub released: Vec<Box<[u8]>>,
    /// Message ids whose Deliver frames this packet acknowledged (ack them to the router).
    pub delivered: Vec<u64>,
    /// This packet's counter is higher than every counter received before in the session. Only
    /// such a packet may move a UDP session to a new address (NAT rebinding): an older packet
    /// that an on-path attacker withheld and releases later from elsewhere authenticates, but
    /// must not redirect the session.
    pub newest: bool,
}

impl Received<'_> {
    /// The frames to act on, in `seq` order: [`Received::frame`], then the released ones.
    pub fn frames(&self) -> impl Iterator<Item = Frame<'_>> {
        let released = self
            .released
            .iter()
            // Each was decoded once before it was held and encoded by this module.
            .filter_map(|bytes| Frame::decode(bytes).ok());
        self.frame.into_iter().chain(released)
    }
}

/// What [`Link::poll`] wants done.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// Send the packet of this length from the output buffer, then poll again.
    Send(usize),
    /// The same, for a reliable frame sent again after its wait ran out (count it as a resend).
    Resend(usize),
    /// The session is over for this reason (silence or unacknowledged frames).
    Dead(Code),
    /// Nothing due before [`Link::poll_timeout`].
    Idle,
}

/// What a session keeps while a gap is open in either direction (see module docs).
#[derive(Debug, Default)]
struct Gaps {
    /// Device frames received ahead of a gap (encoded), by `seq`.
    frames: BTreeMap<u32, Box<[u8]>>,
    /// Delivers the device acknowledged selectively: `(seq, msg_id)`, in `seq` order.
    delivers: Vec<(u32, u64)>,
}

impl Attachment for Gaps {
    fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.delivers.is_empty()
    }
}

/// One device session's protocol state (see module docs).
pub struct Link {
    session: SecureSession,
    /// The send window, with the held frames and selectively acknowledged Delivers in its box.
    send: SendWin<Gaps>,
    recv: RecvWindow,
    /// When the last authentic packet arrived. The silence timeout is the caller's (the same
    /// for every link of an endpoint), passed to [`Link::poll`], not kept per session.
    last_rx_ms: u64,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("session_id", &self.session.session_id())
            .field("in_flight", &self.send.in_flight())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link over an accepted session, created at `now_ms`.
    pub fn new(session: SecureSession, now_ms: u64) -> Link {
        Link {
            session,
            send: SendWin::new(),
            recv: RecvWindow::new(),
            last_rx_ms: now_ms,
        }
    }

    /// The same link for a session carried over `carrier` (the default is
    /// [`Carrier::Datagram`]); see the module docs.
    pub fn with_carrier(mut self, carrier: Carrier) -> Link {
        self.send = std::mem::take(&mut self.send).with_carrier(carrier);
        self
    }

    /// The DATA session id.
    pub fn session_id(&self) -> u32 {
        self.session.session_id()
    }

    /// Whether a reliable frame can be sent now (window not full, peer not dead).
    pub fn can_send(&self) -> bool {
        self.send.can_send()
    }

    /// Opens a DATA packet in place. Errors (forged, replayed, other session, undecodable
    /// plaintext) change nothing except that an authentic undecodable packet counts as traffic.
    pub fn receive<'p>(
        &mut self,
        packet: &'p mut [u8],
        now_ms: u64,
    ) -> Result<Received<'p>, SessionError> {
        let highest_before = self.session.highest_received();
        let frame = match self.session.open_frame(packet) {
            Ok(f) => f,
            Err(SessionError::Decode) => {
                self.last_rx_ms = now_ms;
                return Err(SessionError::Decode);
            }
            Err(e) => return Err(e),
        };
        self.last_rx_ms = now_ms;
        let newest = self.session.highest_received() > highest_before;
        let delivered = match self.send.on_ack(frame.ack, now_ms) {
            Some(acked) => self.delivered(&acked, frame.ack.next),
            // An ack for frames never sent is a peer bug: ignore the ack, keep the body.
            None => Vec::new(),
        };
        let mut released = Vec::new();
        let frame = match self.recv.on_receive(frame.seq, now_ms) {
            RecvOutcome::Unreliable => Some(frame),
            RecvOutcome::InOrder { released: n } => {
                // Only a frame that filled a gap releases any (then the gaps exist).
                if let Some(gaps) = self.send.attached_mut() {
                    for seq in frame.seq + 1..=frame.seq + n {
                        released.extend(gaps.frames.remove(&seq));
                    }
                }
                Some(frame)
            }
            RecvOutcome::Early => {
                self.hold(&frame);
                None
            }
            RecvOutcome::Duplicate | RecvOutcome::OutOfWindow => None,
        };
        self.send.tidy();
        Ok(Received {
            frame,
            released,
            delivered,
            newest,
        })
    }

    /// The message ids of Delivers now acknowledged cumulatively (`seq < ack_next`), in order:
    /// those among `acked` and those acknowledged selectively before; the other Delivers in
    /// `acked` wait in [`Gaps::delivers`].
    fn delivered(&mut self, acked: &[(u32, Tag)], ack_next: u32) -> Vec<u64> {
        let mut delivered = Vec::new();
        if let Some(gaps) = self.send.attached_mut() {
            gaps.delivers.retain(|&(seq, id)| {
                let done = seq < ack_next;
                if done {
                    delivered.push((seq, id));
                }
                !done
            });
        }
        for &(seq, tag) in acked {
            let Tag::Deliver(id) = tag else { continue };
            if seq < ack_next {
                delivered.push((seq, id));
            } else {
                self.send.attach().delivers.push((seq, id));
            }
        }
        delivered.sort_unstable();
        delivered.into_iter().map(|(_, id)| id).collect()
    }

    /// Keeps an early frame until the gap before it fills. A frame that does not encode again
    /// (it decoded, so it always does) is left unrecorded: the peer resends it.
    fn hold(&mut self, frame: &Frame<'_>) {
        let mut buf = [0u8; MAX_FRAME];
        if let Ok(bytes) = frame.encode(&mut buf)
            && self.recv.hold(frame.seq)
        {
            let gaps = self.send.attach();
            gaps.frames.insert(frame.seq, (&*bytes).into());
        }
    }

    /// Frames held until a gap fills (for metrics and tests).
    pub fn held(&self) -> usize {
        self.send.attached().map_or(0, |g| g.frames.len())
    }

    /// Seals an unreliable body (Pong, Kick, Goodbye, AckOnly) into `out`; returns its length.
    pub fn seal_unreliable(&mut self, body: Body<'_>, out: &mut [u8]) -> Result<usize, LinkError> {
        let frame = Frame::unreliable(self.recv.ack(), body);
        let n = self.session.seal_frame(&frame, out).map_err(map_seal)?;
        self.recv.on_ack_sent();
        Ok(n)
    }

    /// Registers a reliable body in the send window and seals its first transmission.
    pub fn seal_reliable(
        &mut self,
        body: Body<'_>,
        tag: Tag,
        now_ms: u64,
        jitter: u16,
        out: &mut [u8],
    ) -> Result<usize, LinkError> {
        if !self.send.can_send() {
            return Err(LinkError::WindowFull);
        }
        if !body.is_reliable() || body.check_limits().is_err() {
            return Err(LinkError::Encode);
        }
        let mut buf = [0u8; MAX_FRAME];
        let bytes = postcard::to_slice(&body, &mut buf).map_err(|_| LinkError::Encode)?;
        let stored: Box<[u8]> = (&*bytes).into();
        let seq = self.send.next_seq();
        // Seal first so a failure leaves the window untouched.
        let n = seal_stored(&mut self.session, &self.recv, seq, &stored, out)?;
        self.recv.on_ack_sent();
        let pushed = self.send.push(stored, tag, now_ms, jitter);
        debug_assert_eq!(pushed, Some(seq));
        Ok(n)
    }

    /// Seals an AckOnly with the current acknowledgement into `out` if one is pending (none was
    /// carried by a frame sealed since the last reliable frame arrived), so the endpoint can
    /// acknowledge before `ACK_DELAY` ends; `Ok(None)` when nothing is pending.
    pub fn seal_pending_ack(&mut self, out: &mut [u8]) -> Result<Option<usize>, LinkError> {
        if !self.recv.ack_pending() {
            return Ok(None);
        }
        self.seal_unreliable(Body::AckOnly, out).map(Some)
    }

    /// The next time [`Link::poll`] has something to do, for a session ended after
    /// `silence_ms` without an authentic packet.
    pub fn poll_timeout(&self, silence_ms: u64) -> u64 {
        let silence = self.last_rx_ms.saturating_add(silence_ms);
        [self.send.poll_timeout(), self.recv.poll_timeout()]
            .into_iter()
            .flatten()
            .fold(silence, u64::min)
    }

    /// Runs the timers at `now_ms`: silence timeout (`silence_ms` without an authentic packet),
    /// retransmissions, delayed ack. Call until it returns [`Polled::Idle`] or [`Polled::Dead`].
    pub fn poll(&mut self, now_ms: u64, silence_ms: u64, jitter: u16, out: &mut [u8]) -> Polled {
        if now_ms >= self.last_rx_ms.saturating_add(silence_ms) {
            return Polled::Dead(Code::HEARTBEAT_TIMEOUT);
        }
        match self.send.poll(now_ms, jitter) {
            Some(Due::Dead) => return Polled::Dead(Code::HEARTBEAT_TIMEOUT),
            Some(Due::Retransmit { seq, body }) => {
                return match seal_stored(&mut self.session, &self.recv, seq, body, out) {
                    Ok(n) => {
                        self.recv.on_ack_sent();
                        Polled::Resend(n)
                    }
                    Err(_) => Polled::Dead(Code::REKEY),
                };
            }
            None => {}
        }
        if self.recv.poll_ack(now_ms).is_some() {
            return match self.seal_unreliable(Body::AckOnly, out) {
                Ok(n) => Polled::Send(n),
                Err(_) => Polled::Dead(Code::REKEY),
            };
        }
        Polled::Idle
    }
}

fn map_seal(e: SessionError) -> LinkError {
    match e {
        SessionError::Encode => LinkError::Encode,
        other => LinkError::Session(other),
    }
}

/// Seals `Frame { seq, ack, body }` where `body` is an already encoded postcard `Body`: the
/// frame's postcard form is the concatenation of its fields.
fn seal_stored(
    session: &mut SecureSession,
    recv: &RecvWindow,
    seq: u32,
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, LinkError> {
    session
        .seal_with(out, |room| {
            let head = postcard::to_slice(&(seq, recv.ack()), room)
                .map_err(|_| SessionError::BufferTooSmall)?
                .len();
            let end = head + body.len();
            room.get_mut(head..end)
                .ok_or(SessionError::TooLong)?
                .copy_from_slice(body);
            Ok(end)
        })
        .map_err(map_seal)
}

#[cfg(test)]
mod tests {
    use shared_protocol::handshake::{ClientEvent, ClientHandshake, WelcomeParams};
    use shared_protocol::ids::{Address, IdProfile};
    use shared_protocol::keys::{CookieSecret, DeviceKey, PeerAddr};
    use shared_protocol::limits::{ACK_DELAY_MS, MAX_PACKET};
    use shared_protocol::reliability::Ack;

    use super::*;

    /// The silence timeout these tests run with.
    const SILENCE: u64 = 90_000;

    /// A broker link and the device's session, through the real handshake.
    fn pair() -> (Link, SecureSession) {
        let key = DeviceKey([7; 32]);
        let acceptor =
            shared_protocol::handshake::Acceptor::new(IdProfile::Plug, CookieSecret([1; 32]));
        let peer = PeerAddr::V4([127, 0, 0, 1], 9);
        let mut dev = ClientHandshake::new(Address::device(5), key.clone(), 0, 1);
        let (mut a, mut b, mut c) = ([0u8; MAX_PACKET], [0u8; MAX_PACKET], [0u8; MAX_PACKET]);
        let hello = dev.start(1000, [3; 16], &mut a).unwrap().to_vec();
        let ch = match acceptor.on_hello(&peer, &hello, 1000, &mut b).unwrap() {
            shared_protocol::handshake::HelloReply::Challenge(p) => p.to_vec(),
            other => panic!("{other:?}"),
        };
        let mut ch = ch;
        let login = match dev.on_packet(&mut ch, &mut a).unwrap() {
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
            Some(shared_protocol::handshake::TerminalRecord {
                key: key.clone(),
                last_login_ms: None,
            })
        };
        let acc = acceptor
            .on_login(
                &peer,
                &login,
                1001,
                lookup,
                shared_protocol::handshake::SessionGrant {
                    session_id: 77,
                    broker_nonce: [9; 16],
                },
                &params,
                &mut c,
            )
            .unwrap();
        let mut welcome = acc.welcome.to_vec();
        let est = match dev.on_packet(&mut welcome, &mut a).unwrap() {
            ClientEvent::Established(e) => e,
            other => panic!("{other:?}"),
        };
        (Link::new(acc.session, 1001), est.session)
    }

    #[test]
    fn deliver_is_acked_by_the_device_transport_ack() {
        let (mut link, mut dev) = pair();
        let mut out = [0u8; MAX_PACKET];
        let body = Body::Deliver {
            msg_id: 42,
            from: None,
            payload: b"hi",
        };
        let n = link
            .seal_reliable(body, Tag::Deliver(42), 2000, 0, &mut out)
            .unwrap();
        let mut pkt = out[..n].to_vec();
        let f = dev.open_frame(&mut pkt).unwrap();
        assert_eq!((f.seq, f.body), (1, body));
        // The device acknowledges seq 1 in an AckOnly.
        let ack = Frame::unreliable(Ack { next: 2, mask: 0 }, Body::AckOnly);
        let n = dev.seal_frame(&ack, &mut out).unwrap();
        let mut pkt = out[..n].to_vec();
        let r = link.receive(&mut pkt, 2100).unwrap();
        assert_eq!(r.delivered, vec![42]);
        assert_eq!(r.frame.unwrap().body, Body::AckOnly);
        assert_eq!(link.poll(2100, SILENCE, 0, &mut out), Polled::Idle);
    }

    #[test]
    fn a_pending_ack_is_sealed_on_request_once_and_its_timer_goes() {
        let (mut link, mut dev) = pair();
        let mut out = [0u8; MAX_PACKET];
        assert_eq!(
            link.seal_pending_ack(&mut out),
            Ok(None),
            "nothing received yet"
        );
        let result = Frame {
            seq: 1,
            ack: Ack { next: 1, mask: 0 },
            body: Body::CommandResult {
                cmd_id: 7,
                status: 0,
                payload: b"ok",
            },
        };
        let n = dev.seal_frame(&result, &mut out).unwrap();
        let mut pkt = out[..n].to_vec();
        link.receive(&mut pkt, 2000).unwrap();
        // Without a request the AckOnly would wait for ACK_DELAY.
        assert_eq!(link.poll_timeout(SILENCE), 2000 + ACK_DELAY_MS);
        let n = link
            .seal_pending_ack(&mut out)
            .unwrap()
            .expect("an ack is pending");
        let mut pkt = out[..n].to_vec();
        let f = dev.open_frame(&mut pkt).unwrap();
        assert_eq!(
            (f.seq, f.ack, f.body),
            (0, Ack { next: 2, mask: 0 }, Body::AckOnly)
        );
        assert_eq!(link.seal_pending_ack(&mut out), Ok(None), "sent once");
        assert_eq!(
            link.poll_timeout(SILENCE),
            2000 + SILENCE,
            "only the silence timer is left"
        );
        assert_eq!(
            link.poll(2000 + ACK_DELAY_MS, SILENCE, 0, &mut out),
            Polled::Idle
        );
    }

    #[test]
    fn a_reliable_carrier_link_never_resends_and_gives_up_at_the_same_time() {
        let (link, _dev) = pair();
        let mut link = link.with_carrier(Carrier::Reliable);
        let mut out = [0u8; MAX_PACKET];
        link.seal_reliable(
            Body::UploadAck { upload_id: 9 },
            Tag::Plain,
            2_000,
            u16::MAX,
            &mut out,
        )
        .unwrap();
        // The silence timer is 90 s from 1 001 ms; without jitter the send window gives up
        // 39.5 s after the first send, exactly as over UDP, having sent nothing more.
        let mut now;
        loop {
            now = link.poll_timeout(SILENCE);
            match link.poll(now, SILENCE, u16::MAX, &mut out) {
                Polled::Idle => {}
                Polled::Dead(code) => {
                    assert_eq!(code, Code::HEARTBEAT_TIMEOUT);
                    break;
                }
                other => panic!("{other:?} at {now} ms"),
            }
        }
        assert_eq!(now, 2_000 + 39_500);
    }

    #[test]
    fn retransmits_and_acks_duplicates_once() {
        let (mut link, mut dev) = pair();
        let mut out = [0u8; MAX_PACKET];
        link.seal_reliable(
            Body::UploadAck { upload_id: 9 },
            Tag::Plain,
            0,
            u16::MAX,
            &mut out,
        )
        .unwrap();
        assert_eq!(link.poll_timeout(SILENCE), 500);
        let Polled::Resend(n) = link.poll(500, SILENCE, 0, &mut out) else {
            panic!("no retransmission")
        };
        let mut pkt = out[..n].to_vec();
        let f = dev.open_frame(&mut pkt).unwrap();
        assert_eq!((f.seq, f.body), (1, Body::UploadAck { upload_id: 9 }));
        // A device Send arrives twice: delivered once, acked within ACK_DELAY.
        let send = Frame {
            seq: 1,
            ack: Ack { next: 1, mask: 0 },
            body: Body::Send {
                to: Address::phone(3),
                payload: b"x",
            },
        };
        for (i, expect) in [(0, true), (1, false)] {
            let n = dev.seal_frame(&send, &mut out).unwrap();
            let mut pkt = out[..n].to_vec();
            let r = link.receive(&mut pkt, 600 + i).unwrap();
            assert_eq!(r.frame.is_some(), expect);
        }
        assert_eq!(link.poll_timeout(SILENCE), 650);
        let Polled::Send(n) = link.poll(650, SILENCE, 0, &mut out) else {
            panic!("no ack")
        };
        let mut pkt = out[..n].to_vec();
        let f = dev.open_frame(&mut pkt).unwrap();
        assert_eq!((f.body, f.ack), (Body::AckOnly, Ack { next: 2, mask: 0 }));
    }

    #[test]
    fn a_selectively_acked_deliver_is_reported_only_once_the_gap_before_it_closes() {
        let (mut link, mut dev) = pair();
        let mut out = [0u8; MAX_PACKET];
        for id in [10u64, 11] {
            let body = Body::Deliver {
                msg_id: id,
                from: None,
                payload: b"x",
            };
            link.seal_reliable(body, Tag::Deliver(id), 0, 0, &mut out)
                .unwrap();
        }
        let mut ack = |ack: Ack, now: u64| {
            let f = Frame::unreliable(ack, Body::AckOnly);
            let n = dev.seal_frame(&f, &mut out).unwrap();
            let mut pkt = out[..n].to_vec();
            link.receive(&mut pkt, now).unwrap().delivered
        };
        // Frame 2 (msg 11) held by the device, frame 1 missing: nothing is delivered yet.
        assert!(ack(Ack { next: 1, mask: 1 }, 10).is_empty());
        // Frame 1 arrives: both are delivered, in order.
        assert_eq!(ack(Ack { next: 3, mask: 0 }, 20), vec![10, 11]);
        assert!(ack(Ack { next: 3, mask: 0 }, 30).is_empty());
        assert!(
            link.send.attached().is_none(),
            "nothing in flight, no gap: the window's box is gone"
        );
    }

    #[test]
    fn frames_ahead_of_a_gap_are_held_and_released_in_seq_order() {
        let (mut link, mut dev) = pair();
        let mut out = [0u8; MAX_PACKET];
        let upload = |seq: u32, id: u32| Frame {
            seq,
            ack: Ack { next: 1, mask: 0 },
            body: Body::Upload {
                upload_id: id,
                topic: "power",
                payload: b"1",
            },
        };
        fn receive(
            link: &mut Link,
            dev: &mut SecureSession,
            frame: Frame<'_>,
            now: u64,
        ) -> Vec<u32> {
            let mut out = [0u8; MAX_PACKET];
            let n = dev.seal_frame(&frame, &mut out).unwrap();
            let mut pkt = out[..n].to_vec();
            let r = link.receive(&mut pkt, now).unwrap();
            r.frames()
                .map(|f| match f.body {
                    Body::Upload { upload_id, .. } => upload_id,
                    other => panic!("{other:?}"),
                })
                .collect()
        }
        assert!(
            receive(&mut link, &mut dev, upload(3, 1003), 10).is_empty(),
            "held"
        );
        assert!(
            receive(&mut link, &mut dev, upload(2, 1002), 11).is_empty(),
            "held"
        );
        assert!(
            receive(&mut link, &mut dev, upload(3, 1003), 12).is_empty(),
            "duplicate of a held frame"
        );
        assert_eq!(link.held(), 2);
        assert_eq!(
            receive(&mut link, &mut dev, upload(1, 1001), 13),
            vec![1001, 1002, 1003]
        );
        assert_eq!(link.held(), 0);
        assert!(link.send.attached().is_none(), "the gap closed: no box");
        assert!(
            receive(&mut link, &mut dev, upload(2, 1002), 14).is_empty(),
            "duplicate"
        );
        assert_eq!(
            receive(&mut link, &mut dev, upload(4, 1004), 15),
            vec![1004]
        );
        let Polled::Send(n) = link.poll(100, SILENCE, 0, &mut out) else {
            panic!("no ack")
        };
        let mut pkt = out[..n].to_vec();
        let f = dev.open_frame(&mut pkt).unwrap();
        assert_eq!(f.ack, Ack { next: 5, mask: 0 });
    }

    #[test]
    fn only_a_counter_newer_than_any_seen_is_newest() {
        let (mut link, mut dev) = pair();
        let mut out = [0u8; MAX_PACKET];
        let ping = Frame::unreliable(Ack { next: 1, mask: 0 }, Body::Ping);
        // The device seals counters 0, 1 and 2; the attacker withholds 1 and releases it late.
        let mut sealed: Vec<Vec<u8>> = (0..3)
            .map(|_| {
                let n = dev.seal_frame(&ping, &mut out).unwrap();
                out[..n].to_vec()
            })
            .collect();
        let newest = |link: &mut Link, pkt: &mut Vec<u8>| link.receive(pkt, 2000).unwrap().newest;
        assert!(newest(&mut link, &mut sealed[0]), "first packet");
        assert!(newest(&mut link, &mut sealed[2]), "counter 2 > 0");
        assert!(
            !newest(&mut link, &mut sealed[1]),
            "counter 1 authenticates and is new in the window, but older than 2"
        );
    }

    #[test]
    fn silence_kills_the_session_and_forgeries_change_nothing() {
        let (mut link, _dev) = pair();
        let mut out = [0u8; MAX_PACKET];
        let mut junk = [
            shared_protocol::limits::PROTOCOL_VERSION,
            0x10,
            77,
            0,
            0,
            0,
            5,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ]
        .iter()
        .copied()
        .chain([0u8; 40])
        .collect::<Vec<_>>();
        assert_eq!(
            link.receive(&mut junk, 50_000).unwrap_err(),
            SessionError::AuthFailed
        );
        assert_eq!(
            link.poll_timeout(SILENCE),
            1001 + 90_000,
            "a forgery is not traffic"
        );
        assert_eq!(
            link.poll(91_001, SILENCE, 0, &mut out),
            Polled::Dead(Code::HEARTBEAT_TIMEOUT)
        );
    }
}
