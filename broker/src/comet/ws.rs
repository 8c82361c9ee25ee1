//! WebSocket plumbing shared by the device and app endpoints: the explicit tungstenite
//! configuration (small buffers, size limits), close frames with codes, admission of an
//! accepted TCP connection against the connection limits, and the bounded writes
//! (`send_within`, `close_within`) that live sessions use so a client that stops reading
//! is dropped after `limits.ws_write_timeout_ms` instead of pinning its task and slot.
//!
//! Memory: tungstenite 0.30 allocates its read buffer eagerly (128 KiB by default). Both
//! endpoints use a read buffer of 0 (the codec then reserves exactly one frame header or one
//! frame), a write buffer of 0 (each message is written through at once) and a bounded write
//! buffer, which keeps an idle connection at a few KiB.

use std::net::SocketAddr;

use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Error as WsError;

/// A server-side WebSocket over plain TCP or TLS ([`super::tls::Stream`]).
pub type Ws = WebSocketStream<super::tls::Stream>;

/// Upper bound of queued outgoing bytes before writes fail (slow reader protection).
const MAX_WRITE_BUFFER: usize = 64 * 1024;

/// The tungstenite configuration for messages of at most `max_message` bytes.
pub fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(0)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Sends a close frame with `code` and a short reason, then flushes; errors are ignored (the
/// peer may already be gone).
pub async fn close(ws: &mut Ws, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    let _ = ws.flush().await;
}

/// Sends `msg` on a live session's socket, waiting at most `limits.ws_write_timeout_ms` for
/// the client to make room (a client that stops reading would otherwise pin the connection's
/// task and slot forever). A timeout is counted as
/// `broker_limit_rejections_total{limit="ws_write_timeout_ms"}` and fails with an I/O
/// `TimedOut` error; the caller then drops the connection without a close frame.
pub(super) async fn send_within(
    ctx: &super::Context,
    ws: &mut Ws,
    msg: Message,
) -> Result<(), WsError> {
    match tokio::time::timeout(ctx.settings.ws_write_timeout, ws.send(msg)).await {
        Ok(r) => r,
        Err(_) => {
            ctx.router.metrics().limit_hit("ws_write_timeout_ms");
            Err(WsError::Io(std::io::ErrorKind::TimedOut.into()))
        }
    }
}

/// [`close`] bounded by `limits.ws_write_timeout_ms`, for the end of a live session.
pub(super) async fn close_within(ctx: &super::Context, ws: &mut Ws, code: u16, reason: &str) {
    let _ = tokio::time::timeout(ctx.settings.ws_write_timeout, close(ws, code, reason)).await;
}

/// The IP of a connection's peer (for limits); IPv4-mapped IPv6 addresses count as IPv4.
pub fn peer_ip(peer: SocketAddr) -> std::net::IpAddr {
    peer.ip().to_canonical()
}

/// What [`accept`] hands a connection task: the upgraded socket, whether the connection limits
/// admitted it (the task answers a refusal on the socket), and the login deadline.
pub(super) struct Accepted {
    /// The upgraded WebSocket (over TLS when configured).
    pub ws: Ws,
    /// The connection-limit guard, or the limit that refused it.
    pub admitted: Result<super::limits::ConnGuard, super::limits::ConnLimit>,
    /// When the login must be complete (`HANDSHAKE_TIMEOUT` from the connection's start).
    pub deadline: tokio::time::Instant,
}

/// The start every WebSocket endpoint shares: count the connection against the limits, then
/// upgrade (TLS and WebSocket) within the handshake deadline. `None` when the upgrade failed or
/// timed out (counted as a `handshake_timeout` login failure); the socket is then dropped.
pub(super) async fn accept(
    ctx: &super::Context,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    max_message: usize,
    transport: crate::router::Transport,
) -> Option<Accepted> {
    let _ = stream.set_nodelay(true);
    let admitted = ctx.conns.try_acquire(peer_ip(peer));
    let deadline = tokio::time::Instant::now() + ctx.settings.handshake;
    let upgrade = super::tls::upgrade(ctx.tls.as_ref(), stream, config(max_message));
    let upgraded = tokio::select! {
        // A connection still upgrading when the broker stops is just dropped.
        _ = ctx.shutdown.cancelled() => return None,
        r = tokio::time::timeout_at(deadline, upgrade) => r,
    };
    match upgraded {
        Ok(Ok(ws)) => Some(Accepted {
            ws,
            admitted,
            deadline,
        }),
        Ok(Err(e)) => {
            tracing::debug!(%peer, transport = transport.as_str(), error = %e, "websocket upgrade failed");
            None
        }
        Err(_) => {
            ctx.login_refused(transport, peer, None, "handshake_timeout");
            None
        }
    }
}

/// Why [`next_before`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupted {
    /// The login deadline passed.
    Timeout,
    /// The broker is shutting down.
    Shutdown,
}

/// The next message before a not-yet-logged-in connection's `deadline`, interrupted by
/// shutdown so that a connection that never logs in cannot hold up the drain.
pub(super) async fn next_before(
    ctx: &super::Context,
    ws: &mut Ws,
    deadline: tokio::time::Instant,
) -> Result<Option<Result<Message, WsError>>, Interrupted> {
    tokio::select! {
        _ = ctx.shutdown.cancelled() => Err(Interrupted::Shutdown),
        r = tokio::time::timeout_at(deadline, ws.next()) => r.map_err(|_| Interrupted::Timeout),
    }
}
