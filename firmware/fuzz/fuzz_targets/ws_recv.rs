//! Fuzzes the device's WebSocket receive path: `firmware::net::WsTransport`'s `connect` (the
//! HTTP upgrade answer read with `embedded-websocket`) and `recv` (frame length, buffering,
//! decoding, Ping answered with Pong, Text and Pong skipped, Close), over a scripted TCP stream
//! that hands the server's bytes over in arbitrary splits.
//!
//! The broker (or anything on the path pretending to be it) controls every byte, and the
//! transport keeps its own framing state across reads, so the checks are:
//!
//! * no panic, and no read waiting on a stream that has bytes (every future completes at once);
//! * the split does not matter: the same bytes delivered in the fuzzer's chunks and delivered
//!   all at once give the same results, packet for packet, and the same bytes written back;
//! * a returned packet fits the receive buffer;
//! * with generated well-formed frames after a valid upgrade answer (first byte bits 0 and 1): the
//!   packets returned are exactly the Binary messages sent, in order, up to the first error, and
//!   when no error comes every Binary message that fits a packet was returned. A transport that
//!   loses its framing (reads the next message as part of the previous one) fails here.
//!
//! Input: byte 0 is the mode (bit 0: the target answers the upgrade with a valid `101` first;
//! bit 1: the rest describes frames to generate instead of raw bytes), byte 1 seeds the chunk
//! sizes, the rest is the stream (or the frame descriptions).
#![no_main]

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;

use embassy_net::IpEndpoint;
use embedded_websocket::{WebSocketKey, WebSocketServer};
use firmware::config::{Endpoint, PACKET_BUF};
use firmware::net::{Transport, TransportError, WsStream, WsTransport};
use firmware::rng::{Rng, SplitMix64};
use libfuzzer_sys::fuzz_target;

/// The receive and transmit frame buffers' size (`WS_RX_BUF`, `WS_TX_BUF`: not exported).
const WS_BUF: usize = PACKET_BUF + 512;

/// A TCP stream whose peer sends `tail` (after a valid upgrade answer when `answer` is set),
/// `chunk` decides how many bytes one read returns at most, and which keeps what was written.
struct Script {
    answer: bool,
    tail: Vec<u8>,
    incoming: Option<Vec<u8>>,
    pos: usize,
    chunks: Option<SplitMix64>,
    /// Shared with the caller, which reads it once the transport is gone.
    written: Rc<RefCell<Vec<u8>>>,
}

impl Script {
    fn new(
        answer: bool,
        tail: Vec<u8>,
        chunks: Option<SplitMix64>,
        written: Rc<RefCell<Vec<u8>>>,
    ) -> Self {
        Script {
            answer,
            tail,
            incoming: None,
            pos: 0,
            chunks,
            written,
        }
    }

    /// What the peer sends: built at the first read, once the upgrade request (and its key)
    /// was written.
    fn incoming(&mut self) -> &[u8] {
        if self.incoming.is_none() {
            let mut bytes = Vec::new();
            if self.answer
                && let Some(key) = request_key(&self.written.borrow())
            {
                let mut answer = [0u8; 512];
                let len = WebSocketServer::new_server()
                    .server_accept(&key, None, &mut answer)
                    .expect("the upgrade answer fits");
                bytes.extend_from_slice(&answer[..len]);
            }
            bytes.extend_from_slice(&self.tail);
            self.incoming = Some(bytes);
        }
        self.incoming.as_deref().unwrap_or_default()
    }
}

/// The `Sec-WebSocket-Key` of the upgrade request in `written`.
fn request_key(written: &[u8]) -> Option<WebSocketKey> {
    let text = core::str::from_utf8(written).ok()?;
    let line = text
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))?;
    (line.len() <= 24).then(|| WebSocketKey::from(line))
}

impl WsStream for Script {
    async fn connect(&mut self, _: IpEndpoint) -> Result<(), TransportError> {
        Ok(())
    }
    async fn write(&mut self, bytes: &[u8]) -> Result<usize, TransportError> {
        self.written.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        let pos = self.pos;
        let left = self.incoming().len() - pos;
        let most = match &mut self.chunks {
            Some(rng) => 1 + (rng.next_u32() as usize % 300),
            None => usize::MAX,
        };
        let n = left.min(most).min(buf.len());
        buf[..n].copy_from_slice(&self.incoming()[pos..pos + n]);
        self.pos += n;
        Ok(n)
    }
    fn close(&mut self) {}
    async fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    fn abort(&mut self) {}
}

/// Polls `future` once: the scripted stream never makes it wait.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("waited although the stream had its bytes (or its end)"),
    }
}

/// What one connection produced: the upgrade's outcome, each `recv` up to the first error, and
/// the bytes the device wrote.
#[derive(Debug, PartialEq)]
struct Outcome {
    connect: Result<(), TransportError>,
    received: Vec<Result<Vec<u8>, TransportError>>,
    written: Vec<u8>,
}

fn run(answer: bool, tail: &[u8], chunks: Option<SplitMix64>) -> Outcome {
    let (mut rx, mut tx) = (Box::new([0u8; WS_BUF]), Box::new([0u8; WS_BUF]));
    let written = Rc::new(RefCell::new(Vec::new()));
    let script = Script::new(answer, tail.to_vec(), chunks, written.clone());
    let mut ws = WsTransport::with_stream(script, &mut rx, &mut tx, 7);
    let endpoint = Endpoint::websocket(
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 80)),
        "192.0.2.7",
        "/device",
    );
    let connect = now(ws.connect(&endpoint));
    let mut received = Vec::new();
    if connect.is_ok() {
        // Each call either consumes bytes or ends with an error, so this ends.
        loop {
            let mut buf = [0u8; PACKET_BUF];
            match now(ws.recv(&mut buf)) {
                Ok(n) => {
                    assert!(n <= buf.len());
                    received.push(Ok(buf[..n].to_vec()));
                }
                Err(e) => {
                    received.push(Err(e));
                    break;
                }
            }
        }
        // Closed for good: a later call reads nothing more.
        if received.last() == Some(&Err(TransportError::Closed)) {
            assert_eq!(now(ws.recv(&mut [0u8; 16])), Err(TransportError::Closed));
        }
    }
    drop(ws);
    Outcome {
        connect,
        received,
        written: written.take(),
    }
}

/// One generated server frame (unmasked, FIN set).
struct Generated {
    opcode: u8,
    payload: Vec<u8>,
}

fn generate(input: &[u8]) -> (Vec<u8>, Vec<Generated>) {
    let mut frames = Vec::new();
    let mut bytes = Vec::new();
    for d in input.chunks(3) {
        let [kind, a, b] = [d[0], *d.get(1).unwrap_or(&0), *d.get(2).unwrap_or(&0)];
        let len = usize::from(u16::from_le_bytes([a, b]));
        let (opcode, len) = match kind % 8 {
            0..=2 => (0x2, len % (PACKET_BUF + 64)),
            3 => (0x1, len % 1800),
            4 => (0x9, len % 126),
            5 => (0xA, len % 126),
            6 => (0x2, len % 8),
            _ => (0x8, 2),
        };
        let payload: Vec<u8> = (0..len).map(|i| kind.wrapping_add(i as u8)).collect();
        bytes.push(0x80 | opcode);
        if len < 126 {
            bytes.push(len as u8);
        } else {
            bytes.push(126);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        }
        bytes.extend_from_slice(&payload);
        frames.push(Generated { opcode, payload });
        if opcode == 0x8 {
            break;
        }
    }
    (bytes, frames)
}

fuzz_target!(|data: &[u8]| {
    let [mode, seed, rest @ ..] = data else {
        return;
    };
    let answer = mode & 1 == 1;
    let generated = mode & 2 == 2;
    let (tail, frames) = if generated {
        let (bytes, frames) = generate(rest);
        (bytes, Some(frames))
    } else {
        (rest.to_vec(), None)
    };
    let split = run(answer, &tail, Some(SplitMix64::new(u64::from(*seed) + 1)));
    let whole = run(answer, &tail, None);
    assert_eq!(split, whole, "the same bytes in other splits");

    let (Some(frames), true) = (frames, answer) else {
        return;
    };
    assert_eq!(whole.connect, Ok(()), "a valid upgrade answer refused");
    let packets: Vec<&Vec<u8>> = whole
        .received
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .collect();
    let binaries: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|f| f.opcode == 0x2)
        .map(|f| &f.payload)
        .collect();
    assert!(
        binaries.starts_with(&packets),
        "a packet returned that was not the next Binary message sent"
    );
    if whole.received.last() == Some(&Err(TransportError::Closed)) {
        // The stream ended (or a Close came): every Binary message before it was returned.
        let before_close: Vec<&Vec<u8>> = frames
            .iter()
            .take_while(|f| f.opcode != 0x8)
            .filter(|f| f.opcode == 0x2)
            .map(|f| &f.payload)
            .collect();
        assert_eq!(
            packets, before_close,
            "Binary messages lost without an error"
        );
    }
});
