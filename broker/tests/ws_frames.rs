//! Hostile WebSocket input on the device and app listeners, over real sockets with hand-made
//! frames (so nothing in a client library smooths them over):
//!
//! * a frame declaring a 1 GiB payload, a message fragmented past the size limit and a flood
//!   of 1-byte continuation frames are closed with 1009 once the limit is passed, before the
//!   payload is read or buffered;
//! * 20,000 empty continuation frames add nothing to memory;
//! * `permessage-deflate` offered in the upgrade is not accepted, and a compressed frame
//!   (reserved bit 1) sent anyway is closed with 1002 and counted;
//! * an upgrade request head over 8 KiB is answered 431 and not upgraded;
//!
//! each while a logged-in device is served throughout (its deliveries arrive), and the test
//! process's resident memory grows by less than 16 MiB over the whole run.

mod comet_support;
mod rss_support;

use std::net::SocketAddr;
use std::time::Duration;

use broker::router::Target;
use broker::terminal::{Address, IdProfile};
use bytes::Bytes;
use comet_support::*;
use rss_support::rss_kib;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// Sends an upgrade request with `extra` header lines and returns the socket and the
/// response head.
async fn upgrade(to: SocketAddr, extra: &str) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(to).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, tcp.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    (tcp, String::from_utf8_lossy(&head).into_owned())
}

/// A masked client frame: `first` is the FIN/RSV/opcode byte; `declared` the length put in
/// the header (the payload sent may be shorter).
fn frame(first: u8, payload: &[u8], declared: u64) -> Vec<u8> {
    let mut f = vec![first];
    if declared < 126 {
        f.push(0x80 | declared as u8);
    } else if declared <= u64::from(u16::MAX) {
        f.push(0x80 | 126);
        f.extend_from_slice(&(declared as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&declared.to_be_bytes());
    }
    let mask = [0x11, 0x22, 0x33, 0x44];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

const BINARY: u8 = 0x02;
const CONTINUATION: u8 = 0x00;
const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;

/// Reads server frames until a close frame and returns its code (`None`: closed without one
/// or nothing within [`WAIT`]).
async fn close_code(tcp: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Parse whole unmasked server frames from the front of `buf`.
        while buf.len() >= 2 {
            let (len, at) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() < at + len {
                break;
            }
            if buf[0] & 0x0f == 0x8 {
                return (len >= 2).then(|| u16::from_be_bytes([buf[at], buf[at + 1]]));
            }
            buf.drain(..at + len);
        }
        match tokio::time::timeout(WAIT, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Writes `bytes`, ignoring a reset (the broker may close before reading everything).
async fn write(tcp: &mut TcpStream, bytes: &[u8]) {
    let _ = tcp.write_all(bytes).await;
}

async fn still_served(b: &TestBroker, dev: &mut Device, text: &'static [u8]) {
    b.running
        .router
        .push(
            Target::Terminal(Address::device(601)),
            None,
            Bytes::from_static(text),
            None,
        )
        .await
        .unwrap();
    loop {
        match dev.next_event(WAIT).await {
            Some(Got::Deliver { payload, .. }) if payload == text => return,
            Some(_) => continue,
            None => panic!(
                "the logged-in device missed {:?}",
                String::from_utf8_lossy(text)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_are_closed_with_their_codes_and_others_are_served() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut dev = login(Wire::ws(&b.device_ws()).await, 601, 0).await.unwrap();
    let rss_before = rss_kib();
    for (name, url, limit) in [
        ("device", b.device_ws(), 1200usize),
        ("app", b.app_ws(), 4096usize),
    ] {
        let to = addr(&url);

        // 1. One frame declaring 1 GiB: refused from its header, nothing buffered.
        let (mut tcp, head) = upgrade(to, "").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{name}: {head}");
        write(&mut tcp, &frame(FIN | BINARY, &[0u8; 64], 1 << 30)).await;
        assert_eq!(
            close_code(&mut tcp).await,
            Some(1009),
            "{name}: 1 GiB frame"
        );

        // 2. A message fragmented past the limit (frames of 256 bytes).
        let (mut tcp, _) = upgrade(to, "").await;
        let piece = [7u8; 256];
        write(&mut tcp, &frame(BINARY, &piece, 256)).await;
        for _ in 0..limit / 256 + 1 {
            write(&mut tcp, &frame(CONTINUATION, &piece, 256)).await;
        }
        assert_eq!(close_code(&mut tcp).await, Some(1009), "{name}: fragmented");

        // 3. Thousands of 1-byte continuation frames: 1009 once the limit is passed.
        let (mut tcp, _) = upgrade(to, "").await;
        let mut flood = frame(BINARY, b"x", 1);
        for _ in 0..5_000 {
            flood.extend(frame(CONTINUATION, b"x", 1));
        }
        write(&mut tcp, &flood).await;
        assert_eq!(
            close_code(&mut tcp).await,
            Some(1009),
            "{name}: tiny fragments"
        );

        // 4. 20,000 empty continuation frames, then a compressed frame: nothing grows, and
        //    the reserved bit without a negotiated extension is a protocol error.
        let (mut tcp, head) = upgrade(to, "Sec-WebSocket-Extensions: permessage-deflate\r\n").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{name}: {head}");
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("sec-websocket-extensions"),
            "{name}: compression must not be accepted: {head}"
        );
        let mut empties = frame(BINARY, b"", 0);
        for _ in 0..20_000 {
            empties.extend(frame(CONTINUATION, b"", 0));
        }
        write(&mut tcp, &empties).await;
        write(&mut tcp, &frame(FIN | RSV1 | BINARY, b"compressed?", 11)).await;
        assert_eq!(close_code(&mut tcp).await, Some(1002), "{name}: RSV1 frame");

        // 5. A 9 KiB header: 431, no upgrade.
        let big = format!("X-Padding: {}\r\n", "a".repeat(9 * 1024));
        let (_tcp, head) = upgrade(to, &big).await;
        assert!(head.starts_with("HTTP/1.1 431"), "{name}: {head}");

        still_served(&b, &mut dev, b"between the attacks").await;
    }
    let grown = rss_kib().saturating_sub(rss_before);
    println!("resident memory grew by {grown} KiB over the hostile connections");
    assert!(grown < 16 * 1024, "grew {grown} KiB");
    let m = b.metrics();
    for transport in ["device_ws", "app_ws"] {
        assert!(
            m.contains(&format!(
                "broker_ws_protocol_errors_total{{transport=\"{transport}\"}} 1\n"
            )),
            "{transport}: one protocol error counted\n{m}"
        );
    }
    assert!(b.counted("limit=\"max_device_frame_bytes\""));
    assert!(b.counted("limit=\"max_app_message_bytes\""));
    assert!(b.counted("reason=\"bad_upgrade\""));
    still_served(&b, &mut dev, b"after the attacks").await;
    b.stop().await;
}
