//! PROXY protocol version 2 on the broker's TCP listeners (HTTP API, device and app
//! WebSockets), for brokers behind a TCP load balancer: the balancer prefixes each connection
//! with a binary header naming the client's address, and the per-address connection limits,
//! the login rate and the log lines then use that address instead of the balancer's.
//!
//! Off unless `[proxy_protocol] listeners` names the listener ([`Listener`]). Then, per
//! connection accepted on that listener (in `ws::accept` and the HTTP API's accept loop):
//!
//! * from a peer in `proxy_protocol.trusted`: the header must come first, within 1 s
//!   ([`Proxy::read_client`], before the connection limits, which then use its address); a
//!   `PROXY` command with an IPv4 or IPv6 source gives the client's
//!   address, a `LOCAL` command (the balancer's own health check) or another address family
//!   keeps the peer's. A missing, malformed or over-long header closes the connection;
//! * from any other peer: served as a direct client under its own address, but a connection
//!   that starts like a PROXY v2 header ([`Proxy::starts_with_header`]) is closed, so nobody
//!   can choose the address they are counted under.
//!
//! [`Proxy::client_address`] is both steps in one call, for a listener that has nothing to do
//! between them (the HTTP API); the WebSocket listeners count the connection against the
//! limits between the two.
//!
//! Every refusal is counted in `broker_proxy_refusals_total{reason}` (`untrusted`,
//! `malformed`, `missing`) and logged at debug level with the peer. Parsing is done by the
//! `ppp` crate; this module only reads the bytes the header announces.
//!
//! For UDP, where a balancer prefixes every datagram with its own header, [`split_datagram`]
//! is the same parse on one datagram; the UDP listener does not take headers yet (its replies
//! would have to go to the balancer while limits use the client, which its sessions do not
//! keep apart), so `udp` is not a [`Listener`].

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A listener that can take PROXY protocol headers (the names in `proxy_protocol.listeners`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Listener {
    /// The HTTP API (`listen.http`).
    Http,
    /// The device WebSocket (`listen.device_ws`).
    DeviceWs,
    /// The app WebSocket (`listen.app_ws`).
    AppWs,
}

/// `[proxy_protocol]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// The listeners that expect a PROXY protocol v2 header from the trusted peers (empty:
    /// off everywhere).
    pub listeners: Vec<Listener>,
    /// IP addresses of the load balancers whose headers are believed (required when any
    /// listener is named).
    pub trusted: Vec<String>,
}

impl ProxyConfig {
    /// The runtime form, `None` when off; `Err` names the offending key.
    pub fn load(&self) -> Result<Option<Proxy>, (String, String)> {
        let mut trusted = Vec::with_capacity(self.trusted.len());
        for (i, t) in self.trusted.iter().enumerate() {
            match t.trim().parse::<IpAddr>() {
                Ok(ip) => trusted.push(ip.to_canonical()),
                Err(_) => {
                    return Err((
                        format!("proxy_protocol.trusted[{i}]"),
                        "must be an IP address".to_owned(),
                    ));
                }
            }
        }
        if self.listeners.is_empty() {
            return Ok(None);
        }
        if trusted.is_empty() {
            return Err((
                "proxy_protocol.trusted".to_owned(),
                "must list at least one address when proxy_protocol.listeners names a listener"
                    .to_owned(),
            ));
        }
        Ok(Some(Proxy {
            trusted,
            listeners: self.listeners.clone(),
        }))
    }
}

/// The 12-byte signature every PROXY protocol v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest header accepted (fixed part plus addresses and TLVs); a longer one is malformed.
pub const MAX_HEADER: usize = 16 + 512;

/// Why a connection was refused (the `reason` label of `broker_proxy_refusals_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A header from a peer not in `proxy_protocol.trusted`.
    Untrusted,
    /// A trusted peer's header that does not parse or is longer than [`MAX_HEADER`].
    Malformed,
    /// A trusted peer sent no header before the deadline or closed first.
    Missing,
}

impl Refusal {
    /// Every reason, for registering the counter at 0.
    pub const ALL: [Refusal; 3] = [Refusal::Untrusted, Refusal::Malformed, Refusal::Missing];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Untrusted => "untrusted",
            Refusal::Malformed => "malformed",
            Refusal::Missing => "missing",
        }
    }
}

/// PROXY protocol handling with its trusted peers (from [`ProxyConfig::load`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Proxy {
    trusted: Vec<IpAddr>,
    listeners: Vec<Listener>,
}

impl Proxy {
    /// This configuration if `listener` takes headers, else `None` (a direct listener).
    pub fn on(&self, listener: Listener) -> Option<&Proxy> {
        self.listeners.contains(&listener).then_some(self)
    }

    /// Whether `peer` is a trusted balancer.
    pub fn trusts(&self, peer: SocketAddr) -> bool {
        self.trusted.contains(&peer.ip().to_canonical())
    }

    /// The client address the header of a trusted peer names, reading exactly the header
    /// (call only when [`Proxy::trusts`] the peer). Waits at most until `deadline`.
    pub async fn read_client(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> Result<SocketAddr, Refusal> {
        let read = async {
            let mut header = vec![0u8; 16];
            stream.read_exact(&mut header).await?;
            let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
            if header[..12] != SIGNATURE || 16 + len > MAX_HEADER {
                return Ok::<_, std::io::Error>(Err(Refusal::Malformed));
            }
            header.resize(16 + len, 0);
            stream.read_exact(&mut header[16..]).await?;
            Ok(client_of(&header, peer))
        };
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(Refusal::Missing),
        }
    }

    /// Whether an untrusted peer's connection starts like a PROXY v2 header (its first byte
    /// is the signature's `\r`, which no HTTP request line starts with). Looks without
    /// consuming; waits for the first byte at most until `deadline` (then `false`: the
    /// upgrade's own deadline handles a silent client).
    pub async fn starts_with_header(stream: &TcpStream, deadline: tokio::time::Instant) -> bool {
        let mut first = [0u8; 1];
        matches!(
            tokio::time::timeout_at(deadline, stream.peek(&mut first)).await,
            Ok(Ok(1)) if first[0] == SIGNATURE[0]
        )
    }
}

impl Proxy {
    /// The client's address on a connection just accepted from `peer`: the one a trusted
    /// peer's header names ([`Proxy::read_client`]), or `peer` itself for anyone else, whose
    /// connection must not start like a header ([`Proxy::starts_with_header`], else
    /// `Untrusted`). Waits at most until `deadline`.
    pub async fn client_address(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> Result<SocketAddr, Refusal> {
        if self.trusts(peer) {
            self.read_client(stream, peer, deadline).await
        } else if Proxy::starts_with_header(stream, deadline).await {
            Err(Refusal::Untrusted)
        } else {
            Ok(peer)
        }
    }
}

/// The client address a complete header names (sans-IO: `header` is exactly the header).
pub fn client_of(header: &[u8], peer: SocketAddr) -> Result<SocketAddr, Refusal> {
    use ppp::v2::{Addresses, Command, Header};
    let parsed = Header::try_from(header).map_err(|_| Refusal::Malformed)?;
    if parsed.command == Command::Local {
        return Ok(peer);
    }
    Ok(match parsed.addresses {
        Addresses::IPv4(a) => SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
        Addresses::IPv6(a) => SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
        // The specification says to keep the connection's own address for these.
        Addresses::Unspecified | Addresses::Unix(_) => peer,
    })
}

/// A datagram from a trusted balancer split into the client address its PROXY v2 header names
/// and the payload after the header (sans-IO, for a UDP receive path, where every datagram
/// carries its own header). `Missing` when the datagram does not start with the signature,
/// `Malformed` when the header is cut short, longer than [`MAX_HEADER`] or does not parse.
pub fn split_datagram(datagram: &[u8], peer: SocketAddr) -> Result<(SocketAddr, &[u8]), Refusal> {
    if datagram.len() < 16 || datagram[..12] != SIGNATURE {
        return Err(Refusal::Missing);
    }
    let len = 16 + usize::from(u16::from_be_bytes([datagram[14], datagram[15]]));
    if len > MAX_HEADER || len > datagram.len() {
        return Err(Refusal::Malformed);
    }
    let (header, payload) = datagram.split_at(len);
    Ok((client_of(header, peer)?, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, Protocol, Version};

    fn header(command: Command, src: &str, dst: &str) -> Vec<u8> {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = dst.parse().unwrap();
        Builder::with_addresses(Version::Two | command, Protocol::Stream, (src, dst))
            .build()
            .unwrap()
    }

    #[test]
    fn the_source_address_of_a_proxy_header_is_the_client() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let h = header(Command::Proxy, "198.51.100.7:40000", "10.0.0.2:8081");
        assert_eq!(
            client_of(&h, peer),
            Ok("198.51.100.7:40000".parse().unwrap())
        );
        let h = header(Command::Proxy, "[2001:db8::7]:40000", "[2001:db8::1]:8081");
        assert_eq!(
            client_of(&h, peer),
            Ok("[2001:db8::7]:40000".parse().unwrap())
        );
        let h = header(Command::Local, "198.51.100.7:40000", "10.0.0.2:8081");
        assert_eq!(client_of(&h, peer), Ok(peer), "LOCAL keeps the peer");
    }

    #[test]
    fn broken_headers_are_malformed() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let good = header(Command::Proxy, "198.51.100.7:40000", "10.0.0.2:8081");
        let mut bad_version = good.clone();
        bad_version[12] = 0x11;
        let mut short = good.clone();
        short.truncate(good.len() - 1);
        for h in [bad_version, short, b"GET / HTTP/1.1\r\n\r\n".to_vec()] {
            assert_eq!(client_of(&h, peer), Err(Refusal::Malformed));
        }
    }

    #[test]
    fn a_datagram_splits_into_its_client_and_payload() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let src: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.2:8082".parse().unwrap();
        let mut datagram = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Datagram,
            (src, dst),
        )
        .build()
        .unwrap();
        let header_len = datagram.len();
        datagram.extend_from_slice(b"sealed frame");
        assert_eq!(
            split_datagram(&datagram, peer),
            Ok((src, &b"sealed frame"[..]))
        );
        assert_eq!(
            split_datagram(b"sealed frame without a header", peer),
            Err(Refusal::Missing)
        );
        assert_eq!(
            split_datagram(&datagram[..header_len - 1], peer),
            Err(Refusal::Malformed),
            "cut short"
        );
        let mut too_long = datagram.clone();
        too_long[14..16].copy_from_slice(&(MAX_HEADER as u16).to_be_bytes());
        too_long.resize(MAX_HEADER + 32, 0);
        assert_eq!(split_datagram(&too_long, peer), Err(Refusal::Malformed));
    }

    #[test]
    fn config_is_off_by_default_and_needs_trusted_addresses() {
        assert_eq!(ProxyConfig::default().load(), Ok(None));
        let on = |trusted: &[&str]| {
            ProxyConfig {
                listeners: vec![Listener::Http, Listener::AppWs],
                trusted: trusted.iter().map(|s| s.to_string()).collect(),
            }
            .load()
        };
        assert_eq!(on(&[]).unwrap_err().0, "proxy_protocol.trusted");
        assert_eq!(
            on(&["10.0.0.1", "lb.example"]).unwrap_err().0,
            "proxy_protocol.trusted[1]"
        );
        let p = on(&["10.0.0.1", "::ffff:10.0.0.2"]).unwrap().unwrap();
        assert!(p.trusts("10.0.0.1:1".parse().unwrap()));
        assert!(
            p.trusts("10.0.0.2:1".parse().unwrap()),
            "mapped IPv4 is IPv4"
        );
        assert!(!p.trusts("10.0.0.3:1".parse().unwrap()));
        assert!(p.on(Listener::Http).is_some() && p.on(Listener::AppWs).is_some());
        assert!(
            p.on(Listener::DeviceWs).is_none(),
            "only the listeners named"
        );
    }

    #[test]
    fn listeners_are_named_in_the_config_and_udp_is_not_one() {
        let parse = |toml: &str| toml::from_str::<ProxyConfig>(toml);
        let c = parse(r#"listeners = ["http", "device_ws", "app_ws"]"#).unwrap();
        assert_eq!(
            c.listeners,
            [Listener::Http, Listener::DeviceWs, Listener::AppWs]
        );
        let e = parse(r#"listeners = ["udp"]"#).unwrap_err().to_string();
        assert!(e.contains("unknown variant `udp`"), "{e}");
        let e = parse("enabled = true").unwrap_err().to_string();
        assert!(e.contains("unknown field `enabled`"), "{e}");
    }
}
