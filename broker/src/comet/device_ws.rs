//! The device WebSocket endpoint: one binary message = one protocol packet (docs/protocol.md
//! section 2), byte-for-byte as over UDP.
//!
//! Per connection (one task, see the comet module docs): admission against the connection
//! limits, the WebSocket upgrade and the HELLO / CHALLENGE / LOGIN handshake within
//! `timeouts.handshake_secs`, then the session loop over the socket, the router's outbound queue
//! and the [`Link`] timers. Close codes: 1000 after a Goodbye, 1009 for an oversized message,
//! `4000 + code` when the broker ends the session for protocol `code` (module [`convert`](super::convert)).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use shared_protocol::codes::Code;
use shared_protocol::frame::Body;
use shared_protocol::handshake::{Carrier, HelloError, HelloReply, reject_answer, reject_packet};
use shared_protocol::keys::PeerAddr;
use shared_protocol::limits::MAX_PACKET;
use shared_protocol::packet::{PacketType, peek_header};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};

use crate::logging::session_end::SessionEnd;
use crate::router::{Login, Outbound, Session, Transport};

use super::Context;
use super::convert::{close_code, kick_code};
use super::device::{self, Reaction};
use super::link::{Link, Polled};
use super::logins::{self, LoginOutcome};
use super::sendwin::Tag;
use super::worker::FrameWorker;
use super::ws::{self, Ws};

const T: Transport = Transport::DeviceWs;

/// Accepts device WebSocket connections until shutdown.
pub async fn serve(ctx: Arc<Context>, listener: TcpListener) {
    ws::serve_with(ctx, listener, "device_ws", connection).await;
}

/// How a connection ended (for the lifecycle log line).
#[derive(Debug)]
enum End {
    /// The peer closed or the socket failed.
    Closed,
    /// The device said Goodbye.
    Goodbye,
    /// The broker ended it with this code.
    Code(Code),
    /// The client broke the WebSocket framing rules: closed with this RFC 6455 code
    /// ([`ws::violation_close_code`]).
    Violation(u16),
}

/// What a logged-in connection keeps until it ends, in one heap block of its exact size: the
/// socket, the link and the router session. The connection's task then holds only this block's
/// address and the small future of [`run`] (docs/performance.md, "Memory per session").
struct Live {
    ws: Ws,
    link: Link,
    session: Session,
    /// Counted against the connection limits until the connection is closed ([`finish`]).
    guard: super::limits::ConnGuard,
}

/// One connection's task. Memory: the upgrade and the login run in a boxed future freed once
/// they are done ([`open`]), and the end in another ([`finish`]), so for the connection's life
/// the task holds only the [`Live`] block's address, `ctx` and the session loop.
fn connection(
    ctx: Arc<Context>,
    stream: TcpStream,
    peer: SocketAddr,
) -> impl std::future::Future<Output = ()> + Send {
    let opening = Box::pin(open(ctx.clone(), stream, peer));
    async move {
        let Some(mut live) = opening.await else {
            return;
        };
        let end = {
            let Live {
                ws, link, session, ..
            } = &mut *live;
            run(&ctx, ws, link, session).await
        };
        Box::pin(finish(&ctx, live, end)).await;
    }
}

/// Admission, the upgrade and the handshake: the logged-in connection, or `None` once a
/// connection that did not log in has been answered and closed.
async fn open(ctx: Arc<Context>, stream: TcpStream, peer: SocketAddr) -> Option<Box<Live>> {
    let ws::Accepted {
        peer,
        mut ws,
        admitted,
        deadline,
    } = ws::accept(&ctx, stream, peer, ctx.settings.max_device_packet, T).await?;
    let ws::Admitted {
        conn: guard,
        pending,
    } = match admitted {
        Ok(a) => a,
        Err(refused) => {
            let limit = refused.limit;
            let code = match limit {
                super::limits::ConnLimit::Total => Code::SERVER_BUSY,
                super::limits::ConnLimit::PerIp => Code::RATE_LIMITED,
            };
            // Bounded by the refusal's short deadline: a refused client that does not read
            // must not hold its refusal slot.
            let _ = tokio::time::timeout_at(
                deadline,
                ws::close(&mut ws, close_code(code), limit.key()),
            )
            .await;
            return None;
        }
    };
    ctx.router.metrics().connection_opened(T);
    let logged_in = handshake(&ctx, &mut ws, peer, deadline, &pending).await;
    drop(pending);
    match logged_in {
        Ok((link, session)) => Some(Box::new(Live {
            // Without the buffers the login left (about 270 B of an idle session).
            ws: ws::compact(ws, ctx.settings.max_device_packet),
            link,
            session,
            guard,
        })),
        Err(end) => {
            close(&ctx, &mut ws, peer, &end).await;
            drop(guard);
            None
        }
    }
}

/// The end of a logged-in connection: the router session is closed, then the socket.
async fn finish(ctx: &Context, live: Box<Live>, end: End) {
    let Live {
        mut ws,
        session,
        guard,
        ..
    } = *live;
    // The client's address as the session knows it (the one the login came from).
    let peer = session.handle().peer();
    session.close().await;
    close(ctx, &mut ws, peer, &end).await;
    drop(guard);
}

/// Closes the socket as `end` says, logs it and counts the connection closed.
async fn close(ctx: &Context, ws: &mut Ws, peer: SocketAddr, end: &End) {
    match end {
        End::Closed => {}
        End::Goodbye => ws::close_within(ctx, ws, 1000, "goodbye").await,
        End::Code(code) => ws::close_within(ctx, ws, close_code(*code), code.description()).await,
        End::Violation(code) => ws::close_within(ctx, ws, *code, "protocol error").await,
    }
    tracing::debug!(%peer, reason = %session_end(end).reason(), "device_ws connection closed");
    ctx.router.metrics().connection_closed(T);
}

async fn send_packet(ws: &mut Ws, packet: Vec<u8>) -> Result<(), WsError> {
    ws.send(Message::Binary(Bytes::from(packet))).await
}

/// [`send_packet`] for a live session: bounded by `limits.ws_write_timeout_ms` ([`ws::send_within`]).
async fn send_live(ctx: &Context, ws: &mut Ws, packet: Bytes) -> Result<(), WsError> {
    ws::send_within(ctx, ws, Message::Binary(packet)).await
}

fn mutable(b: Bytes) -> BytesMut {
    b.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..]))
}

fn ws_error_end(ctx: &Context, e: &WsError) -> End {
    if matches!(e, WsError::Capacity(CapacityError::MessageTooLong { .. })) {
        ctx.router.metrics().limit_hit("max_device_frame_bytes");
        End::Code(Code::TOO_LARGE)
    } else if let Some(code) = ws::violation_close_code(e) {
        ctx.router.metrics().ws_protocol_error(T);
        End::Violation(code)
    } else {
        End::Closed
    }
}

/// HELLO / CHALLENGE / LOGIN until a session is registered, REJECT ends the connection.
async fn handshake(
    ctx: &Context,
    ws: &mut Ws,
    peer: SocketAddr,
    deadline: Instant,
    pending: &super::pending::PendingGuard,
) -> Result<(Link, Session), End> {
    let peer_addr = PeerAddr::from(peer);
    let m = ctx.router.metrics();
    loop {
        let msg = match ws::next_before(ctx, ws, deadline, pending).await {
            // Newer connections needed its place (counted then).
            Err(ws::Interrupted::Evicted) => return Err(End::Code(Code::SERVER_BUSY)),
            Err(ws::Interrupted::Shutdown) => {
                let mut rej = [0u8; 16];
                if let Ok(p) = reject_packet(Code::SHUTDOWN, 1000, &mut rej) {
                    let _ = send_packet(ws, p.to_vec()).await;
                }
                return Err(End::Code(Code::SHUTDOWN));
            }
            Err(ws::Interrupted::Timeout) => {
                ctx.login_refused(T, peer, None, "handshake_timeout");
                return Err(End::Code(Code::TIMEOUT));
            }
            Ok(None) => return Err(End::Closed),
            Ok(Some(Err(e))) => return Err(ws_error_end(ctx, &e)),
            Ok(Some(Ok(msg))) => msg,
        };
        let bytes = match msg {
            Message::Binary(b) => b,
            Message::Text(_) => return Err(End::Code(Code::MALFORMED)),
            Message::Close(_) => return Err(End::Closed),
            _ => continue,
        };
        let now = crate::router::now_ms();
        let is_hello = bytes.get(1) == Some(&(PacketType::Hello as u8));
        if is_hello {
            match hello_reply(ctx, &peer_addr, &bytes, now) {
                Some((reply, None)) => {
                    send_packet(ws, reply).await.map_err(|_| End::Closed)?;
                }
                Some((reject, Some(code))) => {
                    ctx.login_refused(T, peer, None, "hello_rejected");
                    let _ = send_packet(ws, reject).await;
                    return Err(End::Code(code));
                }
                None => {}
            }
            continue;
        }
        if !matches!(peek_header(&bytes), Ok((PacketType::Login, _))) {
            continue;
        }
        // The TCP connection has already proven the source address, so the login rate is
        // charged before the LOGIN is checked (UDP charges it once the cookie proves it).
        if !ctx.login_rate.allow(ws::peer_ip(peer), now) {
            m.limit_hit("login_attempts_per_ip_per_sec");
            ctx.login_refused(T, peer, logins::claimed_terminal(&bytes), "rate_limited");
            let mut out = [0u8; 16];
            if let Ok(p) = reject_packet(Code::RATE_LIMITED, 1000, &mut out) {
                let _ = send_packet(ws, p.to_vec()).await;
            }
            return Err(End::Code(Code::RATE_LIMITED));
        }
        let sid = ctx.session_id();
        let params = ctx.welcome_params();
        // On the heap, and only for this step: a buffer here would live in the connection's
        // future, and so in its memory, for the whole connection.
        let mut out = vec![0u8; MAX_PACKET];
        let admitted = || true;
        let accepted = match ctx
            .logins
            .on_login(&peer_addr, &bytes, now, sid, &params, admitted, &mut out)
        {
            LoginOutcome::Accepted(a) => a,
            // Not asked for here (charged above).
            LoginOutcome::RateLimited => return Err(End::Code(Code::RATE_LIMITED)),
            LoginOutcome::Duplicate => {
                // Unanswered (its WELCOME is on its way), counted.
                m.login_failed(T, "duplicate");
                continue;
            }
            LoginOutcome::NoRandomness => {
                tracing::error!("the OS random generator failed; login refused");
                ctx.login_refused(T, peer, logins::claimed_terminal(&bytes), "internal");
                let mut rej = [0u8; 16];
                if let Some(p) = reject_answer(bytes.len(), Code::INTERNAL, 0, &mut rej) {
                    let _ = send_packet(ws, p.to_vec()).await;
                }
                return Err(End::Code(Code::INTERNAL));
            }
            LoginOutcome::Refused(e) => match e.code() {
                None => continue,
                Some(code) => {
                    ctx.login_refused(
                        T,
                        peer,
                        logins::claimed_terminal(&bytes),
                        logins::failure_label(e),
                    );
                    // Same anti-amplification rule as UDP (section 2): a REJECT longer than
                    // the LOGIN is not sent; the connection still closes with the code.
                    let mut rej = [0u8; 16];
                    if let Some(p) = reject_answer(bytes.len(), code, 0, &mut rej) {
                        let _ = send_packet(ws, p.to_vec()).await;
                    }
                    return Err(End::Code(code));
                }
            },
        };
        let welcome = accepted.welcome.to_vec();
        let login = Login {
            address: accepted.address,
            transport: T,
            peer,
            since_id: accepted.since_id,
            upload_epoch: accepted.upload_epoch,
        };
        // TCP loses nothing: the send window never resends within the session
        // (docs/protocol.md section 5, "Reliable transport").
        let link = Link::new(accepted.session, ctx.mono_ms()).with_carrier(Carrier::Reliable);
        let session = match ctx.router.login(login).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "device_ws login not registered");
                ctx.login_refused(T, peer, logins::claimed_terminal(&bytes), "unavailable");
                let mut rej = [0u8; 16];
                if let Ok(p) = reject_packet(Code::UNAVAILABLE, 1000, &mut rej) {
                    let _ = send_packet(ws, p.to_vec()).await;
                }
                return Err(End::Code(Code::UNAVAILABLE));
            }
        };
        send_packet(ws, welcome).await.map_err(|_| End::Closed)?;
        return Ok((link, session));
    }
}

/// The answer to a HELLO: a CHALLENGE (`None` code) or a REJECT with its code; `None` when
/// the HELLO is dropped. Synchronous, so its packet buffer is never part of the connection's
/// future.
fn hello_reply(
    ctx: &Context,
    peer: &PeerAddr,
    hello: &[u8],
    now: u64,
) -> Option<(Vec<u8>, Option<Code>)> {
    let mut out = [0u8; MAX_PACKET];
    let answer = ctx.logins.on_hello(peer, hello, now, &mut out);
    if answer.clock_saturated {
        ctx.router.metrics().challenge_clock_saturated();
    }
    match answer.reply {
        Ok(HelloReply::Challenge(p)) => Some((p.to_vec(), None)),
        Ok(HelloReply::Reject { code, packet }) => Some((packet.to_vec(), Some(code))),
        Err(HelloError::Dropped(_) | HelloError::BufferTooSmall) => None,
    }
}

/// What woke the session loop.
enum Woke {
    /// The socket: a message, a read error, or its end, sorted by [`socket_step`].
    Socket(SocketStep),
    /// The router: an event for the terminal, or the session's end (`None`).
    Event(Option<Outbound>),
    /// The link's next timer is due.
    Timer,
}

/// The session loop (see module docs).
///
/// Memory: this loop is what an idle connection's task holds for its whole life, so it borrows
/// the link and session (kept in the [`Live`] block by the caller) instead of owning them (an
/// async fn keeps owned arguments twice). While idle it holds only the frame worker's pointer
/// (null until the first work frame) and the three waits (socket, router queue, timer). What it
/// does when one of them wakes runs in a boxed future of its own, allocated for that step only
/// and sized for that kind of step ([`on_packet`], [`on_event`], [`run_timers`]), rather than
/// reserving the largest step's size here for the connection's whole life. Each of those boxes
/// stays under 1 KiB, where the allocator serves it from its per-thread cache.
async fn run(ctx: &Context, ws: &mut Ws, link: &mut Link, session: &mut Session) -> End {
    let me = session.handle().address();
    // Created by the first work frame (Send, Upload, Request): one null pointer while idle.
    let mut worker: Option<Box<FrameWorker>> = None;
    let end = loop {
        let wake = ctx.instant_at(link.poll_timeout(ctx.settings.session_timeout_ms()));
        // The waits are dropped before the step runs, and what woke the loop moves into the
        // step, so none of them takes room in this future while the step runs.
        let woke = tokio::select! {
            msg = ws.next() => Woke::Socket(socket_step(ctx, msg)),
            ev = session.next(), if link.can_send() => Woke::Event(ev),
            _ = tokio::time::sleep_until(wake) => Woke::Timer,
        };
        // The step is made before it is awaited, so `woke` is gone by then and only the box's
        // pointer takes room in this future across the await.
        let step: Pin<Box<dyn Future<Output = Option<End>> + Send + '_>> = match woke {
            Woke::Socket(SocketStep::Packet(b)) => {
                Box::pin(on_packet(ctx, ws, link, session, &mut worker, b))
            }
            Woke::Socket(SocketStep::End(end)) => break end,
            Woke::Socket(SocketStep::Nothing) => continue,
            Woke::Event(ev) => Box::pin(on_event(ctx, ws, link, session, ev)),
            Woke::Timer => Box::pin(run_timers(ctx, ws, link)),
        };
        if let Some(end) = step.await {
            break end;
        }
    };
    crate::logging::session_end::session_ended(&me, T.as_str(), session_end(&end));
    end
}

/// What a message (or the end) read from the socket asks the session loop to do.
enum SocketStep {
    /// Handle this protocol packet ([`on_packet`]).
    Packet(BytesMut),
    /// End the session.
    End(End),
    /// Nothing (a control message tungstenite answers itself).
    Nothing,
}

/// Sorts what the socket yielded. Only a packet's bytes are kept, so the rest of the message
/// (a read error is large) takes no room in the session loop.
fn socket_step(ctx: &Context, msg: Option<Result<Message, WsError>>) -> SocketStep {
    match msg {
        Some(Ok(Message::Binary(b))) => SocketStep::Packet(mutable(b)),
        Some(Ok(Message::Text(_))) => SocketStep::End(End::Code(Code::MALFORMED)),
        Some(Ok(Message::Close(_))) | None => SocketStep::End(End::Closed),
        Some(Ok(_)) => SocketStep::Nothing,
        Some(Err(e)) => SocketStep::End(ws_error_end(ctx, &e)),
    }
}

/// One router event for the session (`None`: the session ended). `Some` ends the session.
async fn on_event(
    ctx: &Context,
    ws: &mut Ws,
    link: &mut Link,
    session: &mut Session,
    ev: Option<Outbound>,
) -> Option<End> {
    match ev {
        Some(Outbound::Kick { reason }) => {
            let code = kick_code(reason);
            if let Some(p) = sealed(|o| link.seal_unreliable(Body::Kick { reason: code }, o).ok()) {
                let _ = send_live(ctx, ws, p).await;
            }
            Some(End::Code(code))
        }
        Some(ev) => send_burst(ctx, ws, link, session, ev).await,
        None => Some(End::Closed),
    }
}

/// How `end` is reported in the session-end log line.
fn session_end(end: &End) -> SessionEnd {
    match end {
        End::Closed => SessionEnd::ConnectionClosed,
        End::Goodbye => SessionEnd::Terminal(Code::NORMAL),
        End::Code(code) => SessionEnd::Broker(*code),
        End::Violation(_) => SessionEnd::Broker(Code::MALFORMED),
    }
}

/// Sends `first` and every event the session has queued behind it while the send window has
/// room, sealed one after the other and written with one flush (one system call for a burst,
/// such as the queued deliveries of a broadcast, instead of one per event). A Kick among them is
/// sent last and ends the session.
async fn send_burst(
    ctx: &Context,
    ws: &mut Ws,
    link: &mut Link,
    session: &mut Session,
    first: Outbound,
) -> Option<End> {
    let mut packets = Vec::new();
    let mut end = None;
    let mut next = Some(first);
    while let Some(ev) = next.take() {
        if let Outbound::Kick { reason } = ev {
            let code = kick_code(reason);
            packets.extend(sealed(|o| {
                link.seal_unreliable(Body::Kick { reason: code }, o).ok()
            }));
            end = Some(End::Code(code));
            break;
        }
        packets.extend(seal_event(ctx, link, &ev));
        if link.can_send() {
            next = session.try_next();
        }
    }
    let written = ws::send_all_within(ctx, ws, packets.into_iter().map(Message::Binary)).await;
    // A kick ends the session whether or not it could be written.
    end.or_else(|| written.err().map(|_| End::Closed))
}

/// Seals one event as a reliable frame; `None` (logged) when it does not fit a frame.
fn seal_event(ctx: &Context, link: &mut Link, ev: &Outbound) -> Option<Bytes> {
    let (body, tag) = device::outbound_body(ev)?;
    let now = ctx.mono_ms();
    let p = sealed(|o| link.seal_reliable(body, tag, now, rand::random(), o).ok());
    if p.is_none() {
        tracing::warn!(event = ?ev, "device_ws: event does not fit a frame, dropped");
    }
    p
}

/// Runs `seal` on a scratch buffer and returns the packet in an allocation of its own size
/// (the scratch buffer lives on this synchronous call's stack, never in the session's future).
fn sealed(seal: impl FnOnce(&mut [u8]) -> Option<usize>) -> Option<Bytes> {
    let mut scratch = [0u8; MAX_PACKET];
    let n = seal(&mut scratch)?;
    Some(Bytes::copy_from_slice(&scratch[..n]))
}

/// Sends what the link's timers have due (acknowledgements, pings), one packet at a time;
/// `Some` ends the session.
async fn run_timers(ctx: &Context, ws: &mut Ws, link: &mut Link) -> Option<End> {
    loop {
        match poll_link(ctx, link) {
            TimerStep::Send(p) => {
                if send_live(ctx, ws, p).await.is_err() {
                    return Some(End::Closed);
                }
            }
            TimerStep::Dead(code) => {
                if let Some(p) =
                    sealed(|o| link.seal_unreliable(Body::Kick { reason: code }, o).ok())
                {
                    let _ = send_live(ctx, ws, p).await;
                }
                return Some(End::Code(code));
            }
            TimerStep::Idle => return None,
        }
    }
}

/// What one poll of a link's timers asks for.
enum TimerStep {
    /// Send this packet, then poll again.
    Send(Bytes),
    /// The session is over for this reason.
    Dead(Code),
    /// Nothing is due.
    Idle,
}

/// Polls the link's timers once, sealing into a scratch buffer on this synchronous call's stack
/// (as [`sealed`] does).
fn poll_link(ctx: &Context, link: &mut Link) -> TimerStep {
    let mut scratch = [0u8; MAX_PACKET];
    let polled = link.poll(
        ctx.mono_ms(),
        ctx.settings.session_timeout_ms(),
        rand::random(),
        &mut scratch,
    );
    match polled {
        Polled::Send(n) | Polled::Resend(n) => {
            // A WebSocket link never resends; were one to, it would be counted.
            if matches!(polled, Polled::Resend(_)) {
                ctx.router.metrics().device_resend(T);
            }
            TimerStep::Send(Bytes::copy_from_slice(&scratch[..n]))
        }
        Polled::Dead(code) => TimerStep::Dead(code),
        Polled::Idle => TimerStep::Idle,
    }
}

async fn on_packet(
    ctx: &Context,
    ws: &mut Ws,
    link: &mut Link,
    session: &Session,
    worker: &mut Option<Box<FrameWorker>>,
    mut buf: BytesMut,
) -> Option<End> {
    let handle = session.handle();
    let me = handle.address();
    let received = match link.receive(&mut buf, ctx.mono_ms()) {
        Ok(r) => r,
        Err(shared_protocol::session::SessionError::Decode) => {
            let e = Body::Error {
                code: Code::MALFORMED,
                about_seq: 0,
            };
            return reliable(ctx, ws, link, e).await;
        }
        // Not authentic, replayed, another session, or a handshake packet: ignored.
        Err(_) => return None,
    };
    // Deliveries reach a terminal in id order, and an ack covers every id at or below it
    // (docs/protocol.md): the highest id this packet acknowledged stands for all of them.
    if let Some(&msg_id) = received.delivered.iter().max()
        && let Err(e) = ctx.router.ack(me, msg_id).await
    {
        tracing::warn!(terminal = %me, msg_id, error = %e, "ack not stored");
    }
    // Reliable frames come in `seq` order: the one just received, then any it released.
    let mut worker = device::LazyWorker::new(worker, ctx, handle, ctx.mono_ms());
    let reactions: Vec<Reaction> = received
        .frames()
        .map(|frame| device::on_frame(&ctx.router, handle, &mut worker, &frame, ctx.mono_ms()))
        .collect();
    for reaction in reactions {
        if let Some(end) = react(ctx, ws, link, reaction).await {
            return Some(end);
        }
    }
    None
}

/// Carries out what the session must do about one device frame.
async fn react(ctx: &Context, ws: &mut Ws, link: &mut Link, reaction: Reaction) -> Option<End> {
    match reaction {
        Reaction::Nothing => None,
        Reaction::Goodbye => Some(End::Goodbye),
        Reaction::Pong => {
            let pong = Body::Pong {
                server_time_ms: crate::router::now_ms(),
            };
            let p = sealed(|o| link.seal_unreliable(pong, o).ok())?;
            send_live(ctx, ws, p).await.err().map(|_| End::Closed)
        }
        Reaction::Error { code, about_seq } => {
            reliable(ctx, ws, link, Body::Error { code, about_seq }).await
        }
        Reaction::Acknowledge => {
            let p = sealed(|o| link.seal_pending_ack(o).ok().flatten())?;
            send_live(ctx, ws, p).await.err().map(|_| End::Closed)
        }
    }
}

/// Sends an advisory `Error` as a reliable frame if the window has room; when 16 frames are
/// already unacknowledged it is dropped and counted (refusals for load never come here:
/// `comet::device`).
async fn reliable(ctx: &Context, ws: &mut Ws, link: &mut Link, body: Body<'_>) -> Option<End> {
    let now = ctx.mono_ms();
    let Some(p) = sealed(|o| {
        link.seal_reliable(body, Tag::Plain, now, rand::random(), o)
            .ok()
    }) else {
        ctx.router.metrics().advisory_error_dropped(T);
        return None;
    };
    send_live(ctx, ws, p).await.err().map(|_| End::Closed)
}
