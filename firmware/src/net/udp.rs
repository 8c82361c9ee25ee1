//! [`UdpTransport`]: one packet per datagram over an embassy-net UDP socket.
//!
//! Each connection binds a fresh ephemeral local port (so a new login does not inherit stale
//! datagrams of the old session) and accepts datagrams only from the endpoint's address.

use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Stack};

use super::transport::{Transport, TransportError, ip_endpoint};
use crate::config::{Endpoint, PACKET_BUF, TransportKind};

/// Datagrams the socket buffers per direction unless the application chooses (the `N` of
/// [`UdpBuffers`]).
pub const UDP_QUEUE: usize = 4;

/// Socket memory of a [`UdpTransport`]: `N` packets of `PACKET_BUF` bytes each way (with the
/// default [`UDP_QUEUE`], about 9.7 KiB; each datagram fewer saves about 2.4 KiB). `N` is the
/// application's choice, at least 1: datagrams that arrive while `N` wait are dropped by the
/// stack and resent by the protocol. Provide it from a `StaticCell`.
pub struct UdpBuffers<const N: usize = UDP_QUEUE> {
    rx_meta: [PacketMetadata; N],
    rx: [[u8; PACKET_BUF]; N],
    tx_meta: [PacketMetadata; N],
    tx: [[u8; PACKET_BUF]; N],
}

impl<const N: usize> UdpBuffers<N> {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        const {
            assert!(
                N >= 1,
                "the UDP socket needs room for one datagram each way"
            )
        };
        UdpBuffers {
            rx_meta: [PacketMetadata::EMPTY; N],
            rx: [[0; PACKET_BUF]; N],
            tx_meta: [PacketMetadata::EMPTY; N],
            tx: [[0; PACKET_BUF]; N],
        }
    }
}

impl<const N: usize> Default for UdpBuffers<N> {
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
    /// A transport over `stack` using `buffers` (any queue length `N`).
    pub fn new<const N: usize>(stack: Stack<'d>, buffers: &'d mut UdpBuffers<N>) -> Self {
        Self::from_parts(
            stack,
            &mut buffers.rx_meta,
            buffers.rx.as_flattened_mut(),
            &mut buffers.tx_meta,
            buffers.tx.as_flattened_mut(),
        )
    }

    /// A transport over `stack` whose socket queues datagrams in `rx`/`tx` (one metadata slot
    /// per datagram in `rx_meta`/`tx_meta`).
    pub(crate) fn from_parts(
        stack: Stack<'d>,
        rx_meta: &'d mut [PacketMetadata],
        rx: &'d mut [u8],
        tx_meta: &'d mut [PacketMetadata],
        tx: &'d mut [u8],
    ) -> Self {
        UdpTransport {
            socket: UdpSocket::new(stack, rx_meta, rx, tx_meta, tx),
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
