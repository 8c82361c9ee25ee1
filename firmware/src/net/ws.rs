//! [`WsTransport`]: one packet per WebSocket binary message over an embassy-net TCP socket.
//!
//! The opening handshake and the framing come from `embedded-websocket`; client frames are
//! masked as RFC 6455 requires (mask keys from a [`SplitMix64`] seeded by the board). The
//! receive side accumulates TCP bytes until one whole frame is buffered, then decodes it, so
//! [`Transport::recv`] is cancel-safe (all state lives in the transport, none in the future).
//! Pings are answered with Pongs, text messages are ignored, a Close ends the connection.
//! Fragmented messages are not used by the broker and count as malformed, as does a message of
//! any type whose payload does not fit the caller's buffer.
//!
//! No path waits on a stalled peer for long: a send (a packet or a Pong) that the peer does
//! not take within [`WS_SEND_TIMEOUT_MS`] fails with [`TransportError::Stalled`], and the
//! closing handshake (Close frame, then TCP FIN) gets [`WS_CLOSE_TIMEOUT_MS`] before the socket
//! is reset. Connecting is bounded by the runner (`CONNECT_TIMEOUT_MS`), receiving by the
//! client's own timers.
//!
//! The bytes travel over a [`WsStream`]: an embassy-net [`TcpSocket`] on a device
//! ([`WsTransport::new`]), a scripted fake in the tests, which is how the two timeouts are tested
//! against a peer that stops reading.

use embassy_net::tcp::TcpSocket;
use embassy_net::{IpEndpoint, Stack};
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
/// TCP socket buffer per direction unless the application chooses (the `T` of [`WsBuffers`]).
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

/// Socket and framing memory of a [`WsTransport`]: TCP buffers of `T` bytes each way (the
/// application's choice; with the default [`WS_TCP_BUF`] about 7.4 KiB in all) and one frame
/// buffer each way ([`WS_RX_BUF`], [`WS_TX_BUF`]: a whole packet, fixed). A smaller `T` keeps
/// fewer bytes in flight, never a smaller packet; `T` is at least one packet with its WebSocket
/// header (`PACKET_BUF + WS_FRAME_OVERHEAD`), so a packet goes out in one write and fits one
/// receive window. Provide it from a `StaticCell`.
pub struct WsBuffers<const T: usize = WS_TCP_BUF> {
    tcp_rx: [u8; T],
    tcp_tx: [u8; T],
    rx: [u8; WS_RX_BUF],
    tx: [u8; WS_TX_BUF],
}

impl<const T: usize> WsBuffers<T> {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        const {
            assert!(
                T >= PACKET_BUF + WS_FRAME_OVERHEAD,
                "the TCP buffers must hold one framed packet"
            )
        };
        WsBuffers {
            tcp_rx: [0; T],
            tcp_tx: [0; T],
            rx: [0; WS_RX_BUF],
            tx: [0; WS_TX_BUF],
        }
    }
}

impl<const T: usize> Default for WsBuffers<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The reliable byte stream a [`WsTransport`] frames its messages on (TCP).
#[allow(async_fn_in_trait)]
pub trait WsStream {
    /// Opens the connection to `remote` ([`TransportError::ConnectFailed`] when refused or
    /// unreachable).
    async fn connect(&mut self, remote: IpEndpoint) -> Result<(), TransportError>;
    /// Hands some of `bytes` to the stream; how many it took (0: closed). Waits while the peer
    /// takes nothing.
    async fn write(&mut self, bytes: &[u8]) -> Result<usize, TransportError>;
    /// Reads what has arrived into `buf`; how many bytes (0: end of stream).
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError>;
    /// Starts the polite close (TCP FIN after the queued bytes).
    fn close(&mut self);
    /// Waits until every queued byte was acknowledged by the peer.
    async fn flush(&mut self) -> Result<(), TransportError>;
    /// Drops the connection at once (TCP RST), whatever is queued.
    fn abort(&mut self);
}

impl WsStream for TcpSocket<'_> {
    async fn connect(&mut self, remote: IpEndpoint) -> Result<(), TransportError> {
        TcpSocket::connect(self, remote)
            .await
            .map_err(|_| TransportError::ConnectFailed)
    }
    async fn write(&mut self, bytes: &[u8]) -> Result<usize, TransportError> {
        TcpSocket::write(self, bytes)
            .await
            .map_err(|_| TransportError::Closed)
    }
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        TcpSocket::read(self, buf)
            .await
            .map_err(|_| TransportError::Closed)
    }
    fn close(&mut self) {
        TcpSocket::close(self)
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        TcpSocket::flush(self)
            .await
            .map_err(|_| TransportError::Closed)
    }
    fn abort(&mut self) {
        TcpSocket::abort(self)
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

/// The WebSocket transport, over an embassy-net TCP socket unless `S` says otherwise.
pub struct WsTransport<'d, S: WsStream = TcpSocket<'d>> {
    socket: S,
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
    pub fn new<const T: usize>(stack: Stack<'d>, buffers: &'d mut WsBuffers<T>, seed: u64) -> Self {
        let WsBuffers {
            tcp_rx,
            tcp_tx,
            rx,
            tx,
        } = buffers;
        Self::from_parts(stack, tcp_rx, tcp_tx, rx, tx, seed)
    }

    /// A transport over `stack` whose TCP socket buffers in `tcp_rx`/`tcp_tx` (each at least
    /// one framed packet) and frames in `rx`/`tx`; `seed` as in [`WsTransport::new`].
    pub(crate) fn from_parts(
        stack: Stack<'d>,
        tcp_rx: &'d mut [u8],
        tcp_tx: &'d mut [u8],
        rx: &'d mut [u8; WS_RX_BUF],
        tx: &'d mut [u8; WS_TX_BUF],
        seed: u64,
    ) -> Self {
        let mut socket = TcpSocket::new(stack, tcp_rx, tcp_tx);
        socket.set_timeout(Some(embassy_time::Duration::from_millis(TCP_TIMEOUT_MS)));
        WsTransport::with_stream(socket, rx, tx, seed)
    }
}

impl<'d, S: WsStream> WsTransport<'d, S> {
    /// A transport over `socket` with frame buffers `rx` and `tx`; `seed` as in
    /// [`WsTransport::new`].
    pub fn with_stream(
        socket: S,
        rx: &'d mut [u8; WS_RX_BUF],
        tx: &'d mut [u8; WS_TX_BUF],
        seed: u64,
    ) -> Self {
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

impl<S: WsStream> Transport for WsTransport<'_, S> {
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
        self.socket.connect(remote).await?;
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
            // A message not read whole, of any type (fragmented, or longer than `buf`), leaves
            // embedded-websocket expecting the rest of its payload: the next frame would be read
            // as that rest, so such a message ends the connection rather than being skipped.
            if !read.end_of_message {
                return Err(TransportError::Malformed);
            }
            match read.message_type {
                WebSocketReceiveMessageType::Binary => return Ok(read.len_to),
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
    use core::future::{Future, pending};
    use core::pin::{Pin, pin};
    use core::task::{Context, Poll, Waker};

    use embassy_time::MockDriver;

    use super::*;
    use crate::net::tests::mock_clock;

    /// A peer that takes the first `accept` bytes written and then stops reading: later writes
    /// and (unless it takes everything) flushes wait forever, and nothing ever arrives.
    struct StallingPeer {
        accept: usize,
        taken: usize,
        fin_sent: bool,
        aborted: bool,
    }

    impl StallingPeer {
        fn taking(accept: usize) -> Self {
            StallingPeer {
                accept,
                taken: 0,
                fin_sent: false,
                aborted: false,
            }
        }
    }

    impl WsStream for StallingPeer {
        async fn connect(&mut self, _: IpEndpoint) -> Result<(), TransportError> {
            Ok(())
        }
        async fn write(&mut self, bytes: &[u8]) -> Result<usize, TransportError> {
            let room = self.accept - self.taken;
            if room == 0 {
                return pending().await;
            }
            let n = bytes.len().min(room);
            self.taken += n;
            Ok(n)
        }
        async fn read(&mut self, _: &mut [u8]) -> Result<usize, TransportError> {
            pending().await
        }
        fn close(&mut self) {
            self.fin_sent = true;
        }
        async fn flush(&mut self) -> Result<(), TransportError> {
            if self.accept == usize::MAX {
                Ok(())
            } else {
                pending().await
            }
        }
        fn abort(&mut self) {
            self.aborted = true;
        }
    }

    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn advance_ms(ms: u64) {
        MockDriver::get().advance(Duration::from_millis(ms));
    }

    /// An open transport over `peer`: the opening handshake is done in memory against
    /// embedded-websocket's server side, so the peer sees only what comes after it.
    fn open<'d, S: WsStream>(
        peer: S,
        rx: &'d mut [u8; WS_RX_BUF],
        tx: &'d mut [u8; WS_TX_BUF],
    ) -> WsTransport<'d, S> {
        let mut ws = WsTransport::with_stream(peer, rx, tx, 1);
        let options = WebSocketOptions {
            path: "/ws",
            host: "broker",
            origin: "",
            sub_protocols: None,
            additional_headers: None,
        };
        let mut request = [0u8; 512];
        let (_, key) = ws.ws.client_connect(&options, &mut request).unwrap();
        let mut answer = [0u8; 512];
        let len = embedded_websocket::WebSocketServer::new_server()
            .server_accept(&key, None, &mut answer)
            .unwrap();
        ws.ws.client_accept(&key, &answer[..len]).unwrap();
        ws.open = true;
        ws
    }

    #[test]
    fn a_send_the_peer_stops_taking_fails_as_stalled_after_the_send_timeout() {
        let _clock = mock_clock();
        let (mut rx, mut tx) = ([0; WS_RX_BUF], [0; WS_TX_BUF]);
        let mut ws = open(StallingPeer::taking(100), &mut rx, &mut tx);
        let packet = [7u8; 600];
        {
            let mut send = pin!(ws.send(&packet));
            assert!(poll_once(send.as_mut()).is_pending());
            advance_ms(4_999);
            assert!(poll_once(send.as_mut()).is_pending(), "still within 5 s");
            advance_ms(1);
            assert_eq!(
                poll_once(send.as_mut()),
                Poll::Ready(Err(TransportError::Stalled))
            );
        }
        assert_eq!(
            ws.socket.taken, 100,
            "the peer took 100 bytes, then nothing"
        );
    }

    #[test]
    fn a_send_the_peer_takes_completes_without_waiting() {
        let _clock = mock_clock();
        let (mut rx, mut tx) = ([0; WS_RX_BUF], [0; WS_TX_BUF]);
        let mut ws = open(StallingPeer::taking(usize::MAX), &mut rx, &mut tx);
        let packet = [7u8; 600];
        assert_eq!(poll_once(pin!(ws.send(&packet))), Poll::Ready(Ok(())));
        assert_eq!(ws.socket.taken, 600 + 4 + 4, "packet, header, mask key");
    }

    #[test]
    fn a_close_the_peer_never_takes_resets_the_connection_after_the_close_timeout() {
        let _clock = mock_clock();
        let (mut rx, mut tx) = ([0; WS_RX_BUF], [0; WS_TX_BUF]);
        let mut ws = open(StallingPeer::taking(0), &mut rx, &mut tx);
        {
            let mut close = pin!(ws.close());
            assert!(poll_once(close.as_mut()).is_pending());
            advance_ms(999);
            assert!(poll_once(close.as_mut()).is_pending(), "still within 1 s");
            advance_ms(1);
            assert_eq!(poll_once(close.as_mut()), Poll::Ready(()));
        }
        assert!(ws.socket.aborted, "reset instead of the polite close");
        assert!(
            !ws.socket.fin_sent,
            "the Close frame never went out, so no FIN either"
        );
        assert!(!ws.open);
    }

    #[test]
    fn a_close_the_peer_acknowledges_ends_without_waiting() {
        let _clock = mock_clock();
        let (mut rx, mut tx) = ([0; WS_RX_BUF], [0; WS_TX_BUF]);
        let mut ws = open(StallingPeer::taking(usize::MAX), &mut rx, &mut tx);
        assert_eq!(poll_once(pin!(ws.close())), Poll::Ready(()));
        assert!(
            ws.socket.fin_sent && ws.socket.taken > 0,
            "Close frame, then FIN"
        );
        assert!(!ws.open);
    }

    /// A peer that sends `incoming` (after the opening handshake) and takes every write.
    struct ScriptedPeer {
        incoming: std::vec::Vec<u8>,
        pos: usize,
    }

    impl WsStream for ScriptedPeer {
        async fn connect(&mut self, _: IpEndpoint) -> Result<(), TransportError> {
            Ok(())
        }
        async fn write(&mut self, bytes: &[u8]) -> Result<usize, TransportError> {
            Ok(bytes.len())
        }
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
            let n = (self.incoming.len() - self.pos).min(buf.len());
            buf[..n].copy_from_slice(&self.incoming[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
        fn close(&mut self) {}
        async fn flush(&mut self) -> Result<(), TransportError> {
            Ok(())
        }
        fn abort(&mut self) {}
    }

    /// An unmasked server frame, FIN set.
    fn server_frame(opcode: u8, payload: &[u8]) -> std::vec::Vec<u8> {
        let mut frame = std::vec![0x80 | opcode];
        if payload.len() < 126 {
            frame.push(payload.len() as u8);
        } else {
            frame.push(126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn a_text_message_longer_than_a_packet_ends_the_connection_instead_of_eating_the_next() {
        // Found by the `ws_recv` fuzz target: a 1,306-byte Text message fits the frame buffer
        // but not the packet buffer, so embedded-websocket read it in part and took the next
        // Binary message (a packet) as the rest of the text; the packet was lost silently.
        let _clock = mock_clock();
        let mut incoming = server_frame(0x1, &[b'x'; PACKET_BUF + 106]);
        incoming.extend(server_frame(0x2, b"no"));
        let (mut rx, mut tx) = ([0; WS_RX_BUF], [0; WS_TX_BUF]);
        let mut ws = open(ScriptedPeer { incoming, pos: 0 }, &mut rx, &mut tx);
        let mut buf = [0u8; PACKET_BUF];
        assert_eq!(
            poll_once(pin!(ws.recv(&mut buf))),
            Poll::Ready(Err(TransportError::Malformed))
        );
    }

    #[test]
    fn a_short_text_message_is_skipped_and_the_packet_after_it_returned() {
        let _clock = mock_clock();
        let mut incoming = server_frame(0x1, b"hello");
        incoming.extend(server_frame(0x2, b"packet"));
        let (mut rx, mut tx) = ([0; WS_RX_BUF], [0; WS_TX_BUF]);
        let mut ws = open(ScriptedPeer { incoming, pos: 0 }, &mut rx, &mut tx);
        let mut buf = [0u8; PACKET_BUF];
        assert_eq!(poll_once(pin!(ws.recv(&mut buf))), Poll::Ready(Ok(6)));
        assert_eq!(&buf[..6], b"packet");
    }

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
