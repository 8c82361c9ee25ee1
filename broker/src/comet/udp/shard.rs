//! One UDP session shard: a task that owns a table of sessions found by `session_id`, which names
//! the session's slot (`table`; see the parent module for how datagrams reach it).
//!
//! * A LOGIN is checked in spec order (the address's login rate is charged once its cookie has
//!   proven the source address, so forged-source LOGINs cannot use up a victim's allowance)
//!   and, when accepted, registered with the router in a
//!   spawned task that hands the session back to this task ([`Control::LoggedIn`]), which then
//!   sends the WELCOME. Store I/O never blocks the shard's loop.
//! * DATA packets find their session by the header's `session_id`. A packet that authenticates
//!   and is new in the replay window, arriving from another address, moves the session there
//!   (NAT rebinding, section 3): replies and retransmissions go to the new address and the
//!   router's [`SessionHandle::set_peer`] is updated.
//! * Timers: each session's next deadline ([`Link::poll_timeout`]: retransmission, delayed ack or
//!   silence) is kept in [`Timers`]: an ordered set for deadlines within a second, a sweep of
//!   the table once a second for the rest (an idle session's silence timeout), so an idle
//!   session costs no timer entry; the task sleeps until the first. A session silent for
//!   `timeouts.session_secs`, or whose frame went unacknowledged `MAX_TRANSMISSIONS` times, is
//!   ended: the router logs it out and bound phones get an offline presence.
//! * Outbound: no future or task per session. Each session's router handle pushes the session
//!   id to the shard's [`ReadyList`] when it queues an event ([`SessionHandle::wake_into`]);
//!   the shard then pulls events with [`Session::try_next`] into the session's [`Outbox`]
//!   (with the shard's own Error answers), which sends in order while the send window has
//!   room. It pulls only while the outbox is empty and the window has room; otherwise the
//!   events wait in the router's bounded queue until acks free room and the shard pulls again
//!   (nothing is dropped because the window was full). The rare store read after the
//!   full-queue policy dropped a Deliver ([`Session::needs_store_read`]) runs in a spawned
//!   task that takes the router session along and hands it back ([`Control::Read`]).
//! * Shutdown: every session is ended with Kick `SHUTDOWN`, sent [`SHUTDOWN_KICK_COPIES`] times
//!   [`SHUTDOWN_KICK_SPACING_MS`] apart ([`super::kick_copies`]); the shard's task ends once the
//!   last copy is out (200 ms after the shutdown began).
//! * Sends are collected during one turn of the loop (a whole inbound batch, a timer sweep) and
//!   handed to the kernel together at its end ([`super::batch::SendBatch`], `sendmmsg`), never
//!   waiting: a datagram the kernel cannot take now is dropped and counted like any lost
//!   datagram (the reliability layer resends).
//!
//! Per-session memory: one [`UdpSession`] inline in a slot of the shard's table (`table`; see
//! the `session_size` test for the figures, and docs/performance.md, "Memory per session") plus
//! the router's handle and registry entry;
//! in-flight frames, held frames, waiting frames and the frame worker (created by the first
//! Send, Upload or Request) exist only while in use.

use std::net::SocketAddr;
use std::sync::Arc;

use shared_protocol::codes::Code;
use shared_protocol::frame::Body;
use shared_protocol::handshake::{reject_answer, reject_packet};
use shared_protocol::keys::PeerAddr;
use shared_protocol::limits::MAX_PACKET;
use shared_protocol::session::SessionError;
use smallvec::SmallVec;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::logging::session_end::SessionEnd;
use crate::router::{KickReason, Login, Outbound, ReadyList, Session, SessionHandle};

use super::super::Context;
use super::super::convert::kick_code;
use super::super::device::{self, Reaction};
use super::super::limits::{ConnGuard, ConnLimit};
use super::super::link::{Link, LinkError, Polled};
use super::super::logins::{self, LoginOutcome};
use super::super::worker::FrameWorker;
use super::batch::{RecvBatch, SendBatch};
use super::dispatch::{Dispatch, Mine};
use super::kick_copies::{KickCopies, SHUTDOWN_KICK_COPIES, SHUTDOWN_KICK_SPACING_MS};
use super::outbox::{Offered, Outbox};
use super::table::SessionTable;
use super::timers::{Slot, Timers};
use super::{ShardBatch, ShardMap, T, flush_out};

/// One UDP session's state in the socket task's table. The peer's address is the router
/// handle's ([`SessionHandle::peer`]), not a copy here; the session's connection-limit slot is
/// counted under that address, given back from there by [`Endpoint::end`] (or the endpoint's
/// drop) and moved with it, so the session keeps no guard of its own.
pub struct UdpSession {
    link: Link,
    /// Where this session's next deadline sits in the shard's [`Timers`].
    timer: Slot,
    /// The router session, or only its handle while a spawned task re-reads the store for it.
    router: RouterSide,
    /// Applies the session's Sends and Uploads in order; `None` until its first work frame
    /// (Send, Upload, Request), so a session that only pings and receives keeps no worker.
    worker: Option<Box<FrameWorker>>,
    /// Reliable frames waiting for room in the send window.
    outbox: Outbox,
}

/// A UDP session's router side. The handle is the session's own while it is here, so the
/// shard keeps no second copy of it (8 B less a session).
enum RouterSide {
    /// The router session, drained by the shard.
    Here(Session),
    /// Lent to a task re-reading the store ([`Control::Read`] brings it back); its handle.
    Reading(SessionHandle),
}

impl RouterSide {
    /// The session's router handle (identity, peer address, queue).
    fn handle(&self) -> &SessionHandle {
        match self {
            RouterSide::Here(session) => session.handle(),
            RouterSide::Reading(handle) => handle,
        }
    }
}

/// Messages from spawned helper tasks to the socket task.
enum Control {
    /// A LOGIN was registered with the router: install the session and send the WELCOME.
    LoggedIn(Box<NewSession>),
    /// A store read for session `.0` is done ([`Session::read_store`]): its router session,
    /// which now yields what the read found.
    Read(u32, Box<Session>),
    /// The router did not register the LOGIN for session id `.0`: its slot is free again.
    LoginFailed(u32),
}

struct NewSession {
    session_id: u32,
    link: Link,
    session: Session,
    welcome: Vec<u8>,
    peer: SocketAddr,
    guard: ConnGuard,
}

struct Endpoint {
    ctx: Arc<Context>,
    socket: Arc<UdpSocket>,
    /// The sessions, inline in the table's pages, by session id (the id names the slot).
    sessions: SessionTable<UdpSession>,
    timers: Timers,
    /// Ids of sessions whose router queue got something (see module docs).
    ready: Arc<ReadyList>,
    /// The ids taken from `ready` in this turn (kept to reuse its allocation).
    ready_ids: Vec<u32>,
    control: mpsc::Sender<Control>,
    /// Datagrams produced by this turn of the loop, sent together at its end.
    out: SendBatch,
    /// Later copies of the shutdown Kicks sent (see [`super::kick_copies`]).
    kick_copies: KickCopies,
    /// The monotonic clock (ms) as read once at the start of this turn of the loop: every
    /// packet of a batch is handled at the same instant, one clock read per turn.
    now: u64,
    /// The wall clock (Unix ms) for this turn, read when first needed (a Pong's server time).
    wall_ms: Option<u64>,
}

/// A shard's datagram sources: its socket and the packets other shards forward to it.
pub(super) struct Io {
    /// Where it sends, and reads when `reads`.
    pub socket: Arc<UdpSocket>,
    /// Whether this shard reads `socket` (every shard does, unless all share one socket:
    /// then only shard 0 does; see `sockets`).
    pub reads: bool,
    /// DATA packets for its sessions that another shard read.
    pub inbox: mpsc::Receiver<ShardBatch>,
    /// Where what it reads goes.
    pub dispatch: Dispatch,
}

/// Runs one shard until shutdown: datagrams from its socket and inbox, its sessions' queues and
/// timers.
pub(super) async fn run(ctx: Arc<Context>, io: Io, map: ShardMap, index: usize) {
    let Io {
        socket,
        reads,
        mut inbox,
        mut dispatch,
    } = io;
    let (control, mut control_rx) = mpsc::channel(1024);
    let mut ep = Endpoint {
        ctx: ctx.clone(),
        socket: socket.clone(),
        sessions: SessionTable::new(map, index),
        timers: Timers::default(),
        ready: Arc::new(ReadyList::new()),
        ready_ids: Vec::new(),
        control,
        out: SendBatch::default(),
        kick_copies: KickCopies::default(),
        now: ctx.mono_ms(),
        wall_ms: None,
    };
    let ready = ep.ready.clone();
    // One byte more than the largest packet, so a longer datagram shows as too large.
    let mut rx = RecvBatch::new(MAX_PACKET + 1);
    loop {
        let wake = [ep.timers.next_wake(), ep.kick_copies.next_due()]
            .into_iter()
            .flatten()
            .min()
            .map(|d| ctx.instant_at(d));
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = socket.readable(), if reads => match r {
                Ok(()) => ep.tick().on_socket(&mut rx, &mut dispatch),
                Err(e) => tracing::debug!(error = %e, "udp socket error"),
            },
            Some(batch) = inbox.recv() => ep.tick().on_batch(batch),
            Some(c) = control_rx.recv() => ep.tick().on_control(c),
            () = ready.wait() => ep.tick().on_ready(),
            _ = sleep_until_opt(wake), if wake.is_some() => ep.tick().on_timers(),
        }
        ep.flush_out();
    }
    ep.tick();
    let ids = ep.sessions.ids();
    for sid in ids {
        ep.end(sid, Some(Code::SHUTDOWN));
    }
    ep.flush_out();
    // The later Kick copies (of these sessions, and of any a router kick ended just before).
    while let Some(due) = ep.kick_copies.next_due() {
        tokio::time::sleep_until(ctx.instant_at(due)).await;
        ep.tick();
        ep.kick_copies.take_due(ep.now, &mut ep.out);
        ep.flush_out();
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

impl Drop for Endpoint {
    /// Gives back the connection-limit slots of the sessions still here (none after an orderly
    /// shutdown, which ends each; some if the socket task ended another way).
    fn drop(&mut self) {
        let conns = &self.ctx.conns;
        for (_, s) in self.sessions.iter_mut() {
            conns.release(s.router.handle().peer().ip());
        }
    }
}

impl Endpoint {
    /// Starts a turn of the loop: reads the monotonic clock once for it.
    fn tick(&mut self) -> &mut Endpoint {
        self.now = self.ctx.mono_ms();
        self.wall_ms = None;
        self
    }

    /// The wall clock (Unix ms) for this turn, read at its first use.
    fn wall_ms(&mut self) -> u64 {
        *self.wall_ms.get_or_insert_with(crate::router::now_ms)
    }

    /// Queues one datagram for the end of this turn.
    fn send(&mut self, packet: &[u8], to: SocketAddr) {
        self.out.push(packet, to);
    }

    /// Hands this turn's datagrams to the kernel.
    fn flush_out(&mut self) {
        flush_out(&self.ctx, &self.socket, &mut self.out);
    }

    /// Reads what waits on the shard's socket (one batch) and handles it: this shard's LOGINs
    /// and DATA packets here, in arrival order; the rest goes where `dispatch` sends it.
    fn on_socket(&mut self, rx: &mut RecvBatch, dispatch: &mut Dispatch) {
        match rx.recv(&self.socket) {
            Ok(got) => dispatch.count_read(got),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::debug!(error = %e, "udp recv error");
                return;
            }
        }
        for (packet, from) in rx.datagrams_mut() {
            match dispatch.route(packet, from) {
                Some(Mine::Login) => self.on_login(packet, from),
                Some(Mine::Data(sid)) => self.on_data(sid, packet, from),
                None => {}
            }
        }
        dispatch.forward();
    }

    /// DATA packets for this shard's sessions that another shard read, in arrival order.
    fn on_batch(&mut self, mut batch: ShardBatch) {
        let mut start = 0;
        for item in &batch.items {
            let packet = &mut batch.bytes[start..item.end];
            start = item.end;
            self.on_data(item.sid, packet, item.from);
        }
    }

    /// Answers a LOGIN of `answered_len` bytes with a REJECT, unless the REJECT would be longer
    /// (anti-amplification, docs/protocol.md section 2): then the LOGIN is dropped and counted.
    fn reject(&mut self, code: Code, retry_after_ms: u32, to: SocketAddr, answered_len: usize) {
        let mut out = [0u8; 16];
        match reject_answer(answered_len, code, retry_after_ms, &mut out) {
            Some(p) => self.send(p, to),
            None => self.ctx.router.metrics().udp_dropped("reject_too_long"),
        }
    }

    /// A LOGIN routed here: its session gets a slot of this shard's table, and the slot's id.
    fn on_login(&mut self, packet: &[u8], from: SocketAddr) {
        let Some(sid) = self.sessions.reserve() else {
            // Every slot is taken (see `table`: millions of sessions): over the connection cap.
            let m = self.ctx.router.metrics();
            m.limit_hit(ConnLimit::Total.key());
            self.ctx.login_refused(
                T,
                from,
                logins::claimed_terminal(packet),
                ConnLimit::Total.key(),
            );
            self.reject(Code::SERVER_BUSY, 1000, from, packet.len());
            return;
        };
        if !self.start_login(sid, packet, from) {
            self.sessions.release(sid);
        }
    }

    /// Checks a LOGIN for the slot reserved as `sid` and, when it is accepted, registers it with
    /// the router in a spawned task; `false` when it was refused here (the slot is not used).
    fn start_login(&mut self, sid: u32, packet: &[u8], from: SocketAddr) -> bool {
        let ctx = self.ctx.clone();
        let m = ctx.router.metrics();
        let now = self.wall_ms();
        let ip = super::super::ws::peer_ip(from);
        let params = ctx.welcome_params();
        let mut out = [0u8; MAX_PACKET];
        // Charged only once the cookie has proven the source address (see `comet::logins`).
        let admit = || ctx.login_rate.allow(ip, now);
        let accepted = match ctx.logins.on_login(
            &PeerAddr::from(from),
            packet,
            now,
            sid,
            &params,
            admit,
            &mut out,
        ) {
            LoginOutcome::Accepted(a) => a,
            LoginOutcome::RateLimited => {
                m.limit_hit("login_attempts_per_ip_per_sec");
                ctx.login_refused(T, from, logins::claimed_terminal(packet), "rate_limited");
                self.reject(Code::RATE_LIMITED, 1000, from, packet.len());
                return false;
            }
            LoginOutcome::Duplicate => {
                // Unanswered (its WELCOME is on its way), counted.
                m.login_failed(T, "duplicate");
                return false;
            }
            LoginOutcome::NoRandomness => {
                tracing::error!("the OS random generator failed; login refused");
                ctx.login_refused(T, from, logins::claimed_terminal(packet), "internal");
                self.reject(Code::INTERNAL, 0, from, packet.len());
                return false;
            }
            LoginOutcome::Refused(e) => {
                match e.code() {
                    Some(code) => {
                        ctx.login_refused(
                            T,
                            from,
                            logins::claimed_terminal(packet),
                            logins::failure_label(e),
                        );
                        self.reject(code, 0, from, packet.len());
                    }
                    None => m.udp_dropped("malformed"),
                }
                return false;
            }
        };
        let guard = match ctx.conns.try_acquire(ip) {
            Ok(g) => g,
            Err(limit) => {
                m.limit_hit(limit.key());
                ctx.login_refused(T, from, Some(accepted.address), limit.key());
                let code = match limit {
                    ConnLimit::Total => Code::SERVER_BUSY,
                    ConnLimit::PerIp => Code::RATE_LIMITED,
                };
                self.reject(code, 1000, from, packet.len());
                return false;
            }
        };
        let link = Link::new(accepted.session, self.now);
        let welcome = accepted.welcome.to_vec();
        let login = Login {
            address: accepted.address,
            transport: T,
            peer: from,
            since_id: accepted.since_id,
            upload_epoch: accepted.upload_epoch,
        };
        let control = self.control.clone();
        let socket = self.socket.clone();
        let address = login.address;
        tokio::spawn(async move {
            match ctx.router.login(login).await {
                Ok(session) => {
                    let new = Box::new(NewSession {
                        session_id: sid,
                        link,
                        session,
                        welcome,
                        peer: from,
                        guard,
                    });
                    // The socket task is gone only at shutdown; the session then just ends.
                    let _ = control.send(Control::LoggedIn(new)).await;
                }
                Err(e) => {
                    tracing::warn!(peer = %from, error = %e, "udp login not registered");
                    ctx.login_refused(T, from, Some(address), "unavailable");
                    let mut out = [0u8; 16];
                    if let Ok(p) = reject_packet(Code::UNAVAILABLE, 1000, &mut out) {
                        let _ = socket.send_to(p, from).await;
                    }
                    let _ = control.send(Control::LoginFailed(sid)).await;
                }
            }
        });
        true
    }

    /// A DATA packet whose header names session `sid`.
    fn on_data(&mut self, sid: u32, packet: &mut [u8], from: SocketAddr) {
        let now = self.now;
        let Some(s) = self.sessions.get_mut(sid) else {
            self.ctx.router.metrics().udp_dropped("unknown_session");
            return;
        };
        let mut received = match s.link.receive(packet, now) {
            Ok(r) => r,
            Err(e) => {
                self.ctx.router.metrics().udp_dropped(match e {
                    SessionError::Replayed => "replayed",
                    SessionError::AuthFailed => "auth_failed",
                    SessionError::Decode => "undecodable",
                    _ => "malformed",
                });
                if e == SessionError::Decode {
                    self.error(sid, Code::MALFORMED, 0);
                    self.schedule(sid);
                }
                return;
            }
        };
        // NAT rebinding: authentic and newer than any packet seen, from a new address. An older
        // authentic packet from elsewhere (withheld and released by an on-path attacker) is
        // processed but does not move the session.
        if received.newest && !s.router.handle().peer_is(from) {
            let old = s.router.handle().peer();
            tracing::debug!(terminal = %s.router.handle().address(), %old, new = %from, "udp session moved");
            s.router.handle().set_peer(from);
            self.ctx.conns.moved(old.ip(), from.ip());
        }
        let me = s.router.handle().address();
        if !received.delivered.is_empty() {
            let router = self.ctx.router.clone();
            let ids = std::mem::take(&mut received.delivered);
            tokio::spawn(async move {
                for id in ids {
                    if let Err(e) = router.ack(me, id).await {
                        tracing::warn!(terminal = %me, msg_id = id, error = %e, "ack not stored");
                    }
                }
            });
        }
        // Reliable frames come in `seq` order: the one just received, then any it released.
        let mut worker = device::LazyWorker::new(&mut s.worker, &self.ctx, s.router.handle(), now);
        // Nearly every packet carries one frame: no allocation for it.
        let reactions: SmallVec<[Reaction; 2]> = received
            .frames()
            .map(|frame| {
                device::on_frame(
                    &self.ctx.router,
                    s.router.handle(),
                    &mut worker,
                    &frame,
                    now,
                )
            })
            .collect();
        let mut acknowledge = false;
        for reaction in reactions {
            match reaction {
                Reaction::Nothing => {}
                Reaction::Acknowledge => acknowledge = true,
                Reaction::Goodbye => {
                    self.end(sid, None);
                    return;
                }
                Reaction::Pong => {
                    let pong = Body::Pong {
                        server_time_ms: self.wall_ms(),
                    };
                    self.unreliable(sid, pong);
                }
                Reaction::Error { code, about_seq } => self.error(sid, code, about_seq),
            }
        }
        // What the pull sent carries the acknowledgement; otherwise an AckOnly goes now.
        self.pull(sid);
        if acknowledge {
            self.acknowledge(sid);
        }
        self.schedule(sid);
    }

    /// Sends session `sid`'s pending acknowledgement now in an AckOnly ([`Reaction::Acknowledge`]).
    fn acknowledge(&mut self, sid: u32) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let mut out = [0u8; MAX_PACKET];
        if let Ok(Some(n)) = s.link.seal_pending_ack(&mut out) {
            let peer = s.router.handle().peer();
            self.send(&out[..n], peer);
        }
    }

    /// Seals and sends an unreliable frame on session `sid`.
    fn unreliable(&mut self, sid: u32, body: Body<'_>) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let mut out = [0u8; MAX_PACKET];
        if let Ok(n) = s.link.seal_unreliable(body, &mut out) {
            let peer = s.router.handle().peer();
            self.send(&out[..n], peer);
        }
    }

    /// Queues an Error about device frame `about_seq` behind the session's waiting frames
    /// (counted as a drop when too many Errors already wait) and sends what the window allows.
    fn error(&mut self, sid: u32, code: Code, about_seq: u32) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if !s.outbox.push_error(code, about_seq) {
            let metrics = self.ctx.router.metrics();
            metrics.udp_dropped("error_backlog");
            metrics.advisory_error_dropped(T);
        }
        self.flush(sid);
    }

    /// Seals and sends the session's waiting reliable frames while its window has room.
    fn flush(&mut self, sid: u32) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let now = self.now;
        let (ctx, out_q) = (&self.ctx, &mut self.out);
        let UdpSession {
            link,
            outbox,
            router,
            ..
        } = s;
        if outbox.is_empty() {
            return;
        }
        let peer = router.handle().peer();
        let flushed = outbox.flush(|ev| {
            if !link.can_send() {
                return Offered::WindowFull;
            }
            let Some((body, tag)) = device::outbound_body(ev) else {
                return Offered::Unsendable;
            };
            let mut out = [0u8; MAX_PACKET];
            match link.seal_reliable(body, tag, now, rand::random(), &mut out) {
                Ok(n) => {
                    out_q.push(&out[..n], peer);
                    Offered::Sent
                }
                Err(LinkError::WindowFull) => Offered::WindowFull,
                Err(e) => {
                    tracing::warn!(event = ?ev, error = %e, "udp: event cannot be sent, dropped");
                    Offered::Unsendable
                }
            }
        });
        for _ in 0..flushed.unsendable {
            ctx.router.metrics().udp_dropped("unsendable");
        }
    }

    /// Puts the session's timer at its link's next deadline.
    fn schedule(&mut self, sid: u32) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let now = self.now;
        let deadline = s.link.poll_timeout(self.ctx.settings.session_timeout_ms());
        s.timer = self.timers.place(sid, s.timer, deadline, now);
    }

    /// Sends waiting frames, then pulls the session's router events into its outbox while the
    /// outbox is empty and the window has room (see module docs).
    fn pull(&mut self, sid: u32) {
        loop {
            self.flush(sid);
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            if !s.link.can_send() || !s.outbox.is_empty() {
                // Acks free room; the shard pulls again then.
                return;
            }
            let RouterSide::Here(session) = &mut s.router else {
                // A store read is under way; its result comes back as `Control::Read`.
                return;
            };
            if session.needs_store_read() {
                let reading = RouterSide::Reading(session.handle().clone());
                let RouterSide::Here(mut session) = std::mem::replace(&mut s.router, reading)
                else {
                    return;
                };
                let control = self.control.clone();
                tokio::spawn(async move {
                    session.read_store().await;
                    // The shard is gone only at shutdown; dropping the session logs it out.
                    let _ = control.send(Control::Read(sid, Box::new(session))).await;
                });
                return;
            }
            match session.try_next() {
                None => return,
                Some(Outbound::Kick { reason }) => {
                    self.end(sid, Some(kick_code(reason)));
                    return;
                }
                Some(ev) => s.outbox.push_event(ev),
            }
        }
    }

    /// Pulls every session whose router queue got something since the last turn.
    fn on_ready(&mut self) {
        let mut ids = std::mem::take(&mut self.ready_ids);
        self.ready.take(&mut ids);
        ids.sort_unstable();
        ids.dedup();
        for &sid in &ids {
            self.pull(sid);
            // What it sent needs a retransmission deadline.
            self.schedule(sid);
        }
        self.ready_ids = ids;
    }

    /// Ends session `sid`, telling the device with a Kick when `kick` is given (a `SHUTDOWN`
    /// Kick [`SHUTDOWN_KICK_COPIES`] times).
    fn end(&mut self, sid: u32, kick: Option<Code>) {
        if let Some(code) = kick {
            self.unreliable(sid, Body::Kick { reason: code });
            if code == Code::SHUTDOWN {
                self.keep_kick_copies(sid, code);
            }
        }
        let Some(s) = self.sessions.remove(sid) else {
            return;
        };
        self.ctx.conns.release(s.router.handle().peer().ip());
        self.timers.remove(sid, s.timer);
        // Without a kick the device said Goodbye (or its session was already logged out).
        let end = match kick {
            Some(code) => SessionEnd::Broker(code),
            None => SessionEnd::Terminal(Code::NORMAL),
        };
        crate::logging::session_end::session_ended(&s.router.handle().address(), T.as_str(), end);
        if let RouterSide::Reading(handle) = &s.router {
            // A store-read task holds the Session: end it so the task hands it back, and the
            // shard, finding no session under this id, drops it.
            handle.kick(KickReason::Admin);
        }
        // Dropping the Session logs it out (registry, pending commands, presence).
        drop(s);
    }

    /// Seals the later copies of session `sid`'s Kick, each with a fresh DATA counter, and
    /// keeps them until their time.
    fn keep_kick_copies(&mut self, sid: u32, code: Code) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let now = self.now;
        let mut out = [0u8; MAX_PACKET];
        for copy in 1..SHUTDOWN_KICK_COPIES {
            if let Ok(n) = s
                .link
                .seal_unreliable(Body::Kick { reason: code }, &mut out)
            {
                let due = now + copy * SHUTDOWN_KICK_SPACING_MS;
                self.kick_copies
                    .push(due, s.router.handle().peer(), &out[..n]);
            }
        }
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::LoggedIn(new) => {
                let NewSession {
                    session_id: sid,
                    link,
                    session,
                    welcome,
                    peer,
                    guard,
                } = *new;
                let udp = UdpSession {
                    link,
                    timer: Slot::NONE,
                    router: RouterSide::Here(session),
                    worker: None,
                    outbox: Outbox::default(),
                };
                udp.router.handle().wake_into(self.ready.clone(), sid);
                let peer_ip = udp.router.handle().peer().ip();
                if self.sessions.fill(sid, udp).is_err() {
                    // Cannot happen (the slot stays reserved until now); the session given
                    // back is dropped, which logs it out, and the guard gives its slot back.
                    return;
                }
                // From here the session's connection-limit slot is counted under its peer's
                // address (the handle's), and given back from there when it ends.
                self.ctx.conns.moved(guard.into_counted(), peer_ip);
                self.send(&welcome, peer);
                // Events queued before `wake_into` (the login's replay) push no id.
                self.pull(sid);
                self.schedule(sid);
            }
            Control::Read(sid, session) => self.on_read(sid, *session),
            Control::LoginFailed(sid) => self.sessions.release(sid),
        }
    }

    /// A store-read task handed session `sid`'s router session back.
    fn on_read(&mut self, sid: u32, session: Session) {
        let live = self.sessions.get(sid).is_some_and(|s| match &s.router {
            RouterSide::Reading(handle) => handle.id() == session.handle().id(),
            RouterSide::Here(_) => false,
        });
        if !live {
            // Ended meanwhile; dropping the Session logs it out.
            return;
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        s.router = RouterSide::Here(session);
        // What the read found (or a Kick, when it failed) is pulled as any queued event.
        self.pull(sid);
        self.schedule(sid);
    }

    fn on_timers(&mut self) {
        let now = self.now;
        self.kick_copies.take_due(now, &mut self.out);
        if self.timers.sweep_due(now) {
            let silence = self.ctx.settings.session_timeout_ms();
            let far = self
                .sessions
                .iter_mut()
                .filter(|(_, s)| s.timer.is_far())
                .map(|(sid, s)| {
                    let deadline = s.link.poll_timeout(silence);
                    (sid, &mut s.timer, deadline)
                });
            self.timers.sweep(now, far);
        }
        while let Some(sid) = self.timers.pop_due(now) {
            let Some(s) = self.sessions.get_mut(sid) else {
                continue;
            };
            s.timer = Slot::NONE;
            let silence = self.ctx.settings.session_timeout_ms();
            while let Some(s) = self.sessions.get_mut(sid) {
                let mut out = [0u8; MAX_PACKET];
                match s.link.poll(now, silence, rand::random(), &mut out) {
                    polled @ (Polled::Send(n) | Polled::Resend(n)) => {
                        if matches!(polled, Polled::Resend(_)) {
                            self.ctx.router.metrics().device_resend(T);
                        }
                        let peer = s.router.handle().peer();
                        self.send(&out[..n], peer);
                    }
                    Polled::Dead(code) => {
                        self.end(sid, Some(code));
                        break;
                    }
                    Polled::Idle => {
                        self.schedule(sid);
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_size() {
        // The comet's own per-UDP-session state (one heap block), excluding in-flight frames,
        // held frames and the frame worker's queue (heap, only while in use); printed for the
        // report (docs/performance.md, "Memory per session"), bounded so regressions show.
        use std::mem::size_of;
        let size = size_of::<UdpSession>();
        println!(
            "UdpSession: {size} bytes: link {}, router session {}, frame worker {}, outbox {}, \
             timer {}",
            size_of::<Link>(),
            size_of::<RouterSide>(),
            size_of::<Option<Box<FrameWorker>>>(),
            size_of::<Outbox>(),
            size_of::<Slot>(),
        );
        assert!(size <= 200, "UdpSession grew to {size} bytes");
        let slot = SessionTable::<UdpSession>::SLOT_BYTES;
        println!("table slot: {slot} bytes");
        assert!(slot <= 201, "a table slot grew to {slot} bytes");
    }
}
