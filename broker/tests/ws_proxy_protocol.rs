//! PROXY protocol v2 on the device and app WebSocket listeners, over real sockets:
//!
//! * a trusted balancer (127.0.0.1) forwards clients from 198.51.100.7 and 198.51.100.8: each
//!   logs in, and `limits.max_connections_per_ip` is applied to the client address in the
//!   header, not to the balancer's (a third connection from .7 is refused while .8 is
//!   admitted, all through the same balancer address);
//! * a header from an untrusted peer (127.0.0.2) closes the connection, counted `untrusted`;
//!   the same peer without a header is served as a direct client;
//! * a trusted peer that sends a malformed header or none is closed, counted.

use crate::comet_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use broker::comet::proxy::Listener;
use broker::terminal::{Address, IdProfile};
use comet_support::*;
use ppp::v2::{Builder, Command, Protocol, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

fn header(client: &str, to: SocketAddr) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (client, to),
    )
    .build()
    .unwrap()
}

/// A connection from `source` that first sends `prefix`, then upgrades to a WebSocket.
async fn ws_through(source: Ipv4Addr, url: &str, prefix: &[u8]) -> Option<ClientWs> {
    let mut tcp = connect_from(source, addr(url)).await;
    tcp.write_all(prefix).await.unwrap();
    tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
        .await
        .ok()
        .map(|(ws, _)| ws)
}

/// Whether the broker closed `tcp` without upgrading (EOF or reset within 5 s).
async fn closed_unanswered(mut tcp: TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn refusals(b: &TestBroker, reason: &str) -> f64 {
    let series = format!("broker_proxy_refusals_total{{reason=\"{reason}\"}} ");
    b.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_apply_to_the_address_a_trusted_balancer_names_and_strangers_cannot_name_one() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.proxy_protocol.listeners = vec![Listener::DeviceWs, Listener::AppWs];
        c.proxy_protocol.trusted = vec!["127.0.0.1".to_owned()];
        c.limits.max_connections_per_ip = 2;
    })
    .await;
    let dev_url = b.device_ws();
    let to = addr(&dev_url);

    // Two devices from 198.51.100.7 and one from .8, all through the balancer.
    let mut held = Vec::new();
    for (id, client) in [(701, "198.51.100.7:40001"), (702, "198.51.100.7:40002")] {
        let ws = ws_through(BALANCER, &dev_url, &header(client, to))
            .await
            .unwrap();
        held.push(
            login(Wire::Ws(Box::new(ws)), id, 0)
                .await
                .expect("logged in"),
        );
    }
    let ws = ws_through(BALANCER, &dev_url, &header("198.51.100.7:40003", to))
        .await
        .unwrap();
    let mut third = Wire::Ws(Box::new(ws));
    assert_eq!(
        third.close_code(Duration::from_secs(5)).await,
        Some(4000 + shared_protocol::codes::Code::RATE_LIMITED.0),
        "a third connection from the same client address is over the per-address limit"
    );
    let ws = ws_through(BALANCER, &dev_url, &header("198.51.100.8:40001", to))
        .await
        .unwrap();
    held.push(
        login(Wire::Ws(Box::new(ws)), 703, 0)
            .await
            .expect("another client address"),
    );
    assert!(b.counted("limit=\"max_connections_per_ip\""));

    // The app listener reads the header too.
    let app_url = b.app_ws();
    let ws = ws_through(
        BALANCER,
        &app_url,
        &header("198.51.100.9:40001", addr(&app_url)),
    )
    .await
    .unwrap();
    let mut app = App { ws };
    app.send(serde_json::json!({
        "type": "auth",
        "token": app_token(Address::phone(71), 3600),
        "since_id": 0
    }))
    .await;
    assert_eq!(
        app.recv(Duration::from_secs(5)).await.unwrap()["type"],
        "welcome"
    );

    // A stranger cannot name an address; without a header it is a direct client.
    let mut tcp = connect_from(STRANGER, to).await;
    tcp.write_all(&header("198.51.100.10:1", to)).await.unwrap();
    assert!(closed_unanswered(tcp).await, "untrusted header");
    assert_eq!(refusals(&b, "untrusted"), 1.0);
    let ws = ws_through(STRANGER, &dev_url, b"")
        .await
        .expect("direct client");
    held.push(
        login(Wire::Ws(Box::new(ws)), 704, 0)
            .await
            .expect("direct login"),
    );

    // The balancer must send a valid header.
    let mut tcp = connect_from(BALANCER, to).await;
    let mut broken = header("198.51.100.7:1", to);
    broken[12] = 0x11; // version 1 in a binary header
    tcp.write_all(&broken).await.unwrap();
    assert!(closed_unanswered(tcp).await, "malformed header");
    assert_eq!(refusals(&b, "malformed"), 1.0);
    // Without a header its request line is read as one, and is malformed.
    assert!(
        ws_through(BALANCER, &dev_url, b"").await.is_none(),
        "a trusted peer without a header is not upgraded"
    );
    assert_eq!(refusals(&b, "malformed"), 2.0);

    // The logged-in devices are still there.
    for d in &mut held {
        d.send(shared_protocol::frame::Body::Ping).await;
        assert_eq!(
            d.next(Duration::from_secs(5)).await.map(|(_, _, got)| got),
            Some(Got::Pong),
            "still connected"
        );
    }
    b.stop().await;
}
