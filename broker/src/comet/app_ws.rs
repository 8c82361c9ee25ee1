//! The app WebSocket endpoint: JSON text messages (docs/protocol.md section 7) through
//! `shared_protocol::json`.
//!
//! Per connection (one task): admission against the connection limits, the upgrade, then the
//! first message must be `auth` with an HS256 token (verified with `security.token_secret`)
//! within `timeouts.handshake_secs`; tokens are never read from the URL. After `welcome` the
//! task relays `send` / `ack` / `ping` / `goodbye` to the router and router events as `deliver` /
//! `presence` / `kick`, answering each `send` with `ok` or `error` carrying its `ref`. Stored
//! messages after the `since_id` of `auth` are replayed first, in order (the router's
//! [`Session`] yields them before live events). Silence for `timeouts.session_secs` ends the
//! session with `kick` `HEARTBEAT_TIMEOUT`. Close codes as in [`convert`](super::convert).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use shared_protocol::codes::Code;
use shared_protocol::json::{
    self, AckMsg, Auth, ClientMessage, Deliver, ErrorMsg, JsonError, Kick, OkMsg, Pong, Presence,
    Reject, SendMsg, ServerMessage, Welcome,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};

use crate::logging::session_end::SessionEnd;
use crate::router::{Login, Outbound, Session, Transport};
use crate::terminal::Address;

use super::Context;
use super::convert::{close_code, code_of_close, kick_code};
use super::limits::ConnLimit;
use super::ws::{self, Ws};

const T: Transport = Transport::AppWs;

/// Accepts app WebSocket connections until shutdown.
pub async fn serve(ctx: Arc<Context>, listener: TcpListener) {
    ws::serve_with(ctx, listener, "app_ws", connection).await;
}

/// How a connection ends.
#[derive(Debug)]
enum End {
    /// The peer closed or the socket failed: nothing more to send.
    Closed,
    /// Close with this WebSocket code after the last message was sent.
    Close(u16),
}

/// What a logged-in connection keeps until it ends, in one heap block of its exact size: the
/// socket and the router session. The connection's task then holds only this block's address
/// and the small future of [`run`] (docs/performance.md, "Memory per session").
struct Live {
    ws: Ws,
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
            let Live { ws, session, .. } = &mut *live;
            run(&ctx, ws, session).await
        };
        Box::pin(finish(&ctx, live, end)).await;
    }
}

/// Admission, the upgrade and `auth`: the logged-in connection, or `None` once a connection
/// that did not log in has been answered and closed.
async fn open(ctx: Arc<Context>, stream: TcpStream, peer: SocketAddr) -> Option<Box<Live>> {
    let ws::Accepted {
        peer,
        mut ws,
        admitted,
        deadline,
    } = ws::accept(&ctx, stream, peer, ctx.settings.max_app_message, T).await?;
    let ws::Admitted {
        conn: guard,
        pending,
    } = match admitted {
        Ok(a) => a,
        Err(refused) => {
            let limit = refused.limit;
            let code = match limit {
                ConnLimit::Total => Code::SERVER_BUSY,
                ConnLimit::PerIp => Code::RATE_LIMITED,
            };
            // Bounded by the refusal's short deadline: a refused client that does not read
            // must not hold its refusal slot.
            let answer = async {
                let _ = send(&mut ws, &reject(code)).await;
                ws::close(&mut ws, close_code(code), limit.key()).await;
            };
            let _ = tokio::time::timeout_at(deadline, answer).await;
            return None;
        }
    };
    ctx.router.metrics().connection_opened(T);
    let logged_in = authenticate(&ctx, &mut ws, peer, deadline, &pending).await;
    drop(pending);
    match logged_in {
        Ok(session) => Some(Box::new(Live {
            // Without the buffers the login left in the WebSocket library.
            ws: ws::compact(ws, ctx.settings.max_app_message),
            session,
            guard,
        })),
        Err(end) => {
            close(&ctx, &mut ws, end).await;
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
    } = *live;
    session.close().await;
    close(ctx, &mut ws, end).await;
    drop(guard);
}

/// Closes the socket as `end` says and counts the connection closed.
async fn close(ctx: &Context, ws: &mut Ws, end: End) {
    if let End::Close(code) = end {
        ws::close_within(ctx, ws, code, "").await;
    }
    ctx.router.metrics().connection_closed(T);
}

/// [`send`] for a live session: bounded by `limits.ws_write_timeout_ms` ([`ws::send_within`]).
async fn send_live(ctx: &Context, ws: &mut Ws, msg: &ServerMessage) -> Result<(), WsError> {
    match msg.encode() {
        Ok(text) => ws::send_within(ctx, ws, Message::Text(text.into())).await,
        Err(e) => {
            tracing::warn!(error = %e, kind = msg.type_name(), "app message does not encode");
            Ok(())
        }
    }
}

async fn send(ws: &mut Ws, msg: &ServerMessage) -> Result<(), WsError> {
    match msg.encode() {
        Ok(text) => ws.send(Message::Text(text.into())).await,
        Err(e) => {
            tracing::warn!(error = %e, kind = msg.type_name(), "app message does not encode");
            Ok(())
        }
    }
}

fn reject(code: Code) -> ServerMessage {
    ServerMessage::Reject(Reject {
        code,
        reason: code.description().to_owned(),
    })
}

fn error(code: Code, reference: Option<u32>, message: &str) -> ServerMessage {
    let mut message = message.to_owned();
    message.truncate(shared_protocol::limits::MAX_TEXT);
    while !message.is_char_boundary(message.len()) {
        message.pop();
    }
    ServerMessage::Error(ErrorMsg {
        code,
        reference,
        message,
    })
}

/// What a read error means for the session: an oversized message is answered with an `error`
/// and close 1009 (`Some`); a framing violation is closed at once with its RFC 6455 code
/// (`Err`, counted); anything else means the peer went away (`None`).
fn ws_error_end(ctx: &Context, e: &WsError) -> Result<Option<Code>, End> {
    if matches!(e, WsError::Capacity(CapacityError::MessageTooLong { .. })) {
        ctx.router.metrics().limit_hit("max_app_message_bytes");
        Ok(Some(Code::TOO_LARGE))
    } else if let Some(code) = ws::violation_close_code(e) {
        ctx.router.metrics().ws_protocol_error(T);
        Err(End::Close(code))
    } else {
        Ok(None)
    }
}

/// Waits for `auth`, verifies the token and registers the session; `reject` ends it.
async fn authenticate(
    ctx: &Context,
    ws: &mut Ws,
    peer: SocketAddr,
    deadline: Instant,
    pending: &super::pending::PendingGuard,
) -> Result<Session, End> {
    let m = ctx.router.metrics();
    // `terminal`: the one the login named, if it got that far (for the log line).
    let refuse = |code: Code, label: &'static str, terminal: Option<Address>| {
        ctx.login_refused(T, peer, terminal, label);
        (reject(code), End::Close(close_code(code)))
    };
    let fail = |code: Code, label: &'static str| refuse(code, label, None);
    let (msg, end) = loop {
        let msg = match ws::next_before(ctx, ws, deadline, pending).await {
            // Newer connections needed its place (counted then).
            Err(ws::Interrupted::Evicted) => {
                break (
                    reject(Code::SERVER_BUSY),
                    End::Close(close_code(Code::SERVER_BUSY)),
                );
            }
            Err(ws::Interrupted::Shutdown) => {
                break (
                    reject(Code::SHUTDOWN),
                    End::Close(close_code(Code::SHUTDOWN)),
                );
            }
            Err(ws::Interrupted::Timeout) => break fail(Code::TIMEOUT, "handshake_timeout"),
            Ok(None) => return Err(End::Closed),
            Ok(Some(Err(e))) => match ws_error_end(ctx, &e) {
                Ok(Some(code)) => break fail(code, "too_large"),
                Ok(None) => return Err(End::Closed),
                Err(end) => {
                    ctx.login_refused(T, peer, None, "malformed");
                    return Err(end);
                }
            },
            Ok(Some(Ok(msg))) => msg,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                ctx.login_refused(T, peer, None, "malformed");
                let e = error(Code::MALFORMED, None, "binary messages are not used here");
                break (e, End::Close(close_code(Code::MALFORMED)));
            }
            Message::Close(_) => return Err(End::Closed),
            _ => continue,
        };
        let auth: Auth = match ClientMessage::decode(text.as_bytes()) {
            Ok(ClientMessage::Auth(a)) => a,
            Ok(_) => break fail(Code::UNEXPECTED, "unexpected"),
            Err(e) => break fail(e.code(), "malformed"),
        };
        // Unverified: names the terminal in the log of a refusal, decides nothing.
        let claimed = json::claimed_address(&auth.token);
        let now = crate::router::now_ms();
        if !ctx.login_rate.allow(ws::peer_ip(peer), now) {
            m.limit_hit("login_attempts_per_ip_per_sec");
            break refuse(Code::RATE_LIMITED, "rate_limited", claimed);
        }
        let claims = match json::verify(&*ctx.token_secret, &auth.token, now / 1000) {
            Ok(c) => c,
            Err(e) => {
                let label = if e.code() == Code::TOKEN_EXPIRED {
                    "token_expired"
                } else {
                    "bad_token"
                };
                break refuse(e.code(), label, claimed);
            }
        };
        let address = claims.address;
        if let Err(e) = ctx.router.settings().profile.validate(address) {
            break refuse(e.code(), "invalid_id", Some(address));
        }
        let login = Login {
            address,
            transport: T,
            peer,
            since_id: auth.since_id,
            // The JSON transport has no uploads.
            upload_epoch: 0,
        };
        let session = match ctx.router.login(login).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "app login not registered");
                break refuse(Code::UNAVAILABLE, "unavailable", Some(address));
            }
        };
        let p = ctx.welcome_params();
        let welcome = ServerMessage::Welcome(Welcome {
            address: claims.address,
            heartbeat_secs: p.heartbeat_secs,
            session_timeout_secs: p.session_timeout_secs,
            max_payload: p.max_payload,
            server_time_ms: p.server_time_ms,
        });
        if send(ws, &welcome).await.is_err() {
            return Err(End::Closed);
        }
        return Ok(session);
    };
    let _ = send(ws, &msg).await;
    Err(end)
}

/// What woke the session loop.
enum Woke {
    /// The socket: a message, a read error, or its end (`None`).
    Socket(Option<Result<Message, WsError>>),
    /// The router: an event for the terminal, or the session's end (`None`).
    Event(Option<Outbound>),
    /// The client was silent for `timeouts.session_secs`.
    Silent,
}

/// The session loop: socket, outbound queue, silence timer.
///
/// Memory: this loop is what an idle connection's task holds for its whole life, so it borrows
/// the session (kept in the [`Live`] block by the caller) instead of owning it. While idle it
/// holds only the three waits; what it does when one of them wakes runs in a boxed future of
/// its own ([`on_wake`]), allocated for that step only.
async fn run(ctx: &Context, ws: &mut Ws, session: &mut Session) -> End {
    let me = session.handle().address();
    let timeout = Duration::from_millis(ctx.settings.session_timeout_ms());
    let mut silent_until = Instant::now() + timeout;
    let end = loop {
        // The waits are dropped before the step runs, and what woke the loop moves into the
        // step, so none of them takes room in this future while the step runs.
        let step = {
            let woke = tokio::select! {
                msg = ws.next() => Woke::Socket(msg),
                ev = session.next() => Woke::Event(ev),
                _ = tokio::time::sleep_until(silent_until) => Woke::Silent,
            };
            if matches!(woke, Woke::Socket(_)) {
                silent_until = Instant::now() + timeout;
            }
            Box::pin(on_wake(ctx, ws, session, woke))
        };
        if let Some(end) = step.await {
            break end;
        }
    };
    let reported = match end {
        End::Closed => SessionEnd::ConnectionClosed,
        // Only a Goodbye closes with 1000 (NORMAL); every other close is the broker's code.
        End::Close(1000) => SessionEnd::Terminal(Code::NORMAL),
        End::Close(close) => SessionEnd::Broker(code_of_close(close)),
    };
    crate::logging::session_end::session_ended(&me, T.as_str(), reported);
    end
}

/// One step of the session loop: what `woke` asks for. `Some` ends the session.
async fn on_wake(ctx: &Context, ws: &mut Ws, session: &Session, woke: Woke) -> Option<End> {
    match woke {
        Woke::Socket(msg) => {
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Binary(_))) => {
                    let e = error(Code::MALFORMED, None, "binary messages are not used here");
                    let _ = send_live(ctx, ws, &e).await;
                    return Some(End::Close(close_code(Code::MALFORMED)));
                }
                Some(Ok(Message::Close(_))) | None => return Some(End::Closed),
                Some(Ok(_)) => return None,
                Some(Err(e)) => {
                    return match ws_error_end(ctx, &e) {
                        Ok(Some(code)) => {
                            let _ =
                                send_live(ctx, ws, &error(code, None, "message too large")).await;
                            Some(End::Close(close_code(code)))
                        }
                        Ok(None) => Some(End::Closed),
                        Err(end) => Some(end),
                    };
                }
            };
            let reply = match ClientMessage::decode(text.as_bytes()) {
                Ok(msg) => match on_message(ctx, session, msg).await {
                    Step::Reply(r) => Some(r),
                    Step::Quiet => None,
                    Step::Goodbye => return Some(End::Close(1000)),
                },
                Err(e) => Some(decode_error(&e)),
            };
            match reply {
                Some(r) if send_live(ctx, ws, &r).await.is_err() => Some(End::Closed),
                _ => None,
            }
        }
        Woke::Event(ev) => {
            let msg = match ev {
                None => return Some(End::Closed),
                Some(Outbound::Kick { reason }) => {
                    let code = kick_code(reason);
                    let _ = send_live(ctx, ws, &ServerMessage::Kick(Kick { reason: code })).await;
                    return Some(End::Close(close_code(code)));
                }
                Some(ev) => app_message(ev)?,
            };
            send_live(ctx, ws, &msg).await.err().map(|_| End::Closed)
        }
        Woke::Silent => {
            let code = Code::HEARTBEAT_TIMEOUT;
            let _ = send_live(ctx, ws, &ServerMessage::Kick(Kick { reason: code })).await;
            Some(End::Close(close_code(code)))
        }
    }
}

fn decode_error(e: &JsonError) -> ServerMessage {
    error(e.code(), None, &e.to_string())
}

enum Step {
    Reply(ServerMessage),
    Quiet,
    Goodbye,
}

async fn on_message(ctx: &Context, session: &Session, msg: ClientMessage) -> Step {
    let me = session.handle().address();
    match msg {
        ClientMessage::Auth(_) => {
            Step::Reply(error(Code::UNEXPECTED, None, "already authenticated"))
        }
        ClientMessage::Ping => Step::Reply(ServerMessage::Pong(Pong {
            server_time_ms: crate::router::now_ms(),
        })),
        ClientMessage::Goodbye(_) => Step::Goodbye,
        ClientMessage::Ack(AckMsg { msg_id }) => {
            if let Err(e) = ctx.router.ack(me, msg_id).await {
                tracing::warn!(terminal = %me, msg_id, error = %e, "ack not stored");
                return Step::Reply(error(Code::UNAVAILABLE, None, "ack not stored"));
            }
            Step::Quiet
        }
        ClientMessage::Send(SendMsg {
            to,
            payload,
            reference,
        }) => {
            if payload.len() > ctx.router.settings().max_payload {
                ctx.router.metrics().limit_hit("max_payload_bytes");
                return Step::Reply(error(Code::TOO_LARGE, Some(reference), "payload too large"));
            }
            match ctx.router.send(me, to, payload.into()).await {
                Ok(_) => Step::Reply(ServerMessage::Ok(OkMsg { reference })),
                Err(e) => {
                    let code = super::device::push_error_code(&e);
                    Step::Reply(error(code, Some(reference), &e.to_string()))
                }
            }
        }
    }
}

/// A router event as a JSON message (`Kick` is handled by the loop; device-only events such as
/// commands never reach an app session and are skipped).
fn app_message(ev: Outbound) -> Option<ServerMessage> {
    Some(match ev {
        Outbound::Deliver {
            msg_id,
            from,
            payload,
        } => ServerMessage::Deliver(Deliver {
            msg_id,
            from,
            payload: payload.to_vec(),
        }),
        Outbound::Presence { who, online } => ServerMessage::Presence(Presence { who, online }),
        Outbound::Command { .. }
        | Outbound::Response { .. }
        | Outbound::UploadAck { .. }
        | Outbound::Error { .. }
        | Outbound::Kick { .. } => return None,
    })
}
