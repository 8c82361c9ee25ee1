//! Device side of the handshake: [`ClientHandshake`].
//!
//! States: idle -> HELLO sent -> LOGIN sent -> established. The caller sends the bytes this
//! returns, feeds every received packet to [`ClientHandshake::on_packet`], and calls
//! [`ClientHandshake::handle_timeout`] at [`ClientHandshake::poll_timeout`] with a fresh nonce.
//!
//! The resend policy depends on the [`Carrier`] (docs/protocol.md section 3.2, step 6):
//! * [`Carrier::Datagram`] (UDP, the default): if no CHALLENGE or WELCOME arrived in time the
//!   attempt restarts from HELLO with the new nonce. Attempt `k` waits [`attempt_wait_ms`]: 1 s
//!   for the first [`ATTEMPT_TIMEOUT_FLAT_ATTEMPTS`] attempts, then doubling to 8 s, each plus a
//!   jitter below 250 ms taken from the attempt's fresh nonce. Not doubling at once is what lets
//!   a lossy link log in quickly: at 20% loss each way an attempt (two round trips) fails about
//!   three times in five, and waiting 1, 2, 4 s made such a login take 7 s or more.
//! * [`Carrier::Reliable`] (WebSocket): nothing is lost, so a late answer is only late. One HELLO
//!   is sent per handshake, never resent: [`ClientHandshake::poll_timeout`] stays `None` and a
//!   second [`ClientHandshake::start`] is refused with [`ClientError::HelloAlreadySent`]. The
//!   caller bounds the wait by the connection's `HANDSHAKE_TIMEOUT` and, when it expires, starts
//!   over on a new connection with a new handshake. (A resend with a new nonce made the late
//!   CHALLENGE of the first HELLO get a LOGIN with the second nonce, refused as `BAD_COOKIE`.)
//!
//! A REJECT is advisory: it is reported and the handshake goes idle; the caller backs off and
//! calls [`ClientHandshake::start`] again (on a reliable carrier, on a new connection with a new
//! handshake, because the broker closes the connection after a REJECT).

use crate::codes::Code;
use crate::frame::Body;
use crate::ids::Address;
use crate::keys::{DeviceKey, HelloBinding, ProofInput, compute_proof, derive_session_keys};
use crate::limits::PROTOCOL_VERSION;
use crate::packet::{
    Challenge, Hello, Login, PacketError, PacketType, Reject, WelcomeHeader, peek_header,
};
use crate::session::{Role, SecureSession};

/// Wait for a CHALLENGE or WELCOME before restarting from HELLO, for each of the first
/// [`ATTEMPT_TIMEOUT_FLAT_ATTEMPTS`] attempts (plus jitter).
pub const ATTEMPT_TIMEOUT_INITIAL_MS: u64 = 1_000;
/// Attempts that wait [`ATTEMPT_TIMEOUT_INITIAL_MS`]; the wait doubles from the next one on.
pub const ATTEMPT_TIMEOUT_FLAT_ATTEMPTS: u32 = 4;
/// Ceiling of the per-attempt wait before jitter (it doubles per attempt up to this).
pub const ATTEMPT_TIMEOUT_MAX_MS: u64 = 8_000;
/// Every attempt's wait is lengthened by a jitter below this, so devices that lost their
/// session together (a broker restart) do not resend in step.
pub const ATTEMPT_TIMEOUT_JITTER_MS: u64 = 250;

/// How long UDP attempt `attempt` (1, 2, ...) waits for the CHALLENGE and the WELCOME
/// (docs/protocol.md section 3.2, step 6): [`ATTEMPT_TIMEOUT_INITIAL_MS`] for the first
/// [`ATTEMPT_TIMEOUT_FLAT_ATTEMPTS`] attempts, then twice the previous wait up to
/// [`ATTEMPT_TIMEOUT_MAX_MS`] (2, 4, 8, 8, ... s), plus `jitter * ATTEMPT_TIMEOUT_JITTER_MS / 256`
/// ms. The handshake takes `jitter` from the attempt's fresh random nonce (its last byte), so
/// it needs no second random draw.
pub const fn attempt_wait_ms(attempt: u32, jitter: u8) -> u64 {
    let doublings = attempt.saturating_sub(ATTEMPT_TIMEOUT_FLAT_ATTEMPTS);
    let base = if doublings >= 4 {
        ATTEMPT_TIMEOUT_MAX_MS
    } else {
        let w = ATTEMPT_TIMEOUT_INITIAL_MS << doublings;
        if w < ATTEMPT_TIMEOUT_MAX_MS {
            w
        } else {
            ATTEMPT_TIMEOUT_MAX_MS
        }
    };
    base + ((jitter as u64 * ATTEMPT_TIMEOUT_JITTER_MS) >> 8)
}

/// How the handshake's packets are carried; decides whether a silent attempt resends HELLO.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Carrier {
    /// Packets may be lost (UDP): a silent attempt restarts with a HELLO carrying a new nonce.
    #[default]
    Datagram,
    /// Packets are delivered in order or the connection fails (WebSocket): one HELLO per
    /// handshake, never resent.
    Reliable,
}

/// The session parameters from WELCOME.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WelcomeInfo {
    /// Session id of every DATA packet from now on.
    pub session_id: u32,
    /// Ping after this many idle seconds.
    pub heartbeat_secs: u16,
    /// The broker's silence timeout.
    pub session_timeout_secs: u16,
    /// Largest payload the broker accepts.
    pub max_payload: u16,
    /// Broker clock at WELCOME time (ms since the Unix epoch).
    pub server_time_ms: u64,
}

/// A completed handshake.
#[derive(Debug)]
pub struct Established {
    /// The device's side of the session; the WELCOME's counter 0 is already recorded.
    pub session: SecureSession,
    /// What the WELCOME said.
    pub welcome: WelcomeInfo,
}

/// What a received packet or timeout means for the caller.
#[derive(Debug)]
pub enum ClientEvent<'o> {
    /// Send these bytes (a LOGIN answering a CHALLENGE).
    Send(&'o [u8]),
    /// The broker accepted the login.
    Established(Established),
    /// The broker refused (advisory, unauthenticated): back off, then [`ClientHandshake::start`].
    Rejected(Reject),
    /// Not for this state, not decodable or not authentic: ignored, nothing changed.
    Ignored,
}

/// Errors from building packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ClientError {
    /// The output buffer is too small (HELLO needs 128 bytes).
    BufferTooSmall,
    /// The handshake is finished; a new one is needed.
    Finished,
    /// The upload epoch is 0 (it must be drawn at boot: 64 random bits, not 0).
    InvalidUploadEpoch,
    /// On a [`Carrier::Reliable`] handshake a HELLO was already sent: a second one (with a new
    /// nonce) would race the first one's CHALLENGE. Open a new connection with a new handshake.
    HelloAlreadySent,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Idle,
    HelloSent { nonce: [u8; 16] },
    LoginSent { nonce: [u8; 16], cookie: [u8; 32] },
    Done,
}

/// The device side of the login handshake.
#[derive(Clone, Debug)]
pub struct ClientHandshake {
    address: Address,
    key: DeviceKey,
    since_id: u64,
    upload_epoch: u64,
    state: State,
    carrier: Carrier,
    attempt: u32,
    deadline: Option<u64>,
}

impl ClientHandshake {
    /// A handshake for `address` with its device key; `since_id` is the highest message id the
    /// device already has (0 for none); `upload_epoch` is the value this boot drew once (64
    /// random bits, not 0) and sends on every login of the boot (docs/protocol.md section 4).
    ///
    /// An `upload_epoch` of 0 is refused by [`ClientHandshake::start`] with
    /// [`ClientError::InvalidUploadEpoch`] (a broker would refuse the LOGIN as `MALFORMED`).
    pub fn new(address: Address, key: DeviceKey, since_id: u64, upload_epoch: u64) -> Self {
        Self {
            address,
            key,
            since_id,
            upload_epoch,
            state: State::Idle,
            carrier: Carrier::Datagram,
            attempt: 0,
            deadline: None,
        }
    }

    /// The same handshake over `carrier` (the default is [`Carrier::Datagram`]); set it before
    /// [`ClientHandshake::start`].
    pub fn with_carrier(mut self, carrier: Carrier) -> Self {
        self.carrier = carrier;
        self
    }

    fn hello(&mut self, now_ms: u64, nonce: [u8; 16]) -> Hello {
        self.attempt = self.attempt.saturating_add(1);
        self.deadline = match self.carrier {
            Carrier::Datagram => {
                let wait = attempt_wait_ms(self.attempt, nonce[15]);
                Some(now_ms.saturating_add(wait))
            }
            // Nothing to resend: the caller's connection timeout bounds the wait.
            Carrier::Reliable => None,
        };
        self.state = State::HelloSent { nonce };
        Hello {
            address: self.address,
            client_nonce: nonce,
        }
    }

    /// Starts (or, on [`Carrier::Datagram`], restarts) with a HELLO carrying the fresh random
    /// `nonce`; returns the padded HELLO to send. On [`Carrier::Reliable`] only the first call
    /// sends a HELLO; later ones are refused with [`ClientError::HelloAlreadySent`].
    pub fn start<'o>(
        &mut self,
        now_ms: u64,
        nonce: [u8; 16],
        out: &'o mut [u8],
    ) -> Result<&'o [u8], ClientError> {
        if matches!(self.state, State::Done) {
            return Err(ClientError::Finished);
        }
        if self.upload_epoch == 0 {
            return Err(ClientError::InvalidUploadEpoch);
        }
        if self.carrier == Carrier::Reliable && self.attempt > 0 {
            return Err(ClientError::HelloAlreadySent);
        }
        let hello = self.hello(now_ms, nonce);
        match hello.encode(out) {
            Ok(p) => Ok(p),
            Err(_) => {
                // Nothing was sent: this attempt does not count.
                self.attempt = self.attempt.saturating_sub(1);
                self.state = State::Idle;
                self.deadline = None;
                Err(ClientError::BufferTooSmall)
            }
        }
    }

    /// When [`ClientHandshake::handle_timeout`] must be called (`None` when idle or done, and
    /// always on [`Carrier::Reliable`], which never resends).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadline
    }

    /// Whether the handshake completed.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// If the attempt timed out at `now_ms`, restarts with a HELLO using the fresh `nonce` and
    /// returns it; otherwise returns `Ok(None)`.
    pub fn handle_timeout<'o>(
        &mut self,
        now_ms: u64,
        nonce: [u8; 16],
        out: &'o mut [u8],
    ) -> Result<Option<&'o [u8]>, ClientError> {
        match self.deadline {
            Some(d) if d <= now_ms => self.start(now_ms, nonce, out).map(Some),
            _ => Ok(None),
        }
    }

    /// Feeds a received packet (mutable: a WELCOME is decrypted in place). A LOGIN to send is
    /// written into `out`.
    pub fn on_packet<'o>(
        &mut self,
        packet: &mut [u8],
        out: &'o mut [u8],
    ) -> Result<ClientEvent<'o>, ClientError> {
        let packet_type = match peek_header(packet) {
            Ok((t, _)) => t,
            Err(PacketError::UnsupportedVersion { .. }) => {
                // A REJECT of another version still tells us its max_version; parse it as ours.
                return Ok(self.foreign_reject(packet));
            }
            Err(_) => return Ok(ClientEvent::Ignored),
        };
        // Only what a broker sends is decoded, and only in the state that expects it: a device
        // links no HELLO or LOGIN decoder. Anything malformed is ignored.
        match (self.state, packet_type) {
            (State::HelloSent { nonce }, PacketType::Challenge) => {
                match Challenge::decode(packet) {
                    Ok(ch) => self.on_challenge(nonce, ch, out),
                    Err(_) => Ok(ClientEvent::Ignored),
                }
            }
            (State::HelloSent { .. } | State::LoginSent { .. }, PacketType::Reject) => {
                match Reject::decode(packet) {
                    Ok(r) => {
                        self.state = State::Idle;
                        self.deadline = None;
                        Ok(ClientEvent::Rejected(r))
                    }
                    Err(_) => Ok(ClientEvent::Ignored),
                }
            }
            (State::LoginSent { nonce, cookie }, PacketType::Welcome) => {
                match WelcomeHeader::parse(packet) {
                    Ok((header, _)) => Ok(self.on_welcome(nonce, cookie, header, packet)),
                    Err(_) => Ok(ClientEvent::Ignored),
                }
            }
            _ => Ok(ClientEvent::Ignored),
        }
    }

    fn foreign_reject<'o>(&mut self, packet: &[u8]) -> ClientEvent<'o> {
        if !matches!(
            self.state,
            State::HelloSent { .. } | State::LoginSent { .. }
        ) {
            return ClientEvent::Ignored;
        }
        let [_, t, body @ ..] = packet else {
            return ClientEvent::Ignored;
        };
        if *t != crate::packet::PacketType::Reject as u8 {
            return ClientEvent::Ignored;
        }
        match Reject::read_known_fields(body) {
            Some(r) => {
                self.state = State::Idle;
                self.deadline = None;
                ClientEvent::Rejected(r)
            }
            None => ClientEvent::Ignored,
        }
    }

    fn on_challenge<'o>(
        &mut self,
        nonce: [u8; 16],
        ch: Challenge,
        out: &'o mut [u8],
    ) -> Result<ClientEvent<'o>, ClientError> {
        let input = ProofInput {
            version: PROTOCOL_VERSION,
            hello: HelloBinding {
                kind: self.address.kind.as_u8(),
                id: self.address.id,
                client_nonce: nonce,
            },
            timestamp_ms: ch.timestamp_ms,
            cookie: ch.cookie,
            since_id: self.since_id,
            upload_epoch: self.upload_epoch,
        };
        let login = Login {
            address: self.address,
            client_nonce: nonce,
            timestamp_ms: ch.timestamp_ms,
            cookie: ch.cookie,
            since_id: self.since_id,
            upload_epoch: self.upload_epoch,
            proof: compute_proof(&self.key, &input).0,
        };
        let bytes = login.encode(out).map_err(|_| ClientError::BufferTooSmall)?;
        self.state = State::LoginSent {
            nonce,
            cookie: ch.cookie,
        };
        Ok(ClientEvent::Send(bytes))
    }

    fn on_welcome<'o>(
        &mut self,
        nonce: [u8; 16],
        cookie: [u8; 32],
        header: WelcomeHeader,
        packet: &mut [u8],
    ) -> ClientEvent<'o> {
        let keys = derive_session_keys(
            &self.key,
            self.address.id,
            &nonce,
            &header.broker_nonce,
            &cookie,
        );
        let mut session = SecureSession::new(Role::Device, header.session_id, &keys);
        let welcome = match session.open_welcome(packet) {
            Ok(frame) => match (frame.seq, frame.body) {
                (
                    0,
                    Body::Welcome {
                        session_id,
                        heartbeat_secs,
                        session_timeout_secs,
                        max_payload,
                        server_time_ms,
                    },
                ) if session_id == header.session_id => WelcomeInfo {
                    session_id,
                    heartbeat_secs,
                    session_timeout_secs,
                    max_payload,
                    server_time_ms,
                },
                _ => return ClientEvent::Ignored,
            },
            Err(_) => return ClientEvent::Ignored,
        };
        self.state = State::Done;
        self.deadline = None;
        ClientEvent::Established(Established { session, welcome })
    }

    /// The reject codes after which retrying the same credentials is pointless.
    pub fn is_fatal(code: Code) -> bool {
        !code.is_retryable()
    }
}
