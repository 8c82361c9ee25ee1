//! The comet: the connection endpoints terminals log in through, speaking docs/protocol.md with
//! `shared-protocol`, and feeding the router ([`crate::router`]).
//!
//! * [`device_ws`]: devices over WebSocket (one binary message = one packet).
//! * [`udp`]: devices over UDP (one datagram = one packet).
//! * [`app_ws`]: apps over WebSocket (JSON text messages, HS256 token in the first message).
//! * Shared pieces: [`link`] (sans-IO session state: seal/open, reliability windows, timers) with
//!   [`sendwin`] (heap-backed send window), [`device`] (device frames to router calls and router
//!   events to frames), [`logins`] (LOGIN acceptance, device keys, replay table) with
//!   [`challenge_clock`] (CHALLENGE timestamps never repeated for one terminal), [`limits`]
//!   (connection and login-rate limits), [`budget`] (work per device session), [`worker`] with
//!   [`frame_queue`] (each device session's Sends and Uploads, applied in order), [`ws`]
//!   (WebSocket config), [`convert`] (type mapping).
//! * [`pending`]: the cap on WebSocket connections still in their handshake (silent ones
//!   closed first), so connections that never log in cannot fill `limits.max_connections`.
//! * [`proxy`]: PROXY protocol v2 on the WebSocket listeners and the HTTP API (client
//!   addresses behind a load balancer).
//! * [`echo`]: a WebSocket echo endpoint over the same stack, for conformance tests only (off
//!   unless `[conformance] ws_echo_listen` is set).
//!
//! # Concurrency design
//!
//! * **WebSocket endpoints: one task per connection owning all of its protocol state** (the
//!   handshake, then the [`link::Link`] or JSON session). The task `select!`s over three sources:
//!   the socket, the session's bounded outbound queue from the router ([`crate::router::Session`])
//!   and the link's next timer. It pulls from the outbound queue only while the reliability
//!   window has room, so a slow device leaves events in the router's bounded queue, where the
//!   configured full-queue policy applies and is counted; it never grows memory here and never
//!   slows other connections.
//! * **UDP endpoint: one receive task and `N` shard tasks, each owning a table of sessions keyed
//!   by `session_id`** (`N` = the machine's parallelism). The receive task only reads and routes:
//!   it hands HELLOs to `N` handshake workers that answer them statelessly (CHALLENGE no larger
//!   than the HELLO; overflow dropped and counted), hands a LOGIN to the
//!   shard its new session id names and a DATA packet to the shard its header's session id
//!   names, so the AEAD and reliability work of many devices spreads over all cores. Routing is
//!   by session id, not by address, so NAT rebinding (an authenticated, new-in-window packet
//!   from another address moves the session) works across shards. Within a shard each session is
//!   a small state machine ([`link::Link`] plus the router handle); timers live in one ordered
//!   set of `(deadline, session_id)`; no future or task waits on a session's outbound queue:
//!   the router pushes the session id to the shard's ready list when it queues an event, and
//!   the shard pulls events while the session's window has room (again on acks). An accepted
//!   LOGIN registers with the router in a
//!   spawned task that hands the new session back over a channel, so store I/O never blocks a
//!   shard. Acks that need the store run in spawned tasks for the same reason; Sends and
//!   Uploads go to the session's [`worker::FrameWorker`], one ordered queue and task per
//!   session (both transports, created by the first Send or Upload), so they are applied in
//!   the order the device sent them.
//! * **No lock is held across `.await`.** The only locks in the comet are `std::sync::Mutex`
//!   shards in [`limits`] and [`logins`], each held for one synchronous map operation (and the
//!   LOGIN check, which is pure computation), and each session's [`frame_queue`], held for one
//!   push or pop. Everything that awaits owns its state outright
//!   (a connection task, or a UDP shard), so there is nothing to lock. The router's own
//!   registry and queues follow the same rule.

pub mod app_ws;
pub mod budget;
pub mod challenge_clock;
pub mod convert;
pub mod device;
pub mod device_ws;
pub mod echo;
mod frame_queue;
pub mod frame_reads;
pub mod limits;
pub mod link;
pub mod logins;
pub mod pending;
pub mod proxy;
pub mod sendwin;
pub mod tls;
pub mod udp;
pub mod worker;
pub mod ws;
pub mod ws_stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared_protocol::handshake::WelcomeParams;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::router::{Router, Transport};
use crate::secrets::Secrets;
use crate::terminal::{Address, IdProfile};

use limits::{ConnLimiter, LoginLimiter};
use logins::Logins;

/// Comet settings; the broker builds them from its configuration (`Config::comet_settings`),
/// which the comet never reads itself.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The ID profile: which ids log in and how many sessions one id may hold.
    pub profile: IdProfile,
    /// How many connections and logins are admitted (`[limits]`).
    pub admission: Admission,
    /// PROXY protocol v2 (`[proxy_protocol]`; `None`: off; [`proxy::Proxy::on`] says which
    /// endpoints take headers).
    pub proxy: Option<proxy::Proxy>,
    /// Time from connection (or first HELLO) to completed login (`timeouts.handshake_secs`).
    pub handshake: Duration,
    /// Ping interval announced in WELCOME (`timeouts.heartbeat_secs`).
    pub heartbeat_secs: u16,
    /// Silence after which a session is offline (`timeouts.session_secs`).
    pub session_timeout_secs: u16,
    /// Largest payload announced in WELCOME (`limits.max_payload_bytes`).
    pub max_payload: u16,
    /// Largest device packet (`limits.max_device_frame_bytes`).
    pub max_device_packet: usize,
    /// Largest app text message (`limits.max_app_message_bytes`, validated to at most the protocol's 4096).
    pub max_app_message: usize,
    /// Longest a live session's WebSocket write may wait (`limits.ws_write_timeout_ms`).
    pub ws_write_timeout: Duration,
    /// Work one device session may ask for (queued frames, Requests in flight, frame rate).
    pub work: budget::WorkLimits,
    /// The device UDP socket's kernel buffers (`[udp]`).
    pub udp: udp::UdpConfig,
}

impl Settings {
    /// The silence timeout in milliseconds.
    pub fn session_timeout_ms(&self) -> u64 {
        u64::from(self.session_timeout_secs) * 1000
    }
}

/// Everything the endpoints share (cheap to clone through `Arc`).
pub struct Context {
    /// The router.
    pub router: Router,
    /// Settings.
    pub settings: Settings,
    /// LOGIN acceptance.
    pub logins: Logins,
    /// Connection limits (WebSocket connections and UDP sessions).
    pub conns: Arc<ConnLimiter>,
    /// Login attempts per IP per second.
    pub login_rate: LoginLimiter,
    /// WebSocket connections still in their handshake (`limits.max_pending_handshakes`).
    pub pending: pending::Pending,
    /// Refused logins in the log, rate-limited ([`Context::login_refused`]).
    pub refusals: crate::logging::refusals::RefusalLog,
    /// App token secret (zeroised when the comet stops).
    pub token_secret: zeroize::Zeroizing<[u8; 32]>,
    /// TLS for the WebSocket endpoints (`[tls]`; `None`: plain `ws://`).
    pub tls: Option<tls::Acceptor>,
    /// Cancelled at shutdown: endpoints stop accepting.
    pub shutdown: CancellationToken,
    epoch: Instant,
    next_session_id: std::sync::atomic::AtomicU32,
}

/// Connection and login admission limits (`[limits]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Connections accepted in total (`max_connections`).
    pub max_connections: u32,
    /// Connections accepted per client IP (`max_connections_per_ip`).
    pub max_connections_per_ip: u32,
    /// Refused connections answered with a close code at once (`max_pending_refusals`).
    pub max_pending_refusals: u32,
    /// WebSocket connections still logging in at once (`max_pending_handshakes`).
    pub max_pending_handshakes: u32,
    /// Login attempts per client IP per second (`login_attempts_per_ip_per_sec`).
    pub login_attempts_per_ip_per_sec: u32,
}

impl Context {
    /// Builds the shared context; `tls` comes from [`tls::load`] (`None`: plain WebSockets).
    /// Fails only when the OS random generator cannot seed this node's cookie secret: without
    /// it the node cannot log anyone in safely.
    pub fn new(
        settings: Settings,
        secrets: &Secrets,
        router: Router,
        shutdown: CancellationToken,
        tls: Option<tls::Acceptor>,
    ) -> Result<Arc<Context>, rand::rand_core::OsError> {
        let a = settings.admission;
        let cookie_secret = logins::node_cookie_secret()?;
        router.metrics().work_limits_registered(&budget::LIMIT_KEYS);
        Ok(Arc::new(Context {
            logins: Logins::new(secrets, settings.profile, cookie_secret),
            conns: ConnLimiter::new(
                a.max_connections,
                a.max_connections_per_ip,
                a.max_pending_refusals,
            ),
            login_rate: LoginLimiter::new(a.login_attempts_per_ip_per_sec),
            pending: pending::Pending::new(a.max_pending_handshakes),
            refusals: crate::logging::refusals::RefusalLog::default(),
            token_secret: zeroize::Zeroizing::new(secrets.token_secret),
            tls,
            settings,
            router,
            shutdown,
            epoch: Instant::now(),
            next_session_id: std::sync::atomic::AtomicU32::new(rand::random::<u32>() | 1),
        }))
    }

    /// Monotonic milliseconds since the comet started (link timers).
    pub fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The instant of monotonic time `ms`.
    pub fn instant_at(&self, ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_millis(ms))
    }

    /// A fresh session id (never 0) for a device WebSocket, handed out in sequence. (UDP session
    /// ids come from the shards' tables, which name the slot in the id: `udp::table`.)
    pub fn session_id(&self) -> u32 {
        loop {
            let id = self
                .next_session_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// A login on transport `t` from `peer` was refused for `reason` (the
    /// `broker_login_failures_total` label): counted, published on the router's live feed, and
    /// logged with the `terminal` it named, if any (rate-limited: `crate::logging::refusals`).
    pub fn login_refused(
        &self,
        t: Transport,
        peer: SocketAddr,
        terminal: Option<Address>,
        reason: &'static str,
    ) {
        self.router.metrics().login_failed(t, reason);
        self.router.live().refused(t, peer, terminal, reason);
        let terminal = terminal.as_ref().map(|a| a as &dyn std::fmt::Display);
        self.refusals.refused(
            std::time::Instant::now(),
            t.as_str(),
            peer,
            terminal,
            reason,
        );
    }

    /// Session parameters for WELCOME (binary and JSON).
    pub fn welcome_params(&self) -> WelcomeParams {
        WelcomeParams {
            heartbeat_secs: self.settings.heartbeat_secs,
            session_timeout_secs: self.settings.session_timeout_secs,
            max_payload: self.settings.max_payload,
            server_time_ms: crate::router::now_ms(),
        }
    }
}

/// The comet's bound sockets.
pub struct Listeners {
    /// Device WebSocket.
    pub device_ws: TcpListener,
    /// App WebSocket.
    pub app_ws: TcpListener,
    /// Device UDP.
    pub udp: UdpSocket,
    /// The conformance echo endpoint (`[conformance] ws_echo_listen`; `None`: off).
    pub ws_echo: Option<TcpListener>,
}

/// Where the comet listens (ports resolved when 0 was configured).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Device WebSocket.
    pub device_ws: SocketAddr,
    /// App WebSocket.
    pub app_ws: SocketAddr,
    /// Device UDP.
    pub udp: SocketAddr,
    /// The conformance echo endpoint, when on.
    pub ws_echo: Option<SocketAddr>,
}

/// Connections the kernel completes and queues for a WebSocket listener while the broker has not
/// accepted them yet (the kernel caps it at `net.core.somaxconn`, 4096 by default). The
/// standard library's 128 is too few for a login storm: when a fleet reconnects at once, the
/// connections past it are dropped by the kernel and their clients wait a second or more for
/// their SYN to be sent again.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` (address reuse on, as the standard library sets it) with a queue of
/// [`LISTEN_BACKLOG`] connections.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Listeners {
    /// Binds the three terminal sockets (`[listen]`) and the conformance echo endpoint when
    /// one is given (the config check has refused any address but loopback).
    pub async fn bind(
        device_ws: SocketAddr,
        app_ws: SocketAddr,
        udp: SocketAddr,
        ws_echo: Option<SocketAddr>,
    ) -> std::io::Result<Listeners> {
        let ws_echo = match ws_echo {
            Some(addr) => Some(listen(addr)?),
            None => None,
        };
        Ok(Listeners {
            device_ws: listen(device_ws)?,
            app_ws: listen(app_ws)?,
            udp: udp::sockets::bind(udp)?,
            ws_echo,
        })
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> std::io::Result<Bound> {
        Ok(Bound {
            device_ws: self.device_ws.local_addr()?,
            app_ws: self.app_ws.local_addr()?,
            udp: self.udp.local_addr()?,
            ws_echo: self
                .ws_echo
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?,
        })
    }
}

/// Starts the three endpoints on `listeners`; they stop accepting when `ctx.shutdown` is
/// cancelled (live sessions end when the router kicks them).
pub fn spawn(ctx: Arc<Context>, listeners: Listeners) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(echo) = listeners.ws_echo {
        tracing::warn!(
            addr = ?echo.local_addr().ok(),
            "conformance WebSocket echo endpoint is on ([conformance] ws_echo_listen): for tests only"
        );
        tasks.push(tokio::spawn(echo::serve(ctx.clone(), echo)));
    }
    tasks.extend([
        tokio::spawn(device_ws::serve(ctx.clone(), listeners.device_ws)),
        tokio::spawn(app_ws::serve(ctx.clone(), listeners.app_ws)),
        tokio::spawn(refusal_summaries(ctx.clone())),
        tokio::spawn(udp::serve(ctx, listeners.udp)),
    ]);
    tasks
}

/// Writes the summary of refused logins not logged one by one once their interval is over,
/// even when no refusal follows; ends at shutdown.
async fn refusal_summaries(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Some(summary) = ctx.refusals.flush(std::time::Instant::now()) {
                    ctx.refusals.write_summary(&summary);
                }
            }
        }
    }
}
