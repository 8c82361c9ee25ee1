//! Frames carried inside DATA packets (docs/protocol.md section 4).
//!
//! A [`Frame`] is `seq`, an [`Ack`] and a [`Body`]; on the wire it is plain postcard, read and
//! written field by field through [`crate::wire`] (the serde derives stay for hosts and give
//! the same bytes; the hand-written codec keeps a device's flash small). Payloads
//! and strings borrow from the decoded buffer (zero copy). The codec enforces, on both encode and
//! decode, the size limits of section 8 ([`MAX_FRAME`], [`MAX_PAYLOAD`], [`MAX_TOPIC`],
//! [`MAX_PATH`], [`MAX_NAME`]), `msg_id <= 2^53 - 1`, and the reliability rule that reliable
//! bodies carry `seq >= 1` and unreliable ones `seq == 0`. Decoding never panics, and rejects
//! trailing bytes, so that every accepted frame re-encodes to a frame that decodes to the same
//! value.
//!
//! The reliability machinery ([`crate::reliability`]) fills in `seq` and `ack`; the session
//! ([`crate::session`]) seals the encoded bytes into a DATA packet.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::codes::Code;
use crate::ids::Address;
use crate::limits::{MAX_FRAME, MAX_MSG_ID, MAX_NAME, MAX_PATH, MAX_PAYLOAD, MAX_TOPIC};
pub use crate::reliability::Ack;
use crate::wire::{BufferFull, Reader, WireError, Writer, read_address, write_address};

/// Number of body variants in this version (variant indexes `0..BODY_VARIANTS`).
pub const BODY_VARIANTS: u32 = 16;

/// One frame: reliability header plus body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Frame<'a> {
    /// 0 for unreliable bodies; 1, 2, 3... per direction for reliable ones.
    pub seq: u32,
    /// What the sender has received from its peer.
    pub ack: Ack,
    /// The operation.
    #[serde(borrow)]
    pub body: Body<'a>,
}

/// The operations (variant index = postcard enum index, the `#` column of section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Body<'a> {
    /// 0, broker -> device, unreliable: the login succeeded; session parameters.
    Welcome {
        /// The session id DATA packets carry (never 0).
        session_id: u32,
        /// Send a Ping after this many seconds without sending anything.
        heartbeat_secs: u16,
        /// The broker ends the session after this many seconds without an authenticated packet.
        session_timeout_secs: u16,
        /// Largest payload the broker accepts from this device (at most [`MAX_PAYLOAD`]).
        max_payload: u16,
        /// Broker clock, milliseconds since the Unix epoch.
        server_time_ms: u64,
    },
    /// 1, device -> broker, unreliable: keep-alive.
    Ping,
    /// 2, broker -> device, unreliable: answer to Ping.
    Pong {
        /// Broker clock, milliseconds since the Unix epoch.
        server_time_ms: u64,
    },
    /// 3, both, unreliable: carries only the acknowledgement.
    AckOnly,
    /// 4, broker -> device, reliable: a message for the device.
    Deliver {
        /// Strictly increasing per terminal, at most 2^53 - 1.
        msg_id: u64,
        /// Sender terminal, or `None` for the back end.
        from: Option<Address>,
        /// Application bytes.
        payload: &'a [u8],
    },
    /// 5, device -> broker, reliable: a message to another terminal.
    Send {
        /// Destination terminal.
        to: Address,
        /// Application bytes.
        payload: &'a [u8],
    },
    /// 6, device -> broker, reliable: data for the back end (acknowledged by UploadAck).
    Upload {
        /// Device-chosen id, reused when resending after a reconnect.
        upload_id: u32,
        /// Routing topic (at most [`MAX_TOPIC`] bytes).
        topic: &'a str,
        /// Application bytes.
        payload: &'a [u8],
    },
    /// 7, broker -> device, reliable: the upload is durable.
    UploadAck {
        /// The Upload's id.
        upload_id: u32,
    },
    /// 8, broker -> device, reliable: a command to run.
    Command {
        /// Broker-chosen id, echoed in CommandResult.
        cmd_id: u32,
        /// Command name (at most [`MAX_NAME`] bytes).
        name: &'a str,
        /// Arguments.
        payload: &'a [u8],
    },
    /// 9, device -> broker, reliable: outcome of a Command.
    CommandResult {
        /// The Command's id.
        cmd_id: u32,
        /// Application status (0 = success by convention).
        status: u16,
        /// Result bytes.
        payload: &'a [u8],
    },
    /// 10, device -> broker, reliable: a request to the back end.
    Request {
        /// Device-chosen id, echoed in Response.
        req_id: u32,
        /// Resource path (at most [`MAX_PATH`] bytes).
        path: &'a str,
        /// Request bytes.
        payload: &'a [u8],
    },
    /// 11, broker -> device, reliable: answer to a Request.
    Response {
        /// The Request's id.
        req_id: u32,
        /// Application status (0 = success by convention).
        status: u16,
        /// Response bytes.
        payload: &'a [u8],
    },
    /// 12, broker -> device, reliable: a terminal this device follows came online or went offline.
    Presence {
        /// The terminal.
        who: Address,
        /// Online now?
        online: bool,
    },
    /// 13, broker -> device, unreliable: the broker ends the session (then forgets it).
    Kick {
        /// Why (section 9).
        reason: Code,
    },
    /// 14, both, unreliable: the sender ends the session.
    Goodbye {
        /// Why (`NORMAL` for a plain close).
        reason: Code,
    },
    /// 15, broker -> device, reliable: a device frame failed.
    Error {
        /// What went wrong (section 9).
        code: Code,
        /// The `seq` of the device frame concerned (0: not about one frame).
        about_seq: u32,
    },
}

impl Body<'_> {
    /// The postcard variant index.
    pub const fn index(&self) -> u32 {
        match self {
            Body::Welcome { .. } => 0,
            Body::Ping => 1,
            Body::Pong { .. } => 2,
            Body::AckOnly => 3,
            Body::Deliver { .. } => 4,
            Body::Send { .. } => 5,
            Body::Upload { .. } => 6,
            Body::UploadAck { .. } => 7,
            Body::Command { .. } => 8,
            Body::CommandResult { .. } => 9,
            Body::Request { .. } => 10,
            Body::Response { .. } => 11,
            Body::Presence { .. } => 12,
            Body::Kick { .. } => 13,
            Body::Goodbye { .. } => 14,
            Body::Error { .. } => 15,
        }
    }

    /// The variant's name as in the spec table.
    pub const fn name(&self) -> &'static str {
        match self {
            Body::Welcome { .. } => "Welcome",
            Body::Ping => "Ping",
            Body::Pong { .. } => "Pong",
            Body::AckOnly => "AckOnly",
            Body::Deliver { .. } => "Deliver",
            Body::Send { .. } => "Send",
            Body::Upload { .. } => "Upload",
            Body::UploadAck { .. } => "UploadAck",
            Body::Command { .. } => "Command",
            Body::CommandResult { .. } => "CommandResult",
            Body::Request { .. } => "Request",
            Body::Response { .. } => "Response",
            Body::Presence { .. } => "Presence",
            Body::Kick { .. } => "Kick",
            Body::Goodbye { .. } => "Goodbye",
            Body::Error { .. } => "Error",
        }
    }

    /// Whether a device sends this body (`d->b` and `both` in the section 4 table).
    pub const fn is_sent_by_device(&self) -> bool {
        matches!(
            self,
            Body::Ping
                | Body::AckOnly
                | Body::Send { .. }
                | Body::Upload { .. }
                | Body::CommandResult { .. }
                | Body::Request { .. }
                | Body::Goodbye { .. }
        )
    }

    /// Whether the body travels reliably (numbered, acknowledged, retransmitted).
    pub const fn is_reliable(&self) -> bool {
        !matches!(
            self,
            Body::Welcome { .. }
                | Body::Ping
                | Body::Pong { .. }
                | Body::AckOnly
                | Body::Kick { .. }
                | Body::Goodbye { .. }
        )
    }

    /// The application payload, if the variant has one.
    pub const fn payload(&self) -> Option<&[u8]> {
        match self {
            Body::Deliver { payload, .. }
            | Body::Send { payload, .. }
            | Body::Upload { payload, .. }
            | Body::Command { payload, .. }
            | Body::CommandResult { payload, .. }
            | Body::Request { payload, .. }
            | Body::Response { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// Checks the section 8 limits on this body's fields.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        if let Some(p) = self.payload() {
            check_len(Field::Payload, p.len(), MAX_PAYLOAD)?;
        }
        match self {
            Body::Deliver { msg_id, .. } if *msg_id > MAX_MSG_ID => {
                Err(LimitError::MsgIdOutOfRange)
            }
            Body::Upload { topic, .. } => check_len(Field::Topic, topic.len(), MAX_TOPIC),
            Body::Command { name, .. } => check_len(Field::Name, name.len(), MAX_NAME),
            Body::Request { path, .. } => check_len(Field::Path, path.len(), MAX_PATH),
            _ => Ok(()),
        }
    }
}

fn check_len(field: Field, len: usize, max: usize) -> Result<(), LimitError> {
    if len > max {
        Err(LimitError::TooLong { field, len, max })
    } else {
        Ok(())
    }
}

/// A length-limited field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Field {
    /// Any `payload` ([`MAX_PAYLOAD`]).
    Payload,
    /// Upload `topic` ([`MAX_TOPIC`]).
    Topic,
    /// Command `name` ([`MAX_NAME`]).
    Name,
    /// Request `path` ([`MAX_PATH`]).
    Path,
}

/// A frame that breaks a section 8 limit or the seq/reliability rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LimitError {
    /// A field is longer than its limit.
    TooLong {
        /// Which field.
        field: Field,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `msg_id` above 2^53 - 1.
    MsgIdOutOfRange,
    /// A reliable body with `seq` 0, or an unreliable body with `seq` not 0.
    SeqMismatch,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::TooLong { field, len, max } => {
                write!(f, "{field:?} is {len} bytes, limit {max}")
            }
            LimitError::MsgIdOutOfRange => f.write_str("msg_id above 2^53 - 1"),
            LimitError::SeqMismatch => {
                f.write_str("seq must be 0 for unreliable and >= 1 for reliable bodies")
            }
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// The frame breaks a limit; nothing useful was written.
    Limit(LimitError),
    /// The output buffer is too small.
    BufferTooSmall,
    /// The encoding would exceed [`MAX_FRAME`] (cannot happen within the field limits; kept for
    /// defence in depth).
    TooLarge,
    /// A body the encoding side never sends (a broker-sent body given to
    /// [`Frame::encode_from_device`]); the variant index.
    WrongDirection(u32),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Limit(e) => write!(f, "frame not encodable: {e}"),
            EncodeError::BufferTooSmall => f.write_str("output buffer too small"),
            EncodeError::TooLarge => write!(f, "frame larger than {MAX_FRAME} bytes"),
            EncodeError::WrongDirection(i) => write!(f, "body variant {i} is not sent this way"),
        }
    }
}

impl core::error::Error for EncodeError {}

impl From<LimitError> for EncodeError {
    fn from(e: LimitError) -> Self {
        EncodeError::Limit(e)
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// More than [`MAX_FRAME`] bytes.
    TooLarge,
    /// The bytes end inside the frame.
    Truncated,
    /// A body variant index this version does not know.
    UnknownBody(u32),
    /// Invalid postcard (overlong varint, bool or Option tag not 0/1, unknown kind byte...).
    Malformed,
    /// A string is not UTF-8.
    BadUtf8,
    /// Bytes left after the frame.
    TrailingBytes,
    /// A field breaks a limit.
    Limit(LimitError),
    /// A body variant the decoding side never receives (a device-sent body given to
    /// [`Frame::decode_from_broker`]); the variant index.
    WrongDirection(u32),
}

impl DecodeError {
    /// The code a broker reports in `Error` for this error.
    pub const fn code(self) -> Code {
        match self {
            DecodeError::TooLarge | DecodeError::Limit(LimitError::TooLong { .. }) => {
                Code::TOO_LARGE
            }
            _ => Code::MALFORMED,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge => write!(f, "frame larger than {MAX_FRAME} bytes"),
            DecodeError::Truncated => f.write_str("frame truncated"),
            DecodeError::UnknownBody(i) => write!(f, "unknown body variant {i}"),
            DecodeError::Malformed => f.write_str("malformed frame"),
            DecodeError::BadUtf8 => f.write_str("string not UTF-8"),
            DecodeError::TrailingBytes => f.write_str("trailing bytes after frame"),
            DecodeError::Limit(e) => write!(f, "frame breaks a limit: {e}"),
            DecodeError::WrongDirection(i) => write!(f, "body variant {i} is not sent this way"),
        }
    }
}

impl core::error::Error for DecodeError {}

impl From<LimitError> for DecodeError {
    fn from(e: LimitError) -> Self {
        DecodeError::Limit(e)
    }
}

impl<'a> Frame<'a> {
    /// An unreliable frame (`seq` 0).
    pub const fn unreliable(ack: Ack, body: Body<'a>) -> Frame<'a> {
        Frame { seq: 0, ack, body }
    }

    /// Checks limits and the seq/reliability rule.
    pub fn check(&self) -> Result<(), LimitError> {
        if self.body.is_reliable() != (self.seq != 0) {
            return Err(LimitError::SeqMismatch);
        }
        self.body.check_limits()
    }

    /// Encodes into `buf` and returns the written bytes (at most [`MAX_FRAME`]), any body
    /// variant.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], EncodeError> {
        self.encode_bodies::<false>(buf)
    }

    /// Encodes a frame a device sends to a broker: the same bytes as [`Frame::encode`] for
    /// every body a device sends (`d->b` and `both` in the section 4 table), and
    /// [`EncodeError::WrongDirection`] (nothing written) for a body only a broker sends. A
    /// device encodes with this one, so it links only the writers of the bodies it sends.
    pub fn encode_from_device<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], EncodeError> {
        self.encode_bodies::<true>(buf)
    }

    /// [`Frame::encode`] (`FROM_DEVICE` false) or [`Frame::encode_from_device`] (true).
    fn encode_bodies<'b, const FROM_DEVICE: bool>(
        &self,
        buf: &'b mut [u8],
    ) -> Result<&'b mut [u8], EncodeError> {
        if FROM_DEVICE && !self.body.is_sent_by_device() {
            return Err(EncodeError::WrongDirection(self.body.index()));
        }
        self.check()?;
        let len = buf.len();
        let mut w = Writer::new(&mut buf[..len.min(MAX_FRAME)]);
        match self.write::<FROM_DEVICE>(&mut w) {
            Ok(()) => Ok(w.finish()),
            Err(BufferFull) if len >= MAX_FRAME => Err(EncodeError::TooLarge),
            Err(BufferFull) => Err(EncodeError::BufferTooSmall),
        }
    }

    /// Writes the fields in wire order (the same bytes as the serde derive through postcard).
    /// With `FROM_DEVICE` the writers of the bodies only a broker sends are left out: the
    /// caller refused those bodies before writing anything.
    fn write<const FROM_DEVICE: bool>(&self, w: &mut Writer<'_>) -> Result<(), BufferFull> {
        w.varint(self.seq.into())?;
        w.varint(self.ack.next.into())?;
        w.varint(self.ack.mask.into())?;
        w.varint(self.body.index().into())?;
        match self.body {
            Body::Welcome {
                session_id,
                heartbeat_secs,
                session_timeout_secs,
                max_payload,
                server_time_ms,
            } if !FROM_DEVICE => {
                w.varint(session_id.into())?;
                w.varint(heartbeat_secs.into())?;
                w.varint(session_timeout_secs.into())?;
                w.varint(max_payload.into())?;
                w.varint(server_time_ms)
            }
            Body::Ping | Body::AckOnly => Ok(()),
            Body::Pong { server_time_ms } if !FROM_DEVICE => w.varint(server_time_ms),
            Body::Deliver {
                msg_id,
                from,
                payload,
            } if !FROM_DEVICE => {
                w.varint(msg_id)?;
                match from {
                    None => w.bool(false)?,
                    Some(address) => {
                        w.bool(true)?;
                        write_address(w, address)?;
                    }
                }
                w.bytes(payload)
            }
            Body::Send { to, payload } => {
                write_address(w, to)?;
                w.bytes(payload)
            }
            Body::Upload {
                upload_id: id,
                topic: text,
                payload,
            }
            | Body::Command {
                cmd_id: id,
                name: text,
                payload,
            }
            | Body::Request {
                req_id: id,
                path: text,
                payload,
            } => {
                w.varint(id.into())?;
                w.bytes(text.as_bytes())?;
                w.bytes(payload)
            }
            Body::UploadAck { upload_id } if !FROM_DEVICE => w.varint(upload_id.into()),
            Body::CommandResult {
                cmd_id: id,
                status,
                payload,
            }
            | Body::Response {
                req_id: id,
                status,
                payload,
            } => {
                w.varint(id.into())?;
                w.varint(status.into())?;
                w.bytes(payload)
            }
            Body::Presence { who, online } if !FROM_DEVICE => {
                write_address(w, who)?;
                w.bool(online)
            }
            Body::Goodbye { reason: code } => w.varint(code.0.into()),
            Body::Kick { reason: code } if !FROM_DEVICE => w.varint(code.0.into()),
            Body::Error { code, about_seq } if !FROM_DEVICE => {
                w.varint(code.0.into())?;
                w.varint(about_seq.into())
            }
            // Only with `FROM_DEVICE`, for a body `encode_from_device` refused before writing.
            _ => Ok(()),
        }
    }

    /// Decodes one frame from exactly `bytes` (no trailing bytes), any body variant. Never
    /// panics.
    pub fn decode(bytes: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        Frame::decode_bodies::<false>(bytes)
    }

    /// Decodes one frame a broker sent to a device: the same result as [`Frame::decode`] for
    /// every body the broker sends (`b->d` and `both` in the section 4 table), and
    /// [`DecodeError::WrongDirection`] for a body only a device sends (Ping, Send, Upload,
    /// CommandResult, Request), known from its variant index before any of its fields is
    /// read. A device decodes with this one, so it links only the readers of the bodies it
    /// receives. Never panics.
    pub fn decode_from_broker(bytes: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        Frame::decode_bodies::<true>(bytes)
    }

    /// [`Frame::decode`] (`FROM_BROKER` false) or [`Frame::decode_from_broker`] (true).
    fn decode_bodies<const FROM_BROKER: bool>(bytes: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        if bytes.len() > MAX_FRAME {
            return Err(DecodeError::TooLarge);
        }
        let mut r = Reader::new(bytes);
        let frame = Frame::read::<FROM_BROKER>(&mut r).map_err(|e| match e {
            WireError::Truncated => DecodeError::Truncated,
            WireError::Malformed => DecodeError::Malformed,
            WireError::BadUtf8 => DecodeError::BadUtf8,
            // Only `decode_from_broker` leaves a known index unread.
            WireError::UnknownVariant(index) if index < BODY_VARIANTS => {
                DecodeError::WrongDirection(index)
            }
            WireError::UnknownVariant(index) => DecodeError::UnknownBody(index),
        })?;
        if !r.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        frame.check()?;
        Ok(frame)
    }

    /// Reads the fields in wire order; the first field that fails decides the error, as with
    /// the serde derive through postcard. (Errors stay [`WireError`]s until [`Frame::decode`]
    /// converts the one that happened: one conversion instead of one per field.) With
    /// `FROM_BROKER` a body only a device sends is not read: its known index comes back as
    /// [`WireError::UnknownVariant`], and no reader of its fields is linked.
    fn read<const FROM_BROKER: bool>(r: &mut Reader<'a>) -> Result<Frame<'a>, WireError> {
        let seq = r.u32()?;
        let ack = Ack {
            next: r.u32()?,
            mask: r.u32()?,
        };
        // Variants with the same field types share one read (a device links one copy).
        let body = match r.u32()? {
            0 => Body::Welcome {
                session_id: r.u32()?,
                heartbeat_secs: r.u16()?,
                session_timeout_secs: r.u16()?,
                max_payload: r.u16()?,
                server_time_ms: r.u64()?,
            },
            1 if !FROM_BROKER => Body::Ping,
            2 => Body::Pong {
                server_time_ms: r.u64()?,
            },
            3 => Body::AckOnly,
            4 => Body::Deliver {
                msg_id: r.u64()?,
                from: if r.bool()? {
                    Some(read_address(r)?)
                } else {
                    None
                },
                payload: r.bytes()?,
            },
            5 if !FROM_BROKER => Body::Send {
                to: read_address(r)?,
                payload: r.bytes()?,
            },
            index @ (6 | 8 | 10) if !FROM_BROKER || index == 8 => {
                let (id, text, payload) = (r.u32()?, r.str()?, r.bytes()?);
                match index {
                    6 => Body::Upload {
                        upload_id: id,
                        topic: text,
                        payload,
                    },
                    8 => Body::Command {
                        cmd_id: id,
                        name: text,
                        payload,
                    },
                    _ => Body::Request {
                        req_id: id,
                        path: text,
                        payload,
                    },
                }
            }
            7 => Body::UploadAck {
                upload_id: r.u32()?,
            },
            index @ (9 | 11) if !FROM_BROKER || index == 11 => {
                let (id, status, payload) = (r.u32()?, r.u16()?, r.bytes()?);
                if index == 9 {
                    Body::CommandResult {
                        cmd_id: id,
                        status,
                        payload,
                    }
                } else {
                    Body::Response {
                        req_id: id,
                        status,
                        payload,
                    }
                }
            }
            12 => Body::Presence {
                who: read_address(r)?,
                online: r.bool()?,
            },
            index @ (13 | 14) => {
                let reason = Code(r.u16()?);
                if index == 13 {
                    Body::Kick { reason }
                } else {
                    Body::Goodbye { reason }
                }
            }
            15 => Body::Error {
                code: Code(r.u16()?),
                about_seq: r.u32()?,
            },
            unknown => return Err(WireError::UnknownVariant(unknown)),
        };
        Ok(Frame { seq, ack, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_PAYLOAD;

    fn enc<'b>(frame: &Frame<'_>, buf: &'b mut [u8]) -> &'b [u8] {
        frame.encode(buf).unwrap()
    }

    /// One body of every variant, in index order.
    fn every_body() -> [Body<'static>; BODY_VARIANTS as usize] {
        let who = Address::device(9);
        [
            Body::Welcome {
                session_id: 1,
                heartbeat_secs: 30,
                session_timeout_secs: 90,
                max_payload: 512,
                server_time_ms: 7,
            },
            Body::Ping,
            Body::Pong { server_time_ms: 7 },
            Body::AckOnly,
            Body::Deliver {
                msg_id: 3,
                from: Some(who),
                payload: b"d",
            },
            Body::Send {
                to: who,
                payload: b"s",
            },
            Body::Upload {
                upload_id: 4,
                topic: "t",
                payload: b"u",
            },
            Body::UploadAck { upload_id: 4 },
            Body::Command {
                cmd_id: 5,
                name: "n",
                payload: b"c",
            },
            Body::CommandResult {
                cmd_id: 5,
                status: 0,
                payload: b"r",
            },
            Body::Request {
                req_id: 6,
                path: "p",
                payload: b"q",
            },
            Body::Response {
                req_id: 6,
                status: 200,
                payload: b"a",
            },
            Body::Presence { who, online: true },
            Body::Kick {
                reason: Code::NORMAL,
            },
            Body::Goodbye {
                reason: Code::NORMAL,
            },
            Body::Error {
                code: Code::MALFORMED,
                about_seq: 2,
            },
        ]
    }

    #[test]
    fn a_device_encodes_what_a_device_sends_and_writes_nothing_else() {
        for body in every_body() {
            let frame = Frame {
                seq: u32::from(body.is_reliable()),
                ack: Ack { next: 2, mask: 1 },
                body,
            };
            let mut full = [0u8; 64];
            let full = frame.encode(&mut full).unwrap();
            let mut device = [0xAAu8; 64];
            let result = frame.encode_from_device(&mut device).map(|b| b.len());
            if body.is_sent_by_device() {
                assert_eq!(result, Ok(full.len()), "{}", body.name());
                assert_eq!(&device[..full.len()], &full[..], "{}", body.name());
            } else {
                assert_eq!(result, Err(EncodeError::WrongDirection(body.index())));
                assert_eq!(device, [0xAA; 64], "{}: nothing written", body.name());
            }
        }
    }

    #[test]
    fn a_device_decodes_what_a_broker_sends_and_refuses_the_rest_by_index() {
        // The `d->b` rows of the section 4 table.
        const DEVICE_SENT: [u32; 5] = [1, 5, 6, 9, 10];
        for (index, body) in every_body().into_iter().enumerate() {
            assert_eq!(body.index(), index as u32);
            let seq = u32::from(body.is_reliable());
            let frame = Frame {
                seq,
                ack: Ack { next: 2, mask: 1 },
                body,
            };
            let mut buf = [0u8; 64];
            let bytes = frame.encode(&mut buf).unwrap();
            assert_eq!(Frame::decode(bytes), Ok(frame));
            if DEVICE_SENT.contains(&body.index()) {
                assert_eq!(
                    Frame::decode_from_broker(bytes),
                    Err(DecodeError::WrongDirection(body.index())),
                    "{}",
                    body.name()
                );
                // Refused from the index alone: the fields are never read, so the frame cut
                // right after its index (seq, ack and index are one byte each here) is
                // refused the same way.
                assert_eq!(
                    Frame::decode_from_broker(&bytes[..4]),
                    Err(DecodeError::WrongDirection(body.index()))
                );
            } else {
                assert_eq!(
                    Frame::decode_from_broker(bytes),
                    Ok(frame),
                    "{}",
                    body.name()
                );
            }
        }
        // Unknown indexes stay unknown, and every other error is decode's.
        assert_eq!(
            Frame::decode_from_broker(&[0, 0, 0, 16]),
            Err(DecodeError::UnknownBody(16))
        );
        assert_eq!(
            Frame::decode_from_broker(&[0, 0, 0]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn ping_is_four_bytes() {
        let mut buf = [0u8; 16];
        let f = Frame::unreliable(Ack::default(), Body::Ping);
        assert_eq!(enc(&f, &mut buf), &[0, 0, 0, 1]);
        assert_eq!(Frame::decode(&[0, 0, 0, 1]), Ok(f));
    }

    #[test]
    fn deliver_layout_matches_spec_example() {
        // The annotated example of section 4.
        let f = Frame {
            seq: 5,
            ack: Ack { next: 3, mask: 1 },
            body: Body::Deliver {
                msg_id: 300,
                from: Some(Address::phone(7)),
                payload: b"on",
            },
        };
        let mut buf = [0u8; 64];
        let expected = [5, 3, 1, 4, 0xAC, 0x02, 1, 1, 7, 2, b'o', b'n'];
        assert_eq!(enc(&f, &mut buf), &expected);
        assert_eq!(Frame::decode(&expected), Ok(f));
    }

    #[test]
    fn trailing_and_truncated() {
        assert_eq!(
            Frame::decode(&[0, 0, 0, 1, 0]),
            Err(DecodeError::TrailingBytes)
        );
        assert_eq!(Frame::decode(&[0, 0, 0]), Err(DecodeError::Truncated));
        assert_eq!(Frame::decode(&[]), Err(DecodeError::Truncated));
    }

    #[test]
    fn unknown_variant_is_reported() {
        assert_eq!(
            Frame::decode(&[0, 0, 0, 16]),
            Err(DecodeError::UnknownBody(16))
        );
        assert_eq!(
            Frame::decode(&[0, 0, 0, 0x80, 0x01]),
            Err(DecodeError::UnknownBody(128))
        );
    }

    #[test]
    fn seq_rule() {
        let mut buf = [0u8; 16];
        let f = Frame {
            seq: 1,
            ack: Ack::default(),
            body: Body::Ping,
        };
        assert_eq!(
            f.encode(&mut buf),
            Err(EncodeError::Limit(LimitError::SeqMismatch))
        );
        assert_eq!(
            Frame::decode(&[1, 0, 0, 1]),
            Err(DecodeError::Limit(LimitError::SeqMismatch))
        );
        // UploadAck with seq 0.
        assert_eq!(
            Frame::decode(&[0, 0, 0, 7, 1]),
            Err(DecodeError::Limit(LimitError::SeqMismatch))
        );
    }

    #[test]
    fn limits_on_both_sides() {
        let big = [0u8; MAX_PAYLOAD + 1];
        let f = Frame {
            seq: 1,
            ack: Ack::default(),
            body: Body::Send {
                to: Address::device(1),
                payload: &big,
            },
        };
        let mut buf = [0u8; 2048];
        let err = EncodeError::Limit(LimitError::TooLong {
            field: Field::Payload,
            len: MAX_PAYLOAD + 1,
            max: MAX_PAYLOAD,
        });
        assert_eq!(f.encode(&mut buf), Err(err));
        // Hand-build the same frame: seq 1, ack 0 0, Send, device 1, len 1025 (0x81 0x08).
        let mut raw = [0u8; 8 + MAX_PAYLOAD + 1];
        raw[..8].copy_from_slice(&[1, 0, 0, 5, 0, 1, 0x81, 0x08]);
        let d = Frame::decode(&raw).unwrap_err();
        assert_eq!(d.code(), Code::TOO_LARGE);

        let long = [b'a'; MAX_TOPIC + 1];
        let topic = core::str::from_utf8(&long).unwrap();
        let f = Frame {
            seq: 1,
            ack: Ack::default(),
            body: Body::Upload {
                upload_id: 1,
                topic,
                payload: &[],
            },
        };
        assert!(matches!(
            f.encode(&mut buf),
            Err(EncodeError::Limit(LimitError::TooLong {
                field: Field::Topic,
                ..
            }))
        ));
    }

    #[test]
    fn msg_id_bound() {
        let f = Frame {
            seq: 1,
            ack: Ack::default(),
            body: Body::Deliver {
                msg_id: MAX_MSG_ID + 1,
                from: None,
                payload: &[],
            },
        };
        let mut buf = [0u8; 32];
        assert_eq!(
            f.encode(&mut buf),
            Err(EncodeError::Limit(LimitError::MsgIdOutOfRange))
        );
    }

    #[test]
    fn bad_utf8_and_bad_bool() {
        // Upload seq 1, id 1, topic "\xff", payload empty.
        assert_eq!(
            Frame::decode(&[1, 0, 0, 6, 1, 1, 0xFF, 0]),
            Err(DecodeError::BadUtf8)
        );
        // Presence with online = 2.
        assert_eq!(
            Frame::decode(&[1, 0, 0, 12, 0, 1, 2]),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn small_buffer() {
        let f = Frame::unreliable(
            Ack::default(),
            Body::Pong {
                server_time_ms: 1 << 40,
            },
        );
        let mut buf = [0u8; 4];
        assert_eq!(f.encode(&mut buf), Err(EncodeError::BufferTooSmall));
    }
}
