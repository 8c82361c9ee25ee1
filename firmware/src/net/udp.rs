//! [`UdpTransport`]: one packet per datagram over an embassy-net UDP socket.
//!
//! Each connection binds a fresh ephemeral local port (so a new login does not inherit stale
//! datagrams of the old session) and accepts datagrams only from the endpoint's address.

use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Stack};

use super::transport::{Transport, TransportError, ip_endpoint};
use crate::config::{Endpoint, PACKET_BUF, TransportKind};

/// Datagrams the socket buffers per direction.
pub const UDP_QUEUE: usize = 4;

/// Socket memory of a [`UdpTransport`]: `UDP_QUEUE` packets of `PACKET_BUF` bytes each way
/// (about 9.7 KiB). Provide it from a `StaticCell`.
pub struct UdpBuffers {
    rx_meta: [PacketMetadata; UDP_QUEUE],
    rx: [u8; UDP_QUEUE * PACKET_BUF],
    tx_meta: [PacketMetadata; UDP_QUEUE],
    tx: [u8; UDP_QUEUE * PACKET_BUF],
}

impl UdpBuffers {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        UdpBuffers {
            rx_meta: [PacketMetadata::EMPTY; UDP_QUEUE],
            rx: [0; UDP_QUEUE * PACKET_BUF],
            tx_meta: [PacketMetadata::EMPTY; UDP_QUEUE],
            tx: [0; UDP_QUEUE * PACKET_BUF],
        }
    }
}

impl Default for UdpBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// The UDP transport.
pub struct UdpTransport<'d> {
    socket: UdpSocket<'d>,
    remote: Option<IpEndpoint>,
}

impl<'d> UdpTransport<'d> {
    /// A transport over `stack` using `buffers`.
    pub fn new(stack: Stack<'d>, buffers: &'d mut UdpBuffers) -> Self {
        let socket = UdpSocket::new(
            stack,
            &mut buffers.rx_meta,
            &mut buffers.rx,
            &mut buffers.tx_meta,
            &mut buffers.tx,
        );
        UdpTransport {
            socket,
            remote: None,
        }
    }
}

impl Transport for UdpTransport<'_> {
    async fn connect(&mut self, endpoint: &Endpoint<'_>) -> Result<(), TransportError> {
        self.close().await;
        if endpoint.transport != TransportKind::Udp {
            return Err(TransportError::Unsupported);
        }
        let remote = ip_endpoint(endpoint.addr)?;
        self.socket.bind(0).map_err(|_| TransportError::NoRoute)?;
        self.remote = Some(remote);
        Ok(())
    }

    async fn send(&mut self, packet: &[u8]) -> Result<(), TransportError> {
        let remote = self.remote.ok_or(TransportError::Closed)?;
        self.socket
            .send_to(packet, remote)
            .await
            .map_err(|e| match e {
                embassy_net::udp::SendError::PacketTooLarge => TransportError::TooLarge,
                _ => TransportError::NoRoute,
            })
    }

    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        let remote = self.remote.ok_or(TransportError::Closed)?;
        loop {
            match self.socket.recv_from(buf).await {
                Ok((n, meta)) if meta.endpoint == remote => return Ok(n),
                // From someone else: not ours, keep waiting.
                Ok(_) => continue,
                // Larger than MAX_PACKET: dropped by the socket, per the spec.
                Err(embassy_net::udp::RecvError::Truncated) => continue,
            }
        }
    }

    async fn close(&mut self) {
        self.socket.close();
        self.remote = None;
    }
}
