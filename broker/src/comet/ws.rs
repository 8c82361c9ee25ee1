//! WebSocket plumbing shared by the device and app endpoints: the explicit tungstenite
//! configuration (small buffers, size limits), close frames with codes, admission of an
//! accepted TCP connection against the connection limits, and the bounded writes
//! (`send_within`, `close_within`) that live sessions use so a client that stops reading
//! is dropped after `limits.ws_write_timeout_ms` instead of pinning its task and slot, and the
//! accept loop every WebSocket listener runs ([`serve_with`]).
//!
//! Memory: once a session is logged in, [`compact`] gives back the buffers its login left in the
//! WebSocket library, so an idle session holds neither a read nor a write buffer.
//! tungstenite 0.30 allocates its read buffer eagerly (128 KiB by default). Both
//! endpoints use a read buffer of 0 (the codec then reserves exactly one frame header or one
//! frame) and a bounded write buffer, which keeps an idle connection at a few KiB. Its write
//! buffer is allocated only when something is written: [`send_within`] writes a message through
//! at once, [`send_all_within`] queues a burst of messages (up to [`WRITE_BATCH`] bytes at a
//! time) and writes them with one system call; the buffer then keeps the capacity of the largest
//! burst, at most about [`WRITE_BATCH`] plus one message.

use std::net::SocketAddr;

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::ProtocolError;

/// A server-side WebSocket over plain TCP or TLS ([`super::tls::Stream`]), whose reads stop at
/// frame ends until the login is done ([`super::frame_reads`], [`compact`]).
pub type Ws = super::ws_stream::WsStream<super::frame_reads::Bounded<super::tls::Stream>>;

/// Upper bound of queued outgoing bytes before writes fail (slow reader protection), for
/// messages up to this size; a larger `max_message` raises it to one message and its header.
const MAX_WRITE_BUFFER: usize = 64 * 1024;

/// Bytes of a burst queued before they are written out ([`send_all_within`]): sixteen
/// deliveries with small payloads (the send window) go out in one write.
pub const WRITE_BATCH: usize = 4 * 1024;

/// The tungstenite configuration for messages of at most `max_message` bytes.
pub fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(0)
        .write_buffer_size(WRITE_BATCH)
        .max_write_buffer_size(MAX_WRITE_BUFFER.max(max_message + 14))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// The WebSocket of a connection that just logged in, without the read and write buffers
/// the upgrade and the login left behind (about 270 B an idle session would otherwise keep:
/// the library keeps both at the capacity of the largest frame so far). The library's state
/// is dropped and the socket wrapped anew with the same configuration, which is safe because
/// reads stopped at frame ends until now: every byte read was handed over in a message
/// ([`super::frame_reads`]). When that is not known (a fragmented message half-way) the
/// WebSocket is kept as it is. Reads are no longer bounded after this, either way. Call it
/// only once everything sent was flushed (`send`, not `feed`).
pub fn compact(mut ws: Ws, max_message: usize) -> Ws {
    if !ws.get_ref().at_message_boundary() {
        ws.get_mut().stop_bounding();
        return ws;
    }
    let mut io = ws.into_inner();
    io.stop_bounding();
    Ws::from_raw_socket(io, Role::Server, config(max_message))
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

/// [`send_within`] for several messages: each is queued, then one flush writes them all (one
/// system call while they fit [`WRITE_BATCH`]), within one `limits.ws_write_timeout_ms`.
pub(super) async fn send_all_within(
    ctx: &super::Context,
    ws: &mut Ws,
    msgs: impl IntoIterator<Item = Message>,
) -> Result<(), WsError> {
    let write = async {
        for msg in msgs {
            ws.feed(msg).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(ctx.settings.ws_write_timeout, write).await {
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

/// The close code RFC 6455 prescribes for a read error that is the client's fault: 1002
/// (protocol error) for a frame that breaks the framing rules, among them a compressed frame
/// (reserved bit 1 set) when no extension was negotiated (the endpoints never accept
/// `permessage-deflate`), and 1007 for a text message that is not UTF-8. `None` for a peer
/// that just went away, and for an oversized message, which each endpoint answers with 1009
/// itself.
pub(super) fn violation_close_code(e: &WsError) -> Option<u16> {
    match e {
        WsError::Utf8(_) => Some(1007),
        WsError::Protocol(
            ProtocolError::NonZeroReservedBits
            | ProtocolError::UnmaskedFrameFromClient
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::ControlFrameTooBig
            | ProtocolError::UnknownControlFrameType(_)
            | ProtocolError::UnknownDataFrameType(_)
            | ProtocolError::UnexpectedContinueFrame
            | ProtocolError::ExpectedFragment(_)
            | ProtocolError::InvalidOpcode(_)
            | ProtocolError::InvalidCloseSequence,
        ) => Some(1002),
        _ => None,
    }
}

/// The IP of a connection's peer (for limits); IPv4-mapped IPv6 addresses count as IPv4.
pub fn peer_ip(peer: SocketAddr) -> std::net::IpAddr {
    peer.ip().to_canonical()
}

/// Accepts connections on `listener` until shutdown, running `connection` for each in a task
/// of its own; an accept error is logged (naming the listener `what`) and retried after a short
/// pause, so a file-descriptor shortage does not spin.
pub(super) async fn serve_with<F, Fut>(
    ctx: std::sync::Arc<super::Context>,
    listener: tokio::net::TcpListener,
    what: &'static str,
    connection: F,
) where
    F: Fn(std::sync::Arc<super::Context>, tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(connection(ctx.clone(), stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, listener = what, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

/// A connection refused by a limit, with the slot that lets the task answer it
/// ([`super::limits::ConnLimiter::try_refusal`]).
#[derive(Debug)]
pub(super) struct Refused {
    /// The limit that refused the connection.
    pub limit: super::limits::ConnLimit,
    /// Held while the refusal is answered.
    _slot: super::limits::RefusalGuard,
}

/// Longest a refused connection may take to upgrade before it is dropped unanswered (a refusal
/// slot is held meanwhile, so it is short whatever `timeouts.handshake_secs` is).
const REFUSAL_UPGRADE: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest a trusted balancer may take to send its PROXY header (it sends it at once); the
/// connection is not yet counted against the limits meanwhile.
const PROXY_HEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`accept`] hands a connection task: the upgraded socket, whether the connection limits
/// admitted it (the task answers a refusal on the socket), and the login deadline.
pub(super) struct Accepted {
    /// The client's address: the TCP peer, or the source a trusted load balancer's PROXY
    /// header named ([`super::proxy`]). Limits and log lines use it.
    pub peer: SocketAddr,
    /// The upgraded WebSocket (over TLS when configured).
    pub ws: Ws,
    /// The admitted connection's guards, or the refusal to answer. The refusal is already
    /// counted (`broker_limit_rejections_total{limit}`).
    pub admitted: Result<Admitted, Refused>,
    /// When the login must be complete (`HANDSHAKE_TIMEOUT` from the connection's start).
    pub deadline: tokio::time::Instant,
}

/// What an admitted connection holds: its connection-limit slot for its whole life, and its
/// place among the pending handshakes ([`super::pending`]) until its login is done.
pub(super) struct Admitted {
    /// Counted against `limits.max_connections` and `max_connections_per_ip` while held.
    pub conn: super::limits::ConnGuard,
    /// Until the login is done: the login ends when it is evicted while waiting for a message
    /// ([`next_before`]), and is dropped after.
    pub pending: super::pending::PendingGuard,
}

/// The start every WebSocket endpoint shares: take the client's address from a PROXY header
/// when `proxy_protocol.listeners` names this endpoint ([`super::proxy`]; a refused header
/// closes the connection), count the
/// connection against the limits, then
/// upgrade (TLS and WebSocket) within the handshake deadline. `None` when the upgrade failed or
/// timed out (counted as a `handshake_timeout` login failure); the socket is then dropped.
///
/// A refused connection is counted under its limit's key; it is upgraded (within
/// [`REFUSAL_UPGRADE`]) so the task can answer with a close code only if a refusal slot is free,
/// otherwise it is dropped at once and also counted under `max_pending_refusals`.
pub(super) async fn accept(
    ctx: &super::Context,
    mut stream: tokio::net::TcpStream,
    tcp_peer: SocketAddr,
    max_message: usize,
    transport: crate::router::Transport,
) -> Option<Accepted> {
    let _ = stream.set_nodelay(true);
    let mut deadline = tokio::time::Instant::now() + ctx.settings.handshake;
    let proxy_refused = |refusal: super::proxy::Refusal| {
        tracing::debug!(peer = %tcp_peer, transport = transport.as_str(), reason = refusal.as_str(), "PROXY header refused");
        ctx.router.metrics().proxy_refused(refusal.as_str());
    };
    // The PROXY protocol settings when this listener takes headers.
    let proxy = ctx.settings.proxy.as_ref().and_then(|p| {
        p.on(match transport {
            crate::router::Transport::AppWs => super::proxy::Listener::AppWs,
            _ => super::proxy::Listener::DeviceWs,
        })
    });
    // A trusted balancer's header comes first and names the client the limits count.
    let trusted = proxy.filter(|p| p.trusts(tcp_peer));
    let peer = match trusted {
        None => tcp_peer,
        Some(proxy) => {
            let header_by = deadline.min(tokio::time::Instant::now() + PROXY_HEADER_WAIT);
            match proxy.read_client(&mut stream, tcp_peer, header_by).await {
                Ok(client) => client,
                Err(refusal) => {
                    proxy_refused(refusal);
                    return None;
                }
            }
        }
    };
    let admitted = match ctx.conns.try_acquire(peer_ip(peer)) {
        Ok(conn) => {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
            let (pending, evicted_another) =
                ctx.pending
                    .admit(peer_ip(peer), fd, std::time::Instant::now());
            if evicted_another {
                ctx.router.metrics().limit_hit("max_pending_handshakes");
            }
            Ok(Admitted { conn, pending })
        }
        Err(limit) => {
            ctx.router.metrics().limit_hit(limit.key());
            if limit == super::limits::ConnLimit::Total
                && ctx.pending.make_room(std::time::Instant::now())
            {
                ctx.router.metrics().limit_hit("max_pending_handshakes");
            }
            let Some(slot) = ctx.conns.try_refusal() else {
                ctx.router.metrics().limit_hit("max_pending_refusals");
                return None;
            };
            deadline = deadline.min(tokio::time::Instant::now() + REFUSAL_UPGRADE);
            Err(Refused { limit, _slot: slot })
        }
    };
    // Anyone else may not name an address (checked once the limits hold the connection).
    if proxy.is_some()
        && trusted.is_none()
        && super::proxy::Proxy::starts_with_header(&stream, deadline).await
    {
        proxy_refused(super::proxy::Refusal::Untrusted);
        return None;
    }
    let upgrade = async {
        // The client's first bytes have arrived: from here on the broker serves it, and it is
        // no longer silent among the pending handshakes (`super::pending`).
        // (A peek, which leaves the bytes for the upgrade: readiness alone can be a false
        // positive on a fresh socket.)
        let _ = stream.peek(&mut [0u8; 1]).await;
        if let Ok(a) = &admitted {
            a.pending.spoke(std::time::Instant::now());
        }
        super::tls::upgrade(ctx.tls.as_ref(), stream, config(max_message)).await
    };
    let upgraded = tokio::select! {
        // A connection still upgrading when the broker stops is just dropped.
        _ = ctx.shutdown.cancelled() => return None,
        // One still upgrading when newer ones need its place too (counted at eviction).
        _ = async {
            match &admitted {
                Ok(a) => a.pending.evicted().await,
                Err(_) => std::future::pending().await,
            }
        } => return None,
        r = tokio::time::timeout_at(deadline, upgrade) => r,
    };
    match upgraded {
        Ok(Ok(ws)) => Some(Accepted {
            peer,
            ws,
            admitted,
            deadline,
        }),
        Ok(Err(e)) => {
            tracing::debug!(%peer, transport = transport.as_str(), error = %e, "websocket upgrade failed");
            if admitted.is_ok() {
                // A head over the size limits, not a WebSocket upgrade, or a peer gone.
                ctx.login_refused(transport, peer, None, "bad_upgrade");
            }
            None
        }
        Err(_) if admitted.is_ok() => {
            ctx.login_refused(transport, peer, None, "handshake_timeout");
            None
        }
        // A refused connection that is slow to upgrade was counted under its limit already.
        Err(_) => None,
    }
}

/// Why [`next_before`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupted {
    /// The login deadline passed.
    Timeout,
    /// The broker is shutting down.
    Shutdown,
    /// Newer connections needed this one's place among the pending handshakes (already
    /// counted, [`super::pending`]).
    Evicted,
}

/// The next message before a not-yet-logged-in connection's `deadline`, interrupted by
/// shutdown so that a connection that never logs in cannot hold up the drain, and by the
/// connection's eviction from the pending handshakes (only here, between messages, so a login
/// is never cut off half-way).
pub(super) async fn next_before(
    ctx: &super::Context,
    ws: &mut Ws,
    deadline: tokio::time::Instant,
    pending: &super::pending::PendingGuard,
) -> Result<Option<Result<Message, WsError>>, Interrupted> {
    pending.waiting(std::time::Instant::now());
    tokio::select! {
        _ = ctx.shutdown.cancelled() => Err(Interrupted::Shutdown),
        _ = pending.evicted() => Err(Interrupted::Evicted),
        r = tokio::time::timeout_at(deadline, ws.next()) => r.map_err(|_| Interrupted::Timeout),
    }
}
