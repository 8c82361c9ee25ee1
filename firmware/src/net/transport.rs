//! The [`Transport`] trait the runner drives: one protocol packet per datagram or message.

use crate::config::{Endpoint, TransportKind};

/// Why a transport operation failed. Every failure makes the client back off and rotate to the
/// next endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TransportError {
    /// This transport cannot reach this kind of endpoint (e.g. a WebSocket endpoint given to
    /// [`crate::net::UdpTransport`]).
    Unsupported,
    /// The socket could not be bound or has no route.
    NoRoute,
    /// TCP connect refused, reset or timed out.
    ConnectFailed,
    /// The WebSocket opening handshake failed (bad HTTP answer, bad accept key).
    UpgradeFailed,
    /// The connection was closed or reset by the peer.
    Closed,
    /// The peer sent something that is not a protocol packet (oversized, text, bad framing).
    Malformed,
    /// The packet does not fit the transport's buffers.
    TooLarge,
    /// The peer stopped taking bytes: a send did not complete within its timeout.
    Stalled,
}

impl core::fmt::Display for TransportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TransportError::Unsupported => "endpoint kind not supported by this transport",
            TransportError::NoRoute => "no route",
            TransportError::ConnectFailed => "connect failed",
            TransportError::UpgradeFailed => "websocket upgrade failed",
            TransportError::Closed => "connection closed",
            TransportError::Malformed => "malformed message",
            TransportError::TooLarge => "message too large",
            TransportError::Stalled => "peer stalled: send timed out",
        })
    }
}

/// The embassy-net endpoint for `addr`. IPv6 endpoints need embassy-net's `proto-ipv6`, which
/// this crate does not enable: they are [`TransportError::Unsupported`].
pub(crate) fn ip_endpoint(
    addr: core::net::SocketAddr,
) -> Result<embassy_net::IpEndpoint, TransportError> {
    match addr {
        core::net::SocketAddr::V4(v4) => Ok(v4.into()),
        core::net::SocketAddr::V6(_) => Err(TransportError::Unsupported),
    }
}

/// One packet per UDP datagram or WebSocket binary message.
///
/// Futures are not `Send`: embassy executors run tasks on one core.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// Opens a connection to `endpoint`, closing any previous one.
    async fn connect(&mut self, endpoint: &Endpoint<'_>) -> Result<(), TransportError>;
    /// Sends one packet.
    async fn send(&mut self, packet: &[u8]) -> Result<(), TransportError>;
    /// Waits for one packet and returns its length in `buf`. Must be cancel-safe: the runner
    /// drops the future when a timer or the application wakes it first.
    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError>;
    /// Closes the connection (no-op when closed).
    async fn close(&mut self);
}

impl<T: Transport + ?Sized> Transport for &mut T {
    async fn connect(&mut self, endpoint: &Endpoint<'_>) -> Result<(), TransportError> {
        (**self).connect(endpoint).await
    }
    async fn send(&mut self, packet: &[u8]) -> Result<(), TransportError> {
        (**self).send(packet).await
    }
    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        (**self).recv(buf).await
    }
    async fn close(&mut self) {
        (**self).close().await
    }
}

/// The kind of socket an endpoint needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SocketKind {
    /// A UDP socket ([`TransportKind::Udp`]).
    Udp,
    /// A TCP socket carrying a WebSocket ([`TransportKind::WebSocket`]).
    WebSocket,
}

impl SocketKind {
    /// The kind of socket `transport` runs on.
    pub fn of(transport: &TransportKind<'_>) -> Self {
        match transport {
            TransportKind::Udp => SocketKind::Udp,
            TransportKind::WebSocket { .. } => SocketKind::WebSocket,
        }
    }
}

/// Where the runner gets its transport: opened for one kind of endpoint at a time, and opened
/// again (the previous one dropped first) when the client moves to an endpoint of another
/// kind. Every [`Transport`] is one, serving every kind itself;
/// [`SharedSockets`](super::SharedSockets) opens the UDP or the WebSocket transport in one
/// memory they take turns with.
pub trait Sockets {
    /// The transport [`open`](Self::open) gives, borrowing the sockets while it lives.
    type Transport<'a>: Transport
    where
        Self: 'a;
    /// A transport for endpoints of `kind`, closed (the runner connects it).
    fn open(&mut self, kind: SocketKind) -> Self::Transport<'_>;
}

impl<T: Transport> Sockets for T {
    type Transport<'a>
        = &'a mut T
    where
        T: 'a;
    fn open(&mut self, _kind: SocketKind) -> &mut T {
        self
    }
}

/// UDP and WebSocket in one transport: each endpoint's [`TransportKind`] picks the half.
pub struct DualTransport<U, W> {
    udp: U,
    ws: W,
    use_ws: bool,
}

impl<U: Transport, W: Transport> DualTransport<U, W> {
    /// Combines a UDP and a WebSocket transport.
    pub fn new(udp: U, ws: W) -> Self {
        DualTransport {
            udp,
            ws,
            use_ws: false,
        }
    }
}

impl<U: Transport, W: Transport> Transport for DualTransport<U, W> {
    async fn connect(&mut self, endpoint: &Endpoint<'_>) -> Result<(), TransportError> {
        self.close().await;
        self.use_ws = matches!(endpoint.transport, TransportKind::WebSocket { .. });
        if self.use_ws {
            self.ws.connect(endpoint).await
        } else {
            self.udp.connect(endpoint).await
        }
    }

    async fn send(&mut self, packet: &[u8]) -> Result<(), TransportError> {
        if self.use_ws {
            self.ws.send(packet).await
        } else {
            self.udp.send(packet).await
        }
    }

    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        if self.use_ws {
            self.ws.recv(buf).await
        } else {
            self.udp.recv(buf).await
        }
    }

    async fn close(&mut self) {
        if self.use_ws {
            self.ws.close().await
        } else {
            self.udp.close().await
        }
    }
}
