//! Node-to-node link frames: one [`Frame`] in postcard ([`encode_body`] / [`decode_body`]).
//! On a link every body is sealed by [`super::link_auth`] (which adds the length prefix, the
//! counter and the tag); nothing is ever sent unsealed. [`encode`] / [`decode`] are the same
//! body behind a 4-byte big-endian length, without sealing (tests and tools).
//! Addresses are the protocol's own [`Address`]/[`Kind`] (shared-protocol serde, varint ids).
//!
//! Size: a body is at most [`MAX_FRAME`] (64 KiB). The largest legitimate bodies are a
//! `Stored`/`Deliver` with a 1024-byte payload (`limits.max_payload_bytes` is at most 1024) and a
//! list destination: an address takes at most 6 bytes (kind byte, varint id), so a list of
//! [`MAX_LIST_PER_FRAME`] (8192) addresses is at most 49 KiB. Longer lists (a group push may name
//! 100 000 members) are split by [`split_for_wire`] into several frames with the same message
//! id and disjoint recipients, which the receiver handles exactly like one. Commands carry at
//! most a 255-byte name and a 1024-byte payload. The unit tests check the worst cases fit.
//!
//! [`decode`] and [`decode_body`] are sans-IO and never panic: an oversized or undecodable
//! frame is an error (the link is then closed and reconnected).
//!
//! New variants are only ever appended to [`Frame`] and [`CommandOutcome`] (postcard encodes
//! the variant index), so the indexes of existing frames never change.

use serde::{Deserialize, Serialize};

use crate::discovery::Role;
use crate::terminal::{Address, Kind};

/// Largest encoded frame body accepted or sent (module docs say why 64 KiB is enough).
pub const MAX_FRAME: usize = 64 * 1024;

/// Most addresses one `Stored`/`Deliver` frame carries; [`split_for_wire`] splits longer lists.
pub const MAX_LIST_PER_FRAME: usize = 8192;

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
    /// Not sent any more (the [`super::link_auth`] handshake says who is speaking) and ignored
    /// when received; kept so the indexes of the other variants never change.
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
    /// `terminal` logged in on another comet with session generation `generation` (`plug`
    /// profile): comet -> msgbus (forward to comet `to`), msgbus -> comet `to` (kick its session
    /// of the terminal if older; see `super::presence`).
    Replace {
        /// The comet holding the replaced session.
        to: String,
        /// The terminal.
        terminal: Address,
        /// The new session's generation.
        generation: u64,
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
            Frame::Replace { .. } => "replace",
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
    /// Bytes follow a valid frame inside one body.
    #[error("{0} bytes after the frame")]
    Trailing(usize),
}

/// Splits a `Stored`/`Deliver` whose list names more than [`MAX_LIST_PER_FRAME`] terminals into
/// frames of at most that many (same message, disjoint recipients, in order); any other frame
/// is returned as is.
pub fn split_for_wire(f: Frame) -> Vec<Frame> {
    fn parts(msg: LinkMessage, wrap: fn(LinkMessage) -> Frame) -> Vec<Frame> {
        match msg.dest {
            Dest::List(list) if list.len() > MAX_LIST_PER_FRAME => list
                .chunks(MAX_LIST_PER_FRAME)
                .map(|chunk| {
                    wrap(LinkMessage {
                        msg_id: msg.msg_id,
                        from: msg.from,
                        payload: msg.payload.clone(),
                        dest: Dest::List(chunk.to_vec()),
                    })
                })
                .collect(),
            dest => vec![wrap(LinkMessage { dest, ..msg })],
        }
    }
    match f {
        Frame::Stored { msg } => parts(msg, |msg| Frame::Stored { msg }),
        Frame::Deliver { msg } => parts(msg, |msg| Frame::Deliver { msg }),
        other => vec![other],
    }
}

/// Encodes the body of `f` (no length prefix); at most [`MAX_FRAME`] bytes.
pub fn encode_body(f: &Frame) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(f)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    Ok(body)
}

/// Decodes one whole frame body (trailing bytes are an error).
pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    match postcard::take_from_bytes(body)? {
        (f, []) => Ok(f),
        (_, rest) => Err(FrameError::Trailing(rest.len())),
    }
}

/// Encodes `f` with its length prefix (unsealed: see module docs).
pub fn encode(f: &Frame) -> Result<Vec<u8>, FrameError> {
    let body = encode_body(f)?;
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
    Ok(Some((decode_body(body)?, 4 + len)))
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
            Frame::Replace {
                to: "comet-a".into(),
                terminal: Address::device(42),
                generation: u64::MAX,
            },
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

    /// The largest legitimate message: maximal ids, a 1024-byte payload and a full list.
    fn worst_message(list: usize) -> LinkMessage {
        LinkMessage {
            msg_id: u64::MAX,
            from: Some(Address::phone(u32::MAX)),
            payload: vec![0xff; 1024],
            dest: Dest::List((0..list).map(|_| Address::device(u32::MAX)).collect()),
        }
    }

    #[test]
    fn the_largest_legitimate_frames_fit_the_bound() {
        for f in [
            Frame::Stored {
                msg: worst_message(MAX_LIST_PER_FRAME),
            },
            Frame::Deliver {
                msg: worst_message(MAX_LIST_PER_FRAME),
            },
        ] {
            let n = encode_body(&f).unwrap().len();
            assert!(n <= MAX_FRAME, "{} is {n} bytes", f.name());
            assert!(n > 8 * 1024 * 6, "the list is really encoded: {n}");
        }
        let cmd = Frame::Command {
            req: CommandRequest {
                id: u64::MAX,
                to: "c".repeat(64),
                device: Address::device(u32::MAX),
                name: "n".repeat(255),
                payload: vec![0xff; 1024],
                timeout_ms: u64::MAX,
            },
        };
        assert!(encode_body(&cmd).unwrap().len() < 2048);
        let done = Frame::CommandResult {
            id: u64::MAX,
            outcome: CommandOutcome::Done {
                status: u16::MAX,
                payload: vec![0xff; 1024],
            },
        };
        assert!(encode_body(&done).unwrap().len() < 2048);
        // A group-sized list does not fit one frame unsplit: that is why it is split.
        let group = Frame::Deliver {
            msg: worst_message(100_000),
        };
        assert!(matches!(encode_body(&group), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn long_lists_are_split_into_fitting_frames_with_the_same_recipients() {
        let mut msg = worst_message(0);
        let all: Vec<Address> = (1..=20_000).map(Address::device).collect();
        msg.dest = Dest::List(all.clone());
        let parts = split_for_wire(Frame::Stored { msg });
        assert_eq!(parts.len(), 3);
        let mut seen = Vec::new();
        for p in &parts {
            assert!(encode_body(p).unwrap().len() <= MAX_FRAME);
            let Frame::Stored { msg } = p else {
                panic!("{p:?}")
            };
            assert_eq!((msg.msg_id, msg.payload.len()), (u64::MAX, 1024));
            let Dest::List(l) = &msg.dest else {
                panic!("{msg:?}")
            };
            assert!(l.len() <= MAX_LIST_PER_FRAME);
            seen.extend_from_slice(l);
        }
        assert_eq!(seen, all);
        // Short lists, broadcasts and other frames pass unchanged.
        for f in [sample(), command(), Frame::Ping] {
            assert_eq!(split_for_wire(f.clone()), vec![f]);
        }
    }

    #[test]
    fn bodies_round_trip_and_trailing_bytes_are_errors() {
        let b = encode_body(&command()).unwrap();
        assert_eq!(decode_body(&b).unwrap(), command());
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(decode_body(&long), Err(FrameError::Trailing(1))));
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
