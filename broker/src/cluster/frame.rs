//! Node-to-node link frames: a 4-byte big-endian length, then one [`Frame`] in postcard.
//! Addresses are the protocol's own [`Address`]/[`Kind`] (shared-protocol serde, varint ids).
//!
//! [`decode`] is sans-IO and never panics: it takes a buffer and returns a frame and how many
//! bytes it used, `Ok(None)` when more bytes are needed, or an error for an oversized or
//! undecodable frame (the link is then closed and reconnected).

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
        ];
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
