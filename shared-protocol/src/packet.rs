//! Outer packet layouts of the binary transport (docs/protocol.md section 2).
//!
//! Every datagram / WebSocket binary message is one packet: a version byte, a type byte and a body.
//! The handshake bodies ([`Hello`], [`Challenge`], [`Login`], [`Reject`]) are cleartext postcard
//! (read and written field by field through [`crate::wire`]; the serde derives give the same bytes);
//! a DATA packet is a fixed 14-byte [`DataHeader`] followed by the sealed frame (ciphertext and
//! tag), which [`crate::session`] opens. A WELCOME packet is a fixed 22-byte [`WelcomeHeader`]
//! (session id and the broker's nonce, both key-schedule inputs the device needs before it can
//! decrypt) followed by the sealed Welcome frame. This module does no cryptography: it only parses and
//! emits bytes, and [`Packet::decode`] never panics on any input.
//!
//! [`peek_header`] is the first step of every receiver: it tells an unknown version (answer a
//! HELLO with REJECT `UNSUPPORTED_VERSION`, drop anything else) from an unknown type (drop).

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::codes::Code;
use crate::ids::Address;
use crate::limits::{
    BROKER_NONCE_LEN, DATA_HEADER_LEN, HELLO_MIN_LEN, MAX_MSG_ID, MAX_PACKET, MIN_FRAME,
    PACKET_HEADER_LEN, PROTOCOL_VERSION, TAG_LEN, WELCOME_HEADER_LEN,
};
use crate::wire::{BufferFull, Reader, WireError, Writer, read_address, write_address};

/// The packet type byte (byte 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum PacketType {
    /// Device -> broker: start of a login.
    Hello = 0x01,
    /// Broker -> device: stateless cookie and timestamp.
    Challenge = 0x02,
    /// Device -> broker: the proof of key possession.
    Login = 0x03,
    /// Broker -> device: the login (or version) was refused.
    Reject = 0x04,
    /// Broker -> device: the login was accepted (broker nonce in clear, Welcome frame sealed).
    Welcome = 0x05,
    /// Either direction: an encrypted frame.
    Data = 0x10,
}

impl PacketType {
    /// The type for a byte, or `None` for an unknown type.
    pub const fn from_u8(byte: u8) -> Option<PacketType> {
        match byte {
            0x01 => Some(PacketType::Hello),
            0x02 => Some(PacketType::Challenge),
            0x03 => Some(PacketType::Login),
            0x04 => Some(PacketType::Reject),
            0x05 => Some(PacketType::Welcome),
            0x10 => Some(PacketType::Data),
            _ => None,
        }
    }
}

/// Why a packet was not accepted. Every variant is "drop the packet"; [`PacketError::code`] is what
/// a broker puts in a REJECT when it answers at all (only HELLO and LOGIN are ever answered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PacketError {
    /// Shorter than its fixed part.
    Truncated,
    /// Longer than [`MAX_PACKET`].
    TooLarge,
    /// A version this crate does not speak; `packet_type` is the raw type byte.
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
        /// The raw type byte (0x01 = HELLO is answered with REJECT).
        packet_type: u8,
    },
    /// A type byte this version does not define.
    UnknownType(u8),
    /// A HELLO shorter than [`HELLO_MIN_LEN`].
    HelloTooShort,
    /// A HELLO whose padding is not all zero.
    BadPadding,
    /// The postcard body does not decode (bad varint, unknown kind byte, truncated field...).
    Malformed,
    /// Bytes left after the body of a CHALLENGE, LOGIN or REJECT.
    TrailingBytes,
    /// A field value out of its range (`since_id` above 2^53 - 1, `upload_epoch` 0).
    OutOfRange,
    /// DATA or WELCOME with `session_id` 0.
    InvalidSessionId,
    /// DATA with a counter at or above 2^48.
    CounterOutOfRange,
}

impl PacketError {
    /// The code for this error.
    pub const fn code(self) -> Code {
        match self {
            PacketError::TooLarge => Code::TOO_LARGE,
            PacketError::UnsupportedVersion { .. } => Code::UNSUPPORTED_VERSION,
            _ => Code::MALFORMED,
        }
    }
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::Truncated => f.write_str("packet truncated"),
            PacketError::TooLarge => write!(f, "packet larger than {MAX_PACKET} bytes"),
            PacketError::UnsupportedVersion {
                version,
                packet_type,
            } => write!(f, "unsupported version {version} (type {packet_type:#04x})"),
            PacketError::UnknownType(t) => write!(f, "unknown packet type {t:#04x}"),
            PacketError::HelloTooShort => write!(f, "HELLO shorter than {HELLO_MIN_LEN} bytes"),
            PacketError::BadPadding => f.write_str("HELLO padding not zero"),
            PacketError::Malformed => f.write_str("malformed packet body"),
            PacketError::TrailingBytes => f.write_str("trailing bytes after packet body"),
            PacketError::OutOfRange => f.write_str("packet field out of range"),
            PacketError::InvalidSessionId => f.write_str("session id 0"),
            PacketError::CounterOutOfRange => f.write_str("DATA counter at or above 2^48"),
        }
    }
}

impl core::error::Error for PacketError {}

/// Why a packet could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// The packet would exceed [`MAX_PACKET`].
    TooLarge,
    /// A field is out of its range (session_id 0, counter >= 2^48, since_id > 2^53 - 1,
    /// upload_epoch 0, a sealed part shorter than a tag plus the smallest frame).
    OutOfRange,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::BufferTooSmall => "output buffer too small",
            EncodeError::TooLarge => "packet too large",
            EncodeError::OutOfRange => "packet field out of range",
        })
    }
}

impl core::error::Error for EncodeError {}

/// Reads the version and type bytes and returns the type and the body.
///
/// Errors, in this order: [`PacketError::TooLarge`], [`PacketError::Truncated`] (under 2 bytes),
/// [`PacketError::UnsupportedVersion`], [`PacketError::UnknownType`].
pub fn peek_header(packet: &[u8]) -> Result<(PacketType, &[u8]), PacketError> {
    if packet.len() > MAX_PACKET {
        return Err(PacketError::TooLarge);
    }
    let [version, packet_type, body @ ..] = packet else {
        return Err(PacketError::Truncated);
    };
    if *version != PROTOCOL_VERSION {
        return Err(PacketError::UnsupportedVersion {
            version: *version,
            packet_type: *packet_type,
        });
    }
    let t = PacketType::from_u8(*packet_type).ok_or(PacketError::UnknownType(*packet_type))?;
    Ok((t, body))
}

/// HELLO body (device -> broker). The packet is padded with zeros to [`HELLO_MIN_LEN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello {
    /// Who logs in (kind byte, id varint).
    pub address: Address,
    /// Fresh random bytes from the device, bound into cookie, proof and session keys.
    #[serde(deserialize_with = "fixed_bytes")]
    pub client_nonce: [u8; 16],
}

/// CHALLENGE body (broker -> device).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Challenge {
    /// Broker clock when the challenge was made (milliseconds, u64 varint).
    pub timestamp_ms: u64,
    /// Stateless cookie (section 3).
    #[serde(deserialize_with = "fixed_bytes")]
    pub cookie: [u8; 32],
}

/// LOGIN body (device -> broker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Login {
    /// Who logs in; the same as in the HELLO.
    pub address: Address,
    /// The HELLO's nonce.
    #[serde(deserialize_with = "fixed_bytes")]
    pub client_nonce: [u8; 16],
    /// The CHALLENGE's timestamp.
    pub timestamp_ms: u64,
    /// The CHALLENGE's cookie.
    #[serde(deserialize_with = "fixed_bytes")]
    pub cookie: [u8; 32],
    /// Highest message id the device already has (0: none); at most 2^53 - 1.
    pub since_id: u64,
    /// The device's upload epoch: drawn once per boot, never 0, the same on every login of that
    /// boot; the broker keys upload de-duplication on (device, epoch, upload id) (section 4).
    pub upload_epoch: u64,
    /// HMAC proof of the device key (section 3).
    #[serde(deserialize_with = "fixed_bytes")]
    pub proof: [u8; 32],
}

impl Login {
    /// Whether `since_id` is at most 2^53 - 1 and `upload_epoch` is not 0.
    pub const fn fields_in_range(&self) -> bool {
        self.since_id <= MAX_MSG_ID && self.upload_epoch != 0
    }
}

/// REJECT body (broker -> device). Unauthenticated: advisory only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reject {
    /// Why (section 9).
    pub code: Code,
    /// Highest protocol version the broker speaks.
    pub max_version: u8,
    /// Suggested wait before the next attempt (0: use the normal back-off).
    pub retry_after_ms: u32,
}

/// The fixed 14-byte header of a DATA packet (also the AEAD associated data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DataHeader {
    /// Session id from WELCOME; never 0.
    pub session_id: u32,
    /// Per-direction packet counter; below 2^48.
    pub counter: u64,
}

impl DataHeader {
    /// The 14 header bytes (version, type, session_id LE, counter LE). No range checks.
    pub fn to_bytes(&self) -> [u8; DATA_HEADER_LEN] {
        let mut out = [0u8; DATA_HEADER_LEN];
        out[0] = PROTOCOL_VERSION;
        out[1] = PacketType::Data as u8;
        out[2..6].copy_from_slice(&self.session_id.to_le_bytes());
        out[6..14].copy_from_slice(&self.counter.to_le_bytes());
        out
    }

    /// Writes the header into the first 14 bytes of `buf`, checking the field ranges.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), EncodeError> {
        if self.session_id == 0 || self.counter >= crate::limits::COUNTER_LIMIT {
            return Err(EncodeError::OutOfRange);
        }
        let out = buf
            .get_mut(..DATA_HEADER_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        out.copy_from_slice(&self.to_bytes());
        Ok(())
    }

    /// Parses a whole DATA packet: returns the header and the sealed part (ciphertext || tag).
    ///
    /// Checks the version, type, length bounds (the sealed part holds at least a tag and the
    /// smallest frame), `session_id != 0` and `counter < 2^48`.
    pub fn parse(packet: &[u8]) -> Result<(DataHeader, &[u8]), PacketError> {
        match peek_header(packet)? {
            (PacketType::Data, body) => DataHeader::parse_body(body),
            (other, _) => Err(PacketError::UnknownType(other as u8)),
        }
    }

    fn parse_body(body: &[u8]) -> Result<(DataHeader, &[u8]), PacketError> {
        let fixed = DATA_HEADER_LEN - PACKET_HEADER_LEN;
        if body.len() < fixed + TAG_LEN + MIN_FRAME {
            return Err(PacketError::Truncated);
        }
        let (head, sealed) = body.split_at(fixed);
        let mut id = [0u8; 4];
        id.copy_from_slice(&head[..4]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&head[4..12]);
        let header = DataHeader {
            session_id: u32::from_le_bytes(id),
            counter: u64::from_le_bytes(counter),
        };
        if header.session_id == 0 {
            return Err(PacketError::InvalidSessionId);
        }
        if header.counter >= crate::limits::COUNTER_LIMIT {
            return Err(PacketError::CounterOutOfRange);
        }
        Ok((header, sealed))
    }
}

/// The fixed 22-byte header of a WELCOME packet (also its AEAD associated data): version, type,
/// `session_id` (u32 LE) and the broker's 16-byte nonce, an input of the session keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WelcomeHeader {
    /// Session id of the new session; never 0.
    pub session_id: u32,
    /// Fresh random bytes from the broker, one value per accepted login.
    pub broker_nonce: [u8; BROKER_NONCE_LEN],
}

impl WelcomeHeader {
    /// The 22 header bytes (version, type, session_id LE, broker nonce). No range checks.
    pub fn to_bytes(&self) -> [u8; WELCOME_HEADER_LEN] {
        let mut out = [0u8; WELCOME_HEADER_LEN];
        out[0] = PROTOCOL_VERSION;
        out[1] = PacketType::Welcome as u8;
        out[2..6].copy_from_slice(&self.session_id.to_le_bytes());
        out[6..].copy_from_slice(&self.broker_nonce);
        out
    }

    /// Writes the header into the first 22 bytes of `buf`, refusing `session_id` 0.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), EncodeError> {
        if self.session_id == 0 {
            return Err(EncodeError::OutOfRange);
        }
        let out = buf
            .get_mut(..WELCOME_HEADER_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        out.copy_from_slice(&self.to_bytes());
        Ok(())
    }

    /// Parses a whole WELCOME packet: returns the header and the sealed part (ciphertext || tag).
    ///
    /// Checks the version, type, length (the sealed part holds at least a tag and the smallest
    /// frame) and `session_id != 0`.
    pub fn parse(packet: &[u8]) -> Result<(WelcomeHeader, &[u8]), PacketError> {
        match peek_header(packet)? {
            (PacketType::Welcome, body) => WelcomeHeader::parse_body(body),
            (other, _) => Err(PacketError::UnknownType(other as u8)),
        }
    }

    fn parse_body(body: &[u8]) -> Result<(WelcomeHeader, &[u8]), PacketError> {
        let fixed = WELCOME_HEADER_LEN - PACKET_HEADER_LEN;
        if body.len() < fixed + TAG_LEN + MIN_FRAME {
            return Err(PacketError::Truncated);
        }
        let (head, sealed) = body.split_at(fixed);
        let mut id = [0u8; 4];
        id.copy_from_slice(&head[..4]);
        let mut broker_nonce = [0u8; BROKER_NONCE_LEN];
        broker_nonce.copy_from_slice(&head[4..]);
        let header = WelcomeHeader {
            session_id: u32::from_le_bytes(id),
            broker_nonce,
        };
        if header.session_id == 0 {
            return Err(PacketError::InvalidSessionId);
        }
        Ok((header, sealed))
    }
}

/// A decoded packet of any type. DATA stays sealed: `sealed` is ciphertext followed by the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Packet<'a> {
    /// HELLO.
    Hello(Hello),
    /// CHALLENGE.
    Challenge(Challenge),
    /// LOGIN.
    Login(Login),
    /// REJECT.
    Reject(Reject),
    /// WELCOME, still encrypted.
    Welcome {
        /// The 22-byte header (session id, broker nonce).
        header: WelcomeHeader,
        /// Ciphertext followed by the 16-byte tag.
        sealed: &'a [u8],
    },
    /// DATA, still encrypted.
    Data {
        /// The 14-byte header.
        header: DataHeader,
        /// Ciphertext followed by the 16-byte tag.
        sealed: &'a [u8],
    },
}

impl<'a> Packet<'a> {
    /// Decodes one packet. Never panics; every malformed input is a [`PacketError`].
    pub fn decode(packet: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        let (t, body) = peek_header(packet)?;
        match t {
            PacketType::Hello => Hello::from_body(packet, body).map(Packet::Hello),
            PacketType::Challenge => Challenge::from_body(packet, body).map(Packet::Challenge),
            PacketType::Login => Login::from_body(packet, body).map(Packet::Login),
            PacketType::Reject => Reject::from_body(packet, body).map(Packet::Reject),
            PacketType::Welcome => {
                let (header, sealed) = WelcomeHeader::parse_body(body)?;
                Ok(Packet::Welcome { header, sealed })
            }
            PacketType::Data => {
                let (header, sealed) = DataHeader::parse_body(body)?;
                Ok(Packet::Data { header, sealed })
            }
        }
    }

    /// The packet's type.
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Packet::Hello(_) => PacketType::Hello,
            Packet::Challenge(_) => PacketType::Challenge,
            Packet::Login(_) => PacketType::Login,
            Packet::Reject(_) => PacketType::Reject,
            Packet::Welcome { .. } => PacketType::Welcome,
            Packet::Data { .. } => PacketType::Data,
        }
    }

    /// Writes the whole packet (header, body, HELLO padding) into `buf` and returns the written
    /// part.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], EncodeError> {
        let len = match self {
            Packet::Hello(b) => b.put(buf)?,
            Packet::Challenge(b) => b.put(buf)?,
            Packet::Login(b) => b.put(buf)?,
            Packet::Reject(b) => b.put(buf)?,
            Packet::Welcome { header, sealed } => {
                let len = WELCOME_HEADER_LEN + sealed.len();
                if sealed.len() < TAG_LEN + MIN_FRAME {
                    return Err(EncodeError::OutOfRange);
                }
                if len > MAX_PACKET {
                    return Err(EncodeError::TooLarge);
                }
                header.emit(buf)?;
                buf.get_mut(WELCOME_HEADER_LEN..len)
                    .ok_or(EncodeError::BufferTooSmall)?
                    .copy_from_slice(sealed);
                len
            }
            Packet::Data { header, sealed } => {
                let len = DATA_HEADER_LEN + sealed.len();
                if sealed.len() < TAG_LEN + MIN_FRAME {
                    return Err(EncodeError::OutOfRange);
                }
                if len > MAX_PACKET {
                    return Err(EncodeError::TooLarge);
                }
                header.emit(buf)?;
                buf.get_mut(DATA_HEADER_LEN..len)
                    .ok_or(EncodeError::BufferTooSmall)?
                    .copy_from_slice(sealed);
                len
            }
        };
        Ok(&mut buf[..len])
    }
}

/// What each handshake body adds to the plain postcard codec: its packet type, its fields in
/// wire order (read and written through [`crate::wire`], the same bytes as the serde derives),
/// and the checks and padding of section 2. Each type encodes and decodes on its own, so a
/// program that only sends LOGIN and reads CHALLENGE links only those two codecs (the device),
/// not every type's.
trait HandshakeBody: Sized {
    /// The type byte.
    const TYPE: PacketType;

    /// Writes the body's fields.
    fn write(&self, w: &mut Writer<'_>) -> Result<(), BufferFull>;

    /// Reads the body's fields; the first field that fails decides the error.
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError>;

    /// Writes header and body into `buf` (with any padding); returns the length.
    fn put(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        put(Self::TYPE, buf, |w| self.write(w))
    }

    /// Decodes the body of a whole `packet` whose header said [`Self::TYPE`].
    fn from_body(_packet: &[u8], body: &[u8]) -> Result<Self, PacketError> {
        take_all(body)
    }
}

impl HandshakeBody for Hello {
    const TYPE: PacketType = PacketType::Hello;

    fn write(&self, w: &mut Writer<'_>) -> Result<(), BufferFull> {
        write_address(w, self.address)?;
        w.raw(&self.client_nonce)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Hello {
            address: read_address(r)?,
            client_nonce: r.array()?,
        })
    }

    fn put(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let n = put(Self::TYPE, buf, |w| self.write(w))?;
        let padded = buf
            .get_mut(n..HELLO_MIN_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        padded.fill(0);
        Ok(HELLO_MIN_LEN.max(n))
    }

    fn from_body(packet: &[u8], body: &[u8]) -> Result<Self, PacketError> {
        if packet.len() < HELLO_MIN_LEN {
            return Err(PacketError::HelloTooShort);
        }
        let mut r = Reader::new(body);
        let hello = Hello::read(&mut r).map_err(packet_error)?;
        if r.rest().iter().any(|&b| b != 0) {
            return Err(PacketError::BadPadding);
        }
        Ok(hello)
    }
}

impl HandshakeBody for Challenge {
    const TYPE: PacketType = PacketType::Challenge;

    fn write(&self, w: &mut Writer<'_>) -> Result<(), BufferFull> {
        w.varint(self.timestamp_ms)?;
        w.raw(&self.cookie)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Challenge {
            timestamp_ms: r.u64()?,
            cookie: r.array()?,
        })
    }
}

impl HandshakeBody for Login {
    const TYPE: PacketType = PacketType::Login;

    fn write(&self, w: &mut Writer<'_>) -> Result<(), BufferFull> {
        write_address(w, self.address)?;
        w.raw(&self.client_nonce)?;
        w.varint(self.timestamp_ms)?;
        w.raw(&self.cookie)?;
        w.varint(self.since_id)?;
        w.varint(self.upload_epoch)?;
        w.raw(&self.proof)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Login {
            address: read_address(r)?,
            client_nonce: r.array()?,
            timestamp_ms: r.u64()?,
            cookie: r.array()?,
            since_id: r.u64()?,
            upload_epoch: r.u64()?,
            proof: r.array()?,
        })
    }

    fn put(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        if !self.fields_in_range() {
            return Err(EncodeError::OutOfRange);
        }
        put(Self::TYPE, buf, |w| self.write(w))
    }

    fn from_body(_packet: &[u8], body: &[u8]) -> Result<Self, PacketError> {
        let login: Login = take_all(body)?;
        if !login.fields_in_range() {
            return Err(PacketError::OutOfRange);
        }
        Ok(login)
    }
}

impl HandshakeBody for Reject {
    const TYPE: PacketType = PacketType::Reject;

    fn write(&self, w: &mut Writer<'_>) -> Result<(), BufferFull> {
        w.varint(self.code.0.into())?;
        w.byte(self.max_version)?;
        w.varint(self.retry_after_ms.into())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Reject {
            code: Code(r.u16()?),
            max_version: r.byte()?,
            retry_after_ms: r.u32()?,
        })
    }
}

impl Reject {
    /// Reads the fields of a REJECT body this version knows and ignores any bytes after them:
    /// a REJECT of another protocol version may carry more (docs/protocol.md section 2, version
    /// handling). `None` when a known field is missing or malformed.
    pub(crate) fn read_known_fields(body: &[u8]) -> Option<Reject> {
        Reject::read(&mut Reader::new(body)).ok()
    }
}

macro_rules! packet_codec {
    ($($ty:ident),*) => {$(
        impl $ty {
            /// Writes the whole packet (header and body; HELLO padded) and returns the written part.
            pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], EncodeError> {
                let len = self.put(buf)?;
                Ok(&mut buf[..len])
            }

            /// Decodes a whole packet that must be of this type; a packet of another type is
            /// [`PacketError::UnknownType`] with its type byte, whatever its body.
            pub fn decode(packet: &[u8]) -> Result<$ty, PacketError> {
                match peek_header(packet)? {
                    (t, body) if t == <$ty as HandshakeBody>::TYPE => {
                        <$ty as HandshakeBody>::from_body(packet, body)
                    }
                    (other, _) => Err(PacketError::UnknownType(other as u8)),
                }
            }
        }
    )*};
}

packet_codec!(Hello, Challenge, Login, Reject);

/// Writes header and body (by `body`); returns the length. Bodies are always far below
/// MAX_PACKET.
fn put(
    t: PacketType,
    buf: &mut [u8],
    body: impl FnOnce(&mut Writer<'_>) -> Result<(), BufferFull>,
) -> Result<usize, EncodeError> {
    let [version, packet_type, rest @ ..] = buf else {
        return Err(EncodeError::BufferTooSmall);
    };
    *version = PROTOCOL_VERSION;
    *packet_type = t as u8;
    let mut w = Writer::new(rest);
    body(&mut w).map_err(|BufferFull| EncodeError::BufferTooSmall)?;
    Ok(PACKET_HEADER_LEN + w.finish().len())
}

/// Deserialises a fixed-size byte field (`[u8; N]`, postcard: the N bytes as they are) with one
/// loop shared by every size, for hosts that decode these bodies through serde.
fn fixed_bytes<'de, D: serde::Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    let mut out = [0u8; N];
    deserializer.deserialize_tuple(N, FillBytes(&mut out))?;
    Ok(out)
}

/// Fills its slice from a sequence of exactly its length (see [`fixed_bytes`]).
struct FillBytes<'a>(&'a mut [u8]);

impl<'de> serde::de::Visitor<'de> for FillBytes<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a fixed number of bytes")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for (i, byte) in self.0.iter_mut().enumerate() {
            *byte = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::invalid_length(i, &"a fixed number of bytes"))?;
        }
        Ok(())
    }
}

/// A body's read error as the packet error the codec reports (a string field cannot occur in
/// a handshake body, so a UTF-8 error is malformed input too).
fn packet_error(e: WireError) -> PacketError {
    match e {
        WireError::Truncated => PacketError::Truncated,
        WireError::Malformed | WireError::BadUtf8 | WireError::UnknownVariant(_) => {
            PacketError::Malformed
        }
    }
}

/// Reads a whole body: bytes after its last field are [`PacketError::TrailingBytes`].
fn take_all<T: HandshakeBody>(body: &[u8]) -> Result<T, PacketError> {
    let mut r = Reader::new(body);
    let value = T::read(&mut r).map_err(packet_error)?;
    if r.is_empty() {
        Ok(value)
    } else {
        Err(PacketError::TrailingBytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Kind;

    fn hello() -> Hello {
        Hello {
            address: Address::device(42),
            client_nonce: [7; 16],
        }
    }

    #[test]
    fn hello_is_padded_and_round_trips() {
        let mut buf = [0xAAu8; MAX_PACKET];
        let bytes = hello().encode(&mut buf).unwrap();
        assert_eq!(bytes.len(), HELLO_MIN_LEN);
        assert_eq!(&bytes[..4], &[3, 0x01, 0x00, 42]);
        assert!(bytes[4 + 16..].iter().all(|&b| b == 0));
        assert_eq!(Hello::decode(bytes), Ok(hello()));
    }

    #[test]
    fn short_or_dirty_hello_is_refused() {
        let mut buf = [0u8; MAX_PACKET];
        let n = hello().encode(&mut buf).unwrap().len();
        assert_eq!(
            Hello::decode(&buf[..n - 1]),
            Err(PacketError::HelloTooShort)
        );
        buf[n - 1] = 1;
        assert_eq!(Hello::decode(&buf[..n]), Err(PacketError::BadPadding));
        buf[n - 1] = 0;
        // Longer padding is fine.
        assert_eq!(Hello::decode(&buf[..n + 10]), Ok(hello()));
        // A phone kind decodes (the broker answers KIND_NOT_ALLOWED), an unknown kind does not.
        buf[2] = Kind::Phone as u8;
        assert!(Hello::decode(&buf[..n]).is_ok());
        buf[2] = 2;
        assert_eq!(Hello::decode(&buf[..n]), Err(PacketError::Malformed));
    }

    #[test]
    fn header_errors() {
        assert_eq!(peek_header(&[2]), Err(PacketError::Truncated));
        assert_eq!(
            peek_header(&[1, 1, 0]),
            Err(PacketError::UnsupportedVersion {
                version: 1,
                packet_type: 1
            })
        );
        assert_eq!(peek_header(&[3, 9]), Err(PacketError::UnknownType(9)));
        assert_eq!(
            peek_header(&[1u8; MAX_PACKET + 1]),
            Err(PacketError::TooLarge)
        );
        assert_eq!(
            PacketError::UnsupportedVersion {
                version: 2,
                packet_type: 1
            }
            .code(),
            Code::UNSUPPORTED_VERSION
        );
    }

    #[test]
    fn reject_and_challenge_refuse_trailing_bytes() {
        let r = Reject {
            code: Code::SERVER_BUSY,
            max_version: 3,
            retry_after_ms: 5000,
        };
        let mut buf = [0u8; 64];
        let n = r.encode(&mut buf).unwrap().len();
        assert_eq!(&buf[..n], &[3, 4, 33, 3, 0x88, 0x27]);
        assert_eq!(Reject::decode(&buf[..n]), Ok(r));
        assert_eq!(
            Reject::decode(&buf[..n + 1]),
            Err(PacketError::TrailingBytes)
        );
        assert_eq!(Reject::decode(&buf[..n - 1]), Err(PacketError::Truncated));
        assert_eq!(
            Challenge::decode(&buf[..n]),
            Err(PacketError::UnknownType(4))
        );
    }

    #[test]
    fn login_since_id_is_bounded() {
        let mut login = Login {
            address: Address::device(1),
            client_nonce: [1; 16],
            timestamp_ms: 1,
            cookie: [2; 32],
            since_id: MAX_MSG_ID,
            upload_epoch: u64::MAX,
            proof: [3; 32],
        };
        let mut buf = [0u8; 200];
        let n = login.encode(&mut buf).unwrap().len();
        assert_eq!(Login::decode(&buf[..n]), Ok(login));
        login.since_id = MAX_MSG_ID + 1;
        assert_eq!(login.encode(&mut buf), Err(EncodeError::OutOfRange));
    }

    #[test]
    fn login_upload_epoch_zero_is_refused_both_ways() {
        let mut login = Login {
            address: Address::device(1),
            client_nonce: [1; 16],
            timestamp_ms: 1,
            cookie: [2; 32],
            since_id: 5,
            upload_epoch: 1,
            proof: [3; 32],
        };
        let mut buf = [0u8; 200];
        let n = login.encode(&mut buf).unwrap().len();
        // The epoch is the varint right before the 32 proof bytes: 1 -> 0 makes it 0 on the wire.
        assert_eq!(buf[n - 33], 1);
        buf[n - 33] = 0;
        assert_eq!(Login::decode(&buf[..n]), Err(PacketError::OutOfRange));
        assert_eq!(
            PacketError::OutOfRange.code(),
            Code::MALFORMED,
            "an out-of-range LOGIN is answered MALFORMED"
        );
        login.upload_epoch = 0;
        assert_eq!(login.encode(&mut buf), Err(EncodeError::OutOfRange));
    }

    #[test]
    fn data_header_layout_and_checks() {
        let h = DataHeader {
            session_id: 0x0403_0201,
            counter: 0x0102,
        };
        let mut pkt = [0u8; DATA_HEADER_LEN + TAG_LEN + MIN_FRAME];
        h.emit(&mut pkt).unwrap();
        assert_eq!(
            &pkt[..DATA_HEADER_LEN],
            &[3, 0x10, 1, 2, 3, 4, 2, 1, 0, 0, 0, 0, 0, 0]
        );
        let (parsed, sealed) = DataHeader::parse(&pkt).unwrap();
        assert_eq!(parsed, h);
        assert_eq!(sealed.len(), TAG_LEN + MIN_FRAME);
        assert_eq!(
            DataHeader::parse(&pkt[..pkt.len() - 1]),
            Err(PacketError::Truncated)
        );
        let zero = DataHeader {
            session_id: 0,
            counter: 0,
        };
        assert_eq!(zero.emit(&mut pkt), Err(EncodeError::OutOfRange));
        pkt[2..6].fill(0);
        assert_eq!(DataHeader::parse(&pkt), Err(PacketError::InvalidSessionId));
        pkt[2] = 1;
        pkt[6..14].copy_from_slice(&(1u64 << 48).to_le_bytes());
        assert_eq!(DataHeader::parse(&pkt), Err(PacketError::CounterOutOfRange));
        let mut small = [0u8; 10];
        assert_eq!(h.emit(&mut small), Err(EncodeError::BufferTooSmall));
    }

    #[test]
    fn encode_into_small_buffers_fails_cleanly() {
        let c = Challenge {
            timestamp_ms: u64::MAX,
            cookie: [9; 32],
        };
        let mut buf = [0u8; 44];
        assert_eq!(c.encode(&mut buf).unwrap().len(), 44);
        for n in 0..44 {
            assert_eq!(
                c.encode(&mut buf[..n]),
                Err(EncodeError::BufferTooSmall),
                "{n}"
            );
        }
        let mut small = [0u8; HELLO_MIN_LEN - 1];
        assert_eq!(hello().encode(&mut small), Err(EncodeError::BufferTooSmall));
    }

    #[test]
    fn welcome_header_layout_and_checks() {
        let h = WelcomeHeader {
            session_id: 0x0403_0201,
            broker_nonce: [0xc0; 16],
        };
        let mut pkt = [0u8; WELCOME_HEADER_LEN + TAG_LEN + MIN_FRAME];
        h.emit(&mut pkt).unwrap();
        assert_eq!(&pkt[..6], &[3, 0x05, 1, 2, 3, 4]);
        assert_eq!(&pkt[6..WELCOME_HEADER_LEN], &[0xc0; 16]);
        let (parsed, sealed) = WelcomeHeader::parse(&pkt).unwrap();
        assert_eq!(parsed, h);
        assert_eq!(sealed.len(), TAG_LEN + MIN_FRAME);
        assert_eq!(
            Packet::decode(&pkt),
            Ok(Packet::Welcome {
                header: h,
                sealed: &[0; TAG_LEN + MIN_FRAME]
            })
        );
        assert_eq!(
            WelcomeHeader::parse(&pkt[..pkt.len() - 1]),
            Err(PacketError::Truncated)
        );
        pkt[2..6].fill(0);
        assert_eq!(
            WelcomeHeader::parse(&pkt),
            Err(PacketError::InvalidSessionId)
        );
        let zero = WelcomeHeader { session_id: 0, ..h };
        assert_eq!(zero.emit(&mut pkt), Err(EncodeError::OutOfRange));
    }

    #[test]
    fn fixed_size_byte_fields_keep_their_wire_bytes() {
        let login = Login {
            address: Address::device(7),
            client_nonce: core::array::from_fn(|i| i as u8),
            timestamp_ms: 300,
            cookie: core::array::from_fn(|i| 0x80 + i as u8),
            since_id: 5,
            upload_epoch: 9,
            proof: core::array::from_fn(|i| 0xff - i as u8),
        };
        let mut buf = [0u8; MAX_PACKET];
        let n = login.encode(&mut buf).unwrap().len();
        // Header, kind + id, then the 16 nonce bytes as they are (no length prefix).
        assert_eq!(&buf[..4], &[3, 0x03, 0x00, 7]);
        assert_eq!(&buf[4..20], &login.client_nonce);
        assert_eq!(Login::decode(&buf[..n]), Ok(login));
        // Cut inside the proof: truncated, never a partly filled array.
        assert_eq!(Login::decode(&buf[..n - 5]), Err(PacketError::Truncated));
    }

    #[test]
    fn a_packet_of_another_type_is_unknown_type_whatever_its_body() {
        // A truncated CHALLENGE asked for as a REJECT or a LOGIN.
        let truncated_challenge = [3, 0x02, 0x01];
        assert_eq!(
            Reject::decode(&truncated_challenge),
            Err(PacketError::UnknownType(0x02))
        );
        assert_eq!(
            Login::decode(&truncated_challenge),
            Err(PacketError::UnknownType(0x02))
        );
        assert_eq!(
            Challenge::decode(&truncated_challenge),
            Err(PacketError::Truncated)
        );
    }
}
