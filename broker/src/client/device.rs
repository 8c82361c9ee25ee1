//! `broker client device`: a device over UDP or the device WebSocket. The login runs the
//! shared-protocol [`ClientHandshake`] (over UDP the HELLO is retransmitted with its own backoff
//! until the login timeout; over WebSocket it is sent once), then one task `select!`s over the socket, stdin lines, the [`Link`] timer and
//! Ctrl-C. Commands from the broker are answered automatically with a configured status and reply
//! unless `--manual-commands` is given (then `result <cmd_id> <status> [text]` on stdin answers).
//!
//! How a logged-in device notices that its comet is gone, and moves (with `--lookup`, to the
//! comet the lookup names next; after a pause with jitter, [`Reconnect`]):
//! * **Kicked** with a retryable code (`SHUTDOWN` when the comet is drained): at once.
//! * **Refused** (UDP): the socket is connected, so the kernel reports the ICMP "port
//!   unreachable" of a comet that died (its host still up) as a refused packet on the next send
//!   or receive: as soon as the device sends anything, at the latest the probe's Ping.
//! * **Unanswered**: the [`Probe`] Pings after `--probe-after-ms` (2 s) of silence and ends the
//!   session after 3 unanswered Pings 1 s apart (5 s of silence in all): a comet that hangs or a
//!   host that drops packets. A reliable frame whose retransmission gives up
//!   ([`super::link::LinkError::PeerDead`]) and the protocol's three heartbeats of silence also end it.
//! * **Closed** (WebSocket): the TCP connection is reset or closed: at once.
//!
//! The session's end is printed with the endpoint and the reason ([`ClientError::Ended`]) in the
//! `reconnecting` line, then the next `connected` line names the comet it moved to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use shared_protocol::codes::Code;
use shared_protocol::frame::Body;
use shared_protocol::handshake::{
    Carrier, ClientEvent, ClientHandshake, WelcomeInfo, retry_after_capped,
};
use shared_protocol::ids::Address;
use shared_protocol::keys::DeviceKey;
use shared_protocol::limits::MAX_PACKET;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::input::{self, Input, Role};
use super::link::{Incoming, Link, Probe};
use super::lookup::{Lookup, Want};
use super::net::{self, ClientWs};
use super::output::{Event, Printer};
use super::{ClientError, Reconnect};

/// Where the device connects.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// UDP to this address.
    Udp(SocketAddr),
    /// The device WebSocket at this URL, trusting this CA file for `wss://`.
    Ws(String, Option<PathBuf>),
    /// Asked of a cluster's node lookup before every login ([`super::lookup`]): its UDP
    /// addresses, or its device WebSocket URLs (`ws`) trusting `ca` for `wss://`.
    Lookup {
        /// The node lookup.
        lookup: Lookup,
        /// Use the device WebSocket instead of UDP.
        ws: bool,
        /// CA file for `wss://`.
        ca: Option<PathBuf>,
    },
}

impl Endpoint {
    /// The endpoints to try for the next login, in order: this one, or what the lookup
    /// answers for device `id` now.
    async fn resolve(&self, id: u32) -> Result<Vec<Endpoint>, ClientError> {
        let Endpoint::Lookup { lookup, ws, ca } = self else {
            return Ok(vec![self.clone()]);
        };
        let want = if *ws { Want::DeviceWs } else { Want::Udp };
        let mut out = Vec::new();
        for found in lookup.candidates(Address::device(id), want).await? {
            if *ws {
                out.push(Endpoint::Ws(found, ca.clone()));
            } else {
                let addr = tokio::net::lookup_host(found.as_str())
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        ClientError::Connect(format!(
                            "lookup {}: UDP address `{found}` does not resolve",
                            lookup.url()
                        ))
                    })?;
                out.push(Endpoint::Udp(addr));
            }
        }
        Ok(out)
    }
}

/// How commands are answered.
#[derive(Clone, Debug)]
pub enum Answer {
    /// At once with this status and payload.
    Auto(u16, Vec<u8>),
    /// From stdin (`result ...`).
    Manual,
}

/// Everything `broker client device` needs.
pub struct DeviceOptions {
    /// Device id.
    pub id: u32,
    /// Its key.
    pub key: DeviceKey,
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Highest msg_id already received.
    pub since_id: u64,
    /// Command answers.
    pub answer: Answer,
    /// Exit after this many deliveries.
    pub count: Option<u64>,
    /// Login timeout.
    pub login_timeout: Duration,
    /// Output.
    pub printer: Printer,
    /// Log in again after a session ends in a way to come back from (see [`run`]).
    pub reconnect: bool,
    /// The quick liveness check of every session (none: only the protocol's rules).
    pub probe: Option<Probe>,
}

/// A device's connection to the broker: a connected UDP socket or a device WebSocket.
pub(crate) enum Wire {
    Udp(UdpSocket),
    Ws(Box<ClientWs>),
}

impl Wire {
    /// Opens a connection to `endpoint`.
    pub(crate) async fn open(endpoint: &Endpoint) -> Result<Wire, ClientError> {
        match endpoint {
            Endpoint::Udp(addr) => {
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(local).await.map_err(ClientError::io)?;
                // Connected: an ICMP "port unreachable" surfaces as ConnectionRefused.
                s.connect(addr).await.map_err(ClientError::io)?;
                Ok(Wire::Udp(s))
            }
            Endpoint::Ws(url, ca) => Ok(Wire::Ws(Box::new(
                net::connect(url, ca.as_deref(), MAX_PACKET)
                    .await
                    .map_err(ClientError::Connect)?,
            ))),
            Endpoint::Lookup { lookup, .. } => Err(ClientError::Usage(format!(
                "resolve {} before opening a connection",
                lookup.url()
            ))),
        }
    }

    /// Sends one packet.
    pub(crate) async fn send(&mut self, packet: &[u8]) -> Result<(), ClientError> {
        match self {
            Wire::Udp(s) => s.send(packet).await.map(|_| ()).map_err(ClientError::io),
            Wire::Ws(ws) => ws
                .send(Message::Binary(packet.to_vec().into()))
                .await
                .map_err(|e| ClientError::Closed(e.to_string())),
        }
    }

    /// The next packet; an error when the socket closed or failed.
    pub(crate) async fn recv(&mut self) -> Result<Vec<u8>, ClientError> {
        match self {
            Wire::Udp(s) => {
                let mut buf = vec![0u8; MAX_PACKET + 1];
                let n = s.recv(&mut buf).await.map_err(ClientError::io)?;
                buf.truncate(n);
                Ok(buf)
            }
            // Text messages are not part of the device protocol: skipped.
            Wire::Ws(ws) => loop {
                if let Message::Binary(b) = net::next_message(ws).await? {
                    return Ok(b.to_vec());
                }
            },
        }
    }

    /// Ends a WebSocket with a close handshake (bounded to one second); nothing for UDP.
    pub(crate) async fn close(&mut self) {
        if let Wire::Ws(ws) = self {
            let _ = tokio::time::timeout(Duration::from_secs(1), (**ws).close(None)).await;
        }
    }

    /// How `endpoint` is named in messages.
    pub(crate) fn describe(endpoint: &Endpoint) -> String {
        match endpoint {
            Endpoint::Udp(a) => format!("udp {a}"),
            Endpoint::Ws(u, _) => u.clone(),
            Endpoint::Lookup { lookup, .. } => format!("lookup {}", lookup.url()),
        }
    }
}

/// Milliseconds since the client started: the time the sans-IO protocol code is given.
pub(crate) struct Clock(pub(crate) Instant);

impl Clock {
    /// Now, in ms since the start.
    pub(crate) fn ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }

    /// The tokio instant of `ms` since the start.
    pub(crate) fn at(&self, ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.0 + Duration::from_millis(ms.min(1 << 40)))
    }
}

/// What a device reports in its LOGIN besides its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoginReport {
    /// Highest msg_id already received (0: none).
    pub since_id: u64,
    /// This run's upload epoch ([`draw_upload_epoch`]): the same on every login of the run.
    pub upload_epoch: u64,
}

/// A fresh upload epoch for one run of a device (docs/protocol.md section 4, "Upload
/// semantics"): 64 random bits, drawn again while 0 (never sent).
pub(crate) fn draw_upload_epoch() -> u64 {
    loop {
        let e: u64 = rand::random();
        if e != 0 {
            return e;
        }
    }
}

/// Logs device `id` in over `wire` (HELLO, CHALLENGE, LOGIN, WELCOME; over UDP the HELLO is
/// retransmitted by the handshake's own timer, over WebSocket it is sent once), giving up after
/// `timeout`. `via` names the endpoint in errors.
pub(crate) async fn login(
    wire: &mut Wire,
    via: &str,
    id: u32,
    key: &DeviceKey,
    report: LoginReport,
    timeout: Duration,
    clock: &Clock,
) -> Result<(Link, WelcomeInfo), ClientError> {
    // WebSocket loses nothing: one HELLO per connection, never resent with a new nonce
    // (docs/protocol.md section 3.2, step 6); `timeout` bounds the wait instead.
    let carrier = match wire {
        Wire::Udp(_) => Carrier::Datagram,
        Wire::Ws(_) => Carrier::Reliable,
    };
    let mut hs = ClientHandshake::new(
        Address::device(id),
        key.clone(),
        report.since_id,
        report.upload_epoch,
    )
    .with_carrier(carrier);
    let mut out = [0u8; MAX_PACKET];
    let hello = hs
        .start(clock.ms(), rand::random(), &mut out)
        .map_err(|e| ClientError::Protocol(format!("{e:?}")))?
        .to_vec();
    wire.send(&hello).await?;
    let give_up = tokio::time::Instant::now() + timeout;
    loop {
        let retry = clock.at(hs.poll_timeout().unwrap_or(u64::MAX));
        tokio::select! {
            _ = tokio::time::sleep_until(give_up) => {
                return Err(ClientError::Connect(format!(
                    "no answer from the broker at {via} within {} s (is it running? right address?)",
                    timeout.as_secs()
                )));
            }
            _ = tokio::time::sleep_until(retry) => {
                if let Ok(Some(p)) = hs.handle_timeout(clock.ms(), rand::random(), &mut out) {
                    let p = p.to_vec();
                    wire.send(&p).await?;
                }
            }
            p = wire.recv() => {
                let mut p = match p {
                    Ok(p) => p,
                    Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        return Err(ClientError::Connect(format!(
                            "cannot reach the broker at {via}: connection refused (is it running?)"
                        )));
                    }
                    Err(e) => return Err(e),
                };
                match hs.on_packet(&mut p, &mut out) {
                    Ok(ClientEvent::Send(login)) => {
                        let login = login.to_vec();
                        wire.send(&login).await?;
                    }
                    Ok(ClientEvent::Established(e)) => {
                        // Over WebSocket nothing is resent within the session either
                        // (docs/protocol.md section 5, "Reliable transport").
                        let link = Link::new(e.session, e.welcome.heartbeat_secs, clock.ms())
                            .with_carrier(carrier);
                        return Ok((link, e.welcome));
                    }
                    Ok(ClientEvent::Rejected(r)) => {
                        return Err(ClientError::Rejected {
                            code: r.code,
                            hint: reject_hint(r.code),
                            // Unauthenticated advice: never more than the protocol's cap.
                            retry_after_ms: retry_after_capped(r.retry_after_ms),
                        });
                    }
                    Ok(ClientEvent::Ignored) | Err(_) => {}
                }
            }
        }
    }
}

fn reject_hint(code: Code) -> String {
    match code {
        Code::AUTH_FAILED | Code::UNKNOWN_TERMINAL => {
            "the device key does not match the broker's: is --data-dir the broker's data \
             directory, or --key/--master-key right?"
                .into()
        }
        c => c.description().into(),
    }
}

/// Says Goodbye (it carries the acknowledgement of everything received) and closes.
pub(crate) async fn finish(
    wire: &mut Wire,
    link: &mut Link,
    clock: &Clock,
) -> Result<(), ClientError> {
    let goodbye = Body::Goodbye {
        reason: Code::NORMAL,
    };
    send_body(wire, link, clock, &goodbye).await?;
    wire.close().await;
    Ok(())
}

/// Sends `body` through the link.
pub(crate) async fn send_body(
    wire: &mut Wire,
    link: &mut Link,
    clock: &Clock,
    body: &Body<'_>,
) -> Result<Option<u32>, ClientError> {
    let (packets, seq) = link
        .send(body, clock.ms(), rand::random())
        .map_err(ClientError::Link)?;
    for p in packets {
        wire.send(&p).await?;
    }
    Ok(seq)
}

/// What carries over from one session of a run to the next: the run's upload epoch and upload
/// ids (a resent upload keeps its key), the highest message id received (the next login's
/// since-id), the deliveries counted for `--count`, and whether stdin is still open.
struct Progress {
    upload_epoch: u64,
    since_id: u64,
    delivered: u64,
    next_id: u32,
    stdin_open: bool,
    /// Cancelled on Ctrl-C or SIGTERM.
    interrupt: CancellationToken,
}

/// Runs the device until `quit`, Ctrl-C or SIGTERM (`interrupt`), `--count` deliveries, or a failure it does not come
/// back from. After a session that logged in ends in a way the broker or the network says to
/// come back from ([`ClientError::comes_back`]: a SHUTDOWN kick, a lost connection), it logs in
/// again after a pause ([`Reconnect`]), as a device does, unless `reconnect` is off.
pub async fn run(
    o: DeviceOptions,
    mut lines: mpsc::Receiver<String>,
    interrupt: CancellationToken,
) -> Result<(), ClientError> {
    let mut progress = Progress {
        upload_epoch: draw_upload_epoch(),
        since_id: o.since_id,
        delivered: 0,
        next_id: 1,
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

/// Connects and logs in to the first endpoint that takes the login, in the order
/// [`Endpoint::resolve`] gives (one endpoint unless a lookup names several): an endpoint that
/// fails in a way to come back from ([`ClientError::comes_back`]: refused, silent, SHUTDOWN)
/// passes to the next; the last one's error is returned.
async fn first_login(
    o: &DeviceOptions,
    report: LoginReport,
    clock: &Clock,
) -> Result<(Wire, String, Link, WelcomeInfo), ClientError> {
    let candidates = o.endpoint.resolve(o.id).await?;
    let mut last = None;
    for endpoint in &candidates {
        let via = Wire::describe(endpoint);
        let attempt = async {
            let mut wire = Wire::open(endpoint).await?;
            let (link, welcome) = login(
                &mut wire,
                &via,
                o.id,
                &o.key,
                report,
                o.login_timeout,
                clock,
            )
            .await?;
            Ok::<_, ClientError>((wire, link, welcome))
        };
        match attempt.await {
            Ok((wire, link, welcome)) => return Ok((wire, via, link, welcome)),
            Err(e) if e.comes_back() => {
                tracing::debug!(%via, error = %e, "login failed; trying the next endpoint");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Connect("no endpoint to connect to".into())))
}

/// One session: connect, log in, then serve until it ends.
async fn session(
    o: &DeviceOptions,
    lines: &mut mpsc::Receiver<String>,
    prog: &mut Progress,
    logged_in: &mut bool,
) -> Result<(), ClientError> {
    let clock = Clock(Instant::now());
    let report = LoginReport {
        since_id: prog.since_id,
        upload_epoch: prog.upload_epoch,
    };
    // Interrupted while connecting or logging in: nothing to log out of, a clean end.
    let (mut wire, via, mut link, welcome) = tokio::select! {
        r = first_login(o, report, &clock) => r?,
        () = prog.interrupt.cancelled() => return Ok(()),
    };
    if let Some(probe) = o.probe {
        link = link.with_probe(probe);
    }
    *logged_in = true;
    o.printer.print(&Event::Connected {
        address: Address::device(o.id),
        via: via.clone(),
        heartbeat_secs: welcome.heartbeat_secs,
    });
    let max_payload = welcome.max_payload;
    logged_in_session(o, lines, prog, &mut wire, &mut link, max_payload, &clock)
        .await
        .map_err(|e| e.ended_at(&via))
}

/// The logged-in part of [`session`]: serves the socket, stdin and the link's timers until the
/// session ends.
async fn logged_in_session(
    o: &DeviceOptions,
    lines: &mut mpsc::Receiver<String>,
    prog: &mut Progress,
    wire: &mut Wire,
    link: &mut Link,
    max_payload: u16,
    clock: &Clock,
) -> Result<(), ClientError> {
    loop {
        let due = clock.at(link.next_deadline());
        tokio::select! {
            () = prog.interrupt.cancelled() => {
                return finish(wire, link, clock).await;
            }
            _ = tokio::time::sleep_until(due) => {
                for p in link.poll(clock.ms(), rand::random()).map_err(ClientError::Link)? {
                    wire.send(&p).await?;
                }
            }
            line = lines.recv(), if prog.stdin_open => {
                let Some(line) = line else {
                    prog.stdin_open = false;
                    continue;
                };
                let cmd = match input::parse(&line, Role::Device) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{e}");
                        continue;
                    }
                };
                let payload_len = match &cmd {
                    Input::Send { payload, .. }
                    | Input::Upload { payload, .. }
                    | Input::Request { payload, .. }
                    | Input::Result { payload, .. } => payload.len(),
                    _ => 0,
                };
                if payload_len > usize::from(max_payload) {
                    eprintln!("payload of {payload_len} bytes exceeds the broker's limit of {max_payload}");
                    continue;
                }
                let id = prog.next_id;
                let (what, body) = match &cmd {
                    Input::Nothing | Input::Ack(_) => continue,
                    Input::Quit => {
                        return finish(wire, link, clock).await;
                    }
                    Input::Ping => ("ping", Body::Ping),
                    Input::Send { to, payload } => ("send", Body::Send { to: *to, payload }),
                    Input::Upload { topic, payload } => {
                        ("upload", Body::Upload { upload_id: id, topic, payload })
                    }
                    Input::Request { path, payload } => {
                        ("request", Body::Request { req_id: id, path, payload })
                    }
                    Input::Result { cmd_id, status, payload } => (
                        "result",
                        Body::CommandResult { cmd_id: *cmd_id, status: *status, payload },
                    ),
                };
                if let Err(e) = body.check_limits() {
                    eprintln!("cannot send: {e:?}");
                    continue;
                }
                let seq = send_body(wire, link, clock, &body).await?;
                let shown = match what {
                    "upload" | "request" => {
                        prog.next_id = prog.next_id.wrapping_add(1).max(1);
                        Some(id)
                    }
                    "ping" => None,
                    _ => seq,
                };
                if let Some(id) = shown {
                    o.printer.print(&Event::Sent { what, id });
                }
            }
            p = wire.recv() => {
                let mut p = p?;
                for incoming in link.on_packet(&mut p, clock.ms()) {
                match incoming {
                    Incoming::Nothing | Incoming::Pong => {}
                    Incoming::Command { cmd_id, name, payload } => {
                        o.printer.print(&Event::Command { cmd_id, name, payload });
                        if let Answer::Auto(status, reply) = &o.answer {
                            let body = Body::CommandResult { cmd_id, status: *status, payload: reply };
                            send_body(wire, link, clock, &body).await?;
                            o.printer.print(&Event::Answered {
                                cmd_id,
                                status: *status,
                                payload: reply.clone(),
                            });
                        }
                    }
                    Incoming::Event(e) => {
                        o.printer.print(&e);
                        match e {
                            Event::Kick { reason } => return Err(ClientError::Kicked(reason)),
                            Event::Goodbye { .. } => return Ok(()),
                            Event::Deliver { msg_id, .. } => {
                                prog.since_id = prog.since_id.max(msg_id);
                                prog.delivered += 1;
                                if o.count.is_some_and(|c| prog.delivered >= c) {
                                    return finish(wire, link, clock).await;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_protocol::handshake::reject_packet;
    use shared_protocol::limits::REJECT_RETRY_AFTER_CAP_MS;

    /// A REJECT asking for an absurd wait (u32::MAX ms, about 50 days) is honoured only up to
    /// the protocol's cap: REJECTs are unauthenticated.
    #[tokio::test]
    async fn a_rejects_wait_is_capped() {
        let broker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = broker.local_addr().unwrap();
        let answer = tokio::spawn(async move {
            let mut buf = [0u8; MAX_PACKET];
            let (_, from) = broker.recv_from(&mut buf).await.unwrap();
            let mut out = [0u8; 16];
            let p = reject_packet(Code::SERVER_BUSY, u32::MAX, &mut out).unwrap();
            broker.send_to(p, from).await.unwrap();
        });
        let mut wire = Wire::open(&Endpoint::Udp(addr)).await.unwrap();
        let clock = Clock(Instant::now());
        let key = DeviceKey([1; 32]);
        let timeout = Duration::from_secs(5);
        let report = LoginReport {
            since_id: 0,
            upload_epoch: 1,
        };
        let Err(err) = login(&mut wire, "test", 7, &key, report, timeout, &clock).await else {
            panic!("a REJECT must end the login")
        };
        answer.await.unwrap();
        let ClientError::Rejected {
            code,
            retry_after_ms,
            ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(*code, Code::SERVER_BUSY);
        assert_eq!(*retry_after_ms, REJECT_RETRY_AFTER_CAP_MS);
        assert!(
            err.to_string().ends_with("; retry after 300000 ms"),
            "{err}"
        );
    }
}
