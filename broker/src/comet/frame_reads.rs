//! Reads that stop at WebSocket frame boundaries, so a logged-in connection can give back the
//! WebSocket library's buffers.
//!
//! The WebSocket library keeps a read buffer and a write buffer for a connection's whole life,
//! with the capacity of the largest frame read and written so far (the login's). An idle
//! session needs neither, but the library only gives them back when its state is dropped and
//! the socket wrapped anew ([`super::ws::compact`]); that is safe only when the library holds no
//! byte it has read but not yet handed over, which it may when one read takes the end of one
//! frame and the start of the next.
//!
//! [`Bounded`] wraps a connection's stream and, while bounding is on, never lets one read cross
//! the end of a client frame: it follows the frames' headers as their bytes pass
//! ([`FrameBounds`], sans-IO) and shortens each read to what is left of the current header part
//! or payload. [`Bounded::at_message_boundary`] then says when every byte read belongs to a
//! whole frame and no fragmented message is half-way, the moment at which the library's state
//! can be dropped without losing anything. Bounding costs a few more reads per frame, so it is
//! on from the upgrade until the login and off after ([`Bounded::stop_bounding`]). The
//! conformance echo endpoint ([`super::echo`]) has no login and stays bounded, so the Autobahn
//! cases run every framing case (fragments, control frames between them, every length form)
//! through [`Bounded`].
//!
//! [`Bounded`] also reads ahead: the library is configured with no read buffer of its own (an
//! idle session keeps none), so it asks for at most 14 bytes at a time, and each such read
//! would be a system call of its own (three or four for a 40-byte acknowledgement). A read
//! that small takes up to [`READ_AHEAD`] bytes from the socket instead (up to the end of the
//! current header part or payload while bounding, so the bound holds) and keeps what the
//! library did not take in a buffer that exists only until the library has taken it all.
//!
//! The upgrade's HTTP head is read before bounding starts: a client that sends frames before
//! the upgrade's answer (RFC 6455 section 4.1 forbids it) is not followed, and
//! [`super::ws::compact`] may then drop what it sent early (its connection then fails its
//! framing checks and is closed).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where the next byte from the client falls in its frames (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameBounds {
    /// Not following the frames (reads are not shortened).
    Off,
    /// At the first header byte (FIN, opcode) of a frame; `in_message` when a fragmented data
    /// message is half-way (the last data frame had FIN clear).
    Start {
        /// A fragmented message is half-way.
        in_message: bool,
    },
    /// At the second header byte (mask bit, 7-bit length).
    Length {
        /// The frame's FIN bit.
        fin: bool,
        /// The frame is a control frame (opcode 8 and up).
        control: bool,
        /// A fragmented message was half-way before this frame.
        in_message: bool,
    },
    /// In the header's extended length and masking key: `left` bytes to go, `len` the
    /// payload length read so far.
    Header {
        /// Header bytes still to come.
        left: u8,
        /// Extended-length bytes among them (the first `ext` of `left`).
        ext: u8,
        /// The payload length (complete once `ext` is 0).
        len: u64,
        /// The message is half-way once this frame is done.
        in_message: bool,
    },
    /// In the payload: `left` bytes to go.
    Payload {
        /// Payload bytes still to come.
        left: u64,
        /// The message is half-way once this frame is done.
        in_message: bool,
    },
}

impl FrameBounds {
    /// Following frames from the first byte of one.
    pub fn start() -> FrameBounds {
        FrameBounds::Start { in_message: false }
    }

    /// Most bytes the next read may take without crossing the current frame's end (the
    /// header's first two bytes say how long the rest of it is); `None` when off.
    pub fn allowed(&self) -> Option<u64> {
        match *self {
            FrameBounds::Off => None,
            // The first two bytes are always the header's.
            FrameBounds::Start { .. } => Some(2),
            FrameBounds::Length { .. } => Some(1),
            FrameBounds::Header { left, .. } => Some(u64::from(left)),
            FrameBounds::Payload { left, .. } => Some(left),
        }
    }

    /// Whether every byte seen belongs to a whole frame and no fragmented message is half-way.
    pub fn at_message_boundary(&self) -> bool {
        matches!(self, FrameBounds::Start { in_message: false })
    }

    /// Follows `bytes`, read from the client in order.
    pub fn follow(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            *self = match *self {
                FrameBounds::Off => return,
                FrameBounds::Start { in_message } => FrameBounds::Length {
                    fin: b & 0x80 != 0,
                    control: b & 0x08 != 0,
                    in_message,
                },
                FrameBounds::Length {
                    fin,
                    control,
                    in_message,
                } => {
                    // A control frame may come in the middle of a fragmented message and
                    // leaves it half-way; a data frame's FIN says whether it ends the message.
                    let in_message = if control { in_message } else { !fin };
                    let mask = if b & 0x80 != 0 { 4 } else { 0 };
                    let (ext, len) = match b & 0x7f {
                        126 => (2, 0),
                        127 => (8, 0),
                        n => (0, u64::from(n)),
                    };
                    FrameBounds::Header {
                        left: ext + mask,
                        ext,
                        len,
                        in_message,
                    }
                    .settled()
                }
                FrameBounds::Header {
                    left,
                    ext,
                    len,
                    in_message,
                } => {
                    let len = if ext > 0 {
                        len << 8 | u64::from(b)
                    } else {
                        len
                    };
                    FrameBounds::Header {
                        left: left - 1,
                        ext: ext.saturating_sub(1),
                        len,
                        in_message,
                    }
                    .settled()
                }
                FrameBounds::Payload { left, in_message } => {
                    // The rest of this payload in one step.
                    let take = (bytes.len() as u64).min(left);
                    bytes = &bytes[take as usize..];
                    *self = FrameBounds::Payload {
                        left: left - take,
                        in_message,
                    }
                    .settled();
                    continue;
                }
            };
            bytes = rest;
        }
    }

    /// The state once a header or payload with nothing left is done.
    fn settled(self) -> FrameBounds {
        match self {
            FrameBounds::Header {
                left: 0,
                len,
                in_message,
                ..
            } => FrameBounds::Payload {
                left: len,
                in_message,
            }
            .settled(),
            FrameBounds::Payload {
                left: 0,
                in_message,
            } => FrameBounds::Start { in_message },
            other => other,
        }
    }
}

/// Most bytes one read takes from the socket for the library's small reads (module docs).
pub const READ_AHEAD: usize = 4096;

/// A stream whose reads stop at client frame boundaries while bounding is on, and that reads
/// ahead of the library's small reads (module docs).
#[derive(Debug)]
pub struct Bounded<S> {
    io: S,
    bounds: FrameBounds,
    /// Bytes read from the socket and not yet handed to the library; `None` (one null
    /// pointer) while there are none, as in an idle session.
    ahead: Option<Box<Ahead>>,
}

/// Bytes read ahead: `bytes[taken..]` are still to be handed over.
#[derive(Debug)]
struct Ahead {
    bytes: Box<[u8]>,
    taken: usize,
}

impl<S> Bounded<S> {
    /// `io`, not bounded yet (the upgrade's HTTP head is read first).
    pub fn new(io: S) -> Bounded<S> {
        Bounded {
            io,
            bounds: FrameBounds::Off,
            ahead: None,
        }
    }

    /// Starts bounding reads, from the first byte of a frame.
    pub fn start_bounding(&mut self) {
        self.bounds = FrameBounds::start();
    }

    /// Stops bounding reads.
    pub fn stop_bounding(&mut self) {
        self.bounds = FrameBounds::Off;
    }

    /// Whether bounding is on and every byte read belongs to a whole frame, with no fragmented
    /// message half-way.
    pub fn at_message_boundary(&self) -> bool {
        self.bounds.at_message_boundary() && self.ahead.is_none()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if buf.remaining() == 0 {
            // Nothing to read into: no read of the socket (a read ahead would be kept and the
            // caller could take the empty answer for the end of the stream).
            return Poll::Ready(Ok(()));
        }
        let start = buf.filled().len();
        if let Some(ahead) = me.ahead.as_mut() {
            // Bytes read earlier: never past a bound, since they were read within one.
            let n = (ahead.bytes.len() - ahead.taken).min(buf.remaining());
            buf.put_slice(&ahead.bytes[ahead.taken..ahead.taken + n]);
            ahead.taken += n;
            if ahead.taken == ahead.bytes.len() {
                me.ahead = None;
            }
        } else {
            // What this read may take from the socket: up to the bound while bounding.
            let limit = me
                .bounds
                .allowed()
                .map_or(usize::MAX, |a| usize::try_from(a).unwrap_or(usize::MAX));
            if buf.remaining() >= limit.min(READ_AHEAD) {
                let limit = limit.min(buf.remaining());
                let n = {
                    let mut part = ReadBuf::new(buf.initialize_unfilled_to(limit));
                    match Pin::new(&mut me.io).poll_read(cx, &mut part) {
                        Poll::Ready(Ok(())) => part.filled().len(),
                        other => return other,
                    }
                };
                buf.advance(n);
            } else {
                let mut stack = [MaybeUninit::<u8>::uninit(); READ_AHEAD];
                let want = limit.min(READ_AHEAD);
                let mut part = ReadBuf::uninit(&mut stack[..want]);
                match Pin::new(&mut me.io).poll_read(cx, &mut part) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
                let read = part.filled();
                let n = read.len().min(buf.remaining());
                buf.put_slice(&read[..n]);
                if n < read.len() {
                    me.ahead = Some(Box::new(Ahead {
                        bytes: read[n..].into(),
                        taken: 0,
                    }));
                }
            }
        }
        me.bounds.follow(&buf.filled()[start..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame: FIN as given, `opcode`, `payload`.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `bytes` as reads of at most what `allowed` says, checking that no read crosses
    /// a frame's end; returns the state after each whole frame of `frames`.
    fn follow_all(frames: &[Vec<u8>]) -> Vec<FrameBounds> {
        let mut b = FrameBounds::start();
        let mut after = Vec::new();
        for f in frames {
            let mut rest = &f[..];
            while !rest.is_empty() {
                let n = (b.allowed().unwrap() as usize).min(rest.len()).min(7);
                assert!(n > 0, "a read is always allowed a byte");
                b.follow(&rest[..n]);
                rest = &rest[n..];
                if !rest.is_empty() {
                    assert!(!b.at_message_boundary(), "mid-frame is no boundary");
                }
            }
            assert!(
                matches!(b, FrameBounds::Start { .. }),
                "a frame's last byte ends it: {b:?}"
            );
            after.push(b);
        }
        after
    }

    #[test]
    fn reads_stop_at_each_frame_end_for_every_length_form() {
        let frames = [
            frame(true, 2, &[7; 5]),
            frame(true, 2, &[]),
            frame(true, 2, &[7; 300]),
            frame(true, 2, &[7; 70_000]),
        ];
        for b in follow_all(&frames) {
            assert!(b.at_message_boundary());
        }
    }

    #[test]
    fn a_fragmented_message_is_no_boundary_until_its_last_frame_even_across_a_ping() {
        let frames = [
            frame(false, 2, &[1; 10]),
            frame(true, 9, b"ping"),
            frame(false, 0, &[1; 10]),
            frame(true, 0, &[1; 3]),
        ];
        let boundary: Vec<bool> = follow_all(&frames)
            .iter()
            .map(FrameBounds::at_message_boundary)
            .collect();
        assert_eq!(boundary, [false, false, false, true]);
    }

    #[test]
    fn one_read_never_reaches_into_the_next_frame() {
        let mut bytes = frame(true, 2, &[9; 20]);
        bytes.extend(frame(true, 2, &[8; 4]));
        let mut b = FrameBounds::start();
        let mut read = 0;
        // Each read takes all it is allowed, as a read of a full socket would.
        while read < 26 {
            let n = b.allowed().unwrap() as usize;
            b.follow(&bytes[read..read + n]);
            read += n;
        }
        assert_eq!(read, 26, "the reads end exactly at the first frame's end");
        assert!(b.at_message_boundary());
    }

    /// A socket holding `bytes`, handing out at most what each read asks for and counting
    /// the reads (system calls, on a real socket).
    struct Socket {
        bytes: Vec<u8>,
        at: usize,
        reads: usize,
    }

    impl AsyncRead for Socket {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut TaskContext<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let me = self.get_mut();
            me.reads += 1;
            let n = (me.bytes.len() - me.at).min(buf.remaining());
            buf.put_slice(&me.bytes[me.at..me.at + n]);
            me.at += n;
            Poll::Ready(Ok(()))
        }
    }

    /// Reads everything through `b` in reads of at most 14 bytes (what the WebSocket library
    /// asks for with no read buffer of its own); the bytes, in order.
    async fn read_in_small_reads(b: &mut Bounded<Socket>, total: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        while got.len() < total {
            let mut chunk = [0u8; 14];
            let n = b.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the socket still holds bytes");
            got.extend_from_slice(&chunk[..n]);
        }
        got
    }

    #[tokio::test]
    async fn small_reads_take_the_socket_in_few_reads_and_lose_no_byte() {
        let mut bytes = Vec::new();
        for i in 0..10u8 {
            bytes.extend(frame(true, 2, &[i; 40]));
        }
        let total = bytes.len();
        let socket = Socket {
            bytes: bytes.clone(),
            at: 0,
            reads: 0,
        };
        let mut b = Bounded::new(socket);
        assert_eq!(read_in_small_reads(&mut b, total).await, bytes);
        assert_eq!(
            b.io.reads, 1,
            "{total} bytes in 14-byte reads: one read of the socket"
        );
        assert!(b.ahead.is_none(), "nothing is kept once handed over");
    }

    #[tokio::test]
    async fn reading_ahead_while_bounding_never_crosses_a_frame_end() {
        let first = frame(true, 2, &[7; 40]);
        let mut bytes = first.clone();
        bytes.extend(frame(true, 2, &[8; 40]));
        let socket = Socket {
            bytes: bytes.clone(),
            at: 0,
            reads: 0,
        };
        let mut b = Bounded::new(socket);
        b.start_bounding();
        assert_eq!(read_in_small_reads(&mut b, first.len()).await, first);
        assert_eq!(
            b.io.at,
            first.len(),
            "no byte of the next frame left the socket"
        );
        assert!(b.at_message_boundary());
        // The header's two parts, then the payload: three reads, not one per 14 bytes.
        assert_eq!(b.io.reads, 3);
    }

    #[tokio::test]
    async fn a_read_into_no_room_leaves_the_socket_alone() {
        use tokio::io::AsyncReadExt;
        let socket = Socket {
            bytes: frame(true, 2, b"x"),
            at: 0,
            reads: 0,
        };
        let mut b = Bounded::new(socket);
        assert_eq!(b.read(&mut []).await.unwrap(), 0);
        assert_eq!((b.io.reads, b.io.at), (0, 0));
        assert!(b.ahead.is_none());
    }

    #[test]
    fn off_never_shortens_and_is_no_boundary() {
        let mut b = FrameBounds::Off;
        b.follow(&frame(true, 2, b"x"));
        assert_eq!(b.allowed(), None);
        assert!(!b.at_message_boundary());
    }
}
