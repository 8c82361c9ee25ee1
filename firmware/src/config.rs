//! What a board provisions (identity, key, brokers) and how the client behaves (timers).
//!
//! The SDK never hard-codes an identity or a broker: the board builds a [`DeviceConfig`] from
//! build-time environment variables or from flash and hands it to the client.

use core::net::SocketAddr;

use shared_protocol::keys::DeviceKey;
use shared_protocol::limits::{HANDSHAKE_TIMEOUT_MS, MAX_PACKET};

use crate::backoff::BackoffConfig;

/// How to reach one broker endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind<'a> {
    /// One packet per UDP datagram.
    Udp,
    /// One packet per WebSocket binary message over TCP (RFC 6455, client frames masked).
    WebSocket {
        /// `Host` header value of the opening handshake (e.g. `broker.example.net`).
        host: &'a str,
        /// Request path of the opening handshake (e.g. `/device`).
        path: &'a str,
    },
}

/// One broker endpoint: an address and the transport to use there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint<'a> {
    /// IP address and port of the broker.
    pub addr: SocketAddr,
    /// UDP or WebSocket.
    pub transport: TransportKind<'a>,
}

impl<'a> Endpoint<'a> {
    /// A UDP endpoint.
    pub const fn udp(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            transport: TransportKind::Udp,
        }
    }

    /// A WebSocket endpoint.
    pub const fn websocket(addr: SocketAddr, host: &'a str, path: &'a str) -> Self {
        Endpoint {
            addr,
            transport: TransportKind::WebSocket { host, path },
        }
    }
}

/// A device's provisioned identity and brokers.
#[derive(Clone, Debug)]
pub struct DeviceConfig<'a> {
    /// The device id (`plug` profile: 1..=u32::MAX; `signed` profile: positive as i32).
    pub device_id: u32,
    /// The device's 32-byte key (per-device or derived from the fleet key at the factory).
    pub key: DeviceKey,
    /// Brokers in order of preference; the client rotates to the next one after each failure.
    /// With a [`lookup`](Self::lookup) these are the fallback tried after the looked-up nodes.
    pub endpoints: &'a [Endpoint<'a>],
    /// The broker's node lookup (`GET /v1/nodes/lookup`), asked at the start of every failover
    /// round; `None`: only [`endpoints`](Self::endpoints). See [`crate::lookup`].
    pub lookup: Option<crate::lookup::LookupConfig<'a>>,
    /// The highest message id already delivered before boot (from flash), or 0.
    pub since_id: u64,
}

/// Timers and limits of the client state machine. [`Default`] follows docs/protocol.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientConfig {
    /// Give up a login attempt (HELLO to WELCOME) after this long, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Resend HELLO or LOGIN when no answer came for this long (doubling per resend, UDP loss).
    pub handshake_resend_ms: u64,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// Heartbeat interval used until WELCOME says otherwise, in seconds.
    pub default_heartbeat_secs: u16,
    /// Give up a node lookup (connect, request, answer) after this long, in milliseconds.
    pub lookup_timeout_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS,
            handshake_resend_ms: 1_000,
            backoff: BackoffConfig::default(),
            default_heartbeat_secs: shared_protocol::limits::DEFAULT_HEARTBEAT_SECS,
            lookup_timeout_ms: 5_000,
        }
    }
}

/// Size of every packet buffer the SDK uses (transmit, receive): the protocol's `MAX_PACKET`.
pub const PACKET_BUF: usize = MAX_PACKET;
