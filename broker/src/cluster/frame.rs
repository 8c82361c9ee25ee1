//! Node-to-node link frames: a 4-byte big-endian length, then one [`Frame`] in postcard.
//! Addresses are the protocol's own [`Address`]/[`Kind`] (shared-protocol serde, varint ids).
//!
//! [`decode`] is sans-IO and never panics: it takes a buffer and returns a frame and how many
//! bytes it used, `Ok(None)` when more bytes are needed, or an error for an oversized or
//! undecodable frame (the link is then closed and reconnected).
//!
//! New variants are only ever appended to [`Frame`] and [`CommandOutcome`] (postcard encodes
//! the variant index), so the indexes of existing frames never change.

use serde::{Deserialize, Serialize};

use crate::discovery::Role;
use crate::terminal::{Address, Kind};

/// Largest encoded frame accepted (a payload is at most `limits.max_payload_bytes`, far below).
pub const MAX_FRAME: usize = 1 << 20;

/// Who a stored message is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dest {
    /// These terminals.
    List(Vec<Address>),
    /// Every terminal of this kind (`None`: every kind); a broadcast.
    Kind(Option<Kind>),
}

/// One frame on a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame in each direction: who is speaking.
    Hello {
        /// Node id.
        node: String,
        /// Its role.
        role: Role,
    },
    /// comet -> msgbus: the comet stored a message in the shared offline store (a terminal's
    /// send) and delivered it to its own sessions; msgbus routes it to the other comets.
    Stored {
        /// The message.
        msg: LinkMessage,
    },
    /// msgbus -> comet: deliver an already stored message to local sessions.
    Deliver {
        /// The message.
        msg: LinkMessage,
    },
    /// Keepalive (either direction).
    Ping,
    /// A device command for a session on another node (HTTP API in cluster mode):
    /// comet -> msgbus (forward to comet `req.to`) or msgbus -> comet (run it locally).
    Command {
        /// The request.
        req: CommandRequest,
    },
    /// The answer to the `Command` with the same `id`, sent back on the link it came from.
    CommandResult {
        /// The request's id (chosen by the node that sent the request).
        id: u64,
        /// What happened.
        outcome: CommandOutcome,
    },
}

impl Frame {
    /// A short name of the frame's kind (metrics label).
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Stored { .. } => "stored",
            Frame::Deliver { .. } => "deliver",
            Frame::Ping => "ping",
            Frame::Command { .. } => "command",
            Frame::CommandResult { .. } => "command_result",
        }
    }
}

/// A device command carried over a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// Correlation id, unique among the sender's pending requests on this link.
    pub id: u64,
    /// The comet the online registry names for the device.
    pub to: String,
    /// The device.
    pub device: Address,
    /// Command name (1..=255 bytes; the executing router checks it).
    pub name: String,
    /// Opaque payload.
    pub payload: Vec<u8>,
    /// How long the caller waits for the answer, ms (the executor caps it).
    pub timeout_ms: u64,
}

/// The result of a forwarded command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutcome {
    /// The device answered.
    Done {
        /// The device's status code.
        status: u16,
        /// Result payload.
        payload: Vec<u8>,
    },
    /// The executing node holds no session of the device.
    NotOnline,
    /// The device did not answer in time.
    Timeout,
    /// The device's session queue refused the command.
    Overloaded,
    /// The device disconnected before answering.
    Disconnected,
    /// The executing router refused the request (name, payload, kind).
    Invalid(String),
    /// The forwarding msgbus has no link to the target comet.
    Unreachable(String),
}

/// A stored message as carried over a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkMessage {
    /// Id in the offline store.
    pub msg_id: u64,
    /// Sender, `None` for a backend push.
    pub from: Option<Address>,
    /// Opaque payload.
    pub payload: Vec<u8>,
    /// Recipients.
    pub dest: Dest,
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced length exceeds [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The body is not a valid frame.
    #[error("frame body: {0}")]
    Body(#[from] postcard::Error),
}

/// Encodes `f` with its length prefix.
pub fn encode(f: &Frame) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(f)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes the first frame in `buf`: `Ok(Some((frame, used)))`, `Ok(None)` when incomplete.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((postcard::from_bytes(body)?, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Frame {
        Frame::Stored {
            msg: LinkMessage {
                msg_id: 42,
                from: Some(Address::phone(7)),
                payload: b"on".to_vec(),
                dest: Dest::List(vec![Address::device(u32::MAX)]),
            },
        }
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let frames = [
            Frame::Hello {
                node: "comet-a".into(),
                role: Role::Comet,
            },
            sample(),
            Frame::Deliver {
                msg: LinkMessage {
                    msg_id: 1,
                    from: None,
                    payload: vec![],
                    dest: Dest::Kind(None),
                },
            },
            Frame::Ping,
            command(),
        ];
        let outcomes = [
            CommandOutcome::Done {
                status: 200,
                payload: b"relay:on".to_vec(),
            },
            CommandOutcome::NotOnline,
            CommandOutcome::Timeout,
            CommandOutcome::Overloaded,
            CommandOutcome::Disconnected,
            CommandOutcome::Invalid("name too long".into()),
            CommandOutcome::Unreachable("comet-b".into()),
        ];
        let frames: Vec<Frame> = frames
            .into_iter()
            .chain(
                outcomes
                    .into_iter()
                    .enumerate()
                    .map(|(i, outcome)| Frame::CommandResult {
                        id: u64::MAX - i as u64,
                        outcome,
                    }),
            )
            .collect();
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(encode(f).unwrap());
        }
        // Feed one byte at a time: every prefix is either incomplete or yields whole frames.
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some((f, used)) = decode(&buf).unwrap() {
                buf.drain(..used);
                got.push(f);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got, frames);
    }

    fn command() -> Frame {
        Frame::Command {
            req: CommandRequest {
                id: 7,
                to: "comet-b".into(),
                device: Address::device(42),
                name: "relay".into(),
                payload: vec![0, 1, 2, 255],
                timeout_ms: 5000,
            },
        }
    }

    /// Body bytes of `f` (without the length prefix).
    fn body(f: &Frame) -> Vec<u8> {
        encode(f).unwrap()[4..].to_vec()
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn malformed_command_frames_are_errors_not_panics() {
        let good = body(&command());
        // Every truncation of a command body, announced with its truncated length, is an error.
        for n in 0..good.len() {
            assert!(
                matches!(decode(&framed(&good[..n])), Err(FrameError::Body(_))),
                "truncated to {n}"
            );
        }
        // An unknown frame variant and an unknown outcome variant.
        assert!(matches!(decode(&framed(&[99])), Err(FrameError::Body(_))));
        let mut r = body(&Frame::CommandResult {
            id: 1,
            outcome: CommandOutcome::Timeout,
        });
        *r.last_mut().unwrap() = 77;
        assert!(matches!(decode(&framed(&r)), Err(FrameError::Body(_))));
        // A name that is not UTF-8: the name starts after the variant, id and `to`.
        let mut bad = good.clone();
        let name_at = 1 + 1 + 1 + "comet-b".len() + 2;
        assert_eq!(bad[name_at], 5, "length of `relay`");
        bad[name_at + 1] = 0xff;
        assert!(matches!(decode(&framed(&bad)), Err(FrameError::Body(_))));
        // A payload length beyond the body.
        let mut long = good.clone();
        let payload_len_at = name_at + 1 + 5;
        long[payload_len_at] = 100;
        assert!(matches!(decode(&framed(&long)), Err(FrameError::Body(_))));
        // Flipping any byte never panics.
        for i in 0..good.len() {
            for x in [0u8, 0x7f, 0x80, 0xff] {
                let mut v = good.clone();
                v[i] = x;
                let _ = decode(&framed(&v));
            }
        }
    }

    #[test]
    fn oversized_and_garbage_are_errors_not_panics() {
        let mut big = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        big.push(0);
        assert!(matches!(decode(&big), Err(FrameError::TooLarge(_))));
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(decode(&garbage), Err(FrameError::Body(_))));
        for n in 0..40u8 {
            let mut v = vec![0, 0, 0, n];
            v.extend((0..n).map(|i| i.wrapping_mul(37)));
            let _ = decode(&v);
        }
    }
}
