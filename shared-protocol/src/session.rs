//! The secure session: sealing and opening DATA packets (docs/protocol.md sections 2.2 and 3).
//!
//! A [`SecureSession`] is one side (device or broker) of an established session. It owns both
//! direction keys from [`crate::keys::derive_session_keys`], the send counter (the nonce) and the
//! receive [`ReplayWindow`]. It works in place on caller buffers and never allocates:
//! * [`SecureSession::seal`] / [`SecureSession::seal_with`] write `header || ciphertext || tag`;
//! * [`SecureSession::open`] / [`SecureSession::open_in_place`] check the header, the replay window
//!   (before decrypting), verify and decrypt, and only then record the counter.
//!
//! Frame-level helpers ([`SecureSession::seal_frame`], [`SecureSession::open_frame`]) add the
//! postcard [`crate::frame::Frame`] codec on top. The broker's first packet, the WELCOME, is sealed
//! with counter 0 like a DATA packet but under the WELCOME header (session id and broker nonce,
//! docs/protocol.md section 3.2): [`SecureSession::seal_welcome`] / [`SecureSession::open_welcome`]. Sessions are found by `session_id`
//! ([`peek_session_id`]), never by address: a packet that opens is authentic wherever it came from.
//!
//! Each direction's cipher is a [`SessionAead`] (see [`crate::aead`]) keyed once in
//! [`SecureSession::new`], at login, and kept for the life of the session: no packet re-keys it.

use crate::aead::{AeadError, NONCE_LEN, PacketAead, SessionAead};
use crate::frame::Frame;
use crate::keys::SessionKeys;
use crate::replay::{ReplayError, ReplayWindow};

use crate::limits::{
    BROKER_NONCE_LEN, COUNTER_LIMIT, DATA_HEADER_LEN as HEADER_LEN, MAX_PACKET, MIN_FRAME, TAG_LEN,
    WELCOME_HEADER_LEN,
};
pub use crate::packet::DataHeader;
use crate::packet::PacketError;
use crate::packet::WelcomeHeader;

/// Bytes a DATA packet adds around its plaintext (header and tag).
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest plaintext (encoded frame) one DATA packet carries.
pub const MAX_PLAINTEXT: usize = MAX_PACKET - OVERHEAD;

/// Which side of the session this is; selects the send and receive keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// The device: sends with `d2b`, receives with `b2d`.
    Device,
    /// The broker: sends with `b2d`, receives with `d2b`.
    Broker,
}

/// Why sealing or opening a DATA packet failed. Opening errors never change the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SessionError {
    /// The packet is shorter than header + tag + the smallest frame (`MIN_FRAME`).
    Truncated,
    /// The packet or the plaintext would exceed `MAX_PACKET`.
    TooLong,
    /// Not a DATA (or WELCOME) packet of this version, or its counter is at or above 2^48.
    NotData,
    /// The header's session id is not this session's.
    WrongSession,
    /// The counter was already received or is older than the replay window.
    Replayed,
    /// The tag did not verify: forged, corrupted or under another key.
    AuthFailed,
    /// The send counter reached 2^48: end the session and log in again.
    CounterExhausted,
    /// The caller's output buffer is too small.
    BufferTooSmall,
    /// The frame could not be encoded (it does not fit, breaks a limit, or the plaintext is
    /// shorter than `MIN_FRAME`).
    Encode,
    /// The packet authenticated but its plaintext is not a valid frame.
    Decode,
    /// A WELCOME can only be the first packet a session sends (counter 0).
    NotFirstPacket,
}

impl core::fmt::Display for SessionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = match self {
            SessionError::Truncated => "packet truncated",
            SessionError::TooLong => "packet too long",
            SessionError::NotData => "not a DATA packet of this version",
            SessionError::WrongSession => "wrong session id",
            SessionError::Replayed => "replayed or too old counter",
            SessionError::AuthFailed => "authentication failed",
            SessionError::CounterExhausted => "send counter exhausted",
            SessionError::BufferTooSmall => "output buffer too small",
            SessionError::Encode => "frame does not encode",
            SessionError::Decode => "authenticated plaintext is not a frame",
            SessionError::NotFirstPacket => "a WELCOME must be the first packet sent",
        };
        f.write_str(s)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SessionError {}

fn parse_header(packet: &[u8]) -> Result<DataHeader, SessionError> {
    DataHeader::parse(packet)
        .map(|(h, _)| h)
        .map_err(|e| match e {
            PacketError::Truncated => SessionError::Truncated,
            PacketError::TooLarge => SessionError::TooLong,
            PacketError::InvalidSessionId => SessionError::WrongSession,
            _ => SessionError::NotData,
        })
}

/// The session id of a DATA packet, for finding its session (broker side). Unauthenticated.
pub fn peek_session_id(packet: &[u8]) -> Result<u32, SessionError> {
    parse_header(packet).map(|h| h.session_id)
}

fn nonce(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

fn tag_of(bytes: &[u8]) -> Result<[u8; TAG_LEN], SessionError> {
    bytes.try_into().map_err(|_| SessionError::Truncated)
}

fn seal_error(e: AeadError) -> SessionError {
    match e {
        AeadError::TooLong => SessionError::TooLong,
        AeadError::AuthFailed => SessionError::AuthFailed,
    }
}

/// One side of an established session.
///
/// Not `Clone`: a copy would hold the direction keys and could seal with a send counter the
/// original also uses (nonce reuse). Both ciphers wipe their keys when the session is dropped.
pub struct SecureSession {
    role: Role,
    session_id: u32,
    send: SessionAead,
    recv: SessionAead,
    send_counter: u64,
    replay: ReplayWindow,
}

impl core::fmt::Debug for SecureSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecureSession")
            .field("role", &self.role)
            .field("session_id", &self.session_id)
            .field("send_counter", &self.send_counter)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

impl SecureSession {
    /// A fresh session (send counter 0, empty replay window) for `role`.
    pub fn new(role: Role, session_id: u32, keys: &SessionKeys) -> Self {
        let (send, recv) = match role {
            Role::Device => (&keys.d2b, &keys.b2d),
            Role::Broker => (&keys.b2d, &keys.d2b),
        };
        Self {
            role,
            session_id,
            send: SessionAead::new(send),
            recv: SessionAead::new(recv),
            send_counter: 0,
            replay: ReplayWindow::new(),
        }
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session id carried in every DATA header.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// The counter the next sealed packet will carry.
    pub fn next_send_counter(&self) -> u64 {
        self.send_counter
    }

    /// The highest counter received so far.
    pub fn highest_received(&self) -> Option<u64> {
        self.replay.highest()
    }

    /// Seals `plaintext` into `out` as a complete DATA packet; returns the packet length.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, SessionError> {
        self.seal_with(out, |body| {
            let dst = body
                .get_mut(..plaintext.len())
                .ok_or(SessionError::BufferTooSmall)?;
            dst.copy_from_slice(plaintext);
            Ok(plaintext.len())
        })
    }

    /// Seals a plaintext that `write` produces directly in `out` (no copy): `write` gets the room
    /// between header and tag and returns how many bytes it wrote. Returns the packet length.
    pub fn seal_with(
        &mut self,
        out: &mut [u8],
        write: impl FnOnce(&mut [u8]) -> Result<usize, SessionError>,
    ) -> Result<usize, SessionError> {
        if self.send_counter >= COUNTER_LIMIT {
            return Err(SessionError::CounterExhausted);
        }
        let room = out.len().min(MAX_PACKET);
        if room < OVERHEAD {
            return Err(SessionError::BufferTooSmall);
        }
        let n = write(&mut out[HEADER_LEN..room - TAG_LEN])?;
        if n > room - OVERHEAD {
            return Err(SessionError::TooLong);
        }
        if n < MIN_FRAME {
            // Receivers drop DATA packets whose plaintext cannot hold a frame.
            return Err(SessionError::Encode);
        }
        let counter = self.send_counter;
        let header = DataHeader {
            session_id: self.session_id,
            counter,
        };
        // Refuses session id 0 (never issued); the counter was checked above.
        header.emit(out).map_err(|_| SessionError::WrongSession)?;
        let (aad, rest) = out.split_at_mut(HEADER_LEN);
        let (body, tail) = rest.split_at_mut(n);
        let tag = self
            .send
            .seal_in_place(&nonce(counter), aad, body)
            .map_err(seal_error)?;
        tail[..TAG_LEN].copy_from_slice(&tag);
        self.send_counter += 1;
        Ok(HEADER_LEN + n + TAG_LEN)
    }

    fn precheck(&self, packet: &[u8]) -> Result<DataHeader, SessionError> {
        if packet.len() > MAX_PACKET {
            return Err(SessionError::TooLong);
        }
        let header = parse_header(packet)?;
        if header.session_id != self.session_id {
            return Err(SessionError::WrongSession);
        }
        self.replay
            .check(header.counter)
            .map_err(|_| SessionError::Replayed)?;
        Ok(header)
    }

    fn record(&mut self, counter: u64) -> Result<(), SessionError> {
        self.replay
            .accept(counter)
            .map_err(|_: ReplayError| SessionError::Replayed)
    }

    /// Opens a DATA packet into `out`; returns the plaintext (a prefix of `out`).
    ///
    /// Order: length, version/type, session id, replay window check, tag verification and
    /// decryption, then the counter is recorded. Any error leaves the session unchanged.
    pub fn open<'o>(&mut self, packet: &[u8], out: &'o mut [u8]) -> Result<&'o [u8], SessionError> {
        let header = self.precheck(packet)?;
        let n = packet.len() - OVERHEAD;
        let dst = out.get_mut(..n).ok_or(SessionError::BufferTooSmall)?;
        let tag = tag_of(&packet[HEADER_LEN + n..])?;
        dst.copy_from_slice(&packet[HEADER_LEN..HEADER_LEN + n]);
        if self
            .recv
            .open_in_place(&nonce(header.counter), &packet[..HEADER_LEN], dst, &tag)
            .is_err()
        {
            // Don't leave unauthenticated plaintext in the caller's buffer.
            dst.fill(0);
            return Err(SessionError::AuthFailed);
        }
        self.record(header.counter)?;
        Ok(dst)
    }

    /// Opens a DATA packet in place; returns the plaintext (a sub-slice of `packet`).
    /// Same checks and order as [`SecureSession::open`].
    pub fn open_in_place<'p>(&mut self, packet: &'p mut [u8]) -> Result<&'p [u8], SessionError> {
        let header = self.precheck(packet)?;
        let n = packet.len() - OVERHEAD;
        let (aad, rest) = packet.split_at_mut(HEADER_LEN);
        let (body, tag) = rest.split_at_mut(n);
        let tag = tag_of(tag)?;
        if self
            .recv
            .open_in_place(&nonce(header.counter), aad, body, &tag)
            .is_err()
        {
            return Err(SessionError::AuthFailed);
        }
        self.record(header.counter)?;
        Ok(&packet[HEADER_LEN..HEADER_LEN + n])
    }

    /// Encodes `frame` (postcard, limits checked) straight into `out` and seals it; returns the
    /// packet length.
    pub fn seal_frame(&mut self, frame: &Frame<'_>, out: &mut [u8]) -> Result<usize, SessionError> {
        self.seal_with(out, |room| {
            frame
                .encode(room)
                .map(|b| b.len())
                .map_err(|_| SessionError::Encode)
        })
    }

    /// A device's [`SecureSession::seal_frame`]: the frame is encoded with
    /// [`Frame::encode_from_device`], so a body only a broker sends is [`SessionError::Encode`]
    /// (nothing sealed, no counter used) and a device links only the writers of the bodies it
    /// sends.
    pub fn seal_frame_from_device(
        &mut self,
        frame: &Frame<'_>,
        out: &mut [u8],
    ) -> Result<usize, SessionError> {
        self.seal_with(out, |room| {
            frame
                .encode_from_device(room)
                .map(|b| b.len())
                .map_err(|_| SessionError::Encode)
        })
    }

    /// Opens a DATA packet in place and decodes its frame (borrowing from `packet`). A packet
    /// that authenticates but does not decode is still recorded in the replay window (it was
    /// genuinely sent) and reported as [`SessionError::Decode`].
    pub fn open_frame<'p>(&mut self, packet: &'p mut [u8]) -> Result<Frame<'p>, SessionError> {
        let plain = self.open_in_place(packet)?;
        Frame::decode(plain).map_err(|_| SessionError::Decode)
    }

    /// A device's [`SecureSession::open_frame`]: the frame is decoded with
    /// [`Frame::decode_from_broker`], so a body only a device sends is
    /// [`SessionError::Decode`] (recorded in the replay window like any other undecodable
    /// frame) and a device links only the readers of the bodies a broker sends.
    pub fn open_frame_from_broker<'p>(
        &mut self,
        packet: &'p mut [u8],
    ) -> Result<Frame<'p>, SessionError> {
        let plain = self.open_in_place(packet)?;
        Frame::decode_from_broker(plain).map_err(|_| SessionError::Decode)
    }

    /// Seals the WELCOME packet: the 22-byte WELCOME header (`session_id`, `broker_nonce`) as
    /// associated data, then `frame` encrypted with counter 0. It must be the first packet this
    /// side sends; afterwards the next DATA packet carries counter 1. Returns the packet length.
    pub fn seal_welcome(
        &mut self,
        broker_nonce: &[u8; BROKER_NONCE_LEN],
        frame: &Frame<'_>,
        out: &mut [u8],
    ) -> Result<usize, SessionError> {
        if self.send_counter != 0 {
            return Err(SessionError::NotFirstPacket);
        }
        let room = out.len().min(MAX_PACKET);
        if room < WELCOME_HEADER_LEN + TAG_LEN {
            return Err(SessionError::BufferTooSmall);
        }
        let n = frame
            .encode(&mut out[WELCOME_HEADER_LEN..room - TAG_LEN])
            .map_err(|_| SessionError::Encode)?
            .len();
        if n < MIN_FRAME {
            return Err(SessionError::Encode);
        }
        let header = WelcomeHeader {
            session_id: self.session_id,
            broker_nonce: *broker_nonce,
        };
        header.emit(out).map_err(|_| SessionError::WrongSession)?;
        let (aad, rest) = out.split_at_mut(WELCOME_HEADER_LEN);
        let (body, tail) = rest.split_at_mut(n);
        let tag = self
            .send
            .seal_in_place(&nonce(0), aad, body)
            .map_err(seal_error)?;
        tail[..TAG_LEN].copy_from_slice(&tag);
        self.send_counter = 1;
        Ok(WELCOME_HEADER_LEN + n + TAG_LEN)
    }

    /// Opens a WELCOME packet in place (counter 0, associated data = its 22-byte header) and
    /// decodes its frame. Same order as [`SecureSession::open`]: length, version/type, session
    /// id, replay window, tag; only then is counter 0 recorded. Any error changes nothing.
    pub fn open_welcome<'p>(&mut self, packet: &'p mut [u8]) -> Result<Frame<'p>, SessionError> {
        if packet.len() > MAX_PACKET {
            return Err(SessionError::TooLong);
        }
        let (header, _) = WelcomeHeader::parse(packet).map_err(|e| match e {
            PacketError::Truncated => SessionError::Truncated,
            PacketError::InvalidSessionId => SessionError::WrongSession,
            _ => SessionError::NotData,
        })?;
        if header.session_id != self.session_id {
            return Err(SessionError::WrongSession);
        }
        self.replay.check(0).map_err(|_| SessionError::Replayed)?;
        let n = packet.len() - WELCOME_HEADER_LEN - TAG_LEN;
        let (aad, rest) = packet.split_at_mut(WELCOME_HEADER_LEN);
        let (body, tag) = rest.split_at_mut(n);
        let tag = tag_of(tag)?;
        if self.recv.open_in_place(&nonce(0), aad, body, &tag).is_err() {
            return Err(SessionError::AuthFailed);
        }
        self.record(0)?;
        let plain = &packet[WELCOME_HEADER_LEN..WELCOME_HEADER_LEN + n];
        // Only a device opens a WELCOME: it carries a body a broker sends.
        Frame::decode_from_broker(plain).map_err(|_| SessionError::Decode)
    }

    /// Test and vector helper: sets the next send counter. Counters must never be reused under
    /// one key, so production code has no reason to call this.
    #[doc(hidden)]
    pub fn set_send_counter_for_tests(&mut self, counter: u64) {
        self.send_counter = counter;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{DeviceKey, derive_session_keys};

    fn pair() -> (SecureSession, SecureSession) {
        let keys = derive_session_keys(&DeviceKey([7; 32]), 42, &[1; 16], &[3; 16], &[2; 32]);
        (
            SecureSession::new(Role::Device, 0x0102_0304, &keys),
            SecureSession::new(Role::Broker, 0x0102_0304, &keys),
        )
    }

    #[test]
    fn round_trip_both_directions() {
        let (mut d, mut b) = pair();
        let mut pkt = [0u8; 64];
        let n = d.seal(b"hello", &mut pkt).unwrap();
        assert_eq!(n, 5 + OVERHEAD);
        assert_eq!(&pkt[..6], &[3, 0x10, 4, 3, 2, 1]);
        assert_eq!(&pkt[6..14], &[0; 8]);
        let mut out = [0u8; 64];
        assert_eq!(b.open(&pkt[..n], &mut out).unwrap(), b"hello");
        let n = b.seal(b"world!", &mut pkt).unwrap();
        assert_eq!(d.open_in_place(&mut pkt[..n]).unwrap(), b"world!");
        // A side cannot open its own packets (direction keys differ).
        let n = d.seal(b"xxxx", &mut pkt).unwrap();
        assert_eq!(d.open(&pkt[..n], &mut out), Err(SessionError::AuthFailed));
        assert_eq!(d.next_send_counter(), 2);
    }

    #[test]
    fn tamper_any_byte_fails_and_changes_nothing() {
        let (mut d, mut b) = pair();
        let mut pkt = [0u8; 64];
        let n = d.seal(b"payload", &mut pkt).unwrap();
        for i in 0..n {
            let mut t = pkt;
            t[i] ^= 0x01;
            let before = b.highest_received();
            let mut out = [0u8; 64];
            let r = b.open(&t[..n], &mut out).map(|_| ());
            assert!(r.is_err(), "byte {i}");
            assert_eq!(b.highest_received(), before);
        }
        assert_eq!(b.open(&pkt[..n], &mut [0u8; 64]).unwrap(), b"payload");
    }

    #[test]
    fn replay_and_errors() {
        let (mut d, mut b) = pair();
        let mut pkt = [0u8; 64];
        let n = d.seal(b"aaaa", &mut pkt).unwrap();
        let mut out = [0u8; 64];
        b.open(&pkt[..n], &mut out).unwrap();
        assert_eq!(b.open(&pkt[..n], &mut out), Err(SessionError::Replayed));
        assert_eq!(
            b.open(&pkt[..OVERHEAD - 1], &mut out),
            Err(SessionError::Truncated)
        );
        assert_eq!(b.open(&[], &mut out), Err(SessionError::Truncated));
        assert_eq!(
            b.open(&[1, 0x10, 0, 0], &mut out),
            Err(SessionError::NotData)
        );
        let mut other = pkt;
        other[2] ^= 1;
        assert_eq!(
            b.open(&other[..n], &mut out),
            Err(SessionError::WrongSession)
        );
        assert_eq!(
            b.open(&pkt[..n], &mut [0u8; 0]),
            Err(SessionError::Replayed)
        );
        let n2 = d.seal(b"abcde", &mut pkt).unwrap();
        let mut small = [0u8; 2];
        assert_eq!(
            b.open(&pkt[..n2], &mut small),
            Err(SessionError::BufferTooSmall)
        );
        assert_eq!(b.open(&pkt[..n2], &mut out).unwrap(), b"abcde");
    }

    #[test]
    fn counter_limit() {
        let (mut d, mut b) = pair();
        d.set_send_counter_for_tests(COUNTER_LIMIT - 1);
        let mut pkt = [0u8; 64];
        let n = d.seal(b"last", &mut pkt).unwrap();
        assert_eq!(b.open(&pkt[..n], &mut [0u8; 64]).unwrap(), b"last");
        assert_eq!(
            d.seal(b"more", &mut pkt),
            Err(SessionError::CounterExhausted)
        );
    }

    #[test]
    fn size_limits() {
        let (mut d, _) = pair();
        let mut big = [0u8; 1300];
        let pt = [0u8; MAX_PLAINTEXT + 1];
        assert_eq!(d.seal(&pt, &mut big), Err(SessionError::BufferTooSmall));
        let n = d.seal(&pt[..MAX_PLAINTEXT], &mut big).unwrap();
        assert_eq!(n, MAX_PACKET);
        assert_eq!(d.seal(b"abc", &mut big), Err(SessionError::Encode));
        assert_eq!(
            d.seal(b"", &mut [0u8; OVERHEAD - 1]),
            Err(SessionError::BufferTooSmall)
        );
    }

    #[test]
    fn welcome_uses_counter_zero_and_binds_its_header() {
        use crate::frame::{Ack, Body};
        let (mut d, mut b) = pair();
        // A body a broker sends: only a device opens a WELCOME.
        let frame = Frame::unreliable(Ack { next: 1, mask: 0 }, Body::AckOnly);
        let mut pkt = [0u8; 64];
        let n = b.seal_welcome(&[9; 16], &frame, &mut pkt).unwrap();
        assert_eq!(n, WELCOME_HEADER_LEN + 4 + TAG_LEN);
        assert_eq!(&pkt[..6], &[3, 0x05, 4, 3, 2, 1]);
        assert_eq!(&pkt[6..22], &[9; 16]);
        // Only as the first packet, and the next DATA packet is counter 1.
        assert_eq!(
            b.seal_welcome(&[9; 16], &frame, &mut [0u8; 64]),
            Err(SessionError::NotFirstPacket)
        );
        assert_eq!(b.next_send_counter(), 1);
        // Any header byte changed (the broker nonce included) fails the tag and changes nothing.
        for i in 2..WELCOME_HEADER_LEN {
            let mut bad = pkt;
            bad[i] ^= 1;
            assert!(d.open_welcome(&mut bad[..n]).is_err(), "byte {i}");
        }
        assert_eq!(d.highest_received(), None);
        let mut good = pkt;
        assert_eq!(d.open_welcome(&mut good[..n]).unwrap(), frame);
        assert_eq!(d.highest_received(), Some(0));
        // Counter 0 is taken: the same WELCOME again is a replay.
        let mut again = pkt;
        assert_eq!(d.open_welcome(&mut again[..n]), Err(SessionError::Replayed));
        let mut data = [0u8; 64];
        let m = b.seal(b"next", &mut data).unwrap();
        assert_eq!(&data[6..14], &1u64.to_le_bytes());
        assert_eq!(d.open_in_place(&mut data[..m]).unwrap(), b"next");
    }
}
