//! `broker client phone`: an app over the app WebSocket (JSON, docs/protocol.md section 7)
//! through `shared_protocol::json`. It authenticates with a token in the first message, prints
//! deliveries (acknowledged at once unless `--manual-ack`; then `ack [msg_id]` on stdin), `ok` /
//! `error` answers to its sends, presence and kicks, and pings when it has sent nothing for the
//! welcome's heartbeat interval.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::SinkExt;
use shared_protocol::codes::Code;
use shared_protocol::ids::Address;
use shared_protocol::json::{AckMsg, Auth, ClientMessage, Goodbye, SendMsg, ServerMessage};
use shared_protocol::limits::MAX_JSON_MESSAGE;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::input::{self, Input, Role};
use super::lookup::{Lookup, Want};
use super::net::{self, ClientWs};
use super::output::{Event, Printer};
use super::{ClientError, Reconnect};

/// Everything `broker client phone` needs.
pub struct PhoneOptions {
    /// Who we are (for the connected line).
    pub address: Address,
    /// The app token.
    pub token: String,
    /// App WebSocket URL (unused with `lookup`).
    pub url: String,
    /// The cluster's node lookup, asked for the URL before every login instead of `url`.
    pub lookup: Option<Lookup>,
    /// CA file for `wss://`.
    pub ca_file: Option<PathBuf>,
    /// Highest msg_id already received.
    pub since_id: u64,
    /// Acknowledge deliveries only on `ack` from stdin.
    pub manual_ack: bool,
    /// Exit after this many deliveries.
    pub count: Option<u64>,
    /// Login timeout.
    pub login_timeout: Duration,
    /// Output.
    pub printer: Printer,
    /// Log in again after a session ends in a way to come back from (see [`run`]).
    pub reconnect: bool,
}

async fn send(ws: &mut ClientWs, msg: &ClientMessage) -> Result<(), ClientError> {
    let text = msg
        .encode()
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| ClientError::Closed(e.to_string()))
}

async fn recv(ws: &mut ClientWs) -> Result<ServerMessage, ClientError> {
    loop {
        // Binary messages are not part of the app protocol: skipped.
        let Message::Text(t) = net::next_message(ws).await? else {
            continue;
        };
        match ServerMessage::decode(t.as_bytes()) {
            Ok(m) => return Ok(m),
            // Unknown types from newer brokers are ignored (protocol section 7).
            Err(e) => tracing::debug!(error = %e, "ignored server message"),
        }
    }
}

async fn quit(ws: &mut ClientWs) -> Result<(), ClientError> {
    let bye = ClientMessage::Goodbye(Goodbye {
        reason: Code::NORMAL,
    });
    send(ws, &bye).await?;
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(())
}

/// What carries over from one session of a run to the next: the next login's since-id (the
/// highest id acknowledged automatically; unchanged with `--manual-ack`, so what was not
/// acknowledged comes again), the deliveries counted for `--count`, the next send reference,
/// and whether stdin is still open.
struct Progress {
    since_id: u64,
    delivered: u64,
    next_ref: u32,
    stdin_open: bool,
    /// Cancelled on Ctrl-C or SIGTERM.
    interrupt: CancellationToken,
}

/// Runs the phone until `quit`, Ctrl-C or SIGTERM (`interrupt`), `--count` deliveries, or a failure it does not come
/// back from. After a session that logged in ends in a way to come back from
/// ([`ClientError::comes_back`]: a SHUTDOWN kick, a lost connection) it logs in again after a
/// pause ([`Reconnect`]), as an app does, unless `reconnect` is off.
pub async fn run(
    o: PhoneOptions,
    mut lines: mpsc::Receiver<String>,
    interrupt: CancellationToken,
) -> Result<(), ClientError> {
    let mut progress = Progress {
        since_id: o.since_id,
        delivered: 0,
        next_ref: 1,
        stdin_open: true,
        interrupt: interrupt.clone(),
    };
    Reconnect::serve(
        o.reconnect,
        &o.printer,
        &interrupt,
        async |logged_in: &mut bool| session(&o, &mut lines, &mut progress, logged_in).await,
    )
    .await
}

/// The app WebSocket URLs to try for the next login, in order: `--app-ws` (or the config's),
/// or what the lookup answers now.
async fn candidates(o: &PhoneOptions) -> Result<Vec<String>, ClientError> {
    match &o.lookup {
        Some(l) => l.candidates(o.address, Want::AppWs).await,
        None => Ok(vec![o.url.clone()]),
    }
}

/// Connects and authenticates at the first URL that takes the login (see
/// [`candidates`]); a URL that fails in a way to come back from ([`ClientError::comes_back`])
/// passes to the next, and the last one's error is returned. Prints the connected line and
/// answers the socket and the heartbeat interval.
async fn first_login(o: &PhoneOptions, since_id: u64) -> Result<(ClientWs, Duration), ClientError> {
    let mut last = None;
    for url in candidates(o).await? {
        match authenticate(o, &url, since_id).await {
            Ok((ws, heartbeat_secs, address)) => {
                o.printer.print(&Event::Connected {
                    address,
                    via: url,
                    heartbeat_secs,
                });
                let heartbeat = Duration::from_secs(u64::from(heartbeat_secs.max(1)));
                return Ok((ws, heartbeat));
            }
            Err(e) if e.comes_back() => {
                tracing::debug!(%url, error = %e, "login failed; trying the next endpoint");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Connect("no endpoint to connect to".into())))
}

/// Connects to `url` and authenticates: the socket, the welcome's heartbeat and address.
async fn authenticate(
    o: &PhoneOptions,
    url: &str,
    since_id: u64,
) -> Result<(ClientWs, u16, Address), ClientError> {
    let mut ws = net::connect(url, o.ca_file.as_deref(), MAX_JSON_MESSAGE)
        .await
        .map_err(ClientError::Connect)?;
    let auth = ClientMessage::Auth(Auth {
        token: o.token.clone(),
        since_id,
    });
    send(&mut ws, &auth).await?;
    let welcome = match tokio::time::timeout(o.login_timeout, recv(&mut ws)).await {
        Err(_) => {
            return Err(ClientError::Connect(format!(
                "no answer to auth from {url} within {} s",
                o.login_timeout.as_secs()
            )));
        }
        Ok(r) => r?,
    };
    match welcome {
        ServerMessage::Welcome(w) => Ok((ws, w.heartbeat_secs, w.address)),
        ServerMessage::Reject(r) => Err(ClientError::Rejected {
            code: r.code,
            hint: r.reason,
            // The JSON `reject` carries no wait.
            retry_after_ms: 0,
        }),
        other => Err(ClientError::Protocol(format!(
            "expected welcome, got {}",
            other.type_name()
        ))),
    }
}

/// One session: connect, authenticate, then serve until it ends.
async fn session(
    o: &PhoneOptions,
    lines: &mut mpsc::Receiver<String>,
    prog: &mut Progress,
    logged_in: &mut bool,
) -> Result<(), ClientError> {
    // Interrupted while connecting or authenticating: nothing to close yet, a clean end.
    let (mut ws, heartbeat) = tokio::select! {
        r = first_login(o, prog.since_id) => r?,
        () = prog.interrupt.cancelled() => return Ok(()),
    };
    *logged_in = true;
    let mut last_sent = Instant::now();
    let mut pending: Vec<u64> = Vec::new();
    loop {
        tokio::select! {
            () = prog.interrupt.cancelled() => return quit(&mut ws).await,
            _ = tokio::time::sleep_until(last_sent + heartbeat) => {
                send(&mut ws, &ClientMessage::Ping).await?;
                last_sent = Instant::now();
            }
            line = lines.recv(), if prog.stdin_open => {
                let Some(line) = line else {
                    prog.stdin_open = false;
                    continue;
                };
                let msgs = match input::parse(&line, Role::Phone) {
                    Err(e) => {
                        eprintln!("{e}");
                        continue;
                    }
                    Ok(Input::Quit) => return quit(&mut ws).await,
                    Ok(Input::Ping) => vec![ClientMessage::Ping],
                    Ok(Input::Send { to, payload }) => {
                        let reference = prog.next_ref;
                        prog.next_ref = prog.next_ref.wrapping_add(1);
                        o.printer.print(&Event::Sent { what: "send", id: reference });
                        vec![ClientMessage::Send(SendMsg { to, payload, reference })]
                    }
                    Ok(Input::Ack(Some(msg_id))) => {
                        pending.retain(|m| *m != msg_id);
                        vec![ClientMessage::Ack(AckMsg { msg_id })]
                    }
                    Ok(Input::Ack(None)) => pending
                        .drain(..)
                        .map(|msg_id| ClientMessage::Ack(AckMsg { msg_id }))
                        .collect(),
                    Ok(_) => continue,
                };
                for m in &msgs {
                    send(&mut ws, m).await?;
                }
                last_sent = Instant::now();
            }
            m = recv(&mut ws) => {
                let event = match m? {
                    ServerMessage::Deliver(d) => {
                        if o.manual_ack {
                            pending.push(d.msg_id);
                        } else {
                            send(&mut ws, &ClientMessage::Ack(AckMsg { msg_id: d.msg_id })).await?;
                            last_sent = Instant::now();
                            prog.since_id = prog.since_id.max(d.msg_id);
                        }
                        prog.delivered += 1;
                        Event::Deliver { msg_id: d.msg_id, from: d.from, payload: d.payload }
                    }
                    ServerMessage::Ok(ok) => Event::Ok { reference: ok.reference },
                    ServerMessage::Error(e) => Event::Error {
                        code: e.code,
                        about: e.reference,
                        message: e.message,
                    },
                    ServerMessage::Presence(p) => Event::Presence { who: p.who, online: p.online },
                    ServerMessage::Kick(k) => {
                        o.printer.print(&Event::Kick { reason: k.reason });
                        return Err(ClientError::Kicked(k.reason));
                    }
                    ServerMessage::Goodbye(g) => {
                        o.printer.print(&Event::Goodbye { reason: g.reason });
                        return Ok(());
                    }
                    ServerMessage::Pong(_) | ServerMessage::Welcome(_) | ServerMessage::Reject(_) => {
                        continue;
                    }
                };
                o.printer.print(&event);
                if o.count.is_some_and(|c| prog.delivered >= c) {
                    return quit(&mut ws).await;
                }
            }
        }
    }
}
