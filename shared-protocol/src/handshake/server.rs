//! Broker side of the handshake: a stateless [`Acceptor`].
//!
//! [`Acceptor::on_hello`] answers a HELLO with a CHALLENGE (or a REJECT) and remembers nothing.
//! [`Acceptor::on_login`] checks a LOGIN in the normative order of docs/protocol.md section 3 and,
//! on success, returns an [`Accepted`] with the broker's [`SecureSession`] and the sealed WELCOME.
//! The caller draws the broker nonce (16 bytes from a CSPRNG, fresh per LOGIN) and passes it in a
//! [`SessionGrant`] with the session id: this crate never draws randomness itself.
//! The caller supplies the terminal's key and last accepted login time through a lookup closure
//! that runs only after the cookie and its age are verified, and must then record
//! `Accepted::login_timestamp_ms` as the terminal's new last login time (atomically with the
//! `REPLAY` comparison if LOGINs for one terminal can be processed concurrently).

use crate::codes::Code;
use crate::frame::{Body, Frame};
use crate::ids::{Address, IdProfile, Kind};
use crate::keys::{
    CookieSecret, DeviceKey, HelloBinding, Mac32, PeerAddr, ProofInput, compute_cookie,
    derive_session_keys, verify_proof,
};
use crate::limits::{BROKER_NONCE_LEN, CHALLENGE_LIFETIME_MS, PROTOCOL_VERSION};
use crate::packet::{Challenge, Hello, Login, PacketError, PacketType, peek_header};
use crate::reliability::RecvWindow;
use crate::session::{Role, SecureSession, SessionError};

use super::{reject_answer, reject_packet};

/// What the caller knows about a terminal: its key and the timestamp of its last accepted LOGIN.
#[derive(Clone, Debug)]
pub struct TerminalRecord {
    /// The device key (provisioned, or derived from the fleet master key).
    pub key: DeviceKey,
    /// `timestamp_ms` of the last LOGIN accepted for this terminal, if any.
    pub last_login_ms: Option<u64>,
}

/// Session parameters announced in WELCOME (besides the session id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WelcomeParams {
    /// Ping interval the device uses when idle.
    pub heartbeat_secs: u16,
    /// Silence after which the broker ends the session.
    pub session_timeout_secs: u16,
    /// Largest payload the broker accepts from this device.
    pub max_payload: u16,
    /// Broker clock (ms since the Unix epoch) at WELCOME time.
    pub server_time_ms: u64,
}

/// What the broker contributes to a new session: its id and the broker nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionGrant {
    /// Session id (non-zero, unique among the broker's live sessions).
    pub session_id: u32,
    /// 16 bytes from the broker's CSPRNG, drawn fresh for this LOGIN and never reused: an input
    /// of the session keys, sent in clear in the WELCOME header.
    pub broker_nonce: [u8; BROKER_NONCE_LEN],
}

/// The broker's answer to a HELLO (bytes in the caller's buffer).
#[derive(Debug, PartialEq, Eq)]
pub enum HelloReply<'o> {
    /// Send this CHALLENGE.
    Challenge(&'o [u8]),
    /// Send this REJECT (unsupported version, invalid id, kind not allowed).
    Reject {
        /// The rejection code.
        code: Code,
        /// The REJECT packet.
        packet: &'o [u8],
    },
}

/// A HELLO that gets no answer at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HelloError {
    /// Not a decodable, padded HELLO of this version (dropped silently, anti-amplification).
    Dropped(PacketError),
    /// The output buffer is too small for the answer.
    BufferTooSmall,
}

/// Why a LOGIN was not accepted. [`LoginError::code`] says which REJECT to send, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LoginError {
    /// Unknown version or type, or truncated shorter than the REJECT it would get: dropped
    /// silently.
    Dropped(PacketError),
    /// The body does not decode or a field is out of range: `MALFORMED`.
    Malformed,
    /// Id 0: `INVALID_ID`.
    InvalidId,
    /// `signed` profile, kind and id sign disagree: `KIND_MISMATCH`.
    KindMismatch,
    /// A phone on the binary transport: `KIND_NOT_ALLOWED`.
    KindNotAllowed,
    /// The cookie does not match this source address, timestamp and HELLO fields: `BAD_COOKIE`.
    BadCookie,
    /// The challenge is older than `CHALLENGE_LIFETIME` (or too far ahead): `COOKIE_EXPIRED`.
    CookieExpired,
    /// No key for this terminal: `UNKNOWN_TERMINAL`.
    UnknownTerminal,
    /// The proof does not verify: `AUTH_FAILED`.
    AuthFailed,
    /// The timestamp is not newer than the last accepted login's: `REPLAY`.
    Replay,
    /// The WELCOME could not be built (output buffer too small, session id 0): `INTERNAL`.
    Internal(SessionError),
}

impl LoginError {
    /// The code to put in a REJECT, or `None` when the packet is dropped without an answer.
    pub const fn code(self) -> Option<Code> {
        Some(match self {
            LoginError::Dropped(_) => return None,
            LoginError::Malformed => Code::MALFORMED,
            LoginError::InvalidId => Code::INVALID_ID,
            LoginError::KindMismatch => Code::KIND_MISMATCH,
            LoginError::KindNotAllowed => Code::KIND_NOT_ALLOWED,
            LoginError::BadCookie => Code::BAD_COOKIE,
            LoginError::CookieExpired => Code::COOKIE_EXPIRED,
            LoginError::UnknownTerminal => Code::UNKNOWN_TERMINAL,
            LoginError::AuthFailed => Code::AUTH_FAILED,
            LoginError::Replay => Code::REPLAY,
            LoginError::Internal(_) => Code::INTERNAL,
        })
    }
}

/// An accepted LOGIN.
#[derive(Debug)]
pub struct Accepted<'o> {
    /// The authenticated terminal.
    pub address: Address,
    /// The device's since-id (highest message id it already has).
    pub since_id: u64,
    /// The device's upload epoch for this boot (never 0): with the device id and the upload id
    /// it forms the upload's de-duplication key.
    pub upload_epoch: u64,
    /// The LOGIN's challenge timestamp: record it as the terminal's last login time.
    pub login_timestamp_ms: u64,
    /// The broker's side of the new session (WELCOME already sealed with counter 0).
    pub session: SecureSession,
    /// The WELCOME packet to send.
    pub welcome: &'o [u8],
}

/// The stateless broker side of the handshake.
#[derive(Clone, Debug)]
pub struct Acceptor {
    profile: IdProfile,
    secret: CookieSecret,
}

fn validate(profile: IdProfile, address: Address) -> Result<(), LoginError> {
    if let Err(e) = profile.validate(address) {
        let code = e.code();
        return Err(if code == Code::INVALID_ID {
            LoginError::InvalidId
        } else if code == Code::KIND_MISMATCH {
            LoginError::KindMismatch
        } else {
            LoginError::Malformed
        });
    }
    if address.kind != Kind::Device {
        return Err(LoginError::KindNotAllowed);
    }
    Ok(())
}

fn binding(address: Address, client_nonce: [u8; 16]) -> HelloBinding {
    HelloBinding {
        kind: address.kind.as_u8(),
        id: address.id,
        client_nonce,
    }
}

impl Acceptor {
    /// An acceptor for one ID profile with the deployment's cookie secret.
    pub fn new(profile: IdProfile, secret: CookieSecret) -> Self {
        Self { profile, secret }
    }

    /// Answers a HELLO from `peer` at `now_ms`: a CHALLENGE, or a REJECT for an unsupported
    /// version, an invalid id or a phone kind. Short, malformed or badly padded HELLOs get nothing,
    /// and neither does a HELLO of another version shorter than the REJECT it would get
    /// (a broker never answers with more bytes than it received). The CHALLENGE carries
    /// `now_ms`; a broker that can answer two HELLOs of one terminal in the same millisecond
    /// uses [`Acceptor::on_hello_stamped`] instead (docs/protocol.md section 3.2, step 2).
    pub fn on_hello<'o>(
        &self,
        peer: &PeerAddr,
        packet: &[u8],
        now_ms: u64,
        out: &'o mut [u8],
    ) -> Result<HelloReply<'o>, HelloError> {
        self.on_hello_stamped(peer, packet, |_| now_ms, out)
    }

    /// [`Acceptor::on_hello`] with the CHALLENGE's `timestamp_ms` chosen by the caller:
    /// `stamp` runs only when the answer is a CHALLENGE, with the terminal the HELLO names, and
    /// returns the timestamp to put in it (the broker's challenge clock, which never gives one
    /// terminal the same timestamp twice). HELLOs answered with a REJECT or dropped never call it.
    pub fn on_hello_stamped<'o>(
        &self,
        peer: &PeerAddr,
        packet: &[u8],
        stamp: impl FnOnce(Address) -> u64,
        out: &'o mut [u8],
    ) -> Result<HelloReply<'o>, HelloError> {
        let reject = |code: Code, out: &'o mut [u8]| {
            reject_packet(code, 0, out)
                .map(|p| HelloReply::Reject { code, packet: p })
                .map_err(|_| HelloError::BufferTooSmall)
        };
        match peek_header(packet) {
            Ok((PacketType::Hello, _)) => {}
            Ok((_, _)) => return Err(HelloError::Dropped(PacketError::Malformed)),
            Err(e @ PacketError::UnsupportedVersion { packet_type, .. })
                if packet_type == PacketType::Hello as u8 =>
            {
                let code = Code::UNSUPPORTED_VERSION;
                return match reject_answer(packet.len(), code, 0, out) {
                    Some(p) => Ok(HelloReply::Reject { code, packet: p }),
                    None => Err(HelloError::Dropped(e)),
                };
            }
            Err(e) => return Err(HelloError::Dropped(e)),
        }
        let hello = Hello::decode(packet).map_err(HelloError::Dropped)?;
        if let Err(e) = validate(self.profile, hello.address) {
            // Every case of `validate` has a code.
            let code = e.code().unwrap_or(Code::MALFORMED);
            return reject(code, out);
        }
        let timestamp_ms = stamp(hello.address);
        let cookie = compute_cookie(
            &self.secret,
            timestamp_ms,
            peer,
            &binding(hello.address, hello.client_nonce),
        );
        Challenge {
            timestamp_ms,
            cookie: cookie.0,
        }
        .encode(out)
        .map(|p| HelloReply::Challenge(p))
        .map_err(|_| HelloError::BufferTooSmall)
    }

    /// Checks a LOGIN from `peer` at `now_ms`, in the order of section 3: version and id, cookie,
    /// challenge age, terminal key (`lookup`), proof, then login timestamp against the last one.
    /// On success derives the session keys with `grant.broker_nonce` and seals the WELCOME
    /// (session `grant.session_id`, `params`) into `out`. A LOGIN whose body does not decode is
    /// [`LoginError::Malformed`], unless the packet is shorter than that REJECT (then dropped).
    #[allow(clippy::too_many_arguments)]
    pub fn on_login<'o>(
        &self,
        peer: &PeerAddr,
        packet: &[u8],
        now_ms: u64,
        lookup: impl FnOnce(Address) -> Option<TerminalRecord>,
        grant: SessionGrant,
        params: &WelcomeParams,
        out: &'o mut [u8],
    ) -> Result<Accepted<'o>, LoginError> {
        match peek_header(packet) {
            Ok((PacketType::Login, _)) => {}
            Ok((_, _)) => return Err(LoginError::Dropped(PacketError::Malformed)),
            Err(e) => return Err(LoginError::Dropped(e)),
        }
        let login = match Login::decode(packet) {
            Ok(l) => l,
            Err(e) => {
                let mut probe = [0u8; 16];
                return Err(
                    match reject_answer(packet.len(), Code::MALFORMED, 0, &mut probe) {
                        Some(_) => LoginError::Malformed,
                        None => LoginError::Dropped(e),
                    },
                );
            }
        };
        // 1. version (checked above) and id.
        validate(self.profile, login.address)?;
        // 2. cookie, recomputed for this source address.
        let hello = binding(login.address, login.client_nonce);
        let expected = compute_cookie(&self.secret, login.timestamp_ms, peer, &hello);
        if expected != Mac32(login.cookie) {
            return Err(LoginError::BadCookie);
        }
        // 3. challenge age (a timestamp ahead of our clock is another node's skew; bounded too).
        if now_ms.saturating_sub(login.timestamp_ms) > CHALLENGE_LIFETIME_MS
            || login.timestamp_ms.saturating_sub(now_ms) > CHALLENGE_LIFETIME_MS
        {
            return Err(LoginError::CookieExpired);
        }
        // 4. the terminal's key.
        let record = lookup(login.address).ok_or(LoginError::UnknownTerminal)?;
        // 5. the proof, in constant time.
        let input = ProofInput {
            version: PROTOCOL_VERSION,
            hello,
            timestamp_ms: login.timestamp_ms,
            cookie: login.cookie,
            since_id: login.since_id,
            upload_epoch: login.upload_epoch,
        };
        if !verify_proof(&record.key, &input, &login.proof) {
            return Err(LoginError::AuthFailed);
        }
        // 6. strictly newer than the last accepted login.
        if record
            .last_login_ms
            .is_some_and(|last| login.timestamp_ms <= last)
        {
            return Err(LoginError::Replay);
        }
        let session_id = grant.session_id;
        let keys = derive_session_keys(
            &record.key,
            login.address.id,
            &login.client_nonce,
            &grant.broker_nonce,
            &login.cookie,
        );
        let mut session = SecureSession::new(Role::Broker, session_id, &keys);
        let frame = Frame {
            seq: 0,
            ack: RecvWindow::new().ack(),
            body: Body::Welcome {
                session_id,
                heartbeat_secs: params.heartbeat_secs,
                session_timeout_secs: params.session_timeout_secs,
                max_payload: params.max_payload,
                server_time_ms: params.server_time_ms,
            },
        };
        let n = session
            .seal_welcome(&grant.broker_nonce, &frame, out)
            .map_err(LoginError::Internal)?;
        Ok(Accepted {
            address: login.address,
            since_id: login.since_id,
            upload_epoch: login.upload_epoch,
            login_timestamp_ms: login.timestamp_ms,
            session,
            welcome: &out[..n],
        })
    }
}
