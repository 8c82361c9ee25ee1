//! PROXY protocol v2 on the HTTP API listener (`proxy_protocol.listeners = ["http"]`), over
//! real sockets on 127.0.0.x against an in-process broker, with 127.0.0.3 as the trusted
//! balancer:
//!
//! * the balancer's connections are served after a `PROXY` header (the client's address) or a
//!   `LOCAL` one (its health check), and the log lines name the client's address, not the
//!   balancer's;
//! * a balancer connection without a header, with a malformed one, or silent, is closed
//!   unanswered and counted `malformed` / `missing`;
//! * a header from another peer (127.0.0.2) is closed unanswered, counted `untrusted`; the same
//!   peer without a header is served as a direct client.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::comet::proxy::Listener;
use broker::config::{Config, Secret};
use ppp::v2::{Builder, Command, Protocol, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const TOKEN: &str = "test-api-token-0123456789";
const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n";

/// The log lines the broker writes in this process, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    let any = "127.0.0.1:0".parse().unwrap();
    c.listen.http = any;
    c.listen.device_ws = any;
    c.listen.app_ws = any;
    c.listen.udp = any;
    c.storage.data_dir = dir.to_path_buf();
    c.security.api_token = Secret::new(TOKEN);
    c.api.header_read_timeout_ms = 400;
    c.proxy_protocol.listeners = vec![Listener::Http];
    c.proxy_protocol.trusted = vec![BALANCER.to_string()];
    c
}

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

fn header(command: Command, client: &str, to: SocketAddr) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    Builder::with_addresses(Version::Two | command, Protocol::Stream, (client, to))
        .build()
        .unwrap()
}

/// Sends `bytes` from `source` and returns the status line's code, or `None` when the broker
/// closes the connection unanswered (within 5 s).
async fn status_after(source: Ipv4Addr, to: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut tcp = connect_from(source, to).await;
    tcp.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    read.await.expect("an answer or a close within 5 s");
    (buf.len() >= 12).then(|| String::from_utf8_lossy(&buf[9..12]).parse().unwrap())
}

async fn refusals(http: SocketAddr, reason: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("http://{http}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("broker_proxy_refusals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_headers_only_from_its_balancer_and_logs_the_client() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("broker::api=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let dir = tempfile::tempdir().unwrap();
    let running = broker::start(&config(dir.path())).await.unwrap();
    let to = running.http;

    // The balancer: a client's request and its own health check are served.
    let proxied = [
        header(Command::Proxy, "198.51.100.7:40001", to),
        HEALTHZ.to_vec(),
    ]
    .concat();
    assert_eq!(status_after(BALANCER, to, &proxied).await, Some(200));
    let local = [
        header(Command::Local, "198.51.100.7:40002", to),
        HEALTHZ.to_vec(),
    ]
    .concat();
    assert_eq!(status_after(BALANCER, to, &local).await, Some(200));

    // Log lines name the client: one that stalls inside its request header is closed after
    // api.header_read_timeout_ms, logged with the address the balancer named.
    let stalled = [
        header(Command::Proxy, "198.51.100.9:40009", to),
        b"GET /healthz HTTP/1.1\r\n".to_vec(),
    ]
    .concat();
    assert_eq!(status_after(BALANCER, to, &stalled).await, None);
    let line = logs
        .text()
        .lines()
        .find(|l| l.contains("header not received in time"))
        .map(str::to_owned)
        .expect("the header timeout is logged");
    assert!(line.contains("198.51.100.9:40009"), "{line}");
    assert!(!line.contains(&BALANCER.to_string()), "{line}");

    // The balancer must send a valid header, at once.
    assert_eq!(status_after(BALANCER, to, HEALTHZ).await, None, "no header");
    assert_eq!(refusals(to, "malformed").await, 1.0);
    let mut broken = proxied.clone();
    broken[12] = 0x11; // version 1 in a binary header
    assert_eq!(status_after(BALANCER, to, &broken).await, None, "malformed");
    assert_eq!(refusals(to, "malformed").await, 2.0);
    assert_eq!(status_after(BALANCER, to, b"").await, None, "silent");
    assert_eq!(refusals(to, "missing").await, 1.0);

    // Anyone else may not name an address, and is served as a direct client.
    assert_eq!(
        status_after(STRANGER, to, &proxied).await,
        None,
        "untrusted"
    );
    assert_eq!(refusals(to, "untrusted").await, 1.0);
    assert_eq!(status_after(STRANGER, to, HEALTHZ).await, Some(200));

    // Nothing else was refused along the way.
    assert_eq!(refusals(to, "malformed").await, 2.0);
    assert_eq!(refusals(to, "missing").await, 1.0);
    running.stop().await;
}
