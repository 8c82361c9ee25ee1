//! [`SharedSockets`]: the UDP and the WebSocket transport in one socket memory, for a device
//! that is configured with endpoints of both kinds but talks to one at a time.
//!
//! The client uses one endpoint at a time, so only one of the two transports is ever open.
//! Instead of keeping both sockets (and both sets of buffers) for the device's life, the
//! runner opens the transport the current endpoint needs from [`SocketMemory`], and drops it
//! (which takes its socket off the network stack) before it opens the other kind. The memory is
//! what the UDP transport needs with `N` datagrams each way; the WebSocket transport gets the
//! same bytes as its frame buffers and a TCP window of what is left (see [`SocketMemory`]).

use embassy_net::Stack;
use embassy_net::udp::PacketMetadata;

use super::transport::{SocketKind, Sockets, Transport, TransportError};
use super::udp::{UDP_QUEUE, UdpTransport};
use super::ws::{WS_FRAME_OVERHEAD, WS_RX_BUF, WS_TX_BUF, WsTransport};
use crate::config::{Endpoint, PACKET_BUF};
use crate::rng::SplitMix64;

/// The memory [`SharedSockets`] opens its transports in: `N` datagrams of `PACKET_BUF` bytes
/// each way for UDP (with the default [`UDP_QUEUE`], about 9.7 KiB). A WebSocket uses each
/// direction's bytes as one frame buffer ([`WS_RX_BUF`], [`WS_TX_BUF`]) and a TCP buffer of the
/// rest: `N * PACKET_BUF - WS_RX_BUF` bytes each way (3,088 B with the default). `N` is at least
/// 3, so that rest holds one framed packet. Provide it from a `StaticCell`.
pub struct SocketMemory<const N: usize = UDP_QUEUE> {
    rx_meta: [PacketMetadata; N],
    tx_meta: [PacketMetadata; N],
    rx: [[u8; PACKET_BUF]; N],
    tx: [[u8; PACKET_BUF]; N],
}

impl<const N: usize> SocketMemory<N> {
    /// The TCP buffer a WebSocket gets in each direction, in bytes.
    pub const WS_TCP_BUF: usize = N * PACKET_BUF - WS_RX_BUF;

    /// Zeroed memory.
    pub const fn new() -> Self {
        const {
            assert!(
                N * PACKET_BUF >= WS_RX_BUF + PACKET_BUF + WS_FRAME_OVERHEAD
                    && N * PACKET_BUF >= WS_TX_BUF + PACKET_BUF + WS_FRAME_OVERHEAD,
                "a WebSocket needs its frame buffer and one framed packet of TCP buffer each way"
            )
        };
        SocketMemory {
            rx_meta: [PacketMetadata::EMPTY; N],
            tx_meta: [PacketMetadata::EMPTY; N],
            rx: [[0; PACKET_BUF]; N],
            tx: [[0; PACKET_BUF]; N],
        }
    }
}

impl<const N: usize> Default for SocketMemory<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Opens the UDP or the WebSocket transport in one [`SocketMemory`]; give it to
/// [`new`](super::new) as the runner's sockets. One socket of the stack's set is in use at a
/// time.
pub struct SharedSockets<'d, const N: usize = UDP_QUEUE> {
    stack: Stack<'d>,
    memory: &'d mut SocketMemory<N>,
    /// Seeds each WebSocket transport's mask keys.
    seeds: SplitMix64,
}

impl<'d, const N: usize> SharedSockets<'d, N> {
    /// Transports on `stack` in `memory`; `seed` seeds the WebSocket mask keys (use the
    /// board's RNG).
    pub fn new(stack: Stack<'d>, memory: &'d mut SocketMemory<N>, seed: u64) -> Self {
        SharedSockets {
            stack,
            memory,
            seeds: SplitMix64::new(seed),
        }
    }
}

impl<const N: usize> Sockets for SharedSockets<'_, N> {
    type Transport<'a>
        = SharedTransport<'a>
    where
        Self: 'a;

    fn open(&mut self, kind: SocketKind) -> SharedTransport<'_> {
        let SocketMemory {
            rx_meta,
            tx_meta,
            rx,
            tx,
        } = &mut *self.memory;
        let (rx, tx) = (rx.as_flattened_mut(), tx.as_flattened_mut());
        match kind {
            SocketKind::Udp => SharedTransport::Udp(UdpTransport::from_parts(
                self.stack, rx_meta, rx, tx_meta, tx,
            )),
            SocketKind::WebSocket => {
                let (frame_rx, tcp_rx) = rx
                    .split_first_chunk_mut::<WS_RX_BUF>()
                    .expect("SocketMemory::new checks the size");
                let (frame_tx, tcp_tx) = tx
                    .split_first_chunk_mut::<WS_TX_BUF>()
                    .expect("SocketMemory::new checks the size");
                let seed = self.seeds.next_u64();
                SharedTransport::WebSocket(WsTransport::from_parts(
                    self.stack, tcp_rx, tcp_tx, frame_rx, frame_tx, seed,
                ))
            }
        }
    }
}

/// The transport [`SharedSockets`] opened: UDP or WebSocket. It refuses endpoints of the other
/// kind ([`TransportError::Unsupported`]).
pub enum SharedTransport<'d> {
    /// Open for UDP endpoints.
    Udp(UdpTransport<'d>),
    /// Open for WebSocket endpoints.
    WebSocket(WsTransport<'d>),
}

impl Transport for SharedTransport<'_> {
    async fn connect(&mut self, endpoint: &Endpoint<'_>) -> Result<(), TransportError> {
        match self {
            SharedTransport::Udp(t) => t.connect(endpoint).await,
            SharedTransport::WebSocket(t) => t.connect(endpoint).await,
        }
    }

    async fn send(&mut self, packet: &[u8]) -> Result<(), TransportError> {
        match self {
            SharedTransport::Udp(t) => t.send(packet).await,
            SharedTransport::WebSocket(t) => t.send(packet).await,
        }
    }

    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        match self {
            SharedTransport::Udp(t) => t.recv(buf).await,
            SharedTransport::WebSocket(t) => t.recv(buf).await,
        }
    }

    async fn close(&mut self) {
        match self {
            SharedTransport::Udp(t) => t.close().await,
            SharedTransport::WebSocket(t) => t.close().await,
        }
    }
}
