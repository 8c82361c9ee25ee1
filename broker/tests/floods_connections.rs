//! Connection floods from many source addresses against the device WebSocket listener, over
//! real sockets (clients bound to 127.0.1.x, so each address is its own "client"):
//!
//! * `limits.max_connections_per_ip` and `limits.max_connections` hold exactly: every attempt
//!   beyond them is refused and counted under its key, and the connections gauge never passes
//!   the total;
//! * refused connections are answered only while `limits.max_pending_refusals` slots are free
//!   (the rest are closed at once, also counted), so the broker's sockets stay below
//!   `max_connections + max_pending_refusals` however many attempts come: file descriptors are
//!   not exhausted;
//! * devices logged in before the flood (WebSocket and UDP) stay connected and keep receiving.
//!
//! The broker runs in the test process, so its sockets are the process's open descriptors minus
//! the client sockets the test holds.

mod comet_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use broker::router::Target;
use broker::terminal::{Address, IdProfile};
use bytes::Bytes;
use comet_support::*;
use tokio::net::{TcpSocket, TcpStream};

const MAX_CONNECTIONS: u32 = 300;
const PER_IP: u32 = 4;
const PENDING_REFUSALS: u32 = 16;
/// Flooding addresses and connections opened from each.
const ADDRESSES: u32 = 200;
const PER_ADDRESS: u32 = 8;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The value of the series whose line starts with `series`, 0 when absent.
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A TCP connection from `source` (any 127.x.y.z) that never speaks.
async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(to).await
}

fn ws_addr(b: &TestBroker) -> SocketAddr {
    b.device_ws()
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

async fn delivered(b: &TestBroker, dev: &mut Device, id: u32, text: &[u8]) -> bool {
    b.running
        .router
        .push(
            Target::Terminal(Address::device(id)),
            None,
            Bytes::copy_from_slice(text),
            None,
        )
        .await
        .unwrap();
    loop {
        match dev.next_event(Duration::from_secs(5)).await {
            Some(Got::Deliver { payload, .. }) if payload == text => return true,
            Some(_) => continue,
            None => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_many_addresses_hits_both_limits_and_connected_devices_stay() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.limits.max_connections = MAX_CONNECTIONS;
        c.limits.max_connections_per_ip = PER_IP;
        c.limits.max_pending_refusals = PENDING_REFUSALS;
        // Admitted flood connections never log in; keep them for the whole test.
        c.timeouts.handshake_secs = 120;
    })
    .await;
    let addr = ws_addr(&b);
    let mut ws_dev = login(Wire::ws(&b.device_ws()).await, 501, 0).await.unwrap();
    let mut udp_dev = login(Wire::udp(b.udp()).await, 502, 0).await.unwrap();
    let baseline = open_fds();

    // The flood: 200 addresses x 8 silent connections, in waves of 25 addresses (200
    // connections, below the listen backlog: silent clients whose handshake overflowed the
    // accept queue would never reach the broker at all).
    let attempted = f64::from(ADDRESSES * PER_ADDRESS);
    // Both devices hold a connection slot, so the flood gets the rest.
    let admitted = f64::from(MAX_CONNECTIONS - 2);
    let m = b.running.router.metrics();
    let refused = |text: &str| {
        value(
            text,
            "broker_limit_rejections_total{limit=\"max_connections\"}",
        ) + value(
            text,
            "broker_limit_rejections_total{limit=\"max_connections_per_ip\"}",
        )
    };
    let mut clients = Vec::new();
    let mut peak_broker_fds = 0;
    let started = std::time::Instant::now();
    for wave in 0..ADDRESSES / 25 {
        let mut attempts = Vec::new();
        for a in wave * 25..(wave + 1) * 25 {
            let source = Ipv4Addr::new(127, 0, 1, 1 + a as u8);
            for _ in 0..PER_ADDRESS {
                attempts.push(tokio::spawn(connect_from(source, addr)));
            }
        }
        for a in attempts {
            clients.push(a.await.unwrap().unwrap());
        }
        // Wait until the broker has taken this wave in (the refusal count stops moving).
        let (mut last, mut stable) = (-1.0, 0);
        while stable < 3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let broker_fds = open_fds().saturating_sub(baseline + clients.len());
            peak_broker_fds = peak_broker_fds.max(broker_fds);
            let now = refused(&m.render());
            stable = if now == last { stable + 1 } else { 0 };
            last = now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the flood took over a minute"
        );
    }
    // Let every refusal being answered run out (the clients never speak: 1 s each).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = m.render();
    let per_ip = value(
        &text,
        "broker_limit_rejections_total{limit=\"max_connections_per_ip\"}",
    );
    let total = value(
        &text,
        "broker_limit_rejections_total{limit=\"max_connections\"}",
    );
    let unanswered = value(
        &text,
        "broker_limit_rejections_total{limit=\"max_pending_refusals\"}",
    );
    let open = value(&text, "broker_connections{transport=\"device_ws\"}");
    let broker_fds = open_fds().saturating_sub(baseline + clients.len());
    println!(
        "{attempted} attempts: refused per ip {per_ip}, total {total}, unanswered {unanswered}; \
         device_ws open {open}; broker sockets now {broker_fds}, peak {peak_broker_fds}"
    );
    assert_eq!(
        per_ip + total,
        attempted - admitted,
        "every attempt beyond the limits is refused and counted once"
    );
    assert!(per_ip > 0.0, "the per-address limit refused some");
    assert!(total > 0.0, "the total limit refused some");
    assert!(
        unanswered > 0.0,
        "with {PENDING_REFUSALS} refusal slots most refusals go unanswered"
    );
    // The admitted flood connections are held (they may still upgrade), the refused ones
    // are gone.
    assert!(
        broker_fds >= admitted as usize,
        "the broker holds the {admitted} admitted connections ({broker_fds} sockets)"
    );
    assert!(open <= 1.0, "no flood connection logged in: {open}");
    let bound = (MAX_CONNECTIONS + PENDING_REFUSALS) as usize + 16;
    assert!(broker_fds <= bound, "{broker_fds} sockets after the flood");
    assert!(
        peak_broker_fds <= bound,
        "the broker held {peak_broker_fds} sockets, bound {bound}"
    );

    // The devices logged in before the flood are still there and served.
    assert!(delivered(&b, &mut ws_dev, 501, b"after the flood (ws)").await);
    assert!(delivered(&b, &mut udp_dev, 502, b"after the flood (udp)").await);

    // A refusal with a free slot is answered: SERVER_BUSY while the total is reached.
    let tcp = connect_from(Ipv4Addr::new(127, 0, 2, 1), addr)
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        b.device_ws(),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    let mut wire = Wire::Ws(Box::new(ws));
    assert_eq!(
        wire.close_code(Duration::from_secs(5)).await,
        Some(4000 + shared_protocol::codes::Code::SERVER_BUSY.0),
    );

    // The flood ends: its slots come back and a flooding address can log in again.
    drop(clients);
    let started = std::time::Instant::now();
    while value(&m.render(), "broker_connections{transport=\"device_ws\"}") > 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "flood connections still counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tcp = connect_from(Ipv4Addr::new(127, 0, 1, 1), addr)
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        b.device_ws(),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    assert!(login(Wire::Ws(Box::new(ws)), 503, 0).await.is_ok());
    b.stop().await;
}
