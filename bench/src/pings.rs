//! The UDP frame rate of `cargo xtask bench`'s `udp-frames` scenario: how many request/answer
//! exchanges a server makes per core-second of its CPU, ours against the machine's own limit.
//!
//! * `bench-load pings --kind device-udp`: `--count` simulated devices (`broker load`'s, through
//!   [`ours`]) log in over UDP and each keeps `--in-flight` Pings unanswered; every Pong is an
//!   authenticated DATA packet in and one out of the broker (opened, checked against the replay
//!   window, answered, sealed).
//! * `bench-load pings --kind raw-udp`: `--count` plain UDP sockets each keep `--in-flight`
//!   datagrams of a sealed Ping's size unanswered against `bench-load udp-echo`.
//! * `bench-load udp-echo`: returns every datagram to its sender on one thread with the broker's
//!   own batched I/O (`broker::comet::udp::batch`: `recvmmsg`/`sendmmsg` of up to 32, answers
//!   to one sender gathered into segmented messages, the same socket buffers), and nothing else: moving the datagrams with no protocol work at all, the
//!   figure the broker's is a fraction of.
//!
//! `pings` prints one status line once every connection attempt finished (the window starts),
//! `{"up":..,"failed":..,"answers":..}`, and one after `--seconds`, `{"answers":..,"secs":..}`
//! (answers counted since the start, and the window's length), then holds everything until its
//! standard input closes. The harness reads the server's CPU time at each line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use broker::comet::udp::UdpConfig;
use broker::comet::udp::batch::{RecvBatch, SendBatch, apply_buffers};
use broker::load::device::PING_LOSS_MS;
use clap::{Args, ValueEnum};
use shared_protocol::frame::{Body, Frame};
use shared_protocol::limits::{DATA_OVERHEAD, MAX_PACKET};
use shared_protocol::reliability::Ack;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::ours;
use crate::tally::Tally;

/// Who answers the flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Our broker: logged-in devices send Pings, it answers Pongs.
    DeviceUdp,
    /// `bench-load udp-echo`: plain datagrams of a sealed Ping's size, returned as they are.
    RawUdp,
}

/// Arguments of `bench-load pings`.
#[derive(Args, Debug)]
pub struct PingsArgs {
    /// What to flood.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Devices (or sockets).
    #[arg(long, value_name = "N")]
    count: u32,
    /// Id of the first device.
    #[arg(long, default_value_t = 1, value_name = "ID")]
    first_id: u32,
    /// The server's UDP address.
    #[arg(long, value_name = "ADDR")]
    addr: SocketAddr,
    /// Logins (or sockets) started per second.
    #[arg(long, default_value_t = 500, value_name = "PER_SEC")]
    rate: u32,
    /// Requests each device (or socket) keeps unanswered.
    #[arg(long, default_value_t = 8, value_name = "N")]
    in_flight: u32,
    /// Length of the measured window once everyone is up.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    seconds: u64,
    /// Fleet master key (64 hex digits) for `device-udp`.
    #[arg(long, value_name = "HEX")]
    master_key: Option<String>,
    /// Give up one login after this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    timeout: u64,
}

/// Arguments of `bench-load udp-echo`.
#[derive(Args, Debug)]
pub struct EchoArgs {
    /// Where to listen.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
}

/// The length of a device's sealed Ping (a DATA packet: header, the frame, the tag).
pub fn sealed_ping_len() -> usize {
    let mut buf = [0u8; MAX_PACKET];
    let frame = Frame::unreliable(Ack { next: 1, mask: 0 }, Body::Ping);
    let len = frame.encode_from_device(&mut buf).map_or(0, |f| f.len());
    len + DATA_OVERHEAD
}

/// A count read from the running clients.
type Counter = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Runs `bench-load pings`; an error only for bad arguments.
pub async fn run(args: PingsArgs) -> Result<(), String> {
    if args.count == 0 || args.rate == 0 || args.in_flight == 0 || args.seconds == 0 {
        return Err("--count, --rate, --in-flight and --seconds must be at least 1".into());
    }
    let tally = Arc::new(Tally::default());
    let timeout = Duration::from_secs(args.timeout);
    let start = Instant::now();
    let ramp = Duration::from_secs_f64(f64::from(args.count) / f64::from(args.rate));
    let at = move |i: u32| start + ramp.mul_f64(f64::from(i) / f64::from(args.count));
    // Devices count themselves up in `broker load`'s live counters, sockets in the tally.
    let (answers, logged_in): (Counter, Counter) = match args.kind {
        Kind::DeviceUdp => {
            let ids = args.first_id..args.first_id + args.count;
            let devices = ours::spawn_pinging_devices(
                args.addr,
                args.master_key.as_deref(),
                ids,
                timeout,
                at,
                &tally,
                args.in_flight as usize,
            )?;
            let devices = Arc::new(devices);
            let d = devices.clone();
            (
                Arc::new(move || d.pongs()),
                Arc::new(move || devices.logged_in()),
            )
        }
        Kind::RawUdp => {
            let counter = Arc::new(AtomicU64::new(0));
            for i in 0..args.count {
                let (counter, tally) = (counter.clone(), tally.clone());
                let (addr, in_flight, at) = (args.addr, args.in_flight, at(i));
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    if let Err(e) = raw_socket(addr, in_flight, &counter, &tally).await {
                        tally.lost(&e);
                    }
                });
            }
            (
                Arc::new(move || counter.load(Ordering::Relaxed)),
                Arc::new(|| 0),
            )
        }
    };
    let deadline = start + ramp + timeout + Duration::from_secs(5);
    while tally.finished() + logged_in() < u64::from(args.count) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tally.add_up(logged_in());
    let mut status = tally.json();
    status["answers"] = answers().into();
    println!("{status}");
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    println!(
        "{}",
        serde_json::json!({ "answers": answers(), "secs": window.elapsed().as_secs_f64() })
    );
    crate::fanout::stdin_closed().await;
    Ok(())
}

/// One plain socket keeping `in_flight` datagrams unanswered; after a silence of
/// [`PING_LOSS_MS`] it takes them as lost and sends as many again, as a device does.
async fn raw_socket(
    addr: SocketAddr,
    in_flight: u32,
    answers: &AtomicU64,
    tally: &Tally,
) -> Result<(), String> {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("socket: {}", e.kind()))?;
    socket
        .connect(addr)
        .await
        .map_err(|e| format!("socket: {}", e.kind()))?;
    tally.up();
    let request = vec![0x5a; sealed_ping_len()];
    let mut buf = [0u8; MAX_PACKET];
    loop {
        for _ in 0..in_flight {
            socket
                .send(&request)
                .await
                .map_err(|e| format!("socket: {}", e.kind()))?;
        }
        let mut out = in_flight;
        while out > 0 {
            let silence = Duration::from_millis(PING_LOSS_MS);
            match tokio::time::timeout(silence, socket.recv(&mut buf)).await {
                Ok(Ok(_)) => {
                    answers.fetch_add(1, Ordering::Relaxed);
                    socket
                        .send(&request)
                        .await
                        .map_err(|e| format!("socket: {}", e.kind()))?;
                }
                Ok(Err(e)) => return Err(format!("socket: {}", e.kind())),
                Err(_) => out = 0,
            }
        }
    }
}

/// Runs `bench-load udp-echo` until the process is stopped: every datagram back to its sender.
pub async fn echo(args: EchoArgs) -> Result<(), String> {
    let socket = UdpSocket::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let udp = UdpConfig::default();
    apply_buffers(&socket, udp.receive_buffer_bytes, udp.send_buffer_bytes)
        .map_err(|e| format!("socket buffers: {e}"))?;
    let mut received = RecvBatch::new(MAX_PACKET);
    let mut replies = SendBatch::default();
    loop {
        socket
            .readable()
            .await
            .map_err(|e| format!("socket: {e}"))?;
        // One read per wake-up, as the broker's receive task does.
        match received.recv(&socket) {
            Ok(_) => {
                for (datagram, from) in received.datagrams() {
                    replies.push(datagram, from);
                }
                replies.flush(&socket);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("socket: {e}")),
        }
    }
}
