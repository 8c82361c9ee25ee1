//! [`WsTransport`]: one packet per WebSocket binary message over an embassy-net TCP socket.
//!
//! The opening handshake and the framing come from `embedded-websocket`; client frames are
//! masked as RFC 6455 requires (mask keys from a [`SplitMix64`] seeded by the board). The
//! receive side accumulates TCP bytes until one whole frame is buffered, then decodes it, so
//! [`Transport::recv`] is cancel-safe (all state lives in the transport, none in the future).
//! Pings are answered with Pongs, text messages are ignored, a Close ends the connection.
//! Fragmented messages are not used by the broker and count as malformed.
//!
//! No path waits on a stalled peer for long: a send (a packet or a Pong) that the peer does
//! not take within [`WS_SEND_TIMEOUT_MS`] fails with [`TransportError::Stalled`], and the
//! closing handshake (Close frame, then TCP FIN) gets [`WS_CLOSE_TIMEOUT_MS`] before the socket
//! is reset. Connecting is bounded by the runner (`CONNECT_TIMEOUT_MS`), receiving by the
//! client's own timers.

use embassy_net::Stack;
use embassy_net::tcp::TcpSocket;
use embassy_time::{Duration, with_timeout};
use embedded_websocket::{
    WebSocketClient, WebSocketCloseStatusCode, WebSocketOptions, WebSocketReceiveMessageType,
    WebSocketSendMessageType,
};

use super::transport::{Transport, TransportError, ip_endpoint};
use crate::config::{Endpoint, PACKET_BUF, TransportKind};
use crate::rng::{Rng, SplitMix64};

/// Largest WebSocket header around one packet: 2 bytes, 2 of extended length, 4 of mask.
pub const WS_FRAME_OVERHEAD: usize = 8;
/// TCP socket buffer per direction.
pub const WS_TCP_BUF: usize = 2048;
/// Frame receive buffer: one whole frame (or the HTTP upgrade answer) plus slack.
pub const WS_RX_BUF: usize = PACKET_BUF + 512;
/// Frame transmit buffer: one packet plus its header, or the HTTP upgrade request.
pub const WS_TX_BUF: usize = PACKET_BUF + 512;

/// How long TCP may stay silent before the socket gives up (ms).
const TCP_TIMEOUT_MS: u64 = 30_000;
/// Longest one send (a packet or a Pong) may wait for the peer to take its bytes, in ms.
pub const WS_SEND_TIMEOUT_MS: u64 = 5_000;
/// Longest the closing handshake (Close frame and FIN) may take before the socket is reset, in
/// ms.
pub const WS_CLOSE_TIMEOUT_MS: u64 = 1_000;

/// Socket and framing memory of a [`WsTransport`] (about 7.4 KiB). Provide it from a `StaticCell`.
pub struct WsBuffers {
    tcp_rx: [u8; WS_TCP_BUF],
    tcp_tx: [u8; WS_TCP_BUF],
    rx: [u8; WS_RX_BUF],
    tx: [u8; WS_TX_BUF],
}

impl WsBuffers {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        WsBuffers {
            tcp_rx: [0; WS_TCP_BUF],
            tcp_tx: [0; WS_TCP_BUF],
            rx: [0; WS_RX_BUF],
            tx: [0; WS_TX_BUF],
        }
    }
}

impl Default for WsBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// `rand_core` view of the SDK's generator (mask keys and the handshake key).
struct MaskRng(SplitMix64);

impl rand_core::RngCore for MaskRng {
    fn next_u32(&mut self) -> u32 {
        Rng::next_u32(&mut self.0)
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        Rng::fill_bytes(&mut self.0, dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        Rng::fill_bytes(&mut self.0, dest);
        Ok(())
    }
}

/// The WebSocket transport.
pub struct WsTransport<'d> {
    socket: TcpSocket<'d>,
    ws: WebSocketClient<MaskRng>,
    rx: &'d mut [u8; WS_RX_BUF],
    tx: &'d mut [u8; WS_TX_BUF],
    filled: usize,
    open: bool,
    seed: u64,
}

impl<'d> WsTransport<'d> {
    /// A transport over `stack` using `buffers`; `seed` seeds the mask-key generator (use the
    /// board's RNG).
    pub fn new(stack: Stack<'d>, buffers: &'d mut WsBuffers, seed: u64) -> Self {
        let WsBuffers {
            tcp_rx,
            tcp_tx,
            rx,
            tx,
        } = buffers;
        let mut socket = TcpSocket::new(stack, tcp_rx, tcp_tx);
        socket.set_timeout(Some(embassy_time::Duration::from_millis(TCP_TIMEOUT_MS)));
        let mut rng = SplitMix64::new(seed);
        let seed = rng.next_u64();
        WsTransport {
            socket,
            ws: WebSocketClient::new_client(MaskRng(rng)),
            rx,
            tx,
            filled: 0,
            open: false,
            seed,
        }
    }

    async fn write_all(&mut self, len: usize) -> Result<(), TransportError> {
        let mut sent = 0;
        while sent < len {
            match self.socket.write(&self.tx[sent..len]).await {
                Ok(0) | Err(_) => return Err(TransportError::Closed),
                Ok(n) => sent += n,
            }
        }
        Ok(())
    }

    /// [`write_all`](Self::write_all) within [`WS_SEND_TIMEOUT_MS`].
    async fn send_within_timeout(&mut self, len: usize) -> Result<(), TransportError> {
        let timeout = Duration::from_millis(WS_SEND_TIMEOUT_MS);
        match with_timeout(timeout, self.write_all(len)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Stalled),
        }
    }

    async fn fill(&mut self) -> Result<(), TransportError> {
        if self.filled == self.rx.len() {
            return Err(TransportError::TooLarge);
        }
        match self.socket.read(&mut self.rx[self.filled..]).await {
            Ok(0) | Err(_) => Err(TransportError::Closed),
            Ok(n) => {
                self.filled += n;
                Ok(())
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.rx.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    async fn upgrade(&mut self, host: &str, path: &str) -> Result<(), TransportError> {
        let options = WebSocketOptions {
            path,
            host,
            origin: "",
            sub_protocols: None,
            additional_headers: None,
        };
        let (len, key) = self
            .ws
            .client_connect(&options, &mut self.tx[..])
            .map_err(|_| TransportError::UpgradeFailed)?;
        self.write_all(len).await?;
        loop {
            self.fill().await?;
            match self.ws.client_accept(&key, &self.rx[..self.filled]) {
                Ok((used, _)) => {
                    self.consume(used);
                    return Ok(());
                }
                Err(embedded_websocket::Error::HttpHeaderIncomplete) => continue,
                Err(_) => return Err(TransportError::UpgradeFailed),
            }
        }
    }
}

/// Length of the WebSocket frame at the start of `bytes` (header and payload), or `None` when
/// the header itself is not complete yet. Lengths that do not fit `usize` saturate.
pub(crate) fn ws_frame_len(bytes: &[u8]) -> Option<usize> {
    let b1 = *bytes.get(1)?;
    let masked = b1 & 0x80 != 0;
    let (header, payload) = match b1 & 0x7f {
        126 => (
            4,
            u64::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
        ),
        127 => {
            let ext: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (10, u64::from_be_bytes(ext))
        }
        short => (2, u64::from(short)),
    };
    let header = header + if masked { 4 } else { 0 };
    Some(usize::try_from(payload).map_or(usize::MAX, |p| p.saturating_add(header)))
}

impl Transport for WsTransport<'_> {
    async fn connect(&mut self, endpoint: &Endpoint<'_>) -> Result<(), TransportError> {
        self.close().await;
        let TransportKind::WebSocket { host, path } = endpoint.transport else {
            return Err(TransportError::Unsupported);
        };
        // A fresh framing state (and mask stream) per connection.
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.ws = WebSocketClient::new_client(MaskRng(SplitMix64::new(self.seed)));
        self.filled = 0;
        let remote = ip_endpoint(endpoint.addr)?;
        self.socket
            .connect(remote)
            .await
            .map_err(|_| TransportError::ConnectFailed)?;
        self.open = true;
        if let Err(e) = self.upgrade(host, path).await {
            self.close().await;
            return Err(e);
        }
        Ok(())
    }

    async fn send(&mut self, packet: &[u8]) -> Result<(), TransportError> {
        if !self.open {
            return Err(TransportError::Closed);
        }
        let len = self
            .ws
            .write(
                WebSocketSendMessageType::Binary,
                true,
                packet,
                &mut self.tx[..],
            )
            .map_err(|_| TransportError::TooLarge)?;
        self.send_within_timeout(len).await
    }

    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        loop {
            if !self.open {
                return Err(TransportError::Closed);
            }
            let frame_len = match ws_frame_len(&self.rx[..self.filled]) {
                Some(n) if n > self.rx.len() => return Err(TransportError::TooLarge),
                Some(n) if n <= self.filled => n,
                _ => {
                    self.fill().await?;
                    continue;
                }
            };
            let read = self.ws.read(&self.rx[..frame_len], buf);
            self.consume(frame_len);
            let read = read.map_err(|_| TransportError::Malformed)?;
            match read.message_type {
                WebSocketReceiveMessageType::Binary if read.end_of_message => {
                    return Ok(read.len_to);
                }
                WebSocketReceiveMessageType::Binary => return Err(TransportError::Malformed),
                WebSocketReceiveMessageType::Text | WebSocketReceiveMessageType::Pong => {}
                WebSocketReceiveMessageType::Ping => {
                    let len = self
                        .ws
                        .write(
                            WebSocketSendMessageType::Pong,
                            true,
                            &buf[..read.len_to],
                            &mut self.tx[..],
                        )
                        .map_err(|_| TransportError::Malformed)?;
                    self.send_within_timeout(len).await?;
                }
                WebSocketReceiveMessageType::CloseMustReply
                | WebSocketReceiveMessageType::CloseCompleted => {
                    self.close().await;
                    return Err(TransportError::Closed);
                }
            }
        }
    }

    async fn close(&mut self) {
        if self.open {
            let closing = async {
                if let Ok(len) = self.ws.close(
                    WebSocketCloseStatusCode::NormalClosure,
                    None,
                    &mut self.tx[..],
                ) {
                    let _ = self.write_all(len).await;
                }
                self.socket.close();
                let _ = self.socket.flush().await;
            };
            // A peer that takes nothing gets a reset instead of a polite close.
            let _ = with_timeout(Duration::from_millis(WS_CLOSE_TIMEOUT_MS), closing).await;
        }
        self.socket.abort();
        self.open = false;
        self.filled = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::ws_frame_len;

    #[test]
    fn frame_lengths() {
        assert_eq!(ws_frame_len(&[]), None);
        assert_eq!(ws_frame_len(&[0x82]), None);
        assert_eq!(ws_frame_len(&[0x82, 5]), Some(7));
        assert_eq!(ws_frame_len(&[0x82, 0x85]), Some(11), "masked");
        assert_eq!(ws_frame_len(&[0x82, 126, 0x04]), None);
        assert_eq!(ws_frame_len(&[0x82, 126, 0x04, 0xB0]), Some(4 + 1200));
        let mut long = [0u8; 10];
        long[0] = 0x82;
        long[1] = 127;
        long[9] = 1;
        assert_eq!(ws_frame_len(&long[..9]), None);
        assert_eq!(ws_frame_len(&long), Some(11));
        long[2] = 0xff;
        assert!(ws_frame_len(&long).unwrap() > 1 << 40 || usize::BITS < 64);
    }
}
